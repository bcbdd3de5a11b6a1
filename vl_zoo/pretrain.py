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
LayerNorms), 10% linear warm-up then linear decay, gradient clipping at 5.0, batch 256, 10 epochs.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from .conversion.bert import initialise_text_from_bert
from .data.collators import PretrainingCollator
from .evaluation import evaluate_pretraining
from .models import ARCHITECTURES
from .processing import RegionFeatureProcessor, VLProcessor
from .training import (
    BUILTIN_SYNTHETIC,
    IndexedRows,
    build_optimizer,
    build_pretraining_model,
    check_config_overrides,
    check_output_dir,
    checkpoint_step,
    find_checkpoint,
    load_task_data,
    resolve_data_folder,
)

logger = get_logger(__name__)


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
    add("--batch-size", type=int, default=256, help="total batch per optimiser step, over processes")
    add("--gradient-accumulation-steps", type=int, default=1)
    add("--num-train-epochs", type=float, default=10)
    add("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    add("--learning-rate", type=float, default=1e-4)
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


def make_accelerator(args: argparse.Namespace) -> Accelerator:
    """An Accelerator that joins a multi-process CPU launch over gloo, and checks the process count."""
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(args.output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    check_process_count(accelerator.num_processes, int(os.environ.get("WORLD_SIZE", "1")))
    return accelerator


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

    per_process = args.batch_size // (accelerator.num_processes * args.gradient_accumulation_steps)
    if per_process < 1:
        raise SystemExit(f"--batch-size {args.batch_size} is smaller than processes x accumulation steps")
    collator = PretrainingCollator(
        data.tokenizer,
        regions,
        data.store,
        max_length=args.max_length,
        mlm_probability=args.mlm_probability,
        seed=args.seed,
    )
    loader = torch.utils.data.DataLoader(
        IndexedRows(data.train),
        batch_size=per_process,
        shuffle=True,
        drop_last=True,
        collate_fn=collator,
        num_workers=args.num_workers,
    )

    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    max_steps = args.max_steps or math.ceil(args.num_train_epochs * steps_per_epoch)
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, args.adam_eps, tuple(args.adam_betas))
    scheduler = get_scheduler(
        args.scheduler, optimizer, num_warmup_steps=int(args.warmup_ratio * max_steps), num_training_steps=max_steps
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    state = train(args, accelerator, model, optimizer, loader, scheduler, max_steps)

    # Evaluation and the final save.
    metrics = evaluate_pretraining(accelerator, model, eval_data, regions, args)
    metrics.update(world_size=accelerator.num_processes, **state)
    save_final(accelerator, model, processor, args, metrics)
    return metrics


def train(
    args: argparse.Namespace,
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: torch.utils.data.DataLoader,
    scheduler: Any,
    max_steps: int,
) -> dict[str, float]:
    """The optimisation loop: accumulation, clipping, logging, checkpoints, exact resume."""
    step, skip_batches, epoch = 0, 0, 0
    checkpoint = find_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        step = checkpoint_step(checkpoint)
        micro_batches = step * args.gradient_accumulation_steps
        epoch, skip_batches = divmod(micro_batches, len(loader))
        logger.info(f"resuming from {checkpoint} at step {step} (epoch {epoch}, batch {skip_batches})")

    if accelerator.is_main_process:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers("vl_zoo_pretrain", config={k: str(v) for k, v in vars(args).items()})
    log_path = args.output_dir / "train_log.jsonl"
    progress = tqdm(total=max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="pretraining")
    model.train()
    losses, samples, started = [], 0, time.perf_counter()

    while step < max_steps:
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip_batches) if skip_batches else loader
        skip_batches = 0
        for batch in _iterate_keeping_rng(batches):
            with accelerator.accumulate(model):
                out = model(**batch)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            samples += len(batch["input_ids"]) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue

            step += 1
            record = _step_record(accelerator, out, step, scheduler)
            losses.append(record["loss"])
            _log(accelerator, log_path, record)
            progress.update(1)
            progress.set_postfix(loss=f"{record['loss']:.3f}")
            if args.checkpointing_steps and step % args.checkpointing_steps == 0:
                accelerator.save_state(str(args.output_dir / "checkpoints" / f"step_{step}"))
            if step >= max_steps:
                break
        epoch += 1

    progress.close()
    elapsed = time.perf_counter() - started
    tail = losses[-max(1, len(losses) // 10) :] if losses else [float("nan")]
    return {"train_loss": sum(tail) / len(tail), "samples_per_second": samples / max(elapsed, 1e-9), "steps": step}


def _iterate_keeping_rng(loader: Any) -> Any:
    """Iterate a loader without letting the iterator's start draw from torch's global generator.

    A DataLoader draws a seed when an iterator starts (at the first batch, since accelerate's loaders are
    generators). A resumed run restores the generator's state and then starts an iterator mid-epoch, where the
    uninterrupted run did not; without this the two runs' dropout masks would part ways at that draw.
    """
    state = torch.random.get_rng_state()
    iterator = iter(loader)
    first = next(iterator, None)
    torch.random.set_rng_state(state)
    if first is None:
        return
    yield first
    yield from iterator


def _step_record(accelerator: Accelerator, out: Any, step: int, scheduler: Any) -> dict[str, float]:
    """The step's losses, averaged over processes."""
    parts = {"loss": out.loss}
    for name in ("mlm_loss", "region_loss", "itm_loss"):
        if getattr(out, name) is not None:
            parts[name] = getattr(out, name)
    values = accelerator.reduce(torch.stack([v.detach().float() for v in parts.values()]), reduction="mean")
    record = {name: float(value) for name, value in zip(parts, values.tolist(), strict=True)}
    return {"step": step, **record, "learning_rate": scheduler.get_last_lr()[0]}


def _log(accelerator: Accelerator, log_path: Path, record: dict[str, float]) -> None:
    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
    if accelerator.is_main_process:
        with log_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def save_final(
    accelerator: Accelerator, model: torch.nn.Module, processor: VLProcessor, args: argparse.Namespace, metrics: dict
) -> None:
    """The model and processor with save_pretrained, and metrics.json, in --output-dir."""
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(args.output_dir, is_main_process=True, save_function=accelerator.save)
    processor.save_pretrained(args.output_dir)
    (args.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info(
        f"saved the model and processor in {args.output_dir}; load them with `import vl_zoo` then "
        f"AutoModelForPreTraining.from_pretrained({str(args.output_dir)!r}) and "
        f"AutoProcessor.from_pretrained({str(args.output_dir)!r}). Metrics: {json.dumps(metrics)}"
    )


if __name__ == "__main__":
    main()
