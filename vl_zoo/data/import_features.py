"""Import pre-extracted region features from the formats they ship in into a feature table.

    python -m vl_zoo.data.import_features --format volta-lmdb --input coco_trainval.lmdb --output features/coco
    python -m vl_zoo.data.import_features --format lxmert-tsv --input train2014_obj36.tsv --output features/coco \\
        --with-cls-prob --skip-bad

Accepted layouts (field names in parentheses are accepted aliases):

volta-lmdb
    The unified framework's LMDB (a folder holding `data.mdb`, or the `.mdb` file itself). Key `b"keys"` holds
    a pickled list of the image ids (bytes or str); each id is a key whose value is a pickled dict with
    `image_h` (`img_h`, `image_height`), `image_w` (`img_w`, `image_width`), `features`, `boxes`, optionally
    `num_boxes`, `image_id`, `cls_prob`, `objects_id`, `objects_conf`, `attrs_id`, `attrs_conf`. An array field
    is either base64 text (str or bytes) of the raw values, as in the bottom-up TSV (features, boxes, confidences
    and cls_prob float32; ids int64), or a numpy array of any numeric dtype. Without `b"keys"` every other key
    is read, in key order. The id is the LMDB key. Values are unpickled by an unpickler that accepts only numpy
    arrays, dtypes and scalars and plain builtin containers, never arbitrary classes.
lxmert-tsv
    Tab-separated rows without a header, in one of two field orders told apart by the field count:
    LXMERT's `img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features`
    with an optional 11th field `cls_prob`, or the original bottom-up-attention release's
    `image_id, image_w, image_h, num_boxes, boxes, features`. Arrays are base64 of the raw values: boxes
    float32 (n, 4), features float32 (n, F), ids int64, confidences float32, cls_prob float32 (n, 1601).
npz-dir
    A folder (not recursed) of per-image files named after the image id:
    - `<image_id>.npz` with `features` (`x`) (n, F), `boxes` (`bbox`) (n, 4), `image_w`/`image_h` (or
      `image_width`/`image_height`) as scalars, optionally `num_boxes` (`num_bbox`), `cls_prob`, `objects_id`,
      `objects_conf`, `attrs_id`, `attrs_conf`; other keys are ignored (an object array such as
      bottom-up-attention.pytorch's `info` is never unpickled);
    - or `<image_id>.npy` holding only the (n, F) features, with the boxes in `<image_id>_boxes.npy` (n, 4).
    Image sizes missing from a file come from `--sizes`, a JSON object `{"<image_id>": [width, height]}`. A file
    whose name ends in `_boxes.npy` is always read as boxes, so an image id may not end in `_boxes`.
hdf5
    One file whose top-level groups are named after the image ids; each group holds the datasets `features`
    (n, F) and `boxes` (n, 4), optionally `cls_prob`, `objects_id`, `objects_conf`, `attrs_id`, `attrs_conf`,
    and the image size as group attributes or scalar datasets `image_w`/`image_h` (or
    `image_width`/`image_height`), else from `--sizes` as for npz-dir. Top-level datasets are ignored.

Detector outputs other than `cls_prob` (object and attribute ids and confidences) are kept when the first
readable record has them; `cls_prob` (1601 values per region, as large as float16 features) only with
`--with-cls-prob`. A bad record (wrong byte count, missing field, shapes that disagree, a repeated id) stops the
import with the image id and the problem; with `--skip-bad` it is logged, counted and left out. Either way
nothing is written unless the import completes, and `import_report.json` in the output folder records the
counts and each skipped image with its problem.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import csv
import importlib
import io
import itertools
import json
import logging
import pickle
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import lmdb
import numpy as np
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vl_zoo.data.features import (
    FEATURE_DTYPES,
    NUM_DETECTOR_CLASSES,
    OPTIONAL_COLUMNS,
    check_output_dir,
    validate_record,
    write_feature_table,
)

logger = logging.getLogger(__name__)

__all__ = ["FORMATS", "REPORT_NAME", "BadRecordError", "ImportReport", "import_features", "main", "restricted_loads"]

FORMATS = ("volta-lmdb", "lxmert-tsv", "npz-dir", "hdf5")
REPORT_NAME = "import_report.json"
LXMERT_TSV_FIELDS = (
    "img_id",
    "img_h",
    "img_w",
    "objects_id",
    "objects_conf",
    "attrs_id",
    "attrs_conf",
    "num_boxes",
    "boxes",
    "features",
)
BOTTOM_UP_TSV_FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")

# accepted names of each field, first match wins
_ALIASES = {
    "features": ("features", "x"),
    "boxes": ("boxes", "bbox"),
    "num_boxes": ("num_boxes", "num_bbox"),
    "image_width": ("image_w", "img_w", "image_width"),
    "image_height": ("image_h", "img_h", "image_height"),
}
# dtype of each field when it comes as base64 text (the bottom-up TSV's encoding)
_BASE64_DTYPES = {
    "features": "float32",
    "boxes": "float32",
    "cls_prob": "float32",
    "objects_id": "int64",
    "attrs_id": "int64",
    "objects_conf": "float32",
    "attrs_conf": "float32",
}
# what unpickling malformed bytes raises (the restricted unpickler's refusal is an UnpicklingError)
_UNPICKLING_ERRORS = (
    pickle.UnpicklingError,
    ValueError,
    EOFError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
)
_MAX_LOGGED_BAD = 20  # bad records logged one by one; the rest are only counted (all are in the report)

Entry = tuple[str, Callable[[], dict[str, Any]]]  # an image id and a function that loads its record


class BadRecordError(ValueError):
    """One image's record cannot be imported; the message names the image id and the problem."""

    def __init__(self, image_id: str, problem: str) -> None:
        super().__init__(f"image {image_id!r}: {problem}")
        self.image_id = image_id
        self.problem = problem


