"""Training-step and inference speed and peak memory of the five models, beside transformers' peers.

    python benchmarks/train_step.py --threads 1                   # five ctrl models and the two peers, batch 8
    python benchmarks/train_step.py --quick                       # tiny models: a smoke run of every code path
    python benchmarks/train_step.py --bf16 --fused-adamw --peer-settings defaults
    bash benchmarks/gpu.sh                                        # one CUDA GPU: bf16, fused attention kernels, MFU

Models: the five architectures at their controlled ("ctrl") size, as backbones (`AutoModel`: embeddings,
encoder, pooler), and transformers' `VisualBertModel` and `LxmertModel` built at the same sizes as vl_zoo's
VisualBERT and LXMERT (layer counts, widths, heads, vocabulary, 2048-d region features; the params column shows
how close). Every model gets the same release-like batch: 38 text positions (captions of 12 to 38 tokens,
padded), 37 region rows (the global row first, then 36 regions), 2048-d features.

A training step is forward, a loss (the mean square of every hidden-state output, the same for both sides),
backward, AdamW and `zero_grad(set_to_none=True)`; inference is a forward under `torch.inference_mode()` in
eval mode. Each measurement runs in a fresh process forked from a server that has imported torch, so one
model's memory never counts against another's: it builds the model, runs the warm-up steps (compilation, the
optimiser state), resets the peak and times the measured steps. Rounds alternate vl_zoo and the peer of each
architecture (A B A B ...); the step time is the median of all measured steps over the rounds, the peak memory
the median of the rounds' peaks.

Peak memory: on CPU the process's peak resident set (VmHWM in /proc/self/status, reset after the warm-up by
writing 5 to /proc/self/clear_refs) minus its resident set before the model was built, so weights, gradients,
optimiser state and activations all count and the interpreter and libraries do not; before both readings
glibc's malloc_trim hands freed heap back to the OS, so that memory kept from the build does not count. On CUDA,
`torch.cuda.max_memory_allocated` over the measured steps. Model FLOPs (`--peak-tflops`) are counted with
`torch.utils.flop_counter.FlopCounterMode` on one eager step without activation checkpointing, so recomputation
is not counted as useful work. Nothing is asserted: the numbers depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers
from torch import nn

import vl_zoo
from vl_zoo.models import ARCHITECTURES, config_from_preset

MODEL_TYPES = ("vlzoo_vilbert", "vlzoo_lxmert", "vlzoo_vl_bert", "vlzoo_visual_bert", "vlzoo_uniter")
SHORT_NAMES = {
    "vlzoo_vilbert": "ViLBERT",
    "vlzoo_lxmert": "LXMERT",
    "vlzoo_vl_bert": "VL-BERT",
    "vlzoo_visual_bert": "VisualBERT",
    "vlzoo_uniter": "UNITER",
}
PEERS = {"vlzoo_visual_bert": "VisualBertModel", "vlzoo_lxmert": "LxmertModel"}  # transformers classes
SDPA_BACKENDS = ("flash", "efficient", "cudnn", "math")
TINY_VOCAB = 99


@dataclass
class Settings:
    """What one run measures and how; `peer_settings="defaults"` runs the peers as transformers' defaults."""

    models: tuple[str, ...] = MODEL_TYPES
    modes: tuple[str, ...] = ("train", "infer")
    batch_size: int = 8
    text_length: int = 38
    regions: int = 37
    steps: int = 3
    warmup: int = 1
    rounds: int = 2
    threads: int | None = None
    device: str = "cpu"
    bf16: bool = False
    compile: bool = False
    checkpointing: bool = False
    fused_adamw: bool = False
    attn_implementation: str = "sdpa"
    sdpa_backends: tuple[str, ...] = ()
    peer_settings: str = "same"
    peak_tflops: float | None = None
    quick: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Case:
    """One measurement: an architecture, the implementation that runs it, and the mode."""

    model_type: str
    implementation: str  # "vl_zoo" or "transformers"
    mode: str  # "train" or "infer"


@dataclass
class Result:
    """What the measurements of one case gave, over all rounds."""

    case: Case
    step_seconds: list[float] = field(default_factory=list)
    peak_mib: list[float] = field(default_factory=list)
    params: int = 0
    flops: float | None = None
    levers: str = ""
    error: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# models and the batch


