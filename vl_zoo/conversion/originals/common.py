"""What every converter of an original authors' checkpoint shares: the result type, containers, configs, sizes.

A converter module (`vl_zoo.conversion.originals.<name>`) exposes one function,
`convert(state_dict, original_config) -> OriginalConversion`. It receives a flat state dict whose container
has already been unwrapped by `read_checkpoint` (bundles, `module.` prefixes), and the original's own config
as a dict (or None). It returns the vl_zoo config, the state dict under vl_zoo key names (float32), a report,
the region processor that feeds the model as the original's data loader fed it, and the tokenizer it expects.

Sizes: what the checkpoint shows (layer counts from key names, widths from shapes) is read from it; a config
file only adds what the tensors cannot show (activation, eps, ...). A config value that contradicts the
tensors is an error, so a wrong config file is caught instead of producing a model that silently differs.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...configuration import VLConfig
from ...models import ARCHITECTURES
from ...processing import RegionFeatureProcessor
from ..common import ConversionError, StateDictConversion

logger = logging.getLogger(__name__)

# Bundle entries that hold the model's weights, tried in this order.
MODEL_ENTRIES = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")
# Bundle entries that are training state, dropped with this reason.
TRAINING_STATE = {
    "optimizer": "optimizer state",
    "optimizer_state_dict": "optimizer state",
    "optim": "optimizer state",
    "amp": "mixed-precision loss-scaler state",
    "scheduler": "learning-rate scheduler state",
    "lr_scheduler": "learning-rate scheduler state",
    "warmup_scheduler_state_dict": "learning-rate scheduler state",
    "epoch": "training progress",
    "epoch_id": "training progress",
    "global_step": "training progress",
    "step": "training progress",
    "validation_monitor": "validation bookkeeping",
    "task_stop_controller": "training bookkeeping",
    "args": "training arguments",
    "opts": "training arguments",
}
DATA_PARALLEL_PREFIXES = ("module.",)
# What a converted state dict is for -> index of the model class in `ARCHITECTURES[model_type]`.
TASK_CLASSES = {"backbone": 1, "pretraining": 2, "vqa": 3}


# ---------------------------------------------------------------------------------------------- results


@dataclass
class ConversionReport:
    """What happened to every source key and to the container around it; written as conversion_report.json."""

    mapped: dict[str, str] = field(default_factory=dict)  # vl_zoo key -> source key
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> reason
    dtype_cast: dict[str, int] = field(default_factory=dict)  # "torch.float16 -> torch.float32" -> tensors
    container: list[str] = field(default_factory=list)  # how the file was unwrapped
    notes: list[str] = field(default_factory=list)  # decisions a user should know about (head rows swapped, ...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_mapped": len(self.mapped),
            "num_dropped": len(self.dropped),
            "dtype_cast": dict(self.dtype_cast),
            "container": list(self.container),
            "notes": list(self.notes),
            "dropped": dict(sorted(self.dropped.items())),
            "mapped": dict(sorted(self.mapped.items())),
        }


@dataclass
class OriginalConversion:
    """An original checkpoint expressed as a vl_zoo model, with what it needs to be fed as the original was.

    Attributes:
        config: the vl_zoo config (its `model_type` names the architecture).
        state_dict: float32 tensors under the key names of the vl_zoo class that `task` names.
        report: mapped and dropped keys with reasons, dtype casts, container handling.
        processor: the region processor set up like the original's data loader (global region and where,
            how many regions; boxes always enter as the canonical 5-d vector, from which the model's embedding
            takes what the original used).
        tokenizer: the tokenizer the original was trained with (a Hub name such as "bert-base-uncased").
        task: which vl_zoo class the state dict is for: "pretraining" (`VLForPreTraining`, keys `vl.*` and the
            pretraining heads), "vqa" (`VLForVisualQuestionAnswering`, `vl.*` and `classifier.*`: a fine-tuned
            checkpoint whose answer head vl_zoo has) or "backbone" (`VLModel`, keys without `vl.`: a fine-tuned
            checkpoint whose task head vl_zoo lacks; the report says why the head was dropped).
    """

    config: VLConfig
    state_dict: dict[str, torch.Tensor]
    report: ConversionReport
    processor: RegionFeatureProcessor
    tokenizer: str
    task: str = "pretraining"

    @property
    def model_class(self) -> type:
        return model_class_for(self.config, self.task)

    def build_model(self) -> torch.nn.Module:
        """The vl_zoo model of this conversion with its weights loaded (strictly, the tied decoder aside)."""
        model = self.model_class(self.config)
        missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        tied = set(getattr(model, "all_tied_weights_keys", None) or {})
        missing = sorted(set(missing) - tied)
        if missing or unexpected:
            raise ConversionError(
                f"the converted state dict does not load: missing {missing}, unexpected {unexpected}"
            )
        return model.eval()


def finish_conversion(
    conversion: StateDictConversion,
    config: VLConfig,
    processor: RegionFeatureProcessor,
    tokenizer: str,
    notes: Iterable[str] = (),
    task: str = "pretraining",
    hint: str = "",
) -> OriginalConversion:
    """Check the mapping against the vl_zoo model (every key used or dropped, every target filled, shapes fit),
    cast floating tensors to float32 and assemble the result.

    Converters name backbone keys `vl.*` whatever the task; for task "backbone" the prefix is removed here, since
    `VLModel` is the base model itself.
    """
    if task == "backbone":
        conversion.mapped = {key.removeprefix("vl."): value for key, value in conversion.mapped.items()}
        conversion.origin = {key.removeprefix("vl."): value for key, value in conversion.origin.items()}
    with torch.device("meta"):
        target = model_class_for(config, task)(config)
    state = conversion.check(target, hint)

    state, casts = cast_to_float32(state)
    report = ConversionReport(
        mapped=dict(conversion.origin), dropped=dict(conversion.dropped), dtype_cast=casts, notes=list(notes)
    )
    return OriginalConversion(config, state, report, processor, tokenizer, task)


def model_class_for(config: VLConfig, task: str) -> type:
    """The vl_zoo class of `config.model_type` for a task ("backbone", "pretraining" or "vqa")."""
    if task not in TASK_CLASSES:
        raise ValueError(f"task={task!r} is not supported; allowed: {sorted(TASK_CLASSES)}")
    return ARCHITECTURES[config.model_type][TASK_CLASSES[task]]


def cast_to_float32(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Floating tensors to float32 (checkpoints trained with apex O2 store float16); counts the casts by dtype."""
    casts: dict[str, int] = {}
    out = {}
    for key, tensor in state.items():
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            name = f"{tensor.dtype} -> torch.float32"
            casts[name] = casts.get(name, 0) + 1
            tensor = tensor.to(torch.float32)
        out[key] = tensor
    for name, count in casts.items():
        logger.info("cast %d tensors %s", count, name)
    return out, casts


