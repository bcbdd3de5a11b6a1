"""Importers: small hand-written inputs in each format, checked value by value in the imported table."""

from __future__ import annotations

import base64
import json
import os
import pickle
import runpy
import sys
from pathlib import Path

import h5py
import lmdb
import numpy as np
import pytest

from vl_zoo.data.features import FeatureStore
from vl_zoo.data.import_features import REPORT_NAME, BadRecordError, import_features, main, restricted_loads

FEATURE_SIZE = 5
IMAGES = {"1001": 2, "1002": 3, "1003": 1}  # id -> number of regions
SIZES = {"1001": (640, 480), "1002": (500, 375), "1003": (333, 500)}  # id -> (width, height)


def features_of(index: int, count: int) -> np.ndarray:
    """(count, 5) float32 values that are exact in float16 and differ between images."""
    return np.arange(count * FEATURE_SIZE, dtype=np.float32).reshape(count, FEATURE_SIZE) / 8 + index


def boxes_of(index: int, count: int) -> np.ndarray:
    corners = np.arange(count, dtype=np.float32)[:, None] * 20 + index
    return np.concatenate([corners, corners + 2, corners + 10, corners + 12], axis=1)


def cls_prob_of(index: int, count: int) -> np.ndarray:
    cls_prob = np.zeros((count, 1601), dtype=np.float32)
    cls_prob[:, index] = 0.75
    return cls_prob


