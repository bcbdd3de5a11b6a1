"""VisualBERT and LXMERT against the transformers implementations, an independent statement of the same maths.

Random weights are drawn for the transformers model and copied into the vl_zoo model with the key maps below;
both then run the same padded batch. The vl_zoo configs are the architectures as published (tanh pooler on
[CLS], text-only pooling, no global region; LXMERT's 4-d boxes and answer head).
"""

from __future__ import annotations

import re

import pytest
import torch
from conftest import make_inputs, randomize_
from transformers import LxmertConfig as HFLxmertConfig
from transformers import LxmertForPreTraining as HFLxmertForPreTraining
from transformers import VisualBertConfig as HFVisualBertConfig
from transformers import VisualBertForPreTraining as HFVisualBertForPreTraining

import vl_zoo
from vl_zoo.models.programs import lxmert_program, single_stream_program

SIZES = {"vocab_size": 99, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}
PUBLISHED = {"fusion_method": "text", "fusion_act": "tanh", "pooler_size": 32, "add_global_imgfeat": None}
OURS = {
    **SIZES,
    **PUBLISHED,
    "v_hidden_size": 32,
    "v_num_attention_heads": 4,
    "v_intermediate_size": 64,
    "v_feature_size": 16,
    "v_pooler_size": 32,
    "max_position_embeddings": 64,
}
ATOL = 1e-5


def visual_bert_pair():
    hf = HFVisualBertForPreTraining(
        HFVisualBertConfig(**SIZES, num_hidden_layers=3, visual_embedding_dim=16, max_position_embeddings=64)
    )
    ours = vl_zoo.VisualBertForPreTraining(
        vl_zoo.VisualBertConfig(**OURS, **single_stream_program(3), visual_target_weights={})
    )
    return randomize_(hf, seed=11).eval(), ours.eval()


def visual_bert_key(key: str) -> str | None:
    """transformers VisualBertForPreTraining key -> vl_zoo key (None: tied or derived, not a parameter)."""
    if key in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
        return None
    key = key.replace("visual_bert.embeddings.LayerNorm", "vl.embeddings.layer_norm")
    key = key.replace("visual_bert.embeddings.visual_projection", "vl.embeddings.region_proj")
    key = key.replace("visual_bert.embeddings.", "vl.embeddings.")
    key = key.replace("visual_bert.pooler.dense", "vl.pooler.text_dense")
    key = key.replace("cls.predictions.transform.LayerNorm", "mlm_head.transform.layer_norm")
    key = key.replace("cls.predictions.", "mlm_head.").replace("cls.seq_relationship", "itm_head")
    if match := re.match(r"visual_bert\.encoder\.layer\.(\d+)\.(.+)$", key):
        layer, rest = int(match.group(1)), match.group(2)
        attention = rest.startswith("attention.")
        rest = rest.replace("attention.self.", "").replace("attention.output.dense", "output")
        rest = rest.replace("attention.output.LayerNorm", "layer_norm").replace("intermediate.dense", "intermediate")
        rest = rest.replace("output.dense", "output").replace("output.LayerNorm", "layer_norm")
        key = f"vl.encoder.sublayers.{2 * layer + (0 if attention else 1)}.shared.{rest}"
    return key


def lxmert_pair():
    hf = HFLxmertForPreTraining(
        HFLxmertConfig(
            **SIZES,
            l_layers=3,
            r_layers=2,
            x_layers=2,
            visual_feat_dim=16,
            visual_pos_dim=4,
            num_qa_labels=11,
            max_position_embeddings=64,
        )
    )
    ours = vl_zoo.LxmertForPreTraining(
        vl_zoo.LxmertConfig.from_preset("original_qa", **OURS, **lxmert_program(3, 2, 2), qa_num_answers=11)
    )
    return randomize_(hf, seed=12).eval(), ours.eval()


LXMERT_STREAM = {
    "attention.self.": "",
    "attention.output.dense": "output",
    "attention.output.LayerNorm": "layer_norm",
    "intermediate.dense": "intermediate",
    "output.dense": "output",
    "output.LayerNorm": "layer_norm",
}
LXMERT_CROSS = {  # cross-layer module -> (offset from the cross layer's first sub-layer, stream, BERT-style name)
    "visual_attention.att.": (0, "shared", "attention.self."),
    "visual_attention.output.": (0, "shared", "attention.output."),
    "lang_self_att.": (1, "text", "attention."),
    "visn_self_att.": (1, "vision", "attention."),
    "lang_inter.": (2, "text", "intermediate."),
    "lang_output.": (2, "text", "output."),
    "visn_inter.": (2, "vision", "intermediate."),
    "visn_output.": (2, "vision", "output."),
}


def lxmert_stream_name(rest: str) -> str:
    for old, new in LXMERT_STREAM.items():
        if rest.startswith(old):
            return new + rest[len(old) :] if new else rest[len(old) :]
    raise KeyError(rest)