# ---------------------------------------------------------------------------------------------- containers


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Load a checkpoint file safely (weights_only) and unwrap it into a flat state dict.

    Returns the state dict and notes on what was unwrapped (for the report).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {str(path)!r} does not exist or is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch reports unpicklable objects with several exception types
        raise ConversionError(
            f"{path} could not be read with torch.load(weights_only=True): {error}. Only checkpoints made of "
            "tensors and plain containers are read; re-save the model's state_dict() alone if the file holds "
            "other Python objects"
        ) from error
    return unwrap_checkpoint(obj, str(path))


def unwrap_checkpoint(obj: Any, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], list[str]]:
    """A flat state dict from what an original's trainer saved: a flat dict, a bundle such as
    `{'state_dict', 'optimizer'}` or `{'model': ...}`, with or without data-parallel `module.` prefixes."""
    notes: list[str] = []
    where = source
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        entry = _model_entry(obj, where)
        others = {key: TRAINING_STATE.get(key, "not model weights") for key in obj if key != entry}
        notes.append(f"weights taken from {where}[{entry!r}]; other entries dropped: {others or 'none'}")
        obj, where = obj[entry], f"{where}[{entry!r}]"
    if not isinstance(obj, Mapping) or not obj:
        raise ConversionError(f"{where} is not a state dict of tensors (got {type(obj).__name__})")

    state = dict(obj)
    for prefix in DATA_PARALLEL_PREFIXES:
        while state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
            notes.append(f"data-parallel prefix {prefix!r} removed from every key")
    return state, notes


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(value, torch.Tensor) for value in obj.values())


