"""LXMERT (airsplay/lxmert) as the authors saved it, and the key map it shares with the transformers port.

The authors' `EpochNN_LXRT.pth` is `LXRTPretraining.state_dict()` (a `module.` prefix when trained on several
GPUs): `bert.` (embeddings, `encoder.visn_fc`, 9 language `encoder.layer`, 5 relationship `encoder.r_layers`,
5 cross-modality `encoder.x_layers`, the tanh `pooler`), `cls.` (masked words, matching),
`obj_predict_head.` (object, attribute and feature targets) and `answer_head.` (9500 pretraining answers).
Fine-tuned VQA and GQA checkpoints hold `lxrt_encoder.model.bert.` and a root `logit_fc` answer classifier;
NLVR2's `logit_fc` reads two pooled vectors side by side, a head vl_zoo lacks. transformers' port has the same
names under `lxmert.` (`hf_lxmert.py`).

In vl_zoo: language layer k and relationship layer k are sub-layers 2k (attention) and 2k+1 (feed-forward);
cross layer x starts at s = 2 max(l, r) + 3x: the cross-attention LXMERT runs both ways with one module is the
shared sub-layer s, self-attention s+1, feed-forward s+2 (`vl_zoo/models/programs.py`). Regions enter with
4-d boxes (x1/W, y1/H, x2/W, y2/H), 36 of them, no global region; matching index 1 means "matches" in both.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from ...configuration import PROGRAM_LISTS, VLConfig
from ...models.lxmert import LxmertConfig
from ...models.programs import lxmert_program
from ...processing import RegionFeatureProcessor
from ..common import ConversionError, StateDictConversion
from .common import (
    OriginalConversion,
    count_layers,
    finish_conversion,
    head_count,
    reconcile_sizes,
    require_keys,
    shape_of,
)

logger = logging.getLogger(__name__)

TOKENIZER = "bert-base-uncased"
MAX_REGIONS = 36  # the authors' features: 36 boxes per image from the bottom-up detector
HEADS_ASSUMED = 12  # the head count is not visible in the weights; bert-base's unless a config says otherwise

# BERT layer module -> (offset: 0 attention, 1 feed-forward; vl_zoo module inside the stream)
BERT_LAYER = {
    "attention.self.query": (0, "query"),
    "attention.self.key": (0, "key"),
    "attention.self.value": (0, "value"),
    "attention.output.dense": (0, "output"),
    "attention.output.LayerNorm": (0, "layer_norm"),
    "intermediate.dense": (1, "intermediate"),
    "output.dense": (1, "output"),
    "output.LayerNorm": (1, "layer_norm"),
}
ATTENTION = {name.removeprefix("attention."): ours for name, (offset, ours) in BERT_LAYER.items() if offset == 0}
FEED_FORWARD = {"inter.dense": "intermediate", "output.dense": "output", "output.LayerNorm": "layer_norm"}
STREAM_SIDES = {"lang": "text", "visn": "vision"}
# Cross-layer module -> (offset from the cross layer's first sub-layer, stream, vl_zoo module)
CROSS_LAYER = {
    **{f"visual_attention.{name.replace('self.', 'att.')}": (0, "shared", ours) for name, ours in ATTENTION.items()},
    **{
        f"{side}_self_att.{name}": (1, stream, ours)
        for side, stream in STREAM_SIDES.items()
        for name, ours in ATTENTION.items()
    },
    **{
        f"{side}_{name}": (2, stream, ours)
        for side, stream in STREAM_SIDES.items()
        for name, ours in FEED_FORWARD.items()
    },
}
EMBEDDINGS = {
    "embeddings.word_embeddings": "vl.embeddings.word_embeddings",
    "embeddings.position_embeddings": "vl.embeddings.position_embeddings",
    "embeddings.token_type_embeddings": "vl.embeddings.token_type_embeddings",
    "embeddings.LayerNorm": "vl.embeddings.layer_norm",
    "encoder.visn_fc.visn_fc": "vl.embeddings.region_proj",
    "encoder.visn_fc.visn_layer_norm": "vl.embeddings.region_layer_norm",
    "encoder.visn_fc.box_fc": "vl.embeddings.box_proj",
    "encoder.visn_fc.box_layer_norm": "vl.embeddings.box_layer_norm",
    "pooler.dense": "vl.pooler.text_dense",
}
PRETRAINING_HEADS = {
    "cls.predictions.transform.dense": "mlm_head.transform.dense",
    "cls.predictions.transform.LayerNorm": "mlm_head.transform.layer_norm",
    "cls.seq_relationship": "itm_head",
    "obj_predict_head.transform.dense": "region_head.transform.dense",
    "obj_predict_head.transform.LayerNorm": "region_head.transform.layer_norm",
}
EMBEDDING_TABLE_SUFFIXES = ("_embeddings", "_embeddings_visual")  # nn.Embedding modules: a weight, no bias
REGION_DECODERS = {"obj": "3", "attr": "4", "feat": "5"}  # LXMERT's visual losses -> vl_zoo region target ids
ANSWER_HEAD = {"0": "dense", "2": "layer_norm", "3": "decoder"}  # Linear, GeLU, LayerNorm, Linear


# ---------------------------------------------------------------------------------------------- key maps


def layer_counts(config: VLConfig) -> tuple[int, int, int]:
    """(language, relationship, cross) layer counts of an LXMERT-shaped program; ValueError for any other."""
    cross = len(config.tv_attn_sublayers)
    counts = (len(config.tt_attn_sublayers) - cross, len(config.vv_attn_sublayers) - cross, cross)
    expected = lxmert_program(*counts) if min(counts) >= 0 else {}
    differing = [name for name in PROGRAM_LISTS if getattr(config, name) != expected.get(name)]
    if differing:
        raise ValueError(
            f"the model's sub-layer program is not LXMERT's layer pattern (language, relationship, then cross layers "
            f"as vl_zoo/models/programs.py lxmert_program builds it); these lists differ: {differing}"
        )
    return counts


def backbone_map(root: str, l_layers: int, r_layers: int, x_layers: int) -> dict[str, str]:
    """Source module -> vl_zoo module for the embeddings, the three layer stacks and the pooler."""
    modules = {root + name: ours for name, ours in EMBEDDINGS.items()}
    for group, count, stream in (("layer", l_layers, "text"), ("r_layers", r_layers, "vision")):
        for k in range(count):
            for name, (offset, ours) in BERT_LAYER.items():
                modules[f"{root}encoder.{group}.{k}.{name}"] = f"vl.encoder.sublayers.{2 * k + offset}.{stream}.{ours}"
    for x in range(x_layers):
        start = 2 * max(l_layers, r_layers) + 3 * x
        for name, (offset, stream, ours) in CROSS_LAYER.items():
            modules[f"{root}encoder.x_layers.{x}.{name}"] = f"vl.encoder.sublayers.{start + offset}.{stream}.{ours}"
    return modules


def pretraining_head_map(targets: list[str]) -> dict[str, str]:
    """Source module -> vl_zoo module for the masked-word, matching and (when `targets`) masked-region heads."""
    modules = dict(PRETRAINING_HEADS)
    if not targets:
        modules = {k: v for k, v in modules.items() if not k.startswith("obj_predict_head.")}
    for name, target_id in REGION_DECODERS.items():
        if target_id in targets:
            modules[f"obj_predict_head.decoder_dict.{name}"] = f"region_head.decoders.{target_id}"
    return modules


def answer_map(source: str, target: str) -> dict[str, str]:
    """Source module -> vl_zoo module for an answer classifier (`answer_head.logit_fc` or `logit_fc`)."""
    return {f"{source}.{index}": f"{target}.{ours}" for index, ours in ANSWER_HEAD.items()}


def parameter_map(modules: dict[str, str]) -> dict[str, str]:
    """Module map -> parameter map: weight and bias of every module, the weight alone of an embedding table."""
    parameters = {}
    for source, target in modules.items():
        parameters[f"{source}.weight"] = f"{target}.weight"
        if not source.endswith(EMBEDDING_TABLE_SUFFIXES):
            parameters[f"{source}.bias"] = f"{target}.bias"
    return parameters


# ---------------------------------------------------------------------------------------------- reading


def detect_root(state: dict[str, torch.Tensor], candidates: tuple[str, ...]) -> str:
    """The prefix under which a checkpoint holds LXMERT's backbone (`bert.`, `lxmert.`, ...)."""
    for root in candidates:
        if f"{root}embeddings.word_embeddings.weight" in state:
            return root
    raise ConversionError(
        f"no LXMERT backbone found: none of {[root + 'embeddings.word_embeddings.weight' for root in candidates]} "
        f"is in the checkpoint (first keys: {sorted(state)[:6]}); is it the right --model?"
    )


