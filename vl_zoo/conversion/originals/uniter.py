"""UNITER (ChenRocks/UNITER) as the authors saved it.

`uniter-base.pt` is `UniterForPretraining.state_dict()` saved flat (Horovod, no wrapper; apex O2 training may
leave float16 tensors): `uniter.embeddings.*` (BERT text embeddings), `uniter.img_embeddings.*` (image
embedding), `uniter.encoder.layer.{i}.*` (BERT layers over the joint sequence), `uniter.pooler.dense` (tanh),
and the heads `cls.predictions.*` (masked words, decoder tied to the word embeddings), `itm_output` (matching,
1 = match), `region_classifier.net.{0,2,3}` (masked-region classification, Linear-GELU-LayerNorm-Linear to the
1601 detector classes) and `feat_regress` (masked-region feature regression, whose weight is the image
projection's, used transposed). A fine-tuned VQA model has `vqa_output.{0,2,3}` instead of the heads.

The image embedding is LN(LN(W_f feature) + LN(W_b box7) + token type 1 of the text table), box7 being
(x1, y1, x2, y2, w, h, w*h) normalised by the image size: vl_zoo's UNITER embedding with `num_locs` 7, which
derives that vector from the canonical 5-d box. Text positions are 0..T-1 and regions have none, so the
authors' gathering of [text; regions] without padding in between changes nothing. The authors' features have
10 to 100 regions per image (detector confidence above 0.2) and no global region; the vocabulary is cased BERT's.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ...models.programs import single_stream_program
from ...models.uniter import UniterConfig
from ...processing import RegionFeatureProcessor
from ..common import ConversionError, StateDictConversion
from .common import OriginalConversion, count_layers, finish_conversion, head_count, reconcile_sizes, shape_of
from .lxmert import BERT_LAYER, HEADS_ASSUMED

logger = logging.getLogger(__name__)

TOKENIZER = "bert-base-cased"
MAX_REGIONS = 100  # the authors' image databases keep 10 to 100 boxes per image
BOX_WIDTH = 7

EMBEDDINGS = {
    "uniter.embeddings.word_embeddings": "vl.embeddings.word_embeddings",
    "uniter.embeddings.position_embeddings": "vl.embeddings.position_embeddings",
    "uniter.embeddings.token_type_embeddings": "vl.embeddings.token_type_embeddings",
    "uniter.embeddings.LayerNorm": "vl.embeddings.layer_norm",
    "uniter.img_embeddings.img_linear": "vl.embeddings.region_proj",
    "uniter.img_embeddings.img_layer_norm": "vl.embeddings.region_layer_norm",
    "uniter.img_embeddings.pos_linear": "vl.embeddings.box_proj",
    "uniter.img_embeddings.pos_layer_norm": "vl.embeddings.box_layer_norm",
    "uniter.img_embeddings.LayerNorm": "vl.embeddings.vision_layer_norm",
    "uniter.pooler.dense": "vl.pooler.text_dense",
}
PRETRAINING_HEADS = {
    "cls.predictions.transform.dense": "mlm_head.transform.dense",
    "cls.predictions.transform.LayerNorm": "mlm_head.transform.layer_norm",
    "itm_output": "itm_head",
    "region_classifier.net.0": "region_head.transform.dense",
    "region_classifier.net.2": "region_head.transform.layer_norm",
    "region_classifier.net.3": "region_head.decoders.0",
}
VQA_HEAD = {"vqa_output.0": "classifier.dense", "vqa_output.2": "classifier.layer_norm"}
VQA_HEAD["vqa_output.3"] = "classifier.decoder"
DROPPED = {
    "uniter.img_embeddings.mask_embedding.weight": (
        "masked-region embedding, added to a region's feature only when pretraining masks it"
    ),
    "feat_regress.net.0.weight": "feature-regression head: vl_zoo's region head has one transform, kept for MRC",
    "feat_regress.net.0.bias": "feature-regression head: vl_zoo's region head has one transform, kept for MRC",
    "feat_regress.net.2.weight": "feature-regression head: vl_zoo's region head has one transform, kept for MRC",
    "feat_regress.net.2.bias": "feature-regression head: vl_zoo's region head has one transform, kept for MRC",
    "feat_regress.bias": "feature-regression head: vl_zoo's region head has one transform, kept for MRC",
}
# Heads of the authors' other fine-tuning models, which vl_zoo's classes do not have.
OTHER_TASK_HEADS = {
    "nlvr2_output": "NLVR2 classifier over two images",
    "attn1": "NLVR2 paired-attention pooling",
    "attn2": "NLVR2 paired-attention pooling",
    "attn_pool": "NLVR2 paired-attention pooling",
    "rank_output": "retrieval ranking score",
    "ve_output": "SNLI-VE classifier",
    "re_output": "referring-expression score per region",
    "vcr_output": "VCR answer score",
}


def shown_sizes(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Every size the weights show: widths from shapes, the layer count from key names."""
    vocab_size, hidden_size = shape_of(state, "uniter.embeddings.word_embeddings.weight")
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "max_position_embeddings": shape_of(state, "uniter.embeddings.position_embeddings.weight")[0],
        "type_vocab_size": shape_of(state, "uniter.embeddings.token_type_embeddings.weight")[0],
        "intermediate_size": shape_of(state, "uniter.encoder.layer.0.intermediate.dense.weight")[0],
        "num_hidden_layers": count_layers(state, r"^uniter\.encoder\.layer\.(\d+)\."),
        "img_dim": shape_of(state, "uniter.img_embeddings.img_linear.weight")[1],
        "pos_dim": shape_of(state, "uniter.img_embeddings.pos_linear.weight")[1],
    }