def _model_entry(bundle: Mapping, where: str) -> str:
    for name in MODEL_ENTRIES:
        if isinstance(bundle.get(name), Mapping):
            return name
    candidates = [key for key, value in bundle.items() if isinstance(value, Mapping) and key not in TRAINING_STATE]
    if len(candidates) == 1:
        return candidates[0]
    raise ConversionError(
        f"{where} is a dict but neither a state dict nor a bundle with one model entry; its entries are "
        f"{sorted(map(str, bundle))} (looked for {list(MODEL_ENTRIES)})"
    )


# ---------------------------------------------------------------------------------------------- configs


def read_original_config(path: str | os.PathLike) -> dict[str, Any]:
    """An original's config file as a dict: JSON (BERT, ViLBERT, UNITER; `//` comment lines allowed, as
    VisualBERT's files have them) or YAML (VL-BERT)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {str(path)!r} does not exist or is not a file")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # pyyaml is a dependency of transformers

        values = yaml.safe_load(text)
    elif path.suffix.lower() == ".json":
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        values = json.loads(text)
    else:
        raise ValueError(f"--config {str(path)!r}: allowed are .json and .yaml/.yml files, got {path.suffix!r}")
    if not isinstance(values, dict):
        raise ValueError(f"--config {str(path)!r} does not hold a mapping at its top level")
    return values


def reconcile_sizes(
    shown: Mapping[str, Any], config: Mapping[str, Any] | None, source: str = "the config"
) -> dict[str, Any]:
    """Merge sizes read from the checkpoint (`shown`) with the same fields of a config; disagreement is an error.

    Fields absent from `config` take the checkpoint's value; the config's other fields are not looked at here.
    """
    if not config:
        return dict(shown)
    clashes = [
        f"{name}: the checkpoint shows {value!r}, {source} says {config[name]!r}"
        for name, value in shown.items()
        if name in config and config[name] != value
    ]
    if clashes:
        raise ValueError("--config contradicts the checkpoint:\n  " + "\n  ".join(clashes))
    return dict(shown)


def count_layers(keys: Iterable[str], pattern: str) -> int:
    """Number of layers whose keys match `pattern` (a regex whose first group is the layer index).

    The indices must run 0..N-1; a gap means a layer's keys are missing and is an error naming the indices.
    """
    compiled = re.compile(pattern)
    indices = {int(match.group(1)) for key in keys if (match := compiled.match(key))}
    if indices and indices != set(range(max(indices) + 1)):
        gaps = sorted(set(range(max(indices) + 1)) - indices)
        raise ConversionError(f"layers matching {pattern!r} have indices {sorted(indices)}: layers {gaps} are missing")
    return len(indices)


def shape_of(state: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    """The shape of `state[key]`, or a ConversionError saying the checkpoint lacks a key it needs."""
    if key not in state:
        raise ConversionError(f"the checkpoint has no {key!r}, which this layout always has; is it the right --model?")
    return tuple(state[key].shape)


def require_keys(state: Mapping[str, torch.Tensor], expected: Iterable[str], model: str) -> None:
    """Refuse a checkpoint that lacks keys its layout has, naming them under the checkpoint's own names."""
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ConversionError(
            f"the checkpoint lacks keys that a --model {model} checkpoint of its sizes has: {missing}"
        )


def head_count(original: Mapping[str, Any], name: str, assumed: int, width: int, source: str) -> int:
    """The head count `name`: the config's, or `source`'s default when the config is silent.

    Weights never show how a width is split into heads. The default is only taken when it divides the width
    the weights show; otherwise guessing would build a model that cannot run, so the user is asked for the config.
    """
    if name in original:
        return int(original[name])
    if width % assumed:
        raise ConversionError(
            f"the weights do not show {name}, and {source}'s {assumed} does not divide the width {width} they "
            f"show; pass the original config with --config (its {name} decides)"
        )
    logger.info("the weights do not show %s; using %d (%s); --config sets it", name, assumed, source)
    return assumed
