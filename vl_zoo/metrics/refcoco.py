"""RefCOCO / RefCOCO+ / RefCOCOg accuracy: the share of predicted boxes with IoU >= 0.5 to the referred box."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import datasets
import evaluate
import numpy as np

from .base import VLMetric

IOU_THRESHOLD = 0.5

_CITATION = """\
@inproceedings{yu2016modeling,
  title={Modeling Context in Referring Expressions},
  author={Yu, Licheng and Poirson, Patrick and Yang, Shan and Berg, Alexander C. and Berg, Tamara L.},
  booktitle={ECCV}, year={2016}
}
"""
_INPUTS = """
Args:
    predictions: the predicted pixel box of each expression, [x1, y1, x2, y2] with x1 <= x2 and y1 <= y2.
    references: the referred object's pixel box, in the same convention.
    pixel_offset: 0 (default) for continuous corners; 1 to count pixels inclusively (width x2 - x1 + 1), the
        convention of the release's IoU training targets (`vl_zoo.data.collators.box_iou`).
Returns:
    accuracy: the share of predictions whose IoU with their reference is at least 0.5, as a fraction.
"""


def paired_iou(boxes: np.ndarray, others: np.ndarray, pixel_offset: float = 0.0) -> np.ndarray:
    """IoU of each box with the box at the same position of `others`, both (N, 4) x1, y1, x2, y2. (N,)

    With `pixel_offset` 0, corners are continuous: a box's area is (x2 - x1) * (y2 - y1). Two boxes whose union
    has no area (two degenerate boxes) have IoU 0.
    """
    low = np.maximum(boxes[:, :2], others[:, :2])  # (N, 2)
    high = np.minimum(boxes[:, 2:], others[:, 2:])  # (N, 2)
    overlap = np.clip(high - low + pixel_offset, 0, None).prod(axis=1)  # (N,)
    union = _areas(boxes, pixel_offset) + _areas(others, pixel_offset) - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


def _areas(boxes: np.ndarray, pixel_offset: float) -> np.ndarray:
    """Areas of (N, 4) x1, y1, x2, y2 boxes. (N,)"""
    return (boxes[:, 2] - boxes[:, 0] + pixel_offset) * (boxes[:, 3] - boxes[:, 1] + pixel_offset)


def _boxes(name: str, values: Sequence[Any]) -> np.ndarray:
    """`values` as an (N, 4) float array of valid pixel boxes, or a ValueError naming the first bad one."""
    allowed = "a box [x1, y1, x2, y2] of 4 finite pixel coordinates with x1 <= x2 and y1 <= y2"
    for index, box in enumerate(values):
        try:
            corners = np.asarray(box, dtype=np.float64)
        except (TypeError, ValueError):
            corners = None
        if corners is None or corners.shape != (4,) or not np.isfinite(corners).all():
            raise ValueError(f"{name}[{index}] must be {allowed}; got {box!r}")
        if corners[2] < corners[0] or corners[3] < corners[1]:
            raise ValueError(f"{name}[{index}] must be {allowed}; got {box!r}, whose x2 < x1 or y2 < y1")
    return np.asarray(values, dtype=np.float64).reshape(-1, 4)


class RefcocoAccuracy(VLMetric):
    """Referring-expression accuracy: a prediction is right when its IoU with the referred box is >= 0.5.

    Boxes are pixel corners x1, y1, x2, y2, continuous by default: area (x2 - x1) * (y2 - y1), the convention of
    the task rows (`vl_zoo.data.tasks.read_refcoco` turns COCO's x, y, w, h into x, y, x + w, y + h); IoU exactly
    0.5 counts as right, as in the usual RefCOCO evaluation (MAttNet's `computeIoU(...) >= 0.5`).
    `compute(..., pixel_offset=1)` counts pixels inclusively instead, as the release's IoU training targets do
    (`vl_zoo.data.collators.box_iou`).
    """

    def _info(self) -> evaluate.MetricInfo:
        box = datasets.Sequence(datasets.Value("float64"))
        return evaluate.MetricInfo(
            description="RefCOCO accuracy: share of predicted boxes with IoU >= 0.5 to the referred box.",
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features({"predictions": box, "references": box}),
            homepage="https://github.com/lichengunc/refer",
        )

    def _checked(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, Any]:
        return {"predictions": _boxes("predictions", predictions), "references": _boxes("references", references)}

    def _compute(
        self, predictions: list[list[float]], references: list[list[float]], pixel_offset: float = 0.0
    ) -> dict[str, float]:
        if isinstance(pixel_offset, bool) or not isinstance(pixel_offset, (int, float)) or pixel_offset < 0:
            raise ValueError(f"pixel_offset must be a number >= 0 (0 continuous, 1 inclusive), got {pixel_offset!r}")
        boxes, others = (np.asarray(values, dtype=np.float64).reshape(-1, 4) for values in (predictions, references))
        ious = paired_iou(boxes, others, float(pixel_offset))
        return {"accuracy": float(np.mean(ious >= IOU_THRESHOLD))}
