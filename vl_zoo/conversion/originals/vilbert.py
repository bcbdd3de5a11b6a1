"""ViLBERT (facebookresearch/vilbert-multi-task and jiasenlu/vilbert_beta) as the authors saved it.

Both repositories save `model.state_dict()` of `BertForMultiModalPreTraining` (pretraining) or
`VILBertForVLTasks` (fine-tuning) with `torch.save`; after the 12-in-1 task tokens (`task_embeddings`) the two
layouts are identical. Under `bert.`: the text `embeddings`, the region embedding `v_embeddings`
(LayerNorm(W_f feature + W_b 5-d box)), `encoder.layer.{i}` (text BERT layers), `encoder.v_layer.{j}` (vision
layers), `encoder.c_layer.{k}` (co-attention), and two ReLU poolers `t_pooler`, `v_pooler` fused by a product.
Heads under `cls.`: masked words, `bi_seq_relationship` (matching, 0 = match) and `imagePredictions` (masked
regions); fine-tuned models add `vil_prediction` (VQA) and other task heads at the root.

Co-attention layer k: `biattention.{query,key,value}1` project vision states and `...2` text states; text
queries read vision keys and values and vice versa; `biOutput.{dense,LayerNorm}2` write the text stream and
`...1` the vision stream; `biOutput.q_dense1/q_dense2` exist but the forward never uses them (dropped). Then
each stream's feed-forward (`t_intermediate`/`t_output`, `v_intermediate`/`v_output`).

Run order with `t_biattention_id` = [T-C .. T-1] and `v_biattention_id` = [0 .. C-1] (every released config):
text layers 0 .. T-C-1, then for each k: c_layer k, text layer T-C+k, vision layer k. That is vl_zoo's ViLBERT
program (`vilbert_program(T - C, C)`): text layer i < T-C is sub-layers 2i/2i+1; block k starts at
s = 2(T-C) + 4k with c_layer k at s (attention) and s+1 (feed-forward), then text layer T-C+k and vision
layer k at s+2 and s+3. Regions: the mean feature with box [0, 0, 1, 1, 1] first, then up to 36 detector
regions (pretraining on Conceptual Captions) or 100 (the 12-in-1 task loaders), boxes as the 5-d code.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ...models.programs import vilbert_program
from ...models.vilbert import ViLBertConfig
from ...processing import RegionFeatureProcessor
from ..common import ConversionError, StateDictConversion
from .common import OriginalConversion, count_layers, finish_conversion, head_count, reconcile_sizes, shape_of
from .lxmert import BERT_LAYER

logger = logging.getLogger(__name__)

TOKENIZER = "bert-base-uncased"
PRETRAINING_REGIONS = 36  # train_concap.py's region_len (plus the global row)
TASK_REGIONS = 100  # vilbert_tasks.yml's max_region_num 101 (plus the global row)
# The weights do not show head counts; these are config/bert_base_6layer_6conect.json's, used unless --config says.
DEFAULT_HEADS = {"num_attention_heads": 12, "v_num_attention_heads": 8, "bi_num_attention_heads": 8}
# The width each head count splits.
HEADS_SPLIT = {
    "num_attention_heads": "hidden_size",
    "v_num_attention_heads": "v_hidden_size",
    "bi_num_attention_heads": "bi_hidden_size",
}
UNUSED_PROJECTIONS = ("biOutput.q_dense1", "biOutput.q_dense2")

# c_layer module -> (offset from the block's first sub-layer, stream, vl_zoo module)
CO_ATTENTION_LAYER = {
    **{f"biattention.{name}1": (0, "vision", name) for name in ("query", "key", "value")},
    **{f"biattention.{name}2": (0, "text", name) for name in ("query", "key", "value")},
    "biOutput.dense1": (0, "vision", "output"),
    "biOutput.LayerNorm1": (0, "vision", "layer_norm"),
    "biOutput.dense2": (0, "text", "output"),
    "biOutput.LayerNorm2": (0, "text", "layer_norm"),
    "v_intermediate.dense": (1, "vision", "intermediate"),
    "v_output.dense": (1, "vision", "output"),
    "v_output.LayerNorm": (1, "vision", "layer_norm"),
    "t_intermediate.dense": (1, "text", "intermediate"),
    "t_output.dense": (1, "text", "output"),
    "t_output.LayerNorm": (1, "text", "layer_norm"),
}
EMBEDDINGS = {
    "bert.embeddings.word_embeddings": "vl.embeddings.word_embeddings",
    "bert.embeddings.position_embeddings": "vl.embeddings.position_embeddings",
    "bert.embeddings.token_type_embeddings": "vl.embeddings.token_type_embeddings",
    "bert.embeddings.LayerNorm": "vl.embeddings.layer_norm",
    "bert.v_embeddings.image_embeddings": "vl.embeddings.region_proj",
    "bert.v_embeddings.image_location_embeddings": "vl.embeddings.box_proj",
    "bert.v_embeddings.LayerNorm": "vl.embeddings.region_layer_norm",
    "bert.t_pooler.dense": "vl.pooler.text_dense",
    "bert.v_pooler.dense": "vl.pooler.vision_dense",
}
PRETRAINING_HEADS = {
    "cls.predictions.transform.dense": "mlm_head.transform.dense",
    "cls.predictions.transform.LayerNorm": "mlm_head.transform.layer_norm",
    "cls.imagePredictions.transform.dense": "region_head.transform.dense",
    "cls.imagePredictions.transform.LayerNorm": "region_head.transform.layer_norm",
}
VQA_HEAD = {"vil_prediction.logit_fc.0": "dense", "vil_prediction.logit_fc.2": "layer_norm"}
VQA_HEAD["vil_prediction.logit_fc.3"] = "decoder"
# Fine-tuning heads of VILBertForVLTasks that vl_zoo's classes do not have, with what they read.
TASK_HEADS = {
    "vil_prediction": "VQA answer classifier",
    "vil_prediction_gqa": "GQA answer classifier (1533 answers)",
    "vil_binary_prediction": "NLVR2 classifier over two images' pooled vectors",
    "vil_logit": "retrieval / grounding score of the pooled vector",
    "vil_tri_prediction": "SNLI-VE three-way classifier",
    "vision_logit": "referring-expression score per region",
    "linguisic_logit": "per-token score",
}
# Release config keys that must hold these values for the weights to mean what vl_zoo computes.
REQUIRED = {"dynamic_attention": False, "with_coattention": True, "model": "bert"}
VISUAL_TARGETS = {0: "0", 1: "1"}  # ViLBERT's visual_target -> vl_zoo region target (KL, feature MSE)


# ---------------------------------------------------------------------------------------------- layout


def layer_counts(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Text, vision and co-attention layer counts from the key names."""
    pattern = r"^bert\.encoder\.%s\.(\d+)\."
    return {
        "num_hidden_layers": count_layers(state, pattern % "layer"),
        "v_num_hidden_layers": count_layers(state, pattern % "v_layer"),
        "num_connection_layers": count_layers(state, pattern % "c_layer"),
    }