def shown_sizes(state: dict[str, torch.Tensor], root: str) -> dict[str, int]:
    """Every size the weights show: widths from shapes, layer counts from key names."""
    vocab_size, hidden_size = shape_of(state, f"{root}embeddings.word_embeddings.weight")
    v_feature_size = shape_of(state, f"{root}encoder.visn_fc.visn_fc.weight")[1]
    layers = "^" + re.escape(f"{root}encoder.") + r"%s\.(\d+)\."
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "max_position_embeddings": shape_of(state, f"{root}embeddings.position_embeddings.weight")[0],
        "type_vocab_size": shape_of(state, f"{root}embeddings.token_type_embeddings.weight")[0],
        "intermediate_size": _intermediate_size(state, root),
        "visual_feat_dim": v_feature_size,
        "visual_pos_dim": shape_of(state, f"{root}encoder.visn_fc.box_fc.weight")[1],
        "l_layers": count_layers(state, layers % "layer"),
        "r_layers": count_layers(state, layers % "r_layers"),
        "x_layers": count_layers(state, layers % "x_layers"),
    }


def _intermediate_size(state: dict[str, torch.Tensor], root: str) -> int:
    for key in (
        f"{root}encoder.layer.0.intermediate.dense.weight",
        f"{root}encoder.x_layers.0.lang_inter.dense.weight",
    ):
        if key in state:
            return state[key].shape[0]
    raise ConversionError(f"the checkpoint has no feed-forward layer under {root}encoder; it holds no LXMERT layers")


