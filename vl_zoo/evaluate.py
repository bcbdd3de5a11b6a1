"""Evaluate a fine-tuned model on one split of a task: predictions in the official formats, and the metrics.

    python -m vl_zoo.evaluate --task vqa --model runs/vqa --data builtin:synthetic --split validation \\
        --output-dir runs/vqa-eval

`--model` is a folder fine-tuned for the task (by `vl_zoo.finetune`, or converted from a release task checkpoint):
its `config.finetuning_task` must be the task. `--data` is a data folder (see vl_zoo/training.py) holding
`features/` and `<task>/<split>`, or `builtin:synthetic`. The output folder receives the predictions and
`metrics.json` (the task's `eval_*` metrics, when the split has labels):

- vqa: `vqa_results.json`, `[{"question_id": int, "answer": str}]`, the VQA evaluation server's result format
- gqa: `gqa_predictions.json`, `[{"questionId": str, "prediction": str}]`, what GQA's `eval.py` reads
- nlvr2: `nlvr2_predictions.csv`, one `identifier,True` or `identifier,False` line per example (NLVR2's script)
- snli-ve: `snli_ve_predictions.json`, `[{"pair_id": str, "prediction": "entailment" / "neutral" /
  "contradiction"}]`
- refcoco: `refcoco_predictions.json`, `[{"ref_id": str, "image_id": str, "box": [x1, y1, x2, y2]}]`, the chosen
  region's pixel box
- retrieval: `retrieval_rankings.json`, `{"images": [image ids], "texts": [{"caption", "image_id",
  "ranked_images": [10 indices into images]}], "image_to_texts": [[10 indices into texts] per image]}`

The library functions (`predict`, `task_metrics`, `majority_metrics`) are what `vl_zoo.finetune` evaluates with
each epoch.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from .data.collators import RegionTextCollator
from .data.features import FeatureStore
from .data.tasks import normalize_answer
from .modeling.tasks import SNLI_VE_LABELS, TASK_MODEL_CLASSES
from .processing import RegionFeatureProcessor
from .training import BUILTIN_SYNTHETIC, resolve_data_folder

logger = logging.getLogger(__name__)

TASKS = tuple(TASK_MODEL_CLASSES)
CLASSIFICATION_TASKS = ("vqa", "gqa", "nlvr2", "snli-ve")
# The fields of a task's rows that prediction reads, and those the metrics compare against.
INPUT_FIELDS = {
    "vqa": ("question_id", "image_id", "question"),
    "gqa": ("question_id", "image_id", "question"),
    "nlvr2": ("identifier", "sentence", "left_image_id", "right_image_id"),
    "snli-ve": ("pair_id", "image_id", "hypothesis"),
    "refcoco": ("ref_id", "image_id", "expression"),
    "retrieval": ("image_id", "caption"),
}
LABEL_FIELDS = {"vqa": "answers", "gqa": "answers", "nlvr2": "label", "snli-ve": "label", "refcoco": "box"}
METRIC_NAMES = {
    "vqa": "vqa_accuracy",
    "gqa": "gqa_accuracy",
    "nlvr2": "nlvr2",
    "snli-ve": "snli_ve_accuracy",
    "refcoco": "refcoco_accuracy",
    "retrieval": "retrieval_recall",
}
# The metric the best epoch is chosen by.
MAIN_METRICS = {
    "vqa": "eval_vqa_accuracy",
    "gqa": "eval_gqa_accuracy",
    "nlvr2": "eval_nlvr2_accuracy",
    "snli-ve": "eval_snli_ve_accuracy",
    "refcoco": "eval_refcoco_accuracy",
    "retrieval": "eval_recall_mean",
}
EVAL_BATCH_SIZE = 64


@dataclass
class TaskInputs:
    """What turns task rows into model inputs: tokenizer, region layout and feature store, with the text length."""

    task: str
    tokenizer: Any
    regions: RegionFeatureProcessor
    store: Any
    max_length: int
    batch_size: int = EVAL_BATCH_SIZE

    def encoder(self) -> RegionTextCollator:
        return RegionTextCollator(self.tokenizer, self.regions, self.store, self.max_length)


# ---------------------------------------------------------------------------------------------- predictions


@torch.no_grad()
def predict(
    inputs: TaskInputs, model: torch.nn.Module, rows: datasets.Dataset, device: torch.device, accelerator=None
) -> list:
    """One prediction per row (for retrieval, one score per image per text), over all processes in row order.

    vqa, gqa: the answer string; nlvr2, snli-ve: the class id; refcoco: the pixel box [x1, y1, x2, y2] of the
    chosen region (the whole image for the global row); retrieval: the text's scores against every image of
    `retrieval_images(rows)`. With an `accelerator`, each process predicts a contiguous shard and the shards are
    gathered.
    """
    shard = rows
    if accelerator is not None and accelerator.num_processes > 1:
        shard = rows.shard(accelerator.num_processes, accelerator.process_index, contiguous=True)
    was_training = model.training
    model.eval()
    if inputs.task == "retrieval":
        predictions = _retrieval_scores(inputs, model, shard, retrieval_images(rows), device)
    else:
        predictions = []
        for start in range(0, len(shard), inputs.batch_size):
            chunk = [shard[i] for i in range(start, min(start + inputs.batch_size, len(shard)))]
            predictions.extend(_predict_batch(inputs, model, chunk, device))
    model.train(was_training)

    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        predictions = gather_object(predictions)
    return predictions


def _predict_batch(inputs: TaskInputs, model: torch.nn.Module, rows: list[dict], device: torch.device) -> list:
    encoder = inputs.encoder()
    task = inputs.task
    if task == "nlvr2":
        texts = [row["sentence"] for row in rows for _ in range(2)]
        images = [{"image_id": row[side]} for row in rows for side in ("left_image_id", "right_image_id")]
    else:
        text_field = {"vqa": "question", "gqa": "question", "snli-ve": "hypothesis", "refcoco": "expression"}[task]
        texts, images = [row[text_field] for row in rows], rows
    stored = encoder.load_images(images)
    batch = {**encoder.encode_text(texts), **encoder.encode_images(stored)}
    logits = model(**{key: value.to(device) for key, value in batch.items()}).logits.float().cpu()

    chosen = logits.argmax(-1).tolist()
    if task in ("vqa", "gqa"):
        return [model.config.id2label[index] for index in chosen]
    if task == "refcoco":
        return [_region_box(inputs.regions, image, row) for image, row in zip(stored, chosen, strict=True)]
    return chosen


def _region_box(regions: RegionFeatureProcessor, image: dict, row: int) -> list[float]:
    """The pixel box of the region at model row `row` (the whole image for the global row)."""
    boxes = np.asarray(image["boxes"], dtype=np.float64)
    if row == regions.global_row(len(boxes)):
        return [0.0, 0.0, float(image["image_width"]), float(image["image_height"])]
    region = {int(r): i for i, r in enumerate(regions.region_rows(len(boxes)))}[row]
    return [float(value) for value in boxes[region]]


def retrieval_images(rows: datasets.Dataset) -> list[str]:
    """The distinct images of retrieval rows, in order of first appearance: the columns of the score matrix."""
    return list(dict.fromkeys(rows["image_id"]))


def _retrieval_scores(
    inputs: TaskInputs, model: torch.nn.Module, rows: datasets.Dataset, images: list[str], device: torch.device
) -> list[list[float]]:
    """Each text's matching score with every image: len(rows) x len(images) forward rows, in batches."""
    encoder = inputs.encoder()
    visual = encoder.encode_images(encoder.load_images([{"image_id": image_id} for image_id in images]))
    scores = []
    for row in (rows[i] for i in range(len(rows))):
        text = encoder.encode_text([row["caption"]])
        row_scores = []
        for start in range(0, len(images), inputs.batch_size):
            count = min(inputs.batch_size, len(images) - start)
            batch = {key: value.expand(count, -1) for key, value in text.items()}
            batch |= {key: value[start : start + count] for key, value in visual.items()}
            out = model(**{key: value.to(device) for key, value in batch.items()})
            row_scores.extend(out.logits.float().cpu().tolist())
        scores.append(row_scores)
    return scores


