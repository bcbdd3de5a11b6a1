"""VL-BERT (jackroos/VL-BERT) as the authors saved it, for the releases on precomputed features ("prec").

A `.model` file is `{'state_dict', 'optimizer'}` (the container is unwrapped before this module) whose state
dict, saved from DistributedDataParallel, has `module.` prefixes and holds the wrapper's parameters:
`image_feature_extractor.obj_downsample.1` (ReLU(W [sin/cos box code; feature]), the region projection),
`object_linguistic_embeddings` (the [IMG] word), `object_mask_visual_embedding` / `object_mask_word_embedding`
(a masked region's feature and word), `aux_text_visual_embedding` (the visual part of text-only sentences), and
the BERT under `vlbert.`: `word_embeddings`, `end_embedding`, `position_embeddings`, `token_type_embeddings`
(3 types), `embedding_LayerNorm`, `visual_ln_text`, `visual_ln_object`, `encoder.layer.{i}`, and the heads
`mlm_head.predictions` (masked words, tied decoder) and `mvrc_head` (masked-region classification, 1601 ways).
Fine-tuned VQA models hold `vlbert.` without heads and a `final_mlp` that reads the appended [MASK] token.

What the original feeds its BERT, and how vl_zoo says the same (`VLBertConfig` preset "original_authors"):
- the whole-image box comes first, with the mean region feature and the box (0, 0, W-1, H-1); text tokens add
  `visual_ln_text` of that row's projected feature (vl_zoo: the global row first);
- each region, the whole image included, is `visual_ln_object(ReLU(W [geometry; feature]))` + [IMG] word +
  position "text length" + token type 2; geometry is (centre, size) / image size * 100 through 256 sin and cos
  frequencies with base 1000 (vl_zoo's `sincos_box_geometry` of the canonical box, 4 coordinates read);
- after the regions a separate [END] token: `end_embedding` + position "text length + 1" + token type 2, with no
  visual part (vl_zoo: `vl_bert_end_row`, the row the region processor appends after the regions);
- text positions 0..T-1; one LayerNorm over every token; attention over text, regions and [END] alike.
The processor of this module (`OriginalVLBertRegionProcessor`) builds those rows from canonical inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

from ...models.programs import single_stream_program
from ...models.vl_bert import VLBertConfig
from ...processing import RegionFeatureProcessor
from ..common import ConversionError, StateDictConversion
from .common import OriginalConversion, count_layers, finish_conversion, head_count, reconcile_sizes, shape_of
from .lxmert import BERT_LAYER, HEADS_ASSUMED

logger = logging.getLogger(__name__)

TOKENIZER = "bert-base-uncased"
MAX_REGIONS = 100  # the prec releases' bottom-up features: 10 to 100 boxes per image
COORDINATE_DIM = 256  # the sin/cos frequencies per box coordinate, fixed in the authors' FastRCNN module
SPECIAL_WORDS = 1000  # word ids below this come from `special_word_embeddings` when word embeddings are frozen

EMBEDDINGS = {
    "image_feature_extractor.obj_downsample.1": "vl.embeddings.region_proj",
    "vlbert.word_embeddings": "vl.embeddings.word_embeddings",
    "vlbert.position_embeddings": "vl.embeddings.position_embeddings",
    "vlbert.token_type_embeddings": "vl.embeddings.token_type_embeddings",
    "vlbert.embedding_LayerNorm": "vl.embeddings.layer_norm",
    "vlbert.visual_ln_text": "vl.embeddings.text_visual_layer_norm",
    "vlbert.visual_ln_object": "vl.embeddings.object_visual_layer_norm",
    "vlbert.pooler.dense": "vl.pooler.text_dense",
}
# One-row embedding tables, stored by vl_zoo as vectors.
VECTORS = {
    "object_linguistic_embeddings.weight": "vl.embeddings.object_embedding",
    "object_mask_visual_embedding.weight": "vl.embeddings.region_mask_embedding",
    "object_mask_word_embedding.weight": "vl.embeddings.masked_object_embedding",
    "vlbert.end_embedding.weight": "vl.embeddings.end_embedding",
}
PRETRAINING_HEADS = {
    "vlbert.mlm_head.predictions.transform.dense": "mlm_head.transform.dense",
    "vlbert.mlm_head.predictions.transform.LayerNorm": "mlm_head.transform.layer_norm",
    "vlbert.mvrc_head.transform.dense": "region_head.transform.dense",
    "vlbert.mvrc_head.region_cls_pred": "region_head.decoders.6",
    "vlbert.relationsip_head.caption_image_relationship": "itm_head",  # (sic); index 1 = the caption matches
}
DROPPED_ROOTS = {
    "aux_text_visual_embedding": "visual part given to text-only corpus sentences in pretraining",
    "final_mlp": "VQA classifier over the appended [MASK] token's state, a head vl_zoo lacks",
}
UNSUPPORTED = {
    "image_feature_extractor.backbone.": "an 'e2e' release: its in-model ResNet-101 detector makes the region "
    "features, and vl_zoo takes precomputed features (convert a 'prec' release)",
    "image_feature_extractor.object_embed.": "IMAGE_SEMANTIC class embeddings of the regions, which vl_zoo lacks",
    "vlbert.visual_scale_text": "visual_ln: false (scalar visual scales instead of LayerNorms), which vl_zoo lacks",
    "vlbert.visual_1x1_text.": "visual_size != hidden_size (visual projections), which vl_zoo's VL-BERT lacks",
}
# YAML settings the conversion relies on, with the value it needs.
REQUIRED = {
    ("NETWORK", "VLBERT", "obj_pos_id_relative"): True,
    ("NETWORK", "VLBERT", "position_padding_idx"): -1,
    ("NETWORK", "VLBERT", "visual_ln"): True,
    ("NETWORK", "IMAGE_SEMANTIC"): False,
    ("NETWORK", "IMAGE_FEAT_PRECOMPUTED"): True,
    ("DATASET", "ADD_IMAGE_AS_A_BOX"): True,
}


class OriginalVLBertRegionProcessor(RegionFeatureProcessor):
    """The region rows the original VL-BERT's data loader makes: the whole image first, then the regions, then
    a row for the [END] token.

    Two differences from `RegionFeatureProcessor(add_global_feature="first")`: the whole-image box is the
    authors' pixel box (0, 0, W-1, H-1) normalised by the image size, not (0, 0, 1, 1); and one more row
    follows the kept regions, with mask 1 and zero feature and box, which the model reads as [END] (its feature
    and box are not used).

    Known limit: `VLProcessor` saves only `max_regions`, `add_global_feature` and its padding, so a processor
    reloaded with `AutoProcessor.from_pretrained` lacks these two settings until `RegionFeatureProcessor` has
    them; feed a converted VL-BERT through this class meanwhile.
    """

    def __init__(self, max_regions: int = MAX_REGIONS, padding: str = "max_regions") -> None:
        super().__init__(max_regions, add_global_feature="first", padding=padding)

    @property
    def num_rows(self) -> int:
        """Rows per image when padded to `max_regions`: the whole image, the regions and [END]."""
        return self.max_regions + 2

    def batch_rows(self, region_counts: Sequence[int]) -> int:
        if self.padding == "max_regions":
            return self.num_rows
        return min(max(region_counts, default=0), self.max_regions) + 2

    def __call__(
        self,
        features: Sequence[np.ndarray],
        boxes: Sequence[np.ndarray],
        image_sizes: Sequence[tuple[int, int]],
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """As `RegionFeatureProcessor.__call__`, with the authors' whole-image box and the [END] row."""
        rows = super().__call__(features, boxes, image_sizes, return_tensors="np")
        visual_pos, mask = rows["visual_pos"], rows["visual_attention_mask"]
        for i, (image_features, (height, width)) in enumerate(zip(features, image_sizes, strict=True)):
            mask[i, 1 + min(len(image_features), self.max_regions)] = 1  # the [END] row
            inset = np.array([0.0, 0.0, (width - 1) / width, (height - 1) / height], dtype=np.float32)
            visual_pos[i, 0] = np.append(inset, inset[2] * inset[3])
        return BatchFeature(data=dict(rows), tensor_type=return_tensors)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "end_row": True, "global_box": "pixel_inset"}


