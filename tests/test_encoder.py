"""The unified encoder against a plain re-statement of the release's sub-layer maths.

The reference below computes each attention sub-layer the way the release writes it: separate score blocks
for text->text, text->vision, vision->text and vision->vision, concatenated along the keys of each query stream,
one softmax, then each stream's output projection and LayerNorm. The encoder under test merges those blocks
into as few attention calls as it can; the two must agree in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_inputs, randomize_, tiny_config

from vl_zoo.modeling.encoder import AttentionMasks, AttentionSublayer, VLEncoder
from vl_zoo.models.programs import vilbert_program


def reference_attention(sublayer: AttentionSublayer, text, vision, text_mask, vision_mask):
    spec = sublayer.spec
    text_params, vision_params = sublayer.stream_modules()

    def heads(x, linear, num_heads):
        batch, length = x.shape[:2]
        return linear(x).view(batch, length, num_heads, -1).transpose(1, 2)

    def run(params, x, num_heads, blocks):
        queries = heads(x, params.query, num_heads)
        scores = [queries @ keys.transpose(-1, -2) / math.sqrt(queries.shape[-1]) + mask for keys, _, mask in blocks]
        probs = torch.softmax(torch.cat(scores, dim=-1), dim=-1)
        context = probs @ torch.cat([values for _, values, _ in blocks], dim=2)
        merged = context.transpose(1, 2).flatten(2)
        return params.layer_norm(params.output(merged) + x)

    t_heads, v_heads = spec.num_heads, spec.v_num_heads
    new_text, new_vision = text, vision
    if spec.text_active:
        t_kv = (heads(text, text_params.key, t_heads), heads(text, text_params.value, t_heads), text_mask)
    if spec.vision_active:
        v_kv = (heads(vision, vision_params.key, v_heads), heads(vision, vision_params.value, v_heads), vision_mask)
    if spec.text_active:
        new_text = run(
            text_params, text, t_heads, [b for b, on in ((t_kv, spec.tt), (v_kv if spec.tv else None, spec.tv)) if on]
        )
    if spec.vision_active:
        new_vision = run(
            vision_params,
            vision,
            v_heads,
            [b for b, on in ((t_kv if spec.vt else None, spec.vt), (v_kv, spec.vv)) if on],
        )
    return new_text, new_vision


def reference_encoder(encoder: VLEncoder, text, vision, attention_mask, visual_attention_mask):
    text_mask = ((1.0 - attention_mask.to(text.dtype)) * -10000.0)[:, None, None, :]
    vision_mask = ((1.0 - visual_attention_mask.to(text.dtype)) * -10000.0)[:, None, None, :]
    for sublayer in encoder.sublayers:
        if isinstance(sublayer, AttentionSublayer):
            text, vision = reference_attention(sublayer, text, vision, text_mask, vision_mask)
        else:
            text_ff, vision_ff = sublayer.stream_modules()
            text = text_ff(text) if text_ff is not None else text
            vision = vision_ff(vision) if vision_ff is not None else vision
    return text, vision


def lists(**given):
    names = ("tt_attn", "tv_attn", "vt_attn", "vv_attn", "t_ff", "v_ff", "shared", "single_ln")
    return {f"{name}_sublayers": given.get(name, []) for name in names} | {
        "bert_layer2attn_sublayer": {},
        "bert_layer2ff_sublayer": {},
    }


def original_vilbert_tiny():
    program = vilbert_program(1, 2)
    co = program["tv_attn_sublayers"]
    return {
        **program,
        "v_hidden_size": 48,
        "v_num_attention_heads": 3,
        "v_intermediate_size": 40,
        "sublayer2attn_hidden_size": {str(n): 48 for n in co},
        "sublayer2num_attention_heads": {str(n): 3 for n in co},
    }


PROGRAMS = {
    "vilbert": ("vlzoo_vilbert", {}),
    "lxmert": ("vlzoo_lxmert", {}),
    "single_stream": ("vlzoo_uniter", {}),
    "original_vilbert_sizes": ("vlzoo_vilbert", original_vilbert_tiny()),
    "joint_with_separate_parameters": (
        "vlzoo_lxmert",
        lists(tt_attn=[0, 2], tv_attn=[0], vt_attn=[0], vv_attn=[0, 2], t_ff=[1, 3], v_ff=[1, 3]),
    ),
    "one_way_cross_attention": (
        "vlzoo_lxmert",
        lists(tt_attn=[0], vt_attn=[0], vv_attn=[0, 2], tv_attn=[], t_ff=[1], v_ff=[1, 3]),
    ),
    "shared_cross_without_single_ln": (
        "vlzoo_lxmert",
        lists(tv_attn=[0], vt_attn=[0], tt_attn=[2], vv_attn=[2], t_ff=[1, 3], v_ff=[1, 3], shared=[0, 3]),
    ),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_encoder_matches_the_release_maths(name, implementation):
    model_type, overrides = PROGRAMS[name]
    config = tiny_config(model_type, **overrides)
    encoder = randomize_(VLEncoder(config), seed=5).double().eval()
    inputs = make_inputs(config, batch=3)
    generator = torch.Generator().manual_seed(7)
    text = torch.randn(3, 7, config.hidden_size, generator=generator, dtype=torch.float64)
    vision = torch.randn(3, 5, config.v_hidden_size, generator=generator, dtype=torch.float64)
    masks = AttentionMasks.build(
        inputs["attention_mask"], inputs["visual_attention_mask"], torch.float64, implementation
    )

    with torch.no_grad():
        ours = encoder(text, vision, masks)[:2]
        expected = reference_encoder(encoder, text, vision, inputs["attention_mask"], inputs["visual_attention_mask"])
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_one_attention_call_per_sublayer_where_layouts_agree(monkeypatch):
    """Every attention sub-layer of these programs makes one call (tiny LXMERT: sub-layer 4 is text-only)."""
    from vl_zoo.modeling import encoder as encoder_module

    calls = []
    original = encoder_module.sdpa_attention

    def counting(q, k, v, mask, dropout, scale):
        calls.append((q.shape[2], k.shape[2]))
        return original(q, k, v, mask, dropout, scale)

    monkeypatch.setitem(encoder_module.ATTENTION_FUNCTIONS, "sdpa", counting)
    for model_type, expected in (
        ("vlzoo_uniter", [(12, 12)] * 3),
        ("vlzoo_lxmert", [(12, 12)] * 2 + [(7, 7)] + [(12, 12)] * 4),
    ):
        config = tiny_config(model_type)
        encoder = VLEncoder(config).eval()
        inputs = make_inputs(config, length=7, regions=5)
        masks = AttentionMasks.build(inputs["attention_mask"], inputs["visual_attention_mask"], torch.float32)
        calls.clear()
        encoder(torch.randn(3, 7, config.hidden_size), torch.randn(3, 5, config.v_hidden_size), masks)
        assert calls == expected, model_type


def test_untouched_stream_passes_through():
    config = tiny_config("vlzoo_vilbert")
    encoder = randomize_(VLEncoder(config)).eval()
    inputs = make_inputs(config)
    masks = AttentionMasks.build(inputs["attention_mask"], inputs["visual_attention_mask"], torch.float32)
    text, vision = torch.randn(3, 7, 32), torch.randn(3, 5, 32)
    # the first four sub-layers of tiny ViLBERT are text-only
    out_text, out_vision, _ = encoder.sublayers[0](text, vision, masks)
    assert torch.equal(out_vision, vision) and not torch.equal(out_text, text)