def region_targets(state: dict[str, torch.Tensor]) -> list[str]:
    """vl_zoo ids of the masked-region decoders the checkpoint has (LXMERT's `--visual_losses`)."""
    return [
        target_id
        for name, target_id in REGION_DECODERS.items()
        if f"obj_predict_head.decoder_dict.{name}.weight" in state
    ]


def build_config(
    shown: dict[str, int],
    original: dict[str, Any] | None,
    targets: list[str],
    qa_num_answers: int,
    source: str,
) -> LxmertConfig:
    """vl_zoo's LXMERT config: sizes from the weights, the rest from the original config (or LXMERT's defaults)."""
    original = dict(original or {})
    original.pop("num_hidden_layers", None)  # a BERT config's 12; LXMERT's counts are l/r/x_layers
    reconcile_sizes(shown, original, source)
    if shown["visual_pos_dim"] not in (4, 5, 7):
        raise ConversionError(f"box_fc reads {shown['visual_pos_dim']}-d boxes; vl_zoo supports 4, 5 or 7")
    heads = head_count(original, "num_attention_heads", HEADS_ASSUMED, shown["hidden_size"], "bert-base")
    values = {
        "vocab_size": shown["vocab_size"],
        "hidden_size": shown["hidden_size"],
        "v_hidden_size": shown["hidden_size"],
        "pooler_size": shown["hidden_size"],
        "v_pooler_size": shown["hidden_size"],
        "intermediate_size": shown["intermediate_size"],
        "v_intermediate_size": shown["intermediate_size"],
        "num_attention_heads": heads,
        "v_num_attention_heads": heads,
        "max_position_embeddings": shown["max_position_embeddings"],
        "type_vocab_size": shown["type_vocab_size"],
        "v_feature_size": shown["visual_feat_dim"],
        "num_locs": shown["visual_pos_dim"],
        "visual_target_weights": {target_id: 6.667 for target_id in targets},  # LXMERT: 1 / 0.15 each
        "qa_num_answers": qa_num_answers,
        "qa_task_weight": 1.0 if qa_num_answers else 0.0,
        "clf_hidden_size": 2 * shown["hidden_size"],
        **lxmert_program(shown["l_layers"], shown["r_layers"], shown["x_layers"]),
    }
    for name in ("hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range"):
        if name in original:
            values[name] = original[name]
            values[f"v_{name}"] = original[name]
    values = {key: value for key, value in values.items() if key in LxmertConfig.__dataclass_fields__}
    if "layer_norm_eps" in original:
        values["layer_norm_eps"] = original["layer_norm_eps"]
    return LxmertConfig.from_preset("original", **values)