def build_config(shown: dict[str, int], original: dict[str, Any], task: str, num_labels: int) -> UniterConfig:
    """vl_zoo's UNITER config: sizes from the weights, the head count and activation from the authors' JSON."""
    if shown["pos_dim"] != BOX_WIDTH:
        raise ConversionError(f"img_embeddings.pos_linear reads {shown['pos_dim']}-d boxes; UNITER's are 7-d")
    hidden = shown["hidden_size"]
    heads = head_count(original, "num_attention_heads", HEADS_ASSUMED, hidden, "uniter-base")
    values: dict[str, Any] = {
        "vocab_size": shown["vocab_size"],
        "hidden_size": hidden,
        "v_hidden_size": hidden,
        "pooler_size": hidden,
        "v_pooler_size": hidden,
        "intermediate_size": shown["intermediate_size"],
        "v_intermediate_size": shown["intermediate_size"],
        "num_attention_heads": heads,
        "v_num_attention_heads": heads,
        "max_position_embeddings": shown["max_position_embeddings"],
        "type_vocab_size": shown["type_vocab_size"],
        "v_feature_size": shown["img_dim"],
        "clf_hidden_size": 2 * hidden,
        **single_stream_program(shown["num_hidden_layers"]),
    }
    if task != "pretraining":
        values["visual_target_weights"] = {}
    for name in ("hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range"):
        if name in original:
            values[name] = original[name]
            values[f"v_{name}"] = original[name]
    config = UniterConfig.from_preset("original", **values)
    if task == "vqa":
        config.num_labels = num_labels
    return config


def task_of(state: dict[str, torch.Tensor]) -> str:
    """ "pretraining" (UniterForPretraining), "vqa" (UniterForVisualQuestionAnswering) or "backbone" (another task)."""
    if "cls.predictions.bias" in state:
        return "pretraining"
    return "vqa" if "vqa_output.0.weight" in state else "backbone"


def map_parameters(state: dict[str, torch.Tensor], num_layers: int, task: str) -> StateDictConversion:
    """Decide for every key: mapped, dropped with a reason, or unknown."""
    modules = dict(EMBEDDINGS)
    for k in range(num_layers):
        for name, (offset, ours) in BERT_LAYER.items():
            modules[f"uniter.encoder.layer.{k}.{name}"] = f"vl.encoder.sublayers.{2 * k + offset}.shared.{ours}"
    modules |= {"pretraining": PRETRAINING_HEADS, "vqa": VQA_HEAD}.get(task, {})
    parameters = {f"{src}.{leaf}": f"{dst}.{leaf}" for src, dst in modules.items() for leaf in ("weight", "bias")}

    conversion = StateDictConversion(state)
    for key in state:
        root = key.split(".")[0]
        if key in parameters:
            conversion.map(key, parameters[key])
        elif key == "cls.predictions.bias":
            conversion.map(key, "mlm_head.bias")
        elif key == "cls.predictions.decoder.weight":
            conversion.alias(key, "uniter.embeddings.word_embeddings.weight")
        elif key == "feat_regress.weight":
            conversion.alias(key, "uniter.img_embeddings.img_linear.weight")
        elif key in DROPPED:
            conversion.drop(key, DROPPED[key])
        elif root in OTHER_TASK_HEADS:
            conversion.drop(key, f"{OTHER_TASK_HEADS[root]}; vl_zoo has no such head on this model")
        else:
            conversion.unknown.append(key)
    return conversion


def convert(state_dict: dict[str, torch.Tensor], original_config: dict | None) -> OriginalConversion:
    """A UNITER checkpoint (pretraining, fine-tuned VQA, or another fine-tuned task's backbone) as a vl_zoo model.

    `original_config` is the authors' JSON (`config/uniter-base.json`, plain BERT fields): it gives the head count
    and activation; its sizes must agree with the weights.
    """
    original = dict(original_config or {})
    if "uniter.img_embeddings.img_linear.weight" not in state_dict:
        sample = sorted(state_dict)[:8]
        raise ConversionError(f"--model uniter expects keys under 'uniter.img_embeddings.'; first keys: {sample}")
    shown = shown_sizes(state_dict)
    reconcile_sizes(shown, original, "the UNITER config")
    task = task_of(state_dict)
    num_labels = state_dict["vqa_output.3.weight"].shape[0] if task == "vqa" else 0
    config = build_config(shown, original, task, num_labels)
    conversion = map_parameters(state_dict, shown["num_hidden_layers"], task)

    notes = [
        "boxes: the canonical (x1/W, y1/H, x2/W, y2/H, area) code becomes UNITER's 7-d (x1, y1, x2, y2, w, h, w*h) "
        "inside the model (num_locs 7)",
        "region_classifier -> region head of target '0' (KL to the 1601-way detector distribution, UNITER's MRC-kl)",
    ]
    if task == "vqa":
        notes.append("vqa_output (Linear, GELU, LayerNorm, Linear on the tanh pooled output) -> classifier")
    processor = RegionFeatureProcessor(MAX_REGIONS, add_global_feature=None)
    return finish_conversion(conversion, config, processor, TOKENIZER, notes=notes, task=task)