# ---------------------------------------------------------------------------------------------- metrics


def has_labels(task: str, rows: datasets.Dataset) -> bool:
    """Whether every row carries what the task's metric compares against (a test split may not)."""
    if task == "retrieval":
        return len(rows) > 0
    field = LABEL_FIELDS[task]
    if field not in rows.column_names:
        return False
    return task not in ("vqa", "gqa") or all(len(answers) > 0 for answers in rows[field])


def task_metrics(task: str, rows: datasets.Dataset, predictions: Sequence) -> dict[str, float]:
    """The task's official metrics of `predictions` against the rows' labels, named `eval_<task>_<metric>`."""
    from . import metrics

    metric = metrics.load(METRIC_NAMES[task])
    if task == "vqa":
        result = metric.compute(predictions=list(predictions), references=rows["answers"])
    elif task == "gqa":
        result = metric.compute(predictions=list(predictions), references=[answers[0] for answers in rows["answers"]])
    elif task == "nlvr2":
        result = metric.compute(
            predictions=list(predictions), references=rows["label"], identifiers=rows["identifier"]
        )
    elif task == "snli-ve":
        result = metric.compute(predictions=list(predictions), references=rows["label"])
    elif task == "refcoco":
        result = metric.compute(predictions=list(predictions), references=rows["box"])
    else:
        images = {image_id: index for index, image_id in enumerate(retrieval_images(rows))}
        result = metric.compute(scores=np.asarray(predictions), text_to_image=[images[i] for i in rows["image_id"]])
        recalls = {f"eval_{name}": float(value) for name, value in result.items()}
        return recalls | {"eval_recall_mean": float(np.mean(list(recalls.values())))}
    prefix = task.replace("-", "_")
    return {f"eval_{prefix}_{name}": float(value) for name, value in result.items()}


