"""Sub-layer programs of the published layer patterns, generated from their layer counts.

Each function returns the membership lists and BERT maps of `VLConfig` (see vl_zoo/configuration.py). The
numbering matches the unified-framework release's config files, so a generated ctrl program equals the one in
its `config/ctrl_*.json` and a checkpoint's `encoder.layer.{n}` keys line up with sub-layer `n`.
"""

from __future__ import annotations

from typing import Any

BERT_BASE_LAYERS = 12


def _empty_program() -> dict[str, Any]:
    lists = ("tt_attn", "tv_attn", "vt_attn", "vv_attn")
    program: dict[str, Any] = {f"{name}_sublayers": [] for name in lists}
    for name in ("t_ff_sublayers", "v_ff_sublayers", "shared_sublayers", "single_ln_sublayers"):
        program[name] = []
    return program


def _bert_maps(attn: list[int], ff: list[int], bert_layers: int) -> dict[str, dict[str, int]]:
    """Map the first `bert_layers` text layers of a BERT checkpoint onto the given text sub-layers, in order."""
    return {
        "bert_layer2attn_sublayer": {str(i): n for i, n in enumerate(attn[:bert_layers])},
        "bert_layer2ff_sublayer": {str(i): n for i, n in enumerate(ff[:bert_layers])},
    }


def single_stream_program(num_layers: int = 12) -> dict[str, Any]:
    """VL-BERT, VisualBERT, UNITER: BERT over the joint sequence [text; regions].

    Layer k is attention sub-layer 2k (all four directions) and feed-forward sub-layer 2k+1, every sub-layer
    shared by the two streams with one LayerNorm.
    """
    program = _empty_program()
    for k in range(num_layers):
        for name in ("tt_attn", "tv_attn", "vt_attn", "vv_attn"):
            program[f"{name}_sublayers"].append(2 * k)
        program["t_ff_sublayers"].append(2 * k + 1)
        program["v_ff_sublayers"].append(2 * k + 1)
    program["shared_sublayers"] = list(range(2 * num_layers))
    program["single_ln_sublayers"] = list(range(2 * num_layers))
    attn, ff = program["tt_attn_sublayers"], program["t_ff_sublayers"]
    program.update(_bert_maps(attn, ff, min(num_layers, BERT_BASE_LAYERS)))
    return program


def vilbert_program(text_layers: int = 6, blocks: int = 6) -> dict[str, Any]:
    """ViLBERT: `text_layers` text-only BERT layers, then `blocks` co-attention blocks.

    Block b starts at s = 2 * text_layers + 4b: co-attention (text queries see only regions and vice versa,
    separate parameters) at s, feed-forward for both streams at s+1, self-attention of each stream at s+2,
    feed-forward at s+3. BERT layers fill the text-only layers first, then the blocks' text self-attention.
    """
    program = _empty_program()
    text_attn, text_ff = [], []
    for k in range(text_layers):
        text_attn.append(2 * k)
        text_ff.append(2 * k + 1)
    block_attn, block_ff = [], []
    for b in range(blocks):
        s = 2 * text_layers + 4 * b
        program["tv_attn_sublayers"].append(s)
        program["vt_attn_sublayers"].append(s)
        program["vv_attn_sublayers"].append(s + 2)
        program["v_ff_sublayers"] += [s + 1, s + 3]
        block_attn.append(s + 2)
        block_ff += [s + 1, s + 3]
    program["tt_attn_sublayers"] = text_attn + block_attn
    program["t_ff_sublayers"] = text_ff + block_ff
    bert_ff = text_ff + [s + 3 for s in (2 * text_layers + 4 * b for b in range(blocks))]
    program.update(_bert_maps(program["tt_attn_sublayers"], bert_ff, text_layers + blocks))
    return program


def lxmert_program(l_layers: int = 9, r_layers: int = 5, x_layers: int = 5) -> dict[str, Any]:
    """LXMERT: language and object-relationship layers side by side, then cross-modality layers.

    Layer k < max(l, r) is attention sub-layer 2k (text self-attention if k < l, region self-attention if
    k < r) and feed-forward 2k+1. Cross layer x starts at s = 2 * max(l, r) + 3x: cross-attention both ways
    with one shared set of parameters at s, self-attention of each stream at s+1, feed-forward at s+2. BERT
    layers fill the language layers, then the cross layers' text self-attention.
    """
    program = _empty_program()
    for k in range(max(l_layers, r_layers)):
        if k < l_layers:
            program["tt_attn_sublayers"].append(2 * k)
            program["t_ff_sublayers"].append(2 * k + 1)
        if k < r_layers:
            program["vv_attn_sublayers"].append(2 * k)
            program["v_ff_sublayers"].append(2 * k + 1)
    cross_attn, cross_ff = [], []
    for x in range(x_layers):
        s = 2 * max(l_layers, r_layers) + 3 * x
        for name in ("tv_attn", "vt_attn"):
            program[f"{name}_sublayers"].append(s)
        program["shared_sublayers"].append(s)
        program["tt_attn_sublayers"].append(s + 1)
        program["vv_attn_sublayers"].append(s + 1)
        program["t_ff_sublayers"].append(s + 2)
        program["v_ff_sublayers"].append(s + 2)
        cross_attn.append(s + 1)
        cross_ff.append(s + 2)
    language_attn = [2 * k for k in range(l_layers)]
    language_ff = [2 * k + 1 for k in range(l_layers)]
    program.update(_bert_maps(language_attn + cross_attn, language_ff + cross_ff, BERT_BASE_LAYERS))
    return program
