"""The optimisation loop shared by pretraining and fine-tuning, under Accelerate.

`training_loader` splits the batch over the processes; `prepare_training` builds the optimiser and the schedule
around a loader and hands all of them to the accelerator; `train_loop` runs the steps: accumulation, clipping,
logging to the trackers and to `train_log.jsonl`, resumable checkpoints every N steps, exact resume, and an
optional hook at the end of each epoch (fine-tuning evaluates there); `save_model` writes the model and its
processor, and `end_run` lets the processes go.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from tqdm.auto import tqdm
from transformers import get_scheduler

from .training import IndexedRows, build_optimizer, checkpoint_step, find_checkpoint

logger = get_logger(__name__)

LOSS_PARTS = ("mlm_loss", "region_loss", "itm_loss")  # logged next to the total when the output has them


def training_loader(
    args: argparse.Namespace, accelerator: Accelerator, rows: Any, collator: Callable, drop_last: bool
) -> torch.utils.data.DataLoader:
    """A shuffled loader of one process's share of `--batch-size` (the total over processes and accumulation)."""
    per_process = args.batch_size // (accelerator.num_processes * args.gradient_accumulation_steps)
    if per_process < 1:
        raise SystemExit(f"--batch-size {args.batch_size} is smaller than processes x accumulation steps")
    return torch.utils.data.DataLoader(
        IndexedRows(rows),
        batch_size=per_process,
        shuffle=True,
        drop_last=drop_last,
        collate_fn=collator,
        num_workers=args.num_workers,
    )


