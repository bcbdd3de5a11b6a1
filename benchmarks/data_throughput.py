"""Region-feature loading speed: a vl_zoo feature table against the same features in a volta-style LMDB.

    python benchmarks/data_throughput.py                        # 2,000 images of 37 x 2048 float16 features
    python benchmarks/data_throughput.py --num-images 20000 --workers 0 2 4 --tmp-dir /scratch

Builds N images of random features in a temporary folder, once as a feature table
(`vl_zoo.data.features.write_feature_table`) and twice as an LMDB of pickled dicts keyed by image id: in the
unified framework's release encoding (base64 float32, decoded on every read) and as pickled float16 numpy arrays
(the fastest an LMDB of pickles gets). Each source is read in random order through a torch DataLoader (batch 64)
whose collate function stacks features, boxes and region masks into tensors (features cast to float32), and the
table prints samples per second. A second table times single-process random access without a DataLoader. Nothing is
asserted: the numbers depend on the machine, the page cache and the number of cores.
"""

from __future__ import annotations

import argparse
import base64
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import lmdb
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vl_zoo.data.features import FeatureStore, write_feature_table

LMDB_ENCODINGS = ("base64-float32", "numpy-float16")


# ---------------------------------------------------------------------------------------------------------------
# data


def synthetic_records(num_images: int, num_regions: int, feature_size: int, seed: int) -> Iterator[dict[str, Any]]:
    """Seeded records: normal features (stored float16), valid boxes in a 640 x 480 image."""
    rng = np.random.default_rng(seed)
    for index in range(num_images):
        corners = np.sort(rng.uniform(0, 1, size=(num_regions, 2, 2)), axis=1)  # (R, min/max, x/y)
        boxes = (corners.reshape(num_regions, 4) * [640, 480, 640, 480]).astype(np.float32)
        yield {
            "image_id": f"{index:012d}",
            "features": rng.standard_normal((num_regions, feature_size), dtype=np.float32).astype(np.float16),
            "boxes": boxes,
            "image_width": 640,
            "image_height": 480,
        }


def write_lmdb(path: Path, records: Iterator[dict[str, Any]], encoding: str, map_size: int) -> None:
    """An LMDB laid out as the unified framework's release: b"keys" lists the ids, each id holds a pickled dict."""
    env = lmdb.open(str(path), map_size=map_size)
    keys = []
    with env.begin(write=True) as txn:
        for record in records:
            key = record["image_id"].encode()
            txn.put(key, pickle.dumps(_lmdb_item(record, encoding)))
            keys.append(key)
        txn.put(b"keys", pickle.dumps(keys))
    env.close()


def _lmdb_item(record: dict[str, Any], encoding: str) -> dict[str, Any]:
    """One entry: the release's field names; arrays as base64 of float32 bytes, or as numpy arrays."""
    features, boxes = record["features"], record["boxes"]
    if encoding == "base64-float32":
        features = base64.b64encode(features.astype(np.float32).tobytes())
        boxes = base64.b64encode(boxes.tobytes())
    return {
        "image_id": record["image_id"],
        "image_h": record["image_height"],
        "image_w": record["image_width"],
        "num_boxes": record["boxes"].shape[0],
        "features": features,
        "boxes": boxes,
    }


class TableImages(Dataset):
    """Images by position, read from a feature table through FeatureStore."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.image_ids = store.image_ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.store[self.image_ids[index]]


class LmdbImages(Dataset):
    """Images by position, read from the LMDB; each worker opens its own environment (handles are not fork-safe)."""

    def __init__(self, path: Path, image_ids: list[str], encoding: str, feature_size: int) -> None:
        self.path, self.encoding, self.feature_size = path, encoding, feature_size
        self.keys = [image_id.encode() for image_id in image_ids]
        self._env: lmdb.Environment | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def close(self) -> None:
        """Close this process's environment; needed before forking workers, as a child may not reopen it."""
        if self._env is not None:
            self._env.close()
            self._env = None

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._env is None or self._pid != os.getpid():
            self._env = lmdb.open(str(self.path), readonly=True, lock=False, readahead=False, meminit=False)
            self._pid = os.getpid()
        with self._env.begin() as txn:
            item = pickle.loads(txn.get(self.keys[index]))  # this benchmark's own file, so plain pickle
        return decode_lmdb_item(item, self.encoding, self.feature_size)


def decode_lmdb_item(item: dict[str, Any], encoding: str, feature_size: int) -> dict[str, Any]:
    """What the release's reader does with an entry: decode, reshape."""
    features, boxes = item["features"], item["boxes"]
    if encoding == "base64-float32":
        features = np.frombuffer(base64.b64decode(features), dtype=np.float32).reshape(-1, feature_size)
        boxes = np.frombuffer(base64.b64decode(boxes), dtype=np.float32).reshape(-1, 4)
    return {"features": features, "boxes": boxes, "image_width": item["image_w"], "image_height": item["image_h"]}


def collate(images: list[dict[str, Any]], features_dtype: str = "float32") -> dict[str, torch.Tensor]:
    """Stack a batch: features (B, R, F) and boxes (B, R, 4) zero-padded, and the region mask (B, R).

    Features are stacked in the dtype the source gives and then cast to `features_dtype` by torch: numpy's
    float16 to float32 `astype` runs at about a fifth of torch's single-threaded cast, enough on its own to cap a
    loader near 4,000 samples/s per core. "stored" keeps the source's dtype (cast on the accelerator instead).
    """
    num_regions = max(len(image["features"]) for image in images)
    feature_size = images[0]["features"].shape[1]
    features = np.zeros((len(images), num_regions, feature_size), dtype=images[0]["features"].dtype)
    boxes = np.zeros((len(images), num_regions, 4), dtype=np.float32)
    mask = np.zeros((len(images), num_regions), dtype=np.int64)
    for row, image in enumerate(images):
        count = len(image["features"])
        features[row, :count] = image["features"]
        boxes[row, :count] = image["boxes"]
        mask[row, :count] = 1
    visual_feats = torch.from_numpy(features)
    if features_dtype != "stored":
        visual_feats = visual_feats.to(getattr(torch, features_dtype))
    return {"visual_feats": visual_feats, "boxes": torch.from_numpy(boxes), "mask": torch.from_numpy(mask)}