def objects_of(index: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(count, dtype=np.int64) + 10 * index, np.full(count, 0.5, dtype=np.float32)


def b64(array: np.ndarray) -> str:
    return base64.b64encode(array.tobytes()).decode()


def check_table(output: Path, ids: list[str] | None = None, optional: tuple[str, ...] = ()) -> FeatureStore:
    """Every imported row equals the hand-written input, value by value."""
    store = FeatureStore(output)
    ids = list(IMAGES) if ids is None else ids
    assert store.image_ids == ids
    for image_id in ids:
        index, count = list(IMAGES).index(image_id), IMAGES[image_id]
        row = store[image_id]
        np.testing.assert_array_equal(row["features"], features_of(index, count).astype(np.float16))
        np.testing.assert_array_equal(row["boxes"], boxes_of(index, count))
        assert (row["image_width"], row["image_height"]) == SIZES[image_id]
        assert sorted(name for name in row if name in optional) == sorted(optional)
        if "cls_prob" in optional:
            np.testing.assert_array_equal(row["cls_prob"], cls_prob_of(index, count).astype(np.float16))
        if "objects_id" in optional:
            assert row["objects_id"].tolist() == objects_of(index, count)[0].tolist()
            assert row["objects_conf"].tolist() == [0.5] * count
    return store


def report_of(output: Path) -> dict:
    return json.loads((output / REPORT_NAME).read_text())


# ---------------------------------------------------------------------------------------------------------------
# volta-lmdb


def volta_item(index: int, image_id: str, encoding: str) -> dict:
    count = IMAGES[image_id]
    width, height = SIZES[image_id]
    item = {"image_id": int(image_id), "image_w": width, "image_h": height, "num_boxes": count}
    arrays = {"features": features_of(index, count), "boxes": boxes_of(index, count)}
    arrays["cls_prob"] = cls_prob_of(index, count)
    arrays["objects_id"], arrays["objects_conf"] = objects_of(index, count)
    for name, array in arrays.items():
        item[name] = base64.b64encode(array.tobytes()) if encoding == "base64" else array
    return item


def write_lmdb(path: Path, entries: dict[bytes, bytes], with_keys: bool = True) -> Path:
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in entries.items():
            txn.put(key, value)
        if with_keys:
            txn.put(b"keys", pickle.dumps(list(entries)))
    env.close()
    return path


def volta_lmdb(path: Path, encoding: str = "base64", with_keys: bool = True) -> Path:
    entries = {
        image_id.encode(): pickle.dumps(volta_item(index, image_id, encoding), protocol=2)
        for index, image_id in enumerate(IMAGES)
    }
    return write_lmdb(path, entries, with_keys)


@pytest.mark.parametrize("encoding", ["base64", "numpy"])
def test_volta_lmdb(tmp_path: Path, encoding: str) -> None:
    source = volta_lmdb(tmp_path / "features.lmdb", encoding)

    report = import_features("volta-lmdb", source, tmp_path / "table", with_cls_prob=True)

    check_table(tmp_path / "table", optional=("cls_prob", "objects_id", "objects_conf"))
    assert (report.num_images, report.num_bad, report.feature_size) == (3, 0, FEATURE_SIZE)
    assert report_of(tmp_path / "table")["optional"] == ["cls_prob", "objects_id", "objects_conf"]


def test_volta_lmdb_without_cls_prob_flag_and_keys_list(tmp_path: Path) -> None:
    source = volta_lmdb(tmp_path / "features.lmdb", with_keys=False)

    import_features("volta-lmdb", source, tmp_path / "table")

    check_table(tmp_path / "table", optional=("objects_id", "objects_conf"))


def test_volta_lmdb_accepts_lxmert_size_names_and_flat_arrays(tmp_path: Path) -> None:
    items = {}
    for index, image_id in enumerate(IMAGES):
        count, (width, height) = IMAGES[image_id], SIZES[image_id]
        flat = {"features": features_of(index, count).reshape(-1), "boxes": boxes_of(index, count).reshape(-1)}
        items[image_id.encode()] = pickle.dumps({"img_w": width, "img_h": height, **flat})
    source = write_lmdb(tmp_path / "features.lmdb", items)

    import_features("volta-lmdb", source, tmp_path / "table")

    check_table(tmp_path / "table")


class Exploit:
    """Unpickling this would run a shell command; the restricted unpickler must refuse it."""

    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


def test_restricted_unpickler_refuses_globals_outside_numpy_and_builtins() -> None:
    assert restricted_loads(pickle.dumps({"a": np.arange(3), "b": [1, "x", b"y"]}))["a"].tolist() == [0, 1, 2]

    with pytest.raises(pickle.UnpicklingError, match="refused to unpickle posix.system"):
        restricted_loads(pickle.dumps(Exploit()))
    with pytest.raises(pickle.UnpicklingError, match="refused to unpickle builtins.eval"):
        restricted_loads(b"cbuiltins\neval\n(S'1'\ntR.")


def test_volta_lmdb_bad_entries_stop_or_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    entries = {image_id.encode(): pickle.dumps(volta_item(i, image_id, "base64")) for i, image_id in enumerate(IMAGES)}
    entries[b"evil"] = pickle.dumps(Exploit())
    short = volta_item(0, "1001", "base64")
    short["features"] = short["features"][:-8]  # 8 base64 characters fewer: 36 bytes, 9 float32 for 2 boxes
    entries[b"short"] = pickle.dumps(short)
    source = write_lmdb(tmp_path / "features.lmdb", entries)

    with pytest.raises(BadRecordError, match="image 'evil': the entry cannot be unpickled .refused"):
        import_features("volta-lmdb", source, tmp_path / "table")
    assert not (tmp_path / "table").exists()

    report = import_features("volta-lmdb", source, tmp_path / "table", skip_bad=True)

    check_table(tmp_path / "table", optional=("objects_id", "objects_conf"))
    assert report.num_bad == 2
    bad = {entry["image_id"]: entry["problem"] for entry in report_of(tmp_path / "table")["bad"]}
    assert bad["evil"].startswith("the entry cannot be unpickled (refused to unpickle posix.system")
    assert bad["short"] == "features has 9 values, not a multiple of num_boxes 2"
    assert not (tmp_path / "pwned").exists()


def test_volta_lmdb_wrong_byte_count(tmp_path: Path) -> None:
    item = volta_item(0, "1001", "base64")
    item["boxes"] = b64(boxes_of(0, 2)[:, :3])  # 6 values where 2 boxes need 8
    source = write_lmdb(tmp_path / "features.lmdb", {b"1001": pickle.dumps(item)})

    with pytest.raises(BadRecordError) as error:
        import_features("volta-lmdb", source, tmp_path / "table")
    assert str(error.value) == ("image '1001': boxes has 6 float32 values (24 bytes); expected num_boxes 2 x 4 = 8")


# ---------------------------------------------------------------------------------------------------------------
# lxmert-tsv


def lxmert_row(index: int, image_id: str, with_cls_prob: bool = False) -> list[str]:
    count = IMAGES[image_id]
    width, height = SIZES[image_id]
    objects_id, objects_conf = objects_of(index, count)
    attrs_id, attrs_conf = objects_id + 1, objects_conf / 2
    row = [image_id, str(height), str(width), b64(objects_id), b64(objects_conf), b64(attrs_id), b64(attrs_conf)]
    row += [str(count), b64(boxes_of(index, count)), b64(features_of(index, count))]
    return row + [b64(cls_prob_of(index, count))] if with_cls_prob else row


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(row) + "\n" for row in rows))
    return path


