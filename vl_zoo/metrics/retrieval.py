"""Image-text retrieval recall at 1, 5 and 10, both ways, from one matrix of text-image matching scores."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

from .base import VLMetric

RECALL_AT = (1, 5, 10)
_BLOCK = 1024  # query rows ranked at a time, to bound the temporaries of large matrices (COCO 5k: 25k x 5k)

_CITATION = """\
@inproceedings{karpathy2015deep,
  title={Deep Visual-Semantic Alignments for Generating Image Descriptions},
  author={Karpathy, Andrej and Fei-Fei, Li}, booktitle={CVPR}, year={2015}
}
"""
_INPUTS = """
Args:
    scores: (texts, images) matching scores, one row per text (a 2-D array, or a list of equally long rows).
    text_to_image: the column of each text's own image (int in [0, images)).
Returns:
    ir_r1, ir_r5, ir_r10: share of texts whose image is among the top 1 / 5 / 10 images by the text's scores.
    tr_r1, tr_r5, tr_r10: share of images (those with texts) with one of their texts among the top 1 / 5 / 10
        texts by the image's scores.
    Ties count against the gold: it is ranked after every other candidate scoring at least as high.
"""


def gold_ranks(scores: np.ndarray, is_gold: np.ndarray) -> np.ndarray:
    """For each query row, how many non-gold candidates score at least as high as its best gold candidate. (Q,)

    That count is the 0-based rank of the first gold candidate when ties are broken against the gold, so a query
    is a hit at k when it is below k. A query without gold candidates gets every candidate counted.
    """
    ranks = []
    for start in range(0, len(scores), _BLOCK):
        block, gold = scores[start : start + _BLOCK], is_gold[start : start + _BLOCK]  # (b, C)
        best = np.where(gold, block, -np.inf).max(axis=1, keepdims=True)  # (b, 1)
        ranks.append(((block >= best) & ~gold).sum(axis=1))
    return np.concatenate(ranks)


def _score_matrix(scores: Any) -> np.ndarray:
    """`scores` as a (texts, images) float array of finite values, or a ValueError saying what is wrong."""
    try:
        matrix = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        lengths = sorted({len(row) for row in scores if hasattr(row, "__len__")})
        found = f"rows of lengths {lengths}" if len(lengths) > 1 else "values that are not numbers"
        raise ValueError(
            f"scores must be a (texts, images) matrix of numbers, one equally long row per text; got {found}"
        ) from None
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise ValueError(f"scores must be a (texts, images) matrix with at least one image; got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError("scores must be finite; got NaN or infinite values (a NaN would rank anywhere)")
    return matrix


def _gold_images(text_to_image: Sequence[Any], images: int) -> np.ndarray:
    """Each text's image column as an int array, or a ValueError naming the first that is not one of `images`."""
    gold = []
    for index, value in enumerate(text_to_image):
        try:
            column = operator.index(value)
        except TypeError:
            column = None
        if column is None or not 0 <= column < images:
            raise ValueError(
                f"text_to_image[{index}] must be an image column, an int in [0, {images}) for {images} columns of "
                f"scores; got {value!r}"
            )
        gold.append(column)
    return np.asarray(gold, dtype=np.int64)


class RetrievalRecall(VLMetric):
    """Recall@1/5/10 of image retrieval (texts rank images) and text retrieval (images rank texts).

    Each text query ranks all images by its row of `scores` and is a hit at k when its own image is among the top
    k. Each image query ranks all texts by its column and is a hit when any of its texts is among the top k;
    images without texts are left out. Ties are broken against the gold: it is ranked after every other candidate
    scoring at least as high, so constant scores earn nothing.

    Examples are texts, so batches of text rows can be added one after another (`add_batch`), each scoring the
    same images.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Image-text retrieval Recall@1/5/10 in both directions.",
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"scores": datasets.Sequence(datasets.Value("float64")), "text_to_image": datasets.Value("int64")}
            ),
        )

    def _checked(self, scores: Any, text_to_image: Sequence[Any]) -> dict[str, Any]:
        matrix = _score_matrix(scores)
        return {"scores": matrix, "text_to_image": _gold_images(text_to_image, matrix.shape[1])}

    def _compute(self, scores: list[list[float]], text_to_image: list[int]) -> dict[str, float]:
        widths = sorted({len(row) for row in scores})
        if len(widths) > 1:
            raise ValueError(f"scores rows must all score the same images; batches added rows of lengths {widths}")
        matrix = np.asarray(scores, dtype=np.float64)  # (T, I)
        is_gold = np.zeros(matrix.shape, dtype=bool)
        is_gold[np.arange(len(matrix)), np.asarray(text_to_image)] = True

        image_ranks = gold_ranks(matrix, is_gold)  # (T,)
        text_ranks = gold_ranks(matrix.T, is_gold.T)[is_gold.any(axis=0)]  # (images with texts,)
        recalls = {f"ir_r{k}": float(np.mean(image_ranks < k)) for k in RECALL_AT}
        return recalls | {f"tr_r{k}": float(np.mean(text_ranks < k)) for k in RECALL_AT}
