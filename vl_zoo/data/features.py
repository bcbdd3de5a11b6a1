"""Region-feature tables: one row per image, stored once as a `datasets` table and read back by image id.

A feature table is a `datasets.Dataset` saved with `save_to_disk`, with the columns

| column | type | meaning |
|---|---|---|
| `image_id` | string | the image's id |
| `features` | `Array2D((None, F), float16 or float32)` | region features, one row per region |
| `boxes` | `Array2D((None, 4), float32)` | pixel boxes x1, y1, x2, y2 |
| `image_width`, `image_height` | int32 | image size in pixels |
| `cls_prob` (optional) | `Array2D((None, 1601), float16)` | the detector's class distribution per region |
| `objects_id`, `attrs_id` (optional) | list of int32 | the detector's object / attribute ids per region |
| `objects_conf`, `attrs_conf` (optional) | list of float32 | their confidences |

Task tables refer to images by id, so the features are stored once however many captions or questions an image
has. `write_feature_table` streams records into a table (memory bounded by one batch) and moves it into place
only when complete; `FeatureStore` reads a row straight from the memory-mapped Arrow buffers, about a hundred
times faster than `dataset[i]`, which converts through Python objects.
"""

from __future__ import annotations

import bisect
import logging
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa

logger = logging.getLogger(__name__)

__all__ = [
    "FEATURE_DTYPES",
    "NUM_DETECTOR_CLASSES",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "FeatureStore",
    "check_output_dir",
    "feature_table_features",
    "validate_record",
    "write_feature_table",
]

REQUIRED_COLUMNS = ("image_id", "features", "boxes", "image_width", "image_height")
OPTIONAL_COLUMNS = ("cls_prob", "objects_id", "objects_conf", "attrs_id", "attrs_conf")
FEATURE_DTYPES = ("float16", "float32")
NUM_DETECTOR_CLASSES = 1601  # Visual Genome: 1600 object classes and background
_PER_REGION_DTYPES = {"objects_id": "int32", "attrs_id": "int32", "objects_conf": "float32", "attrs_conf": "float32"}
_MAX_OFFSET = 2**31 - 1  # Arrow `list` offsets are int32


def feature_table_features(
    feature_size: int, dtype: str = "float16", optional: Iterable[str] = ()
) -> datasets.Features:
    """The `datasets.Features` of a feature table with `feature_size`-d region features.

    Args:
        feature_size: Width F of each region feature (2048 for bottom-up features).
        dtype: Storage type of the features, "float16" (half the disk and page cache) or "float32".
        optional: Optional columns to include, any of `OPTIONAL_COLUMNS`.
    """
    feature_size, dtype, optional = _check_layout(feature_size, dtype, optional)
    columns = {
        "image_id": datasets.Value("string"),
        "features": datasets.Array2D(shape=(None, feature_size), dtype=dtype),
        "boxes": datasets.Array2D(shape=(None, 4), dtype="float32"),
        "image_width": datasets.Value("int32"),
        "image_height": datasets.Value("int32"),
    }
    for name in optional:
        if name == "cls_prob":
            columns[name] = datasets.Array2D(shape=(None, NUM_DETECTOR_CLASSES), dtype="float16")
        else:
            columns[name] = datasets.Sequence(datasets.Value(_PER_REGION_DTYPES[name]))
    return datasets.Features(columns)


def _check_layout(feature_size: int, dtype: str, optional: Iterable[str]) -> tuple[int, str, tuple[str, ...]]:
    """Validate the table layout arguments; returns the optional columns deduplicated in canonical order."""
    if isinstance(feature_size, bool) or not isinstance(feature_size, int | np.integer) or feature_size < 1:
        raise ValueError(f"feature_size must be a positive integer, got {feature_size!r}")
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"dtype must be one of {FEATURE_DTYPES}, got {dtype!r}")
    if isinstance(optional, str):
        raise ValueError(f"optional must be an iterable of column names, got the string {optional!r}")
    optional = set(optional)
    unknown = sorted(optional - set(OPTIONAL_COLUMNS))
    if unknown:
        raise ValueError(f"optional has unknown columns {unknown}; allowed: {OPTIONAL_COLUMNS}")
    return int(feature_size), dtype, tuple(name for name in OPTIONAL_COLUMNS if name in optional)