def test_lxmert_tsv(tmp_path: Path) -> None:
    source = write_tsv(tmp_path / "obj36.tsv", [lxmert_row(i, image_id) for i, image_id in enumerate(IMAGES)])

    import_features("lxmert-tsv", source, tmp_path / "table", dtype="float32")

    store = check_table(tmp_path / "table", optional=("objects_id", "objects_conf", "attrs_id", "attrs_conf"))
    assert store.dtype == "float32"
    assert store["1002"]["attrs_id"].tolist() == [11, 12, 13]
    assert store["1002"]["attrs_conf"].tolist() == [0.25, 0.25, 0.25]


def test_lxmert_tsv_with_cls_prob(tmp_path: Path) -> None:
    rows = [lxmert_row(i, image_id, with_cls_prob=True) for i, image_id in enumerate(IMAGES)]
    source = write_tsv(tmp_path / "obj36.tsv", rows)

    import_features("lxmert-tsv", source, tmp_path / "table", with_cls_prob=True)

    check_table(tmp_path / "table", optional=("cls_prob", "objects_id", "objects_conf", "attrs_id", "attrs_conf"))


def test_lxmert_tsv_fields_longer_than_csvs_default_limit(tmp_path: Path) -> None:
    features = np.arange(36 * 2048, dtype=np.float32).reshape(36, 2048) % 1000  # 36 x 2048: 393 KB of base64
    row = ["big", "480", "640"] + [b64(np.zeros(36, dtype=dtype)) for dtype in ("int64", "float32") * 2]
    row += ["36", b64(np.tile(np.array([0, 0, 10, 10], dtype=np.float32), (36, 1))), b64(features)]
    assert len(row[-1]) > 131072  # csv's default field size limit

    import_features("lxmert-tsv", write_tsv(tmp_path / "big.tsv", [row]), tmp_path / "table")

    np.testing.assert_array_equal(FeatureStore(tmp_path / "table")["big"]["features"], features.astype(np.float16))


def test_bottom_up_tsv_field_order(tmp_path: Path) -> None:
    rows = []
    for index, image_id in enumerate(IMAGES):
        count, (width, height) = IMAGES[image_id], SIZES[image_id]
        rows.append(
            [
                image_id,
                str(width),
                str(height),
                str(count),
                b64(boxes_of(index, count)),
                b64(features_of(index, count)),
            ]
        )
    source = write_tsv(tmp_path / "bottom_up.tsv", rows)

    import_features("lxmert-tsv", source, tmp_path / "table")

    check_table(tmp_path / "table")


def test_tsv_bad_rows_stop_with_the_id_or_are_counted(tmp_path: Path) -> None:
    rows = [lxmert_row(i, image_id) for i, image_id in enumerate(IMAGES)]
    wrong_bytes = lxmert_row(0, "1001")
    wrong_bytes[0], wrong_bytes[9] = "2001", b64(features_of(0, 2).reshape(-1)[:9])  # 9 values for 2 boxes
    truncated = lxmert_row(1, "1002")[:8]
    truncated[0] = "2002"
    not_base64 = lxmert_row(2, "1003")
    not_base64[0], not_base64[8] = "2003", "@@@@"
    source = write_tsv(tmp_path / "obj36.tsv", [rows[0], wrong_bytes, rows[1], truncated, not_base64, rows[2]])

    with pytest.raises(BadRecordError, match="image '2001': features has 9 values, not a multiple of num_boxes 2"):
        import_features("lxmert-tsv", source, tmp_path / "table")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["obj36.tsv"]

    report = import_features("lxmert-tsv", source, tmp_path / "table", skip_bad=True)

    check_table(tmp_path / "table", optional=("objects_id", "objects_conf", "attrs_id", "attrs_conf"))
    saved = report_of(tmp_path / "table")
    assert (report.num_images, report.num_bad, saved["num_bad"]) == (3, 3, 3)
    assert [entry["image_id"] for entry in saved["bad"]] == ["2001", "2002", "2003"]
    assert saved["bad"][1]["problem"].startswith("the row has 8 tab-separated fields; expected 10 (LXMERT)")
    assert saved["bad"][2]["problem"].startswith("boxes is not valid base64")


