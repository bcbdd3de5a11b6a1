"""The downstream tasks' metrics as `evaluate` metrics, built from this package: nothing is fetched from the Hub.

    from vl_zoo import metrics

    vqa = metrics.load("vqa_accuracy")
    vqa.compute(predictions=["2"], references=[["2", "2", "two", "2", "3", "2", "2", "2", "2", "2"]])

| name | inputs | result |
|---|---|---|
| `vqa_accuracy` | predictions: answers (str); references: each question's human answers | accuracy |
| `gqa_accuracy` | predictions, references: answers (str), compared exactly | accuracy |
| `snli_ve_accuracy` | predictions, references: class ids (int) or label names (str) | accuracy |
| `nlvr2` | predictions, references: labels; identifiers: NLVR2 identifiers | accuracy, consistency |
| `refcoco_accuracy` | predictions, references: pixel boxes [x1, y1, x2, y2] | accuracy (IoU >= 0.5) |
| `retrieval_recall` | scores: (texts, images); text_to_image: each text's image column | ir_r1/5/10, tr_r1/5/10 |

Results are fractions in [0, 1]. Each metric is an `evaluate.Metric` (`add_batch`, `add`, `compute`, several
processes through `num_process` / `process_id`); its class's docstring gives the exact definition.
"""

from __future__ import annotations

import evaluate

from .base import VLMetric
from .classification import NLVR2, GQAAccuracy, SnliVeAccuracy, nlvr2_sentence
from .refcoco import RefcocoAccuracy, paired_iou
from .retrieval import RetrievalRecall, gold_ranks
from .vqa import VQAAccuracy, process_answer, vqa_score

METRICS: dict[str, type[VLMetric]] = {
    "vqa_accuracy": VQAAccuracy,
    "gqa_accuracy": GQAAccuracy,
    "snli_ve_accuracy": SnliVeAccuracy,
    "nlvr2": NLVR2,
    "refcoco_accuracy": RefcocoAccuracy,
    "retrieval_recall": RetrievalRecall,
}


def load(
    name: str,
    *,
    keep_in_memory: bool | None = None,
    cache_dir: str | None = None,
    num_process: int = 1,
    process_id: int = 0,
    experiment_id: str | None = None,
) -> evaluate.Metric:
    """The metric `name`, built from its class in this package, so it loads offline.

    Args:
        name: one of `METRICS`.
        keep_in_memory: hold the added examples in memory rather than in an Arrow file under `cache_dir`. Defaults
            to True for one process; several processes share their examples through files, as evaluate does.
        cache_dir, num_process, process_id, experiment_id: as for `evaluate.load`.
    """
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; vl_zoo.metrics has {sorted(METRICS)}")
    if keep_in_memory is None:
        keep_in_memory = num_process == 1
    return METRICS[name](
        keep_in_memory=keep_in_memory,
        cache_dir=cache_dir,
        num_process=num_process,
        process_id=process_id,
        experiment_id=experiment_id,
    )


__all__ = [
    "METRICS",
    "NLVR2",
    "GQAAccuracy",
    "RefcocoAccuracy",
    "RetrievalRecall",
    "SnliVeAccuracy",
    "VLMetric",
    "VQAAccuracy",
    "gold_ranks",
    "load",
    "nlvr2_sentence",
    "paired_iou",
    "process_answer",
    "vqa_score",
]
