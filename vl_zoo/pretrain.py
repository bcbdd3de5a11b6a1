"""Pretraining (masked words, masked regions, image-text matching) driven by Accelerate.

One process (CPU or one GPU):
    accelerate launch -m vl_zoo.pretrain --model vlzoo_uniter --preset tiny --train-data builtin:synthetic \\
        --output-dir runs/pretrain
Two data-parallel processes on a CPU-only machine (accelerate's --cpu alone starts a single process; with
--multi_gpu and --num_processes it starts N processes, which this script joins over gloo when no GPU is there):
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \\
        -m vl_zoo.pretrain --model vlzoo_uniter --preset tiny --train-data builtin:synthetic --output-dir runs/ddp
Many GPUs, several machines, FSDP or DeepSpeed: the same script under `accelerate launch --config_file ...`
(examples/accelerate/ holds one config for each).

The objectives and their weights come from the model's config. The optimiser and schedule default to the
release's pretraining recipe: AdamW (lr 1e-4, eps 1e-6, betas 0.9/0.999, weight decay 0.01 off biases and
LayerNorms), 10% linear warm-up then linear decay, gradient clipping at 5.0, batch 256, 10 epochs; the tiny
preset takes `TINY_RECIPE`'s learning rate, batch and epochs instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, DistributedType, set_seed

from .conversion.bert import initialise_text_from_bert
from .data.collators import PretrainingCollator
from .evaluation import evaluate_pretraining
from .loop import end_run, prepare_training, save_model, train_loop, training_loader
from .models import ARCHITECTURES
from .processing import RegionFeatureProcessor, VLProcessor
from .training import (
    BUILTIN_SYNTHETIC,
    build_pretraining_model,
    check_config_overrides,
    check_output_dir,
    fill_unset,
    load_task_data,
    resolve_data_folder,
)

logger = get_logger(__name__)

# The release's pretraining step sizes, the defaults of options left unset.
RELEASE_RECIPE = {"learning_rate": 1e-4, "batch_size": 256, "num_train_epochs": 10}
# A tiny model trained from scratch needs a larger step and more, smaller batches: on builtin:synthetic (3,600
# training images, two captions each) 27 epochs are 3,037 steps of 64, about four minutes on 2 CPU cores.
TINY_RECIPE = {"learning_rate": 1e-3, "batch_size": 64, "num_train_epochs": 27}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model", required=True, help=f"a model_type ({', '.join(sorted(ARCHITECTURES))}) or a saved model folder")
    add("--preset", default="ctrl", help="the preset of a model_type: ctrl (default), tiny, original, ...")
    add("--train-data", required=True, help=f"{BUILTIN_SYNTHETIC!r} or a data folder (see vl_zoo/training.py)")
    add("--eval-data", default=None, help="a data folder whose pretraining/validation rows are evaluated")
    add("--output-dir", required=True, type=Path)
    add("--overwrite-output-dir", action="store_true", help="replace a non-empty --output-dir")
    add("--tokenizer", default=None, help="tokenizer folder, when the data folder has none")
    add("--text-init", default=None, help="a text-only BERT checkpoint folder for the text side")
    add(
        "--config-overrides",
        default=None,
        help="model config fields for a model_type, as name=value pairs separated by commas "
        "(e.g. hidden_dropout_prob=0,attention_probs_dropout_prob=0); values are read as JSON, else as strings",
    )
    add("--mlm-probability", type=float, default=0.15, help="share of caption tokens masked (the release's 0.15)")
    add("--max-regions", type=int, default=36)
    add("--max-length", type=int, default=38)
    add("--batch-size", type=int, default=None, help="total batch per optimiser step, over processes (default 256)")
    add("--gradient-accumulation-steps", type=int, default=1)
    add("--num-train-epochs", type=float, default=None, help="default 10")
    add("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    add("--learning-rate", type=float, default=None, help="default 1e-4")
    add("--weight-decay", type=float, default=0.01)
    add("--adam-eps", type=float, default=1e-6)
    add("--adam-betas", type=float, nargs=2, default=(0.9, 0.999))
    add("--warmup-ratio", type=float, default=0.1)
    add("--scheduler", default="linear", help="a transformers.get_scheduler name")
    add("--max-grad-norm", type=float, default=5.0)
    add("--mixed-precision", choices=("no", "bf16", "fp16"), default=None, help="default: accelerate's setting")
    add("--checkpointing-steps", type=int, default=None, help="save a resumable checkpoint every N steps")
    add("--resume-from-checkpoint", default=None, help="'latest' or a checkpoint folder")
    add("--report-to", default="none", help="accelerate trackers: tensorboard, wandb, all or none")
    add("--num-workers", type=int, default=0, help="DataLoader workers per process")
    add("--synthetic-images", type=int, default=4000, help=f"images of {BUILTIN_SYNTHETIC}")
    add("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    fill_unset(args, RELEASE_RECIPE | (TINY_RECIPE if args.preset == "tiny" else {}))
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    """Contradictions and impossible values, refused before any process starts work."""
    positive = ("max_regions", "max_length", "batch_size", "gradient_accumulation_steps")
    for name in positive:
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.max_steps is not None and args.max_steps <= 0:
        raise SystemExit(f"--max-steps must be positive, got {args.max_steps}")
    if args.model not in ARCHITECTURES and not (Path(args.model) / "config.json").is_file():
        raise SystemExit(
            f"--model {args.model!r} is neither a vl_zoo model_type ({sorted(ARCHITECTURES)}) nor a folder with "
            "a config.json"
        )
    if args.model not in ARCHITECTURES and args.preset != "ctrl":
        raise SystemExit("--preset applies to a model_type; a saved model folder brings its own config")
    if args.model not in ARCHITECTURES and args.config_overrides:
        raise SystemExit("--config-overrides applies to a model_type; a saved model folder brings its own config")
    args.config_overrides = parse_config_overrides(args.config_overrides)
    if args.model in ARCHITECTURES:
        try:
            check_config_overrides(args.model, args.preset, args.config_overrides)
        except ValueError as error:
            raise SystemExit(f"--config-overrides: {error}") from None
    if args.resume_from_checkpoint and args.overwrite_output_dir:
        raise SystemExit("--resume-from-checkpoint continues a run in --output-dir; it cannot also overwrite it")
    for option, spec in (("--train-data", args.train_data), ("--eval-data", args.eval_data)):
        if spec is not None and spec != BUILTIN_SYNTHETIC:
            missing = [part for part in ("features", "pretraining/train") if not (Path(spec) / part).is_dir()]
            if missing:
                raise SystemExit(
                    f"{option} {spec!r} is not a data folder: it lacks {missing} (a data folder holds features/ "
                    f"and pretraining/train, see vl_zoo/training.py), and it is not {BUILTIN_SYNTHETIC!r}"
                )
    if not 0 <= args.warmup_ratio < 1:
        raise SystemExit(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}")
    if not 0 < args.mlm_probability <= 1:
        raise SystemExit(f"--mlm-probability must be in (0, 1], got {args.mlm_probability}")


def parse_config_overrides(text: str | None) -> dict[str, Any]:
    """ "a=1,b=true,c=gelu" -> {"a": 1, "b": True, "c": "gelu"}; names are checked when the config is built."""
    overrides: dict[str, Any] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--config-overrides: {item!r} is not name=value (pairs are separated by commas)")
        try:
            overrides[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name.strip()] = value.strip()
    return overrides


def make_accelerator(args: argparse.Namespace, kwargs_handlers: list | None = None) -> Accelerator:
    """An Accelerator that joins a multi-process CPU launch over gloo, and checks the process count."""
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(args.output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=kwargs_handlers,
    )
    check_process_count(accelerator.num_processes, int(os.environ.get("WORLD_SIZE", "1")))
    warn_if_not_sharded(accelerator)
    return accelerator


def sharding_not_run(environ: Mapping[str, str], distributed_type: DistributedType) -> str | None:
    """The sharding a launch asked for (FSDP, DeepSpeed) that this process does not run, or None.

    Without CUDA, `Accelerator(cpu=True)` takes accelerate's multi-CPU path (DDP over gloo) whatever the config
    file says: the run trains the same model, but every process holds all the weights and optimiser state.
    """
    for variable, name, wanted in (
        ("ACCELERATE_USE_FSDP", "FSDP", DistributedType.FSDP),
        ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed", DistributedType.DEEPSPEED),
    ):
        if environ.get(variable, "false").lower() == "true" and distributed_type != wanted:
            return name
    return None


def warn_if_not_sharded(accelerator: Accelerator) -> None:
    """Log when the launch's FSDP or DeepSpeed config is not what runs (on a CPU-only machine it never is)."""
    asked = sharding_not_run(os.environ, accelerator.distributed_type)
    if asked is not None:
        logger.warning(
            f"the launch asked for {asked}, but accelerate runs {accelerator.distributed_type.value} here (it does "
            f"not shard on CPU): each process holds the whole model and optimiser state"
        )


