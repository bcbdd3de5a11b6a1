"""The task metrics against cases worked out by hand from each task's official definition, and their callers.

Definitions the cases derive from:
- VQA: `vqaEval.py` of the official VQA API (GT-Vision-Lab/VQA, `PythonEvaluationTools/vqaEvaluation`):
  `evaluate()` (whitespace, the all-identical condition, the leave-one-out mean), `processPunctuation`,
  `processDigitArticle`.
- GQA: `eval.py` of GQA, exact match of the predicted answer.
- NLVR2: `nlvr2/eval/metrics.py` of lil-lab/nlvr and its README's identifier format.
- RefCOCO: accuracy at IoU >= 0.5 (MAttNet's `computeIoU(pred, gold) >= 0.5`).
- Retrieval: Recall@K of image retrieval (text queries) and text retrieval (image queries).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import evaluate
import numpy as np
import pytest

from vl_zoo import metrics
from vl_zoo.data.tasks import answer_score, normalize_answer
from vl_zoo.evaluate import MAIN_METRICS, majority_metrics, task_metrics
from vl_zoo.metrics import gold_ranks, nlvr2_sentence, paired_iou, process_answer, vqa_score

REPO = Path(__file__).resolve().parents[1]


def compute(name: str, **inputs) -> dict[str, float]:
    return metrics.load(name).compute(**inputs)


# ---------------------------------------------------------------------------------------------- loading


def test_load_returns_evaluate_metrics_named_as_loaded():
    for name in metrics.METRICS:
        metric = metrics.load(name)
        assert isinstance(metric, evaluate.Metric)
        assert metric.name == name


def test_load_of_an_unknown_name_lists_the_allowed_names():
    with pytest.raises(ValueError, match="unknown metric 'bleu'.*gqa_accuracy.*vqa_accuracy"):
        metrics.load("bleu")


OFFLINE_SCRIPT = """
import json
import socket


def refuse(*args, **kwargs):
    raise OSError("a metric tried to use the network")


socket.socket.connect = refuse
socket.create_connection = refuse

from vl_zoo import metrics