@dataclass
class Prepared:
    """What `train_loop` runs: the prepared model, optimiser, loader and schedule, and the optimiser steps to make."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: Any
    scheduler: Any
    max_steps: int


def prepare_training(
    args: argparse.Namespace, accelerator: Accelerator, model: torch.nn.Module, loader: torch.utils.data.DataLoader
) -> Prepared:
    """The prepared model, optimiser, loader and schedule, and the number of optimiser steps to run.

    The steps are counted on the prepared loader, which holds one process's share of the data: counted on the
    loader before `prepare`, a two-process run would make twice the epochs it was asked for. Accelerate steps a
    prepared schedule once per process at each optimiser step (its convention for schedules written in
    single-process steps), so the schedule is built over `steps * num_processes` to span the run exactly.
    """
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, args.adam_eps, tuple(args.adam_betas))
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    max_steps = args.max_steps or math.ceil(args.num_train_epochs * steps_per_epoch)
    scheduled = max_steps * accelerator.num_processes
    scheduler = get_scheduler(
        args.scheduler, optimizer, num_warmup_steps=int(args.warmup_ratio * scheduled), num_training_steps=scheduled
    )
    return Prepared(model, optimizer, loader, accelerator.prepare(scheduler), max_steps)


def train_loop(
    args: argparse.Namespace,
    accelerator: Accelerator,
    run: Prepared,
    *,
    name: str,
    batch_size_of: Callable[[dict], int],
    on_epoch_end: Callable[[torch.nn.Module, int, float], None] | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Run the optimiser steps; returns `train_loss` (mean of the last tenth), `train_seconds`, `samples_per_second`
    and `steps`. Time spent in `on_epoch_end` is not training time and is left out of both rates.

    Args:
        name: the tracker's project name and the progress bar's label.
        batch_size_of: the number of examples in one process's batch.
        on_epoch_end: called with (model, step, epoch) after each full epoch.
        on_resume: called with the step a resumed run starts from, so that the hook can restore its own record.
    """
    step, epoch, skip_batches = _resume(args, accelerator, len(run.loader))
    if step and on_resume is not None:
        on_resume(step)
    progress = _start(args, accelerator, name, run.max_steps, step)
    run.model.train()
    losses, samples, hook_seconds, started = [], 0, 0.0, time.perf_counter()

    while step < run.max_steps:
        run.loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(run.loader, skip_batches) if skip_batches else run.loader
        skip_batches = 0
        for batch in iterate_keeping_rng(batches):
            out = _micro_step(args, accelerator, run, batch)
            samples += batch_size_of(batch) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue

            step += 1
            losses.append(_after_step(args, accelerator, run, out, step, progress))
            if step >= run.max_steps:
                break
        else:  # the epoch ran to its end
            epoch += 1
            if on_epoch_end is not None:
                hook_started = time.perf_counter()
                on_epoch_end(run.model, step, epoch)
                hook_seconds += time.perf_counter() - hook_started
            continue
        break

    progress.close()
    seconds = time.perf_counter() - started - hook_seconds
    tail = losses[-max(1, len(losses) // 10) :] if losses else [float("nan")]
    return {
        "train_loss": sum(tail) / len(tail),
        "train_seconds": seconds,
        "samples_per_second": samples / max(seconds, 1e-9),
        "steps": step,
    }


def _start(args: argparse.Namespace, accelerator: Accelerator, name: str, max_steps: int, step: int) -> tqdm:
    """The output folder, the trackers and the progress bar (on the main process)."""
    if accelerator.is_main_process:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers(name, config={key: str(value) for key, value in vars(args).items()})
    return tqdm(total=max_steps, initial=step, disable=not accelerator.is_local_main_process, desc=name)


def _after_step(
    args: argparse.Namespace, accelerator: Accelerator, run: Prepared, out: Any, step: int, progress: tqdm
) -> float:
    """Log the step, advance the bar, save a checkpoint when one is due; returns the step's loss."""
    record = step_record(accelerator, out, step, run.scheduler)
    log_record(accelerator, args.output_dir / "train_log.jsonl", record)
    progress.update(1)
    progress.set_postfix(loss=f"{record['loss']:.3f}")
    if args.checkpointing_steps and step % args.checkpointing_steps == 0:
        accelerator.save_state(str(args.output_dir / "checkpoints" / f"step_{step}"))
    return record["loss"]


def _resume(args: argparse.Namespace, accelerator: Accelerator, batches_per_epoch: int) -> tuple[int, int, int]:
    """(step, epoch, batches to skip in that epoch): zeros, or where the checkpoint asked for stopped."""
    checkpoint = find_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if checkpoint is None:
        return 0, 0, 0

    accelerator.load_state(str(checkpoint))
    step = checkpoint_step(checkpoint)
    epoch, skip_batches = divmod(step * args.gradient_accumulation_steps, batches_per_epoch)
    logger.info(f"resuming from {checkpoint} at step {step} (epoch {epoch}, batch {skip_batches})")
    return step, epoch, skip_batches


def _micro_step(args: argparse.Namespace, accelerator: Accelerator, run: Prepared, batch: dict) -> Any:
    """Forward and backward of one batch; the optimiser steps when the accumulation window closes."""
    with accelerator.accumulate(run.model):
        out = run.model(**batch)
        accelerator.backward(out.loss)
        if accelerator.sync_gradients and args.max_grad_norm:
            accelerator.clip_grad_norm_(run.model.parameters(), args.max_grad_norm)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad()
    return out


def iterate_keeping_rng(loader: Any) -> Iterator[dict]:
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


def step_record(accelerator: Accelerator, out: Any, step: int, scheduler: Any) -> dict[str, float]:
    """The step's loss (and its parts, where the output has them), averaged over processes, and the learning rate."""
    parts = {"loss": out.loss}
    for part in LOSS_PARTS:
        if getattr(out, part, None) is not None:
            parts[part] = getattr(out, part)
    values = accelerator.reduce(torch.stack([value.detach().float() for value in parts.values()]), reduction="mean")
    record = {part: float(value) for part, value in zip(parts, values.tolist(), strict=True)}
    return {"step": step, **record, "learning_rate": scheduler.get_last_lr()[0]}


def log_record(accelerator: Accelerator, log_path: Path, record: dict[str, float]) -> None:
    """One step's record to the trackers and, on the main process, as a line of `log_path`."""
    accelerator.log({key: value for key, value in record.items() if key != "step"}, step=record["step"])
    if accelerator.is_main_process:
        with log_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def save_model(accelerator: Accelerator, model: torch.nn.Module, processor: Any, output_dir: Path) -> None:
    """The model and its processor with save_pretrained, written by the main process.

    Every process takes part in gathering the weights (FSDP's shards are gathered here); one writes them.
    """
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(output_dir, state_dict=state_dict, save_function=accelerator.save)
        processor.save_pretrained(output_dir)
    accelerator.wait_for_everyone()


def end_run(accelerator: Accelerator, run: Prepared) -> torch.nn.Module:
    """End the trackers and the process group once every process is here; returns the unwrapped model.

    The distributed wrapper is freed first, while the process group is still registered. Its reducer holds the
    group, and when it held the last reference a gloo group was destroyed inside the reducer's destructor, which
    keeps the GIL while it waits for gloo's worker threads; a worker still releasing the tensor of a finished
    collective waits for the GIL, and the process never exits (pytorch/pytorch#56297). It happened in about one
    two-process CPU run in thirty here. The group's own binding releases the GIL when it is destroyed, which
    `end_training` then does.
    """
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(run.model)
    wrapper = weakref.ref(run.model) if run.model is not model else None
    run.model = model
    accelerator.free_memory()
    gc.collect()
    if wrapper is not None and wrapper() is not None:
        logger.warning(
            "the distributed model wrapper is still referenced when the process group ends; "
            "the process may hang at exit",
            main_process_only=False,
        )
    accelerator.end_training()
    return model