def validate_record(
    record: dict[str, Any], *, feature_size: int, dtype: str = "float16", optional: Iterable[str] = ()
) -> dict[str, Any]:
    """Check one image's record against the table layout and return it with every array in its stored dtype.

    The checks are the ones a wrong import produces in practice: a feature width that is not `feature_size`,
    a count of boxes that differs from the count of feature rows, values that overflow float16, boxes whose
    corners are swapped, a missing or non-positive image size. Optional columns present in the record but not
    in `optional` are left out of the result.

    Args:
        record: The image's columns (see the module docstring); arrays as numpy arrays or nested lists.
        feature_size: Expected width F of `features`.
        dtype: Storage type of `features`.
        optional: Optional columns the record must have.

    Raises:
        ValueError: naming the image id and the problem.
    """
    feature_size, dtype, optional = _check_layout(feature_size, dtype, optional)
    image_id = _record_image_id(record)
    _check_keys(record, image_id, optional)

    # required columns
    features = _region_matrix(record, "features", image_id, feature_size, dtype)
    num_regions = features.shape[0]
    boxes = _boxes(record, image_id, num_regions)
    checked = {
        "image_id": image_id,
        "features": features,
        "boxes": boxes,
        "image_width": _positive_size(record, "image_width", image_id),
        "image_height": _positive_size(record, "image_height", image_id),
    }

    # optional columns, one value per region each
    for name in optional:
        if name == "cls_prob":
            checked[name] = _region_matrix(record, name, image_id, NUM_DETECTOR_CLASSES, "float16", num_regions)
        else:
            checked[name] = _region_vector(record, name, image_id, num_regions)
    return checked


def _record_image_id(record: Any) -> str:
    """The record's image id; it must be a non-empty string, the key task tables use."""
    if not isinstance(record, dict):
        raise ValueError(f"a feature record must be a dict of columns, got {type(record).__name__}")
    if "image_id" not in record:
        raise ValueError(f"a feature record lacks 'image_id' (it has {sorted(record)})")
    image_id = record["image_id"]
    if not isinstance(image_id, str) or not image_id:
        raise ValueError(f"image_id must be a non-empty string, got {image_id!r} ({type(image_id).__name__})")
    return image_id


def _check_keys(record: dict[str, Any], image_id: str, optional: tuple[str, ...]) -> None:
    """Every required and requested column present, no column the table does not know."""
    missing = [name for name in (*REQUIRED_COLUMNS, *optional) if name not in record]
    if missing:
        raise ValueError(f"image {image_id!r}: the record lacks {missing} (it has {sorted(record)})")
    unknown = sorted(set(record) - set(REQUIRED_COLUMNS) - set(OPTIONAL_COLUMNS))
    if unknown:
        raise ValueError(
            f"image {image_id!r}: the record has unknown columns {unknown}; "
            f"allowed: {REQUIRED_COLUMNS + OPTIONAL_COLUMNS}"
        )


def _numeric_array(record: dict[str, Any], name: str, image_id: str) -> np.ndarray:
    """The column as a numeric numpy array (no copy when it already is one)."""
    try:
        array = np.asarray(record[name])
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"image {image_id!r}: {name} is not a regular array ({error})") from error
    if array.dtype.kind not in "fiub":
        raise ValueError(f"image {image_id!r}: {name} must be numeric, got dtype {array.dtype}")
    return array