@dataclass
class ImportReport:
    """What an import read, wrote and skipped; saved as `import_report.json` beside the table."""

    format: str
    input: str
    output: str
    dtype: str
    feature_size: int | None = None
    optional: list[str] = field(default_factory=list)
    num_images: int = 0
    num_bad: int = 0
    bad: list[dict[str, str]] = field(default_factory=list)  # {"image_id", "problem"} per skipped record
    seconds: float = 0.0

    def add_bad(self, image_id: str, problem: str) -> None:
        self.num_bad += 1
        self.bad.append({"image_id": image_id, "problem": problem})


@dataclass
class _Source:
    """A format reader's output: the entries, streamed, their count when the format knows it up front, and
    what releases the open file or environment (called whether the import completes or fails)."""

    entries: Iterator[Entry]
    total: int | None
    release: Callable[[], None] | None = None

    def close(self) -> None:
        self.entries.close()  # first the stream, which may hold a transaction, then the file under it
        if self.release is not None:
            self.release()


@dataclass(frozen=True)
class _Layout:
    """The table layout, fixed by the first readable record."""

    feature_size: int
    optional: tuple[str, ...]


def import_features(
    format: str,
    input: str | Path,
    output: str | Path,
    *,
    dtype: str = "float16",
    skip_bad: bool = False,
    overwrite: bool = False,
    with_cls_prob: bool = False,
    sizes: str | Path | None = None,
    writer_batch_size: int = 256,
) -> ImportReport:
    """Read region features in `format` from `input` and write them as a feature table to `output`.

    Args:
        format: One of `FORMATS`; the module docstring gives each layout.
        input: The LMDB, TSV file, folder of `.npz`/`.npy` files or HDF5 file.
        output: The table folder to create (atomically: nothing appears unless the import completes).
        dtype: Storage type of the features, "float16" or "float32".
        skip_bad: Log, count and leave out bad records instead of stopping at the first.
        overwrite: Replace a non-empty `output`.
        with_cls_prob: Keep the detector's class distribution (needed for masked-region KL targets).
        sizes: For npz-dir and hdf5, a JSON file `{"<image_id>": [width, height]}` for images whose files do
            not carry their size.
        writer_batch_size: Rows per Arrow record batch.

    Returns:
        The report, also written to `output/import_report.json`.

    Raises:
        ValueError: a bad argument, or a bad record without `skip_bad`, or no readable record at all.
        FileNotFoundError: `input` does not exist.
        FileExistsError: `output` is not empty and `overwrite` is not set.
    """
    input, sizes_by_id = _check_arguments(format, input, dtype, sizes)
    check_output_dir(output, overwrite)
    report = ImportReport(format=format, input=str(input), output=str(output), dtype=dtype)
    start = time.perf_counter()

    # load, fix the layout from the first readable record, then check every record against it
    source = _READERS[format](input, sizes_by_id, with_cls_prob)
    try:
        loaded = _loaded_records(source, report, skip_bad, format)
        first = next(loaded, None)
        if first is None:
            raise ValueError(f"input {str(input)!r} has no readable {format} record ({_bad_summary(report)})")
        layout = _layout_of(first, with_cls_prob)
        records = _conforming_records(itertools.chain([first], loaded), layout, dtype, report, skip_bad)
        path = write_feature_table(
            records,
            output,
            feature_size=layout.feature_size,
            dtype=dtype,
            optional=layout.optional,
            overwrite=overwrite,
            writer_batch_size=writer_batch_size,
        )
    finally:
        source.close()

    # the report beside the table
    report.feature_size, report.optional = layout.feature_size, list(layout.optional)
    report.seconds = round(time.perf_counter() - start, 3)
    (path / REPORT_NAME).write_text(json.dumps(asdict(report), indent=2) + "\n")
    logger.info("imported %d images into %s; %d bad records skipped", report.num_images, path, report.num_bad)
    return report