def check_schedule(counts: dict[str, int], original: dict[str, Any]) -> int:
    """The number of text-only layers before the first co-attention; ValueError for a schedule vl_zoo lacks."""
    text, vision, blocks = counts["num_hidden_layers"], counts["v_num_hidden_layers"], counts["num_connection_layers"]
    if blocks == 0 or vision != blocks or text < blocks:
        raise ConversionError(
            f"the checkpoint has {text} text, {vision} vision and {blocks} co-attention layers; vl_zoo's ViLBERT "
            "needs one vision layer per co-attention layer and at least as many text layers"
        )
    expected = {"v_biattention_id": list(range(blocks)), "t_biattention_id": list(range(text - blocks, text))}
    for name, ids in expected.items():
        if name in original and list(original[name]) != ids:
            raise ValueError(
                f"--config sets {name}={original[name]}, but vl_zoo's ViLBERT runs co-attention layer k before "
                f"vision layer k and text layer {text - blocks}+k, i.e. {name}={ids}"
            )
    return text - blocks


def module_map(text_only: int, blocks: int) -> dict[str, str]:
    """Source module -> vl_zoo module for embeddings, poolers and the three layer stacks."""
    modules = dict(EMBEDDINGS)
    for i in range(text_only + blocks):
        start = 2 * i if i < text_only else 2 * text_only + 4 * (i - text_only) + 2
        for name, (offset, ours) in BERT_LAYER.items():
            modules[f"bert.encoder.layer.{i}.{name}"] = f"vl.encoder.sublayers.{start + offset}.text.{ours}"
    for k in range(blocks):
        start = 2 * text_only + 4 * k
        for name, (offset, ours) in BERT_LAYER.items():
            modules[f"bert.encoder.v_layer.{k}.{name}"] = f"vl.encoder.sublayers.{start + 2 + offset}.vision.{ours}"
        for name, (offset, stream, ours) in CO_ATTENTION_LAYER.items():
            modules[f"bert.encoder.c_layer.{k}.{name}"] = f"vl.encoder.sublayers.{start + offset}.{stream}.{ours}"
    return modules


# ---------------------------------------------------------------------------------------------- config


