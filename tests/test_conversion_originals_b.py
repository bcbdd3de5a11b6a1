"""Converters of the ViLBERT, UNITER and VL-BERT authors' checkpoints, checked against re-implementations.

transformers has none of the three, so each original's published forward pass is re-stated here in plain torch,
over the original's own key names: ViLBERT (facebookresearch/vilbert-multi-task `vilbert/vilbert.py`), UNITER
(ChenRocks/UNITER `model/model.py`, `model/pretrain.py`) and VL-BERT (jackroos/VL-BERT
`common/visual_linguistic_bert.py`, `common/fast_rcnn.py`, `common/utils/bbox.py`). Each re-statement has its own
data loader too (global row, box code, padding), fed the same raw features, pixel boxes and image sizes as the
converted model's processor, so the processor settings are checked with the weights. The state dicts are built
from the originals' module structure with seeded random tensors. Text layers are standard BERT layers; the tiny
models have 2 to 4 of them, which is enough to exercise every key. Tolerance: 1e-5 in float32 on padded batches.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vl_zoo.conversion.common import ConversionError
from vl_zoo.conversion.originals import convert_original

ATOL = 1e-5
VOCAB, POSITIONS, FEATURES = 50, 64, 16


# ---------------------------------------------------------------------------------------------- state dicts


class Weights:
    """Seeded random tensors under the original's key names; LayerNorm gains near 1."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.state: dict[str, torch.Tensor] = {}

    def tensor(self, key: str, *shape: int) -> None:
        noise = torch.randn(shape, generator=self.generator) * 0.2
        self.state[key] = noise + 1.0 if "LayerNorm.weight" in key or "layer_norm.weight" in key else noise

    def linear(self, name: str, out_size: int, in_size: int) -> None:
        self.tensor(f"{name}.weight", out_size, in_size)
        self.tensor(f"{name}.bias", out_size)

    def layer_norm(self, name: str, size: int) -> None:
        self.tensor(f"{name}.weight", size)
        self.tensor(f"{name}.bias", size)

    def bert_layer(self, name: str, hidden: int, intermediate: int) -> None:
        for part in ("query", "key", "value"):
            self.linear(f"{name}.attention.self.{part}", hidden, hidden)
        self.linear(f"{name}.attention.output.dense", hidden, hidden)
        self.layer_norm(f"{name}.attention.output.LayerNorm", hidden)
        self.linear(f"{name}.intermediate.dense", intermediate, hidden)
        self.linear(f"{name}.output.dense", hidden, intermediate)
        self.layer_norm(f"{name}.output.LayerNorm", hidden)

    def text_embeddings(self, root: str, hidden: int, types: int = 2, layer_norm: str = "LayerNorm") -> None:
        self.tensor(f"{root}word_embeddings.weight", VOCAB, hidden)
        self.tensor(f"{root}position_embeddings.weight", POSITIONS, hidden)
        self.tensor(f"{root}token_type_embeddings.weight", types, hidden)
        self.layer_norm(f"{root}{layer_norm}", hidden)

    def mlm_head(self, root: str, hidden: int, word_embeddings: str) -> None:
        self.tensor(f"{root}bias", VOCAB)
        self.linear(f"{root}transform.dense", hidden, hidden)
        self.layer_norm(f"{root}transform.LayerNorm", hidden)
        self.state[f"{root}decoder.weight"] = self.state[word_embeddings]  # tied, as the originals save it


# ViLBERT sizes: text 32 wide (4 heads), vision 24 (3 heads), co-attention 40 (4 heads): all three differ.
VB = {"H": 32, "I": 64, "Hv": 24, "Iv": 48, "Bi": 40, "T": 4, "C": 2, "heads": 4, "v_heads": 3, "bi_heads": 4}
VB_CONFIG = {
    "vocab_size": VOCAB,
    "hidden_size": VB["H"],
    "num_hidden_layers": VB["T"],
    "num_attention_heads": VB["heads"],
    "intermediate_size": VB["I"],
    "max_position_embeddings": POSITIONS,
    "type_vocab_size": 2,
    "v_feature_size": FEATURES,
    "v_target_size": 1601,
    "v_hidden_size": VB["Hv"],
    "v_num_hidden_layers": VB["C"],
    "v_num_attention_heads": VB["v_heads"],
    "v_intermediate_size": VB["Iv"],
    "bi_hidden_size": VB["Bi"],
    "bi_num_attention_heads": VB["bi_heads"],
    "v_biattention_id": [0, 1],
    "t_biattention_id": [2, 3],
    "bi_intermediate_size": 1024,
    "bi_attention_type": 1,
    "pooling_method": "mul",
}


