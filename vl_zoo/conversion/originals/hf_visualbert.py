"""transformers' VisualBERT port (`uclanlp/visualbert-*`): to vl_zoo and back.

The port names the backbone `visual_bert.` (`visual_projection`, `visual_token_type_embeddings`,
`visual_position_embeddings`) and the pretraining heads `cls.`; its fine-tuned classes put a plain Linear at
`cls` (question answering on the text token at `mask_sum - 2`, visual reasoning, multiple choice), which vl_zoo
does not have, so those convert their backbone. transformers feeds regions visual token type 1 by default, as
vl_zoo does, so no rows move (the authors' code fed type 0; see `visual_bert.py`). The matching head's rows are
swapped (transformers: 0 = matches).

`to_transformers` is the reverse direction: a VisualBERT-shaped vl_zoo model (one stream of BERT layers,
no global region, tanh text pooling, no region head) becomes a `VisualBertForPreTraining` or `VisualBertModel`.
"""

from __future__ import annotations

import torch
import transformers

from ...configuration import PROGRAM_LISTS, SIZE_MAPS, VLConfig
from ...models.programs import single_stream_program
from . import visual_bert
from .common import OriginalConversion
from .hf_lxmert import load_exactly, task_of

LAYOUT = {
    "roots": ("visual_bert.", ""),
    "heads": "cls.",
    "classifier": "cls",
    "names": {
        "region_proj": "visual_projection",
        "visual_token_type_embeddings": "visual_token_type_embeddings",
        "visual_position_embeddings": "visual_position_embeddings",
    },
    "swap_visual_types": False,
    "dropped_prefixes": {"attention.": "region-to-phrase alignment attention head; vl_zoo has none"},
    "source": "the transformers config",
    "model": "hf-visualbert",
    "notes": ["matching head rows swapped: transformers' index 0 (caption matches) is vl_zoo's index 1"],
}
# transformers config fields a vl_zoo config fills, by vl_zoo name
TRANSFORMERS_FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_attention_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act",
    "hidden_dropout_prob": "hidden_dropout_prob",
    "attention_probs_dropout_prob": "attention_probs_dropout_prob",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "initializer_range": "initializer_range",
    "layer_norm_eps": "layer_norm_eps",
    "v_feature_size": "visual_embedding_dim",
    "pad_token_id": "pad_token_id",
}


def convert(state_dict: dict[str, torch.Tensor], original_config: dict | None) -> OriginalConversion:
    """A state dict of transformers' VisualBertForPreTraining (or VisualBertModel, or a fine-tuned class) as
    vl_zoo's. `original_config` is the port's config.json (optional): its sizes must agree with the weights."""
    original = dict(original_config or {})
    if original.get("bypass_transformer"):
        raise ValueError("--config: bypass_transformer=true (regions skip the encoder) is not supported")
    for name in ("num_labels", "id2label", "label2id", "pad_token_id", "bos_token_id", "eos_token_id"):
        original.pop(name, None)
    return visual_bert.convert_layout(state_dict, original, LAYOUT)


# ---------------------------------------------------------------------------------------------- export


def to_transformers(model: torch.nn.Module) -> transformers.PreTrainedModel:
    """The transformers VisualBERT model holding exactly the weights of a VisualBERT-shaped vl_zoo model.

    `VLForPreTraining` -> `VisualBertForPreTraining`, `VLModel` -> `VisualBertModel`.
    """
    config = model.config
    task = task_of(model)
    num_layers = check_exportable(config, task)
    hf_config = transformers.VisualBertConfig(
        **{theirs: getattr(config, ours) for ours, theirs in TRANSFORMERS_FIELDS.items()},
        num_hidden_layers=num_layers,
    )
    heads = "cls." if task == "pretraining" else ""
    root = "visual_bert." if task == "pretraining" else ""
    parameters = visual_bert.parameter_map(visual_bert.module_map(root, heads, LAYOUT["names"], num_layers), heads)

    ours = model.state_dict()
    if task == "backbone":
        ours = {f"vl.{key}": value for key, value in ours.items()}
    state = {}
    for source, target in parameters.items():
        tensor = ours[target]
        state[source] = visual_bert.flip_rows(tensor) if source.startswith("cls.seq_relationship.") else tensor
    hf_class = transformers.VisualBertForPreTraining if task == "pretraining" else transformers.VisualBertModel
    return load_exactly(hf_class(hf_config), state)


def check_exportable(config: VLConfig, task: str) -> int:
    """The layer count of a VisualBERT-shaped config; ValueError naming every way it differs from transformers'."""
    problems: list[str] = []
    if task == "vqa":
        problems.append("a VQA model: transformers' VisualBERT answers from the [MASK] token, vl_zoo from the pooler")
    if config.image_embeddings != "visualbert":
        problems.append(f"image_embeddings={config.image_embeddings!r} (needs 'visualbert')")
    if config.add_global_imgfeat is not None:
        problems.append(f"add_global_imgfeat={config.add_global_imgfeat!r} (transformers has no global region)")
    if (config.fusion_method, config.fusion_act) != ("text", "tanh"):
        problems.append(f"pooling {config.fusion_method}/{config.fusion_act} (transformers pools text with tanh)")
    if config.pooler_size != config.hidden_size:
        problems.append(f"pooler_size={config.pooler_size} differs from hidden_size={config.hidden_size}")
    if task == "pretraining" and config.active_region_targets:
        problems.append(f"region targets {sorted(config.active_region_targets)} (transformers has no region head)")
    for name in SIZE_MAPS:
        if getattr(config, name):
            problems.append(f"{name} is set (transformers' VisualBERT has one size for every layer)")
    num_layers = len(config.tt_attn_sublayers)
    expected = single_stream_program(num_layers)
    differing = [name for name in PROGRAM_LISTS if getattr(config, name) != expected[name]]
    if differing:
        problems.append(f"the sub-layer program is not a stack of shared BERT layers ({differing} differ)")
    if problems:
        raise ValueError("this model cannot be written as transformers' VisualBERT:\n  " + "\n  ".join(problems))
    return num_layers