def shown_sizes(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Every size the weights show: widths from shapes, layer counts from key names."""
    vocab_size, hidden_size = shape_of(state, "bert.embeddings.word_embeddings.weight")
    v_hidden_size, v_feature_size = shape_of(state, "bert.v_embeddings.image_embeddings.weight")
    sizes = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "max_position_embeddings": shape_of(state, "bert.embeddings.position_embeddings.weight")[0],
        "type_vocab_size": shape_of(state, "bert.embeddings.token_type_embeddings.weight")[0],
        "intermediate_size": shape_of(state, "bert.encoder.layer.0.intermediate.dense.weight")[0],
        "v_feature_size": v_feature_size,
        "v_hidden_size": v_hidden_size,
        "v_intermediate_size": shape_of(state, "bert.encoder.c_layer.0.v_intermediate.dense.weight")[0],
        "bi_hidden_size": shape_of(state, "bert.encoder.c_layer.0.biattention.query1.weight")[0],
        **layer_counts(state),
    }
    if "cls.imagePredictions.decoder.weight" in state:
        sizes["v_target_size"] = state["cls.imagePredictions.decoder.weight"].shape[0]
    return sizes


def build_config(
    shown: dict[str, int], original: dict[str, Any], text_only: int, task: str, vqa_hidden: int
) -> ViLBertConfig:
    """vl_zoo's ViLBERT config: sizes from the weights, head counts and activations from the original config."""
    for name, value in REQUIRED.items():
        if original.get(name, value) != value:
            raise ValueError(f"--config sets {name}={original[name]!r}; vl_zoo converts ViLBERT with {name}={value!r}")
    blocks = shown["num_connection_layers"]
    heads = {
        name: head_count(original, name, value, shown[HEADS_SPLIT[name]], "bert_base_6layer_6conect.json")
        for name, value in DEFAULT_HEADS.items()
    }
    program = vilbert_program(text_only, blocks)
    co_attention = [str(n) for n in program["tv_attn_sublayers"]]
    values = {
        key: shown[key]
        for key in ("vocab_size", "hidden_size", "max_position_embeddings", "type_vocab_size", "intermediate_size")
    }
    values |= {key: shown[key] for key in ("v_feature_size", "v_hidden_size", "v_intermediate_size")}
    values |= {
        "num_attention_heads": heads["num_attention_heads"],
        "v_num_attention_heads": heads["v_num_attention_heads"],
        "num_locs": 5,
        "add_global_imgfeat": "first",
        "pooler_size": shown["bi_hidden_size"],
        "v_pooler_size": shown["bi_hidden_size"],
        "fusion_method": original.get("fusion_method", "mul"),
        "fusion_act": "relu",
        "visual_target_weights": {_region_target(shown, original): 1.0},
        "sublayer2attn_hidden_size": dict.fromkeys(co_attention, shown["bi_hidden_size"]),
        "sublayer2num_attention_heads": dict.fromkeys(co_attention, heads["bi_num_attention_heads"]),
        "sublayer2v_attn_hidden_size": dict.fromkeys(co_attention, shown["bi_hidden_size"]),
        "sublayer2v_num_attention_heads": dict.fromkeys(co_attention, heads["bi_num_attention_heads"]),
        **program,
    }
    if task == "vqa":
        values["clf_hidden_size"] = vqa_hidden
    for name in ("hidden_act", "v_hidden_act", "initializer_range"):
        if name in original:
            values[name] = original[name]
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        for prefix in ("", "v_"):
            if prefix + name in original:
                values[prefix + name] = original[prefix + name]
    return ViLBertConfig.from_preset("original", **values)


def _region_target(shown: dict[str, int], original: dict[str, Any]) -> str:
    """vl_zoo's id of the masked-region target, from `visual_target` or from the decoder's width."""
    if "visual_target" in original:
        if original["visual_target"] not in VISUAL_TARGETS:
            raise ValueError(
                f"--config sets visual_target={original['visual_target']!r} (2 is the NCE objective, which vl_zoo "
                f"does not implement); allowed: {sorted(VISUAL_TARGETS)}"
            )
        return VISUAL_TARGETS[original["visual_target"]]
    width = shown.get("v_target_size", 1601)
    if width == shown["v_feature_size"]:
        return "1"
    if width != 1601:
        raise ConversionError(
            f"cls.imagePredictions.decoder predicts {width} values per region: neither the 1601 detector classes "
            f"(visual_target 0) nor the {shown['v_feature_size']}-d feature (visual_target 1)"
        )
    return "0"


# ---------------------------------------------------------------------------------------------- conversion


def task_of(state: dict[str, torch.Tensor]) -> str:
    """ "pretraining" for BertForMultiModalPreTraining, "vqa" for a task model whose VQA head vl_zoo has, else
    "backbone"."""
    if not any(key.startswith(tuple(f"{name}." for name in TASK_HEADS)) for key in state):
        return "pretraining"
    return "vqa" if "vil_prediction.logit_fc.0.weight" in state else "backbone"


def map_parameters(
    state: dict[str, torch.Tensor], modules: dict[str, str], task: str, target: str
) -> StateDictConversion:
    """Decide for every key: mapped (with the matching head's rows swapped), dropped with a reason, or unknown."""
    parameters = {f"{src}.{leaf}": f"{dst}.{leaf}" for src, dst in modules.items() for leaf in ("weight", "bias")}
    conversion = StateDictConversion(state)
    for key in state:
        module = key.rpartition(".")[0]
        if key in parameters:
            conversion.map(key, parameters[key])
        elif module.startswith("bert.encoder.c_layer.") and module.endswith(UNUSED_PROJECTIONS):
            conversion.drop(key, "co-attention projection that ViLBERT's forward never uses")
        elif key == "bert.embeddings.task_embeddings.weight":
            conversion.drop(key, "12-in-1 task-token embeddings; vl_zoo inserts no task token after [CLS]")
        elif key == "cls.predictions.decoder.weight":
            conversion.alias(key, "bert.embeddings.word_embeddings.weight")
        elif task != "pretraining" and module.startswith("cls."):
            conversion.drop(key, "pretraining head of a fine-tuned checkpoint")
        elif key == "cls.predictions.bias":
            conversion.map(key, "mlm_head.bias")
        elif module == "cls.bi_seq_relationship":
            conversion.map(key, f"itm_head.{key.rpartition('.')[2]}", lambda t: t.flip(0))  # ViLBERT: 0 = match
        elif module == "cls.imagePredictions.decoder":
            conversion.map(key, f"region_head.decoders.{target}.{key.rpartition('.')[2]}")
        elif module.split(".")[0] in TASK_HEADS:
            conversion.drop(key, f"{TASK_HEADS[module.split('.')[0]]}; vl_zoo has no such head on this model")
        else:
            conversion.unknown.append(key)
    return conversion


def convert(state_dict: dict[str, torch.Tensor], original_config: dict | None) -> OriginalConversion:
    """A ViLBERT checkpoint of vilbert-multi-task or vilbert_beta (pretraining or fine-tuned) as a vl_zoo model.

    `original_config` is the authors' JSON (`config/bert_base_6layer_6conect.json`): it gives the head counts
    and the co-attention schedule, which the weights do not show; its sizes must agree with the weights.
    """
    original = dict(original_config or {})
    if "bert.embeddings.word_embeddings.weight" not in state_dict or not any(
        key.startswith("bert.encoder.c_layer.") for key in state_dict
    ):
        sample = sorted(state_dict)[:8]
        raise ConversionError(
            f"--model vilbert expects ViLBERT keys (bert.embeddings.*, bert.encoder.c_layer.*); first keys: {sample}"
        )
    if any(".dyLinear_" in key for key in state_dict):
        raise ConversionError("the checkpoint has dynamic-attention gates (dyLinear_q/k), which vl_zoo lacks")

    shown = shown_sizes(state_dict)
    reconcile_sizes(shown, original, "the ViLBERT config")
    text_only = check_schedule(shown, original)
    task = task_of(state_dict)
    vqa_hidden = state_dict["vil_prediction.logit_fc.0.weight"].shape[0] if task == "vqa" else 0
    config = build_config(shown, original, text_only, task, vqa_hidden)

    modules = module_map(text_only, shown["num_connection_layers"])
    if task == "pretraining":
        modules |= PRETRAINING_HEADS
    elif task == "vqa":
        modules |= {src: f"classifier.{ours}" for src, ours in VQA_HEAD.items()}
        config.num_labels = state_dict["vil_prediction.logit_fc.3.weight"].shape[0]
    target = next(iter(config.active_region_targets))
    conversion = map_parameters(state_dict, modules, task, target)

    notes = _notes(state_dict, original, task)
    regions = PRETRAINING_REGIONS if task == "pretraining" else TASK_REGIONS
    processor = RegionFeatureProcessor(regions, add_global_feature="first")
    return finish_conversion(conversion, config, processor, TOKENIZER, notes=notes, task=task)


def _notes(state: dict[str, torch.Tensor], original: dict[str, Any], task: str) -> list[str]:
    notes = ["cls.bi_seq_relationship: rows swapped (ViLBERT's index 0 = match is vl_zoo's index 1)"]
    missing = sorted(name for name in DEFAULT_HEADS if name not in original)
    if missing:
        defaults = {name: DEFAULT_HEADS[name] for name in missing}
        notes.append(f"head counts not in the weights; bert_base_6layer_6conect.json's used: {defaults}")
        logger.info("head counts taken from bert_base_6layer_6conect.json: %s (--config sets them)", defaults)
    if "bert.embeddings.task_embeddings.weight" in state:
        notes.append(
            "the checkpoint was trained with 12-in-1 task tokens after [CLS]; vl_zoo feeds none, so its outputs are "
            "those of the network without a task token"
        )
    if task == "vqa":
        notes.append("vil_prediction (Linear, GeLU, LayerNorm, Linear on the fused pooled output) -> classifier")
    return notes