def _region_matrix(
    record: dict[str, Any], name: str, image_id: str, width: int, dtype: str, num_regions: int | None = None
) -> np.ndarray:
    """A (R, width) matrix cast to `dtype`, finite after the cast (float16 overflows above 65504)."""
    array = _numeric_array(record, name, image_id)
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"image {image_id!r}: {name} must have shape (num_regions, {width}), got {array.shape}")
    if num_regions is None and array.shape[0] == 0:
        raise ValueError(f"image {image_id!r}: {name} has no rows; an image needs at least one region")
    if num_regions is not None and array.shape[0] != num_regions:
        raise ValueError(f"image {image_id!r}: {name} has {array.shape[0]} rows but features has {num_regions}")
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(dtype, copy=False)
    if not np.isfinite(cast).all():
        raise ValueError(f"image {image_id!r}: {name} has values that are not finite as {dtype}")
    return cast


def _boxes(record: dict[str, Any], image_id: str, num_regions: int) -> np.ndarray:
    """(R, 4) float32 pixel boxes with x1 <= x2 and y1 <= y2, one per feature row."""
    boxes = _region_matrix(record, "boxes", image_id, 4, "float32", num_regions)
    swapped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if swapped.any():
        row = int(np.flatnonzero(swapped)[0])
        raise ValueError(
            f"image {image_id!r}: boxes must be x1, y1, x2, y2 with x1 <= x2 and y1 <= y2; "
            f"row {row} is {boxes[row].tolist()}"
        )
    return boxes


def _region_vector(record: dict[str, Any], name: str, image_id: str, num_regions: int) -> np.ndarray:
    """A per-region vector (ids as int32, confidences as float32) with one value per region."""
    array = _numeric_array(record, name, image_id)
    if array.shape != (num_regions,):
        raise ValueError(f"image {image_id!r}: {name} must have shape ({num_regions},), got {array.shape}")
    dtype = np.dtype(_PER_REGION_DTYPES[name])
    if dtype.kind == "i":
        limits = np.iinfo(dtype)
        if array.dtype.kind == "f" or (array.size and (array.min() < limits.min or array.max() > limits.max)):
            raise ValueError(f"image {image_id!r}: {name} must hold int32 ids, got {array.dtype} {array.tolist()}")
    return array.astype(dtype, copy=False)


def _positive_size(record: dict[str, Any], name: str, image_id: str) -> int:
    """An image side in pixels: a positive integer (an integral float such as 640.0 is accepted)."""
    value = record[name]
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 1:
        raise ValueError(f"image {image_id!r}: {name} must be a positive whole number of pixels, got {value!r}")
    if value > np.iinfo(np.int32).max:
        raise ValueError(f"image {image_id!r}: {name} {value} does not fit int32")
    return int(value)


def write_feature_table(
    records: Iterable[dict],
    output_dir: str | Path,
    *,
    feature_size: int,
    dtype: str = "float16",
    optional: Iterable[str] = (),
    overwrite: bool = False,
    writer_batch_size: int = 256,
) -> Path:
    """Stream records into a feature table saved at `output_dir`, written atomically.

    The rows go to an Arrow file in a temporary folder beside `output_dir` (memory is bounded by one batch of
    `writer_batch_size` rows); the finished table is saved there with `save_to_disk` and then renamed into
    place, so a failure part-way, an invalid record included, leaves no `output_dir` behind. The temporary
    Arrow file is deleted after the save, so the disk briefly holds the table twice.

    Args:
        records: One dict per image with the columns of the module docstring; arrays as numpy arrays.
        output_dir: The folder to create; `datasets.load_from_disk` and `FeatureStore` read it.
        feature_size: Width F of each region feature.
        dtype: Storage type of the features, "float16" or "float32".
        optional: Optional columns every record has and the table keeps, any of `OPTIONAL_COLUMNS`.
        overwrite: Replace an existing non-empty `output_dir` instead of refusing.
        writer_batch_size: Rows per Arrow record batch.

    Returns:
        The path of the table.

    Raises:
        ValueError: for a bad argument, or a bad record (naming the image id), or a repeated image id.
        FileExistsError: when `output_dir` exists, is not empty and `overwrite` is not set.
    """
    features = feature_table_features(feature_size, dtype, optional)
    optional = tuple(name for name in OPTIONAL_COLUMNS if name in features)
    if isinstance(writer_batch_size, bool) or not isinstance(writer_batch_size, int) or writer_batch_size < 1:
        raise ValueError(f"writer_batch_size must be a positive integer, got {writer_batch_size!r}")
    output_dir = check_output_dir(output_dir, overwrite)

    # rows into an Arrow file, then the saved table, all inside a staging folder beside the output
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        rows_file = staging / "rows.arrow"
        checked = (
            validate_record(record, feature_size=feature_size, dtype=dtype, optional=optional)
            for record in _note_dropped_columns(records, optional)
        )
        num_rows = _write_arrow(checked, rows_file, features, writer_batch_size)
        table_dir = staging / "table"
        datasets.Dataset.from_file(str(rows_file)).save_to_disk(str(table_dir))
        rows_file.unlink()
        _move_into_place(table_dir, output_dir, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "wrote a feature table of %d images (%d-d %s features) to %s", num_rows, feature_size, dtype, output_dir
    )
    return output_dir