def _check_arguments(
    format: str, input: str | Path, dtype: str, sizes: str | Path | None
) -> tuple[Path, dict[str, tuple[int, int]] | None]:
    """Validate the arguments the import needs before reading anything; returns the input and the sizes."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"dtype must be one of {FEATURE_DTYPES}, got {dtype!r}")
    input = Path(input)
    if not input.exists():
        raise FileNotFoundError(f"input {str(input)!r} does not exist")
    if sizes is not None and format not in ("npz-dir", "hdf5"):
        raise ValueError(f"sizes applies to npz-dir and hdf5 only; {format} records carry their image size")
    return input, (_load_sizes(Path(sizes)) if sizes is not None else None)


def _load_sizes(path: Path) -> dict[str, tuple[int, int]]:
    """The `--sizes` JSON: `{"<image_id>": [width, height]}`."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"sizes {str(path)!r} is not a readable JSON file ({error})") from error
    if not isinstance(entries, dict):
        raise ValueError(f"sizes {str(path)!r} must hold a JSON object of image id -> [width, height]")
    sizes = {}
    for image_id, size in entries.items():
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(side, int) for side in size)):
            raise ValueError(f"sizes {str(path)!r}: image {image_id!r} has {size!r}; expected [width, height]")
        sizes[image_id] = (size[0], size[1])
    return sizes


def _loaded_records(source: _Source, report: ImportReport, skip_bad: bool, format: str) -> Iterator[dict[str, Any]]:
    """Load each entry with a progress bar; a failed load or a repeated id is rejected (see `_reject`)."""
    seen: set[str] = set()
    for image_id, load in tqdm(source.entries, total=source.total, unit="img", desc=f"importing {format}"):
        try:
            if image_id in seen:
                raise BadRecordError(image_id, "appears more than once in the input; image ids must be unique")
            record = load()
        except ValueError as error:
            _reject(report, skip_bad, image_id, error)
            continue
        seen.add(image_id)
        yield record


