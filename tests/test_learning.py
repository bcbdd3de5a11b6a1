"""The built-in runs learn: pretraining the tiny preset on builtin:synthetic, and VQA on two processes.

`builtin:synthetic` is built so that only a model that reads the image can pass: colours and shapes are drawn
independently of every text, so a masked colour or shape word is recovered by finding its object among the
regions, and a mismatched caption is told apart by what the regions show. The evaluation masks the same words
with the image blanked, so `eval_mlm_gain_over_text_only` is what the image adds. A VQA model that ignores the
image can reach about 0.25 (an eighth of the colour and shape questions, half the yes/no ones, a third of the
counts); the majority answer reaches 0.17.

The README's commands (pretraining for 3,037 steps, about four minutes, then VQA fine-tuned from that model)
take too long for the suite, which runs shortened versions on 2,000 images with thresholds under what they reach:
1,400 pretraining steps (matching 0.76 and masked words 0.34 there: the binding has started), and four epochs
of VQA from scratch. `VL_ZOO_FULL_RUNS=1` runs the README's commands as written and asserts the issues' criteria.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import run_command, two_processes

FULL = os.environ.get("VL_ZOO_FULL_RUNS") == "1"

# (extra options, thresholds): the README's commands with the issues' criteria, or the shortened runs.
PRETRAINING = ([], {"eval_itm_accuracy": 0.85, "eval_mlm_accuracy": 0.6, "eval_mlm_gain_over_text_only": 0.2})
SHORT_PRETRAINING = (
    ["--synthetic-images", "2000", "--max-steps", "1400"],
    {"eval_itm_accuracy": 0.65, "eval_mlm_accuracy": 0.28, "eval_mlm_gain_over_text_only": 0.12},
)
VQA = (["--model", "PRETRAINED"], {"eval_vqa_accuracy": 0.6, "eval_gain_over_majority": 0.2})
SHORT_VQA = (
    ["--model", "vlzoo_uniter", "--preset", "tiny", "--synthetic-images", "2000", "--num-train-epochs", "4"],
    {"eval_vqa_accuracy": 0.35, "eval_gain_over_majority": 0.2},
)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("cache")
    return dict(os.environ, VL_ZOO_CACHE=str(cache), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def run(module: str, args: list[str], env: dict[str, str], launcher: list[str] | None = None) -> dict:
    """Run a training script to its end; its metrics.json."""
    result = run_command([*(launcher or [sys.executable]), "-m", module, *args], env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((Path(args[args.index("--output-dir") + 1]) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def pretrained(env, tmp_path_factory) -> tuple[Path, dict]:
    """The README's pretraining command (shortened unless VL_ZOO_FULL_RUNS=1): its output folder and metrics."""
    output = tmp_path_factory.mktemp("runs") / "pretrain"
    extra, _ = PRETRAINING if FULL else SHORT_PRETRAINING
    command = ["--model", "vlzoo_uniter", "--preset", "tiny", "--train-data", "builtin:synthetic", *extra]
    return output, run("vl_zoo.pretrain", [*command, "--output-dir", str(output)], env)


def test_pretraining_learns_to_use_the_image(pretrained):
    _, metrics = pretrained
    _, thresholds = PRETRAINING if FULL else SHORT_PRETRAINING

    for name, threshold in thresholds.items():
        assert metrics[name] >= threshold, (name, metrics)
    assert metrics["eval_mlm_text_only_accuracy"] < 0.3  # blind, the words are guesses (1/8 is chance)


def test_vqa_on_two_processes(request, env, tmp_path):
    extra, thresholds = VQA if FULL else SHORT_VQA
    if FULL:  # fine-tuned from the pretraining run's model, as the README does
        extra = [str(request.getfixturevalue("pretrained")[0]) if arg == "PRETRAINED" else arg for arg in extra]
    command = ["--task", "vqa", "--train-data", "builtin:synthetic", *extra, "--output-dir", str(tmp_path / "vqa")]
    metrics = run("vl_zoo.finetune", command, env, two_processes())

    assert metrics["world_size"] == 2
    for name, threshold in thresholds.items():
        assert metrics[name] >= threshold, (name, metrics)
