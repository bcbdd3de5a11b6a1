"""Fine-tuning on one of the six downstream tasks, driven by Accelerate, with evaluation each epoch.

One process:
    accelerate launch -m vl_zoo.finetune --task vqa --model runs/pretrain --train-data DATA --output-dir runs/vqa
Two data-parallel processes on a CPU-only machine, a tiny model on the synthetic data:
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \\
        -m vl_zoo.finetune --task vqa --model vlzoo_uniter --preset tiny --train-data builtin:synthetic \\
        --output-dir runs/vqa-synthetic

`--task` is vqa, gqa, nlvr2, snli-ve, refcoco or retrieval; `--model` a model_type (fresh weights, with
`--preset`) or any saved vl_zoo folder: a model already fine-tuned for the task keeps its head, any other keeps
its backbone and gets a new head. `--train-data` is a data folder (see vl_zoo/training.py) whose
`<task>/validation` rows are evaluated after every epoch; the best epoch's model (by the task's main metric) is
what `--output-dir` holds at the end, with its processor and `metrics.json` (`world_size`, the task's `eval_*`
metrics and, for the classification tasks, `eval_gain_over_majority`: the metric minus that of always giving the
most frequent training answer). `eval_log.jsonl` has every evaluation, `train_log.jsonl` every step.

Defaults are the release's fine-tuning settings of the controlled study (`TASK_RECIPES`): AdamW with eps 1e-6,
betas 0.9/0.999 and weight decay 1e-4 (not on biases and LayerNorms), 10% linear warm-up then linear decay,
gradient clipping at 1.0, and per task its learning rate, batch size, 20 epochs and text length. Those settings
are for pretrained 768-wide models; with `--preset tiny` (a small model trained from scratch, for tests and
demos) `TINY_RECIPE` replaces the learning rate, batch size and epochs, and a saved folder of the tiny preset
(its config records the preset) takes `TINY_PRETRAINED_RECIPE`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from transformers import AutoConfig

from . import pretrain
from .configuration import VLConfig
from .data import collators
from .data.tasks import AnswerVocabulary
from .evaluate import (
    CLASSIFICATION_TASKS,
    INPUT_FIELDS,
    LABEL_FIELDS,
    MAIN_METRICS,
    TaskInputs,
    has_labels,
    majority_metrics,
    predict,
    task_metrics,
)
from .loop import Prepared, end_run, prepare_training, save_model, train_loop, training_loader
from .modeling.model import VLModel
from .modeling.tasks import NLVR2_LABELS, SNLI_VE_LABELS
from .models import ARCHITECTURES, config_from_preset, task_model_class
from .pretrain import parse_config_overrides
from .processing import RegionFeatureProcessor, VLProcessor
from .training import (
    BUILTIN_SYNTHETIC,
    TaskData,
    check_config_overrides,
    check_output_dir,
    fill_unset,
    load_task_data,
    resolve_data_folder,
)

logger = get_logger(__name__)


@dataclass(frozen=True)
class TaskRecipe:
    """A task's fine-tuning settings in the release (config_tasks/*.yml and the examples' train.sh scripts)."""

    learning_rate: float
    batch_size: int
    num_train_epochs: float
    max_length: int
    drop_last: bool = False


# The controlled study's settings (ctrl_trainval_tasks.yml); GQA and SNLI-VE, which the controlled study did not
# fine-tune, from the release's all_trainval_tasks.yml.
TASK_RECIPES = {
    "vqa": TaskRecipe(learning_rate=1e-4, batch_size=256, num_train_epochs=20, max_length=23),
    "gqa": TaskRecipe(learning_rate=4e-5, batch_size=256, num_train_epochs=20, max_length=26),
    "nlvr2": TaskRecipe(learning_rate=1e-5, batch_size=64, num_train_epochs=20, max_length=40, drop_last=True),
    "snli-ve": TaskRecipe(learning_rate=2e-5, batch_size=128, num_train_epochs=20, max_length=56),
    "refcoco": TaskRecipe(learning_rate=1e-4, batch_size=256, num_train_epochs=20, max_length=20),
    "retrieval": TaskRecipe(learning_rate=2e-5, batch_size=64, num_train_epochs=20, max_length=30),
}
# A tiny model trained from scratch needs a larger step than a pretrained 768-wide one, and more, smaller batches.
TINY_RECIPE = {"learning_rate": 1e-3, "batch_size": 64, "num_train_epochs": 20}
# A saved tiny model (pretrained by `vl_zoo.pretrain --preset tiny`) takes the same step sizes and needs fewer epochs:
# VQA on builtin:synthetic reaches 0.91 after one and 0.999 after seven.
TINY_PRETRAINED_RECIPE = {**TINY_RECIPE, "num_train_epochs": 8}
# The fewest questions an answer must win to be a class: the release's rule for VQA; GQA keeps every answer.
ANSWER_MIN_COUNT = {"vqa": 9, "gqa": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--task", required=True, choices=sorted(TASK_RECIPES))
    add("--model", required=True, help=f"a model_type ({', '.join(sorted(ARCHITECTURES))}) or a saved model folder")
    add("--preset", default="ctrl", help="the preset of a model_type: ctrl (default), tiny, original, ...")
    add("--config-overrides", default=None, help="config fields of a model_type, as name=value,name=value")
    add("--train-data", required=True, help=f"{BUILTIN_SYNTHETIC!r} or a data folder (see vl_zoo/training.py)")
    add("--output-dir", required=True, type=Path)
    add("--overwrite-output-dir", action="store_true", help="replace a non-empty --output-dir")
    add("--tokenizer", default=None, help="tokenizer folder, when the data folder has none")
    add("--answer-vocabulary", default=None, help="vqa/gqa: a JSON list of answers (default: from the rows)")
    add("--answer-min-count", type=int, default=None, help="vqa/gqa: questions an answer must win (vqa 9, gqa 1)")
    add("--max-regions", type=int, default=36)
    add("--max-length", type=int, default=None, help="tokens per text (default: the task's)")
    add("--batch-size", type=int, default=None, help="examples per optimiser step over all processes")
    add("--eval-batch-size", type=int, default=64, help="examples per evaluation batch and process")
    add("--gradient-accumulation-steps", type=int, default=1)
    add("--num-train-epochs", type=float, default=None)
    add("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    add("--learning-rate", type=float, default=None)
    add("--weight-decay", type=float, default=1e-4)
    add("--adam-eps", type=float, default=1e-6)
    add("--adam-betas", type=float, nargs=2, default=(0.9, 0.999))
    add("--warmup-ratio", type=float, default=0.1)
    add("--scheduler", default="linear", help="a transformers.get_scheduler name")
    add("--max-grad-norm", type=float, default=1.0)
    add("--mixed-precision", choices=("no", "bf16", "fp16"), default=None, help="default: accelerate's setting")
    add("--checkpointing-steps", type=int, default=None, help="save a resumable checkpoint every N steps")
    add("--resume-from-checkpoint", default=None, help="'latest' or a checkpoint folder")
    add("--report-to", default="none", help="accelerate trackers: tensorboard, wandb, all or none")
    add("--num-workers", type=int, default=0, help="DataLoader workers per process")
    add("--synthetic-images", type=int, default=4000, help=f"images of {BUILTIN_SYNTHETIC}")
    add("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    fill_task_defaults(args)
    check_args(args)
    return args


def fill_task_defaults(args: argparse.Namespace) -> None:
    """Options left unset take the task's recipe (the tiny recipe's step sizes for --preset tiny)."""
    recipe = vars(TASK_RECIPES[args.task]).copy()
    if args.model in ARCHITECTURES and args.preset == "tiny":
        recipe |= TINY_RECIPE
    elif saved_preset(args.model) == "tiny":
        recipe |= TINY_PRETRAINED_RECIPE
    fill_unset(
        args, {name: recipe[name] for name in ("learning_rate", "batch_size", "num_train_epochs", "max_length")}
    )
    args.drop_last = recipe["drop_last"]
    if args.answer_min_count is None:
        args.answer_min_count = ANSWER_MIN_COUNT.get(args.task, 1)


def saved_preset(model: str) -> str | None:
    """The preset a saved model folder's config was built from (`VLConfig.from_preset` records it), if any."""
    config = Path(model) / "config.json"
    if model in ARCHITECTURES or not config.is_file():
        return None
    return json.loads(config.read_text()).get("preset")


