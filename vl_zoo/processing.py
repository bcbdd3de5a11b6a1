"""From region features, pixel boxes and image sizes (and text) to model inputs.

`RegionFeatureProcessor` does what the unified release's feature reader does: keep the first `max_regions`
regions of each image, normalise their boxes to (x1/W, y1/H, x2/W, y2/H, area/(W*H)), add the global image
row (the mean of the kept regions' features, box [0, 0, 1, 1, 1]) first or last, and pad the batch with
zero rows whose mask is 0. `VLProcessor` puts a tokenizer beside it and saves both with `save_pretrained`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

from .configuration import GLOBAL_REGION_PLACES, VLConfig

logger = logging.getLogger(__name__)

PADDING_CHOICES = ("max_regions", "longest")
GLOBAL_BOX = np.array([0.0, 0.0, 1.0, 1.0, 1.0], dtype=np.float32)


class RegionFeatureProcessor:
    """Pads, normalises and completes per-image region features into `visual_feats`, `visual_pos` and masks.

    Args:
        max_regions: regions kept per image (the first ones, in the detector's order).
        add_global_feature: where the global image row goes: "first", "last" (right after the kept regions,
            before the padding) or None for no global row.
        padding: "max_regions" pads every batch to `max_regions` rows plus the global row, as the release does;
            "longest" pads to the batch's largest image only (padded rows are masked out, so the outputs of the
            real rows are the same, and images with few regions cost far less).
    """

    def __init__(
        self, max_regions: int = 36, add_global_feature: str | None = "first", padding: str = "max_regions"
    ) -> None:
        if not isinstance(max_regions, int) or max_regions <= 0:
            raise ValueError(f"max_regions must be a positive int, got {max_regions!r}")
        if add_global_feature not in GLOBAL_REGION_PLACES:
            raise ValueError(
                f"add_global_feature={add_global_feature!r} is not supported; allowed: {list(GLOBAL_REGION_PLACES)}"
            )
        if padding not in PADDING_CHOICES:
            raise ValueError(f"padding={padding!r} is not supported; allowed: {list(PADDING_CHOICES)}")
        self.max_regions = max_regions
        self.add_global_feature = add_global_feature
        self.padding = padding

    @classmethod
    def from_config(
        cls, config: VLConfig, max_regions: int = 36, padding: str = "max_regions"
    ) -> RegionFeatureProcessor:
        """The region processor a model expects: its global row where `config.add_global_imgfeat` says."""
        return cls(max_regions=max_regions, add_global_feature=config.add_global_imgfeat, padding=padding)

    @property
    def num_rows(self) -> int:
        """Rows per image when padded to `max_regions`: the kept regions and the global row."""
        return self.max_regions + (self.add_global_feature is not None)

    def batch_rows(self, region_counts: Sequence[int]) -> int:
        """Rows per image in the output for a batch of images with these region counts (see `padding`)."""
        if self.padding == "max_regions":
            return self.num_rows
        longest = min(max(region_counts, default=0), self.max_regions)
        return longest + (self.add_global_feature is not None)

    def region_rows(self, num_regions: int) -> np.ndarray:
        """Output row of each kept region of an image with `num_regions` regions."""
        kept = min(num_regions, self.max_regions)
        return np.arange(kept) + (1 if self.add_global_feature == "first" else 0)

    def global_row(self, num_regions: int) -> int | None:
        """Output row of the global image row (None when there is none)."""
        if self.add_global_feature is None:
            return None
        return 0 if self.add_global_feature == "first" else min(num_regions, self.max_regions)

    def __call__(
        self,
        features: Sequence[np.ndarray],
        boxes: Sequence[np.ndarray],
        image_sizes: Sequence[tuple[int, int]],
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Model inputs for a batch of images.

        Args:
            features: per image, (R_i, F) region features (any float dtype; returned as float32).
            boxes: per image, (R_i, 4) pixel boxes x1, y1, x2, y2.
            image_sizes: per image, (height, width) in pixels.
            return_tensors: "pt", "np" or None (lists).
        """
        features, boxes = self._check(features, boxes, image_sizes)
        feature_size = features[0].shape[1]
        batch, num_rows = len(features), self.batch_rows([len(f) for f in features])
        visual_feats = np.zeros((batch, num_rows, feature_size), dtype=np.float32)
        visual_pos = np.zeros((batch, num_rows, 5), dtype=np.float32)
        visual_attention_mask = np.zeros((batch, num_rows), dtype=np.int64)

        # torch casts float16 features to float32 several times faster than numpy; both share this buffer.
        feats = torch.from_numpy(visual_feats)
        for i, (image_features, image_boxes, (height, width)) in enumerate(
            zip(features, boxes, image_sizes, strict=True)
        ):
            kept = min(len(image_features), self.max_regions)
            rows = self.region_rows(len(image_features))
            start = int(rows[0]) if kept else 0
            feats[i, start : start + kept].copy_(torch.from_numpy(np.ascontiguousarray(image_features[:kept])))
            visual_pos[i, rows] = normalise_boxes(image_boxes[:kept], height, width)
            visual_attention_mask[i, rows] = 1

            global_row = self.global_row(len(image_features))
            if global_row is not None:
                # The release's global row: the mean of the kept regions (zeros for an image without regions).
                if kept:
                    feats[i, global_row] = feats[i, start : start + kept].mean(dim=0)
                visual_pos[i, global_row] = GLOBAL_BOX
                visual_attention_mask[i, global_row] = 1

        data = {
            "visual_feats": visual_feats,
            "visual_pos": visual_pos,
            "visual_attention_mask": visual_attention_mask,
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    def scatter(self, per_image: Sequence[np.ndarray], fill: float = 0.0) -> np.ndarray:
        """Lay per-region values (R_i, ...) out like the features: (B, num_rows, ...), other rows `fill`.

        Collators use it to align region labels (masks, class distributions, IoU targets) with the rows the
        model sees.
        """
        trailing = np.asarray(per_image[0]).shape[1:] if len(per_image) else ()
        num_rows = self.batch_rows([len(values) for values in per_image])
        shape = (len(per_image), num_rows, *trailing)
        out = np.zeros(shape, dtype=np.float32) if fill == 0 else np.full(shape, fill, dtype=np.float32)
        rows = torch.from_numpy(out)  # torch's casts (from float16 above all) are several times numpy's speed
        for i, values in enumerate(per_image):
            values = np.asarray(values)
            kept = min(len(values), self.max_regions)
            if kept:
                start = int(self.region_rows(len(values))[0])
                rows[i, start : start + kept].copy_(torch.from_numpy(np.ascontiguousarray(values[:kept])))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_regions": self.max_regions,
            "add_global_feature": self.add_global_feature,
            "padding": self.padding,
        }

    def __repr__(self) -> str:
        return (
            f"RegionFeatureProcessor(max_regions={self.max_regions}, add_global_feature={self.add_global_feature!r}, "
            f"padding={self.padding!r})"
        )

    def _check(
        self, features: Sequence[np.ndarray], boxes: Sequence[np.ndarray], image_sizes: Sequence[tuple[int, int]]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if not (len(features) == len(boxes) == len(image_sizes)) or not len(features):
            raise ValueError(
                f"features, boxes and image_sizes must list the same images (at least one); got "
                f"{len(features)}, {len(boxes)} and {len(image_sizes)}"
            )
        features = [np.asarray(f) for f in features]
        boxes = [np.asarray(b, dtype=np.float32) for b in boxes]
        feature_size = features[0].shape[-1] if features[0].ndim == 2 else None
        for i, (f, b, size) in enumerate(zip(features, boxes, image_sizes, strict=True)):
            if f.ndim != 2 or f.shape[1] != feature_size:
                raise ValueError(f"features[{i}] has shape {f.shape}; expected (regions, {feature_size})")
            if b.shape != (f.shape[0], 4):
                raise ValueError(f"boxes[{i}] has shape {b.shape}; expected ({f.shape[0]}, 4) pixel x1, y1, x2, y2")
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"image_sizes[{i}] is {size!r}; expected (height, width) in pixels, both positive")
        bad = _images_with_bad_boxes(boxes, image_sizes)
        if len(bad):
            i, (height, width) = int(bad[0]), image_sizes[int(bad[0])]
            raise ValueError(
                f"boxes[{i}] has a box outside the {width}x{height} image or with x2 < x1 / y2 < y1; boxes "
                "are pixel x1, y1, x2, y2 within (0, 0, width, height) and image_sizes are (height, width)"
            )
        return features, boxes