def check_process_count(joined: int, launched: int) -> None:
    """Refuse to run when the launcher started more processes than joined the process group."""
    if joined != launched:
        raise RuntimeError(
            f"{launched} processes were launched but this one sees {joined}: the processes are not joined and "
            "would each train alone. On a CPU-only machine launch with --multi_gpu --num_processes N "
            "(accelerate's --cpu alone starts one process)"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line, train, evaluate, save; returns the metrics written to metrics.json."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_output_dir(args.output_dir, args.overwrite_output_dir, args.resume_from_checkpoint is not None)
    accelerator = make_accelerator(args)
    set_seed(args.seed)

    # Data: the synthetic set is built once by the main process; the others wait and reuse it.
    with accelerator.main_process_first():
        cache = Path(os.environ.get("VL_ZOO_CACHE", Path.home() / ".cache" / "vl_zoo"))
        folder = resolve_data_folder(args.train_data, args.seed, cache, args.synthetic_images)
        data = load_task_data(folder, "pretraining", args.tokenizer)
        eval_data = (
            data if args.eval_data is None else load_task_data(Path(args.eval_data), "pretraining", args.tokenizer)
        )

    # Model, with the global region where its config wants it.
    model = build_pretraining_model(
        args.model, args.preset, len(data.tokenizer), data.store.feature_size, args.config_overrides
    )
    if args.text_init:
        initialise_text_from_bert(model, args.text_init)
    processor = VLProcessor.for_model(model.config, data.tokenizer, args.max_regions)
    # Training batches are padded to their largest image only: the same outputs, less work on small scenes.
    regions = RegionFeatureProcessor.from_config(model.config, args.max_regions, padding="longest")

    collator = PretrainingCollator(
        data.tokenizer,
        regions,
        data.store,
        max_length=args.max_length,
        mlm_probability=args.mlm_probability,
        seed=args.seed,
    )
    loader = training_loader(args, accelerator, data.train, collator, drop_last=True)
    run = prepare_training(args, accelerator, model, loader)
    state = train_loop(
        args,
        accelerator,
        run,
        name="pretraining",
        batch_size_of=lambda batch: len(batch["input_ids"]),
    )

    # Evaluation and the final save.
    metrics = evaluate_pretraining(accelerator, run.model, eval_data, regions, args)
    metrics.update(world_size=accelerator.num_processes, **state)
    save_model(accelerator, run.model, processor, args.output_dir)
    end_run(accelerator, run)
    write_metrics(accelerator, args.output_dir, metrics)
    return metrics


def write_metrics(accelerator: Accelerator, output_dir: Path, metrics: dict) -> None:
    """metrics.json in --output-dir, and where the model is and how to load it, from the main process."""
    if not accelerator.is_main_process:
        return
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info(
        f"saved the model and processor in {output_dir}; load them with `import vl_zoo` then "
        f"AutoModelForPreTraining.from_pretrained({str(output_dir)!r}) and "
        f"AutoProcessor.from_pretrained({str(output_dir)!r}). Metrics: {json.dumps(metrics)}"
    )


if __name__ == "__main__":
    main()