def check_args(args: argparse.Namespace) -> None:
    """Contradictions and impossible values, refused before any process starts work."""
    positive = ("max_regions", "max_length", "batch_size", "eval_batch_size", "gradient_accumulation_steps")
    for name in (*positive, "answer_min_count"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.max_steps is not None and args.max_steps <= 0:
        raise SystemExit(f"--max-steps must be positive, got {args.max_steps}")
    if args.model not in ARCHITECTURES and not (Path(args.model) / "config.json").is_file():
        raise SystemExit(
            f"--model {args.model!r} is neither a vl_zoo model_type ({sorted(ARCHITECTURES)}) nor a folder with "
            "a config.json"
        )
    if args.model not in ARCHITECTURES and (args.preset != "ctrl" or args.config_overrides):
        raise SystemExit("--preset and --config-overrides apply to a model_type; a saved folder brings its config")
    args.config_overrides = parse_config_overrides(args.config_overrides)
    if args.model in ARCHITECTURES:
        try:
            check_config_overrides(args.model, args.preset, args.config_overrides)
        except ValueError as error:
            raise SystemExit(f"--config-overrides: {error}") from None
    if args.resume_from_checkpoint and args.overwrite_output_dir:
        raise SystemExit("--resume-from-checkpoint continues a run in --output-dir; it cannot also overwrite it")
    if args.train_data != BUILTIN_SYNTHETIC:
        missing = [part for part in ("features", f"{args.task}/train") if not (Path(args.train_data) / part).is_dir()]
        if missing:
            raise SystemExit(
                f"--train-data {args.train_data!r} is not a data folder for {args.task}: it lacks {missing}, and it "
                f"is not {BUILTIN_SYNTHETIC!r}"
            )
    if args.answer_vocabulary and args.task not in ("vqa", "gqa"):
        raise SystemExit(f"--answer-vocabulary names the answers of vqa or gqa, not of {args.task}")
    if not 0 <= args.warmup_ratio < 1:
        raise SystemExit(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}")


def make_accelerator(args: argparse.Namespace) -> Accelerator:
    """Pretraining's Accelerator, whose data-parallel wrapper looks for parameters without a gradient each step:
    a task head leaves parts of the backbone unused (RefCOCO reads no pooler), and which parts depends on the
    model."""
    return pretrain.make_accelerator(args, [DistributedDataParallelKwargs(find_unused_parameters=True)])


# ---------------------------------------------------------------------------------------------- data and model


def check_task_fields(task: str, data: TaskData) -> None:
    """Refuse rows that lack a field the task trains or evaluates on, naming the fields."""
    needed = (*INPUT_FIELDS[task], *([LABEL_FIELDS[task]] if task in LABEL_FIELDS else []))
    for split, rows in (("train", data.train), ("validation", data.validation)):
        if rows is None:
            continue
        lacking = [field for field in needed if field not in rows.column_names]
        if lacking:
            raise SystemExit(
                f"the {task} rows of {split} in {str(data.folder)!r} lack the field(s) {lacking} that fine-tuning "
                f"needs (they have {rows.column_names})"
            )
    if not has_labels(task, data.train):
        raise SystemExit(f"the {task} training rows in {str(data.folder)!r} carry no labels ({LABEL_FIELDS[task]})")


def task_labels(task: str, data: TaskData, args: argparse.Namespace) -> list[str] | None:
    """The class names of the task's head: the answer vocabulary of VQA and GQA, the fixed classes of the others."""
    if task == "nlvr2":
        return list(NLVR2_LABELS)
    if task == "snli-ve":
        return list(SNLI_VE_LABELS)
    if task not in ("vqa", "gqa"):
        return None
    if args.answer_vocabulary:
        return AnswerVocabulary.load(args.answer_vocabulary).answers
    vocabulary = AnswerVocabulary.from_rows(data.train, min_count=args.answer_min_count, normalize=task == "vqa")
    if not len(vocabulary):
        raise SystemExit(
            f"no answer of the {task} training rows wins {args.answer_min_count} questions; lower "
            "--answer-min-count or pass --answer-vocabulary"
        )
    return vocabulary.answers


def build_task_model(args: argparse.Namespace, data: TaskData, labels: list[str] | None) -> torch.nn.Module:
    """A fresh model of a model_type, or a saved folder's: its head when fine-tuned for the task, else its backbone."""
    vocab_size, feature_size = len(data.tokenizer), data.store.feature_size
    if args.model in ARCHITECTURES:
        config = config_from_preset(
            args.model, args.preset, vocab_size=vocab_size, v_feature_size=feature_size, **args.config_overrides
        )
        return task_model_class(args.model, args.task)(_for_task(config, args.task, labels))

    config = AutoConfig.from_pretrained(args.model)
    if config.model_type not in ARCHITECTURES:
        raise SystemExit(f"--model {args.model!r} holds a {config.model_type!r} model, not a vl_zoo architecture")
    if (config.vocab_size, config.v_feature_size) != (vocab_size, feature_size):
        raise SystemExit(
            f"--model {args.model!r} has vocab_size {config.vocab_size} and v_feature_size {config.v_feature_size}, "
            f"but the data has a {vocab_size}-word tokenizer and {feature_size}-d features"
        )
    if getattr(config, "finetuning_task", None) == args.task:
        _check_head_labels(args, config, labels)
        return task_model_class(config.model_type, args.task).from_pretrained(args.model)

    logger.info(f"{args.model} has no {args.task} head: its backbone is loaded and a new head initialised")
    backbone = VLModel.from_pretrained(args.model)
    model = task_model_class(config.model_type, args.task)(_for_task(backbone.config, args.task, labels))
    model.vl.load_state_dict(backbone.state_dict())
    return model


def _for_task(config: VLConfig, task: str, labels: list[str] | None) -> VLConfig:
    """The config with the task recorded and its class names (which size the VQA and GQA heads)."""
    config.finetuning_task = task
    if labels is not None:
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: index for index, label in enumerate(labels)}
    return config


