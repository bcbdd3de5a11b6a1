"""Shared machinery of the checkpoint converters: strict key mapping, safe loading, safe writing.

A converter maps every source key to a target key (with an optional tensor transform), or drops it with a
reason. Anything left over is an error naming the keys, as is a target key nobody filled or a shape that does
not fit. Nothing is silently initialised.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor], torch.Tensor]


class ConversionError(RuntimeError):
    """A checkpoint does not fit the target model; the message lists the keys concerned."""


@dataclass
class StateDictConversion:
    """Collects the decisions for one checkpoint and checks them against the target model's state dict."""

    source: dict[str, torch.Tensor]
    mapped: dict[str, torch.Tensor] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # target key -> source key
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> reason
    unknown: list[str] = field(default_factory=list)

    def map(self, source_key: str, target_key: str, transform: Transform | None = None) -> None:
        if target_key in self.mapped:
            raise ConversionError(f"{source_key} and {self.origin[target_key]} both map to {target_key}")
        tensor = self.source[source_key]
        self.mapped[target_key] = transform(tensor) if transform is not None else tensor
        self.origin[target_key] = source_key

    def drop(self, source_key: str, reason: str) -> None:
        self.dropped[source_key] = reason

    def alias(self, source_key: str, canonical_key: str) -> None:
        """Drop a key that the source stores as a second name of another tensor, after checking they agree."""
        if canonical_key not in self.source:
            raise ConversionError(f"{source_key} should repeat {canonical_key}, which the checkpoint lacks")
        alias, canonical = self.source[source_key], self.source[canonical_key]
        same_tensor = alias is canonical or (
            alias.shape == canonical.shape and alias.device.type != "meta" and alias.data_ptr() == canonical.data_ptr()
        )
        if not same_tensor and not torch.equal(alias, canonical):
            raise ConversionError(
                f"{source_key} should be the same tensor as {canonical_key} (tied or shared), but the values differ"
            )
        self.drop(source_key, f"same tensor as {canonical_key}")

    def check(self, model: PreTrainedModel, hint: str = "") -> dict[str, torch.Tensor]:
        """Every source key used or dropped, every target key filled with the right shape; returns the state dict."""
        problems = []
        if self.unknown:
            problems.append(f"source keys with no counterpart: {sorted(self.unknown)}")
        expected = _untied_state_dict(model)
        missing = sorted(set(expected) - set(self.mapped))
        if missing:
            problems.append(f"target keys the checkpoint does not fill: {missing}")
        extra = sorted(set(self.mapped) - set(expected))
        if extra:
            problems.append(f"mapped keys the target model does not have: {extra}")
        for key in sorted(set(expected) & set(self.mapped)):
            if tuple(expected[key].shape) != tuple(self.mapped[key].shape):
                problems.append(
                    f"{self.origin[key]} -> {key}: shape {tuple(self.mapped[key].shape)} does not fit "
                    f"{tuple(expected[key].shape)}"
                )
        if problems:
            raise ConversionError("the checkpoint does not fit the model:\n  " + "\n  ".join(problems) + hint)
        return self.mapped

    def report(self) -> dict:
        return {
            "mapped": dict(sorted(self.origin.items())),
            "dropped": dict(sorted(self.dropped.items())),
        }


def _untied_state_dict(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The model's state dict without the keys transformers re-ties on load (the MLM decoder)."""
    tied = set(getattr(model, "all_tied_weights_keys", None) or getattr(model, "_tied_weights_keys", None) or {})
    return {key: value for key, value in model.state_dict().items() if key not in tied}


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a `torch.save`d state dict safely (weights_only), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist or is not a file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path} does not hold a flat state dict of tensors (got {type(state).__name__})")
    return state


def prepare_output_dir(output: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to write into a non-empty folder unless `overwrite` is set."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise FileExistsError(f"output {str(output)!r} exists and is not empty; pass --overwrite to replace it")
    return output


@contextlib.contextmanager
def staged_output(output: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling folder to write into; moved into place at the end, removed if anything fails.

    A half-written conversion never looks complete, and a folder that appeared at `output` meanwhile is only
    replaced when `overwrite` is set.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        yield staging
        if output.exists():
            if not overwrite:
                raise FileExistsError(f"output {str(output)!r} appeared while converting; not replacing it")
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("wrote %s", output)


def save_atomically(model: PreTrainedModel, output: Path, report: dict, overwrite: bool) -> None:
    """Save the model and the conversion report into a temporary folder, then move it into place."""
    with staged_output(output, overwrite) as staging:
        model.save_pretrained(staging)
        (staging / "conversion_report.json").write_text(json.dumps(report, indent=2) + "\n")