def majority_answer(task: str, train_rows: datasets.Dataset) -> Any:
    """The most frequent training answer: VQA's per-question majority answer (normalised), else the label."""
    if task == "vqa":
        votes = Counter(
            Counter(normalize_answer(answer) for answer in answers).most_common(1)[0][0]
            for answers in train_rows["answers"]
            if answers
        )
    elif task == "gqa":
        votes = Counter(answers[0] for answers in train_rows["answers"] if answers)
    else:
        votes = Counter(train_rows["label"])
    if not votes:
        raise ValueError(f"the {task} training rows have no answers to find the most frequent one")
    return votes.most_common(1)[0][0]


def majority_metrics(task: str, train_rows: datasets.Dataset, rows: datasets.Dataset, scores: dict) -> dict:
    """The main metric of always giving the most frequent training answer, and the model's gain over it."""
    main = MAIN_METRICS[task]
    majority = task_metrics(task, rows, [majority_answer(task, train_rows)] * len(rows))[main]
    return {
        f"eval_majority_{main.removeprefix('eval_')}": majority,
        "eval_gain_over_majority": scores[main] - majority,
    }


# ---------------------------------------------------------------------------------------------- files


def write_predictions(task: str, rows: datasets.Dataset, predictions: Sequence, output_dir: Path) -> Path:
    """Write predictions in the task's submission format (see the module docstring); returns the file."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if task == "nlvr2":
        path = output_dir / "nlvr2_predictions.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            for identifier, label in zip(rows["identifier"], predictions, strict=True):
                writer.writerow([identifier, "True" if int(label) == 1 else "False"])
        return path

    if task == "vqa":
        name, content = (
            "vqa_results.json",
            [
                {"question_id": _numeric(qid), "answer": answer}
                for qid, answer in zip(rows["question_id"], predictions, strict=True)
            ],
        )
    elif task == "gqa":
        name, content = (
            "gqa_predictions.json",
            [
                {"questionId": qid, "prediction": answer}
                for qid, answer in zip(rows["question_id"], predictions, strict=True)
            ],
        )
    elif task == "snli-ve":
        name, content = (
            "snli_ve_predictions.json",
            [
                {"pair_id": pair_id, "prediction": SNLI_VE_LABELS[int(label)]}
                for pair_id, label in zip(rows["pair_id"], predictions, strict=True)
            ],
        )
    elif task == "refcoco":
        name, content = (
            "refcoco_predictions.json",
            [
                {"ref_id": ref_id, "image_id": image_id, "box": box}
                for ref_id, image_id, box in zip(rows["ref_id"], rows["image_id"], predictions, strict=True)
            ],
        )
    else:
        name, content = "retrieval_rankings.json", _rankings(rows, np.asarray(predictions))
    path = output_dir / name
    path.write_text(json.dumps(content) + "\n")
    return path


def _numeric(question_id: str) -> int | str:
    """VQA's result format wants integer question ids; ids that are not numbers stay strings."""
    return int(question_id) if str(question_id).isdigit() else question_id


def _rankings(rows: datasets.Dataset, scores: np.ndarray, top: int = 10) -> dict:
    """The ten best images of each text and the ten best texts of each image, by score."""
    images = retrieval_images(rows)
    by_text = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    by_image = np.argsort(-scores.T, axis=1, kind="stable")[:, :top]
    texts = [
        {"caption": caption, "image_id": image_id, "ranked_images": ranked.tolist()}
        for caption, image_id, ranked in zip(rows["caption"], rows["image_id"], by_text, strict=True)
    ]
    return {"images": images, "texts": texts, "image_to_texts": by_image.tolist()}