def _layout_of(record: dict[str, Any], with_cls_prob: bool) -> _Layout:
    """Feature width and optional columns of the table, taken from the first readable record."""
    optional = tuple(name for name in OPTIONAL_COLUMNS if (with_cls_prob if name == "cls_prob" else name in record))
    layout = _Layout(feature_size=int(np.shape(record["features"])[1]), optional=optional)
    logger.info(
        "table layout from image %r: %d-d features, optional columns %s",
        record["image_id"],
        layout.feature_size,
        list(layout.optional),
    )
    return layout


def _conforming_records(
    records: Iterator[dict[str, Any]], layout: _Layout, dtype: str, report: ImportReport, skip_bad: bool
) -> Iterator[dict[str, Any]]:
    """Check each record against the layout (see `validate_record`); a misfit is rejected (see `_reject`)."""
    for record in records:
        image_id = record["image_id"]
        try:
            missing = [name for name in layout.optional if name not in record]
            if missing:
                raise BadRecordError(
                    image_id, f"lacks {missing}, which the first record had or --with-cls-prob asks for"
                )
            checked = validate_record(record, feature_size=layout.feature_size, dtype=dtype, optional=layout.optional)
        except ValueError as error:
            _reject(report, skip_bad, image_id, error)
            continue
        report.num_images += 1
        yield checked


def _reject(report: ImportReport, skip_bad: bool, image_id: str, error: ValueError) -> None:
    """Stop on a bad record, or with `skip_bad` log it (the first few one by one) and count it."""
    if not skip_bad:
        raise error  # its message names the image id: BadRecordError's and validate_record's both do
    problem = error.problem if isinstance(error, BadRecordError) else str(error)
    report.add_bad(image_id, problem)
    if report.num_bad <= _MAX_LOGGED_BAD:
        logger.warning("skipping image %r: %s", image_id, problem)
    if report.num_bad == _MAX_LOGGED_BAD:
        logger.warning("further bad records are counted, not logged; %s lists them all", REPORT_NAME)


def _bad_summary(report: ImportReport) -> str:
    """A short account of the bad records, for an error that has nothing else to show."""
    if not report.bad:
        return "it holds no records"
    shown = "; ".join(f"{entry['image_id']!r}: {entry['problem']}" for entry in report.bad[:3])
    return f"all {report.num_bad} records were bad, e.g. {shown}"


# ---------------------------------------------------------------------------------------------------------------
# decoding shared by the formats


def _field(fields: Mapping[str, Any], name: str, image_id: str, required: bool = True) -> Any:
    """The value of `name` under any of its accepted names (None when absent and not required)."""
    for alias in _ALIASES.get(name, (name,)):
        if alias in fields:
            return fields[alias]
    if required:
        raise BadRecordError(
            image_id, f"missing field {' / '.join(_ALIASES.get(name, (name,)))} (has {sorted(fields)})"
        )
    return None


def _values(value: Any, name: str, image_id: str) -> np.ndarray:
    """A field's values: base64 text decoded with the format's dtype for `name`, or a numeric numpy array."""
    if isinstance(value, str | bytes | bytearray):
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error as error:
            raise BadRecordError(image_id, f"{name} is not valid base64 ({error})") from error
        dtype = np.dtype(_BASE64_DTYPES[name])
        if len(raw) % dtype.itemsize:
            raise BadRecordError(image_id, f"{name} holds {len(raw)} bytes, not a whole number of {dtype} values")
        return np.frombuffer(raw, dtype=dtype)
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        return value
    raise BadRecordError(image_id, f"{name} must be base64 text or a numeric array, got {type(value).__name__}")