def vilbert_state(seed: int = 0, vqa_answers: int = 0) -> dict[str, torch.Tensor]:
    """BertForMultiModalPreTraining's keys (or VILBertForVLTasks' with `vqa_answers`), vilbert/vilbert.py."""
    w = Weights(seed)
    H, Hv, Bi = VB["H"], VB["Hv"], VB["Bi"]
    w.text_embeddings("bert.embeddings.", H)
    w.linear("bert.v_embeddings.image_embeddings", Hv, FEATURES)
    w.linear("bert.v_embeddings.image_location_embeddings", Hv, 5)
    w.layer_norm("bert.v_embeddings.LayerNorm", Hv)
    for i in range(VB["T"]):
        w.bert_layer(f"bert.encoder.layer.{i}", H, VB["I"])
    for j in range(VB["C"]):
        w.bert_layer(f"bert.encoder.v_layer.{j}", Hv, VB["Iv"])
    for k in range(VB["C"]):
        c = f"bert.encoder.c_layer.{k}"
        for part in ("query", "key", "value"):
            w.linear(f"{c}.biattention.{part}1", Bi, Hv)
            w.linear(f"{c}.biattention.{part}2", Bi, H)
        for side, size in (("1", Hv), ("2", H)):
            w.linear(f"{c}.biOutput.dense{side}", size, Bi)
            w.layer_norm(f"{c}.biOutput.LayerNorm{side}", size)
            w.linear(f"{c}.biOutput.q_dense{side}", size, Bi)
        w.linear(f"{c}.v_intermediate.dense", VB["Iv"], Hv)
        w.linear(f"{c}.v_output.dense", Hv, VB["Iv"])
        w.layer_norm(f"{c}.v_output.LayerNorm", Hv)
        w.linear(f"{c}.t_intermediate.dense", VB["I"], H)
        w.linear(f"{c}.t_output.dense", H, VB["I"])
        w.layer_norm(f"{c}.t_output.LayerNorm", H)
    w.linear("bert.t_pooler.dense", Bi, H)
    w.linear("bert.v_pooler.dense", Bi, Hv)
    w.mlm_head("cls.predictions.", H, "bert.embeddings.word_embeddings.weight")
    w.linear("cls.bi_seq_relationship", 2, Bi)
    w.linear("cls.imagePredictions.transform.dense", Hv, Hv)
    w.layer_norm("cls.imagePredictions.transform.LayerNorm", Hv)
    w.linear("cls.imagePredictions.decoder", 1601, Hv)
    if vqa_answers:
        w.linear("vil_prediction.logit_fc.0", 2 * Bi, Bi)
        w.layer_norm("vil_prediction.logit_fc.2", 2 * Bi)
        w.linear("vil_prediction.logit_fc.3", vqa_answers, 2 * Bi)
        w.linear("vil_prediction_gqa.logit_fc.0", 2 * Bi, Bi)
        w.linear("vil_logit", 1, Bi)
        w.linear("vision_logit", 1, Hv)
        w.linear("linguisic_logit", 1, H)
    return w.state


UN = {"H": 32, "I": 64, "L": 2, "heads": 4}


def uniter_state(seed: int = 0, vqa_answers: int = 0) -> dict[str, torch.Tensor]:
    """UniterForPretraining's keys (model/pretrain.py), or UniterForVisualQuestionAnswering's with `vqa_answers`."""
    w = Weights(seed)
    H = UN["H"]
    w.text_embeddings("uniter.embeddings.", H)
    w.linear("uniter.img_embeddings.img_linear", H, FEATURES)
    w.layer_norm("uniter.img_embeddings.img_layer_norm", H)
    w.layer_norm("uniter.img_embeddings.pos_layer_norm", H)
    w.linear("uniter.img_embeddings.pos_linear", H, 7)
    w.tensor("uniter.img_embeddings.mask_embedding.weight", 2, FEATURES)
    w.layer_norm("uniter.img_embeddings.LayerNorm", H)
    for i in range(UN["L"]):
        w.bert_layer(f"uniter.encoder.layer.{i}", H, UN["I"])
    w.linear("uniter.pooler.dense", H, H)
    if vqa_answers:
        w.linear("vqa_output.0", 2 * H, H)
        w.layer_norm("vqa_output.2", 2 * H)
        w.linear("vqa_output.3", vqa_answers, 2 * H)
        return w.state
    w.mlm_head("cls.predictions.", H, "uniter.embeddings.word_embeddings.weight")
    w.linear("feat_regress.net.0", H, H)
    w.layer_norm("feat_regress.net.2", H)
    w.state["feat_regress.weight"] = w.state["uniter.img_embeddings.img_linear.weight"]  # tied, used transposed
    w.tensor("feat_regress.bias", FEATURES)
    w.linear("region_classifier.net.0", H, H)
    w.layer_norm("region_classifier.net.2", H)
    w.linear("region_classifier.net.3", 1601, H)
    w.linear("itm_output", 2, H)
    return w.state


VLB = {"H": 32, "I": 64, "L": 2, "heads": 4, "coord": 256}