def _check_head_labels(args: argparse.Namespace, config: VLConfig, labels: list[str] | None) -> None:
    """A model fine-tuned for the task keeps its head: its classes must be the data's."""
    if args.task not in ("vqa", "gqa"):
        return
    head = [config.id2label[index] for index in range(len(config.id2label))]
    if head == labels:
        return
    if args.answer_vocabulary is None and labels is not None and set(labels) <= set(head):
        labels[:] = head  # answers built from the rows, all known to the head: keep the head's classes and order
        return
    raise SystemExit(
        f"the answer vocabulary does not match the {args.task} head of {args.model!r}: the head has {len(head)} "
        f"answers (config.id2label, e.g. {head[:3]}), the vocabulary {len(labels or [])} (e.g. {(labels or [])[:3]}); "
        "pass --answer-vocabulary with the head's answers in class order"
    )


def region_padding(config: VLConfig) -> str:
    """Batches padded to their largest image, unless the release's VL-BERT behaviour depends on the row count."""
    if config.vl_bert_shared_text_positions or config.vl_bert_visual_from_last_row:
        return "max_regions"
    return "longest"


def make_collator(args: argparse.Namespace, data: TaskData, regions: RegionFeatureProcessor, labels: list[str] | None):
    """The task's collator (vl_zoo/data/collators.py), with the release's text length unless told otherwise."""
    common = {"tokenizer": data.tokenizer, "region_processor": regions, "store": data.store}
    common["max_length"] = args.max_length
    if args.task in ("vqa", "gqa"):
        vocabulary = AnswerVocabulary(labels, normalize=args.task == "vqa")
        collator = collators.VQACollator if args.task == "vqa" else collators.GQACollator
        return collator(**common, vocabulary=vocabulary)
    if args.task == "retrieval":
        return collators.RetrievalCollator(**common, captions=data.train, seed=args.seed)
    by_task = {"nlvr2": collators.NLVR2Collator, "snli-ve": collators.SNLIVECollator}
    return by_task.get(args.task, collators.RefCOCOCollator)(**common)