def _rows(values: np.ndarray, name: str, image_id: str, num_regions: int, width: int | None) -> np.ndarray:
    """Reshape a field to (num_regions, width); `width` None infers it (the feature width)."""
    if width is None:
        if num_regions == 0 or values.size % num_regions:
            raise BadRecordError(
                image_id, f"{name} has {values.size} values, not a multiple of num_boxes {num_regions}"
            )
        width = values.size // num_regions
    if values.size != num_regions * width:
        raise BadRecordError(
            image_id,
            f"{name} has {values.size} {values.dtype} values ({values.nbytes} bytes); expected num_boxes "
            f"{num_regions} x {width} = {num_regions * width}",
        )
    return values.reshape(num_regions, width)


def _whole_number(value: Any, name: str, image_id: str) -> int:
    """An integer field given as int, integral float, numeric text or a one-element array."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRecordError(image_id, f"{name} must be a whole number, got {value!r}") from None
    if not number.is_integer():
        raise BadRecordError(image_id, f"{name} must be a whole number, got {value!r}")
    return int(number)


def _record(
    image_id: str, fields: Mapping[str, Any], with_cls_prob: bool, size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """A feature-table record from a mapping of (aliased) field names to values.

    `size` (width, height) is the fallback for a record without its image size (npz-dir and hdf5 `--sizes`).
    """
    # regions: the boxes fix the count unless num_boxes is given
    boxes = _values(_field(fields, "boxes", image_id), "boxes", image_id)
    num_boxes = _field(fields, "num_boxes", image_id, required=False)
    num_regions = _whole_number(num_boxes, "num_boxes", image_id) if num_boxes is not None else boxes.size // 4
    record = {
        "image_id": image_id,
        "boxes": _rows(boxes, "boxes", image_id, num_regions, 4),
        "features": _rows(
            _values(_field(fields, "features", image_id), "features", image_id),
            "features",
            image_id,
            num_regions,
            None,
        ),
    }
    record.update(_image_size(fields, image_id, size))

    # detector outputs, when present
    names = [name for name in OPTIONAL_COLUMNS if name in fields and (name != "cls_prob" or with_cls_prob)]
    for name in names:
        values = _values(fields[name], name, image_id)
        width = NUM_DETECTOR_CLASSES if name == "cls_prob" else 1
        rows = _rows(values, name, image_id, num_regions, width)
        record[name] = rows if name == "cls_prob" else rows.reshape(num_regions)
    return record


def _image_size(fields: Mapping[str, Any], image_id: str, size: tuple[int, int] | None) -> dict[str, int]:
    """image_width and image_height from the record, else from `size`."""
    width = _field(fields, "image_width", image_id, required=size is None)
    height = _field(fields, "image_height", image_id, required=size is None)
    if width is None or height is None:
        width, height = size
    return {
        "image_width": _whole_number(width, "image_width", image_id),
        "image_height": _whole_number(height, "image_height", image_id),
    }


# ---------------------------------------------------------------------------------------------------------------
# volta-lmdb

_SAFE_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float", "complex", "bool"}
)
_SAFE_NUMPY = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dtypes and scalars and plain builtin values; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) == ("_codecs", "encode"):  # protocol-2 pickles spell bytes this way
            return super().find_class(module, name)
        if (module, name) in _SAFE_NUMPY:
            if module.startswith("numpy.core.") and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
                module = module.replace("numpy.core.", "numpy._core.", 1)  # the pre-2.0 name, without its warning
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(
            f"refused to unpickle {module}.{name}: only numpy arrays, dtypes, scalars and plain builtins are allowed"
        )


def restricted_loads(data: bytes) -> Any:
    """Unpickle data from an untrusted source, allowing only numpy arrays/dtypes/scalars and plain builtins."""
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def read_volta_lmdb(path: Path, sizes: dict[str, tuple[int, int]] | None, with_cls_prob: bool) -> _Source:
    """Entries of a volta LMDB (layout in the module docstring), in the order of its `b"keys"` list."""
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, subdir=path.is_dir())
    except lmdb.Error as error:
        raise ValueError(f"input {str(path)!r} is not an LMDB environment ({error})") from error
    try:
        with env.begin() as txn:
            keys = _lmdb_keys(txn.get(b"keys"), path)
        total = len(keys) if keys is not None else env.stat()["entries"]
    except BaseException:
        env.close()
        raise
    return _Source(_lmdb_entries(env, keys, with_cls_prob), total, release=env.close)


def _lmdb_keys(raw: bytes | None, path: Path) -> list[bytes] | None:
    """The ids under `b"keys"` as LMDB keys; None when the LMDB has no such list."""
    if raw is None:
        logger.warning("%s has no b'keys' entry; reading every key in key order", path)
        return None
    try:
        keys = restricted_loads(raw)
    except _UNPICKLING_ERRORS as error:
        raise ValueError(f"input {str(path)!r}: b'keys' is not a pickled list of ids ({error})") from error
    if not isinstance(keys, list | tuple) or not all(isinstance(key, bytes | str) for key in keys):
        raise ValueError(
            f"input {str(path)!r}: b'keys' must hold a list of bytes or str ids, got {type(keys).__name__}"
        )
    return [key.encode() if isinstance(key, str) else key for key in keys]


def _lmdb_entries(env: lmdb.Environment, keys: list[bytes] | None, with_cls_prob: bool) -> Iterator[Entry]:
    """One entry per id, read in one read transaction."""
    with env.begin() as txn:
        stream = ((key, txn.get(key)) for key in keys) if keys is not None else txn.cursor().iternext()
        for key, raw in stream:
            if key == b"keys":
                continue
            image_id = key.decode("utf-8", errors="backslashreplace")
            yield image_id, partial(_parse_volta_item, image_id, raw, with_cls_prob)


def _parse_volta_item(image_id: str, raw: bytes | None, with_cls_prob: bool) -> dict[str, Any]:
    """A record from one LMDB value: a pickled dict of fields."""
    if raw is None:
        raise BadRecordError(image_id, "listed under b'keys' but the LMDB has no entry with that key")
    try:
        item = restricted_loads(raw)
    except _UNPICKLING_ERRORS as error:
        raise BadRecordError(image_id, f"the entry cannot be unpickled ({error})") from error
    if not isinstance(item, dict):
        raise BadRecordError(image_id, f"the entry must be a pickled dict of fields, got {type(item).__name__}")
    return _record(image_id, {str(key): value for key, value in item.items()}, with_cls_prob)


# ---------------------------------------------------------------------------------------------------------------
# lxmert-tsv


def read_lxmert_tsv(path: Path, sizes: dict[str, tuple[int, int]] | None, with_cls_prob: bool) -> _Source:
    """Entries of a bottom-up-attention TSV (either field order, see the module docstring), streamed by row."""
    if not path.is_file():
        raise ValueError(f"input {str(path)!r} must be a TSV file for lxmert-tsv")
    return _Source(_tsv_entries(path, with_cls_prob), None)


def _tsv_entries(path: Path, with_cls_prob: bool) -> Iterator[Entry]:
    """One entry per row; the csv field size limit is raised for the long base64 fields while reading."""
    previous_limit = csv.field_size_limit(2**31 - 1)
    try:
        with path.open(newline="") as file:
            for line, row in enumerate(csv.reader(file, delimiter="\t"), start=1):
                image_id = row[0] if row and row[0] else f"<line {line}>"
                yield image_id, partial(_parse_tsv_row, image_id, row, with_cls_prob)
    finally:
        csv.field_size_limit(previous_limit)


def _parse_tsv_row(image_id: str, row: list[str], with_cls_prob: bool) -> dict[str, Any]:
    """A record from one TSV row, its field order told by its field count."""
    if not row or not row[0]:
        raise BadRecordError(image_id, "the row has no image id in its first field")
    if len(row) in (len(LXMERT_TSV_FIELDS), len(LXMERT_TSV_FIELDS) + 1):
        names = (*LXMERT_TSV_FIELDS, "cls_prob")[: len(row)]
    elif len(row) == len(BOTTOM_UP_TSV_FIELDS):
        names = BOTTOM_UP_TSV_FIELDS
    else:
        raise BadRecordError(
            image_id,
            f"the row has {len(row)} tab-separated fields; expected {len(LXMERT_TSV_FIELDS)} (LXMERT), "
            f"{len(LXMERT_TSV_FIELDS) + 1} (LXMERT with cls_prob) or {len(BOTTOM_UP_TSV_FIELDS)} (bottom-up)",
        )
    return _record(image_id, dict(zip(names[1:], row[1:], strict=True)), with_cls_prob)


# ---------------------------------------------------------------------------------------------------------------
# npz-dir

_KNOWN_FIELDS = frozenset(name for names in _ALIASES.values() for name in names) | frozenset(OPTIONAL_COLUMNS)


def read_npz_dir(path: Path, sizes: dict[str, tuple[int, int]] | None, with_cls_prob: bool) -> _Source:
    """Entries of a folder of `<id>.npz` or `<id>.npy` + `<id>_boxes.npy` files, in id order."""
    if not path.is_dir():
        raise ValueError(f"input {str(path)!r} must be a folder of .npz/.npy files for npz-dir")
    files = sorted(entry for entry in path.iterdir() if entry.is_file())
    ignored = [file.name for file in files if file.suffix not in (".npz", ".npy")]
    if ignored:
        logger.info("npz-dir: ignoring %d files that are neither .npz nor .npy, e.g. %s", len(ignored), ignored[:3])

    # one entry per id; an id with both an .npz and an .npy file is ambiguous, so it is a bad record
    by_id: dict[str, list[Path]] = {}
    for file in files:
        if file.suffix == ".npz" or (file.suffix == ".npy" and not file.stem.endswith("_boxes")):
            by_id.setdefault(file.stem, []).append(file)
    entries = (
        (image_id, partial(_load_npz_image, image_id, found, sizes, with_cls_prob))
        for image_id, found in by_id.items()
    )
    return _Source(entries, len(by_id))


def _load_npz_image(
    image_id: str, files: list[Path], sizes: dict[str, tuple[int, int]] | None, with_cls_prob: bool
) -> dict[str, Any]:
    """A record from `<id>.npz`, or from `<id>.npy` with its `<id>_boxes.npy`."""
    if len(files) > 1:
        raise BadRecordError(image_id, f"both {files[0].name} and {files[1].name} exist; keep one per image")
    file = files[0]
    if file.suffix == ".npz":
        if not zipfile.is_zipfile(file):
            raise BadRecordError(image_id, f"{file.name} is not a zip archive, which an .npz file is")
        with _reading(image_id, file), np.load(file, allow_pickle=False) as archive:
            fields = {name: archive[name] for name in archive.files if name in _KNOWN_FIELDS}
    else:
        boxes_file = file.with_name(f"{image_id}_boxes.npy")
        if not boxes_file.is_file():
            raise BadRecordError(image_id, f"{file.name} has no boxes file {boxes_file.name} beside it")
        with _reading(image_id, file):
            fields = {"features": np.load(file, allow_pickle=False), "boxes": np.load(boxes_file, allow_pickle=False)}
    return _record(image_id, fields, with_cls_prob, _size_of(sizes, image_id))


@contextlib.contextmanager
def _reading(image_id: str, file: Path) -> Iterator[None]:
    """Turn numpy's read errors into a bad record naming the file."""
    try:
        yield
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise BadRecordError(image_id, f"{file.name} cannot be read ({error})") from error
    except ValueError as error:  # an object array (refused: it would need unpickling), or not numpy's format
        raise BadRecordError(image_id, f"{file.name} cannot be read without unpickling ({error})") from error


