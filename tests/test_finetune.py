"""The fine-tuning and evaluation scripts end to end on `builtin:synthetic`: every task, refusals, formats."""

from __future__ import annotations

import csv
import json
import os
import sys

import datasets
import pytest
from conftest import run_command

from vl_zoo.data.synthetic import build_synthetic
from vl_zoo.finetune import parse_args
from vl_zoo.models import config_from_preset

TASKS = ("vqa", "gqa", "nlvr2", "snli-ve", "refcoco", "retrieval")
SMALL = ["--model", "vlzoo_uniter", "--preset", "tiny", "--train-data", "builtin:synthetic"]
SMALL += ["--synthetic-images", "48", "--batch-size", "8", "--max-regions", "8", "--seed", "3"]
# The prediction file each task writes, in its official submission format.
PREDICTION_FILES = {
    "vqa": "vqa_results.json",
    "gqa": "gqa_predictions.json",
    "nlvr2": "nlvr2_predictions.csv",
    "snli-ve": "snli_ve_predictions.json",
    "refcoco": "refcoco_predictions.json",
    "retrieval": "retrieval_rankings.json",
}
MAIN_METRICS = {
    "vqa": "eval_vqa_accuracy",
    "gqa": "eval_gqa_accuracy",
    "nlvr2": "eval_nlvr2_accuracy",
    "snli-ve": "eval_snli_ve_accuracy",
    "refcoco": "eval_refcoco_accuracy",
    "retrieval": "eval_ir_r1",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("cache")
    return dict(os.environ, VL_ZOO_CACHE=str(cache), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def run(module: str, args: list[str], env: dict[str, str], launcher: list[str] | None = None):
    return run_command([*(launcher or [sys.executable]), "-m", module, *args], env, timeout=300)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_fine_tunes_evaluates_and_reloads(task, env, tmp_path):
    """A few steps per task: metrics.json with the task's metrics, a model the evaluation script loads."""
    out = tmp_path / task
    result = run("vl_zoo.finetune", ["--task", task, *SMALL, "--max-steps", "3", "--output-dir", str(out)], env)
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["world_size"] == 1 and metrics["steps"] == 3
    assert 0.0 <= metrics[MAIN_METRICS[task]] <= 1.0
    if task in ("vqa", "gqa", "nlvr2", "snli-ve"):
        majority = metrics[MAIN_METRICS[task]] - metrics["eval_gain_over_majority"]
        assert 0.0 <= majority <= 1.0
    assert json.loads((out / "config.json").read_text())["finetuning_task"] == task

    scored = tmp_path / f"{task}-eval"
    data = ["--data", "builtin:synthetic", "--synthetic-images", "48", "--seed", "3", "--max-regions", "8"]
    result = run("vl_zoo.evaluate", ["--task", task, "--model", str(out), *data, "--output-dir", str(scored)], env)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((scored / "metrics.json").read_text())
    assert evaluated[MAIN_METRICS[task]] == pytest.approx(metrics[MAIN_METRICS[task]], abs=1e-6)
    assert (scored / PREDICTION_FILES[task]).is_file()


def test_submission_formats(env, tmp_path):
    """VQA's result JSON (question_id, answer) and NLVR2's CSV (identifier, True/False), one row per example."""
    folder = build_synthetic(tmp_path / "data", num_images=48, seed=3)
    for task in ("vqa", "nlvr2"):
        out = tmp_path / task
        args = ["--task", task, *SMALL[:4], "--train-data", str(folder), "--batch-size", "8", "--max-regions", "8"]
        result = run("vl_zoo.finetune", [*args, "--max-steps", "2", "--output-dir", str(out)], env)
        assert result.returncode == 0, result.stderr[-3000:]
        scored = tmp_path / f"{task}-eval"
        args = ["--task", task, "--model", str(out), "--data", str(folder), "--max-regions", "8"]
        result = run("vl_zoo.evaluate", [*args, "--output-dir", str(scored)], env)
        assert result.returncode == 0, result.stderr[-3000:]

    rows = datasets.load_from_disk(str(folder / "vqa" / "validation"))
    results = json.loads((tmp_path / "vqa-eval" / "vqa_results.json").read_text())
    assert [set(item) for item in results] == [{"question_id", "answer"}] * len(rows)
    assert all(isinstance(item["answer"], str) for item in results)

    rows = datasets.load_from_disk(str(folder / "nlvr2" / "validation"))
    with (tmp_path / "nlvr2-eval" / "nlvr2_predictions.csv").open() as handle:
        lines = list(csv.reader(handle))
    assert [line[0] for line in lines] == rows["identifier"]
    assert {line[1] for line in lines} <= {"True", "False"}


def test_a_task_without_a_needed_field_is_refused(env, tmp_path):
    folder = build_synthetic(tmp_path / "data", num_images=24, seed=1)
    train = datasets.load_from_disk(str(folder / "snli-ve" / "train")).remove_columns("hypothesis")
    train.save_to_disk(str(tmp_path / "snli-ve-train"))
    (folder / "snli-ve" / "train").rename(tmp_path / "original-train")
    (tmp_path / "snli-ve-train").rename(folder / "snli-ve" / "train")

    args = ["--task", "snli-ve", *SMALL[:4], "--train-data", str(folder), "--output-dir", str(tmp_path / "out")]
    result = run("vl_zoo.finetune", args, env)
    assert result.returncode != 0
    assert "lack the field(s) ['hypothesis']" in result.stderr


def test_an_answer_vocabulary_that_does_not_fit_the_head_is_refused(env, tmp_path):
    """A VQA model keeps its head when fine-tuned again: a vocabulary of another size is refused with both sizes."""
    out = tmp_path / "vqa"
    result = run("vl_zoo.finetune", ["--task", "vqa", *SMALL, "--max-steps", "1", "--output-dir", str(out)], env)
    assert result.returncode == 0, result.stderr[-3000:]
    vocabulary = tmp_path / "answers.json"
    vocabulary.write_text(json.dumps(["yes", "no", "maybe"]))

    args = ["--task", "vqa", "--model", str(out), *SMALL[4:], "--answer-vocabulary", str(vocabulary)]
    result = run("vl_zoo.finetune", [*args, "--output-dir", str(tmp_path / "again")], env)
    assert result.returncode != 0
    heads = len(json.loads((out / "config.json").read_text())["id2label"])
    assert f"the head has {heads} answers" in result.stderr and "the vocabulary 3" in result.stderr


def test_evaluation_refuses_a_model_of_another_task(env, tmp_path):
    out = tmp_path / "snli"
    result = run("vl_zoo.finetune", ["--task", "snli-ve", *SMALL, "--max-steps", "1", "--output-dir", str(out)], env)
    assert result.returncode == 0, result.stderr[-3000:]
    args = ["--task", "vqa", "--model", str(out), "--data", "builtin:synthetic", "--output-dir", str(tmp_path / "e")]
    result = run("vl_zoo.evaluate", args, env)
    assert result.returncode != 0 and "fine-tuned for 'snli-ve'" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "captioning"], "invalid choice"),
        (["--task", "vqa", "--model", "vlzoo_clip"], "is neither a vl_zoo model_type"),
        (["--task", "vqa", "--train-data", "/nonexistent"], "is not a data folder for vqa"),
        (["--task", "nlvr2", "--answer-vocabulary", "answers.json"], "names the answers of vqa or gqa"),
        (["--task", "vqa", "--batch-size", "0"], "--batch-size must be positive"),
    ],
)
def test_bad_options_fail_before_work(tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as error:
        parse_args([*SMALL, "--output-dir", str(tmp_path / "out"), *args])
    assert message in str(error.value) + capsys.readouterr().err


def test_recipes_follow_the_model(tmp_path):
    """The release's step sizes for a ctrl model, the tiny recipe from scratch, fewer epochs for a saved tiny model."""
    common = ["--task", "vqa", "--train-data", "builtin:synthetic", "--output-dir", str(tmp_path / "out")]
    ctrl = parse_args(["--model", "vlzoo_uniter", *common])
    assert (ctrl.learning_rate, ctrl.batch_size, ctrl.num_train_epochs) == (1e-4, 256, 20)
    scratch = parse_args(["--model", "vlzoo_uniter", "--preset", "tiny", *common])
    assert (scratch.learning_rate, scratch.batch_size, scratch.num_train_epochs) == (1e-3, 64, 20)

    for name, preset in (("tiny", "tiny"), ("ctrl", "ctrl")):
        config_from_preset("vlzoo_uniter", preset, vocab_size=30).save_pretrained(tmp_path / name)
    saved = parse_args(["--model", str(tmp_path / "tiny"), *common])
    assert (saved.learning_rate, saved.batch_size, saved.num_train_epochs) == (1e-3, 64, 8)
    given = parse_args(["--model", str(tmp_path / "tiny"), "--learning-rate", "3e-4", *common])
    assert (given.learning_rate, given.num_train_epochs) == (3e-4, 8)
    release = parse_args(["--model", str(tmp_path / "ctrl"), *common])
    assert (release.learning_rate, release.batch_size) == (1e-4, 256)