# ---------------------------------------------------------------------------------------------------------------
# timing


@dataclass
class Source:
    """One way of storing the features, and what it cost to build."""

    name: str
    dataset: Dataset
    path: Path
    build_seconds: float


def epoch_rate(source: Source, workers: int, args: argparse.Namespace, seed: int) -> float:
    """Samples per second of one shuffled epoch through a DataLoader, worker start-up included."""
    if isinstance(source.dataset, LmdbImages):
        source.dataset.close()  # a forked worker cannot reopen an environment its parent holds open
    loader = DataLoader(
        source.dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=partial(collate, features_dtype=args.features_dtype),
        generator=torch.Generator().manual_seed(seed),
    )
    start = time.perf_counter()
    count = sum(len(batch["mask"]) for batch in loader)
    return count / (time.perf_counter() - start)


def access_rate(read: Callable[[int], Any], num_items: int, limit: int, seed: int) -> float:
    """Items per second of `read(index)` over a random order of at most `limit` items, on this process only."""
    order = np.random.default_rng(seed).permutation(num_items)[:limit]
    start = time.perf_counter()
    for index in order:
        read(int(index))
    return len(order) / (time.perf_counter() - start)


def folder_megabytes(path: Path) -> float:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) / 2**20


# ---------------------------------------------------------------------------------------------------------------
# main


def build_sources(args: argparse.Namespace, root: Path) -> list[Source]:
    """Write the feature table and the LMDBs of the same seeded records."""
    records = partial(synthetic_records, args.num_images, args.regions, args.feature_size, args.seed)

    start = time.perf_counter()
    table = write_feature_table(records(), root / "table", feature_size=args.feature_size)
    store = FeatureStore(table)
    sources = [Source("feature table (FeatureStore)", TableImages(store), table, time.perf_counter() - start)]

    entry_bytes = args.regions * (args.feature_size * 4 * 4 // 3 + 64) + 1024  # base64 float32, the largest
    for encoding in LMDB_ENCODINGS:
        start = time.perf_counter()
        path = root / f"{encoding}.lmdb"
        write_lmdb(path, records(), encoding, map_size=2 * args.num_images * entry_bytes + 2**26)
        dataset = LmdbImages(path, store.image_ids, encoding, args.feature_size)
        sources.append(Source(f"LMDB, {encoding}", dataset, path, time.perf_counter() - start))
    return sources


def loader_table(sources: list[Source], args: argparse.Namespace) -> list[str]:
    """DataLoader samples/s per source and worker count; repeats interleave the settings, the best counts."""
    settings = [(source, workers) for source in sources for workers in args.workers]
    best = dict.fromkeys(range(len(settings)), 0.0)
    for repeat in range(args.repeats):
        for index, (source, workers) in enumerate(settings):
            best[index] = max(best[index], epoch_rate(source, workers, args, args.seed + repeat))

    lines = [f"{'source':<30} {'workers':>7} {'samples/s':>10} {'MB/s read':>10} {'on disk':>9} {'build s':>8}"]
    for index, (source, workers) in enumerate(settings):
        megabytes = folder_megabytes(source.path)
        read = best[index] * megabytes / args.num_images
        lines.append(
            f"{source.name:<30} {workers:>7} {best[index]:>10,.0f} {read:>10,.0f} {megabytes:>7,.0f}MB "
            f"{source.build_seconds:>8.1f}"
        )
    return lines


def access_table(sources: list[Source], args: argparse.Namespace) -> list[str]:
    """Single-process random reads without a DataLoader, and `datasets`' own row access for scale."""
    lines = [f"{'single-process random access':<38} {'images/s':>10}"]
    for source in sources:
        rate = access_rate(source.dataset.__getitem__, args.num_images, args.num_images, args.seed)
        lines.append(f"{source.name:<38} {rate:>10,.0f}")
    dataset = datasets.load_from_disk(str(sources[0].path))
    rate = access_rate(dataset.__getitem__, len(dataset), 200, args.seed)
    lines.append(f"{'datasets Dataset[i] on the same table':<38} {rate:>10,.0f}")
    return lines


def run(args: argparse.Namespace, root: Path) -> str:
    """Build the sources, time them, and return the report as text."""
    sources = build_sources(args, root)
    header = (
        f"{args.num_images} images of {args.regions} x {args.feature_size} float16 features; DataLoader batch "
        f"{args.batch_size}, shuffled, features collated as {args.features_dtype}; best of {args.repeats} epochs; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
        f"datasets {datasets.__version__}"
    )
    return "\n".join([header, "", *loader_table(sources, args), "", *access_table(sources, args)]) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--regions", type=int, default=37, help="regions per image (36 and the global one)")
    parser.add_argument("--feature-size", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to time")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per setting; the best is reported")
    parser.add_argument(
        "--features-dtype",
        default="float32",
        choices=("float32", "float16", "stored"),
        help="dtype of the collated features (float32 is what the model takes; stored skips the cast)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp-dir", default=None, help="where to build the sources (removed afterwards)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="vl_zoo_data_throughput.", dir=args.tmp_dir) as root:
        sys.stdout.write(run(args, Path(root)))


if __name__ == "__main__":
    main()
