"""Accuracy metrics of the classification tasks: GQA, SNLI-VE and NLVR2 (with NLVR2's consistency)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate

from .base import VLMetric, check_labels, check_strings

_GQA_CITATION = """\
@inproceedings{hudson2019gqa,
  title={{GQA}: A New Dataset for Real-World Visual Reasoning and Compositional Question Answering},
  author={Hudson, Drew A. and Manning, Christopher D.}, booktitle={CVPR}, year={2019}
}
"""
_SNLI_VE_CITATION = """\
@article{xie2019visual,
  title={Visual Entailment: A Novel Task for Fine-Grained Image Understanding},
  author={Xie, Ning and Lai, Farley and Doran, Derek and Kadav, Asim}, journal={arXiv:1901.06706}, year={2019}
}
"""
_NLVR2_CITATION = """\
@inproceedings{suhr2019corpus,
  title={A Corpus for Reasoning about Natural Language Grounded in Photographs},
  author={Suhr, Alane and Zhou, Stephanie and Zhang, Ally and Zhang, Iris and Bai, Huajun and Artzi, Yoav},
  booktitle={ACL}, year={2019}
}
"""
_GQA_INPUTS = """
Args:
    predictions: the predicted answer of each question (str).
    references: the answer of each question (str).
Returns:
    accuracy: the share of predictions equal to their answer, as written (GQA's `eval.py` compares exactly).
"""
_SNLI_VE_INPUTS = """
Args:
    predictions: the predicted class of each pair: class ids (int) or label names (str).
    references: the gold class of each pair, of the same kind as the predictions.
Returns:
    accuracy: the share of predictions equal to their gold class, compared as given.
"""
_NLVR2_INPUTS = """
Args:
    predictions: the predicted label of each example: class ids (int, 1 for true) or names ("True"/"False").
    references: the gold label of each example, of the same kind as the predictions.
    identifiers: each example's NLVR2 identifier, `split-set_id-pair_id-sentence_id` (e.g. "dev-850-0-0").
Returns:
    accuracy: the share of correct examples.
    consistency: the share of sentences all of whose examples (one per image pair) are correct.
"""


def _label_features(**extra: datasets.Value) -> list[datasets.Features]:
    """Two input layouts for labels: names (strings) first, so that "1" stays a string, then class ids."""
    return [
        datasets.Features({"predictions": datasets.Value(kind), "references": datasets.Value(kind), **extra})
        for kind in ("string", "int64")
    ]


def _share(flags: Sequence[bool]) -> float:
    """The share of true flags."""
    return sum(flags) / len(flags)


class GQAAccuracy(VLMetric):
    """GQA accuracy: exact match of the predicted answer with the answer, as GQA's `eval.py` scores it."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="GQA accuracy: exact match of the predicted answer.",
            citation=_GQA_CITATION,
            inputs_description=_GQA_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            homepage="https://cs.stanford.edu/people/dorarad/gqa/evaluate.html",
        )

    def _checked(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, Any]:
        check_strings("predictions", predictions)
        check_strings("references", references)
        return {"predictions": predictions, "references": references}

    def _compute(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return {"accuracy": _share([p == r for p, r in zip(predictions, references, strict=True)])}


class SnliVeAccuracy(VLMetric):
    """SNLI-VE accuracy: the share of pairs whose predicted class is the gold class (ids or names, as given)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="SNLI-VE accuracy over entailment / neutral / contradiction.",
            citation=_SNLI_VE_CITATION,
            inputs_description=_SNLI_VE_INPUTS,
            features=_label_features(),
            homepage="https://github.com/necla-ml/SNLI-VE",
        )

    def _checked(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, Any]:
        check_labels(predictions, references)
        return {"predictions": predictions, "references": references}

    def _compute(self, predictions: list, references: list) -> dict[str, float]:
        return {"accuracy": _share([p == r for p, r in zip(predictions, references, strict=True)])}


def nlvr2_sentence(identifier: str) -> str:
    """The sentence an NLVR2 example belongs to: its identifier with the image-pair field blanked.

    NLVR2 identifiers are `split-set_id-pair_id-sentence_id`: one sentence of an image set is paired with several
    image pairs, so "dev-850-0-1" and "dev-850-3-1" are the same sentence ("dev-850--1"), as NLVR2's
    `eval/metrics.py` groups them for consistency.
    """
    fields = identifier.split("-")
    fields[2] = ""
    return "-".join(fields)


class NLVR2(VLMetric):
    """NLVR2 accuracy and consistency as NLVR2's `eval/metrics.py` computes them.

    Consistency is the share of sentences all of whose examples are correct, a sentence being every example whose
    identifier differs only in the image-pair field (`nlvr2_sentence`). Label names are compared ignoring case,
    as the official script does ("true" is "True"); class ids as given.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="NLVR2 accuracy and consistency.",
            citation=_NLVR2_CITATION,
            inputs_description=_NLVR2_INPUTS,
            features=_label_features(identifiers=datasets.Value("string")),
            homepage="https://lil.nlp.cornell.edu/nlvr/",
            codebase_urls=["https://github.com/lil-lab/nlvr"],
        )

    def _checked(
        self, predictions: Sequence[Any], references: Sequence[Any], identifiers: Sequence[Any]
    ) -> dict[str, Any]:
        check_labels(predictions, references)
        check_strings("identifiers", identifiers)
        for index, identifier in enumerate(identifiers):
            if identifier.count("-") < 3:
                raise ValueError(
                    f"identifiers[{index}] must be an NLVR2 identifier 'split-set_id-pair_id-sentence_id' "
                    f"(e.g. 'dev-850-0-0'), got {identifier!r}"
                )
        return {"predictions": predictions, "references": references, "identifiers": identifiers}

    def _compute(self, predictions: list, references: list, identifiers: list[str]) -> dict[str, float]:
        correct = [_same_label(p, r) for p, r in zip(predictions, references, strict=True)]

        consistent: dict[str, bool] = {}
        for identifier, right in zip(identifiers, correct, strict=True):
            sentence = nlvr2_sentence(identifier)
            consistent[sentence] = consistent.get(sentence, True) and right
        return {"accuracy": _share(correct), "consistency": _share(list(consistent.values()))}


def _same_label(prediction: Any, reference: Any) -> bool:
    """Whether an NLVR2 prediction is right: names ignoring case (as the official script), ids as given."""
    if isinstance(prediction, str):
        return prediction.lower() == reference.lower()
    return prediction == reference