def _note_dropped_columns(records: Iterable[dict], optional: tuple[str, ...]) -> Iterator[dict]:
    """Pass the records through; warn once (from the first record) about optional columns the table leaves out."""
    first = True
    for record in records:
        if first and isinstance(record, dict):
            dropped = [name for name in OPTIONAL_COLUMNS if name in record and name not in optional]
            if dropped:
                logger.warning("the records have %s, which optional=%s leaves out of the table", dropped, optional)
        first = False
        yield record


def check_output_dir(output_dir: str | Path, overwrite: bool) -> Path:
    """Refuse an existing file, or a non-empty folder unless `overwrite` is set; importers call it up front.

    Raises:
        FileExistsError: naming `output_dir` and what is in the way.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"output_dir {str(output_dir)!r} is a file; a feature table is a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output_dir {str(output_dir)!r} exists and is not empty; pass overwrite=True to replace it"
        )
    return output_dir


def _write_arrow(records: Iterable[dict[str, Any]], path: Path, features: datasets.Features, batch_size: int) -> int:
    """Write checked records to an Arrow stream file in batches; returns the row count."""
    schema = features.arrow_schema
    seen: set[str] = set()
    batch: list[dict[str, Any]] = []
    num_rows = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for record in records:
            if record["image_id"] in seen:
                raise ValueError(f"image {record['image_id']!r} appears twice; image ids must be unique")
            seen.add(record["image_id"])
            batch.append(record)
            if len(batch) == batch_size:
                writer.write_batch(_record_batch(batch, schema))
                num_rows, batch = num_rows + len(batch), []
        if batch:
            writer.write_batch(_record_batch(batch, schema))
            num_rows += len(batch)
    if num_rows == 0:
        raise ValueError("records yielded no rows; a feature table needs at least one image")
    return num_rows


def _record_batch(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """One Arrow record batch from checked records, column by column (no per-value Python conversion)."""
    arrays = []
    for field in schema:
        values = [row[field.name] for row in rows]
        if isinstance(field.type, pa.ExtensionType):  # Array2D: list<list<value>>
            arrays.append(pa.ExtensionArray.from_storage(field.type, _nested_lists(values, field.name)))
        elif pa.types.is_list(field.type):  # Sequence: list<value>
            arrays.append(_lists(values, field.type))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _lists(vectors: list[np.ndarray], list_type: pa.DataType) -> pa.Array:
    """An Arrow list array from 1-d numpy vectors."""
    offsets = np.zeros(len(vectors) + 1, dtype=np.int64)
    np.cumsum([len(vector) for vector in vectors], out=offsets[1:])
    values = pa.array(np.concatenate(vectors), type=list_type.value_type)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _nested_lists(matrices: list[np.ndarray], name: str) -> pa.Array:
    """The list<list<value>> storage of an Array2D column from (R_i, W) numpy matrices."""
    width = matrices[0].shape[1]
    row_offsets = np.zeros(len(matrices) + 1, dtype=np.int64)
    np.cumsum([matrix.shape[0] for matrix in matrices], out=row_offsets[1:])
    if row_offsets[-1] * width > _MAX_OFFSET:
        raise ValueError(
            f"a batch of {len(matrices)} rows holds {row_offsets[-1] * width} {name} values, more than an Arrow "
            f"list can index ({_MAX_OFFSET}); lower writer_batch_size"
        )
    values = pa.array(np.concatenate([matrix.reshape(-1) for matrix in matrices]))
    region_offsets = pa.array(np.arange(row_offsets[-1] + 1, dtype=np.int32) * width)
    regions = pa.ListArray.from_arrays(region_offsets, values)
    return pa.ListArray.from_arrays(pa.array(row_offsets.astype(np.int32)), regions)


def _move_into_place(table_dir: Path, output_dir: Path, overwrite: bool) -> None:
    """Rename the finished table to `output_dir`, replacing what is there only when allowed."""
    if output_dir.exists():
        check_output_dir(output_dir, overwrite)  # it may have filled up while the table was written
        retired = output_dir.with_name(f".{output_dir.name}.replaced")
        shutil.rmtree(retired, ignore_errors=True)
        output_dir.rename(retired)
        table_dir.rename(output_dir)
        shutil.rmtree(retired)
        return
    table_dir.rename(output_dir)


class FeatureStore:
    """Random access to a feature table by image id.

    Rows are read from the table's memory-mapped Arrow buffers: the flat values of a column are viewed as one
    numpy array per record batch and a row is sliced out by its offsets, so a read costs a slice and a copy
    rather than the Python conversion that `dataset[i]` does. The arrays returned are fresh copies the caller
    may modify (a collator that zeroes masked regions does).

    Args:
        table: A folder written by `write_feature_table` (or any `save_to_disk`ed table with its columns), or
            a `datasets.Dataset`; a selected or shuffled dataset is read through its indices.
    """

    def __init__(self, table: str | Path | datasets.Dataset) -> None:
        self._source = table
        dataset = _open_table(table)
        _check_schema(dataset)
        self._dtype = dataset.features["features"].dtype
        self._feature_size = int(dataset.features["features"].shape[1])
        self._columns = [name for name in (*REQUIRED_COLUMNS[1:], *OPTIONAL_COLUMNS) if name in dataset.features]

        # the table's rows in the dataset's order, and each id's position in that order
        arrow_table = dataset.data.table
        rows = _row_order(dataset)
        ids = arrow_table.column("image_id")
        self._image_ids: list[str] = (ids.take(pa.array(rows)) if rows is not None else ids).to_pylist()
        self._position = _positions(self._image_ids)
        self._rows = rows
        self._readers = {name: _ColumnReader(arrow_table.column(name)) for name in self._columns}

    def __len__(self) -> int:
        return len(self._image_ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._position

    def __getitem__(self, image_id: str) -> dict[str, Any]:
        """One image's columns, read straight from the Arrow buffers.

        Returns:
            `features` (R, F) in the stored dtype, `boxes` (R, 4) float32, `image_width` and `image_height` as
            ints, and each optional column the table has (`cls_prob` (R, 1601) float16, ids int32 (R,),
            confidences float32 (R,)).

        Raises:
            KeyError: naming the id when the table does not have it.
        """
        position = self._position.get(image_id)
        if position is None:
            raise KeyError(f"image id {image_id!r} is not in the feature table ({len(self)} images)")
        row = position if self._rows is None else int(self._rows[position])
        return {name: self._readers[name].read(row) for name in self._columns}

    def __repr__(self) -> str:
        optional = [name for name in OPTIONAL_COLUMNS if name in self._columns]
        return f"FeatureStore({len(self)} images, {self._feature_size}-d {self._dtype} features, optional={optional})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickle only the source (a path or a dataset, which pickles by file), so spawned workers reopen it."""
        return {"table": self._source}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["table"])

    @property
    def image_ids(self) -> list[str]:
        """The image ids in table order."""
        return list(self._image_ids)

    @property
    def feature_size(self) -> int:
        """Width F of the region features."""
        return self._feature_size

    @property
    def dtype(self) -> str:
        """Storage type of the region features, "float16" or "float32"."""
        return self._dtype