# ---------------------------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--task", required=True, choices=TASKS)
    add("--model", required=True, help="a folder fine-tuned for the task")
    add("--data", required=True, help=f"a data folder (features/ and <task>/<split>) or {BUILTIN_SYNTHETIC!r}")
    add("--split", default="validation", help="the split folder under <data>/<task>/ (default: validation)")
    add("--output-dir", required=True, type=Path)
    add("--overwrite-output-dir", action="store_true", help="replace files in a non-empty --output-dir")
    add("--tokenizer", default=None, help="tokenizer folder when neither the model nor the data folder has one")
    add("--max-length", type=int, default=None, help="tokens per text (default: the task's fine-tuning length)")
    add("--max-regions", type=int, default=36)
    add("--batch-size", type=int, default=EVAL_BATCH_SIZE)
    add("--synthetic-images", type=int, default=4000, help=f"images of {BUILTIN_SYNTHETIC}")
    add("--seed", type=int, default=42, help=f"seed of {BUILTIN_SYNTHETIC}")
    args = parser.parse_args(argv)
    if not (Path(args.model) / "config.json").is_file():
        raise SystemExit(f"--model {args.model!r} is not a model folder (it has no config.json)")
    for name in ("max_regions", "batch_size"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.output_dir.exists() and any(args.output_dir.iterdir()) and not args.overwrite_output_dir:
        raise SystemExit(f"--output-dir {str(args.output_dir)!r} is not empty; pass --overwrite-output-dir")
    return args


def load_model(task: str, folder: str) -> torch.nn.Module:
    """The task model saved in `folder`, refused unless it was fine-tuned for `task`."""
    config = AutoConfig.from_pretrained(folder)
    trained_for = getattr(config, "finetuning_task", None)
    if trained_for != task:
        raise SystemExit(
            f"--model {folder!r} was fine-tuned for {trained_for!r} (config.finetuning_task), not for {task!r}; "
            "evaluate a model fine-tuned for the task (vl_zoo.finetune, or a converted release task checkpoint)"
        )
    return TASK_MODEL_CLASSES[task].from_pretrained(folder)


def load_split(folder: Path, task: str, split: str) -> tuple[FeatureStore, datasets.Dataset]:
    """The feature store and one split of a task's rows, with the fields prediction needs checked."""
    missing = [part for part in ("features", f"{task}/{split}") if not (folder / part).is_dir()]
    if missing:
        raise SystemExit(f"--data {str(folder)!r} lacks {missing} (features/ and {task}/{split} are needed)")
    rows = datasets.load_from_disk(str(folder / task / split))
    lacking = [field for field in INPUT_FIELDS[task] if field not in rows.column_names]
    if lacking:
        raise SystemExit(f"the {task} rows of {split} lack the field(s) {lacking} (they have {rows.column_names})")
    return FeatureStore(folder / "features"), rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Predict, write the predictions and metrics.json; returns the metrics."""
    from .finetune import TASK_RECIPES, region_padding

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = load_model(args.task, args.model)
    cache = Path(os.environ.get("VL_ZOO_CACHE", Path.home() / ".cache" / "vl_zoo"))
    folder = resolve_data_folder(args.data, args.seed, cache, args.synthetic_images)
    store, rows = load_split(folder, args.task, args.split)
    tokenizer_path = args.tokenizer or _tokenizer_folder(Path(args.model), folder)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    regions = RegionFeatureProcessor.from_config(model.config, args.max_regions, region_padding(model.config))
    max_length = args.max_length or TASK_RECIPES[args.task].max_length
    inputs = TaskInputs(args.task, AutoTokenizer.from_pretrained(tokenizer_path), regions, store, max_length)
    inputs.batch_size = args.batch_size
    predictions = predict(inputs, model.to(device), rows, device)

    path = write_predictions(args.task, rows, predictions, args.output_dir)
    metrics: dict[str, Any] = {"task": args.task, "split": args.split, "examples": len(rows)}
    if has_labels(args.task, rows):
        metrics |= task_metrics(args.task, rows, predictions)
    else:
        logger.warning("the %s rows of %s carry no labels: predictions only, no metrics", args.task, args.split)
    (args.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("wrote %s and %s", path, args.output_dir / "metrics.json")
    print(json.dumps(metrics, indent=2))
    return metrics


def _tokenizer_folder(model: Path, data: Path) -> str:
    """The tokenizer saved beside the model, else the data folder's."""
    for folder in (model, data / "tokenizer"):
        if (folder / "tokenizer_config.json").is_file():
            return str(folder)
    raise SystemExit(f"neither {str(model)!r} nor {str(data / 'tokenizer')!r} holds a tokenizer; pass --tokenizer")


if __name__ == "__main__":
    main()