def vl_zoo_config(model_type: str, settings: Settings) -> vl_zoo.VLConfig:
    """The ctrl config, or the tiny preset for a quick run; the attention implementation as asked."""
    if settings.quick:
        config = config_from_preset(model_type, "tiny", vocab_size=TINY_VOCAB)
    else:
        config = config_from_preset(model_type, "ctrl")
    config._attn_implementation = settings.attn_implementation
    return config


def peer_model(config: vl_zoo.VLConfig) -> nn.Module:
    """transformers' own model at the sizes of a vl_zoo VisualBERT or LXMERT config."""
    shared = {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": config.hidden_act,
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.layer_norm_eps,
    }
    if config.model_type == "vlzoo_visual_bert":
        layers = len(config.tt_attn_sublayers)
        peer_config = transformers.VisualBertConfig(
            **shared, num_hidden_layers=layers, visual_embedding_dim=config.v_feature_size
        )
        return transformers.VisualBertModel(peer_config)
    cross = len(config.tv_attn_sublayers)
    peer_config = transformers.LxmertConfig(
        **shared,
        l_layers=len(config.tt_attn_sublayers) - cross,
        r_layers=len(config.vv_attn_sublayers) - cross,
        x_layers=cross,
        visual_feat_dim=config.v_feature_size,
        visual_pos_dim=config.num_locs,
    )
    return transformers.LxmertModel(peer_config)


def make_batch(config: vl_zoo.VLConfig, settings: Settings, device: torch.device) -> dict[str, torch.Tensor]:
    """A seeded release-like batch: padded captions, the global row first, then regions with valid boxes."""
    generator = torch.Generator().manual_seed(settings.seed)
    batch, length, regions = settings.batch_size, settings.text_length, settings.regions
    lengths = torch.randint(min(12, length), length + 1, (batch,), generator=generator)
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    input_ids = torch.randint(1000 % config.vocab_size, config.vocab_size, (batch, length), generator=generator)
    corners = torch.rand(batch, regions, 2, 2, generator=generator).sort(dim=2).values  # (B, R, min/max, x/y)
    boxes = corners.flatten(2)  # x1, y1, x2, y2
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    visual_pos = torch.cat([boxes, area[..., None]], dim=-1)
    visual_pos[:, 0] = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0])
    visual_feats = torch.randn(batch, regions, config.v_feature_size, generator=generator).relu()
    visual_feats[:, 0] = visual_feats[:, 1:].mean(dim=1)
    inputs = {
        "input_ids": input_ids * attention_mask,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "visual_feats": visual_feats,
        "visual_pos": visual_pos[..., : config.num_locs] if config.num_locs == 4 else visual_pos,
        "visual_attention_mask": torch.ones(batch, regions, dtype=torch.long),
    }
    return {name: tensor.to(device) for name, tensor in inputs.items()}