def _open_table(table: str | Path | datasets.Dataset) -> datasets.Dataset:
    """The dataset behind `table`: given, or loaded (memory-mapped) from a `save_to_disk` folder."""
    if isinstance(table, datasets.Dataset):
        return table
    if not isinstance(table, str | Path):
        raise ValueError(f"table must be a folder path or a datasets.Dataset, got {type(table).__name__}")
    if not Path(table).is_dir():
        raise ValueError(f"table {str(table)!r} is not a folder; expected a feature table saved with save_to_disk")
    dataset = datasets.load_from_disk(str(table))
    if not isinstance(dataset, datasets.Dataset):
        raise ValueError(
            f"table {str(table)!r} holds a {type(dataset).__name__} with splits {list(dataset)}; "
            "a feature table is a single Dataset"
        )
    return dataset


def _check_schema(dataset: datasets.Dataset) -> None:
    """The required columns with their types, and the optional ones with theirs when present."""
    feature = dataset.features.get("features")
    if not isinstance(feature, datasets.Array2D):
        raise ValueError(f"the table's 'features' column must be an Array2D, got {feature!r}")
    expected = feature_table_features(
        int(feature.shape[1]), feature.dtype, [name for name in OPTIONAL_COLUMNS if name in dataset.features]
    )
    for name, kind in expected.items():
        if name not in dataset.features:
            raise ValueError(f"the table lacks the column {name!r} (it has {sorted(dataset.features)})")
        if dataset.features[name] != kind:
            raise ValueError(f"the table's column {name!r} is {dataset.features[name]!r}, expected {kind!r}")


