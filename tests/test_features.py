"""Feature tables: the schema, streaming atomic writes, record validation and FeatureStore's Arrow-level reads."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
import pytest

from vl_zoo.data.features import (
    NUM_DETECTOR_CLASSES,
    OPTIONAL_COLUMNS,
    FeatureStore,
    feature_table_features,
    validate_record,
    write_feature_table,
)

FEATURE_SIZE = 5
REGIONS = {"img-a": 2, "img-b": 3, "img-c": 1, "img-d": 4, "img-e": 2}  # five images, varied region counts


def make_record(index: int, image_id: str, num_regions: int, optional: tuple[str, ...] = ()) -> dict:
    """A record with hand-chosen values: every feature is exact in float16 and differs between images."""
    features = np.arange(num_regions * FEATURE_SIZE, dtype=np.float32).reshape(num_regions, FEATURE_SIZE) / 4 + index
    corners = np.arange(num_regions, dtype=np.float32)[:, None] * 10 + index
    record = {
        "image_id": image_id,
        "features": features,
        "boxes": np.concatenate([corners, corners + 1, corners + 5, corners + 7], axis=1),
        "image_width": 640 + index,
        "image_height": 480 - index,
    }
    if "cls_prob" in optional:
        cls_prob = np.zeros((num_regions, NUM_DETECTOR_CLASSES), dtype=np.float32)
        cls_prob[np.arange(num_regions), np.arange(num_regions) + index] = 0.5
        record["cls_prob"] = cls_prob
    if "objects_id" in optional:
        record["objects_id"] = np.arange(num_regions, dtype=np.int64) + 100 * index
    if "objects_conf" in optional:
        record["objects_conf"] = np.full(num_regions, 0.25 * (index + 1), dtype=np.float32)
    if "attrs_id" in optional:
        record["attrs_id"] = np.arange(num_regions) * 2 + index
    if "attrs_conf" in optional:
        record["attrs_conf"] = np.linspace(0, 1, num_regions).astype(np.float32)
    return record


def make_records(optional: tuple[str, ...] = ()) -> list[dict]:
    return [make_record(index, image_id, count, optional) for index, (image_id, count) in enumerate(REGIONS.items())]


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """A table of all five images with every optional column, in batches of two rows (three Arrow chunks)."""
    return write_feature_table(
        make_records(OPTIONAL_COLUMNS),
        tmp_path / "table",
        feature_size=FEATURE_SIZE,
        optional=OPTIONAL_COLUMNS,
        writer_batch_size=2,
    )


def test_feature_table_features_columns_and_types() -> None:
    features = feature_table_features(7, "float32", optional=["objects_conf", "cls_prob"])

    assert list(features) == [
        "image_id",
        "features",
        "boxes",
        "image_width",
        "image_height",
        "cls_prob",
        "objects_conf",
    ]
    assert features["features"] == datasets.Array2D(shape=(None, 7), dtype="float32")
    assert features["boxes"] == datasets.Array2D(shape=(None, 4), dtype="float32")
    assert features["cls_prob"] == datasets.Array2D(shape=(None, 1601), dtype="float16")
    assert features["image_width"] == datasets.Value("int32")
    assert features["objects_conf"] == datasets.Sequence(datasets.Value("float32"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"feature_size": 0}, "feature_size must be a positive integer, got 0"),
        ({"feature_size": 5, "dtype": "int8"}, "dtype must be one of ('float16', 'float32'), got 'int8'"),
        ({"feature_size": 5, "optional": ["scores"]}, "optional has unknown columns ['scores']"),
        ({"feature_size": 5, "optional": "cls_prob"}, "got the string 'cls_prob'"),
    ],
)
def test_feature_table_features_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        feature_table_features(**kwargs)
    assert message in str(error.value)


def test_store_returns_every_column_value_by_value(table: Path) -> None:
    store = FeatureStore(table)

    assert len(store) == 5
    assert store.image_ids == list(REGIONS)
    assert store.feature_size == FEATURE_SIZE
    assert store.dtype == "float16"
    for index, (image_id, count) in enumerate(REGIONS.items()):
        expected = make_record(index, image_id, count, OPTIONAL_COLUMNS)
        row = store[image_id]
        assert sorted(row) == sorted(["features", "boxes", "image_width", "image_height", *OPTIONAL_COLUMNS])
        assert row["features"].dtype == np.float16 and row["features"].shape == (count, FEATURE_SIZE)
        np.testing.assert_array_equal(row["features"], expected["features"].astype(np.float16))
        assert row["boxes"].dtype == np.float32
        np.testing.assert_array_equal(row["boxes"], expected["boxes"])
        assert (row["image_width"], row["image_height"]) == (640 + index, 480 - index)
        assert isinstance(row["image_width"], int)
        assert row["cls_prob"].dtype == np.float16 and row["cls_prob"].shape == (count, NUM_DETECTOR_CLASSES)
        np.testing.assert_array_equal(row["cls_prob"], expected["cls_prob"].astype(np.float16))
        assert row["objects_id"].dtype == np.int32
        assert row["objects_id"].tolist() == [100 * index + region for region in range(count)]
        assert row["objects_conf"].tolist() == [0.25 * (index + 1)] * count
        assert row["attrs_id"].tolist() == [2 * region + index for region in range(count)]
        np.testing.assert_array_equal(row["attrs_conf"], expected["attrs_conf"])


def test_store_agrees_with_datasets_own_decoding(table: Path) -> None:
    dataset = datasets.load_from_disk(str(table))
    store = FeatureStore(table)

    assert dataset.features == feature_table_features(FEATURE_SIZE, optional=OPTIONAL_COLUMNS)
    for row in dataset:
        mine = store[row["image_id"]]
        np.testing.assert_array_equal(mine["features"], np.asarray(row["features"], dtype=np.float16))
        np.testing.assert_array_equal(mine["boxes"], np.asarray(row["boxes"], dtype=np.float32))
        assert mine["objects_id"].tolist() == row["objects_id"]


def test_store_returns_writable_copies(table: Path) -> None:
    store = FeatureStore(table)

    first = store["img-b"]
    first["features"][:] = 0
    first["boxes"][:] = -1

    again = store["img-b"]
    np.testing.assert_array_equal(again["features"], make_record(1, "img-b", 3)["features"].astype(np.float16))
    assert again["boxes"][0].tolist() == [1.0, 2.0, 6.0, 8.0]


def test_store_membership_and_missing_id(table: Path) -> None:
    store = FeatureStore(table)

    assert "img-c" in store
    assert "img-z" not in store
    assert 3 not in store
    with pytest.raises(KeyError, match="image id 'img-z' is not in the feature table"):
        store["img-z"]


def test_store_reads_through_a_shuffled_selection(table: Path) -> None:
    dataset = datasets.load_from_disk(str(table)).shuffle(seed=3).select([4, 0, 2])
    store = FeatureStore(dataset)

    assert store.image_ids == [row["image_id"] for row in dataset]
    assert len(store) == 3
    for image_id in store.image_ids:
        index = list(REGIONS).index(image_id)
        expected = make_record(index, image_id, REGIONS[image_id])
        np.testing.assert_array_equal(store[image_id]["features"], expected["features"].astype(np.float16))
    for image_id in set(REGIONS) - set(store.image_ids):
        assert image_id not in store


def test_store_survives_pickling(table: Path) -> None:
    store = pickle.loads(pickle.dumps(FeatureStore(table)))

    np.testing.assert_array_equal(store["img-d"]["boxes"], make_record(3, "img-d", 4)["boxes"])


def test_store_refuses_a_table_without_the_columns(tmp_path: Path) -> None:
    datasets.Dataset.from_dict({"image_id": ["a"], "caption": ["a cat"]}).save_to_disk(str(tmp_path / "captions"))

    with pytest.raises(ValueError, match="'features' column must be an Array2D"):
        FeatureStore(tmp_path / "captions")
    with pytest.raises(ValueError, match="is not a folder"):
        FeatureStore(tmp_path / "nothing")


def test_store_reads_an_in_memory_dataset() -> None:
    features = feature_table_features(FEATURE_SIZE, optional=["objects_id"])
    rows = make_records(("objects_id",))
    dataset = datasets.Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)

    store = FeatureStore(dataset)

    assert store.image_ids == list(REGIONS)
    np.testing.assert_array_equal(store["img-e"]["features"], rows[4]["features"].astype(np.float16))
    assert store["img-e"]["objects_id"].tolist() == [400, 401]


def test_store_refuses_repeated_ids() -> None:
    features = feature_table_features(FEATURE_SIZE)
    rows = [make_record(0, "same", 1), make_record(1, "same", 2)]
    columns = {name: [row[name] for row in rows] for name in features}
    dataset = datasets.Dataset.from_dict(columns, features=features)

    with pytest.raises(ValueError, match="image 'same' appears more than once"):
        FeatureStore(dataset)


def test_float32_table_keeps_full_precision(tmp_path: Path) -> None:
    record = make_record(0, "precise", 2)
    record["features"] = record["features"] + np.float32(1e-4)  # not representable in float16

    store = FeatureStore(write_feature_table([record], tmp_path / "t", feature_size=FEATURE_SIZE, dtype="float32"))

    assert store.dtype == "float32"
    np.testing.assert_array_equal(store["precise"]["features"], record["features"])


def test_write_streams_a_generator_and_drops_unrequested_optional_columns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def records() -> Iterator[dict]:
        yield from make_records(("objects_id",))

    with caplog.at_level(logging.WARNING, logger="vl_zoo.data.features"):
        path = write_feature_table(records(), tmp_path / "t", feature_size=FEATURE_SIZE)

    assert "['objects_id'], which optional=() leaves out" in caplog.text
    store = FeatureStore(path)
    assert sorted(store["img-a"]) == ["boxes", "features", "image_height", "image_width"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": np.zeros((2, 6))}, "image 'bad': features must have shape (num_regions, 5), got (2, 6)"),
        ({"features": np.zeros((0, 5))}, "image 'bad': features has no rows"),
        ({"features": np.full((2, 5), 70000.0)}, "image 'bad': features has values that are not finite as float16"),
        ({"features": np.full((2, 5), np.nan)}, "not finite"),
        ({"boxes": np.zeros((3, 4))}, "image 'bad': boxes has 3 rows but features has 2"),
        ({"boxes": np.array([[0, 0, 5, 5], [9, 0, 1, 5]])}, "x1 <= x2 and y1 <= y2; row 1 is [9.0, 0.0, 1.0, 5.0]"),
        ({"image_width": 0}, "image 'bad': image_width must be a positive whole number of pixels, got 0"),
        ({"image_height": 480.5}, "image_height must be a positive whole number of pixels, got 480.5"),
        ({"image_id": 7}, "image_id must be a non-empty string, got 7 (int)"),
        ({"score": 1.0}, "image 'bad': the record has unknown columns ['score']"),
        ({"features": [[1, 2], [3]]}, "image 'bad': features is not a regular array"),
        ({"features": np.array([["a"] * 5] * 2)}, "features must be numeric, got dtype <U1"),
        (
            {"cls_prob": np.zeros((2, 1600))},
            "image 'bad': cls_prob must have shape (num_regions, 1601), got (2, 1600)",
        ),
        ({"objects_id": np.array([1.5, 2.0])}, "image 'bad': objects_id must hold int32 ids"),
        ({"objects_id": np.array([1, 2**40])}, "objects_id must hold int32 ids"),
        ({"objects_conf": np.zeros(3)}, "image 'bad': objects_conf must have shape (2,), got (3,)"),
    ],
)
def test_validate_record_names_the_image_and_the_problem(change: dict, message: str) -> None:
    record = {**make_record(0, "bad", 2), **change}
    optional = [name for name in ("cls_prob", "objects_id", "objects_conf") if name in change]

    with pytest.raises(ValueError) as error:
        validate_record(record, feature_size=FEATURE_SIZE, optional=optional)
    assert message in str(error.value)


def test_validate_record_names_missing_columns() -> None:
    record = make_record(0, "short", 2)
    del record["boxes"]

    with pytest.raises(ValueError, match=r"image 'short': the record lacks \['boxes', 'cls_prob'\]"):
        validate_record(record, feature_size=FEATURE_SIZE, optional=["cls_prob"])


def test_validate_record_casts_to_the_stored_types() -> None:
    record = make_record(2, "cast", 2, ("objects_id",))
    record["image_width"] = np.int64(800)
    record["image_height"] = 600.0

    checked = validate_record(record, feature_size=FEATURE_SIZE, optional=["objects_id"])

    assert checked["features"].dtype == np.float16
    assert checked["objects_id"].dtype == np.int32 and checked["objects_id"].tolist() == [200, 201]
    assert (checked["image_width"], checked["image_height"]) == (800, 600)


def _leftovers(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir())


def test_a_failure_mid_way_leaves_no_output(tmp_path: Path) -> None:
    def records() -> Iterator[dict]:
        yield from make_records()[:3]
        raise RuntimeError("the source went away")

    with pytest.raises(RuntimeError, match="the source went away"):
        write_feature_table(records(), tmp_path / "t", feature_size=FEATURE_SIZE, writer_batch_size=2)
    assert _leftovers(tmp_path) == []


def test_a_bad_record_mid_way_stops_with_its_id_and_leaves_no_output(tmp_path: Path) -> None:
    records = make_records()
    records[3]["boxes"] = records[3]["boxes"][:2]

    with pytest.raises(ValueError, match="image 'img-d': boxes has 2 rows but features has 4"):
        write_feature_table(records, tmp_path / "t", feature_size=FEATURE_SIZE, writer_batch_size=2)
    assert _leftovers(tmp_path) == []


def test_repeated_image_ids_are_refused(tmp_path: Path) -> None:
    records = make_records()
    records[2]["image_id"] = "img-a"

    with pytest.raises(ValueError, match="image 'img-a' appears twice"):
        write_feature_table(records, tmp_path / "t", feature_size=FEATURE_SIZE)


def test_no_records_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="records yielded no rows"):
        write_feature_table([], tmp_path / "t", feature_size=FEATURE_SIZE)
    assert _leftovers(tmp_path) == []


def test_non_empty_output_is_refused_unless_overwrite(tmp_path: Path) -> None:
    output = tmp_path / "t"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")

    with pytest.raises(FileExistsError, match="exists and is not empty; pass overwrite=True"):
        write_feature_table(make_records(), output, feature_size=FEATURE_SIZE)
    assert (output / "notes.txt").read_text() == "keep me"

    write_feature_table(make_records()[:2], output, feature_size=FEATURE_SIZE, overwrite=True)
    assert not (output / "notes.txt").exists()
    assert FeatureStore(output).image_ids == ["img-a", "img-b"]
    assert _leftovers(tmp_path) == ["t"]


def test_an_empty_existing_folder_is_filled(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()

    write_feature_table(make_records(), tmp_path / "t", feature_size=FEATURE_SIZE)

    assert len(FeatureStore(tmp_path / "t")) == 5


def test_writer_batch_size_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="writer_batch_size must be a positive integer, got 0"):
        write_feature_table(make_records(), tmp_path / "t", feature_size=FEATURE_SIZE, writer_batch_size=0)