# ---------------------------------------------------------------------------------------------- conversion


def convert_layout(
    state: dict[str, torch.Tensor], original: dict[str, Any] | None, roots: tuple[str, ...], source: str
) -> OriginalConversion:
    """Convert an LXMERT state dict whose backbone sits under one of `roots` (authors' or transformers' names)."""
    root = detect_root(state, roots)
    shown = shown_sizes(state, root)
    targets = region_targets(state)
    task, answer_source, notes = _task_of(state, root, shown["hidden_size"])
    answers = state[f"{answer_source}.3.weight"].shape[0] if answer_source else 0
    config = build_config(shown, original, targets, answers if task == "pretraining" else 0, source)
    if task == "vqa":
        labels = (original or {}).get("id2label")
        if isinstance(labels, dict) and len(labels) == answers:  # a QA config.json names the answers
            config.id2label = {int(k): v for k, v in labels.items()}
        else:
            config.num_labels = answers

    modules = backbone_map(root, shown["l_layers"], shown["r_layers"], shown["x_layers"])
    if task == "pretraining":
        modules.update(pretraining_head_map(targets))
    if answer_source is not None:
        modules.update(answer_map(answer_source, "answer_head" if task == "pretraining" else "classifier"))
    parameters = parameter_map(modules)
    require_keys(state, parameters, "lxmert" if root.startswith(("bert.", "lxrt_encoder.")) else "hf-lxmert")
    conversion = map_parameters(state, parameters, root, task)
    processor = RegionFeatureProcessor(MAX_REGIONS, add_global_feature=None)
    return finish_conversion(conversion, config, processor, TOKENIZER, notes=notes, task=task)


def _task_of(state: dict[str, torch.Tensor], root: str, hidden_size: int) -> tuple[str, str | None, list[str]]:
    """Which vl_zoo class the checkpoint becomes, where its answer classifier is, and notes for the report."""
    has_pretraining_heads = "cls.predictions.bias" in state
    for answer_source in ("answer_head.logit_fc", "logit_fc"):
        if f"{answer_source}.0.weight" in state:
            break
    else:
        answer_source = None
    if has_pretraining_heads or answer_source is None:
        task = "pretraining" if has_pretraining_heads else "backbone"
        return task, answer_source if has_pretraining_heads else None, []
    if state[f"{answer_source}.0.weight"].shape[1] == hidden_size:
        note = "fine-tuned answer classifier (Linear, GeLU, LayerNorm, Linear on the pooled output) -> classifier"
        return "vqa", answer_source, [note]
    return "backbone", None, [f"{answer_source} reads two images' pooled vectors (NLVR2); vl_zoo has no such head"]


def map_parameters(
    state: dict[str, torch.Tensor], parameters: dict[str, str], root: str, task: str
) -> StateDictConversion:
    """Map every key the parameter map names; drop the tied decoder and the task heads vl_zoo lacks; the rest fail."""
    conversion = StateDictConversion(state)
    for key in state:
        if key in parameters:
            conversion.map(key, parameters[key])
        elif key == "cls.predictions.decoder.weight":
            conversion.alias(key, f"{root}embeddings.word_embeddings.weight")
        elif key == "cls.predictions.bias" and task == "pretraining":
            conversion.map(key, "mlm_head.bias")
        elif task != "pretraining" and key.startswith(("cls.", "obj_predict_head.", "answer_head.")):
            conversion.drop(key, "pretraining head of a checkpoint converted for its task head or backbone")
        elif task == "backbone" and key.startswith("logit_fc."):
            conversion.drop(key, "NLVR2 classifier over two images' pooled vectors; vl_zoo has no such head")
        else:
            conversion.unknown.append(key)
    return conversion


def convert(state_dict: dict[str, torch.Tensor], original_config: dict | None) -> OriginalConversion:
    """The authors' LXMERT checkpoint (pretraining, or fine-tuned VQA/GQA/NLVR2) as a vl_zoo model.

    `original_config` is the BERT config.json LXMERT builds on (optional): it may set the head count, activation
    and dropouts; its sizes must agree with the weights (its `num_hidden_layers` is not LXMERT's and is ignored).
    """
    roots = ("bert.", "lxrt_encoder.model.bert.", "lxrt_encoder.model.module.bert.")
    return convert_layout(state_dict, original_config, roots, "the BERT config")