def _size_of(sizes: dict[str, tuple[int, int]] | None, image_id: str) -> tuple[int, int] | None:
    """The image's (width, height) from `--sizes`, when given and listed."""
    return sizes.get(image_id) if sizes is not None else None


# ---------------------------------------------------------------------------------------------------------------
# hdf5


def read_hdf5(path: Path, sizes: dict[str, tuple[int, int]] | None, with_cls_prob: bool) -> _Source:
    """Entries of an HDF5 file with one top-level group per image id, in HDF5's name order."""
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"input {str(path)!r} is not a readable HDF5 file ({error})") from error
    groups = [name for name, item in file.items() if isinstance(item, h5py.Group)]
    if len(groups) < len(file):
        logger.info("hdf5: ignoring %d top-level items that are not groups", len(file) - len(groups))
    return _Source(_hdf5_entries(file, groups, sizes, with_cls_prob), len(groups), release=file.close)


def _hdf5_entries(
    file: h5py.File, groups: list[str], sizes: dict[str, tuple[int, int]] | None, with_cls_prob: bool
) -> Iterator[Entry]:
    """One entry per group."""
    for name in groups:
        yield name, partial(_load_hdf5_group, file[name], name, sizes, with_cls_prob)


def _load_hdf5_group(
    group: h5py.Group, image_id: str, sizes: dict[str, tuple[int, int]] | None, with_cls_prob: bool
) -> dict[str, Any]:
    """A record from one image's group: its datasets, and its attributes for the image size."""
    fields: dict[str, Any] = {name: value for name, value in group.attrs.items() if name in _KNOWN_FIELDS}
    try:
        for name, item in group.items():
            if name in _KNOWN_FIELDS and isinstance(item, h5py.Dataset):
                fields[name] = item[()]
    except (OSError, TypeError) as error:
        raise BadRecordError(image_id, f"a dataset of the group cannot be read ({error})") from error
    fields = {name: np.asarray(value) if np.isscalar(value) else value for name, value in fields.items()}
    return _record(image_id, fields, with_cls_prob, _size_of(sizes, image_id))


