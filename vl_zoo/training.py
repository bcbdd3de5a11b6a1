"""Pieces the training scripts share: data folders, model building, the optimiser, output folders, checkpoints.

A data folder (what `builtin:synthetic` builds, and what users assemble from imported features) holds:

    features/             a feature table (vl_zoo/data/features.py), one row per image
    <task>/train          task rows saved with `datasets.Dataset.save_to_disk` (vl_zoo/data/tasks.py schemas)
    <task>/validation     optional held-out rows
    tokenizer/            optional: the tokenizer the captions were written for (else pass --tokenizer)
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from .data.features import FeatureStore
from .modeling.model import VLForPreTraining
from .models import ARCHITECTURES, config_from_preset

logger = logging.getLogger(__name__)

BUILTIN_SYNTHETIC = "builtin:synthetic"
CHECKPOINT_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class TaskData:
    """Everything a training script reads from a data folder."""

    folder: Path
    store: FeatureStore
    train: datasets.Dataset
    validation: datasets.Dataset | None
    tokenizer: PreTrainedTokenizerBase


def resolve_data_folder(spec: str, seed: int, cache_dir: Path, num_images: int) -> Path:
    """A data folder path, building the synthetic data (once, then cached) for `builtin:synthetic`."""
    if spec != BUILTIN_SYNTHETIC:
        folder = Path(spec)
        if spec.startswith("builtin:"):
            raise ValueError(f"data {spec!r} is not a built-in data set; allowed: {BUILTIN_SYNTHETIC!r} or a folder")
        if not folder.is_dir():
            raise ValueError(f"data folder {spec!r} does not exist; pass a folder or {BUILTIN_SYNTHETIC!r}")
        return folder

    from .data.synthetic import DATA_VERSION, build_synthetic

    folder = cache_dir / f"synthetic-v{DATA_VERSION}-{num_images}-seed{seed}"
    if not (folder / "features").is_dir():
        logger.info("building the synthetic data (%d images) in %s", num_images, folder)
        build_synthetic(folder, num_images=num_images, seed=seed)
    return folder


def load_task_data(folder: Path, task: str, tokenizer_path: str | None = None) -> TaskData:
    """Open a data folder for one task; a folder that lacks a needed part gets an error naming it."""
    missing = [part for part in ("features", f"{task}/train") if not (folder / part).is_dir()]
    if missing:
        raise ValueError(
            f"data folder {str(folder)!r} lacks {missing}; a data folder holds features/ (a feature table) and "
            f"{task}/train (task rows saved with datasets), optionally {task}/validation and tokenizer/"
        )
    tokenizer_path = tokenizer_path or (folder / "tokenizer" if (folder / "tokenizer").is_dir() else None)
    if tokenizer_path is None:
        raise ValueError(f"data folder {str(folder)!r} has no tokenizer/; pass --tokenizer (a folder or Hub id)")

    validation = folder / task / "validation"
    return TaskData(
        folder=folder,
        store=FeatureStore(folder / "features"),
        train=datasets.load_from_disk(str(folder / task / "train")),
        validation=datasets.load_from_disk(str(validation)) if validation.is_dir() else None,
        tokenizer=AutoTokenizer.from_pretrained(str(tokenizer_path)),
    )


def build_pretraining_model(
    model: str, preset: str, vocab_size: int, feature_size: int, overrides: dict[str, Any]
) -> VLForPreTraining:
    """A model from a vl_zoo model_type and preset (fresh weights) or from a saved folder (its weights)."""
    if model in ARCHITECTURES:
        check_config_overrides(model, preset, overrides)
        config = config_from_preset(model, preset, vocab_size=vocab_size, v_feature_size=feature_size, **overrides)
        return ARCHITECTURES[model][2](config)
    folder = Path(model)
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"--model {model!r} is neither a vl_zoo model_type ({sorted(ARCHITECTURES)}) nor a folder with a "
            "config.json"
        )
    config = AutoConfig.from_pretrained(folder)
    if config.model_type not in ARCHITECTURES:
        raise ValueError(f"{model!r} holds a {config.model_type!r} model, not a vl_zoo architecture")
    loaded = ARCHITECTURES[config.model_type][2].from_pretrained(folder)
    if loaded.config.vocab_size != vocab_size or loaded.config.v_feature_size != feature_size:
        raise ValueError(
            f"{model!r} has vocab_size {loaded.config.vocab_size} and v_feature_size {loaded.config.v_feature_size}, "
            f"but the data has a {vocab_size}-word tokenizer and {feature_size}-d features"
        )
    return loaded


def check_config_overrides(model_type: str, preset: str, overrides: dict[str, Any]) -> None:
    """ValueError for an override that is not a field of the model_type's config (a typo would be kept silently)."""
    known = config_from_preset(model_type, preset).to_dict()
    unknown = sorted(name for name in overrides if name not in known)
    if unknown:
        raise ValueError(
            f"config overrides {unknown} are not fields of a {model_type} config; fields: {sorted(known)}"
        )


def build_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, eps: float, betas: tuple[float, float]
) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not on biases, LayerNorms or embeddings' norms)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = torch.cuda.is_available()
    return torch.optim.AdamW(groups, lr=lr, eps=eps, betas=betas, fused=fused or None)


def fill_unset(args: argparse.Namespace, defaults: dict[str, Any]) -> None:
    """Options the command line left unset (None) take `defaults`; given ones are kept."""
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def check_output_dir(output_dir: Path, overwrite: bool, resuming: bool) -> None:
    """Never write over a non-empty folder unless told to (resuming continues in the same folder)."""
    if not output_dir.exists() or resuming or not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise ValueError(
            f"--output-dir {str(output_dir)!r} is not empty; pass --overwrite-output-dir to replace it or "
            "--resume-from-checkpoint latest to continue the run in it"
        )
    shutil.rmtree(output_dir)


def find_checkpoint(output_dir: Path, spec: str | None) -> Path | None:
    """The checkpoint to resume from: None, "latest" (the highest step in output_dir/checkpoints) or a path."""
    if spec is None:
        return None
    if spec != "latest":
        path = Path(spec)
        if not path.is_dir():
            raise ValueError(f"--resume-from-checkpoint {spec!r} is not a checkpoint folder")
        return path
    steps = [
        (int(match.group(1)), path)
        for path in (output_dir / "checkpoints").glob("step_*")
        if (match := CHECKPOINT_DIR.match(path.name)) and path.is_dir()
    ]
    if not steps:
        raise ValueError(f"--resume-from-checkpoint latest: {str(output_dir / 'checkpoints')!r} holds no checkpoint")
    return max(steps)[1]


def checkpoint_step(path: Path) -> int:
    match = CHECKPOINT_DIR.match(path.name)
    if not match:
        raise ValueError(f"checkpoint folder {str(path)!r} is not named step_<number>")
    return int(match.group(1))


class IndexedRows(torch.utils.data.Dataset):
    """Task rows that carry their index (`_index`), so collators can key their random draws by batch content."""

    def __init__(self, rows: datasets.Dataset) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.rows[index], "_index": int(index)}