def forward_outputs(model: nn.Module, case: Case, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The hidden-state outputs of a model on the batch, in the argument names its implementation takes."""
    if case.implementation == "vl_zoo":
        out = model(**batch)
        return [out.text_last_hidden_state, out.vision_last_hidden_state, out.pooler_output]
    common = {name: batch[name] for name in ("input_ids", "attention_mask", "token_type_ids")}
    if case.model_type == "vlzoo_visual_bert":
        out = model(
            **common, visual_embeds=batch["visual_feats"], visual_attention_mask=batch["visual_attention_mask"]
        )
        return [out.last_hidden_state, out.pooler_output]
    out = model(
        **common,
        visual_feats=batch["visual_feats"],
        visual_pos=batch["visual_pos"],
        visual_attention_mask=batch["visual_attention_mask"],
    )
    return [out.language_output, out.vision_output, out.pooled_output]


def training_loss(outputs: list[torch.Tensor]) -> torch.Tensor:
    """A loss that reaches every output: the sum of their mean squares, in float32."""
    return sum(output.float().square().mean() for output in outputs)


# ---------------------------------------------------------------------------------------------------------------
# one measurement, in its own process


def levers_for(case: Case, settings: Settings) -> Settings:
    """The settings this case runs with: the peers drop every lever when asked to run as transformers' defaults."""
    if case.implementation == "vl_zoo" or settings.peer_settings == "same":
        return settings
    return dataclasses.replace(
        settings, bf16=False, compile=False, checkpointing=False, fused_adamw=False, sdpa_backends=()
    )


def describe_levers(case: Case, settings: Settings) -> str:
    """The levers a row ran with, for the table (e.g. "bf16+compile")."""
    own = levers_for(case, settings)
    levers = [name for name, on in _lever_flags(own) if on]
    if case.implementation == "vl_zoo":
        levers.insert(0, settings.attn_implementation)
    return "+".join(levers) or "-"


def _lever_flags(settings: Settings) -> list[tuple[str, bool]]:
    return [
        ("bf16", settings.bf16),
        ("compile", settings.compile),
        ("ckpt", settings.checkpointing),
        ("fusedAdamW", settings.fused_adamw),
    ]


def build_model(case: Case, settings: Settings, device: torch.device) -> tuple[nn.Module, vl_zoo.VLConfig]:
    """The case's model on the device, in train or eval mode, seeded."""
    torch.manual_seed(settings.seed)
    config = vl_zoo_config(case.model_type, settings)
    if case.implementation == "vl_zoo":
        model = ARCHITECTURES[case.model_type][1](config)
    else:
        model = peer_model(config)
    model.to(device)
    return (model.train() if case.mode == "train" else model.eval()), config


def enable_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing through transformers' switch; refused by models that do not support it."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise NotImplementedError(f"{type(model).__name__} does not support activation checkpointing")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def compile_model(model: nn.Module, case: Case) -> nn.Module:
    """torch.compile (vl_zoo's without graph breaks); inference also freezes the weights into the graph.

    Inductor's freezing treats parameters as constants, so their bf16 casts under autocast are done once at
    compile time instead of in every forward, and the module's own float32 weights are dropped; it is set for
    this measuring process only.
    """
    if case.mode == "infer":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        inductor_config.freezing_discard_parameters = True  # the frozen constants replace the float32 weights
    return torch.compile(model, fullgraph=case.implementation == "vl_zoo")


def autocast(settings: Settings, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked, and the chosen scaled-dot-product-attention kernels."""
    stack = contextlib.ExitStack()
    if settings.bf16:
        stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
    if settings.sdpa_backends:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION"}
        names["math"] = "MATH"
        backends = [getattr(SDPBackend, names[name]) for name in settings.sdpa_backends]
        stack.enter_context(sdpa_kernel(backends, set_priority=True))
    return stack


def make_step(
    model: nn.Module, case: Case, settings: Settings, batch: dict[str, torch.Tensor], device: torch.device
) -> Callable[[], None]:
    """A function that runs one training step or one inference forward."""
    if case.mode == "infer":

        def infer() -> None:
            with torch.inference_mode(), autocast(settings, device):
                forward_outputs(model, case, batch)

        return infer

    fused = settings.fused_adamw or None  # None: torch's default for the device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=fused)

    def train() -> None:
        with autocast(settings, device):
            loss = training_loss(forward_outputs(model, case, batch))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return train


def count_flops(model: nn.Module, case: Case, settings: Settings, batch: dict[str, torch.Tensor]) -> float:
    """Model FLOPs of one step (forward, and backward when training), counted on the eager model."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_flops())
    with counter:
        if case.mode == "infer":
            with torch.inference_mode(), autocast(settings, device):
                forward_outputs(model, case, batch)
        else:
            with autocast(settings, device):
                loss = training_loss(forward_outputs(model, case, batch))
            loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _cpu_attention_flops() -> dict:
    """FLOP formulas for torch's fused CPU attention kernel, which torch's FLOP counter does not know."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    return {
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }


class MemoryMeter:
    """Peak memory of the measured steps, in MiB: CPU resident set above a baseline, or CUDA allocations."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline = 0.0
        if device.type != "cuda":
            _release_free_heap()
            self.baseline = _proc_status_mib("VmRSS")

    def reset(self) -> None:
        """Start the peak from now (after the warm-up)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _release_free_heap()
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets VmHWM to the current resident set

    def peak(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return _proc_status_mib("VmHWM") - self.baseline


def _release_free_heap() -> None:
    """Hand memory that malloc keeps after frees back to the OS, so the resident set is what is in use.

    Without it the peak also counts whatever heap the build or the warm-up happened to leave behind, which
    differed by up to 4% between implementations and between rounds.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if hasattr(libc, "malloc_trim"):  # glibc
        libc.malloc_trim(0)


def _proc_status_mib(field_name: str) -> float:
    """A kB field of /proc/self/status (Linux), in MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field_name}")


def measure(case: Case, settings: Settings) -> dict[str, Any]:
    """Build, warm up and time one case in this process; returns step times, peak memory, params and FLOPs."""
    own = levers_for(case, settings)
    device = torch.device(own.device)
    if own.threads:
        torch.set_num_threads(own.threads)
    config = vl_zoo_config(case.model_type, own)
    batch = make_batch(config, own, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    meter = MemoryMeter(device)
    model, _ = build_model(case, own, device)
    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(model, case, own, batch) if own.peak_tflops else None
    if own.checkpointing and case.mode == "train":
        enable_checkpointing(model)
    if own.compile:
        model = compile_model(model, case)
    step = make_step(model, case, own, batch, device)

    for _ in range(own.warmup):
        step()
    sync()
    meter.reset()
    times = []
    for _ in range(own.steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return {"step_seconds": times, "peak_mib": meter.peak(), "params": params, "flops": flops}


def _child(connection: Any, case: Case, settings: Settings) -> None:
    try:
        connection.send(measure(case, settings))
    except Exception as error:  # reported in the table instead of ending the whole run
        connection.send({"error": f"{type(error).__name__}: {error}"})
    finally:
        connection.close()


def measure_in_child(context: Any, case: Case, settings: Settings) -> dict[str, Any]:
    """`measure` in a fresh process of the fork server, so that its peak memory is its own."""
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(sender, case, settings))
    process.start()
    sender.close()
    try:
        outcome = receiver.recv()
    except EOFError:
        outcome = {"error": "the measuring process died (out of memory?)"}
    process.join()
    return outcome


# ---------------------------------------------------------------------------------------------------------------
# rounds and the table


def cases(settings: Settings) -> Iterator[list[Case]]:
    """Per architecture and mode, the cases to alternate: vl_zoo, then its transformers peer if it has one."""
    for model_type in settings.models:
        for mode in settings.modes:
            group = [Case(model_type, "vl_zoo", mode)]
            if model_type in PEERS:
                group.append(Case(model_type, "transformers", mode))
            yield group


def run(settings: Settings, log: Callable[[str], None] = print) -> list[Result]:
    """All rounds, alternating vl_zoo and its peer (A B A B), each measurement in a fresh process."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "transformers", "vl_zoo"])
    results: dict[Case, Result] = {}
    for round_index in range(settings.rounds):
        for group in cases(settings):
            for case in group:
                result = results.setdefault(case, Result(case, levers=describe_levers(case, settings)))
                outcome = measure_in_child(context, case, settings)
                _record(result, outcome)
                log(f"round {round_index + 1}/{settings.rounds} {_label(case)}: {_progress(outcome)}")
    return list(results.values())


def _record(result: Result, outcome: dict[str, Any]) -> None:
    if "error" in outcome:
        result.error = outcome["error"]
        return
    result.step_seconds += outcome["step_seconds"]
    result.peak_mib.append(outcome["peak_mib"])
    result.params, result.flops = outcome["params"], outcome["flops"]


def _label(case: Case) -> str:
    return f"{SHORT_NAMES[case.model_type]} {case.implementation} {case.mode}"


def _progress(outcome: dict[str, Any]) -> str:
    if "error" in outcome:
        return outcome["error"]
    seconds = ", ".join(f"{s:.3f}" for s in outcome["step_seconds"])
    return f"steps {seconds} s, peak {outcome['peak_mib']:.0f} MiB"


def samples_per_second(result: Result, settings: Settings) -> float:
    return settings.batch_size / statistics.median(result.step_seconds)


def table(results: list[Result], settings: Settings) -> list[str]:
    """One line per case: speed, memory, and the ratio to the peer of the same architecture and mode."""
    by_case = {result.case: result for result in results}
    mfu = settings.peak_tflops is not None
    header = f"{'model':<11} {'implementation':<28} {'levers':<22} {'mode':<5} {'params':>7} {'samples/s':>10} "
    header += f"{'step ms':>9} {'peak MiB':>9} {'speed-up':>9} {'memory':>7}"
    lines = [header + (f" {'TFLOP/s':>8} {'MFU':>6}" if mfu else "")]
    for result in results:
        case = result.case
        name = "transformers " + PEERS[case.model_type] if case.implementation == "transformers" else "vl_zoo"
        prefix = f"{SHORT_NAMES[case.model_type]:<11} {name:<28} {result.levers:<22} {case.mode:<5}"
        if result.error or not result.step_seconds:
            lines.append(f"{prefix} failed: {result.error}")
            continue
        peer = by_case.get(Case(case.model_type, "transformers", case.mode))
        lines.append(prefix + " " + _figures(result, peer, settings) + (" " + _mfu(result, settings) if mfu else ""))
    return lines


def _figures(result: Result, peer: Result | None, settings: Settings) -> str:
    step, peak = statistics.median(result.step_seconds), statistics.median(result.peak_mib)
    speed_up = memory = "-"
    if result.case.implementation == "vl_zoo" and peer is not None and peer.step_seconds and not peer.error:
        speed_up = f"{statistics.median(peer.step_seconds) / step:.2f}x"
        memory = f"{peak / statistics.median(peer.peak_mib):.2f}x"
    return (
        f"{result.params / 1e6:>6.1f}M {settings.batch_size / step:>10.2f} {step * 1e3:>9.0f} {peak:>9.0f} "
        f"{speed_up:>9} {memory:>7}"
    )


def _mfu(result: Result, settings: Settings) -> str:
    achieved = result.flops / statistics.median(result.step_seconds) / 1e12
    return f"{achieved:>8.2f} {achieved / settings.peak_tflops:>6.1%}"


def header(settings: Settings) -> list[str]:
    """What ran, where, and how loaded the machine was."""
    threads = settings.threads or torch.get_num_threads()
    where = f"{settings.device}, {threads} threads" if settings.device == "cpu" else _cuda_name()
    peers = "the same levers" if settings.peer_settings == "same" else "transformers' defaults (fp32, eager)"
    return [
        f"batch {settings.batch_size}: {settings.text_length} text positions, {settings.regions} region rows; "
        f"{settings.steps} measured steps after {settings.warmup} warm-up, {settings.rounds} rounds (A B A B); "
        f"median step",
        f"{'tiny presets (--quick)' if settings.quick else 'ctrl configs'}; peers run with {peers}",
        f"{where}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"python {platform.python_version()}",
    ]


def _cuda_name() -> str:
    return f"cuda: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "cuda (not available)"


# ---------------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_TYPES), choices=MODEL_TYPES)
    parser.add_argument("--modes", nargs="+", default=["train", "infer"], choices=("train", "infer"))
    parser.add_argument("--batch-size", type=int, default=None, help="default 8 (2 with --quick)")
    parser.add_argument("--steps", type=int, default=None, help="measured steps per process (default 3)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per process (default 1)")
    parser.add_argument("--rounds", type=int, default=None, help="A B rounds (default 2, 1 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile (vl_zoo with fullgraph=True; inference frozen)"
    )
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing when training")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (weights stay float32)")
    parser.add_argument("--fused-adamw", action="store_true", help="torch's fused AdamW kernel")
    parser.add_argument("--attn-implementation", default="sdpa", choices=("sdpa", "eager"), help="vl_zoo's")
    parser.add_argument(
        "--sdpa-backend",
        nargs="+",
        default=[],
        choices=SDPA_BACKENDS,
        help="scaled-dot-product kernels allowed, in order of preference (torch.nn.attention.sdpa_kernel)",
    )
    parser.add_argument(
        "--peer-settings",
        default="same",
        choices=("same", "defaults"),
        help="same: the peers get the same levers; defaults: the peers run as transformers does by default",
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, for MFU columns")
    parser.add_argument("--quick", action="store_true", help="tiny presets, batch 2, one round: a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return _settings(args)


def _settings(args: argparse.Namespace) -> Settings:
    quick = args.quick

    def pick(value: int | None, normal: int, small: int) -> int:
        return value if value is not None else (small if quick else normal)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    return Settings(
        models=tuple(args.models),
        modes=tuple(args.modes),
        batch_size=pick(args.batch_size, 8, 2),
        steps=pick(args.steps, 3, 2),
        warmup=pick(args.warmup, 1, 1),
        rounds=pick(args.rounds, 2, 1),
        threads=args.threads,
        device=args.device,
        bf16=args.bf16,
        compile=args.compile,
        checkpointing=args.checkpointing,
        fused_adamw=args.fused_adamw,
        attn_implementation=args.attn_implementation,
        sdpa_backends=tuple(args.sdpa_backend),
        peer_settings=args.peer_settings,
        peak_tflops=args.peak_tflops,
        quick=quick,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    start = time.perf_counter()
    results = run(settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    lines = [*header(settings), "", *table(results, settings), "", f"wall time {time.perf_counter() - start:.0f} s"]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
