"""What the vl_zoo metrics share: inputs checked before evaluate stores them, and label checks."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import Any

import evaluate


class VLMetric(evaluate.Metric):
    """An `evaluate.Metric` that checks every batch before evaluate stores it.

    evaluate writes each batch into an Arrow table and only then calls `_compute`, so input of the wrong kind would
    fail inside Arrow with a message about types. Here `add_batch` (which `compute` and `add` go through) first
    checks that every input is given, that all have one entry per example and that the batch is not empty, then
    runs the metric's own `_checked`; a mistake raises a ValueError that names the argument, what came and what is
    allowed.
    """

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Check a batch of examples, then store it as evaluate does."""
        batch = _aligned_inputs(self, {"predictions": predictions, "references": references, **kwargs})
        super().add_batch(**self._checked(**batch))

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Check one example, then store it (as a batch of one)."""
        example = {"predictions": prediction, "references": reference, **kwargs}
        self.add_batch(**{name: None if value is None else [value] for name, value in example.items()})

    def _checked(self, **batch: Any) -> dict[str, Any]:
        """The batch as it is to be stored, after the metric's own checks; columns are given and equally long."""
        return batch


def _aligned_inputs(metric: evaluate.Metric, given: Mapping[str, Any]) -> dict[str, Any]:
    """The metric's inputs out of `given`: all present, all of one length, not empty, nothing unexpected."""
    names = metric._feature_names()
    unexpected = sorted(name for name, value in given.items() if value is not None and name not in names)
    if unexpected:
        raise ValueError(f"{metric.name} takes the inputs {names}; got also {unexpected}")
    batch = {name: given.get(name) for name in names}
    missing = [name for name, value in batch.items() if value is None]
    if missing:
        raise ValueError(f"{metric.name} needs the inputs {names}, one entry per example; {missing} not given")

    lengths = {name: _length(name, value) for name, value in batch.items()}
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"len({name}) = {length}" for name, length in lengths.items())
        raise ValueError(f"{metric.name}: {names} must have one entry per example each; got {counts}")
    if 0 in lengths.values():
        raise ValueError(f"{metric.name} got no examples: {names} are empty; give at least one example")
    return batch


def _length(name: str, value: Any) -> int:
    """The number of entries of an input, which must be a sequence (list, array, datasets column), not a string."""
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a sequence with one entry per example, got the string {value!r}")
    try:
        return len(value)
    except TypeError:
        raise ValueError(
            f"{name} must be a sequence with one entry per example, got a {type(value).__name__}"
        ) from None


def check_strings(name: str, values: Iterable[Any]) -> None:
    """Every value is a string (answers are compared as text)."""
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"{name}[{index}] must be a string, got {type(value).__name__} {value!r}")


def check_labels(predictions: Iterable[Any], references: Iterable[Any]) -> None:
    """Labels are class ids (ints) or label names (strings), one kind for predictions and references alike.

    Both kinds are compared as given, so an id never equals a name: mixing them is a mistake, not a miss.
    """
    kinds = {}
    for name, values in (("predictions", predictions), ("references", references)):
        found = {_label_kind(name, index, value) for index, value in enumerate(values)}
        if len(found) > 1:
            raise ValueError(f"{name} mix class ids and label names; give all as ints or all as strings")
        kinds[name] = found.pop()
    if kinds["predictions"] != kinds["references"]:
        raise ValueError(
            f"predictions are {kinds['predictions']} but references are {kinds['references']}; "
            "give both as class ids (ints) or both as label names (strings)"
        )


def _label_kind(name: str, index: int, value: Any) -> str:
    """The kind of one label: label names for a string, class ids for an integer (Python, numpy, 0-d tensor)."""
    if isinstance(value, str):
        return "label names"
    try:
        operator.index(value)
    except TypeError:
        raise ValueError(
            f"{name}[{index}] must be a class id (int) or a label name (str), got {type(value).__name__} {value!r}"
        ) from None
    return "class ids"