# ---------------------------------------------------------------------------------------------- config


def network_settings(original: dict[str, Any]) -> dict[str, Any]:
    """The `NETWORK.VLBERT` block of the authors' YAML (or the block itself when given alone)."""
    return dict(original.get("NETWORK", {}).get("VLBERT", original))


def check_settings(original: dict[str, Any], visual_size: int) -> None:
    """ValueError when the YAML sets something the converted model would not compute."""
    whole_file = "NETWORK" in original
    for path, needed in {**REQUIRED, ("NETWORK", "IMAGE_FINAL_DIM"): visual_size}.items():
        if not whole_file and path[:2] != ("NETWORK", "VLBERT"):
            continue
        value = _lookup(original, path if whole_file else path[2:])
        if value is not None and value != needed:
            raise ValueError(f"--config sets {'.'.join(path)}={value!r}; vl_zoo converts VL-BERT with {needed!r}")


def _lookup(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(tree, dict) or name not in tree:
            return None
        tree = tree[name]
    return tree


def shown_sizes(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Every size the weights show: widths from shapes, the layer count from key names."""
    vocab_size, hidden_size = shape_of(state, "vlbert.word_embeddings.weight")
    visual_size, region_input = shape_of(state, "image_feature_extractor.obj_downsample.1.weight")
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "visual_size": visual_size,
        "max_position_embeddings": shape_of(state, "vlbert.position_embeddings.weight")[0],
        "type_vocab_size": shape_of(state, "vlbert.token_type_embeddings.weight")[0],
        "intermediate_size": shape_of(state, "vlbert.encoder.layer.0.intermediate.dense.weight")[0],
        "num_hidden_layers": count_layers(state, r"^vlbert\.encoder\.layer\.(\d+)\."),
        "region_input": region_input,
    }


def build_config(shown: dict[str, int], network: dict[str, Any], task: str, has_pooler: bool) -> VLBertConfig:
    """vl_zoo's config for the authors' VL-BERT: sizes from the weights, head count and activation from the YAML."""
    feature_size = shown["region_input"] - 8 * COORDINATE_DIM
    if feature_size <= 0 or shown["visual_size"] != shown["hidden_size"]:
        raise ConversionError(
            f"obj_downsample.1 maps {shown['region_input']} -> {shown['visual_size']}; vl_zoo needs "
            f"[{8 * COORDINATE_DIM}-d box code; feature] -> hidden size {shown['hidden_size']}"
        )
    hidden = shown["hidden_size"]
    heads = head_count(network, "num_attention_heads", HEADS_ASSUMED, hidden, "VL-BERT base")
    values: dict[str, Any] = {
        key: shown[key]
        for key in ("vocab_size", "hidden_size", "max_position_embeddings", "type_vocab_size", "intermediate_size")
    }
    values |= {
        "v_hidden_size": hidden,
        "v_intermediate_size": shown["intermediate_size"],
        "num_attention_heads": heads,
        "v_num_attention_heads": heads,
        "v_feature_size": feature_size,
        "v_coordinate_embeddings_dim": COORDINATE_DIM,
        "pooler_size": hidden,
        "v_pooler_size": hidden,
        "visual_target_weights": {"6": 1.0} if task == "pretraining" else {},
        **single_stream_program(shown["num_hidden_layers"]),
    }
    if has_pooler:
        values |= {"fusion_method": "text", "fusion_act": "tanh"}
    for name in ("hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range"):
        if name in network:
            values[name] = network[name]
            values[f"v_{name}"] = network[name]
    return VLBertConfig.from_preset("original_authors", **values)


# ---------------------------------------------------------------------------------------------- conversion


def map_parameters(state: dict[str, torch.Tensor], num_layers: int, task: str) -> StateDictConversion:
    """Decide for every key: mapped, dropped with a reason, or unknown."""
    modules = dict(EMBEDDINGS)
    for k in range(num_layers):
        for name, (offset, ours) in BERT_LAYER.items():
            modules[f"vlbert.encoder.layer.{k}.{name}"] = f"vl.encoder.sublayers.{2 * k + offset}.shared.{ours}"
    if task == "pretraining":
        modules |= PRETRAINING_HEADS
    parameters = {f"{src}.{leaf}": f"{dst}.{leaf}" for src, dst in modules.items() for leaf in ("weight", "bias")}

    conversion = StateDictConversion(state)
    for key in state:
        if key in parameters:
            conversion.map(key, parameters[key])
        elif key in VECTORS and not (key.startswith("object_mask_word") and task != "pretraining"):
            conversion.map(key, VECTORS[key], lambda t: t.reshape(-1))
        elif key == "vlbert.mlm_head.predictions.bias" and task == "pretraining":
            conversion.map(key, "mlm_head.bias")
        elif key == "vlbert.mlm_head.predictions.decoder.weight":
            conversion.alias(key, "vlbert.word_embeddings.weight")
        elif key == "vlbert.special_word_embeddings.weight":
            conversion.drop(key, f"merged into rows 0..{SPECIAL_WORDS - 1} of the word embeddings (frozen-word mode)")
        elif key.split(".")[0] in DROPPED_ROOTS:
            conversion.drop(key, DROPPED_ROOTS[key.split(".")[0]])
        elif task != "pretraining" and key.startswith(("vlbert.mlm_head.", "vlbert.mvrc_head.", "object_mask_word")):
            conversion.drop(key, "pretraining head of a fine-tuned checkpoint")
        else:
            conversion.unknown.append(key)
    return conversion


def merge_special_words(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """With frozen word embeddings the authors look ids below 1000 up in a trainable copy; fold it back in."""
    if "vlbert.special_word_embeddings.weight" not in state:
        return state
    words = state["vlbert.word_embeddings.weight"].clone()
    special = state["vlbert.special_word_embeddings.weight"]
    words[: special.shape[0]] = special
    return {**state, "vlbert.word_embeddings.weight": words}


def task_of(state: dict[str, torch.Tensor]) -> str:
    """ "pretraining" when the masked-word head is there, else "backbone" (vl_zoo lacks VL-BERT's task heads)."""
    return "pretraining" if "vlbert.mlm_head.predictions.bias" in state else "backbone"


def convert(state_dict: dict[str, torch.Tensor], original_config: dict | None) -> OriginalConversion:
    """A VL-BERT 'prec' checkpoint (pretraining, or a fine-tuned model's backbone) as a vl_zoo model.

    `original_config` is the authors' YAML (`cfgs/pretrain/base_prec_4x16G_fp32.yaml`), whole or its
    `NETWORK.VLBERT` block: it gives the head count and activation; its sizes must agree with the weights.
    """
    original = dict(original_config or {})
    if "vlbert.word_embeddings.weight" not in state_dict:
        sample = sorted(state_dict)[:8]
        raise ConversionError(f"--model vl-bert expects keys under 'vlbert.'; first keys: {sample}")
    for prefix, reason in UNSUPPORTED.items():
        if any(key.startswith(prefix) for key in state_dict):
            raise ConversionError(f"the checkpoint has {prefix}* keys: {reason}")
    network = network_settings(original)
    shown = shown_sizes(state_dict)
    check_settings(original, shown["visual_size"])
    reconcile_sizes({k: v for k, v in shown.items() if k != "region_input"}, network, "the VL-BERT config")
    task = task_of(state_dict)
    config = build_config(shown, network, task, has_pooler="vlbert.pooler.dense.weight" in state_dict)
    notes = [
        "whole-image row first (text tokens read its feature), [END] as a row of its own after the regions "
        "(vl_bert_end_row); feed regions through OriginalVLBertRegionProcessor",
        "regions are not reordered: the authors sort them by detector confidence, which matters only for which "
        "ones are kept when an image has more than max_regions",
    ]
    state = merge_special_words(state_dict)
    if "object_mask_visual_embedding.weight" not in state:
        # Fine-tuned models drop it; it only replaces all-zero feature rows (padding, the [END] row), none of
        # which reaches an output, so zeros keep the outputs the original's.
        state = {**state, "object_mask_visual_embedding.weight": torch.zeros(1, config.v_feature_size)}
        notes.append("object_mask_visual_embedding not in the checkpoint: zeros (read only for padding rows)")
    conversion = map_parameters(state, shown["num_hidden_layers"], task)
    if task == "backbone":
        notes.append("a fine-tuned checkpoint: its backbone is converted, its task head dropped (see 'dropped')")
    processor = OriginalVLBertRegionProcessor(MAX_REGIONS)
    return finish_conversion(conversion, config, processor, TOKENIZER, notes=notes, task=task)
