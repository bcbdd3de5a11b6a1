"""`builtin:synthetic`: small grounded vision-and-language data, fully determined by a seed.

Each image is a scene of 3-5 objects (2-8 on request) in a 640 x 480 frame. An object has a colour, a shape and a
box; inside one scene no two objects share a colour and no two share a shape, so every colour word and every shape
word names exactly one object. That is what makes the data learnable by a tiny model (a word points at one
region) while keeping it honest: colours and shapes are drawn uniformly and independently of everything a text
says, so a masked colour or shape word can only be recovered by finding the object in the image.

A region's feature is the sum of a seeded colour embedding and a seeded shape embedding plus Gaussian noise, and
the "detector" reports a noisy class distribution over 1601 classes (background 0, class 1 + shape *
len(COLOURS) + colour). Captions, questions, statements, hypotheses and referring expressions are built from
word templates filled with the scene's objects; their answers and labels are read off the scene. The word-level
vocabulary of every template is small (66 words and 5 special tokens), so its BERT tokenizer is built in memory.

`build_synthetic` writes the whole set in the layout that imported data has (a feature table, one `datasets`
table per task and split, the tokenizer), so the training scripts read `builtin:synthetic` like real data.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from transformers import BertTokenizer

from .features import check_output_dir, write_feature_table
from .tasks import SNLI_VE_LABELS, TASK_FEATURES, TASKS

logger = logging.getLogger(__name__)

COLOURS = ("red", "blue", "green", "yellow", "purple", "pink", "white", "black")  # no vowel after "a"
SHAPES = ("cube", "ball", "ring", "cone", "star", "disk", "cylinder", "pyramid")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")
RELATIONS = ("left of", "right of", "above", "below")
OPPOSITE_RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
PROPERTIES = ("heavy", "light", "old", "new", "wooden", "metal")  # not visible in the features: neutral facts
EXTREMES = ("leftmost", "rightmost", "highest", "lowest")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

IMAGE_WIDTH, IMAGE_HEIGHT = 640, 480
MIN_OBJECTS, MAX_OBJECTS = 3, 5
# Bumped whenever the default data change, so that `builtin:synthetic` caches of an older default are not reused.
DATA_VERSION = 2
NUM_DETECTOR_CLASSES = 1601
MIN_SIDE, MAX_SIDE = 60, 140  # object box sides in pixels
MAX_OVERLAP = 0.1  # largest intersection between two objects, as a share of the smaller box
PLACEMENT_TRIES = 64  # candidate boxes drawn per object before the least overlapping one is taken

ROWS_PER_IMAGE = {"pretraining": 2, "vqa": 3, "gqa": 3, "nlvr2": 1, "snli-ve": 3, "refcoco": 2, "retrieval": 5}
FEATURE_COLUMNS = ("cls_prob", "objects_id", "objects_conf")  # optional feature-table columns written here

# Seed streams: every random draw comes from numpy.random.default_rng([seed, stream, ...]).
_SCENE_STREAM, _FEATURE_STREAM, _TASK_STREAM, _SPLIT_STREAM = 0, 1, 2, 3

# Templates. Slots: colour1/shape1 (an object), colour2/shape2 (a second object), relation (of the first object
# to the second), count (number of objects, in words), side, other, property, extreme.
CAPTION_TEMPLATES = {
    "exists": "there is a {colour1} {shape1}",
    "relation": "a {colour1} {shape1} {relation} a {colour2} {shape2}",
    "relation_is": "the {colour1} {shape1} is {relation} the {colour2} {shape2}",
    "pair": "the image shows a {colour1} {shape1} and a {colour2} {shape2}",
    "count": "there are {count} objects and one is a {colour1} {shape1}",
}
VQA_TEMPLATES = {
    "colour": "what color is the {shape1}?",
    "shape": "what shape is the {colour1} object?",
    "count": "how many objects are there?",
    "exists": "is there a {colour1} {shape1}?",
}
VQA_KIND_WEIGHTS = {"colour": 0.3, "shape": 0.3, "count": 0.15, "exists": 0.25}
GQA_TEMPLATES = {
    "colour": "what is the color of the {shape1}?",
    "shape": "what is the shape of the {colour1} object?",
    "exists": "is there a {colour1} {shape1} in the image?",
    "verify_relation": "is the {colour1} {shape1} {relation} the {colour2} {shape2}?",
    "choose_side": "is the {shape1} to the left or to the right of the {shape2}?",
}
NLVR2_TEMPLATES = {
    "contains": "the {side} image contains a {colour1} {shape1}",
    "both_colour": "both images contain a {colour1} object",
    "both_shape": "both images contain a {shape1}",
    "more": "the {side} image has more objects than the {other} image",
}
SNLI_VE_TEMPLATES = {
    "exists": "there is a {colour1} {shape1}",
    "colour_of": "the {shape1} is {colour1}",
    "count": "there are {count} objects",
    "property": "the {colour1} {shape1} is {property}",
}
REFCOCO_TEMPLATES = {
    "full": "the {colour1} {shape1}",
    "colour": "the {colour1} object",
    "shape": "the {shape1}",
    "relation": "the {shape1} {relation} the {colour2} {shape2}",
    "extreme": "the {extreme} object",
}
ALL_TEMPLATES = (
    CAPTION_TEMPLATES,
    VQA_TEMPLATES,
    GQA_TEMPLATES,
    NLVR2_TEMPLATES,
    SNLI_VE_TEMPLATES,
    REFCOCO_TEMPLATES,
)


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene: indices into `COLOURS` and `SHAPES`, and a pixel box x1, y1, x2, y2."""

    colour: int
    shape: int
    box: tuple[float, float, float, float]

    @property
    def colour_name(self) -> str:
        return COLOURS[self.colour]

    @property
    def shape_name(self) -> str:
        return SHAPES[self.shape]

    @property
    def class_index(self) -> int:
        """The object's index in the detector's 1601 classes (0 is background)."""
        return 1 + self.shape * len(COLOURS) + self.colour

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2, (y1 + y2) / 2