def lxmert_key(key: str, l_layers: int = 3, r_layers: int = 2) -> str | None:
    if key == "cls.predictions.decoder.weight":
        return None
    fixed = {
        "lxmert.encoder.visn_fc.visn_fc": "vl.embeddings.region_proj",
        "lxmert.encoder.visn_fc.visn_layer_norm": "vl.embeddings.region_layer_norm",
        "lxmert.encoder.visn_fc.box_fc": "vl.embeddings.box_proj",
        "lxmert.encoder.visn_fc.box_layer_norm": "vl.embeddings.box_layer_norm",
        "lxmert.embeddings.LayerNorm": "vl.embeddings.layer_norm",
        "lxmert.embeddings.": "vl.embeddings.",
        "lxmert.pooler.dense": "vl.pooler.text_dense",
        "cls.predictions.transform.LayerNorm": "mlm_head.transform.layer_norm",
        "cls.predictions.": "mlm_head.",
        "cls.seq_relationship": "itm_head",
        "obj_predict_head.transform.LayerNorm": "region_head.transform.layer_norm",
        "obj_predict_head.transform.dense": "region_head.transform.dense",
        "obj_predict_head.decoder_dict.obj": "region_head.decoders.3",
        "obj_predict_head.decoder_dict.attr": "region_head.decoders.4",
        "obj_predict_head.decoder_dict.feat": "region_head.decoders.5",
        "answer_head.logit_fc.0": "answer_head.dense",
        "answer_head.logit_fc.2": "answer_head.layer_norm",
        "answer_head.logit_fc.3": "answer_head.decoder",
    }
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old) :]
    match = re.match(r"lxmert\.encoder\.(layer|r_layers|x_layers)\.(\d+)\.(.+)$", key)
    group, index, rest = match.group(1), int(match.group(2)), match.group(3)
    if group in ("layer", "r_layers"):
        offset = 0 if rest.startswith("attention.") else 1
        stream = "text" if group == "layer" else "vision"
        return f"vl.encoder.sublayers.{2 * index + offset}.{stream}.{lxmert_stream_name(rest)}"
    start = 2 * max(l_layers, r_layers) + 3 * index
    for module, (offset, stream, bert_name) in LXMERT_CROSS.items():
        if rest.startswith(module):
            return (
                f"vl.encoder.sublayers.{start + offset}.{stream}.{lxmert_stream_name(bert_name + rest[len(module) :])}"
            )
    raise KeyError(key)


def copy_weights(hf, ours, key_map):
    target = ours.state_dict()
    filled = set()
    with torch.no_grad():
        for key, value in hf.state_dict().items():
            if "position_ids" in key or (name := key_map(key)) is None:
                continue
            assert target[name].shape == value.shape, (key, name)
            target[name].copy_(value)
            filled.add(name)
    assert filled == set(target) - {"mlm_head.decoder.weight"}


def test_visual_bert_matches_transformers():
    hf, ours = visual_bert_pair()
    copy_weights(hf, ours, visual_bert_key)
    with torch.no_grad():  # transformers' VisualBERT calls a match 0, vl_zoo calls it 1
        ours.itm_head.weight.copy_(ours.itm_head.weight.flip(0))
        ours.itm_head.bias.copy_(ours.itm_head.bias.flip(0))
    config = ours.config
    inputs = make_inputs(config, regions=4)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, 1] = 3
    mine = ours(**inputs, labels=labels, itm_labels=torch.tensor([1, 0, 1]))
    mask = torch.cat([inputs["attention_mask"], inputs["visual_attention_mask"]], dim=1)
    theirs = hf(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        token_type_ids=inputs["token_type_ids"],
        visual_embeds=inputs["visual_feats"],
        visual_attention_mask=inputs["visual_attention_mask"],
        labels=torch.cat([labels, torch.full((3, 4), -100)], dim=1),
        sentence_image_labels=torch.tensor([0, 1, 0]),  # transformers: 0 means "matches"
        output_hidden_states=True,
    )
    joint = torch.cat([mine.text_last_hidden_state, mine.vision_last_hidden_state], dim=1)
    real = mask.bool()
    torch.testing.assert_close(joint[real], theirs.hidden_states[-1][real], rtol=0, atol=ATOL)
    torch.testing.assert_close(mine.mlm_logits, theirs.prediction_logits[:, :7], rtol=0, atol=ATOL)
    torch.testing.assert_close(mine.itm_logits, theirs.seq_relationship_logits.flip(-1), rtol=0, atol=ATOL)
    torch.testing.assert_close(mine.mlm_loss + mine.itm_loss, theirs.loss, rtol=0, atol=ATOL)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_lxmert_matches_transformers(implementation):
    hf, ours = lxmert_pair()
    copy_weights(hf, ours, lxmert_key)
    ours.config._attn_implementation = implementation
    inputs = make_inputs(ours.config, regions=4)
    mine = ours(**inputs)
    theirs = hf(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        token_type_ids=inputs["token_type_ids"],
        visual_feats=inputs["visual_feats"],
        visual_pos=inputs["visual_pos"][..., :4],
        visual_attention_mask=inputs["visual_attention_mask"],
        output_hidden_states=True,
    )
    text_real = inputs["attention_mask"].bool()
    vision_real = inputs["visual_attention_mask"].bool()
    torch.testing.assert_close(
        mine.text_last_hidden_state[text_real], theirs.language_hidden_states[-1][text_real], rtol=0, atol=ATOL
    )
    torch.testing.assert_close(
        mine.vision_last_hidden_state[vision_real], theirs.vision_hidden_states[-1][vision_real], rtol=0, atol=ATOL
    )
    torch.testing.assert_close(mine.mlm_logits, theirs.prediction_logits, rtol=0, atol=ATOL)
    torch.testing.assert_close(mine.itm_logits, theirs.cross_relationship_score, rtol=0, atol=ATOL)
    torch.testing.assert_close(mine.answer_logits, theirs.question_answering_score, rtol=0, atol=ATOL)
    with torch.no_grad():
        region_logits = hf.obj_predict_head(theirs.vision_hidden_states[-1])
    for ours_id, name in (("3", "obj"), ("4", "attr"), ("5", "feat")):
        got, want = mine.region_logits_by_target[ours_id][vision_real], region_logits[name][vision_real]
        torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
