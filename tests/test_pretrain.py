"""The pretraining script end to end: refusals, two processes through accelerate, exact resume, bf16."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.utils import DistributedType
from conftest import run_command, two_processes

from vl_zoo.pretrain import check_process_count, parse_args, sharding_not_run

ROOT = Path(__file__).parents[1]
SMALL = ["--model", "vlzoo_uniter", "--preset", "tiny", "--train-data", "builtin:synthetic"]
SMALL += ["--synthetic-images", "48", "--batch-size", "8", "--max-length", "16", "--max-regions", "8"]
SMALL += ["--learning-rate", "1e-3", "--seed", "3"]
# The tiny preset has no dropout; the resume test turns BERT's back on, so that the dropout draws are resumed too.
DROPOUT = ["--config-overrides", "hidden_dropout_prob=0.1,attention_probs_dropout_prob=0.1"]
DROPOUT[1] += ",v_hidden_dropout_prob=0.1,v_attention_probs_dropout_prob=0.1"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("cache")
    return dict(os.environ, VL_ZOO_CACHE=str(cache), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def run(args: list[str], env: dict[str, str], launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    return run_command([*(launcher or [sys.executable]), "-m", "vl_zoo.pretrain", *args], env, timeout=300)


def losses(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]


def test_one_process_trains_evaluates_and_saves(env, tmp_path):
    result = run([*SMALL, "--max-steps", "3", "--output-dir", str(tmp_path / "out")], env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    expected = {"world_size", "eval_itm_accuracy", "eval_mlm_accuracy", "eval_mlm_gain_over_text_only"}
    assert expected | {"train_loss", "samples_per_second"} <= set(metrics)
    assert metrics["world_size"] == 1 and metrics["steps"] == 3
    assert [record["step"] for record in losses(tmp_path / "out")] == [1, 2, 3]
    names = {path.name for path in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer_config.json"} <= names
    assert "AutoModelForPreTraining.from_pretrained" in result.stderr  # says where the model is and how to load it


def test_two_processes_through_accelerate_launch(env, tmp_path):
    result = run([*SMALL, "--num-train-epochs", "1", "--output-dir", str(tmp_path / "ddp")], env, two_processes())
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hang at exit" not in result.stderr  # end_run freed the DDP wrapper before the process group ended
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2

    # One epoch of 86 captions in batches of 8 over both processes is 10 steps, not the 21 that counting on the
    # unsharded loader gives; the schedule warms up in the first step and decays linearly to zero at the last.
    assert metrics["steps"] == 10
    rates = [record["learning_rate"] for record in losses(tmp_path / "ddp")]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == 0.0
    assert [a - b for a, b in itertools.pairwise(rates)] == pytest.approx([rates[-2]] * 9)


def test_resume_continues_exactly(env, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = [*SMALL, *DROPOUT, "--max-steps", "4", "--checkpointing-steps", "2", "--output-dir", str(straight)]
    result = run(args, env)
    assert result.returncode == 0, result.stderr[-3000:]

    # A run stopped after step 2: its folder holds the step-2 checkpoint only.
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(straight / "checkpoints" / "step_2", resumed / "checkpoints" / "step_2")
    args = [*SMALL, *DROPOUT, "--max-steps", "4", "--resume-from-checkpoint", "latest", "--output-dir", str(resumed)]
    result = run(args, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in losses(resumed)] == [3, 4]
    assert losses(resumed) == losses(straight)[2:]


def test_bf16_step(env, tmp_path):
    result = run(
        [*SMALL, "--max-steps", "2", "--mixed-precision", "bf16", "--output-dir", str(tmp_path / "bf16")], env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(record["loss"] == record["loss"] for record in losses(tmp_path / "bf16"))  # finite, not NaN


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "vlzoo_clip"], "is neither a vl_zoo model_type"),
        (["--train-data", "/nonexistent/folder"], "--train-data '/nonexistent/folder' is not a data folder"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--resume-from-checkpoint", "latest", "--overwrite-output-dir"], "cannot also overwrite"),
        (["--warmup-ratio", "1.5"], "--warmup-ratio must be in [0, 1)"),
        (["--mlm-probability", "0"], "--mlm-probability must be in (0, 1]"),
    ],
)
def test_bad_options_fail_before_work(tmp_path, args, message):
    """Checked while parsing, before any process starts work."""
    with pytest.raises(SystemExit) as error:
        parse_args([*SMALL, "--output-dir", str(tmp_path / "out"), *args])
    assert message in str(error.value)


def test_non_empty_output_is_kept(env, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    result = run([*SMALL, "--max-steps", "1", "--output-dir", str(tmp_path / "out")], env)
    assert result.returncode != 0 and "pass --overwrite-output-dir" in result.stderr
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_unjoined_processes_are_caught():
    check_process_count(2, 2)
    with pytest.raises(RuntimeError, match="2 processes were launched but this one sees 1"):
        check_process_count(1, 2)


def test_a_sharding_config_that_does_not_run_is_named():
    """On CPU accelerate runs an FSDP or DeepSpeed launch as plain DDP; the scripts say so."""
    fsdp, deepspeed = {"ACCELERATE_USE_FSDP": "true"}, {"ACCELERATE_USE_DEEPSPEED": "true"}
    assert sharding_not_run(fsdp, DistributedType.MULTI_CPU) == "FSDP"
    assert sharding_not_run(deepspeed, DistributedType.MULTI_CPU) == "DeepSpeed"
    assert sharding_not_run(fsdp, DistributedType.FSDP) is None
    assert sharding_not_run({"ACCELERATE_USE_FSDP": "false"}, DistributedType.MULTI_CPU) is None
    assert sharding_not_run({}, DistributedType.NO) is None