@dataclass(frozen=True)
class Scene:
    """A synthetic image: its id, its size and its objects (distinct colours, distinct shapes)."""

    image_id: str
    objects: tuple[SceneObject, ...]
    width: int = IMAGE_WIDTH
    height: int = IMAGE_HEIGHT

    @property
    def classes(self) -> set[tuple[int, int]]:
        """The (colour, shape) pairs present."""
        return {(obj.colour, obj.shape) for obj in self.objects}

    @property
    def colours(self) -> set[int]:
        return {obj.colour for obj in self.objects}

    @property
    def shapes(self) -> set[int]:
        return {obj.shape for obj in self.objects}


def relation(first: SceneObject, second: SceneObject) -> str:
    """Where `first` lies relative to `second`: along the axis on which their centres differ most."""
    (x1, y1), (x2, y2) = first.center, second.center
    if abs(x1 - x2) >= abs(y1 - y2):
        return "left of" if x1 < x2 else "right of"
    return "above" if y1 < y2 else "below"


def extreme_object(scene: Scene, extreme: str) -> SceneObject:
    """The object furthest in one direction ("leftmost", "rightmost", "highest", "lowest") by box centre."""
    if extreme not in EXTREMES:
        raise ValueError(f"extreme={extreme!r} is not supported; allowed: {list(EXTREMES)}")
    axis = 0 if extreme in ("leftmost", "rightmost") else 1
    keys = [obj.center[axis] for obj in scene.objects]
    index = int(np.argmin(keys)) if extreme in ("leftmost", "highest") else int(np.argmax(keys))
    return scene.objects[index]


# -------------------------------------------------------------------------------------------------- scenes


def generate_scenes(
    num_images: int, seed: int = 0, *, num_objects: tuple[int, int] = (MIN_OBJECTS, MAX_OBJECTS)
) -> list[Scene]:
    """Draw `num_images` scenes; image ids are the zero-padded indices "000000", "000001", ...

    Colours and shapes are drawn without replacement inside a scene (so each names one object) and uniformly
    over scenes (so none is more likely than another); boxes are placed so that objects barely overlap.

    Args:
        num_images: how many scenes.
        seed: seeds every draw; the same arguments give the same scenes.
        num_objects: the least and the most objects in a scene (both included, 2 to 8), drawn uniformly.
            Fewer objects make grounding easier to discover. The default 3-5 is what lets the tiny preset learn
            matching and masked words within the 5-minute built-in run: on 3-8 scenes, the same 128-wide UNITER
            matched 0.83 of pairs after 2,500 steps against 0.85 on 3-5, and recovered 0.49 of masked colour and
            shape words against 0.79. With 3-8 objects, noting which colours and shapes are present at all can
            tell only 60% of mismatched captions apart (85% with 3-5); the rest needs binding.
    """
    _check_count("num_images", num_images, minimum=1)
    low, high = _check_num_objects(num_objects)
    rng = np.random.default_rng([seed, _SCENE_STREAM])
    return [_draw_scene(f"{index:06d}", int(rng.integers(low, high + 1)), rng) for index in range(num_images)]


def _draw_scene(image_id: str, num_objects: int, rng: np.random.Generator) -> Scene:
    """One scene: its objects' colours and shapes, and their boxes."""
    colours = rng.permutation(len(COLOURS))[:num_objects]
    shapes = rng.permutation(len(SHAPES))[:num_objects]
    boxes = _place_boxes(num_objects, rng)
    objects = tuple(
        SceneObject(int(colour), int(shape), tuple(float(value) for value in box))
        for colour, shape, box in zip(colours, shapes, boxes, strict=True)
    )
    return Scene(image_id=image_id, objects=objects)


