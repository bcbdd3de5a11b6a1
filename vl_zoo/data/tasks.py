"""Task tables: the public annotation files of each task, read into `datasets.Dataset` rows, and answer vocabularies.

Every task table refers to its images by id (a string), the key of the feature table (`vl_zoo/data/features.py`).
The row schemas below are shared with the synthetic data and the collators, so they are the same whatever file a
table was read from:

| task | columns |
|---|---|
| `pretraining` | `image_id`, `caption` |
| `vqa`, `gqa` | `question_id`, `image_id`, `question`, `answers` (the human answers; one for GQA) |
| `nlvr2` | `identifier`, `sentence`, `left_image_id`, `right_image_id`, `label` (1 = true) |
| `snli-ve` | `pair_id`, `image_id`, `hypothesis`, `label` (0 entailment, 1 neutral, 2 contradiction) |
| `refcoco` | `ref_id`, `image_id`, `expression`, `box` (pixel x1, y1, x2, y2) |
| `retrieval` | `image_id`, `caption` (several rows per image) |

`load_task(task, path, split)` picks the reader; each reader's docstring names the exact file layout it reads.
`AnswerVocabulary` holds the answer classes of VQA and GQA and turns the human answers of a question into the
release's soft scores; `normalize_answer` is the official VQA evaluation's answer processing.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import pickle
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

logger = logging.getLogger(__name__)

TASKS = ("pretraining", "vqa", "gqa", "nlvr2", "snli-ve", "refcoco", "retrieval")

_STRING = datasets.Value("string")
TASK_FEATURES: dict[str, datasets.Features] = {
    "pretraining": datasets.Features({"image_id": _STRING, "caption": _STRING}),
    "vqa": datasets.Features(
        {"question_id": _STRING, "image_id": _STRING, "question": _STRING, "answers": datasets.List(_STRING)}
    ),
    "gqa": datasets.Features(
        {"question_id": _STRING, "image_id": _STRING, "question": _STRING, "answers": datasets.List(_STRING)}
    ),
    "nlvr2": datasets.Features(
        {
            "identifier": _STRING,
            "sentence": _STRING,
            "left_image_id": _STRING,
            "right_image_id": _STRING,
            "label": datasets.Value("int64"),
        }
    ),
    "snli-ve": datasets.Features(
        {"pair_id": _STRING, "image_id": _STRING, "hypothesis": _STRING, "label": datasets.Value("int64")}
    ),
    "refcoco": datasets.Features(
        {
            "ref_id": _STRING,
            "image_id": _STRING,
            "expression": _STRING,
            "box": datasets.List(datasets.Value("float64")),
        }
    ),
    "retrieval": datasets.Features({"image_id": _STRING, "caption": _STRING}),
}
TASK_COLUMNS: dict[str, tuple[str, ...]] = {task: tuple(features) for task, features in TASK_FEATURES.items()}

# SNLI-VE classes in the order of this package's rows. The release numbers them the other way round
# (contradiction 0, neutral 1, entailment 2): a converted release classifier needs its rows reversed.
SNLI_VE_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}
CC_ID_RULES = ("url-crc32", "index")

# Split names people use, mapped to the names in each dataset's file names.
_VQA_SPLITS = {"train": "train2014", "val": "val2014", "validation": "val2014", "test": "test2015"}
_VQA_SPLITS |= {"test-dev": "test-dev2015", "testdev": "test-dev2015"}
_CAPTION_SPLITS = {"train": "train", "val": "valid", "valid": "valid", "validation": "valid"}
_EVAL_SPLITS = {"validation": "dev", "val": "dev", "valid": "dev"}  # NLVR2 and SNLI-VE call validation "dev"
_GQA_SPLITS = {"validation": "val", "valid": "val", "test-dev": "testdev"}


def load_task(task: str, path: str | Path, split: str | None = None) -> datasets.Dataset:
    """Read one split of a task's public annotation files into rows with the task's schema.

    Args:
        task: one of `TASKS`.
        path: the annotation file itself, or the folder that holds the task's files under their public names.
        split: which split to read when `path` is a folder (and, for RefCOCO and Karpathy files, which holds
            every split, which split to keep); `None` reads a single file whole.

    Returns:
        A `datasets.Dataset` with exactly the columns of `TASK_FEATURES[task]`.
    """
    if task not in _READERS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    path = Path(path)
    if not path.exists():
        raise ValueError(f"path of the {task} annotations does not exist: {path}")

    rows = _READERS[task](path, split)
    dataset = datasets.Dataset.from_list(rows, features=TASK_FEATURES[task])
    logger.info("Read %d %s rows (split %s) from %s", len(dataset), task, split, path)
    return dataset


# ----------------------------------------------------------------------------------------------------------------
# Pretraining captions


def read_captions(path: Path, split: str | None = None, id_rule: str = "url-crc32") -> list[dict[str, Any]]:
    """Pretraining captions from the release's caption JSON or a Conceptual Captions TSV.

    A folder is searched for `caption_{train,valid}.json` (the release's names), then for the Conceptual Captions
    downloads `Train_GCC-training.tsv` / `Validation_GCC-1.1.0-Validation.tsv`. A file is read by its suffix:
    `.json` by `read_caption_json`, anything else by `read_conceptual_captions_tsv`.
    """
    if path.is_dir():
        name = _split_name(split, _CAPTION_SPLITS, "pretraining")
        tsv = "Train_GCC-training.tsv" if name == "train" else "Validation_GCC-1.1.0-Validation.tsv"
        path = _first_existing(path, [f"caption_{name}.json", tsv], "pretraining")
    if path.suffix == ".json":
        return read_caption_json(path)
    return read_conceptual_captions_tsv(path, id_rule=id_rule)


def read_caption_json(path: Path) -> list[dict[str, Any]]:
    """The release's `caption_train.json` / `caption_valid.json`: one JSON object `{image_id: caption}`."""
    content = _read_json(path)
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a JSON object {{image_id: caption}}, got a {type(content).__name__}")
    return [{"image_id": str(image_id), "caption": str(caption)} for image_id, caption in content.items()]


def read_conceptual_captions_tsv(path: Path, id_rule: str = "url-crc32") -> list[dict[str, Any]]:
    """A Conceptual Captions TSV: no header, one `caption<TAB>url` line per image.

    Args:
        id_rule: how an image id is made from a line. `"url-crc32"` (the release's downloader names every image
            file `zlib.crc32(url) & 0xffffffff` in decimal, so its features are keyed that way) or `"index"` (the
            0-based line number, for features extracted in file order).
    """
    if id_rule not in CC_ID_RULES:
        raise ValueError(f"id_rule must be one of {CC_ID_RULES}, got {id_rule!r}")

    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for index, fields in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if len(fields) != 2:
                raise ValueError(
                    f"{path} line {index + 1}: expected 2 tab-separated fields caption, url; got {fields}"
                )
            caption, url = fields
            image_id = str(zlib.crc32(url.encode("utf-8")) & 0xFFFFFFFF) if id_rule == "url-crc32" else str(index)
            rows.append({"image_id": image_id, "caption": caption})
    return rows


# ----------------------------------------------------------------------------------------------------------------
# VQA and GQA


def read_vqa(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """VQAv2: `v2_OpenEnded_mscoco_{split}_questions.json` and, except for test, `v2_mscoco_{split}_annotations.json`.

    The questions file is `{"questions": [{"question_id": int, "image_id": int, "question": str}, ...]}`; the
    annotations file is `{"annotations": [{"question_id": int, "answers": [{"answer": str, ...}, ...], ...}]}`.
    `path` is the folder holding both (split `train`/`val`/`test`/`test-dev` or the file names' `train2014`,
    `val2014`, `test2015`, `test-dev2015`) or the questions file, whose annotations are looked up beside it. Answers
    are kept raw (normalised later by `AnswerVocabulary`), in the annotators' order; a question without annotations
    gets an empty list.
    """
    if path.is_dir():
        name = _split_name(split, _VQA_SPLITS, "vqa")
        questions_path = path / f"v2_OpenEnded_mscoco_{name}_questions.json"
        annotations_path = path / f"v2_mscoco_{name}_annotations.json"
    else:
        questions_path = path
        annotations_path = path.with_name(
            path.name.replace("OpenEnded_mscoco_", "mscoco_").replace("questions", "annotations")
        )

    questions = _json_list(questions_path, "questions")
    answers = _vqa_answers(annotations_path) if annotations_path.exists() else {}
    if not answers:
        logger.info("No VQA annotations at %s: rows get no answers", annotations_path)

    return [
        {
            "question_id": str(_field(question, "question_id", "vqa", questions_path)),
            "image_id": str(_field(question, "image_id", "vqa", questions_path)),
            "question": str(_field(question, "question", "vqa", questions_path)),
            "answers": answers.get(str(question["question_id"]), []),
        }
        for question in questions
    ]


def _vqa_answers(path: Path) -> dict[str, list[str]]:
    """Question id -> the raw human answers, from a VQAv2 annotations file."""
    answers = {}
    for annotation in _json_list(path, "annotations"):
        given = _field(annotation, "answers", "vqa", path)
        answers[str(_field(annotation, "question_id", "vqa", path))] = [str(entry["answer"]) for entry in given]
    return answers


def read_gqa(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """GQA: `{split}_balanced_questions.json`, one JSON object `{question_id: {"imageId", "question", "answer"}}`.

    `path` is the file or the folder holding it (split `train`, `val`, `testdev`, `test`, `challenge`,
    `submission`). The answer becomes a one-element `answers` list; test files without answers give an empty list.
    """
    if path.is_dir():
        name = _split_name(split, _GQA_SPLITS, "gqa")
        path = _first_existing(path, [f"{name}_balanced_questions.json"], "gqa")

    content = _read_json(path)
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a JSON object {{question_id: question}}, got a {type(content).__name__}")
    return [
        {
            "question_id": str(question_id),
            "image_id": str(_field(entry, "imageId", "gqa", path)),
            "question": str(_field(entry, "question", "gqa", path)),
            "answers": [str(entry["answer"])] if entry.get("answer") is not None else [],
        }
        for question_id, entry in content.items()
    ]


# ----------------------------------------------------------------------------------------------------------------
# NLVR2 and SNLI-VE


def read_nlvr2(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """NLVR2: `{train,dev,test1}.json`, JSON lines `{"identifier", "sentence", "label": "True"|"False", ...}`.

    The identifier is `split-set-pair-sentence` (e.g. `dev-850-0-0`); its two images are `split-set-pair-img0`
    (left) and `split-set-pair-img1` (right), which is how the release names them in its feature files.
    """
    if path.is_dir():
        name = _split_name(split, _EVAL_SPLITS, "nlvr2")
        path = _first_existing(path, [f"{name}.json", f"{name}.jsonl"], "nlvr2")

    rows = []
    for line_number, record in _json_lines(path):
        identifier = str(_field(record, "identifier", "nlvr2", path))
        label = str(_field(record, "label", "nlvr2", path))
        if label not in ("True", "False") or identifier.count("-") < 3:
            raise ValueError(
                f"{path} line {line_number}: label must be 'True' or 'False' and identifier "
                f"'split-set-pair-sentence'; "
                f"got label {label!r}, identifier {identifier!r}"
            )
        pair = identifier.rsplit("-", 1)[0]
        rows.append(
            {
                "identifier": identifier,
                "sentence": str(_field(record, "sentence", "nlvr2", path)),
                "left_image_id": f"{pair}-img0",
                "right_image_id": f"{pair}-img1",
                "label": int(label == "True"),
            }
        )
    return rows


def read_snli_ve(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """SNLI-VE: `snli_ve_{train,dev,test}.jsonl`, JSON lines with `Flickr30K_ID`, `sentence2`, `gold_label`, `pairID`.

    The image id is `Flickr30K_ID` (or, in older copies, `Flikr30kID` without its `.jpg`). Pairs whose gold label
    is `-` (no annotator majority) have no class; they are skipped, as the release trains nothing on them.
    """
    if path.is_dir():
        name = _split_name(split, _EVAL_SPLITS, "snli-ve")
        path = _first_existing(path, [f"snli_ve_{name}.jsonl"], "snli-ve")

    rows, skipped = [], 0
    for line_number, record in _json_lines(path):
        gold = str(_field(record, "gold_label", "snli-ve", path))
        if gold == "-":
            skipped += 1
            continue
        if gold not in SNLI_VE_LABELS:
            raise ValueError(
                f"{path} line {line_number}: gold_label must be one of {[*SNLI_VE_LABELS, '-']}, got {gold!r}"
            )
        rows.append(
            {
                "pair_id": str(_field(record, "pairID", "snli-ve", path)),
                "image_id": _flickr_id(record, path, line_number),
                "hypothesis": str(_field(record, "sentence2", "snli-ve", path)),
                "label": SNLI_VE_LABELS[gold],
            }
        )
    if skipped:
        logger.info("Skipped %d SNLI-VE pairs of %s whose gold label is '-'", skipped, path)
    return rows


def _flickr_id(record: Mapping[str, Any], path: Path, line_number: int) -> str:
    """The Flickr30k image id of an SNLI-VE record, from either spelling of the field."""
    if "Flickr30K_ID" in record:
        return str(record["Flickr30K_ID"])
    if "Flikr30kID" in record:
        return str(record["Flikr30kID"]).rsplit(".", 1)[0]
    raise ValueError(f"{path} line {line_number}: snli-ve record has neither 'Flickr30K_ID' nor 'Flikr30kID'")


# ----------------------------------------------------------------------------------------------------------------
# RefCOCO, RefCOCO+, RefCOCOg


def read_refcoco(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """RefCOCO / RefCOCO+ / RefCOCOg in the refer toolkit's layout: `refs(unc).p` and `instances.json`.

    `path` is the dataset folder (e.g. `refcoco+/`), or a refs file inside it. The folder holds `instances.json`
    (COCO format: `{"annotations": [{"id", "image_id", "bbox": [x, y, w, h], ...}], ...}`) and a
    `refs(<splitBy>).p` (`unc` preferred, then `umd`, then `google`): a pickled list of refs `{"ref_id", "ann_id",
    "image_id", "split", "sentences": [{"raw", ...}]}`. The pickle is read with a loader that only builds builtin
    containers. One row per sentence; the box is the referred annotation's `bbox` turned into x1, y1, x2, y2.
    `split` keeps refs of that split (`train`, `val`, `testA`, `testB`, `test`); as the refer toolkit does, `test`
    keeps every split whose name contains "test".
    """
    if path.is_dir():
        refs_path = _first_existing(path, ["refs(unc).p", "refs(umd).p", "refs(google).p"], "refcoco")
    else:
        refs_path, path = path, path.parent
    refs = _load_builtin_pickle(refs_path)
    if not isinstance(refs, list):
        raise ValueError(f"{refs_path} must hold a pickled list of refs, got a {type(refs).__name__}")
    boxes = _annotation_boxes(_first_existing(path, ["instances.json"], "refcoco"))
    wanted = _REFCOCO_SPLITS.get(split, split)

    rows = []
    for ref in refs:
        ref_split = str(_field(ref, "split", "refcoco", refs_path))
        if wanted is not None and not (ref_split == wanted or (wanted == "test" and "test" in ref_split)):
            continue
        box = boxes.get(_field(ref, "ann_id", "refcoco", refs_path))
        if box is None:
            raise ValueError(
                f"{refs_path}: ref {ref['ref_id']} points at annotation {ref['ann_id']}, absent from instances.json"
            )
        for sentence in _field(ref, "sentences", "refcoco", refs_path):
            rows.append(
                {
                    "ref_id": str(ref["ref_id"]),
                    "image_id": str(ref["image_id"]),
                    "expression": sentence["raw"],
                    "box": box,
                }
            )
    return rows


_REFCOCO_SPLITS = {"validation": "val", "valid": "val"}


def _annotation_boxes(path: Path) -> dict[int, list[float]]:
    """Annotation id -> pixel box x1, y1, x2, y2, from COCO's `bbox` [x, y, w, h]."""
    boxes = {}
    for annotation in _json_list(path, "annotations"):
        x, y, w, h = (float(value) for value in _field(annotation, "bbox", "refcoco", path))
        boxes[_field(annotation, "id", "refcoco", path)] = [x, y, x + w, y + h]
    return boxes


class _BuiltinUnpickler(pickle.Unpickler):
    """Builds only plain containers and scalars, so a pickle from the internet cannot run code."""

    ALLOWED = frozenset(
        {"set", "frozenset", "dict", "list", "tuple", "str", "bytes", "int", "float", "bool", "complex"}
    )

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 pickles name Python 2's module, which `super().find_class` maps to `builtins`.
        if module in ("builtins", "__builtin__") and name in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only builtin containers are allowed")


def _load_builtin_pickle(path: Path) -> Any:
    """Unpickle a file with `_BuiltinUnpickler` (Python 2 pickles included: their strings are read as UTF-8)."""
    with open(path, "rb") as handle:
        try:
            return _BuiltinUnpickler(io.BytesIO(handle.read()), encoding="utf-8").load()
        except pickle.UnpicklingError as error:
            raise ValueError(f"{path} is not a pickle of builtin objects: {error}") from error


# ----------------------------------------------------------------------------------------------------------------
# Image-text retrieval


def read_retrieval(path: Path, split: str | None = None) -> list[dict[str, Any]]:
    """Flickr30k / COCO retrieval captions from Karpathy's `dataset_{flickr30k,coco}.json` or the release's JSON lines.

    Karpathy's file is `{"images": [{"filename", "split", "sentences": [{"raw", ...}], "cocoid"?}, ...]}`; the image
    id is `cocoid` when present (COCO), else the file name without its extension (Flickr30k). `split` keeps images
    of that split; `train` also keeps COCO's `restval` images, as the 113k-image training set of the five models
    does (ask for `restval` alone to get only those). The release's `.jsonl`/`.jsonline` files hold one image per
    line, `{"id" or "img_path", "sentences": [str, ...]}`, and are one split each.
    """
    if path.is_dir():
        path = _first_existing(
            path, ["dataset_flickr30k.json", "dataset_coco.json", "dataset_flickr8k.json"], "retrieval"
        )
    if path.suffix in (".jsonl", ".jsonline", ".jsonlines"):
        return [row for _, record in _json_lines(path) for row in _release_retrieval_rows(record, path)]

    wanted = {"train": {"train", "restval"}, "validation": {"val"}}.get(split, {split})
    rows = []
    for image in _json_list(path, "images"):
        if split is not None and _field(image, "split", "retrieval", path) not in wanted:
            continue
        image_id = (
            str(image["cocoid"]) if "cocoid" in image else Path(_field(image, "filename", "retrieval", path)).stem
        )
        rows.extend({"image_id": image_id, "caption": sentence["raw"]} for sentence in image["sentences"])
    return rows


def _release_retrieval_rows(record: Mapping[str, Any], path: Path) -> Iterator[dict[str, Any]]:
    """Rows of one line of the release's retrieval JSON lines (COCO lines carry `id`, Flickr30k lines `img_path`)."""
    if "id" in record:
        image_id = str(record["id"])
    else:
        image_id = Path(str(_field(record, "img_path", "retrieval", path))).stem
    for caption in _field(record, "sentences", "retrieval", path):
        yield {"image_id": image_id, "caption": str(caption)}


_READERS: dict[str, Callable[[Path, str | None], list[dict[str, Any]]]] = {
    "pretraining": read_captions,
    "vqa": read_vqa,
    "gqa": read_gqa,
    "nlvr2": read_nlvr2,
    "snli-ve": read_snli_ve,
    "refcoco": read_refcoco,
    "retrieval": read_retrieval,
}


# ----------------------------------------------------------------------------------------------------------------
# Small file helpers


def _read_json(path: Path) -> Any:
    """A whole JSON file, with the file named when it does not parse."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def _json_list(path: Path, key: str) -> list[Any]:
    """The list under `key` of a JSON object file (VQA's "questions", COCO's "annotations", ...)."""
    if not path.exists():
        raise ValueError(f"annotation file {path} does not exist")
    content = _read_json(path)
    if not isinstance(content, dict) or not isinstance(content.get(key), list):
        raise ValueError(f"{path} must be a JSON object with a list under {key!r}")
    return content[key]


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line of a JSON-lines file."""
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {line_number} is not valid JSON: {error}") from error


def _field(record: Mapping[str, Any], name: str, task: str, path: Path) -> Any:
    """`record[name]`, or a ValueError that names the field, the task and the file."""
    if not isinstance(record, Mapping) or name not in record:
        found = sorted(record) if isinstance(record, Mapping) else type(record).__name__
        raise ValueError(f"{task} record in {path} lacks the field {name!r} (has {found})")
    return record[name]


def _split_name(split: str | None, aliases: Mapping[str, str], task: str) -> str:
    """The file-name form of a split, or a ValueError when a folder was given without one."""
    if split is None:
        raise ValueError(f"split is needed to read {task} annotations from a folder; got None")
    return aliases.get(split, split)


def _first_existing(folder: Path, names: Sequence[str], task: str) -> Path:
    """The first of `names` that exists in `folder`."""
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise ValueError(f"no {task} annotation file in {folder}: looked for {list(names)}")


# ----------------------------------------------------------------------------------------------------------------
# Answers: the official VQA normalisation and the answer vocabulary

# fmt: off
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
# fmt: on
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCTUATION = (
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
)
# The official pattern; its "(?!<=\d)" is a look-ahead that never matches, so every period not followed by a digit
# is removed. Kept as it is, since scores are only comparable with the official processing.
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")


def normalize_answer(answer: str) -> str:
    """An answer processed as the official VQA evaluation processes answers (`vqaEval.py`).

    In order: newlines and tabs become spaces and the ends are stripped; punctuation is removed (next to a space,
    or anywhere when the answer has a digit-comma-digit group) or else replaced by a space; periods not followed
    by a digit are removed; the answer is lower-cased, number words become digits, articles are dropped and
    contractions written without an apostrophe get it back. Used for the answer vocabulary, for the training
    targets and by the VQA accuracy metric, so that all three agree.
    """
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    text = _strip_punctuation(text)
    return _digits_and_articles(text)


def _strip_punctuation(text: str) -> str:
    """The official `processPunctuation`."""
    has_digit_comma = _COMMA_STRIP.search(text) is not None
    output = text
    for mark in _PUNCTUATION:
        if f"{mark} " in text or f" {mark}" in text or has_digit_comma:
            output = output.replace(mark, "")
        else:
            output = output.replace(mark, " ")
    return _PERIOD_STRIP.sub("", output)


def _digits_and_articles(text: str) -> str:
    """The official `processDigitArticle`."""
    words = [_NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES]
    return " ".join(words)


def answer_score(count: int) -> float:
    """The release's soft score of an answer given by `count` annotators: min(1, 0.3 n), i.e. 0, .3, .6, .9, 1."""
    return (0.0, 0.3, 0.6, 0.9)[count] if count < 4 else 1.0


class AnswerVocabulary:
    """The answer classes of a VQA-style task and the scores that make its training targets.

    Answers are stored normalised (`normalize_answer`) unless the vocabulary is built with `normalize=False`
    (GQA's answers are used as written). The class index of an answer is its position in `answers`.

    Args:
        answers: the class names, in class order, without duplicates.
        normalize: whether answers given to this vocabulary are normalised the VQA way before lookup.
    """

    FORMAT = "vl_zoo-answer-vocabulary"

    def __init__(self, answers: Sequence[str], normalize: bool = True) -> None:
        self.answers = [str(answer) for answer in answers]
        self.normalize = normalize
        self._index = {answer: index for index, answer in enumerate(self.answers)}
        if len(self._index) != len(self.answers):
            repeated = sorted(answer for answer, count in Counter(self.answers).items() if count > 1)
            raise ValueError(f"answers must be distinct; got repeats {repeated[:10]}")

    @classmethod
    def from_rows(
        cls, rows: Iterable[Mapping[str, Any]], min_count: int = 9, normalize: bool = True
    ) -> AnswerVocabulary:
        """Build the vocabulary of the answers that are the majority answer of at least `min_count` questions.

        This is the release's rule (from the bottom-up-attention VQA preprocessing it uses): each question votes
        for its most frequent normalised answer (VQA's "multiple choice answer"; ties go to the answer given
        first), and answers with at least 9 votes over train + val are kept, 3,129 for VQAv2. Classes are sorted
        by votes, most first, then alphabetically.

        Args:
            rows: task rows with an `answers` list (VQA or GQA rows); rows without answers are skipped.
            min_count: the fewest questions an answer must win to be kept.
            normalize: normalise answers the VQA way (turn off for GQA).
        """
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        votes = Counter()
        for row in rows:
            if "answers" not in row:
                raise ValueError(
                    f"row lacks the field 'answers' needed to build an answer vocabulary (has {sorted(row)})"
                )
            given = [normalize_answer(answer) if normalize else answer for answer in row["answers"]]
            if given:
                votes[Counter(given).most_common(1)[0][0]] += 1

        kept = sorted((answer for answer, count in votes.items() if count >= min_count), key=lambda a: (-votes[a], a))
        logger.info("Answer vocabulary: %d of %d answers won at least %d questions", len(kept), len(votes), min_count)
        return cls(kept, normalize=normalize)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: str) -> bool:
        return self.index(answer) is not None

    def index(self, answer: str) -> int | None:
        """The class index of an answer (normalised first when the vocabulary normalises), or None."""
        return self._index.get(normalize_answer(answer) if self.normalize else answer)

    def soft_scores(self, answers: Sequence[str]) -> dict[int, float]:
        """Class index -> soft score of the human answers of one question, for answers in the vocabulary.

        An answer given by n annotators scores min(1, 0.3 n) (0.3, 0.6, 0.9, 1.0), the release's VQA targets.
        """
        counts = Counter(self.index(answer) for answer in answers)
        return {index: answer_score(count) for index, count in counts.items() if index is not None}

    def exact_scores(self, answers: Sequence[str]) -> dict[int, float]:
        """Class index -> 1.0 for every given answer in the vocabulary: GQA's targets (one answer per question)."""
        return {index: 1.0 for index in (self.index(answer) for answer in answers) if index is not None}

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON: `{"format", "normalize", "answers": [...]}`."""
        content = {"format": self.FORMAT, "normalize": self.normalize, "answers": self.answers}
        Path(path).write_text(json.dumps(content, ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> AnswerVocabulary:
        """Read a vocabulary written by `save`, or a plain JSON list of answers in class order (normalised)."""
        content = _read_json(Path(path))
        if isinstance(content, list):
            return cls(content)
        if not isinstance(content, dict) or content.get("format") != cls.FORMAT or "answers" not in content:
            raise ValueError(f"{path} must hold a JSON list of answers or an object with format {cls.FORMAT!r}")
        return cls(content["answers"], normalize=bool(content.get("normalize", True)))