# ---------------------------------------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line, fine-tune with evaluation each epoch, keep the best; returns metrics.json's content."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_output_dir(args.output_dir, args.overwrite_output_dir, args.resume_from_checkpoint is not None)
    accelerator = make_accelerator(args)
    set_seed(args.seed)

    with accelerator.main_process_first():
        cache = Path(os.environ.get("VL_ZOO_CACHE", Path.home() / ".cache" / "vl_zoo"))
        folder = resolve_data_folder(args.train_data, args.seed, cache, args.synthetic_images)
        data = load_task_data(folder, args.task, args.tokenizer)
    check_task_fields(args.task, data)
    labels = task_labels(args.task, data, args)
    model = build_task_model(args, data, labels)
    regions = RegionFeatureProcessor.from_config(model.config, args.max_regions, region_padding(model.config))
    processor = VLProcessor.for_model(model.config, data.tokenizer, args.max_regions)

    collator = make_collator(args, data, regions, labels)
    loader = training_loader(args, accelerator, data.train, collator, drop_last=args.drop_last)
    run = prepare_training(args, accelerator, model, loader)

    evaluator = Evaluator(
        args,
        accelerator,
        data,
        TaskInputs(args.task, data.tokenizer, regions, data.store, args.max_length, args.eval_batch_size),
        processor,
    )
    state = train_loop(
        args,
        accelerator,
        run,
        name=args.task,
        batch_size_of=lambda batch: len(batch.get("labels", batch.get("region_targets"))),
        on_epoch_end=evaluator,
        on_resume=evaluator.resume,
    )
    if evaluator.last_step != state["steps"]:  # the run stopped inside an epoch: evaluate where it stopped
        evaluator(run.model, state["steps"], state["steps"] * args.gradient_accumulation_steps / len(run.loader))
    return finish(args, accelerator, run, evaluator, state | {"eval_seconds": evaluator.seconds})