def vl_bert_state(seed: int = 0, finetuned: bool = False) -> dict[str, torch.Tensor]:
    """ResNetVLBERTForPretrainingMultitask's keys with precomputed features (pretrain/modules/), or a VQA model's."""
    w = Weights(seed)
    H = VLB["H"]
    w.linear("image_feature_extractor.obj_downsample.1", H, 8 * VLB["coord"] + FEATURES)
    w.tensor("object_linguistic_embeddings.weight", 1, H)
    w.tensor("vlbert.word_embeddings.weight", VOCAB, H)
    w.tensor("vlbert.end_embedding.weight", 1, H)
    w.tensor("vlbert.position_embeddings.weight", POSITIONS, H)
    w.tensor("vlbert.token_type_embeddings.weight", 3, H)
    w.layer_norm("vlbert.embedding_LayerNorm", H)
    w.layer_norm("vlbert.visual_ln_text", H)
    w.layer_norm("vlbert.visual_ln_object", H)
    for i in range(VLB["L"]):
        w.bert_layer(f"vlbert.encoder.layer.{i}", H, VLB["I"])
    if finetuned:
        w.linear("final_mlp.0.dense", H, H)
        w.linear("final_mlp.2", 7, H)
        return w.state
    w.tensor("object_mask_visual_embedding.weight", 1, FEATURES)
    w.tensor("object_mask_word_embedding.weight", 1, H)
    w.tensor("aux_text_visual_embedding.weight", 1, H)
    w.mlm_head("vlbert.mlm_head.predictions.", H, "vlbert.word_embeddings.weight")
    w.linear("vlbert.mvrc_head.transform.dense", H, H)
    w.linear("vlbert.mvrc_head.region_cls_pred", 1601, H)
    return w.state


# ---------------------------------------------------------------------------------------------- raw inputs


