"""VisualBERT (uclanlp/visualbert) as the authors saved it, and the key map it shares with the transformers port.

The authors' `.th` files are the state dict of their AllenNLP wrapper (`VisualBERTFixedImageEmbedding` or, for
VCR, `VisualBERTDetector`): `bert.bert.` (BERT embeddings plus `projection`, `token_type_embeddings_visual`,
`position_embeddings_visual`; 12 layers; the tanh pooler), `bert.cls.` (masked words and the caption-match
head) for the pretraining checkpoints, or `bert.classifier` for the fine-tuned ones; VCR's adds its in-model
detector, `detector.`. transformers' port renames these (`visual_bert.`, `visual_projection`, `cls.`;
`hf_visualbert.py`).

Regions carry no boxes; they get visual position 0 and a visual token type. The authors' loaders pass no
visual type, so their model adds row 0 of the visual type table; vl_zoo (and transformers, by default) adds row
1, so the converter swaps rows 0 and 1 of that table. The caption-match head calls a match 0 (vl_zoo: 1), so its
two rows are swapped too. The fine-tuned heads read what vl_zoo's heads do not (VQA: the text token at
`mask_sum - 2`; NLVR2: two images side by side; VCR: one score per answer), so those checkpoints convert
their backbone and the report says why the head was dropped.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from ...models.programs import single_stream_program
from ...models.visual_bert import VisualBertConfig
from ...processing import RegionFeatureProcessor
from ..common import ConversionError, StateDictConversion
from . import lxmert
from .common import OriginalConversion, count_layers, finish_conversion, reconcile_sizes, require_keys, shape_of
from .lxmert import BERT_LAYER, HEADS_ASSUMED

logger = logging.getLogger(__name__)

TOKENIZER = "bert-base-uncased"
# Regions per image of the authors' features, by feature width: COCO/VQA Detectron "fix_100" (2048), NLVR2
# R-101-FPN fc6 with 150 boxes per image (1024); VCR's 512-d features come from the in-model detector.
MAX_REGIONS = {2048: 100, 1024: 150}
DEFAULT_MAX_REGIONS = 100


def swap_first_rows(table: torch.Tensor) -> torch.Tensor:
    """Rows 0 and 1 exchanged (its own inverse): the authors' region type 0 becomes vl_zoo's row 1."""
    order = torch.arange(table.shape[0])
    order[:2] = torch.tensor([1, 0])
    return table[order]


def flip_rows(table: torch.Tensor) -> torch.Tensor:
    """The two rows of a matching head exchanged (its own inverse): index 0 = match becomes index 1 = match."""
    return table.flip(0)


# ---------------------------------------------------------------------------------------------- key maps


def module_map(root: str, heads: str, names: dict[str, str], num_layers: int) -> dict[str, str]:
    """Source module -> vl_zoo module for one layout.

    Args:
        root: prefix of the backbone ("bert.bert.", "visual_bert.", "").
        heads: prefix of the pretraining heads ("bert.cls.", "cls."); "" when there are none.
        names: the layout's names of the three visual embedding modules, by vl_zoo name.
        num_layers: BERT layers.
    """
    modules = {
        f"{root}embeddings.word_embeddings": "vl.embeddings.word_embeddings",
        f"{root}embeddings.position_embeddings": "vl.embeddings.position_embeddings",
        f"{root}embeddings.token_type_embeddings": "vl.embeddings.token_type_embeddings",
        f"{root}embeddings.LayerNorm": "vl.embeddings.layer_norm",
        f"{root}pooler.dense": "vl.pooler.text_dense",
    }
    modules.update({f"{root}embeddings.{theirs}": f"vl.embeddings.{ours}" for ours, theirs in names.items()})
    for k in range(num_layers):
        for name, (offset, ours) in BERT_LAYER.items():
            modules[f"{root}encoder.layer.{k}.{name}"] = f"vl.encoder.sublayers.{2 * k + offset}.shared.{ours}"
    if heads:
        modules[f"{heads}predictions.transform.dense"] = "mlm_head.transform.dense"
        modules[f"{heads}predictions.transform.LayerNorm"] = "mlm_head.transform.layer_norm"
        modules[f"{heads}seq_relationship"] = "itm_head"
    return modules


def parameter_map(modules: dict[str, str], heads: str) -> dict[str, str]:
    """Module map -> parameter map, with the masked-word bias (a parameter of the head itself)."""
    parameters = lxmert.parameter_map(modules)
    if heads:
        parameters[f"{heads}predictions.bias"] = "mlm_head.bias"
    return parameters


# ---------------------------------------------------------------------------------------------- reading


def shown_sizes(state: dict[str, torch.Tensor], root: str, projection: str) -> dict[str, int]:
    """Every size the weights show: widths from shapes, the layer count from key names."""
    vocab_size, hidden_size = shape_of(state, f"{root}embeddings.word_embeddings.weight")
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "max_position_embeddings": shape_of(state, f"{root}embeddings.position_embeddings.weight")[0],
        "type_vocab_size": shape_of(state, f"{root}embeddings.token_type_embeddings.weight")[0],
        "intermediate_size": shape_of(state, f"{root}encoder.layer.0.intermediate.dense.weight")[0],
        "num_hidden_layers": count_layers(state, "^" + re.escape(f"{root}encoder.layer.") + r"(\d+)\."),
        "visual_embedding_dim": shape_of(state, f"{root}embeddings.{projection}.weight")[1],
    }


def build_config(shown: dict[str, int], original: dict[str, Any], source: str) -> VisualBertConfig:
    """vl_zoo's VisualBERT config: sizes from the weights, the rest from the original config or BERT-base's."""
    reconcile_sizes(shown, original, source)
    heads = int(original.get("num_attention_heads", HEADS_ASSUMED))
    if "num_attention_heads" not in original:
        logger.info("the weights do not show the head count; using %d (bert-base); --config sets it", heads)
    hidden = shown["hidden_size"]
    values: dict[str, Any] = {
        "vocab_size": shown["vocab_size"],
        "max_position_embeddings": shown["max_position_embeddings"],
        "type_vocab_size": shown["type_vocab_size"],
        "v_feature_size": shown["visual_embedding_dim"],
        "pooler_size": hidden,
        "v_pooler_size": hidden,
        **single_stream_program(shown["num_hidden_layers"]),
    }
    for name, value in (
        ("hidden_size", hidden),
        ("num_attention_heads", heads),
        ("intermediate_size", shown["intermediate_size"]),
    ):
        values[name] = values[f"v_{name}"] = value
    for name in ("hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob"):
        if name in original:
            values[name] = values[f"v_{name}"] = original[name]
    for name in ("initializer_range", "layer_norm_eps"):
        if name in original:
            values[name] = original[name]
    return VisualBertConfig.from_preset("original", **values)


def task_heads(state: dict[str, torch.Tensor], heads: str, classifier: str) -> tuple[str, dict[str, str]]:
    """The task ("pretraining" when the masked-word head is there, else "backbone") and task-head keys to drop."""
    if f"{heads}predictions.bias" in state:
        return "pretraining", {}
    reasons = {}
    if f"{classifier}.weight" in state:
        outputs = state[f"{classifier}.weight"].shape[0]
        why = {
            1: "VCR multiple-choice scorer (one logit per answer candidate); vl_zoo has no such head",
            2: "NLVR2 classifier over the joint sequence of an image pair; vl_zoo has no such head",
        }.get(
            outputs,
            f"answer classifier ({outputs} answers) on the text token at mask_sum - 2; vl_zoo's VQA head reads the "
            "pooled output, so the two are not the same head",
        )
        reasons = {f"{classifier}.{leaf}": why for leaf in ("weight", "bias")}
    return "backbone", reasons


# ---------------------------------------------------------------------------------------------- conversion


def convert_layout(
    state: dict[str, torch.Tensor],
    original: dict[str, Any],
    layout: dict[str, Any],
    max_regions: int | None = None,
    tokenizer: str = TOKENIZER,
) -> OriginalConversion:
    """Convert a VisualBERT state dict in one layout (the authors' or transformers'; see the two `LAYOUT`s)."""
    root = next((root for root in layout["roots"] if f"{root}embeddings.word_embeddings.weight" in state), None)
    if root is None:
        raise ConversionError(
            f"no VisualBERT backbone found under {list(layout['roots'])} (first keys: {sorted(state)[:6]}); "
            "is it the right --model?"
        )
    shown = shown_sizes(state, root, layout["names"]["region_proj"])
    config = build_config(shown, original, layout["source"])
    task, task_drops = task_heads(state, layout["heads"], layout["classifier"])
    heads = layout["heads"] if task == "pretraining" else ""
    parameters = parameter_map(module_map(root, heads, layout["names"], shown["num_hidden_layers"]), heads)
    require_keys(state, parameters, layout["model"])

    transforms = {f"{layout['heads']}seq_relationship.{leaf}": flip_rows for leaf in ("weight", "bias")}
    if layout["swap_visual_types"]:
        transforms[f"{root}embeddings.{layout['names']['visual_token_type_embeddings']}.weight"] = swap_first_rows
    conversion = StateDictConversion(state)
    for key in state:
        if key in parameters:
            conversion.map(key, parameters[key], transforms.get(key))
        elif key in task_drops:
            conversion.drop(key, task_drops[key])
        elif key == f"{heads}predictions.decoder.weight" and heads:
            conversion.alias(key, f"{root}embeddings.word_embeddings.weight")
        elif key == f"{heads}predictions.decoder.bias" and heads:
            conversion.alias(key, f"{heads}predictions.bias")
        elif dropped := next((p for p in layout["dropped_prefixes"] if key.startswith(p)), None):
            conversion.drop(key, layout["dropped_prefixes"][dropped])
        else:
            conversion.unknown.append(key)

    notes = list(layout["notes"])
    if task_drops:
        notes.append(f"fine-tuned checkpoint: backbone only ({next(iter(task_drops.values()))})")
    regions = max_regions or MAX_REGIONS.get(shown["visual_embedding_dim"], DEFAULT_MAX_REGIONS)
    processor = RegionFeatureProcessor(regions, add_global_feature=None)
    return finish_conversion(conversion, config, processor, tokenizer, notes=notes, task=task)


LAYOUT = {
    "roots": ("bert.bert.",),
    "heads": "bert.cls.",
    "classifier": "bert.classifier",
    "names": {
        "region_proj": "projection",
        "visual_token_type_embeddings": "token_type_embeddings_visual",
        "visual_position_embeddings": "position_embeddings_visual",
    },
    "swap_visual_types": True,
    "dropped_prefixes": {
        "detector.": "VCR's in-model detector (R2C ResNet-50) that computes the 512-d region features; vl_zoo "
        "takes precomputed region features",
        "bert.flickr_attention.": "Flickr30k Entities phrase-to-region attention head; vl_zoo has none",
    },
    "source": "--config",
    "model": "visualbert",
    "notes": [
        "visual token-type rows 0 and 1 swapped: the authors' regions use type 0, vl_zoo's use row 1",
        "matching head rows swapped: the authors' index 0 (caption matches) is vl_zoo's index 1",
    ],
}


def convert(state_dict: dict[str, torch.Tensor], original_config: dict | None) -> OriginalConversion:
    """The authors' VisualBERT checkpoint (pretrained, or fine-tuned: backbone only) as a vl_zoo model.

    `original_config` is either the BERT config.json VisualBERT builds on, or the authors' own training config
    (`visualbert/configs/**.json`, whose `model` block names the visual width and head): sizes must agree
    with the weights; it may set the head count, activation and dropouts, the tokenizer (`bert_model_name`) and
    the number of regions (`image_feature_type` ending in `_<regions>`).
    """
    original = dict(original_config or {})
    tokenizer, max_regions = TOKENIZER, None
    model_block = original.pop("model", None)
    if isinstance(model_block, dict):  # the authors' training config
        _check_model_block(model_block)
        tokenizer = original.get("bert_model_name", TOKENIZER)
        if match := re.search(r"_(\d+)$", str(original.get("image_feature_type", ""))):
            max_regions = int(match.group(1))
        original = {"visual_embedding_dim": model_block["visual_embedding_dim"]}
    return convert_layout(state_dict, original, LAYOUT, max_regions, tokenizer)


def _check_model_block(block: dict[str, Any]) -> None:
    """Refuse the authors' variants that vl_zoo does not compute."""
    if block.get("bypass_transformer"):
        raise ValueError("--config: model.bypass_transformer=true (regions skip the encoder) is not supported")
    strategy = block.get("embedding_strategy", "plain")
    if strategy != "plain":
        raise ValueError(f"--config: model.embedding_strategy={strategy!r} is not supported; allowed: ['plain']")
    if "visual_embedding_dim" not in block:
        raise ValueError("--config: the model block has no visual_embedding_dim")