_READERS: dict[str, Callable[[Path, dict[str, tuple[int, int]] | None, bool], _Source]] = {
    "volta-lmdb": read_volta_lmdb,
    "lxmert-tsv": read_lxmert_tsv,
    "npz-dir": read_npz_dir,
    "hdf5": read_hdf5,
}


# ---------------------------------------------------------------------------------------------------------------
# command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vl_zoo.data.import_features",
        description="Import pre-extracted region features into a vl_zoo feature table.",
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="layout of the input (see the module docs)")
    parser.add_argument("--input", required=True, help="the LMDB, TSV file, folder of .npz/.npy files or HDF5 file")
    parser.add_argument("--output", required=True, help="the feature-table folder to create")
    parser.add_argument("--dtype", default="float16", choices=FEATURE_DTYPES, help="storage type of the features")
    parser.add_argument("--skip-bad", action="store_true", help="log, count and leave out bad records")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    parser.add_argument("--with-cls-prob", action="store_true", help="keep the detector's class distribution")
    parser.add_argument("--sizes", help='npz-dir/hdf5: JSON {"<image_id>": [width, height]} for files without sizes')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the import from the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with logging_redirect_tqdm():
            report = import_features(
                args.format,
                args.input,
                args.output,
                dtype=args.dtype,
                skip_bad=args.skip_bad,
                overwrite=args.overwrite,
                with_cls_prob=args.with_cls_prob,
                sizes=args.sizes,
            )
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        logger.error("%s", error)
        return 1
    sys.stdout.write(
        f"imported {report.num_images} images ({report.feature_size}-d {report.dtype} features, optional columns "
        f"{report.optional}) into {report.output}; {report.num_bad} bad records skipped; see {REPORT_NAME}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
