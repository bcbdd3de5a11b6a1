"""Tiny configs, seeded inputs and helpers shared by the tests. Nothing here reaches the network."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import vl_zoo  # noqa: E402
from vl_zoo.models import ARCHITECTURES, config_from_preset  # noqa: E402

MODEL_TYPES = sorted(ARCHITECTURES)
ROOT = Path(__file__).parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
VOLTA_FIXTURES = FIXTURES / "volta"
# fixture folder of each architecture's ctrl reference dump
REFERENCE_DIRS = {
    "vlzoo_vilbert": "ctrl_vilbert",
    "vlzoo_lxmert": "ctrl_lxmert",
    "vlzoo_vl_bert": "ctrl_vl-bert",
    "vlzoo_visual_bert": "ctrl_visualbert",
    "vlzoo_uniter": "ctrl_uniter",
}
TINY_OVERRIDES = {"vocab_size": 99, "v_feature_size": 16, "v_coordinate_embeddings_dim": 4}
# The unit tests' widths: a quarter of the tiny preset's 128, so that the equivalence and refusal tests run on
# small matrices (the tolerances of the tests on randomised weights were set at these widths). The training
# scripts' tests run the preset itself.
TEST_SIZES = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "v_hidden_size": 32,
    "v_intermediate_size": 64,
    "pooler_size": 24,
    "v_pooler_size": 24,
    "clf_hidden_size": 40,
}


def two_processes() -> list[str]:
    """accelerate's launcher for two data-parallel CPU processes over gloo, on a port that is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*launcher, "--main_process_port", str(port)]


def run_command(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run a command in a session of its own; past `timeout` the whole session is killed (a launcher and every
    rank it started, so that no process is left behind) and the test fails with the end of its stderr."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(
            f"{' '.join(command)} ran past {timeout} s and was killed; its stderr ended with:\n{stderr[-3000:]}"
        )
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def tiny_config(model_type: str, **overrides) -> vl_zoo.VLConfig:
    """The tiny preset's programs at the unit tests' widths, with a small vocabulary and 16-d region features."""
    return config_from_preset(model_type, "tiny", **{**TEST_SIZES, **TINY_OVERRIDES, **overrides})


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter with seeded random values, so no zero-initialised weight hides a mistake."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype) * 0.2
            param.copy_(noise + 1.0 if "layer_norm.weight" in name else noise)
    return model


def make_inputs(
    config: vl_zoo.VLConfig,
    batch: int = 3,
    length: int = 7,
    regions: int = 5,
    seed: int = 0,
    padded: bool = True,
) -> dict[str, torch.Tensor]:
    """A seeded batch: the global row first, boxes in [0, 1], and (when padded) shorter texts and fewer regions."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, config.vocab_size, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    visual_attention_mask = torch.ones(batch, regions, dtype=torch.long)
    if padded:
        for row in range(1, batch):
            attention_mask[row, length - row :] = 0
            visual_attention_mask[row, regions - row :] = 0
    input_ids = input_ids * attention_mask
    corners = torch.rand(batch, regions, 4, generator=generator)
    x1, x2 = corners[..., 0].minimum(corners[..., 2]), corners[..., 0].maximum(corners[..., 2])
    y1, y2 = corners[..., 1].minimum(corners[..., 3]), corners[..., 1].maximum(corners[..., 3])
    visual_pos = torch.stack([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)], dim=-1)
    visual_feats = torch.randn(batch, regions, config.v_feature_size, generator=generator)
    visual_feats = visual_feats * visual_attention_mask.unsqueeze(-1)
    visual_pos = visual_pos * visual_attention_mask.unsqueeze(-1)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "visual_feats": visual_feats,
        "visual_pos": visual_pos,
        "visual_attention_mask": visual_attention_mask,
    }


def make_labels(config: vl_zoo.VLConfig, inputs: dict[str, torch.Tensor], seed: int = 1) -> dict[str, torch.Tensor]:
    """Masked words, masked regions with a detector-like class distribution, and matching labels."""
    generator = torch.Generator().manual_seed(seed)
    batch, length = inputs["input_ids"].shape
    regions = inputs["visual_feats"].shape[1]
    labels = torch.full((batch, length), -100)
    labels[:, 1] = torch.randint(0, config.vocab_size, (batch,), generator=generator)
    region_mask = torch.zeros(batch, regions)
    region_mask[:, 1] = 1.0
    distribution = torch.softmax(torch.randn(batch, regions, 1601, generator=generator), dim=-1)
    return {
        "labels": labels,
        "region_targets": distribution,
        "region_mask": region_mask,
        "itm_labels": torch.tensor([1, 0, 1][:batch] + [0] * max(0, batch - 3)),
    }


@pytest.fixture(params=MODEL_TYPES)
def model_type(request) -> str:
    return request.param