def _images_with_bad_boxes(boxes: Sequence[np.ndarray], image_sizes: Sequence[tuple[int, int]]) -> np.ndarray:
    """Indices of the images with a box outside the image or with x2 < x1 / y2 < y1, checked for the whole batch
    at once (per image, the checks took a tenth of a pretraining batch's collation)."""
    counts = [len(b) for b in boxes]
    corners = np.concatenate(boxes) if sum(counts) else np.zeros((0, 4), dtype=np.float32)
    sizes = np.repeat(np.asarray(image_sizes, dtype=np.float32), counts, axis=0)  # (all boxes, (height, width))
    limits = sizes[:, [1, 0, 1, 0]]  # width, height, width, height
    bad = (corners < 0).any(axis=1) | (corners > limits).any(axis=1)
    bad |= (corners[:, 2] < corners[:, 0]) | (corners[:, 3] < corners[:, 1])
    return np.unique(np.repeat(np.arange(len(boxes)), counts)[bad])


def normalise_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel x1, y1, x2, y2 -> (x1/W, y1/H, x2/W, y2/H, area/(W*H)), as the release normalises them. (R, 5)"""
    boxes = np.asarray(boxes, dtype=np.float32)
    scale = np.array([width, height, width, height], dtype=np.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (width * height)
    return np.concatenate([boxes / scale, area[:, None]], axis=1)


class VLProcessor(ProcessorMixin):
    """A tokenizer and a `RegionFeatureProcessor`: text and regions to model inputs in one call.

    `save_pretrained` writes the tokenizer files and `processor_config.json` (the region settings);
    `AutoProcessor.from_pretrained(folder)` restores it when the folder's config.json names a vl_zoo model.
    """

    def __init__(
        self,
        tokenizer: Any = None,
        region_processor: RegionFeatureProcessor | None = None,
        max_regions: int = 36,
        add_global_feature: str | None = "first",
        region_padding: str = "max_regions",
        **kwargs: Any,
    ) -> None:
        if region_processor is not None:
            max_regions, add_global_feature = region_processor.max_regions, region_processor.add_global_feature
            region_padding = region_processor.padding
        RegionFeatureProcessor(max_regions, add_global_feature, region_padding)  # validates the settings
        # Scalars, not the object: ProcessorMixin serialises the processor's attributes to JSON.
        self.max_regions = max_regions
        self.add_global_feature = add_global_feature
        self.region_padding = region_padding
        super().__init__(tokenizer, **kwargs)

    @classmethod
    def for_model(cls, config: VLConfig, tokenizer: Any, max_regions: int = 36) -> VLProcessor:
        """The processor a model expects, with its global row where `config.add_global_imgfeat` says."""
        return cls(tokenizer, RegionFeatureProcessor.from_config(config, max_regions))

    @property
    def region_processor(self) -> RegionFeatureProcessor:
        return RegionFeatureProcessor(self.max_regions, self.add_global_feature, self.region_padding)

    def __call__(
        self,
        text: str | list[str] | None = None,
        features: Sequence[np.ndarray] | None = None,
        boxes: Sequence[np.ndarray] | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
        padding: bool | str = "longest",
        truncation: bool = True,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        **tokenizer_kwargs: Any,
    ) -> BatchFeature:
        """Tokenise `text` and process the regions of the matching images; either part may be left out."""
        if text is None and features is None:
            raise ValueError("give text, region features (with boxes and image_sizes), or both")
        data: dict[str, Any] = {}
        if text is not None:
            encoded = self.tokenizer(
                text,
                padding=padding,
                truncation=truncation,
                max_length=max_length,
                return_tensors=return_tensors,
                return_token_type_ids=True,
                return_attention_mask=True,
                **tokenizer_kwargs,
            )
            data.update(encoded)
        if features is not None:
            if boxes is None or image_sizes is None:
                raise ValueError("features need their boxes and image_sizes (height, width) too")
            regions = self.region_processor(features, boxes, image_sizes, return_tensors=return_tensors)
            data.update(regions)
            texts = 1 if isinstance(text, str) else (len(text) if text is not None else len(features))
            if texts != len(features):
                raise ValueError(f"text has {texts} entries but features has {len(features)} images; pair them 1:1")
        return BatchFeature(data=data, tensor_type=return_tensors)