inputs = {
    "vqa_accuracy": {"predictions": ["2"], "references": [["2"] * 3 + ["3"] * 7]},
    "gqa_accuracy": {"predictions": ["yes"], "references": ["yes"]},
    "snli_ve_accuracy": {"predictions": [0, 1], "references": [0, 2]},
    "nlvr2": {"predictions": [1], "references": [1], "identifiers": ["dev-1-0-0"]},
    "refcoco_accuracy": {"predictions": [[0, 0, 2, 2]], "references": [[0, 0, 2, 2]]},
    "retrieval_recall": {"scores": [[1.0, 0.0], [0.0, 1.0]], "text_to_image": [0, 1]},
}
print(json.dumps({name: metrics.load(name).compute(**inputs[name]) for name in metrics.METRICS}))
"""


def test_every_metric_loads_and_computes_offline_in_a_fresh_process(tmp_path):
    """HF_HUB_OFFLINE=1, an empty Hugging Face cache and every socket connection refused: all six still work."""
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["vqa_accuracy"] == {"accuracy": pytest.approx(0.9)}
    assert results["gqa_accuracy"] == {"accuracy": 1.0}
    assert results["snli_ve_accuracy"] == {"accuracy": 0.5}
    assert results["nlvr2"] == {"accuracy": 1.0, "consistency": 1.0}
    assert results["refcoco_accuracy"] == {"accuracy": 1.0}
    assert results["retrieval_recall"] == dict.fromkeys(["ir_r1", "ir_r5", "ir_r10", "tr_r1", "tr_r5", "tr_r10"], 1.0)


# ---------------------------------------------------------------------------------------------- VQA


@pytest.mark.parametrize(
    "matches, expected",
    # Leave-one-out over 10 answers of which `matches` equal the prediction, min(1, k / 3) per subset:
    # 1 -> 9 subsets keep 1 (1/3), 1 keeps 0: 0.3;  2 -> 2 keep 1 (1/3), 8 keep 2 (2/3): 0.6;
    # 3 -> 3 keep 2 (2/3), 7 keep 3 (1): 0.9;  4 -> every subset keeps at least 3: 1.
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (10, 1.0)],
)
def test_vqa_leave_one_out_mean(matches, expected):
    """vqaEval.evaluate: the mean over the 10 leave-one-out subsets of min(1, matches among the other 9 / 3)."""
    answers = ["yes"] * matches + ["no"] * (10 - matches)

    assert vqa_score("yes", answers) == pytest.approx(expected)
    # the same numbers as the release's soft training targets min(1, 0.3 n)
    assert vqa_score("yes", answers) == pytest.approx(answer_score(matches))


@pytest.mark.parametrize(
    "prediction, human, others",
    [
        ("two", "2", "3"),  # processDigitArticle: number words become digits, on the prediction ...
        ("2", "two", "three"),  # ... and on the human answers
        ("a dog", "dog", "cat"),  # articles are dropped
        ("the dog", "dog", "cat"),
        ("dont", "don't", "no"),  # contractions written without the apostrophe get it back
        ("don't", "dont", "no"),
        ("T-Shirt.", "t shirt", "shirt"),  # a mark between letters becomes a space; a final period goes; lower case
        ("1000", "1,000", "100"),  # a digit-comma-digit group: every mark is dropped
        ("yes!", "yes", "no"),
        ("red white", "red, white", "red"),  # a mark next to a space is dropped
    ],
)
def test_vqa_processing_when_the_answers_differ(prediction, human, others):
    """vqaEval.evaluate: with answers that are not all identical, both sides are processed before matching.

    Three of the ten answers match after processing, so the question scores 0.9 (see the leave-one-out test).
    """
    answers = [human] * 3 + [others] * 7

    assert vqa_score(prediction, answers) == pytest.approx(0.9)


def test_vqa_quirk_all_identical_answers_are_not_processed():
    """vqaEval.evaluate: processing happens only when len(set(gtAnswers)) > 1, for the prediction too.

    Ten answers "Two." are left as they are, and so is the prediction: "two." or "2" match none of them and score
    0, "Two." scores 1. Whitespace is still cleaned on both sides. One differing answer turns processing on: every
    answer becomes "2", and so does "two.".
    """
    answers = ["Two."] * 10

    assert vqa_score("two.", answers) == 0.0
    assert vqa_score("2", answers) == 0.0
    assert vqa_score("Two.", answers) == 1.0
    assert vqa_score(" Two.\n", [" Two.\t"] * 10) == 1.0
    assert vqa_score("two.", ["Two."] * 9 + ["2"]) == 1.0


@pytest.mark.parametrize(
    "answer, processed",
    [
        ("yes!", "yes"),  # no space next to "!": it becomes a space, stripped by the word split
        ("red,white", "red white"),
        ("red, white", "red white"),
        ("1,000", "1000"),
        ("(left)", "left"),
        ("3.5", "3.5"),  # a period followed by a digit stays
        ("end.", "end"),
        ("10:30", "10:30"),  # ":" and "'" are not in the official list of marks
        ("it's", "it's"),
        ("Two Dogs", "2 dogs"),
        ("None", "0"),
        ("an apple", "apple"),
        ("Im", "im"),  # words are lower-cased first, so the capitalised keys of the contraction map never match
        ("whats", "what's"),
    ],
)
def test_vqa_answer_processing(answer, processed):
    """processPunctuation then processDigitArticle; normalize_answer (the vocabulary's) agrees on these."""
    assert process_answer(answer) == processed
    assert normalize_answer(answer) == processed


def test_vqa_period_count_quirk():
    """processPunctuation passes re.UNICODE (32) where Pattern.sub takes its count: at most 32 periods go.

    normalize_answer removes all of them; this is the one difference between the two.
    """
    assert process_answer("." * 40) == "." * 8
    assert normalize_answer("." * 40) == ""


def test_vqa_accuracy_is_the_mean_over_questions():
    """vqaEval.setAccuracy: the mean of the per-question accuracies, here as a fraction instead of percent."""
    result = compute(
        "vqa_accuracy",
        predictions=["yes", "yes", "2"],
        references=[["yes"] * 10, ["yes"] + ["no"] * 9, ["two"] * 2 + ["3"] * 8],
    )

    assert result == {"accuracy": pytest.approx((1.0 + 0.3 + 0.6) / 3)}


@pytest.mark.parametrize(
    "predictions, references, message",
    [
        (["yes", "no"], [["yes"] * 10], r"len\(predictions\) = 2, len\(references\) = 1"),
        (["yes"], [[]], r"references\[0\] is an empty list"),
        (["yes"], ["yes"], r"references\[0\] must be the list of human answers"),
        ([1], [["yes"] * 10], r"predictions\[0\] must be a string"),
        ([], [], "got no examples"),
    ],
)
def test_vqa_bad_input(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        compute("vqa_accuracy", predictions=predictions, references=references)


# ---------------------------------------------------------------------------------------------- GQA, SNLI-VE


def test_gqa_exact_match():
    """GQA eval.py: a prediction is right when it equals the answer as written (no normalisation, case counts)."""
    result = compute(
        "gqa_accuracy", predictions=["yes", "Yes", "left", "a cat"], references=["yes"] * 2 + ["left"] * 2
    )

    assert result == {"accuracy": 0.5}


def test_snli_ve_accuracy_with_ids_and_names():
    """Accuracy: the share of pairs whose predicted class is the gold one; ids and names both compared as given."""
    ids = compute("snli_ve_accuracy", predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    names = compute("snli_ve_accuracy", predictions=["neutral", "entailment"], references=["neutral", "contradiction"])

    assert ids == {"accuracy": 0.75}
    assert names == {"accuracy": 0.5}


def test_snli_ve_refuses_ids_against_names():
    with pytest.raises(ValueError, match="predictions are class ids but references are label names"):
        compute("snli_ve_accuracy", predictions=[1], references=["1"])
    with pytest.raises(ValueError, match=r"predictions\[0\] must be a class id \(int\) or a label name"):
        compute("snli_ve_accuracy", predictions=[1.0], references=[1])


# ---------------------------------------------------------------------------------------------- NLVR2

# (identifier, prediction, label). Identifiers are split-set_id-pair_id-sentence_id (NLVR2 README): sentence 0 of
# set 850 is shown with pairs 0-3, sentence 1 with pairs 0-1, sentence 0 of set 851 with pair 0.
NLVR2_EXAMPLES = [
    ("dev-850-0-0", 1, 1),
    ("dev-850-1-0", 1, 0),  # wrong: sentence dev-850-*-0 is not consistent
    ("dev-850-2-0", 0, 0),
    ("dev-850-3-0", 1, 1),
    ("dev-850-0-1", 0, 0),  # sentence dev-850-*-1: both right
    ("dev-850-1-1", 1, 1),
    ("dev-851-0-0", 0, 1),  # wrong: sentence dev-851-*-0 is not consistent
]


def test_nlvr2_accuracy_and_consistency():
    """nlvr2/eval/metrics.py: consistency groups examples whose identifiers differ only in the pair field.

    5 of 7 examples are right; of the 3 sentences only dev-850-*-1 has every example right: 1/3. (Grouping by
    image pair, i.e. dropping the last field, would give 3/5 instead.)
    """
    identifiers, predictions, labels = (list(column) for column in zip(*NLVR2_EXAMPLES, strict=True))

    result = compute("nlvr2", predictions=predictions, references=labels, identifiers=identifiers)

    assert result == {"accuracy": pytest.approx(5 / 7), "consistency": pytest.approx(1 / 3)}
    assert nlvr2_sentence("dev-850-3-1") == nlvr2_sentence("dev-850-0-1") != nlvr2_sentence("dev-850-0-0")


def test_nlvr2_label_names_ignore_case():
    """nlvr2/eval/metrics.py compares prediction.lower() with label.lower()."""
    result = compute(
        "nlvr2", predictions=["true", "False"], references=["True", "True"], identifiers=["test1-0-0-0", "test1-0-1-0"]
    )

    assert result == {"accuracy": 0.5, "consistency": 0.0}


def test_nlvr2_bad_identifier():
    with pytest.raises(ValueError, match=r"identifiers\[0\] must be an NLVR2 identifier.*'dev-850'"):
        compute("nlvr2", predictions=[1], references=[1], identifiers=["dev-850"])


# ---------------------------------------------------------------------------------------------- RefCOCO


def test_refcoco_iou_of_exactly_one_half_counts():
    """Accuracy at IoU >= 0.5, continuous corners: [0,0,2,1] vs [0,0,1,1] overlap 1, union 2 + 1 - 1 = 2: 0.5.

    [0,0,3,1] vs [0,0,1,1]: 1 / 3, a miss; disjoint boxes: 0, a miss.
    """
    predictions = [[0, 0, 2, 1], [0, 0, 3, 1], [10, 10, 20, 20]]
    references = [[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 5, 5]]

    ious = paired_iou(np.asarray(predictions, dtype=float), np.asarray(references, dtype=float))
    result = compute("refcoco_accuracy", predictions=predictions, references=references)

    np.testing.assert_allclose(ious, [0.5, 1 / 3, 0.0])
    assert result == {"accuracy": pytest.approx(1 / 3)}


def test_refcoco_inclusive_pixels_on_request():
    """pixel_offset=1 counts pixels inclusively: [0,0,3,1] is 4x2, [0,0,1,1] 2x2, overlap 2x2: 4 / 8 = 0.5."""
    result = compute("refcoco_accuracy", predictions=[[0, 0, 3, 1]], references=[[0, 0, 1, 1]], pixel_offset=1)

    assert result == {"accuracy": 1.0}


@pytest.mark.parametrize(
    "predictions, references, message",
    [
        ([[2, 0, 1, 1]], [[0, 0, 1, 1]], r"predictions\[0\] must be a box .*x2 < x1"),
        ([[0, 0, 1, 1]], [[0, 3, 1, 1]], r"references\[0\] must be a box .*y2 < y1"),
        ([[0, 0, 1]], [[0, 0, 1, 1]], r"predictions\[0\] must be a box \[x1, y1, x2, y2\]"),
        ([[0, 0, 1, 1]] * 2, [[0, 0, 1, 1]], r"len\(predictions\) = 2, len\(references\) = 1"),
    ],
)
def test_refcoco_bad_input(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        compute("refcoco_accuracy", predictions=predictions, references=references)


# ---------------------------------------------------------------------------------------------- retrieval

# 4 texts x 3 images; texts 0 and 1 describe image 0, text 2 image 1, text 3 image 2.
RETRIEVAL_SCORES = np.array(
    [
        [0.9, 0.1, 0.5],
        [0.2, 0.8, 0.3],
        [0.4, 0.6, 0.7],
        [0.1, 0.2, 0.3],
    ]
)
TEXT_TO_IMAGE = [0, 0, 1, 2]


def test_retrieval_recall_on_a_matrix_worked_by_hand():
    """Recall@K, the gold ranked after every other candidate scoring at least as high.

    Text queries (rows): t0 gold i0 0.9, nothing higher: rank 0; t1 gold i0 0.2, beaten by 0.8 and 0.3: rank 2;
    t2 gold i1 0.6, beaten by 0.7: rank 1; t3 gold i2 0.3, the highest: rank 0. R@1 = 2/4, R@5 = R@10 = 1.
    Image queries (columns): i0 golds t0, t1, best 0.9, the highest: rank 0; i1 gold t2 0.6, beaten by t1 0.8:
    rank 1; i2 gold t3 0.3, beaten by t0 0.5, t2 0.7 and tied by t1 0.3: rank 3. R@1 = 1/3, R@5 = R@10 = 1.
    """
    result = compute("retrieval_recall", scores=RETRIEVAL_SCORES, text_to_image=TEXT_TO_IMAGE)

    assert result == {
        "ir_r1": 0.5,
        "ir_r5": 1.0,
        "ir_r10": 1.0,
        "tr_r1": pytest.approx(1 / 3),
        "tr_r5": 1.0,
        "tr_r10": 1.0,
    }


def test_retrieval_recall_at_5_and_10_and_images_without_texts():
    """Ranks 4, 5 and 10 sit on either side of k = 5 and k = 10; images without texts are no image queries.

    Texts 0-2 all describe image 0 and score it 0.5; text 0 scores 4 other images higher, text 1 five, text 2 ten:
    image R@1 = 0, R@5 = 1/3, R@10 = 2/3. Only image 0 has texts, and its column is all gold: text R@K = 1.
    """
    scores = np.zeros((3, 12))
    scores[:, 0] = 0.5
    for text, higher in enumerate((4, 5, 10)):
        scores[text, 1 : 1 + higher] = 1.0

    result = compute("retrieval_recall", scores=scores, text_to_image=[0, 0, 0])

    assert result == {
        "ir_r1": 0.0,
        "ir_r5": pytest.approx(1 / 3),
        "ir_r10": pytest.approx(2 / 3),
        "tr_r1": 1.0,
        "tr_r5": 1.0,
        "tr_r10": 1.0,
    }


def test_retrieval_ties_count_against_the_gold():
    """Constant scores: every gold is ranked after all other candidates, so only k >= candidates hits."""
    ranks = gold_ranks(np.ones((2, 3)), np.eye(2, 3, dtype=bool))
    result = compute("retrieval_recall", scores=np.ones((2, 2)), text_to_image=[0, 1])

    assert ranks.tolist() == [2, 2]
    assert result["ir_r1"] == 0.0 and result["tr_r1"] == 0.0 and result["ir_r5"] == 1.0


def test_retrieval_batches_add_up_to_one_matrix():
    """Examples are texts: text rows added batch by batch give the recall of the whole matrix."""
    metric = metrics.load("retrieval_recall")
    metric.add_batch(scores=RETRIEVAL_SCORES[:3].tolist(), text_to_image=TEXT_TO_IMAGE[:3])
    metric.add(scores=RETRIEVAL_SCORES[3], text_to_image=TEXT_TO_IMAGE[3])

    assert metric.compute() == compute("retrieval_recall", scores=RETRIEVAL_SCORES, text_to_image=TEXT_TO_IMAGE)


@pytest.mark.parametrize(
    "scores, text_to_image, message",
    [
        (np.ones(3), [0, 0, 0], r"scores must be a \(texts, images\) matrix .*got shape \(3,\)"),
        (np.ones((2, 3, 1)), [0, 0], r"got shape \(2, 3, 1\)"),
        ([[1.0, 2.0], [1.0]], [0, 0], r"got rows of lengths \[1, 2\]"),
        (np.ones((2, 3)), [0, 3], r"text_to_image\[1\] must be an image column, an int in \[0, 3\).*got 3"),
        (np.ones((2, 3)), [0, -1], r"text_to_image\[1\] must be an image column"),
        (np.ones((2, 3)), [0], r"len\(scores\) = 2, len\(text_to_image\) = 1"),
        (np.full((1, 2), np.nan), [0], "scores must be finite"),
    ],
)
def test_retrieval_bad_input(scores, text_to_image, message):
    with pytest.raises(ValueError, match=message):
        compute("retrieval_recall", scores=scores, text_to_image=text_to_image)


# ---------------------------------------------------------------------------------------------- callers

TASK_ROWS = {
    "vqa": {"question_id": ["1", "2"], "answers": [["two"] * 3 + ["3"] * 7, ["yes"] * 10]},
    "gqa": {"question_id": ["1", "2"], "answers": [["yes"], ["left"]]},
    "nlvr2": {"identifier": ["dev-1-0-0", "dev-1-1-0"], "label": [1, 0]},
    "snli-ve": {"pair_id": ["a", "b"], "label": [0, 2]},
    "refcoco": {"ref_id": ["1", "2"], "box": [[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]]},
    "retrieval": {"image_id": ["a", "a", "b"], "caption": ["x", "y", "z"]},
}
TASK_PREDICTIONS = {
    "vqa": ["2", "yes"],
    "gqa": ["yes", "right"],
    "nlvr2": [1, 1],
    "snli-ve": [0, 2],
    "refcoco": [[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]],
    "retrieval": [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]],
}
TASK_RESULTS = {
    "vqa": {"eval_vqa_accuracy": (0.9 + 1.0) / 2},
    "gqa": {"eval_gqa_accuracy": 0.5},
    "nlvr2": {"eval_nlvr2_accuracy": 0.5, "eval_nlvr2_consistency": 0.0},
    "snli-ve": {"eval_snli_ve_accuracy": 1.0},
    "refcoco": {"eval_refcoco_accuracy": 0.5},
    # images a, b in order of first appearance. Texts: "x" ranks a first, "y" ranks a after b (0.8), "z" ranks b
    # first. Images: a's best text "x" (0.9) is first; b's text "z" (0.7) comes after "y" (0.8).
    "retrieval": {
        "eval_ir_r1": 2 / 3,
        "eval_ir_r5": 1.0,
        "eval_ir_r10": 1.0,
        "eval_tr_r1": 0.5,
        "eval_tr_r5": 1.0,
        "eval_tr_r10": 1.0,
        "eval_recall_mean": (2 / 3 + 0.5 + 4) / 6,
    },
}


@pytest.mark.parametrize("task", sorted(TASK_ROWS))
def test_task_metrics_of_each_task(task):
    """vl_zoo.evaluate.task_metrics, unchanged, on a datasets.Dataset with the fields it reads."""
    rows = datasets.Dataset.from_dict(TASK_ROWS[task])

    result = task_metrics(task, rows, TASK_PREDICTIONS[task])

    assert result == pytest.approx(TASK_RESULTS[task])
    assert MAIN_METRICS[task] in result


def test_majority_metrics_of_vqa():
    """The majority baseline goes through the same metric: "yes" is the most frequent training answer."""
    rows = datasets.Dataset.from_dict(TASK_ROWS["vqa"])
    train = datasets.Dataset.from_dict({"answers": [["yes"] * 10, ["yes"] * 6 + ["no"] * 4, ["no"] * 10]})

    result = majority_metrics("vqa", train, rows, {"eval_vqa_accuracy": 0.95})

    assert result == pytest.approx({"eval_majority_vqa_accuracy": 0.5, "eval_gain_over_majority": 0.45})
