"""Collators: task rows (see `vl_zoo/data/tasks.py`) to batches of model inputs and labels.

Each collator is a plain callable for `torch.utils.data.DataLoader(collate_fn=...)`. It is built from a
tokenizer, a `RegionFeatureProcessor` and a feature store (anything with `store[image_id] -> {"features",
"boxes", "image_width", "image_height", ...}` and `image_id in store`, such as `FeatureStore`), takes a list of
rows and returns a dict of torch tensors that goes straight into the model: `input_ids`, `attention_mask`,
`token_type_ids` (B, T), `visual_feats` (B, R, F), `visual_pos` (B, R, 5), `visual_attention_mask` (B, R), plus
the task's labels. Texts are padded to the longest in the batch and cut at `max_length` tokens (the release's
sequence lengths are the defaults).

The collators that draw random numbers (pretraining masks and negatives, retrieval negatives) draw them from a
generator seeded by (seed, rank, worker id, call count): the same seed gives the same batches in any run, and
data-loading workers and processes never repeat one another's draws.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..processing import RegionFeatureProcessor
from .tasks import AnswerVocabulary

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
Row = Mapping[str, Any]


class RegionTextCollator:
    """What every collator shares: tokenising texts and turning image ids into region inputs.

    Args:
        tokenizer: a BERT-style tokenizer (adds [CLS] and [SEP]).
        region_processor: lays the regions out as the model expects (kept regions, global row, padding).
        store: the feature store the rows' image ids refer to.
        max_length: the most tokens per text, [CLS] and [SEP] included.
    """

    task = "region-text"

    def __init__(self, tokenizer: Any, region_processor: RegionFeatureProcessor, store: Any, max_length: int) -> None:
        if not isinstance(max_length, int) or max_length < 3:
            raise ValueError(f"max_length must be an int of at least 3 ([CLS], a word, [SEP]), got {max_length!r}")
        self.tokenizer = tokenizer
        self.region_processor = region_processor
        self.store = store
        self.max_length = max_length

    def encode_text(self, texts: list[str], special_tokens_mask: bool = False) -> dict[str, torch.Tensor]:
        """`[CLS] text [SEP]` ids, padded to the longest text: input_ids, attention_mask, token_type_ids (B, T)."""
        encoded = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_token_type_ids=True,
            return_attention_mask=True,
            return_special_tokens_mask=special_tokens_mask,
        )
        return dict(encoded)

    def load_images(self, rows: Sequence[Row], field: str = "image_id") -> list[dict[str, Any]]:
        """The stored regions of the image each row names in `field`."""
        images = []
        for row in rows:
            image_id = row[field]
            if image_id not in self.store:
                raise ValueError(f"{self.task} row's {field} {image_id!r} is not in the feature store")
            images.append(self.store[image_id])
        return images

    def encode_images(self, images: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """visual_feats (B, R, F), visual_pos (B, R, 5), visual_attention_mask (B, R) from stored images."""
        regions = self.region_processor(
            [image["features"] for image in images],
            [image["boxes"] for image in images],
            [(int(image["image_height"]), int(image["image_width"])) for image in images],
            return_tensors="pt",
        )
        return dict(regions)

    def check_rows(self, rows: Sequence[Row], fields: Sequence[str]) -> None:
        """Refuse an empty batch or a row that lacks a field this collator needs, naming field and task."""
        if not len(rows):
            raise ValueError(f"{type(self).__name__} got an empty batch; it needs at least one {self.task} row")
        for row in rows:
            missing = [field for field in fields if field not in row]
            if missing:
                raise ValueError(f"{self.task} row lacks the field(s) {missing} (it has {sorted(row)})")


class SeededDraws:
    """A fresh random generator per call, seeded by (seed, rank, worker id, call count), or by the batch's rows.

    Each DataLoader worker holds its own copy of the collator and so its own call count; the worker id keeps the
    copies apart, the rank keeps processes apart. When the rows carry their dataset index (`_index`, as the
    training scripts' loaders add it), the draws are keyed by (seed, rank, those indices) instead: the same batch
    then gets the same masks whatever worker collates it and however many batches were skipped before it, which
    is what makes a resumed run continue exactly.

    Args:
        seed: the base seed.
        rank: the process's rank; None reads it from torch.distributed when initialised, else from `RANK`.
    """

    def __init__(self, seed: int, rank: int | None) -> None:
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.seed = seed
        self.rank = rank
        self.calls = 0

    def next_generator(self, rows: Sequence[Row] = ()) -> np.random.Generator:
        """The generator of this call (keyed by the rows' `_index` when every row has one); counts the call."""
        indices = [row.get("_index") for row in rows]
        if rows and all(isinstance(index, int) for index in indices):
            key = [self.seed, self._rank(), *indices]
        else:
            worker = torch.utils.data.get_worker_info()
            key = [self.seed, self._rank(), 0 if worker is None else worker.id + 1, self.calls]
        self.calls += 1
        return np.random.default_rng(key)

    def _rank(self) -> int:
        if self.rank is not None:
            return self.rank
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        return int(os.environ.get("RANK", 0))


class PretrainingCollator(RegionTextCollator):
    """Masked words, masked regions and image-text matching, as the release's pretraining data loader makes them.

    Per batch:
    - matching: each caption is, with probability `negative_probability`, replaced by the caption of a different
      image (from `captions` when given, else from the batch); `itm_labels` is 1 for a kept (matching) caption.
    - words: each caption token ([CLS], [SEP] and padding never) is chosen with probability `mlm_probability`; a
      chosen token becomes [MASK] (80%), a random vocabulary id (10%) or stays (10%). `labels` holds the original
      id of chosen tokens and -100 elsewhere.
    - regions: each kept region (never the global row or padding) is chosen with probability
      `region_probability`; a chosen region's feature is zeroed with probability `region_zero_probability`
      (0.9 in the release; the rest stay unchanged), and this happens before the processor computes the global
      row, so the mean does not carry a zeroed region's feature. `region_targets` (B, R, 1601) is the detector's
      class distribution (`cls_prob` of the feature table) in the model's row layout; `region_mask` (B, R) is 1
      on chosen regions.
    - mismatched pairs get no word or region labels (all -100 / 0), so only matching trains on them, as the
      release's objective 1 does.

    The release also flags regions overlapping a chosen one (IoU > 0.4) and leaves them out of the denominator of
    the global mean, so its global row is the sum of the unflagged features divided by their count; here the global
    row is the processor's plain mean of the kept regions after zeroing, the same rule as in fine-tuning.

    Args:
        tokenizer, region_processor, store, max_length: see `RegionTextCollator`; the store needs `cls_prob`.
        mlm_probability: chance that a caption token is masked.
        region_probability: chance that a region is masked.
        negative_probability: chance that a caption is swapped for a mismatched one.
        region_zero_probability: chance that a masked region's feature is zeroed rather than kept.
        captions: optional pool of rows with `image_id` and `caption` to draw mismatched captions from (e.g. the
            whole training table); without it they come from the other rows of the batch.
        seed, rank: see `SeededDraws`.
    """

    task = "pretraining"

    def __init__(
        self,
        tokenizer: Any,
        region_processor: RegionFeatureProcessor,
        store: Any,
        mlm_probability: float = 0.15,
        region_probability: float = 0.15,
        negative_probability: float = 0.5,
        max_length: int = 38,
        seed: int = 0,
        captions: Sequence[Row] | None = None,
        region_zero_probability: float = 0.9,
        rank: int | None = None,
    ) -> None:
        super().__init__(tokenizer, region_processor, store, max_length)
        for name, value in (
            ("mlm_probability", mlm_probability),
            ("region_probability", region_probability),
            ("negative_probability", negative_probability),
            ("region_zero_probability", region_zero_probability),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if tokenizer.mask_token_id is None:
            raise ValueError("tokenizer has no mask token; masked word modelling needs one ([MASK])")
        self.mlm_probability = mlm_probability
        self.region_probability = region_probability
        self.negative_probability = negative_probability
        self.region_zero_probability = region_zero_probability
        self.pool = _CaptionPool(captions) if captions is not None else None
        self.draws = SeededDraws(seed, rank)
        self._warned_no_negative = False

    def __call__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        self.check_rows(rows, ("image_id", "caption"))
        rng = self.draws.next_generator(rows)

        captions, itm_labels = self._match_or_swap(rows, rng)
        text = self.encode_text(captions, special_tokens_mask=True)
        special = text.pop("special_tokens_mask").bool() | (text["attention_mask"] == 0)
        text["input_ids"], labels = self._mask_words(text["input_ids"], special, rng)

        images = self.load_images(rows)
        region_targets = self.region_processor.scatter(self._class_targets(images))
        images, region_mask = self._mask_regions(images, rng)
        batch = {**text, **self.encode_images(images)}

        negatives = itm_labels == 0
        labels[negatives] = IGNORE_INDEX
        region_mask[negatives.numpy()] = 0.0
        batch["labels"] = labels
        batch["region_targets"] = torch.from_numpy(region_targets)
        batch["region_mask"] = torch.from_numpy(region_mask)
        batch["itm_labels"] = itm_labels
        return batch

    def _match_or_swap(self, rows: Sequence[Row], rng: np.random.Generator) -> tuple[list[str], torch.Tensor]:
        """Each row's caption, or with probability `negative_probability` one of a different image."""
        pool = self.pool or _CaptionPool(rows)
        swap = rng.random(len(rows)) < self.negative_probability
        captions, matches = [], []
        for row, wants_swap in zip(rows, swap, strict=True):
            other = pool.caption_of_another_image(row["image_id"], rng) if wants_swap else None
            if wants_swap and other is None and not self._warned_no_negative:
                logger.warning(
                    "no caption of an image other than %r to swap in: such pairs stay matches", row["image_id"]
                )
                self._warned_no_negative = True
            captions.append(row["caption"] if other is None else other)
            matches.append(int(other is None))
        return captions, torch.tensor(matches, dtype=torch.long)

    def _mask_words(
        self, input_ids: torch.Tensor, special: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's 80/10/10 masking of the non-special tokens; returns the new ids and the labels (B, T)."""
        shape = tuple(input_ids.shape)
        chosen = torch.from_numpy(rng.random(shape) < self.mlm_probability) & ~special
        action = torch.from_numpy(rng.random(shape))
        random_ids = torch.from_numpy(rng.integers(0, len(self.tokenizer), shape))

        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        masked_ids = input_ids.clone()
        masked_ids[chosen & (action < 0.8)] = self.tokenizer.mask_token_id
        randomised = chosen & (action >= 0.8) & (action < 0.9)
        masked_ids[randomised] = random_ids[randomised]
        return masked_ids, labels

    def _mask_regions(
        self, images: list[dict[str, Any]], rng: np.random.Generator
    ) -> tuple[list[dict[str, Any]], np.ndarray]:
        """Choose kept regions and zero most chosen features (in copies of the images).

        Returns the images with their masked features, and region_mask (B, num_rows) float32.
        """
        masked, per_image = [], []
        for image in images:
            features = image["features"]
            kept = min(len(features), self.region_processor.max_regions)
            chosen = np.zeros(len(features), dtype=bool)
            chosen[:kept] = rng.random(kept) < self.region_probability
            zeroed = chosen & (rng.random(len(features)) < self.region_zero_probability)

            masked.append({**image, "features": np.where(zeroed[:, None], 0, features).astype(features.dtype)})
            per_image.append(chosen.astype(np.float32))
        return masked, self.region_processor.scatter(per_image)

    def _class_targets(self, images: list[dict[str, Any]]) -> list[np.ndarray]:
        """Each image's detector class distribution (R_i, 1601), the masked-region KL target, as stored (the
        processor's `scatter` casts it to float32 with the rest of the batch)."""
        if "cls_prob" not in images[0]:
            raise ValueError(
                "the feature store has no 'cls_prob' column; PretrainingCollator's region targets are the detector's "
                "class distributions (import the features with their class probabilities)"
            )
        return [image["cls_prob"] for image in images]


class _CaptionPool:
    """Captions grouped by image, to draw a caption of an image other than a given one."""

    def __init__(self, rows: Sequence[Row]) -> None:
        image_ids = list(rows["image_id"]) if hasattr(rows, "column_names") else [row["image_id"] for row in rows]
        captions = list(rows["caption"]) if hasattr(rows, "column_names") else [row["caption"] for row in rows]
        by_image: dict[str, list[str]] = {}
        for image_id, caption in zip(image_ids, captions, strict=True):
            by_image.setdefault(image_id, []).append(caption)
        self.image_ids = list(by_image)
        self.captions = [by_image[image_id] for image_id in self.image_ids]

    def another_image(self, image_id: str, rng: np.random.Generator) -> int | None:
        """Index of a random image other than `image_id`, or None when the pool has no other image."""
        if len(self.image_ids) < 2 and (not self.image_ids or self.image_ids[0] == image_id):
            return None
        while True:
            index = int(rng.integers(len(self.image_ids)))
            if self.image_ids[index] != image_id:
                return index

    def caption_of_another_image(self, image_id: str, rng: np.random.Generator) -> str | None:
        """A random caption of a random image other than `image_id` (None when there is none)."""
        index = self.another_image(image_id, rng)
        if index is None:
            return None
        options = self.captions[index]
        return options[int(rng.integers(len(options)))]


class VQACollator(RegionTextCollator):
    """Questions with their image; `labels` (B, num_answers) holds each answer's soft score.

    A question's answers are normalised the VQA way and scored min(1, 0.3 n) for an answer n annotators gave
    (`AnswerVocabulary.soft_scores`); answers outside the vocabulary score nothing, and a question without answers
    (a test split) gets all zeros.

    Args:
        tokenizer, region_processor, store, max_length: see `RegionTextCollator` (the release uses 23 for VQA).
        vocabulary: the answer classes.
    """

    task = "vqa"

    def __init__(
        self,
        tokenizer: Any,
        region_processor: RegionFeatureProcessor,
        store: Any,
        vocabulary: AnswerVocabulary,
        max_length: int = 23,
    ) -> None:
        super().__init__(tokenizer, region_processor, store, max_length)
        if not len(vocabulary):
            raise ValueError("vocabulary is empty; an answer classifier needs at least one answer")
        self.vocabulary = vocabulary

    def __call__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        self.check_rows(rows, ("image_id", "question", "answers"))
        batch = {**self.encode_text([row["question"] for row in rows]), **self.encode_images(self.load_images(rows))}

        labels = torch.zeros(len(rows), len(self.vocabulary))
        for i, row in enumerate(rows):
            for index, score in self.scores(row["answers"]).items():
                labels[i, index] = score
        batch["labels"] = labels
        return batch

    def scores(self, answers: Sequence[str]) -> dict[int, float]:
        """Class index -> target score of a question's answers."""
        return self.vocabulary.soft_scores(answers)


class GQACollator(VQACollator):
    """GQA: the VQA collator with GQA's answer vocabulary; the one given answer scores 1.0, as in the release."""

    task = "gqa"

    def __init__(
        self,
        tokenizer: Any,
        region_processor: RegionFeatureProcessor,
        store: Any,
        vocabulary: AnswerVocabulary,
        max_length: int = 26,
    ) -> None:
        super().__init__(tokenizer, region_processor, store, vocabulary, max_length)

    def scores(self, answers: Sequence[str]) -> dict[int, float]:
        return self.vocabulary.exact_scores(answers)


class NLVR2Collator(RegionTextCollator):
    """A statement about two images: each example becomes two rows, (sentence, left image) then (sentence, right).

    The model inputs have 2B rows (example i in rows 2i and 2i + 1); the model pairs the two pooled outputs of an
    example, and `labels` (B,) is 1 when the statement is true.
    """

    task = "nlvr2"

    def __init__(
        self, tokenizer: Any, region_processor: RegionFeatureProcessor, store: Any, max_length: int = 40
    ) -> None:
        super().__init__(tokenizer, region_processor, store, max_length)

    def __call__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        self.check_rows(rows, ("sentence", "left_image_id", "right_image_id", "label"))
        texts = [row["sentence"] for row in rows for _ in range(2)]
        pairs = [{"image_id": row[side]} for row in rows for side in ("left_image_id", "right_image_id")]

        batch = {**self.encode_text(texts), **self.encode_images(self.load_images(pairs))}
        batch["labels"] = torch.tensor([int(row["label"]) for row in rows], dtype=torch.long)
        return batch


class SNLIVECollator(RegionTextCollator):
    """A hypothesis about an image; `labels` (B,) 0 entailment, 1 neutral, 2 contradiction."""

    task = "snli-ve"

    def __init__(
        self, tokenizer: Any, region_processor: RegionFeatureProcessor, store: Any, max_length: int = 56
    ) -> None:
        super().__init__(tokenizer, region_processor, store, max_length)

    def __call__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        self.check_rows(rows, ("image_id", "hypothesis", "label"))
        batch = {**self.encode_text([row["hypothesis"] for row in rows]), **self.encode_images(self.load_images(rows))}
        batch["labels"] = torch.tensor([int(row["label"]) for row in rows], dtype=torch.long)
        return batch


def box_iou(boxes: np.ndarray, box: Sequence[float], pixel_offset: float = 1.0) -> np.ndarray:
    """IoU of each of `boxes` (N, 4) with `box`, all pixel x1, y1, x2, y2. (N,)

    `pixel_offset` 1 counts a box's pixels inclusively (width x2 - x1 + 1), as the release's RefCOCO targets do;
    0 gives the continuous IoU.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = (float(value) for value in box)
    width = np.minimum(boxes[:, 2], x2) - np.maximum(boxes[:, 0], x1) + pixel_offset
    height = np.minimum(boxes[:, 3], y2) - np.maximum(boxes[:, 1], y1) + pixel_offset
    overlap = np.clip(width, 0, None) * np.clip(height, 0, None)

    areas = (boxes[:, 2] - boxes[:, 0] + pixel_offset) * (boxes[:, 3] - boxes[:, 1] + pixel_offset)
    area = (x2 - x1 + pixel_offset) * (y2 - y1 + pixel_offset)
    return overlap / (areas + area - overlap)


class RefCOCOCollator(RegionTextCollator):
    """A referring expression with its image; `region_targets` (B, R) is each region's IoU with the referred box.

    The targets follow the processor's row layout: the global row and padding rows are 0. IoU counts pixels
    inclusively (`pixel_offset` 1) as the release does; its accuracy metric is then whether the target at the
    highest-scoring region is above 0.5.

    Args:
        tokenizer, region_processor, store, max_length: see `RegionTextCollator` (the release uses 20).
        pixel_offset: see `box_iou`.
    """

    task = "refcoco"

    def __init__(
        self,
        tokenizer: Any,
        region_processor: RegionFeatureProcessor,
        store: Any,
        max_length: int = 20,
        pixel_offset: float = 1.0,
    ) -> None:
        super().__init__(tokenizer, region_processor, store, max_length)
        self.pixel_offset = pixel_offset

    def __call__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        self.check_rows(rows, ("image_id", "expression", "box"))
        for row in rows:
            if len(row["box"]) != 4:
                raise ValueError(f"refcoco row's box must be 4 pixel values x1, y1, x2, y2, got {row['box']!r}")
        images = self.load_images(rows)

        batch = {**self.encode_text([row["expression"] for row in rows]), **self.encode_images(images)}
        ious = [
            box_iou(image["boxes"], row["box"], self.pixel_offset) for image, row in zip(images, rows, strict=True)
        ]
        batch["region_targets"] = torch.from_numpy(self.region_processor.scatter(ious))
        return batch


class RetrievalCollator(RegionTextCollator):
    """Image-text retrieval trained as the release does: a (1 + num_negatives)-way choice of the matching pair.

    Each example becomes 1 + `num_negatives` rows: the gold pair, then the gold image with a caption of another
    image, then another image with the gold caption, then further negatives of either kind (drawn with equal
    chance). The model inputs have B * (1 + num_negatives) rows, example i in rows i * (1 + num_negatives)
    onwards; `labels` (B,) is 0, the position of the gold pair. The release draws its fourth negative from a
    precomputed pool of hard negatives; without one, it is drawn at random here.

    Args:
        tokenizer, region_processor, store, max_length: see `RegionTextCollator` (the release uses 30).
        num_negatives: mismatched pairs per example (3 in the release).
        captions: the pool of rows (`image_id`, `caption`) negatives are drawn from, e.g. the training table;
            without it they come from the batch.
        seed, rank: see `SeededDraws`.
    """

    task = "retrieval"

    def __init__(
        self,
        tokenizer: Any,
        region_processor: RegionFeatureProcessor,
        store: Any,
        num_negatives: int = 3,
        max_length: int = 30,
        captions: Sequence[Row] | None = None,
        seed: int = 0,
        rank: int | None = None,
    ) -> None:
        super().__init__(tokenizer, region_processor, store, max_length)
        if not isinstance(num_negatives, int) or num_negatives < 0:
            raise ValueError(f"num_negatives must be a non-negative int, got {num_negatives!r}")
        self.num_negatives = num_negatives
        self.pool = _CaptionPool(captions) if captions is not None else None
        self.draws = SeededDraws(seed, rank)

    def __call__(self, rows: Sequence[Row]) -> dict[str, torch.Tensor]:
        self.check_rows(rows, ("image_id", "caption"))
        rng = self.draws.next_generator(rows)
        pool = self.pool or _CaptionPool(rows)

        pairs = [pair for row in rows for pair in self._pairs(row, pool, rng)]
        batch = {**self.encode_text([caption for _, caption in pairs])}
        batch.update(self.encode_images(self.load_images([{"image_id": image_id} for image_id, _ in pairs])))
        batch["labels"] = torch.zeros(len(rows), dtype=torch.long)
        return batch

    def _pairs(self, row: Row, pool: _CaptionPool, rng: np.random.Generator) -> list[tuple[str, str]]:
        """(image id, caption) of the gold pair and its negatives, gold first."""
        kinds = ["caption", "image"] + [
            "caption" if rng.random() < 0.5 else "image" for _ in range(2, self.num_negatives)
        ]
        pairs = [(row["image_id"], row["caption"])]
        for kind in kinds[: self.num_negatives]:
            index = pool.another_image(row["image_id"], rng)
            if index is None:
                raise ValueError(
                    f"retrieval negatives need a caption pool with an image other than {row['image_id']!r}; pass "
                    "captions=<the training rows> or batches with several images"
                )
            if kind == "caption":
                options = pool.captions[index]
                pairs.append((row["image_id"], options[int(rng.integers(len(options)))]))
            else:
                pairs.append((pool.image_ids[index], row["caption"]))
        return pairs