class Evaluator:
    """Evaluates the validation rows (after each epoch), logs each result and keeps the best model in --output-dir."""

    def __init__(
        self,
        args: argparse.Namespace,
        accelerator: Accelerator,
        data: TaskData,
        inputs: TaskInputs,
        processor: VLProcessor,
    ) -> None:
        self.args, self.accelerator, self.inputs, self.processor = args, accelerator, inputs, processor
        self.train_rows = data.train
        self.rows = data.validation if data.validation is not None and len(data.validation) else None
        if self.rows is not None and not has_labels(args.task, self.rows):
            raise SystemExit(f"the {args.task} validation rows in {str(data.folder)!r} carry no labels to evaluate")
        if self.rows is None:
            logger.warning(f"{data.folder} has no {args.task}/validation rows: no evaluation, the last model is kept")
        self.main_metric = MAIN_METRICS[args.task]
        self.best: dict[str, Any] | None = None
        self.last_step: int | None = None
        self.seconds = 0.0
        self.log_path = args.output_dir / "eval_log.jsonl"

    def resume(self, step: int) -> None:
        """The best evaluation logged up to `step`, by a run this one continues."""
        if self.rows is None or not self.log_path.is_file():
            return
        records = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        for record in (r for r in records if r["step"] <= step):
            self._keep_if_best(record)
            self.last_step = record["step"]

    def __call__(self, model: torch.nn.Module, step: int, epoch: float) -> None:
        if self.rows is None:
            return
        started = time.perf_counter()
        unwrapped = self.accelerator.unwrap_model(model)
        with self.accelerator.autocast():
            predictions = predict(self.inputs, unwrapped, self.rows, self.accelerator.device, self.accelerator)
        metrics = task_metrics(self.args.task, self.rows, predictions)
        if self.args.task in CLASSIFICATION_TASKS:
            metrics |= majority_metrics(self.args.task, self.train_rows, self.rows, metrics)
        record = {"step": step, "epoch": round(epoch, 4), **metrics}
        self.last_step = step
        self.accelerator.log(metrics, step=step)
        if self.accelerator.is_main_process:
            with self.log_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        logger.info(f"evaluation at step {step}: {json.dumps(metrics)}")
        if self._keep_if_best(record):
            save_model(self.accelerator, model, self.processor, self.args.output_dir)
        self.seconds += time.perf_counter() - started

    def _keep_if_best(self, record: dict[str, Any]) -> bool:
        if self.best is not None and record[self.main_metric] <= self.best[self.main_metric]:
            return False
        self.best = record
        return True


def finish(
    args: argparse.Namespace, accelerator: Accelerator, run: Prepared, evaluator: Evaluator, state: dict
) -> dict[str, Any]:
    """metrics.json: the best evaluation (whose model --output-dir holds), the run's size and speed."""
    if evaluator.best is None:
        save_model(accelerator, run.model, evaluator.processor, args.output_dir)
    best = dict(evaluator.best or {})
    metrics = {"task": args.task, "world_size": accelerator.num_processes}
    if best:
        metrics |= {"best_step": best.pop("step"), "best_epoch": best.pop("epoch"), **best}
    metrics |= state
    model = end_run(accelerator, run)
    if accelerator.is_main_process:
        (args.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        shared = type(model).__mro__[1].__name__
        logger.info(
            f"saved the best model and its processor in {args.output_dir}; load them with `import vl_zoo` then "
            f"vl_zoo.{shared}.from_pretrained({str(args.output_dir)!r}) and "
            f"AutoProcessor.from_pretrained({str(args.output_dir)!r}). Metrics: {json.dumps(metrics)}"
        )
    return metrics


if __name__ == "__main__":
    main()