def _place_boxes(num_objects: int, rng: np.random.Generator) -> np.ndarray:
    """Boxes placed one by one, each the first of its candidates that overlaps the placed ones little enough."""
    candidates = _candidate_boxes(num_objects * PLACEMENT_TRIES, rng).reshape(num_objects, PLACEMENT_TRIES, 4)
    placed = np.zeros((num_objects, 4))
    for index in range(num_objects):
        overlap = _max_overlap(candidates[index], placed[:index])  # (K,)
        fitting = np.flatnonzero(overlap <= MAX_OVERLAP)
        placed[index] = candidates[index, fitting[0] if fitting.size else int(np.argmin(overlap))]
    return placed


def _candidate_boxes(count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random boxes with whole-pixel corners inside the image."""
    sides = rng.integers(MIN_SIDE, MAX_SIDE + 1, size=(count, 2))
    corners = rng.integers(0, np.array([IMAGE_WIDTH, IMAGE_HEIGHT]) - sides + 1)
    return np.concatenate([corners, corners + sides], axis=1).astype(np.float64)


def _max_overlap(candidates: np.ndarray, placed: np.ndarray) -> np.ndarray:
    """For each candidate, the largest intersection with a placed box as a share of the smaller of the two."""
    if len(placed) == 0:
        return np.zeros(len(candidates))
    low = np.maximum(candidates[:, None, :2], placed[None, :, :2])
    high = np.minimum(candidates[:, None, 2:], placed[None, :, 2:])
    intersection = np.clip(high - low, 0, None).prod(axis=-1)  # (K, P)
    smaller = np.minimum(_areas(candidates)[:, None], _areas(placed)[None, :])
    return (intersection / smaller).max(axis=1)


def _areas(boxes: np.ndarray) -> np.ndarray:
    """Areas of x1, y1, x2, y2 boxes."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


# ----------------------------------------------------------------------------------------- region features


def feature_records(
    scenes: Sequence[Scene],
    feature_size: int = 2048,
    seed: int = 0,
    *,
    noise_std: float = 1.0,
) -> Iterator[dict]:
    """Feature-table rows (see `vl_zoo.data.features.write_feature_table`), one per scene, in order.

    A region's feature is colour embedding + shape embedding + `noise_std` * N(0, 1) noise, where both
    embeddings are seeded N(0, 1) vectors: regions of one class cluster, and colour and shape can each be read
    off a linear projection. Rows also carry the detector's class distribution `cls_prob` (float16, 1601
    classes), `objects_id` (its most likely object class, indexed over the 1600 classes without background) and
    `objects_conf` (that class's probability).

    Args:
        scenes: the scenes, e.g. from `generate_scenes`.
        feature_size: width of a region feature.
        seed: seeds the embeddings and the noise; the same scenes and seed give the same rows.
        noise_std: standard deviation of the noise, relative to the embeddings' unit scale.
    """
    _check_feature_arguments(feature_size, noise_std)
    return _feature_rows(scenes, feature_size, seed, noise_std)


def _feature_rows(scenes: Sequence[Scene], feature_size: int, seed: int, noise_std: float) -> Iterator[dict]:
    """The generator behind `feature_records` (kept apart so that bad arguments fail at the call)."""
    rng = np.random.default_rng([seed, _FEATURE_STREAM])
    colour_embeddings = rng.standard_normal((len(COLOURS), feature_size), dtype=np.float32)
    shape_embeddings = rng.standard_normal((len(SHAPES), feature_size), dtype=np.float32)
    for scene in scenes:
        yield _feature_row(scene, colour_embeddings, shape_embeddings, noise_std, rng)


def _feature_row(
    scene: Scene,
    colour_embeddings: np.ndarray,
    shape_embeddings: np.ndarray,
    noise_std: float,
    rng: np.random.Generator,
) -> dict:
    """One scene's row: features, boxes, image size and the detector's outputs."""
    colours = np.array([obj.colour for obj in scene.objects])
    shapes = np.array([obj.shape for obj in scene.objects])
    noise = rng.standard_normal((len(colours), colour_embeddings.shape[1]), dtype=np.float32)
    features = colour_embeddings[colours] + shape_embeddings[shapes] + noise_std * noise  # (R, F)

    cls_prob = _detector_distribution(colours, shapes, rng)  # (R, 1601)
    objects_id = cls_prob[:, 1:].argmax(axis=1)
    return {
        "image_id": scene.image_id,
        "features": features.astype(np.float16),
        "boxes": np.array([obj.box for obj in scene.objects], dtype=np.float32),
        "image_width": scene.width,
        "image_height": scene.height,
        "cls_prob": cls_prob.astype(np.float16),
        "objects_id": objects_id.astype(np.int32),
        "objects_conf": cls_prob[np.arange(len(colours)), objects_id + 1].astype(np.float32),
    }


def _detector_distribution(colours: np.ndarray, shapes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noisy detector's class distribution per region, like bottom-up attention's `cls_prob`.

    The true class gets 0.5-0.9 of the mass; three quarters of the rest goes to the classes a detector confuses
    it with (same shape in another colour, same colour in another shape), the last quarter to every class at
    random, background included.
    """
    num_regions, num_colours, num_shapes = len(colours), len(COLOURS), len(SHAPES)
    rows = np.arange(num_regions)[:, None]
    true_class = 1 + shapes * num_colours + colours  # (R,)

    # the confusable classes, weighted at random; the true class appears in both sets and gets no weight there
    same_shape = 1 + shapes[:, None] * num_colours + np.arange(num_colours)[None, :]  # (R, C)
    same_colour = 1 + np.arange(num_shapes)[None, :] * num_colours + colours[:, None]  # (R, S)
    confusable = np.concatenate([same_shape, same_colour], axis=1)
    weights = rng.exponential(size=confusable.shape) * (confusable != true_class[:, None])
    confusion = np.zeros((num_regions, NUM_DETECTOR_CLASSES))
    confusion[rows, confusable] = weights / weights.sum(axis=1, keepdims=True)

    spread = rng.exponential(size=(num_regions, NUM_DETECTOR_CLASSES))
    spread /= spread.sum(axis=1, keepdims=True)
    confidence = rng.uniform(0.5, 0.9, size=num_regions)
    probs = (1 - confidence)[:, None] * (0.75 * confusion + 0.25 * spread)
    probs[np.arange(num_regions), true_class] += confidence
    return probs


# ----------------------------------------------------------------------------------- texts: shared helpers


def _slots(obj: SceneObject | tuple[int, int], number: int = 1) -> dict[str, str]:
    """Template slots `colour<number>` and `shape<number>` for an object or a (colour, shape) class."""
    colour, shape = (obj.colour, obj.shape) if isinstance(obj, SceneObject) else obj
    return {f"colour{number}": COLOURS[colour], f"shape{number}": SHAPES[shape]}


def _pair_slots(first: SceneObject, second: SceneObject) -> dict[str, str]:
    """Slots of two objects and the relation of the first to the second."""
    return {**_slots(first, 1), **_slots(second, 2), "relation": relation(first, second)}


def _pick(scene: Scene, rng: np.random.Generator, count: int = 1) -> list[SceneObject]:
    """`count` distinct objects of the scene, uniformly."""
    indices = rng.choice(len(scene.objects), size=count, replace=False)
    return [scene.objects[int(index)] for index in indices]


def _choice(options: Sequence, rng: np.random.Generator):
    """One element of `options`, uniformly."""
    return options[int(rng.integers(len(options)))]


def _absent_class(scene: Scene, rng: np.random.Generator) -> tuple[int, int]:
    """A (colour, shape) class the scene does not have.

    Half the time both the colour and the shape are in the scene, on different objects, so that telling the
    class is absent needs the colour and the shape bound to one region, not just a look for either word.
    """
    recombine = rng.random() < 0.5
    colours, shapes = sorted(scene.colours), sorted(scene.shapes)
    while True:
        if recombine:
            candidate = (_choice(colours, rng), _choice(shapes, rng))
        else:
            candidate = (int(rng.integers(len(COLOURS))), int(rng.integers(len(SHAPES))))
        if candidate not in scene.classes:
            return candidate


def _weighted_kind(weights: dict[str, float], rng: np.random.Generator) -> str:
    """A key of `weights`, drawn with those probabilities."""
    kinds = list(weights)
    probabilities = np.array([weights[kind] for kind in kinds])
    return kinds[int(rng.choice(len(kinds), p=probabilities / probabilities.sum()))]


# -------------------------------------------------------------------- captions (pretraining and retrieval)


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption of one or two of the scene's objects, in one of `CAPTION_TEMPLATES` chosen uniformly."""
    kind = _choice(list(CAPTION_TEMPLATES), rng)
    first, second = _pick(scene, rng, 2)
    slots = {**_pair_slots(first, second), "count": NUMBER_WORDS[len(scene.objects)]}
    return CAPTION_TEMPLATES[kind].format(**slots)


def _pretraining_rows(scenes: Sequence[Scene], per_image: int, rng: np.random.Generator) -> list[dict]:
    """`per_image` captions per image, drawn independently (a repeat is possible, as in real caption sets)."""
    return [{"image_id": scene.image_id, "caption": caption(scene, rng)} for scene in scenes for _ in range(per_image)]


def _retrieval_rows(scenes: Sequence[Scene], per_image: int, rng: np.random.Generator) -> list[dict]:
    """`per_image` distinct captions per image (fewer only if a scene cannot yield that many)."""
    rows = []
    for scene in scenes:
        captions: list[str] = []
        for _ in range(20 * per_image):
            text = caption(scene, rng)
            if text not in captions:
                captions.append(text)
            if len(captions) == per_image:
                break
        rows.extend({"image_id": scene.image_id, "caption": text} for text in captions)
    return rows


# --------------------------------------------------------------------------------- questions (VQA and GQA)


def _vqa_question(kind: str, scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """A VQA question of one kind and its answer, read off the scene (counts as digits, as VQA normalises)."""
    template = VQA_TEMPLATES[kind]
    if kind == "count":
        return template, str(len(scene.objects))
    if kind == "exists":
        return _existence_question(template, scene, rng)
    (obj,) = _pick(scene, rng)
    return template.format(**_slots(obj)), obj.colour_name if kind == "colour" else obj.shape_name


def _existence_question(template: str, scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """'is there a <colour> <shape>?': yes for an object of the scene, no for an absent class, half each."""
    if rng.random() < 0.5:
        return template.format(**_slots(_pick(scene, rng)[0])), "yes"
    return template.format(**_slots(_absent_class(scene, rng))), "no"


def _count_range(scenes: Sequence[Scene]) -> range:
    """The object counts from the smallest to the largest scene of the list."""
    counts = [len(scene.objects) for scene in scenes]
    return range(min(counts), max(counts) + 1)


def _answer_choices(scenes: Sequence[Scene]) -> dict[str, tuple[str, ...]]:
    """The answers each question kind can have (annotators' mistakes are drawn from these)."""
    counts = tuple(str(count) for count in _count_range(scenes))
    return {"colour": COLOURS, "shape": SHAPES, "count": counts, "exists": ("yes", "no")}


def _annotator_answers(answer: str, choices: Sequence[str], rng: np.random.Generator) -> list[str]:
    """Ten human answers that mostly agree: each errs with probability 0.1 (to another choice), at most three."""
    answers = [answer] * 10
    wrong = [choice for choice in choices if choice != answer]
    num_wrong = min(int(rng.binomial(10, 0.1)), 3) if wrong else 0
    for position in rng.choice(10, size=num_wrong, replace=False):
        answers[int(position)] = _choice(wrong, rng)
    return answers


def _vqa_rows(scenes: Sequence[Scene], per_image: int, rng: np.random.Generator) -> list[dict]:
    """Colour, shape, count and yes/no questions (`VQA_KIND_WEIGHTS`), ten answers each."""
    rows, choices = [], _answer_choices(scenes)
    for scene in scenes:
        for index in range(per_image):
            kind = _weighted_kind(VQA_KIND_WEIGHTS, rng)
            question, answer = _vqa_question(kind, scene, rng)
            rows.append(
                {
                    "question_id": f"{scene.image_id}{index:03d}",
                    "image_id": scene.image_id,
                    "question": question,
                    "answers": _annotator_answers(answer, choices[kind], rng),
                }
            )
    return rows


def _gqa_question(kind: str, scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """A GQA-style question of one kind and its single answer."""
    template = GQA_TEMPLATES[kind]
    if kind == "exists":
        return _existence_question(template, scene, rng)
    if kind in ("colour", "shape"):
        (obj,) = _pick(scene, rng)
        return template.format(**_slots(obj)), obj.colour_name if kind == "colour" else obj.shape_name
    first, second = _pick(scene, rng, 2)
    slots = _pair_slots(first, second)
    if kind == "choose_side":
        return template.format(**slots), "left" if first.center[0] < second.center[0] else "right"
    if rng.random() < 0.5:
        return template.format(**slots), "yes"
    return template.format(**{**slots, "relation": OPPOSITE_RELATIONS[slots["relation"]]}), "no"


def _gqa_rows(scenes: Sequence[Scene], per_image: int, rng: np.random.Generator) -> list[dict]:
    """Compositional questions (attributes, existence, relations), kinds drawn uniformly, one answer each."""
    rows = []
    for scene in scenes:
        for index in range(per_image):
            question, answer = _gqa_question(_choice(list(GQA_TEMPLATES), rng), scene, rng)
            rows.append(
                {
                    "question_id": f"{scene.image_id}{index:03d}",
                    "image_id": scene.image_id,
                    "question": question,
                    "answers": [answer],
                }
            )
    return rows


# -------------------------------------------------------------------- statements about image pairs (NLVR2)


def _nlvr2_contains(left: Scene, right: Scene, target: bool, rng: np.random.Generator) -> str:
    """'the <side> image contains a <class>'; a false one names, when it can, a class of the other image."""
    side = _choice(("left", "right"), rng)
    scene, other = (left, right) if side == "left" else (right, left)
    if target:
        named: SceneObject | tuple[int, int] = _pick(scene, rng)[0]
    else:
        elsewhere = sorted(other.classes - scene.classes)
        named = _choice(elsewhere, rng) if elsewhere else _absent_class(scene, rng)
    return NLVR2_TEMPLATES["contains"].format(side=side, **_slots(named))


def _nlvr2_both(left: Scene, right: Scene, target: bool, rng: np.random.Generator, kind: str) -> str | None:
    """'both images contain a <colour> object' / 'a <shape>'; a false one names what only one image has."""
    attribute = "colours" if kind == "both_colour" else "shapes"
    first, second = getattr(left, attribute), getattr(right, attribute)
    candidates = sorted(first & second) if target else sorted(first ^ second)
    if not candidates:
        return None
    value = _choice(candidates, rng)
    slot = {"colour1": COLOURS[value]} if kind == "both_colour" else {"shape1": SHAPES[value]}
    return NLVR2_TEMPLATES[kind].format(**slot)


def _nlvr2_more(left: Scene, right: Scene, target: bool, rng: np.random.Generator) -> str | None:
    """'the <side> image has more objects than the <other> image'; no true one when the counts are equal."""
    difference = len(left.objects) - len(right.objects)
    if difference == 0 and target:
        return None
    if difference == 0:
        more, fewer = ("left", "right") if rng.random() < 0.5 else ("right", "left")
    else:
        more, fewer = ("left", "right") if difference > 0 else ("right", "left")
    side, other = (more, fewer) if target else (fewer, more)
    return NLVR2_TEMPLATES["more"].format(side=side, other=other)


def _nlvr2_statement(left: Scene, right: Scene, target: bool, rng: np.random.Generator) -> str:
    """A statement with truth value `target` about the pair, from the first kind (in random order) that has one."""
    makers: dict[str, Callable[[], str | None]] = {
        "contains": lambda: _nlvr2_contains(left, right, target, rng),
        "both_colour": lambda: _nlvr2_both(left, right, target, rng, "both_colour"),
        "both_shape": lambda: _nlvr2_both(left, right, target, rng, "both_shape"),
        "more": lambda: _nlvr2_more(left, right, target, rng),
    }
    for kind in rng.permutation(list(makers)):
        statement = makers[str(kind)]()
        if statement is not None:
            return statement
    raise AssertionError("'contains' always yields a statement")


def _nlvr2_rows(scenes: Sequence[Scene], per_image: int, rng: np.random.Generator) -> list[dict]:
    """Each image on the left of `per_image` pairs, with another image of the same list on the right.

    Labels are balanced (true or false, half each). Identifiers follow NLVR2's `split-set-pair-sentence`, with
    "synthetic" for the split and the left image's id for the set.
    """
    rows = []
    for position, left in enumerate(scenes):
        for index in range(per_image):
            offset = int(rng.integers(1, len(scenes)))
            right = scenes[(position + offset) % len(scenes)]
            target = bool(rng.random() < 0.5)
            rows.append(
                {
                    "identifier": f"synthetic-{left.image_id}-{index}-0",
                    "sentence": _nlvr2_statement(left, right, target, rng),
                    "left_image_id": left.image_id,
                    "right_image_id": right.image_id,
                    "label": int(target),
                }
            )
    return rows


# ------------------------------------------------------------------------------------ hypotheses (SNLI-VE)


def _hypothesis(label: int, scene: Scene, counts: range, rng: np.random.Generator) -> str:
    """A hypothesis with the given SNLI-VE label about the scene.

    Entailed and contradicted hypotheses share their templates (a class that is or is not there, the colour
    of a shape, the number of objects), so only the image tells them apart; a wrong count is another count of
    `counts` (those of the scene list), so no number is a giveaway. Neutral ones state a property the image
    cannot show; like real SNLI-VE's, they are recognisable from the text.
    """
    (obj,) = _pick(scene, rng)
    if label == SNLI_VE_LABELS["neutral"]:
        return SNLI_VE_TEMPLATES["property"].format(**_slots(obj), property=_choice(PROPERTIES, rng))
    true = label == SNLI_VE_LABELS["entailment"]
    wrong_counts = [count for count in counts if count != len(scene.objects)]
    kind = _choice(("exists", "colour_of", "count") if wrong_counts else ("exists", "colour_of"), rng)
    if kind == "exists":
        return SNLI_VE_TEMPLATES["exists"].format(**_slots(obj if true else _absent_class(scene, rng)))
    if kind == "colour_of":
        colour = obj.colour if true else _choice([c for c in range(len(COLOURS)) if c != obj.colour], rng)
        return SNLI_VE_TEMPLATES["colour_of"].format(**_slots((colour, obj.shape)))
    count = len(scene.objects) if true else _choice(wrong_counts, rng)
    return SNLI_VE_TEMPLATES["count"].format(count=NUMBER_WORDS[count])


def _snli_ve_rows(scenes: Sequence[Scene], per_image: int, rng: np.random.Generator) -> list[dict]:
    """Hypotheses whose labels cycle through the three classes from a random start, so they stay balanced."""
    rows, counts = [], _count_range(scenes)
    for scene in scenes:
        start = int(rng.integers(3))
        for index in range(per_image):
            label = (start + index) % 3
            rows.append(
                {
                    "pair_id": f"{scene.image_id}-{index}",
                    "image_id": scene.image_id,
                    "hypothesis": _hypothesis(label, scene, counts, rng),
                    "label": label,
                }
            )
    return rows


# ------------------------------------------------------------------------- referring expressions (RefCOCO)


def _expression(scene: Scene, rng: np.random.Generator) -> tuple[str, SceneObject]:
    """An expression that picks out exactly one object, and that object."""
    kind = _choice(list(REFCOCO_TEMPLATES), rng)
    if kind == "extreme":
        extreme = _choice(EXTREMES, rng)
        return REFCOCO_TEMPLATES[kind].format(extreme=extreme), extreme_object(scene, extreme)
    target, other = _pick(scene, rng, 2)
    return REFCOCO_TEMPLATES[kind].format(**_pair_slots(target, other)), target


def _refcoco_rows(scenes: Sequence[Scene], per_image: int, rng: np.random.Generator) -> list[dict]:
    """`per_image` expressions per image, each with the pixel box of the object it names."""
    rows = []
    for scene in scenes:
        for index in range(per_image):
            expression, target = _expression(scene, rng)
            rows.append(
                {
                    "ref_id": f"{scene.image_id}-{index}",
                    "image_id": scene.image_id,
                    "expression": expression,
                    "box": [float(value) for value in target.box],
                }
            )
    return rows


_ROW_BUILDERS: dict[str, Callable[[Sequence[Scene], int, np.random.Generator], list[dict]]] = {
    "pretraining": _pretraining_rows,
    "vqa": _vqa_rows,
    "gqa": _gqa_rows,
    "nlvr2": _nlvr2_rows,
    "snli-ve": _snli_ve_rows,
    "refcoco": _refcoco_rows,
    "retrieval": _retrieval_rows,
}


def task_rows(task: str, scenes: Sequence[Scene], seed: int = 0, *, rows_per_image: int | None = None) -> list[dict]:
    """The rows of one task (the schemas of `TASK_FEATURES`, those of the task loaders) for the given scenes.

    Args:
        task: one of `TASKS`.
        scenes: the images the rows refer to (NLVR2 pairs images of this list only, so needs two).
        seed: seeds the draws; the same task, scenes and seed give the same rows.
        rows_per_image: rows per image (for NLVR2, pairs with the image on the left); default
            `ROWS_PER_IMAGE[task]`.
    """
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not supported; allowed: {list(TASKS)}")
    minimum = 2 if task == "nlvr2" else 1
    if len(scenes) < minimum:
        raise ValueError(f"scenes must hold at least {minimum} scene(s) for task {task!r}, got {len(scenes)}")
    per_image = ROWS_PER_IMAGE[task] if rows_per_image is None else rows_per_image
    _check_count("rows_per_image", per_image, minimum=1)
    rng = np.random.default_rng([seed, _TASK_STREAM, TASKS.index(task)])
    return _ROW_BUILDERS[task](scenes, per_image, rng)


# ----------------------------------------------------------------------------------------------- tokenizer


def _words(text: str) -> list[str]:
    """A text's words as the tokenizer splits them (a question mark is a word of its own)."""
    return text.replace("?", " ? ").split()


def synthetic_vocabulary() -> list[str]:
    """The special tokens, then every word the templates and their slot values can produce, in a fixed order."""
    texts = [re.sub(r"\{\w+\}", " ", template) for templates in ALL_TEMPLATES for template in templates.values()]
    texts += [*COLOURS, *SHAPES, *NUMBER_WORDS, *RELATIONS, *PROPERTIES, *EXTREMES]
    return list(dict.fromkeys([*SPECIAL_TOKENS, *(word for text in texts for word in _words(text))]))


def synthetic_tokenizer() -> BertTokenizer:
    """A lower-casing BERT tokenizer over `synthetic_vocabulary()`: one id per word, [PAD] = 0."""
    vocab = {word: index for index, word in enumerate(synthetic_vocabulary())}
    return BertTokenizer(vocab=vocab, do_lower_case=True)


# ----------------------------------------------------------------------------------- writing the whole set


def build_synthetic(
    output_dir: str | Path,
    num_images: int = 1000,
    seed: int = 0,
    tasks: Iterable[str] = TASKS,
    *,
    feature_size: int = 2048,
    num_objects: tuple[int, int] = (MIN_OBJECTS, MAX_OBJECTS),
    noise_std: float = 1.0,
    validation_fraction: float = 0.1,
    overwrite: bool = False,
) -> Path:
    """Write `builtin:synthetic` to `output_dir`, atomically (a hidden sibling folder renamed at the end).

    Layout: `features/` (a feature table with `cls_prob`, `objects_id`, `objects_conf`), `<task>/train` and
    `<task>/validation` (`datasets` saved to disk; validation images are never in train), `tokenizer/` and
    `synthetic.json` (the arguments and the word lists).

    Args:
        output_dir: the folder to create; it must be absent or empty unless `overwrite`.
        num_images: images in all, at least 4 (each split needs two images for NLVR2 pairs).
        seed: seeds everything; the same arguments give the same files.
        tasks: the tasks to write, from `TASKS`.
        feature_size: width of a region feature.
        num_objects: the least and the most objects in a scene (see `generate_scenes`).
        noise_std: the region features' noise (see `feature_records`).
        validation_fraction: share of the images held out for validation, in (0, 1).
        overwrite: replace a non-empty `output_dir`.
    """
    output_dir = Path(output_dir)
    tasks = _check_tasks(tasks)
    _check_count("num_images", num_images, minimum=4)
    _check_feature_arguments(feature_size, noise_std)
    check_output_dir(output_dir, overwrite)
    splits = _split(generate_scenes(num_images, seed, num_objects=num_objects), validation_fraction)
    settings = {"num_images": num_images, "seed": seed, "tasks": tasks, "feature_size": feature_size}
    settings |= {"num_objects": list(num_objects), "noise_std": noise_std, "validation_fraction": validation_fraction}

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        records = feature_records([*splits["train"], *splits["validation"]], feature_size, seed, noise_std=noise_std)
        write_feature_table(
            records, staging / "features", feature_size=feature_size, dtype="float16", optional=FEATURE_COLUMNS
        )
        for task in tasks:
            _write_task(staging / task, task, splits, seed)
        synthetic_tokenizer().save_pretrained(staging / "tokenizer")
        _write_manifest(staging, settings, splits)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    if output_dir.exists():
        shutil.rmtree(output_dir)
    staging.rename(output_dir)
    logger.info("wrote builtin:synthetic (%d images, tasks %s) to %s", num_images, ", ".join(tasks), output_dir)
    return output_dir


def _split(scenes: list[Scene], validation_fraction: float) -> dict[str, list[Scene]]:
    """The last share of the scenes for validation (at least two), the rest (at least two) for training."""
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction!r}")
    num_validation = max(2, round(len(scenes) * validation_fraction))
    if len(scenes) - num_validation < 2:
        raise ValueError(
            f"validation_fraction={validation_fraction!r} leaves {len(scenes) - num_validation} of "
            f"{len(scenes)} images for training; at least 2 are needed"
        )
    return {"train": scenes[:-num_validation], "validation": scenes[-num_validation:]}


def _write_task(path: Path, task: str, splits: dict[str, list[Scene]], seed: int) -> None:
    """One task's train and validation tables, each split with its own seed stream."""
    for split_index, (split, scenes) in enumerate(splits.items()):
        split_seed = int(np.random.SeedSequence([seed, _SPLIT_STREAM, split_index]).generate_state(1)[0])
        rows = task_rows(task, scenes, split_seed)
        datasets.Dataset.from_list(rows, features=TASK_FEATURES[task]).save_to_disk(str(path / split))


def _write_manifest(path: Path, settings: dict, splits: dict[str, list[Scene]]) -> None:
    """`synthetic.json`: how the set was made, its splits' sizes and the word lists behind the class ids."""
    manifest = {
        "name": "builtin:synthetic",
        **settings,
        "splits": {split: len(scenes) for split, scenes in splits.items()},
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
        "class_index": "1 + shape * len(colours) + colour (0 is background)",
    }
    (path / "synthetic.json").write_text(json.dumps(manifest, indent=2) + "\n")


# ----------------------------------------------------------------------------------------- argument checks


def _check_count(name: str, value: int, minimum: int) -> None:
    """ValueError unless `value` is an int of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int of at least {minimum}, got {value!r}")


def _check_feature_arguments(feature_size: int, noise_std: float) -> None:
    """ValueError for a feature width below 1 or a negative (or NaN) noise level."""
    _check_count("feature_size", feature_size, minimum=1)
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not noise_std >= 0:
        raise ValueError(f"noise_std must be a non-negative number, got {noise_std!r}")


def _check_num_objects(num_objects: tuple[int, int]) -> tuple[int, int]:
    """The (least, most) objects per scene, validated: texts pick two objects, and colours run out past 8."""
    valid = (
        isinstance(num_objects, (tuple, list))
        and len(num_objects) == 2
        and all(isinstance(value, int) and not isinstance(value, bool) for value in num_objects)
        and 2 <= num_objects[0] <= num_objects[1] <= len(COLOURS)
    )
    if not valid:
        limit = len(COLOURS)
        raise ValueError(
            f"num_objects must be a pair (least, most) with 2 <= least <= most <= {limit}, got {num_objects!r}"
        )
    return int(num_objects[0]), int(num_objects[1])


def _check_tasks(tasks: Iterable[str]) -> list[str]:
    """The tasks as a list, each known and none twice."""
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks or len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must be distinct names from {list(TASKS)} (at least one), got {tasks!r}")
    return tasks
