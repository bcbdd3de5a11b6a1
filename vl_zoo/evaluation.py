"""Held-out evaluation of a pretrained model: matching accuracy and masked-word accuracy with and without the image.

`eval_mlm_accuracy` masks one word per caption and asks the model for it. On data folders whose tokenizer knows
the synthetic data's colour and shape words, that word is a colour or shape word: these can only be recovered
from the image, so `eval_mlm_gain_over_text_only` (the accuracy minus the same model's with every region
feature and box zeroed) measures how much the model reads the image. On other data any word may be masked.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger

from .data.collators import PretrainingCollator
from .data.synthetic import COLOURS, SHAPES
from .processing import RegionFeatureProcessor
from .training import TaskData

logger = get_logger(__name__)
EVAL_BATCH = 64


@torch.no_grad()
def evaluate_pretraining(
    accelerator: Accelerator,
    model: torch.nn.Module,
    data: TaskData,
    regions: RegionFeatureProcessor,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """eval_itm_accuracy, eval_mlm_accuracy and eval_mlm_gain_over_text_only on the validation rows."""
    if data.validation is None or len(data.validation) == 0:
        logger.warning("the evaluation data has no pretraining/validation rows; no evaluation metrics")
        return {}
    rows = data.validation.shard(accelerator.num_processes, accelerator.process_index, contiguous=True)
    model.eval()
    counts = np.zeros(4)  # itm correct, itm total, mlm correct (with image), mlm correct (text only); mlm total
    mlm_total = 0

    matching = PretrainingCollator(data.tokenizer, regions, data.store, max_length=args.max_length, seed=args.seed + 1)
    target_ids = _target_word_ids(data.tokenizer)
    for start in range(0, len(rows), EVAL_BATCH):
        chunk = rows.select(range(start, min(start + EVAL_BATCH, len(rows))))
        examples = [chunk[i] for i in range(len(chunk))]

        batch = _to_device(matching(examples), accelerator.device)
        out = model(**{k: v for k, v in batch.items() if k not in ("labels", "region_targets", "region_mask")})
        counts[0] += (out.itm_logits.argmax(-1) == batch["itm_labels"]).sum().item()
        counts[1] += len(examples)

        masked = _to_device(_masked_word_batch(examples, data, regions, target_ids, args, start), accelerator.device)
        labels = masked.pop("labels")
        chosen = labels != -100
        mlm_total += int(chosen.sum())
        counts[2] += (model(**masked).mlm_logits.argmax(-1)[chosen] == labels[chosen]).sum().item()
        blind = dict(masked, visual_feats=torch.zeros_like(masked["visual_feats"]))
        blind["visual_pos"] = torch.zeros_like(masked["visual_pos"])
        counts[3] += (model(**blind).mlm_logits.argmax(-1)[chosen] == labels[chosen]).sum().item()

    totals = accelerator.reduce(torch.tensor([*counts, mlm_total], dtype=torch.float64, device=accelerator.device))
    itm_correct, itm_total, mlm_correct, blind_correct, mlm_count = totals.tolist()
    model.train()
    accuracy, blind_accuracy = mlm_correct / max(mlm_count, 1), blind_correct / max(mlm_count, 1)
    return {
        "eval_itm_accuracy": itm_correct / max(itm_total, 1),
        "eval_mlm_accuracy": accuracy,
        "eval_mlm_text_only_accuracy": blind_accuracy,
        "eval_mlm_gain_over_text_only": accuracy - blind_accuracy,
        "eval_examples": int(itm_total),
        "eval_masked_words": int(mlm_count),
    }


def _target_word_ids(tokenizer: Any) -> set[int] | None:
    """The ids of the synthetic colour and shape words, when this tokenizer has all of them as single tokens."""
    vocab = tokenizer.get_vocab()
    words = [*COLOURS, *SHAPES]
    if all(word in vocab for word in words):
        return {vocab[word] for word in words}
    return None


def _masked_word_batch(
    examples: list[dict],
    data: TaskData,
    regions: RegionFeatureProcessor,
    target_ids: set[int] | None,
    args,
    offset: int,
) -> dict[str, torch.Tensor]:
    """One masked word per caption (a colour or shape word where there is one), picked reproducibly."""
    tokenizer = data.tokenizer
    encoded = tokenizer(
        [example["caption"] for example in examples],
        padding="longest",
        truncation=True,
        max_length=args.max_length,
        return_tensors="pt",
    )
    input_ids = encoded["input_ids"]
    labels = torch.full_like(input_ids, -100)
    special = set(tokenizer.all_special_ids)
    rng = np.random.default_rng([args.seed, offset])
    for row, ids in enumerate(input_ids.tolist()):
        candidates = [i for i, token in enumerate(ids) if token not in special]
        if target_ids is not None:
            candidates = [i for i in candidates if ids[i] in target_ids]
        if not candidates:
            continue
        position = candidates[rng.integers(len(candidates))]
        labels[row, position] = ids[position]
        input_ids[row, position] = tokenizer.mask_token_id

    images = [data.store[example["image_id"]] for example in examples]
    visual = regions(
        [image["features"] for image in images],
        [image["boxes"] for image in images],
        [(image["image_height"], image["image_width"]) for image in images],
    )
    return {**encoded, "input_ids": input_ids, **visual, "labels": labels}


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