# ---------------------------------------------------------------------------------------------------------------
# npz-dir


def test_npz_dir_with_both_key_spellings(tmp_path: Path) -> None:
    folder = tmp_path / "npz"
    folder.mkdir()
    for index, image_id in enumerate(IMAGES):
        count, (width, height) = IMAGES[image_id], SIZES[image_id]
        if index % 2 == 0:  # bottom-up-attention.pytorch's spelling, with a pickled `info` never opened
            info = np.array({"objects": [1, 2]}, dtype=object)
            np.savez(
                folder / f"{image_id}.npz",
                x=features_of(index, count),
                bbox=boxes_of(index, count),
                num_bbox=count,
                image_w=width,
                image_h=height,
                info=info,
            )
        else:
            np.savez(
                folder / f"{image_id}.npz",
                features=features_of(index, count),
                boxes=boxes_of(index, count),
                image_width=np.array(width),
                image_height=np.array(height),
            )
    (folder / "README.txt").write_text("not a feature file")

    import_features("npz-dir", folder, tmp_path / "table")

    check_table(tmp_path / "table")


def test_npy_files_with_boxes_and_sizes_json(tmp_path: Path) -> None:
    folder = tmp_path / "npy"
    folder.mkdir()
    for index, image_id in enumerate(IMAGES):
        np.save(folder / f"{image_id}.npy", features_of(index, IMAGES[image_id]))
        np.save(folder / f"{image_id}_boxes.npy", boxes_of(index, IMAGES[image_id]))
    sizes = tmp_path / "sizes.json"
    sizes.write_text(json.dumps({image_id: list(size) for image_id, size in SIZES.items()}))

    import_features("npz-dir", folder, tmp_path / "table", sizes=sizes)

    check_table(tmp_path / "table")


def test_npy_without_boxes_or_size_is_a_bad_record(tmp_path: Path) -> None:
    folder = tmp_path / "npy"
    folder.mkdir()
    for index, image_id in enumerate(IMAGES):
        np.save(folder / f"{image_id}.npy", features_of(index, IMAGES[image_id]))
        if image_id != "1002":
            np.save(folder / f"{image_id}_boxes.npy", boxes_of(index, IMAGES[image_id]))
    sizes = tmp_path / "sizes.json"
    sizes.write_text(json.dumps({"1001": [640, 480]}))

    report = import_features("npz-dir", folder, tmp_path / "table", sizes=sizes, skip_bad=True)

    check_table(tmp_path / "table", ids=["1001"])
    assert [entry["problem"] for entry in report.bad] == [
        "1002.npy has no boxes file 1002_boxes.npy beside it",
        "missing field image_w / img_w / image_width (has ['boxes', 'features'])",
    ]


def test_npz_dir_repeated_id_and_corrupt_file(tmp_path: Path) -> None:
    folder = tmp_path / "npz"
    folder.mkdir()
    for index, image_id in enumerate(IMAGES):
        width, height = SIZES[image_id]
        count = IMAGES[image_id]
        np.savez(
            folder / f"{image_id}.npz",
            features=features_of(index, count),
            boxes=boxes_of(index, count),
            image_w=width,
            image_h=height,
        )
    np.save(folder / "1001.npy", features_of(0, 2))  # the same id a second time
    np.save(folder / "1001_boxes.npy", boxes_of(0, 2))
    (folder / "1004.npz").write_bytes(b"not a zip")

    report = import_features("npz-dir", folder, tmp_path / "table", skip_bad=True)

    check_table(tmp_path / "table", ids=["1002", "1003"])
    problems = {entry["image_id"]: entry["problem"] for entry in report.bad}
    assert problems["1001"] == "both 1001.npy and 1001.npz exist; keep one per image"
    assert problems["1004"] == "1004.npz is not a zip archive, which an .npz file is"