def _row_order(dataset: datasets.Dataset) -> np.ndarray | None:
    """Table row of each dataset row when the dataset has an indices mapping (after select/shuffle), else None."""
    indices = dataset._indices  # datasets keeps select/shuffle as an Arrow indices table; no public accessor
    if indices is None:
        return None
    return indices.column(0).to_numpy().astype(np.int64)


def _positions(image_ids: list[str]) -> dict[str, int]:
    """Each id's position; a table with a repeated id is refused, since a lookup by id would be ambiguous."""
    position = {image_id: index for index, image_id in enumerate(image_ids)}
    if len(position) != len(image_ids):
        seen: set[str] = set()
        repeated = next(image_id for image_id in image_ids if image_id in seen or seen.add(image_id))
        raise ValueError(f"image {repeated!r} appears more than once in the feature table; ids must be unique")
    return position


class _ColumnReader:
    """Reads one row of an Arrow column from numpy views of its chunks' buffers."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self._starts = np.cumsum([0] + [len(chunk) for chunk in column.chunks[:-1]]).tolist()
        self._chunks = [_chunk_views(chunk) for chunk in column.chunks]

    def read(self, row: int) -> Any:
        chunk = bisect.bisect_right(self._starts, row) - 1
        kind, *views = self._chunks[chunk]
        row -= self._starts[chunk]
        if kind == "scalar":
            return views[0][row].item()
        if kind == "list":
            offsets, values = views
            return values[offsets[row] : offsets[row + 1]].copy()
        row_offsets, region_offsets, values, width = views
        first, last = row_offsets[row], row_offsets[row + 1]
        return values[region_offsets[first] : region_offsets[last]].reshape(last - first, width).copy()


def _chunk_views(chunk: pa.Array) -> tuple:
    """("scalar", values), ("list", offsets, values) or ("matrix", row offsets, region offsets, values, width).

    `ListArray.offsets` index into the unsliced child `values`, so the views stay right for sliced chunks.
    """
    if isinstance(chunk, pa.ExtensionArray):
        width = int(chunk.type.shape[1])
        regions = chunk.storage.values
        values = regions.values.to_numpy(zero_copy_only=True)
        return "matrix", chunk.storage.offsets.to_numpy(), regions.offsets.to_numpy(), values, width
    if pa.types.is_list(chunk.type):
        return "list", chunk.offsets.to_numpy(), chunk.values.to_numpy(zero_copy_only=True)
    return "scalar", chunk.to_numpy(zero_copy_only=False)
