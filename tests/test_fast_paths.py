"""The fast paths against the eager path: torch.compile, compile with bf16 and checkpointing, fused AdamW, FLOPs.

Attention back-ends (eager against sdpa), activation checkpointing and bf16 autocast in eager mode are tested in
test_modeling.py and test_encoder.py; this file adds what runs through torch.compile and the benchmark's pieces.

Compilation mostly uses the "aot_eager" backend: dynamo captures the whole forward (`fullgraph=True` fails on any
graph break) and AOTAutograd traces the backward, but no kernels are generated. Inductor's code generation is the
part that is slow on 2 CPU cores (13 to 80 s per tiny model for forward and backward, against 3 to 9 s with
aot_eager), so it runs once, for inference of the quickest model; `benchmarks/train_step.py --compile` runs it on
the full-size models.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_inputs, make_labels, randomize_, tiny_config
from transformers import AutoModel, AutoModelForPreTraining

ATOL = 1e-5
NO_DROPOUT = {
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "v_hidden_dropout_prob": 0.0,
    "v_attention_probs_dropout_prob": 0.0,
}
BF16_TOLERANCE = {"rtol": 0.05, "atol": 0.1}  # two bf16 runs whose roundings differ where kernels fuse
BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "train_step.py"


def build(model_type: str, seed: int = 0) -> torch.nn.Module:
    """A tiny pretraining model in train mode without dropout, so eager and compiled runs see the same maths."""
    return randomize_(AutoModelForPreTraining.from_config(tiny_config(model_type, **NO_DROPOUT)), seed).train()


def loss_and_grads(model: torch.nn.Module, run: torch.nn.Module, batch: dict) -> tuple[dict, dict]:
    """Outputs and parameter gradients of one forward and backward through `run` (the model or its compiled form)."""
    model.zero_grad(set_to_none=True)
    out = run(**batch)
    out.loss.backward()
    outputs = {name: out[name].detach() for name in ("loss", "mlm_logits", "itm_logits", "vision_last_hidden_state")}
    return outputs, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def assert_same(eager: tuple[dict, dict], compiled: tuple[dict, dict], atol: float = ATOL) -> None:
    for name in eager[0]:
        torch.testing.assert_close(compiled[0][name], eager[0][name], rtol=0, atol=atol, msg=name)
    assert compiled[1].keys() == eager[1].keys()
    for name in eager[1]:
        torch.testing.assert_close(compiled[1][name], eager[1][name], rtol=0, atol=atol, msg=name)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_forward_and_backward_equal_eager_without_graph_breaks(model_type):
    """Pretraining heads and all three losses, labels included: one graph, the same loss and gradients."""
    model = build(model_type)
    inputs = make_inputs(model.config)
    batch = {**inputs, **make_labels(model.config, inputs)}
    eager = loss_and_grads(model, model, batch)
    compiled = loss_and_grads(model, torch.compile(model, fullgraph=True, backend="aot_eager"), batch)
    assert_same(eager, compiled)


@pytest.mark.parametrize("model_type", ["vlzoo_lxmert", "vlzoo_uniter"])
def test_compiled_with_checkpointing_equals_eager(model_type):
    """Activation checkpointing under compile (a dual-stream and a single-stream model): the same gradients."""
    model = build(model_type)
    inputs = make_inputs(model.config)
    batch = {**inputs, **make_labels(model.config, inputs)}
    eager = loss_and_grads(model, model, batch)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    compiled = loss_and_grads(model, torch.compile(model, fullgraph=True, backend="aot_eager"), batch)
    assert_same(eager, compiled)


def test_inductor_with_frozen_weights_equals_eager():
    """What `benchmarks/train_step.py --compile` runs for inference: inductor's kernels, weights frozen in.

    One model only (the quickest to compile, about 7 s on 2 cores, most of it inductor's fixed start-up): the
    other four run the same encoder code, which the aot_eager tests above trace for all five.
    """
    from torch._inductor import config as inductor_config

    model = randomize_(AutoModel.from_config(tiny_config("vlzoo_uniter")), seed=5).eval()
    inputs = make_inputs(model.config)
    with torch.no_grad(), inductor_config.patch(freezing=True):
        compiled = torch.compile(model, fullgraph=True)(**inputs)
        eager = model(**inputs)
    for name in ("text_last_hidden_state", "vision_last_hidden_state", "pooler_output"):
        torch.testing.assert_close(compiled[name], eager[name], rtol=0, atol=ATOL, msg=name)


@pytest.mark.parametrize("model_type", ["vlzoo_vilbert"])
def test_compiled_under_bf16_autocast_matches_eager_bf16(model_type):
    """The masks follow the autocast dtype inside a compiled graph too; loose tolerance, as bf16 rounds."""
    model = build(model_type)
    inputs = make_inputs(model.config)
    batch = {**inputs, **make_labels(model.config, inputs)}
    compiled_model = torch.compile(model, fullgraph=True, backend="aot_eager")
    results = []
    for run in (model, compiled_model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results.append(loss_and_grads(model, run, batch))
    assert torch.isfinite(results[1][0]["loss"])
    torch.testing.assert_close(results[1][0]["loss"], results[0][0]["loss"], rtol=0.02, atol=0.02)
    got, want = results[1][0]["mlm_logits"].float(), results[0][0]["mlm_logits"].float()
    torch.testing.assert_close(got, want, **BF16_TOLERANCE)


def test_fused_adamw_takes_the_same_step():
    """torch's fused AdamW kernel over every vl_zoo parameter gives the parameters of the for-loop AdamW.

    One step: the gradient of a key bias is rounding noise (softmax ignores it), so after a second step the two
    models' noise differs and Adam, which normalises it, moves those biases differently.
    """
    models = [build("vlzoo_lxmert", seed=4) for _ in range(2)]
    inputs = make_inputs(models[0].config)
    batch = {**inputs, **make_labels(models[0].config, inputs)}
    for model, fused in zip(models, (False, True), strict=True):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, fused=fused)
        model(**batch).loss.backward()
        optimizer.step()
    for (name, plain), fused in zip(models[0].named_parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(fused, plain, rtol=0, atol=1e-6, msg=name)


# ---------------------------------------------------------------------------------------------- the benchmark


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_step", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_step"] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules["train_step"]


def masked_block_flops(config, batch: int, text: int, regions: int) -> int:
    """FLOPs a joint attention call spends on the (query stream, key stream) blocks its mask forbids.

    A dual-stream sub-layer attends over [text; vision] in one call; transformers' LXMERT makes one call per
    query stream over the allowed keys only, and so skips these blocks (4 FLOPs per head dimension and pair).
    """
    total = 0
    for spec in config.sublayer_specs():
        if spec.kind == "attn" and spec.text_active and spec.vision_active:
            allowed = spec.tt * text**2 + (spec.tv + spec.vt) * text * regions + spec.vv * regions**2
            total += 4 * batch * spec.attn_size * ((text + regions) ** 2 - allowed)
    return total


@pytest.mark.parametrize("model_type", ["vlzoo_visual_bert", "vlzoo_lxmert"])
def test_benchmark_peer_is_the_same_architecture(bench, model_type):
    """The transformers peer does exactly vl_zoo's matmul work but for the pooler and the masked blocks."""
    settings = bench.parse_args(["--quick", "--peak-tflops", "1"])
    flops, params = {}, {}
    for implementation in ("vl_zoo", "transformers"):
        outcome = bench.measure(bench.Case(model_type, implementation, "infer"), settings)
        flops[implementation], params[implementation] = outcome["flops"], outcome["params"]
        assert len(outcome["step_seconds"]) == settings.steps and outcome["peak_mib"] >= 0
    config = bench.vl_zoo_config(model_type, settings)
    batch = settings.batch_size
    excess = masked_block_flops(config, batch, settings.text_length, settings.regions)
    our_pooler = 2 * batch * (config.hidden_size * config.pooler_size + config.v_hidden_size * config.v_pooler_size)
    their_pooler = 2 * batch * config.hidden_size**2  # one tanh dense on [CLS]
    assert flops["vl_zoo"] - excess - our_pooler == flops["transformers"] - their_pooler
    assert abs(params["vl_zoo"] - params["transformers"]) / params["transformers"] < 0.05


def test_benchmark_counts_training_flops_as_forward_and_backward(bench):
    """A training step counts about three forwards: backward costs two (no input gradient for the features).

    The fused CPU attention kernel, which torch's FLOP counter does not know, counts what its matmuls count.
    """
    settings = bench.parse_args(["--quick", "--peak-tflops", "1", "--steps", "1"])
    infer = bench.measure(bench.Case("vlzoo_uniter", "vl_zoo", "infer"), settings)["flops"]
    train = bench.measure(bench.Case("vlzoo_uniter", "vl_zoo", "train"), settings)["flops"]
    assert infer > 0 and 2.5 < train / infer <= 3.0
    math_only = bench.parse_args(["--quick", "--peak-tflops", "1", "--steps", "1", "--sdpa-backend", "math"])
    assert bench.measure(bench.Case("vlzoo_uniter", "vl_zoo", "infer"), math_only)["flops"] == infer


def test_benchmark_table_ratios(bench):
    settings = bench.Settings(batch_size=4, peak_tflops=100.0)
    ours = bench.Result(bench.Case("vlzoo_lxmert", "vl_zoo", "train"), [1.0, 2.0, 3.0], [100.0, 140.0], 10, 2e12)
    peer = bench.Result(bench.Case("vlzoo_lxmert", "transformers", "train"), [3.0, 4.0, 5.0], [150.0], 10, 2e12)
    lines = bench.table([ours, peer], settings)
    assert "2.00x" in lines[1] and "0.80x" in lines[1]  # 4 s / 2 s faster; 120 / 150 of the memory
    assert "1.00" in lines[1] and "1.0%" in lines[1]  # 2 TFLOP in 2 s of a 100 TFLOP/s peak


def test_benchmark_quick_run_from_the_command_line():
    """The script end to end, its measurements in child processes: the table has every row."""
    command = [sys.executable, str(BENCHMARK), "--quick", "--threads", "1", "--models", "vlzoo_lxmert"]
    command += ["--modes", "train", "--steps", "1", "--peak-tflops", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    rows = [line for line in result.stdout.splitlines() if line.startswith("LXMERT")]
    assert len(rows) == 2 and not any("failed" in row for row in rows), result.stdout + result.stderr
    assert rows[0].split()[-1].endswith("%")  # the MFU column