# ---------------------------------------------------------------------------------------------------------------
# hdf5


def test_hdf5_groups_with_attributes_or_datasets(tmp_path: Path) -> None:
    source = tmp_path / "features.h5"
    with h5py.File(source, "w") as file:
        for index, image_id in enumerate(IMAGES):
            count, (width, height) = IMAGES[image_id], SIZES[image_id]
            group = file.create_group(image_id)
            group["features"] = features_of(index, count)
            group["boxes"] = boxes_of(index, count)
            group["objects_id"], group["objects_conf"] = objects_of(index, count)
            if index == 1:
                group["image_width"], group["image_height"] = width, height
            else:
                group.attrs["image_w"], group.attrs["image_h"] = width, height
        file["all_ids"] = np.arange(3)  # a top-level dataset, ignored

    import_features("hdf5", source, tmp_path / "table")

    check_table(tmp_path / "table", optional=("objects_id", "objects_conf"))


def test_hdf5_sizes_from_json_and_a_group_missing_features(tmp_path: Path) -> None:
    source = tmp_path / "features.h5"
    with h5py.File(source, "w") as file:
        for index, image_id in enumerate(IMAGES):
            group = file.create_group(image_id)
            group["boxes"] = boxes_of(index, IMAGES[image_id])
            if image_id != "1003":
                group["features"] = features_of(index, IMAGES[image_id])
    sizes = tmp_path / "sizes.json"
    sizes.write_text(json.dumps({image_id: list(size) for image_id, size in SIZES.items()}))

    with pytest.raises(BadRecordError, match=r"image '1003': missing field features / x \(has \['boxes'\]\)"):
        import_features("hdf5", source, tmp_path / "table", sizes=sizes)
    assert not (tmp_path / "table").exists()

    import_features("hdf5", source, tmp_path / "table", sizes=sizes, skip_bad=True)

    check_table(tmp_path / "table", ids=["1001", "1002"])
    assert report_of(tmp_path / "table")["num_bad"] == 1


# ---------------------------------------------------------------------------------------------------------------
# the command, and errors that concern the whole import


def test_layout_is_fixed_by_the_first_record(tmp_path: Path) -> None:
    rows = [lxmert_row(i, image_id) for i, image_id in enumerate(IMAGES)]
    wider = lxmert_row(1, "1002")
    wider[0], wider[9] = "2002", b64(np.zeros((3, 6), dtype=np.float32))
    source = write_tsv(tmp_path / "obj36.tsv", [rows[0], wider, rows[1], rows[2]])

    with pytest.raises(ValueError, match=r"image '2002': features must have shape \(num_regions, 5\), got \(3, 6\)"):
        import_features("lxmert-tsv", source, tmp_path / "table")


def test_cls_prob_required_by_the_flag(tmp_path: Path) -> None:
    rows = [lxmert_row(i, image_id, with_cls_prob=image_id != "1002") for i, image_id in enumerate(IMAGES)]
    source = write_tsv(tmp_path / "obj36.tsv", rows)

    report = import_features("lxmert-tsv", source, tmp_path / "table", with_cls_prob=True, skip_bad=True)

    assert report.bad == [
        {"image_id": "1002", "problem": "lacks ['cls_prob'], which the first record had or --with-cls-prob asks for"}
    ]


def test_non_empty_output_is_refused_before_reading(tmp_path: Path) -> None:
    source = write_tsv(tmp_path / "obj36.tsv", [lxmert_row(0, "1001")])
    (tmp_path / "table").mkdir()
    (tmp_path / "table" / "old.arrow").write_text("old")

    with pytest.raises(FileExistsError, match="exists and is not empty"):
        import_features("lxmert-tsv", source, tmp_path / "table")

    import_features("lxmert-tsv", source, tmp_path / "table", overwrite=True)
    check_table(tmp_path / "table", ids=["1001"], optional=("objects_id", "objects_conf", "attrs_id", "attrs_conf"))


