"""The built-in synthetic data: scenes, region features, every task's rows, the tokenizer and the written set.

Texts are checked against the scenes with parsers written here, independently of the generator's templates:
each parser reads a sentence back into the objects and facts it states, and the facts are recomputed from the
boxes.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer

from vl_zoo.data import synthetic
from vl_zoo.data.features import FeatureStore
from vl_zoo.data.synthetic import (
    Scene,
    build_synthetic,
    feature_records,
    generate_scenes,
    synthetic_tokenizer,
    task_rows,
)

COLOURS = ["red", "blue", "green", "yellow", "purple", "pink", "white", "black"]
SHAPES = ["cube", "ball", "ring", "cone", "star", "disk", "cylinder", "pyramid"]
NUMBERS = {"three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
REL = r"(left of|right of|above|below)"
OBJ = r"(\w+) (\w+)"

# Section 4 of the data spec, written out by hand.
SPEC_COLUMNS = {
    "pretraining": {"image_id": str, "caption": str},
    "vqa": {"question_id": str, "image_id": str, "question": str, "answers": list},
    "gqa": {"question_id": str, "image_id": str, "question": str, "answers": list},
    "nlvr2": {"identifier": str, "sentence": str, "left_image_id": str, "right_image_id": str, "label": int},
    "snli-ve": {"pair_id": str, "image_id": str, "hypothesis": str, "label": int},
    "refcoco": {"ref_id": str, "image_id": str, "expression": str, "box": list},
    "retrieval": {"image_id": str, "caption": str},
}


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return generate_scenes(600, seed=3)


# ------------------------------------------------------------------------------------------------ helpers


def _centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _holds(relation: str, box, other_box) -> bool:
    """The relation as the data promises it: along the axis where the centres differ most (ties horizontal)."""
    (x, y), (ox, oy) = _centre(box), _centre(other_box)
    horizontal = abs(x - ox) >= abs(y - oy)
    return {
        "left of": horizontal and x < ox,
        "right of": horizontal and x > ox,
        "above": not horizontal and y < oy,
        "below": not horizontal and y > oy,
    }[relation]


def _objects(scene: Scene) -> dict[tuple[str, str], tuple]:
    """(colour name, shape name) -> box."""
    return {(COLOURS[obj.colour], SHAPES[obj.shape]): obj.box for obj in scene.objects}


def _by_shape(scene: Scene, shape: str):
    (match,) = [obj for obj in scene.objects if SHAPES[obj.shape] == shape]
    return match


def _by_colour(scene: Scene, colour: str):
    (match,) = [obj for obj in scene.objects if COLOURS[obj.colour] == colour]
    return match


def _parse_caption(text: str) -> tuple[str, tuple]:
    """(form, groups) of a caption; fails the test for a sentence of no known form."""
    forms = {
        "exists": rf"there is a {OBJ}",
        "relation": rf"a {OBJ} {REL} a {OBJ}",
        "relation_is": rf"the {OBJ} is {REL} the {OBJ}",
        "pair": rf"the image shows a {OBJ} and a {OBJ}",
        "count": rf"there are (\w+) objects and one is a {OBJ}",
    }
    for form, pattern in forms.items():
        match = re.fullmatch(pattern, text)
        if match:
            return form, match.groups()
    raise AssertionError(f"caption of no known form: {text!r}")


def _caption_true(text: str, scene: Scene) -> bool:
    """Whether every fact the caption states holds in the scene."""
    form, groups = _parse_caption(text)
    objects = _objects(scene)
    if form == "exists":
        return groups in objects
    if form in ("relation", "relation_is"):
        first, relation, second = groups[:2], groups[2], groups[3:]
        return first in objects and second in objects and _holds(relation, objects[first], objects[second])
    if form == "pair":
        return groups[:2] in objects and groups[2:] in objects
    return NUMBERS.get(groups[0]) == len(scene.objects) and groups[1:] in objects


def _colour_slots(text: str) -> list[tuple[str, int, str, str]]:
    """(form, slot, colour, shape of the same object) for every colour word of a caption."""
    form, groups = _parse_caption(text)
    pairs = {
        "exists": [groups],
        "relation": [groups[:2], groups[3:]],
        "relation_is": [groups[:2], groups[3:]],
        "pair": [groups[:2], groups[2:]],
        "count": [groups[1:]],
    }[form]
    return [(form, slot, colour, shape) for slot, (colour, shape) in enumerate(pairs)]


def _plug_in_accuracy(pairs: list[tuple]) -> float:
    """Accuracy of predicting the value by the most frequent one for its context: (context, value) pairs."""
    by_context: dict = defaultdict(Counter)
    for context, value in pairs:
        by_context[context][value] += 1
    return sum(counts.most_common(1)[0][1] for counts in by_context.values()) / len(pairs)


# ------------------------------------------------------------------------------------------------- scenes


def test_scenes_are_fixed_by_the_seed():
    assert generate_scenes(20, seed=5) == generate_scenes(20, seed=5)
    assert generate_scenes(20, seed=5) != generate_scenes(20, seed=6)
    assert [scene.image_id for scene in generate_scenes(3)] == ["000000", "000001", "000002"]


def test_scene_layout(scenes):
    counts = Counter(len(scene.objects) for scene in scenes)
    assert set(counts) == set(range(3, 6))
    colours = Counter(obj.colour for scene in scenes for obj in scene.objects)
    assert set(colours) == set(range(8)) and max(colours.values()) < 1.2 * min(colours.values())

    for scene in scenes:
        assert (scene.width, scene.height) == (640, 480)
        assert len(scene.colours) == len(scene.shapes) == len(scene.objects)  # every word names one object
        boxes = np.array([obj.box for obj in scene.objects])
        sides = boxes[:, 2:] - boxes[:, :2]
        assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 640).all() and (boxes[:, [1, 3]] <= 480).all()
        assert ((sides >= 60) & (sides <= 140)).all()
        for i in range(len(boxes)):
            for j in range(i):
                low, high = np.maximum(boxes[i, :2], boxes[j, :2]), np.minimum(boxes[i, 2:], boxes[j, 2:])
                overlap = np.clip(high - low, 0, None).prod() / min(sides[i].prod(), sides[j].prod())
                assert overlap <= 0.1 + 1e-9


def test_scene_size_range():
    small = generate_scenes(200, seed=1, num_objects=(2, 3))
    assert {len(scene.objects) for scene in small} == {2, 3}
    assert generate_scenes(5, seed=1, num_objects=(3, 5)) == generate_scenes(5, seed=1)

    # answers and wrong counts follow the scenes' own range: no count outside it gives a hypothesis away
    vqa_counts = {
        a for row in task_rows("vqa", small, seed=0) if row["question"].startswith("how") for a in row["answers"]
    }
    assert vqa_counts == {"2", "3"}
    hypotheses = [row["hypothesis"] for row in task_rows("snli-ve", small, seed=0)]
    assert {text for text in hypotheses if re.fullmatch(r"there are \w+ objects", text)} == {
        "there are two objects",
        "there are three objects",
    }


def test_class_index():
    obj = synthetic.SceneObject(colour=3, shape=2, box=(0.0, 0.0, 10.0, 10.0))
    assert obj.class_index == 1 + 2 * 8 + 3 == 20
    assert (obj.colour_name, obj.shape_name, obj.center) == ("yellow", "ring", (5.0, 5.0))


# ------------------------------------------------------------------------------------------------ features


def test_feature_records_match_the_scenes(scenes):
    records = list(feature_records(scenes[:40], feature_size=32, seed=1))
    assert [record["image_id"] for record in records] == [scene.image_id for scene in scenes[:40]]
    for record, scene in zip(records, scenes[:40], strict=True):
        num_regions = len(scene.objects)
        assert record["features"].shape == (num_regions, 32) and record["features"].dtype == np.float16
        np.testing.assert_array_equal(record["boxes"], np.array([obj.box for obj in scene.objects], np.float32))
        assert (record["image_width"], record["image_height"]) == (640, 480)

        # the detector: a distribution over 1601 classes, most mass on the true class
        cls_prob = record["cls_prob"].astype(np.float64)
        assert cls_prob.shape == (num_regions, 1601) and record["cls_prob"].dtype == np.float16
        np.testing.assert_allclose(cls_prob.sum(axis=1), 1.0, atol=2e-3)
        true_class = [1 + obj.shape * 8 + obj.colour for obj in scene.objects]
        assert cls_prob.argmax(axis=1).tolist() == true_class
        assert record["objects_id"].dtype == np.int32 and record["objects_id"].tolist() == [c - 1 for c in true_class]
        np.testing.assert_allclose(record["objects_conf"], cls_prob[np.arange(num_regions), true_class], rtol=1e-3)
        assert ((record["objects_conf"] > 0.49) & (record["objects_conf"] < 0.91)).all()


def test_features_are_class_embeddings_plus_noise(scenes):
    # without noise a feature is colour + shape embedding: f(a, x) + f(b, y) == f(a, y) + f(b, x)
    clean = {}
    for record, scene in zip(feature_records(scenes[:60], 16, seed=2, noise_std=0.0), scenes[:60], strict=True):
        for obj, feature in zip(scene.objects, record["features"].astype(np.float64), strict=True):
            clean[obj.colour, obj.shape] = feature
    (a, x), (b, y) = (0, 0), (1, 1)
    np.testing.assert_allclose(clean[a, x] + clean[b, y], clean[a, y] + clean[b, x], atol=1e-2)

    # with the default noise, colours stay separable: nearest class mean, fitted on half the regions
    rows = [
        (obj.colour, feature)
        for record, scene in zip(feature_records(scenes, 64, seed=2), scenes, strict=True)
        for obj, feature in zip(scene.objects, record["features"].astype(np.float64), strict=True)
    ]
    labels, features = np.array([r[0] for r in rows]), np.stack([r[1] for r in rows])
    half = len(rows) // 2
    means = np.stack([features[:half][labels[:half] == c].mean(axis=0) for c in range(8)])
    predicted = ((features[half:, None, :] - means[None]) ** 2).sum(-1).argmin(axis=1)
    assert (predicted == labels[half:]).mean() > 0.95


def test_feature_records_are_fixed_by_the_seed(scenes):
    first = next(feature_records(scenes, 8, seed=4))
    np.testing.assert_array_equal(first["features"], next(feature_records(scenes, 8, seed=4))["features"])
    assert not np.array_equal(first["features"], next(feature_records(scenes, 8, seed=5))["features"])


# ------------------------------------------------------------------------------------------------- captions


def test_captions_describe_their_scene(scenes):
    rows = task_rows("pretraining", scenes, seed=0)
    assert len(rows) == 2 * len(scenes)
    by_id = {scene.image_id: scene for scene in scenes}
    forms = Counter()
    for row in rows:
        assert len(row["caption"].split()) <= 12
        assert _caption_true(row["caption"], by_id[row["image_id"]]), row
        forms[_parse_caption(row["caption"])[0]] += 1
    assert set(forms) == {"exists", "relation", "relation_is", "pair", "count"}


def test_colour_and_shape_words_are_not_predictable_from_the_text(scenes):
    slots = [slot for row in task_rows("pretraining", scenes, seed=0) for slot in _colour_slots(row["caption"])]

    # every colour fills every colour slot of every form
    for form, slot in {(form, slot) for form, slot, _, _ in slots}:
        assert {colour for f, s, colour, _ in slots if (f, s) == (form, slot)} == set(COLOURS)

    # the best guess of the colour from its form, slot and shape word (or of the shape from its colour word) is
    # barely better than chance (1/8); the small excess is the plug-in estimate's optimism on ~20 rows a group
    colour_guess = _plug_in_accuracy([((form, slot, shape), colour) for form, slot, colour, shape in slots])
    shape_guess = _plug_in_accuracy([((form, slot, colour), shape) for form, slot, colour, shape in slots])
    assert colour_guess < 0.3 and shape_guess < 0.3


def test_other_images_captions_rarely_fit(scenes):
    # matching negatives (a caption of another image) almost never describe the image by chance
    rows = task_rows("pretraining", scenes, seed=0)
    shifted = [(row["caption"], scenes[(index // 2 + 1) % len(scenes)]) for index, row in enumerate(rows)]
    assert np.mean([_caption_true(text, scene) for text, scene in shifted]) < 0.1


def test_retrieval_captions(scenes):
    rows = task_rows("retrieval", scenes[:100], seed=0)
    by_image = defaultdict(list)
    for row in rows:
        by_image[row["image_id"]].append(row["caption"])
    assert list(by_image) == [scene.image_id for scene in scenes[:100]]
    for scene in scenes[:100]:
        captions = by_image[scene.image_id]
        assert len(captions) == len(set(captions)) == 5
        assert all(_caption_true(text, scene) for text in captions)


# ------------------------------------------------------------------------------------------------ questions


def _vqa_answer(question: str, scene: Scene) -> tuple[str, str]:
    """(kind, answer) of a VQA question, read off the scene."""
    if question == "how many objects are there?":
        return "count", str(len(scene.objects))
    if match := re.fullmatch(r"what color is the (\w+)\?", question):
        return "colour", COLOURS[_by_shape(scene, match[1]).colour]
    if match := re.fullmatch(r"what shape is the (\w+) object\?", question):
        return "shape", SHAPES[_by_colour(scene, match[1]).shape]
    match = re.fullmatch(rf"is there a {OBJ}\?", question)
    assert match, question
    return "exists", "yes" if match.groups() in _objects(scene) else "no"


def test_vqa_answers_agree_with_the_scene(scenes):
    rows = task_rows("vqa", scenes, seed=0)
    by_id = {scene.image_id: scene for scene in scenes}
    kinds, yes_no, majority = Counter(), Counter(), Counter()
    for row in rows:
        kind, answer = _vqa_answer(row["question"], by_id[row["image_id"]])
        top, votes = Counter(row["answers"]).most_common(1)[0]
        assert len(row["answers"]) == 10 and top == answer and votes >= 7, row
        kinds[kind] += 1
        majority[answer] += 1
        if kind == "exists":
            yes_no[answer] += 1
    assert set(kinds) == {"count", "colour", "shape", "exists"}
    assert 0.4 < yes_no["yes"] / sum(yes_no.values()) < 0.6
    assert majority.most_common(1)[0][1] / len(rows) < 0.2  # the majority-answer baseline stays low
    assert len({row["question_id"] for row in rows}) == len(rows)


def _gqa_answer(question: str, scene: Scene) -> str:
    """The answer of a GQA question, read off the scene."""
    if match := re.fullmatch(r"what is the color of the (\w+)\?", question):
        return COLOURS[_by_shape(scene, match[1]).colour]
    if match := re.fullmatch(r"what is the shape of the (\w+) object\?", question):
        return SHAPES[_by_colour(scene, match[1]).shape]
    if match := re.fullmatch(rf"is there a {OBJ} in the image\?", question):
        return "yes" if match.groups() in _objects(scene) else "no"
    if match := re.fullmatch(r"is the (\w+) to the left or to the right of the (\w+)\?", question):
        first, second = _by_shape(scene, match[1]), _by_shape(scene, match[2])
        return "left" if _centre(first.box)[0] < _centre(second.box)[0] else "right"
    match = re.fullmatch(rf"is the {OBJ} {REL} the {OBJ}\?", question)
    assert match, question
    objects = _objects(scene)
    return "yes" if _holds(match[3], objects[match[1], match[2]], objects[match[4], match[5]]) else "no"


def test_gqa_answers_agree_with_the_scene(scenes):
    rows = task_rows("gqa", scenes, seed=0)
    by_id = {scene.image_id: scene for scene in scenes}
    answers = Counter()
    for row in rows:
        assert row["answers"] == [_gqa_answer(row["question"], by_id[row["image_id"]])], row
        answers[row["answers"][0]] += 1
    assert {"yes", "no", "left", "right"} <= set(answers) and set(COLOURS) <= set(answers)


# ------------------------------------------------------------------------------------------- pairs and more


def _nlvr2_truth(sentence: str, left: Scene, right: Scene) -> bool:
    """Whether an NLVR2 statement holds of the pair."""
    sides = {"left": left, "right": right}
    if match := re.fullmatch(rf"the (left|right) image contains a {OBJ}", sentence):
        return match.groups()[1:] in _objects(sides[match[1]])
    if match := re.fullmatch(r"both images contain a (\w+) object", sentence):
        return all(match[1] in {colour for colour, _ in _objects(scene)} for scene in (left, right))
    if match := re.fullmatch(r"both images contain a (\w+)", sentence):
        return all(match[1] in {shape for _, shape in _objects(scene)} for scene in (left, right))
    match = re.fullmatch(r"the (left|right) image has more objects than the (left|right) image", sentence)
    assert match and match[1] != match[2], sentence
    return len(sides[match[1]].objects) > len(sides[match[2]].objects)


def test_nlvr2_labels_are_true_of_the_pair(scenes):
    rows = task_rows("nlvr2", scenes, seed=0)
    by_id = {scene.image_id: scene for scene in scenes}
    for row in rows:
        assert row["left_image_id"] != row["right_image_id"]
        truth = _nlvr2_truth(row["sentence"], by_id[row["left_image_id"]], by_id[row["right_image_id"]])
        assert row["label"] == int(truth), row
    assert 0.4 < np.mean([row["label"] for row in rows]) < 0.6
    assert len({row["identifier"] for row in rows}) == len(rows)
    assert rows[0]["identifier"] == f"synthetic-{scenes[0].image_id}-0-0"


def _snli_ve_label(hypothesis: str, scene: Scene) -> int:
    """0 entailment, 1 neutral, 2 contradiction."""
    objects = _objects(scene)
    if match := re.fullmatch(rf"the {OBJ} is (heavy|light|old|new|wooden|metal)", hypothesis):
        assert match.groups()[:2] in objects  # neutral statements are about an object that is there
        return 1
    if match := re.fullmatch(rf"there is a {OBJ}", hypothesis):
        return 0 if match.groups() in objects else 2
    if match := re.fullmatch(r"the (\w+) is (\w+)", hypothesis):
        return 0 if COLOURS[_by_shape(scene, match[1]).colour] == match[2] else 2
    match = re.fullmatch(r"there are (\w+) objects", hypothesis)
    assert match, hypothesis
    return 0 if NUMBERS[match[1]] == len(scene.objects) else 2


def test_snli_ve_labels_agree_with_the_scene(scenes):
    rows = task_rows("snli-ve", scenes, seed=0)
    by_id = {scene.image_id: scene for scene in scenes}
    for row in rows:
        assert row["label"] == _snli_ve_label(row["hypothesis"], by_id[row["image_id"]]), row
    assert Counter(row["label"] for row in rows) == {0: len(scenes), 1: len(scenes), 2: len(scenes)}


def _referent(expression: str, scene: Scene):
    """The one object an expression names."""
    objects = {(COLOURS[obj.colour], SHAPES[obj.shape]): obj for obj in scene.objects}
    if match := re.fullmatch(r"the (leftmost|rightmost|highest|lowest) object", expression):
        axis, sign = {"leftmost": (0, 1), "rightmost": (0, -1), "highest": (1, 1), "lowest": (1, -1)}[match[1]]
        return min(scene.objects, key=lambda obj: sign * _centre(obj.box)[axis])
    if match := re.fullmatch(rf"the (\w+) {REL} the {OBJ}", expression):
        target = _by_shape(scene, match[1])
        assert _holds(match[2], target.box, objects[match[3], match[4]].box)
        return target
    if match := re.fullmatch(r"the (\w+) object", expression):
        return _by_colour(scene, match[1])
    if match := re.fullmatch(rf"the {OBJ}", expression):
        return objects[match.groups()]
    match = re.fullmatch(r"the (\w+)", expression)
    assert match, expression
    return _by_shape(scene, match[1])


def test_refcoco_boxes_are_the_named_objects(scenes):
    rows = task_rows("refcoco", scenes, seed=0)
    by_id = {scene.image_id: scene for scene in scenes}
    for row in rows:
        assert row["box"] == list(_referent(row["expression"], by_id[row["image_id"]]).box), row
    assert len(rows) == 2 * len(scenes)


# ---------------------------------------------------------------------------------------- schemas and seeds


@pytest.mark.parametrize("task", sorted(SPEC_COLUMNS))
def test_rows_follow_the_spec_schema(task, scenes):
    rows = task_rows(task, scenes[:30], seed=0)
    assert rows
    for row in rows:
        assert list(row) == list(SPEC_COLUMNS[task])
        assert all(isinstance(row[name], kind) for name, kind in SPEC_COLUMNS[task].items()), row
    table = datasets.Dataset.from_list(rows, features=synthetic.TASK_FEATURES[task])
    assert table.column_names == list(SPEC_COLUMNS[task]) and table.to_list() == rows
    if task == "refcoco":
        assert all(len(row["box"]) == 4 and all(isinstance(value, float) for value in row["box"]) for row in rows)
    if task in ("vqa", "gqa"):
        assert {len(row["answers"]) for row in rows} == ({10} if task == "vqa" else {1})


@pytest.mark.parametrize("task", sorted(SPEC_COLUMNS))
def test_rows_are_fixed_by_the_seed(task, scenes):
    assert task_rows(task, scenes[:30], seed=1) == task_rows(task, scenes[:30], seed=1)
    assert task_rows(task, scenes[:30], seed=1) != task_rows(task, scenes[:30], seed=2)
    assert len(task_rows(task, scenes[:30], seed=1, rows_per_image=4)) == 4 * 30


# ------------------------------------------------------------------------------------------------ tokenizer


def _all_texts(scenes: list[Scene]) -> list[str]:
    columns = {"pretraining": "caption", "vqa": "question", "gqa": "question", "nlvr2": "sentence"}
    columns |= {"snli-ve": "hypothesis", "refcoco": "expression", "retrieval": "caption"}
    return [row[column] for task, column in columns.items() for row in task_rows(task, scenes, seed=0)]


def test_tokenizer_round_trip(scenes):
    tokenizer = synthetic_tokenizer()
    vocab = tokenizer.get_vocab()
    assert [vocab[token] for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert len(vocab) == len(set(vocab.values())) < 100
    assert set(COLOURS) | set(SHAPES) <= set(vocab)

    for text in _all_texts(scenes[:80]):
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == 2 and ids[-1] == 3 and 1 not in ids, text  # [CLS] ... [SEP], no [UNK]
        assert len(ids) == len(text.replace("?", " ?").split()) + 2  # one id per word
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer("A RED Cube")["input_ids"] == tokenizer("a red cube")["input_ids"]


# ------------------------------------------------------------------------------------------------ the set


def test_build_synthetic_writes_every_part(tmp_path):
    path = build_synthetic(tmp_path / "synthetic", num_images=12, seed=7, feature_size=16)
    assert path == tmp_path / "synthetic"
    manifest = json.loads((path / "synthetic.json").read_text())
    assert manifest["splits"] == {"train": 10, "validation": 2} and manifest["colours"] == COLOURS
    assert (manifest["seed"], manifest["feature_size"], manifest["num_objects"]) == (7, 16, [3, 5])

    # features: every image, as feature_records makes them
    store = FeatureStore(path / "features")
    scenes = generate_scenes(12, seed=7)
    assert sorted(store.image_ids) == [scene.image_id for scene in scenes] and store.feature_size == 16
    for record in feature_records(scenes, 16, seed=7):
        stored = store[record["image_id"]]
        np.testing.assert_array_equal(stored["features"], record["features"])
        np.testing.assert_array_equal(stored["cls_prob"], record["cls_prob"])
        np.testing.assert_array_equal(stored["objects_id"], record["objects_id"])

    # tasks: both splits, on disjoint images
    for task in SPEC_COLUMNS:
        train, validation = (datasets.load_from_disk(str(path / task / split)) for split in ("train", "validation"))
        assert train.column_names == list(SPEC_COLUMNS[task]) and len(train) and len(validation)
        image_column = "left_image_id" if task == "nlvr2" else "image_id"
        assert set(validation[image_column]) <= {"000010", "000011"}
        assert not set(train[image_column]) & {"000010", "000011"}

    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
    assert tokenizer("a red cube")["input_ids"] == synthetic_tokenizer()("a red cube")["input_ids"]


def test_build_synthetic_is_fixed_by_the_seed(tmp_path):
    first = build_synthetic(tmp_path / "a", num_images=6, seed=1, tasks=["vqa"], feature_size=4)
    second = build_synthetic(tmp_path / "b", num_images=6, seed=1, tasks=["vqa"], feature_size=4)
    for split in ("train", "validation"):
        rows = [datasets.load_from_disk(str(root / "vqa" / split)).to_list() for root in (first, second)]
        assert rows[0] == rows[1]
    assert not (first / "gqa").exists()


def test_build_synthetic_output_folder(tmp_path, monkeypatch):
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        build_synthetic(target, num_images=4, tasks=["pretraining"], feature_size=4)
    build_synthetic(target, num_images=4, tasks=["pretraining"], feature_size=4, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "pretraining" / "train").is_dir()

    # a failure part-way leaves neither the output nor a staging folder
    def broken_writer(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synthetic, "write_feature_table", broken_writer)
    with pytest.raises(OSError, match="disk full"):
        build_synthetic(tmp_path / "failed", num_images=4, tasks=["pretraining"], feature_size=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: generate_scenes(0), "num_images must be an int of at least 1, got 0"),
        (lambda: feature_records([], feature_size=0), "feature_size must be an int of at least 1, got 0"),
        (lambda: feature_records([], noise_std=-1.0), "noise_std must be a non-negative number, got -1.0"),
        (lambda: task_rows("captions", generate_scenes(2)), "task='captions' is not supported; allowed:"),
        (lambda: task_rows("nlvr2", generate_scenes(1)), "at least 2 scene\\(s\\) for task 'nlvr2', got 1"),
        (lambda: task_rows("vqa", generate_scenes(1), rows_per_image=0), "rows_per_image must be an int"),
        (lambda: build_synthetic("unused", tasks=["vqa", "coco"]), "tasks must be distinct names from"),
        (lambda: build_synthetic("unused", num_images=3), "num_images must be an int of at least 4, got 3"),
        (lambda: synthetic.extreme_object(generate_scenes(1)[0], "top"), "extreme='top' is not supported"),
        (lambda: generate_scenes(3, num_objects=(1, 4)), "num_objects must be a pair \\(least, most\\) with 2 <="),
        (lambda: generate_scenes(3, num_objects=(5, 9)), "<= most <= 8, got \\(5, 9\\)"),
        (
            lambda: build_synthetic("unused", noise_std=float("nan")),
            "noise_std must be a non-negative number, got nan",
        ),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_validation_fraction(tmp_path):
    with pytest.raises(ValueError, match="validation_fraction must lie in \\(0, 1\\), got 1.5"):
        build_synthetic(tmp_path / "out", num_images=10, validation_fraction=1.5)
    with pytest.raises(ValueError, match="leaves 1 of 10 images for training"):
        build_synthetic(tmp_path / "out", num_images=10, validation_fraction=0.9)
    assert not (tmp_path / "out").exists()