def raw_batch(seed: int = 1) -> dict:
    """Three images with 3, 5 and 2 detector regions (pixel boxes, sizes (H, W)) and three padded captions."""
    generator = torch.Generator().manual_seed(seed)
    sizes = [(480, 640), (375, 500), (600, 400)]
    features, boxes = [], []
    for count, (height, width) in zip((3, 5, 2), sizes, strict=True):
        features.append(torch.randn(count, FEATURES, generator=generator).abs().numpy())
        corners = torch.rand(count, 4, generator=generator) * torch.tensor([width - 1, height - 1] * 2)
        x1, x2 = corners[:, 0].minimum(corners[:, 2]), corners[:, 0].maximum(corners[:, 2])
        y1, y2 = corners[:, 1].minimum(corners[:, 3]), corners[:, 1].maximum(corners[:, 3])
        boxes.append(torch.stack([x1, y1, x2, y2], dim=1).numpy())
    lengths = [6, 4, 5]
    input_ids = torch.zeros(3, max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(1, VOCAB, (length,), generator=generator)
    attention_mask = (input_ids > 0).long()
    return {"features": features, "boxes": boxes, "sizes": sizes, "input_ids": input_ids, "mask": attention_mask}


def model_inputs(raw: dict, processor) -> dict[str, torch.Tensor]:
    """What the converted model is fed: the text as is, the regions through the conversion's processor."""
    regions = processor(raw["features"], raw["boxes"], raw["sizes"])
    return {
        "input_ids": raw["input_ids"],
        "attention_mask": raw["mask"],
        "token_type_ids": torch.zeros_like(raw["input_ids"]),
        **regions,
    }


def pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image (R_i, D) tensors -> (B, max R_i, D) zero-padded, and the (B, max R_i) mask."""
    longest = max(len(r) for r in rows)
    out = torch.zeros(len(rows), longest, rows[0].shape[1])
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)], mask[i, : len(r)] = r, 1
    return out, mask


# ---------------------------------------------------------------------------------------------- shared maths


def linear(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def layer_norm(sd: dict, name: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-12)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def additive(mask: torch.Tensor) -> torch.Tensor:
    """The originals' extended mask: 0 for keys to attend, -10000 for padding; (B, 1, 1, L)."""
    return (1.0 - mask[:, None, None, :].float()) * -10000.0


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head scaled dot-product attention with an additive key mask; (B, Lq, W)."""

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], heads, -1).permute(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + mask
    context = torch.softmax(scores, dim=-1) @ v
    return context.permute(0, 2, 1, 3).flatten(2)


def bert_layer(sd: dict, name: str, x: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    q, k, v = (linear(sd, f"{name}.attention.self.{part}", x) for part in ("query", "key", "value"))
    context = attend(q, k, v, mask, heads)
    attended = layer_norm(
        sd, f"{name}.attention.output.LayerNorm", linear(sd, f"{name}.attention.output.dense", context) + x
    )
    hidden = gelu(linear(sd, f"{name}.intermediate.dense", attended))
    return layer_norm(sd, f"{name}.output.LayerNorm", linear(sd, f"{name}.output.dense", hidden) + attended)


def mlm_logits(sd: dict, root: str, x: torch.Tensor) -> torch.Tensor:
    hidden = layer_norm(sd, f"{root}transform.LayerNorm", gelu(linear(sd, f"{root}transform.dense", x)))
    return hidden @ sd[f"{root}decoder.weight"].T + sd[f"{root}bias"]


def text_embedding(sd: dict, root: str, input_ids: torch.Tensor, layer_norm_name: str = "LayerNorm") -> torch.Tensor:
    positions = torch.arange(input_ids.shape[1])
    summed = (
        sd[f"{root}word_embeddings.weight"][input_ids]
        + sd[f"{root}position_embeddings.weight"][positions]
        + sd[f"{root}token_type_embeddings.weight"][torch.zeros_like(input_ids)]
    )
    return layer_norm(sd, f"{root}{layer_norm_name}", summed)


def close(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    diff = (ours - theirs).abs().max().item()
    assert diff <= ATOL, f"{what}: max abs difference {diff:.3g} > {ATOL}"


# ---------------------------------------------------------------------------------------------- ViLBERT


def vilbert_loader(raw: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """_image_features_reader.py: mean feature first with box [0,0,1,1,1]; boxes x1/W, y1/H, x2/W, y2/H, area."""
    feats, locations = [], []
    for f, b, (height, width) in zip(raw["features"], raw["boxes"], raw["sizes"], strict=True):
        f, b = torch.as_tensor(f), torch.as_tensor(b)
        area = (b[:, 3] - b[:, 1]) * (b[:, 2] - b[:, 0]) / (width * height)
        loc = torch.stack([b[:, 0] / width, b[:, 1] / height, b[:, 2] / width, b[:, 3] / height, area], dim=1)
        feats.append(torch.cat([f.sum(0, keepdim=True) / len(f), f]))
        locations.append(torch.cat([torch.tensor([[0.0, 0.0, 1.0, 1.0, 1.0]]), loc]))
    feats, mask = pad_rows(feats)
    return feats, pad_rows(locations)[0], mask


def vilbert_reference(sd: dict, raw: dict) -> dict[str, torch.Tensor]:
    """BertForMultiModalPreTraining.forward (and VILBertForVLTasks' VQA head) in eval mode."""
    feats, locations, v_mask = vilbert_loader(raw)
    t_mask = raw["mask"]
    text = text_embedding(sd, "bert.embeddings.", raw["input_ids"])
    vision = layer_norm(
        sd,
        "bert.v_embeddings.LayerNorm",
        linear(sd, "bert.v_embeddings.image_embeddings", feats)
        + linear(sd, "bert.v_embeddings.image_location_embeddings", locations),
    )
    t_add, v_add = additive(t_mask), additive(v_mask)

    # BertEncoder.forward: text/vision layers up to each co-attention layer's ids, then the rest.
    t_start = v_start = 0
    for k, (v_end, t_end) in enumerate(zip(VB_CONFIG["v_biattention_id"], VB_CONFIG["t_biattention_id"], strict=True)):
        for i in range(t_start, t_end):
            text = bert_layer(sd, f"bert.encoder.layer.{i}", text, t_add, VB["heads"])
        for j in range(v_start, v_end):
            vision = bert_layer(sd, f"bert.encoder.v_layer.{j}", vision, v_add, VB["v_heads"])
        vision, text = vilbert_connection(sd, f"bert.encoder.c_layer.{k}", vision, v_add, text, t_add)
        t_start, v_start = t_end, v_end
    for j in range(v_start, VB["C"]):
        vision = bert_layer(sd, f"bert.encoder.v_layer.{j}", vision, v_add, VB["v_heads"])
    for i in range(t_start, VB["T"]):
        text = bert_layer(sd, f"bert.encoder.layer.{i}", text, t_add, VB["heads"])

    pooled = torch.relu(linear(sd, "bert.t_pooler.dense", text[:, 0])) * torch.relu(
        linear(sd, "bert.v_pooler.dense", vision[:, 0])
    )
    out = {"text": text, "vision": vision, "v_mask": v_mask, "pooled": pooled}
    out["mlm"] = mlm_logits(sd, "cls.predictions.", text)
    out["itm"] = linear(sd, "cls.bi_seq_relationship", pooled)
    region = linear(sd, "cls.imagePredictions.transform.dense", vision)
    region = layer_norm(sd, "cls.imagePredictions.transform.LayerNorm", gelu(region))
    out["region"] = linear(sd, "cls.imagePredictions.decoder", region)
    if "vil_prediction.logit_fc.0.weight" in sd:
        hidden = layer_norm(sd, "vil_prediction.logit_fc.2", gelu(linear(sd, "vil_prediction.logit_fc.0", pooled)))
        out["vqa"] = linear(sd, "vil_prediction.logit_fc.3", hidden)
    return out


def vilbert_connection(sd: dict, name: str, vision, v_add, text, t_add) -> tuple[torch.Tensor, torch.Tensor]:
    """BertConnectionLayer: bi-attention (suffix 1 = vision, 2 = text), its outputs, then both feed-forwards."""
    heads = VB["bi_heads"]
    q1, k1, v1 = (linear(sd, f"{name}.biattention.{p}1", vision) for p in ("query", "key", "value"))
    q2, k2, v2 = (linear(sd, f"{name}.biattention.{p}2", text) for p in ("query", "key", "value"))
    context1 = attend(q2, k1, v1, v_add, heads)  # text queries over the regions
    context2 = attend(q1, k2, v2, t_add, heads)  # region queries over the text
    vision_att = layer_norm(
        sd, f"{name}.biOutput.LayerNorm1", linear(sd, f"{name}.biOutput.dense1", context2) + vision
    )
    text_att = layer_norm(sd, f"{name}.biOutput.LayerNorm2", linear(sd, f"{name}.biOutput.dense2", context1) + text)
    vision_ff = linear(sd, f"{name}.v_output.dense", gelu(linear(sd, f"{name}.v_intermediate.dense", vision_att)))
    text_ff = linear(sd, f"{name}.t_output.dense", gelu(linear(sd, f"{name}.t_intermediate.dense", text_att)))
    return (
        layer_norm(sd, f"{name}.v_output.LayerNorm", vision_ff + vision_att),
        layer_norm(sd, f"{name}.t_output.LayerNorm", text_ff + text_att),
    )


def check_real_rows(ours: torch.Tensor, theirs: torch.Tensor, mask: torch.Tensor, what: str, offset: int = 0) -> None:
    """Compare the rows `mask` marks as real (ours may be padded longer, its rows shifted by `offset`)."""
    for i in range(mask.shape[0]):
        rows = mask[i].nonzero().flatten()
        close(ours[i, rows + offset], theirs[i, rows], f"{what}, example {i}")


@torch.no_grad()
def test_vilbert_matches_the_original_forward():
    sd, raw = vilbert_state(), raw_batch()
    result = convert_original("vilbert", sd, VB_CONFIG)
    model = result.build_model()
    ours = model(**model_inputs(raw, result.processor))
    theirs = vilbert_reference(sd, raw)

    text_mask = raw["mask"]
    check_real_rows(ours.text_last_hidden_state, theirs["text"], text_mask, "text states")
    check_real_rows(ours.vision_last_hidden_state, theirs["vision"], theirs["v_mask"], "region states")
    check_real_rows(ours.mlm_logits, theirs["mlm"], text_mask, "masked-word logits")
    check_real_rows(ours.region_logits, theirs["region"], theirs["v_mask"], "masked-region logits")
    close(ours.pooler_output, theirs["pooled"], "pooled (text x vision)")
    close(ours.itm_logits, theirs["itm"].flip(-1), "matching logits (ViLBERT: 0 = match; vl_zoo: 1 = match)")


@torch.no_grad()
def test_vilbert_task_checkpoint_keeps_its_vqa_head():
    sd, raw = vilbert_state(seed=3, vqa_answers=7), raw_batch()
    result = convert_original("vilbert", sd, VB_CONFIG)
    assert result.task == "vqa" and result.config.num_labels == 7
    assert result.processor.max_regions == 100  # the 12-in-1 task loaders keep 100 regions
    logits = result.build_model()(**model_inputs(raw, result.processor)).logits
    close(logits, vilbert_reference(sd, raw)["vqa"], "VQA logits")
    dropped = result.report.dropped
    assert "cls.predictions.bias" in dropped and "vil_logit.weight" in dropped and "vision_logit.bias" in dropped


def test_vilbert_report_accounts_for_every_key():
    sd = vilbert_state()
    # Only the text head count given: the other two are bert_base_6layer_6conect's 8, which divide 24 and 40.
    result = convert_original("vilbert", sd, {"num_attention_heads": VB["heads"]})
    report = result.report
    assert set(report.mapped.values()) | set(report.dropped) == set(sd)
    assert not set(report.mapped.values()) & set(report.dropped)
    for k in range(VB["C"]):
        for side in "12":
            reason = report.dropped[f"bert.encoder.c_layer.{k}.biOutput.q_dense{side}.weight"]
            assert "never uses" in reason
    assert report.dropped["cls.predictions.decoder.weight"].startswith("same tensor as")
    assert result.config.sublayer2attn_hidden_size == {"4": VB["Bi"], "8": VB["Bi"]}  # co-attention, 2 blocks
    assert result.config.v_num_attention_heads == 8 and any("bert_base_6layer_6conect" in n for n in report.notes)
    assert (result.processor.max_regions, result.processor.add_global_feature) == (36, "first")
    assert result.tokenizer == "bert-base-uncased"


# ---------------------------------------------------------------------------------------------- UNITER


def uniter_loader(raw: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """data/data.py: no global region; norm_bb (x1, y1, x2, y2, w, h normalised) plus w*h."""
    feats, positions = [], []
    for f, b, (height, width) in zip(raw["features"], raw["boxes"], raw["sizes"], strict=True):
        b = torch.as_tensor(b) / torch.tensor([width, height, width, height])
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        feats.append(torch.as_tensor(f))
        positions.append(torch.cat([b, w[:, None], h[:, None], (w * h)[:, None]], dim=1))
    return feats, positions


def uniter_reference(sd: dict, raw: dict) -> dict[str, torch.Tensor]:
    """UniterModel.forward with gather_index: [text; regions] packed without padding in between, then padded."""
    feats, positions = uniter_loader(raw)
    text = text_embedding(sd, "uniter.embeddings.", raw["input_ids"])
    region_type = sd["uniter.embeddings.token_type_embeddings.weight"][1]
    packed, lengths = [], []
    for i, (f, p) in enumerate(zip(feats, positions, strict=True)):
        image = layer_norm(
            sd, "uniter.img_embeddings.img_layer_norm", linear(sd, "uniter.img_embeddings.img_linear", f)
        )
        box = layer_norm(sd, "uniter.img_embeddings.pos_layer_norm", linear(sd, "uniter.img_embeddings.pos_linear", p))
        regions = layer_norm(sd, "uniter.img_embeddings.LayerNorm", image + box + region_type)
        length = int(raw["mask"][i].sum())
        packed.append(torch.cat([text[i, :length], regions]))
        lengths.append(length)
    joint, mask = pad_rows(packed)
    for k in range(UN["L"]):
        joint = bert_layer(sd, f"uniter.encoder.layer.{k}", joint, additive(mask), UN["heads"])
    pooled = torch.tanh(linear(sd, "uniter.pooler.dense", joint[:, 0]))
    out = {"joint": joint, "lengths": lengths, "pooled": pooled}
    if "vqa_output.0.weight" in sd:
        hidden = layer_norm(sd, "vqa_output.2", gelu(linear(sd, "vqa_output.0", pooled)))
        out["vqa"] = linear(sd, "vqa_output.3", hidden)
        return out
    out["mlm"] = mlm_logits(sd, "cls.predictions.", joint)
    out["itm"] = linear(sd, "itm_output", pooled)
    hidden = layer_norm(sd, "region_classifier.net.2", gelu(linear(sd, "region_classifier.net.0", joint)))
    out["region"] = linear(sd, "region_classifier.net.3", hidden)
    return out


@torch.no_grad()
def test_uniter_matches_the_original_forward():
    sd, raw = uniter_state(), raw_batch()
    result = convert_original("uniter", sd, {"num_attention_heads": UN["heads"], "vocab_size": VOCAB})
    ours = result.build_model()(**model_inputs(raw, result.processor))
    theirs = uniter_reference(sd, raw)

    for i, length in enumerate(theirs["lengths"]):
        regions = len(raw["features"][i])
        close(ours.text_last_hidden_state[i, :length], theirs["joint"][i, :length], f"text states, example {i}")
        close(ours.vision_last_hidden_state[i, :regions], theirs["joint"][i, length : length + regions], "regions")
        close(ours.mlm_logits[i, :length], theirs["mlm"][i, :length], f"masked-word logits, example {i}")
        region_logits = theirs["region"][i, length : length + regions]
        close(ours.region_logits[i, :regions], region_logits, f"masked-region logits, example {i}")
    close(ours.pooler_output, theirs["pooled"], "tanh pooled output")
    close(ours.itm_logits, theirs["itm"], "matching logits (1 = match in both)")


@torch.no_grad()
def test_uniter_vqa_checkpoint_and_fp16_container():
    sd = {key: value.half() for key, value in uniter_state(seed=5, vqa_answers=6).items()}
    raw = raw_batch(seed=2)
    result = convert_original("uniter", sd, {"num_attention_heads": UN["heads"]})
    assert result.task == "vqa" and "uniter.img_embeddings.mask_embedding.weight" in result.report.dropped
    # Every tensor the model keeps was stored in float16 and is cast; the dropped one is not.
    assert result.report.dtype_cast == {"torch.float16 -> torch.float32": len(sd) - 1}
    logits = result.build_model()(**model_inputs(raw, result.processor)).logits
    reference = uniter_reference({key: value.float() for key, value in sd.items()}, raw)
    close(logits, reference["vqa"], "VQA logits")


def test_uniter_report_tokenizer_and_processor():
    sd = uniter_state()
    result = convert_original("uniter", sd, {"num_attention_heads": UN["heads"]})
    report = result.report
    assert set(report.mapped.values()) | set(report.dropped) == set(sd)
    assert "pretraining masks" in report.dropped["uniter.img_embeddings.mask_embedding.weight"]
    assert report.dropped["feat_regress.weight"] == "same tensor as uniter.img_embeddings.img_linear.weight"
    assert "feat_regress.net.0.weight" in report.dropped
    assert result.tokenizer == "bert-base-cased"
    assert (result.processor.max_regions, result.processor.add_global_feature) == (100, None)
    assert (result.config.num_locs, result.config.fusion_method, result.config.fusion_act) == (7, "text", "tanh")


# ---------------------------------------------------------------------------------------------- VL-BERT


def vl_bert_loader(raw: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """conceptual_captions.py with precomputed features: whole-image box (0, 0, W-1, H-1) with the mean feature
    first, boxes clamped to W-1, H-1; im_info holds (W, H). Returns padded boxes, features, mask and im_info."""
    boxes, feats = [], []
    for f, b, (height, width) in zip(raw["features"], raw["boxes"], raw["sizes"], strict=True):
        f, b = torch.as_tensor(f), torch.as_tensor(b).clone()
        b = torch.cat([torch.tensor([[0.0, 0.0, width - 1.0, height - 1.0]]), b])
        b[:, [0, 2]] = b[:, [0, 2]].clamp(0, width - 1)
        b[:, [1, 3]] = b[:, [1, 3]].clamp(0, height - 1)
        boxes.append(b)
        feats.append(torch.cat([f.mean(0, keepdim=True), f]))
    boxes, mask = pad_rows(boxes)
    im_info = torch.tensor([[float(width), float(height)] for height, width in raw["sizes"]])
    return boxes, pad_rows(feats)[0], mask, im_info


def coordinate_embeddings(boxes: torch.Tensor, im_info: torch.Tensor, dim: int) -> torch.Tensor:
    """common/utils/bbox.py: (centre, size) / image size * 100 through `dim` sin and cos frequencies; (K, 8 dim)."""
    centre_size = torch.stack(
        [
            (boxes[:, 0] + boxes[:, 2]) / 2,
            (boxes[:, 1] + boxes[:, 3]) / 2,
            boxes[:, 2] - boxes[:, 0],
            boxes[:, 3] - boxes[:, 1],
        ],
        dim=1,
    )
    scale = torch.stack([im_info[:, 0], im_info[:, 1], im_info[:, 0], im_info[:, 1]], dim=1)
    position = centre_size / scale * 100
    frequencies = 1000 ** (torch.arange(dim, dtype=boxes.dtype) / dim)
    angles = position[:, :, None] / frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)


def vl_bert_reference(sd: dict, raw: dict) -> dict:
    """FastRCNN (precomputed) + VisualLinguisticBert.embedding/forward, packed as [text; objects; END]."""
    boxes, feats, box_mask, im_info = vl_bert_loader(raw)
    batch, H = boxes.shape[0], VLB["H"]
    obj_reps = torch.zeros(batch, boxes.shape[1], H)
    for i in range(batch):
        real = box_mask[i].bool()
        coords = coordinate_embeddings(boxes[i, real], im_info[i].expand(int(real.sum()), 2), VLB["coord"])
        obj_reps[i, real] = torch.relu(
            linear(sd, "image_feature_extractor.obj_downsample.1", torch.cat([coords, feats[i, real]], 1))
        )

    text_ids, text_mask = raw["input_ids"], raw["mask"].bool()
    text_vl = (
        sd["vlbert.word_embeddings.weight"][text_ids]
        + layer_norm(sd, "vlbert.visual_ln_text", obj_reps[:, 0])[:, None]
    )
    object_vl = sd["object_linguistic_embeddings.weight"][0] + layer_norm(sd, "vlbert.visual_ln_object", obj_reps)

    rows, lengths = [], []
    for i in range(batch):
        text_end, objects = int(text_mask[i].sum()), int(box_mask[i].sum())
        tokens = torch.cat([text_vl[i, :text_end], object_vl[i, :objects], sd["vlbert.end_embedding.weight"]])
        positions = torch.cat([torch.arange(text_end), torch.full((objects,), text_end), torch.tensor([text_end + 1])])
        types = torch.cat([torch.zeros(text_end, dtype=torch.long), torch.full((objects + 1,), 2)])
        summed = (
            tokens
            + sd["vlbert.position_embeddings.weight"][positions]
            + sd["vlbert.token_type_embeddings.weight"][types]
        )
        rows.append(layer_norm(sd, "vlbert.embedding_LayerNorm", summed))
        lengths.append((text_end, objects))
    joint, mask = pad_rows(rows)
    for k in range(VLB["L"]):
        joint = bert_layer(sd, f"vlbert.encoder.layer.{k}", joint, additive(mask), VLB["heads"])
    out = {"joint": joint, "lengths": lengths}
    if "vlbert.mlm_head.predictions.bias" in sd:
        out["mlm"] = mlm_logits(sd, "vlbert.mlm_head.predictions.", joint)
        hidden = gelu(linear(sd, "vlbert.mvrc_head.transform.dense", joint))
        out["region"] = linear(sd, "vlbert.mvrc_head.region_cls_pred", hidden)
    return out


@torch.no_grad()
def test_vl_bert_matches_the_original_forward():
    sd, raw = vl_bert_state(), raw_batch()
    yaml_config = {"NETWORK": {"VLBERT": {"num_attention_heads": VLB["heads"], "hidden_size": VLB["H"]}}}
    result = convert_original("vl-bert", sd, yaml_config)
    inputs = model_inputs(raw, result.processor)
    ours = result.build_model()(**inputs)
    theirs = vl_bert_reference(sd, raw)

    for i, (text_end, objects) in enumerate(theirs["lengths"]):
        joint = theirs["joint"][i]
        close(ours.text_last_hidden_state[i, :text_end], joint[:text_end], f"text states, example {i}")
        # Rows 0..objects-1: the whole image then the regions; row `objects` is [END] in both.
        close(ours.vision_last_hidden_state[i, : objects + 1], joint[text_end : text_end + objects + 1], "objects")
        close(ours.mlm_logits[i, :text_end], theirs["mlm"][i, :text_end], f"masked-word logits, example {i}")
        close(ours.region_logits[i, :objects], theirs["region"][i, text_end : text_end + objects], "MVRC logits")
        assert int(inputs["visual_attention_mask"][i].sum()) == objects + 1  # whole image, regions, [END]


@torch.no_grad()
def test_vl_bert_finetuned_checkpoint_converts_its_backbone():
    sd, raw = vl_bert_state(seed=4, finetuned=True), raw_batch(seed=3)
    result = convert_original("vl-bert", sd, {"num_attention_heads": VLB["heads"]})
    assert result.task == "backbone"
    assert "[MASK]" in result.report.dropped["final_mlp.2.weight"]
    ours = result.build_model()(**model_inputs(raw, result.processor))
    theirs = vl_bert_reference(sd, raw)
    for i, (text_end, _) in enumerate(theirs["lengths"]):
        close(ours.text_last_hidden_state[i, :text_end], theirs["joint"][i, :text_end], f"text states, example {i}")


def test_vl_bert_report_and_processor():
    sd = vl_bert_state()
    result = convert_original("vl-bert", sd, {"NETWORK": {"VLBERT": {"num_attention_heads": VLB["heads"]}}})
    report = result.report
    assert set(report.mapped.values()) | set(report.dropped) == set(sd)
    assert "text-only" in report.dropped["aux_text_visual_embedding.weight"]
    config = result.config
    assert (config.add_global_imgfeat, config.vl_bert_end_row, config.fusion_method) == ("first", True, "none")
    assert result.processor.to_dict()["end_row"] is True
    regions = result.processor([raw_batch()["features"][0]], [raw_batch()["boxes"][0]], [(480, 640)])
    assert regions["visual_pos"][0, 0].tolist() == pytest.approx([0, 0, 639 / 640, 479 / 480, 639 * 479 / 640 / 480])


# ---------------------------------------------------------------------------------------------- refusals


CASES = {
    "vilbert": (vilbert_state, "bert.encoder.c_layer.1.biattention.key2.weight", VB_CONFIG),
    "uniter": (uniter_state, "uniter.img_embeddings.pos_layer_norm.bias", {"num_attention_heads": UN["heads"]}),
    "vl-bert": (vl_bert_state, "vlbert.visual_ln_text.weight", {"num_attention_heads": VLB["heads"]}),
}


@pytest.mark.parametrize("model", sorted(CASES))
def test_a_head_count_the_weights_cannot_show_is_asked_for(model):
    """32-wide tiny weights and no config: the base models' default head count does not divide, so it is asked."""
    with pytest.raises(ConversionError, match="num_attention_heads.*--config"):
        convert_original(model, CASES[model][0](), None)


@pytest.mark.parametrize("model", sorted(CASES))
def test_missing_key_is_refused_by_name(model):
    build, key, config = CASES[model]
    state = build()
    del state[key]
    with pytest.raises(ConversionError, match="does not fill") as error:
        convert_original(model, state, config)
    assert CASES[model][1].replace("bert.encoder.c_layer.1.biattention.key2", "") in str(error.value) or "key" in str(
        error.value
    )


@pytest.mark.parametrize("model", sorted(CASES))
def test_unexpected_key_is_refused_by_name(model):
    build, _, config = CASES[model]
    state = build()
    state["bert.stray_adapter.weight" if model != "vl-bert" else "vlbert.stray_adapter.weight"] = torch.zeros(2)
    with pytest.raises(ConversionError, match="stray_adapter"):
        convert_original(model, state, config)


@pytest.mark.parametrize(
    ("model", "config", "message"),
    [
        ("vilbert", {**VB_CONFIG, "v_hidden_size": 1024}, "v_hidden_size"),
        ("vilbert", {**VB_CONFIG, "t_biattention_id": [1, 2]}, "t_biattention_id"),
        ("vilbert", {**VB_CONFIG, "dynamic_attention": True}, "dynamic_attention"),
        ("vilbert", {**VB_CONFIG, "visual_target": 2}, "NCE"),
        ("uniter", {"hidden_size": 768}, "hidden_size"),
        ("uniter", {"num_hidden_layers": 12}, "num_hidden_layers"),
        ("vl-bert", {"NETWORK": {"VLBERT": {"intermediate_size": 3072}}}, "intermediate_size"),
        ("vl-bert", {"NETWORK": {"VLBERT": {"visual_ln": False}}}, "visual_ln"),
        ("vl-bert", {"DATASET": {"ADD_IMAGE_AS_A_BOX": False}, "NETWORK": {}}, "ADD_IMAGE_AS_A_BOX"),
    ],
)
def test_config_contradicting_the_weights_is_refused(model, config, message):
    build = CASES[model][0]
    with pytest.raises(ValueError, match=message):
        convert_original(model, build(), config)


def test_layouts_vl_zoo_cannot_compute_are_refused():
    state = vl_bert_state()
    state["image_feature_extractor.backbone.conv1.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match="e2e"):
        convert_original("vl-bert", state, None)
    state = uniter_state()
    state["uniter.img_embeddings.pos_linear.weight"] = torch.zeros(UN["H"], 5)
    with pytest.raises(ConversionError, match="7-d"):
        convert_original("uniter", state, None)
    with pytest.raises(ConversionError, match="c_layer"):
        convert_original("vilbert", uniter_state(), None)