@pytest.mark.parametrize(
    ("format", "kwargs", "error", "message"),
    [
        ("csv", {}, ValueError, "format must be one of ('volta-lmdb', 'lxmert-tsv', 'npz-dir', 'hdf5'), got 'csv'"),
        ("lxmert-tsv", {"dtype": "bfloat16"}, ValueError, "dtype must be one of ('float16', 'float32')"),
        ("lxmert-tsv", {"sizes": "sizes.json"}, ValueError, "sizes applies to npz-dir and hdf5 only"),
        ("hdf5", {}, ValueError, "is not a readable HDF5 file"),
        ("npz-dir", {}, ValueError, "must be a folder of .npz/.npy files"),
        ("volta-lmdb", {"input": "missing.lmdb"}, FileNotFoundError, "missing.lmdb' does not exist"),
    ],
)
def test_bad_arguments(tmp_path: Path, format: str, kwargs: dict, error: type, message: str) -> None:
    source = write_tsv(tmp_path / "obj36.tsv", [lxmert_row(0, "1001")])
    kwargs = {"input": source, **kwargs}
    kwargs["input"] = tmp_path / kwargs["input"]

    with pytest.raises(error) as raised:
        import_features(format, output=tmp_path / "table", **kwargs)
    assert message in str(raised.value)


def test_an_input_without_readable_records(tmp_path: Path) -> None:
    source = write_tsv(tmp_path / "obj36.tsv", [["1001", "broken"]])

    with pytest.raises(ValueError, match="has no readable lxmert-tsv record .all 1 records were bad, e.g. '1001'"):
        import_features("lxmert-tsv", source, tmp_path / "table", skip_bad=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["obj36.tsv"]


def test_main_writes_the_table_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = volta_lmdb(tmp_path / "features.lmdb")

    status = main(
        ["--format", "volta-lmdb", "--input", str(source), "--output", str(tmp_path / "t"), "--with-cls-prob"]
    )

    assert status == 0
    check_table(tmp_path / "t", optional=("cls_prob", "objects_id", "objects_conf"))
    assert "imported 3 images (5-d float16 features" in capsys.readouterr().out

    assert main(["--format", "volta-lmdb", "--input", str(source), "--output", str(tmp_path / "t")]) == 1


def test_module_runs_as_a_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`python -m vl_zoo.data.import_features`, run in this interpreter (a fresh one spends seconds on torch)."""
    source = write_tsv(tmp_path / "obj36.tsv", [lxmert_row(i, image_id) for i, image_id in enumerate(IMAGES)])
    argv = ["import_features", "--format", "lxmert-tsv", "--input", str(source), "--output", str(tmp_path / "t")]
    monkeypatch.setattr(sys, "argv", [*argv, "--skip-bad"])

    with pytest.warns(RuntimeWarning, match="found in sys.modules"), pytest.raises(SystemExit) as exited:
        runpy.run_module("vl_zoo.data.import_features", run_name="__main__")

    assert exited.value.code == 0
    assert "imported 3 images" in capsys.readouterr().out
    assert report_of(tmp_path / "t")["num_images"] == 3


def test_an_id_listed_twice_is_a_bad_record(tmp_path: Path) -> None:
    source = volta_lmdb(tmp_path / "features.lmdb")
    env = lmdb.open(str(source))
    with env.begin(write=True) as txn:
        txn.put(b"keys", pickle.dumps([b"1001", b"1002", b"1001", b"1003"]))
    env.close()

    with pytest.raises(BadRecordError, match="image '1001': appears more than once in the input"):
        import_features("volta-lmdb", source, tmp_path / "table")
    report = import_features("volta-lmdb", source, tmp_path / "table", skip_bad=True)

    check_table(tmp_path / "table", optional=("objects_id", "objects_conf"))
    assert report.bad == [
        {"image_id": "1001", "problem": "appears more than once in the input; image ids must be unique"}
    ]
