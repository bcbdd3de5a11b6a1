"""transformers' LXMERT port (`unc-nlp/lxmert-base-uncased`): to vl_zoo and back.

The port keeps the authors' key names under `lxmert.` instead of `bert.` (`LxmertForPreTraining`), or at the
root for a bare `LxmertModel`; `LxmertForQuestionAnswering` puts its classifier in `answer_head.logit_fc`
without the pretraining heads, which vl_zoo reads as a VQA model. The key map is the one in `lxmert.py`.

`to_transformers` is the reverse direction: an LXMERT-shaped vl_zoo model (LXMERT's layer pattern, 4-d boxes,
no global region, tanh text-only pooling) becomes an `LxmertForPreTraining` (or `LxmertForQuestionAnswering`,
or `LxmertModel`) with identical tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers

from ...configuration import SIZE_MAPS, VLConfig
from ...modeling.model import VLForPreTraining, VLForVisualQuestionAnswering, VLModel
from ..common import ConversionError
from . import lxmert
from .common import OriginalConversion

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
    "v_feature_size": "visual_feat_dim",
    "num_locs": "visual_pos_dim",
}
REGION_LOSS_SWITCHES = {"3": "visual_obj_loss", "4": "visual_attr_loss", "5": "visual_feat_loss"}
REGION_LABEL_COUNTS = {"3": "num_object_labels", "4": "num_attr_labels"}


def convert(state_dict: dict[str, torch.Tensor], original_config: dict | None) -> OriginalConversion:
    """A state dict of transformers' LxmertForPreTraining / LxmertForQuestionAnswering / LxmertModel as vl_zoo's.

    `original_config` is the port's config.json (optional): its sizes must agree with the weights; it sets the
    head count, activation, dropouts and, for a question-answering checkpoint, the answer labels.
    """
    original = dict(original_config or {})
    for name in ("num_qa_labels", "num_object_labels", "num_attr_labels"):
        original.pop(name, None)  # checked by the shapes of the heads that read them
    return lxmert.convert_layout(state_dict, original, ("lxmert.", ""), "the transformers config")


# ---------------------------------------------------------------------------------------------- export


def to_transformers(model: torch.nn.Module) -> transformers.PreTrainedModel:
    """The transformers LXMERT model holding exactly the weights of an LXMERT-shaped vl_zoo model.

    `VLForPreTraining` -> `LxmertForPreTraining`, `VLForVisualQuestionAnswering` -> `LxmertForQuestionAnswering`,
    `VLModel` -> `LxmertModel`.
    """
    config = model.config
    task = task_of(model)
    check_exportable(config, task)
    l_layers, r_layers, x_layers = lxmert.layer_counts(config)
    hf_config = transformers_config(config, l_layers, r_layers, x_layers, task)
    hf_class = {
        "pretraining": transformers.LxmertForPreTraining,
        "vqa": transformers.LxmertForQuestionAnswering,
        "backbone": transformers.LxmertModel,
    }[task]

    ours = model.state_dict()
    if task == "backbone":
        ours = {f"vl.{key}": value for key, value in ours.items()}
    modules = lxmert.backbone_map("lxmert." if task != "backbone" else "", l_layers, r_layers, x_layers)
    if task == "pretraining":
        modules.update(lxmert.pretraining_head_map(sorted(config.active_region_targets)))
    if task == "vqa" or (task == "pretraining" and config.qa_num_answers):
        modules.update(lxmert.answer_map("answer_head.logit_fc", "classifier" if task == "vqa" else "answer_head"))
    state = {source: ours[target] for source, target in lxmert.parameter_map(modules).items()}
    if task == "pretraining":
        state["cls.predictions.bias"] = ours["mlm_head.bias"]
    return load_exactly(hf_class(hf_config), state)


def check_exportable(config: VLConfig, task: str) -> None:
    """ValueError naming every way a vl_zoo config differs from what transformers' LXMERT computes."""
    problems = []
    if config.image_embeddings != "lxmert":
        problems.append(f"image_embeddings={config.image_embeddings!r} (needs 'lxmert')")
    if config.add_global_imgfeat is not None:
        problems.append(f"add_global_imgfeat={config.add_global_imgfeat!r} (transformers has no global region)")
    if (config.fusion_method, config.fusion_act) != ("text", "tanh"):
        problems.append(f"pooling {config.fusion_method}/{config.fusion_act} (transformers pools text with tanh)")
    if config.num_locs not in (4, 5):
        problems.append(f"num_locs={config.num_locs} (transformers reads the first visual_pos_dim box columns)")
    for name in ("hidden_size", "num_attention_heads", "intermediate_size", "hidden_act"):
        if getattr(config, f"v_{name}") != getattr(config, name):
            problems.append(f"v_{name}={getattr(config, f'v_{name}')} differs from {name} (transformers has one)")
    if config.pooler_size != config.hidden_size:
        problems.append(f"pooler_size={config.pooler_size} differs from hidden_size={config.hidden_size}")
    if task == "vqa" and config.clf_hidden_size != 2 * config.hidden_size:
        problems.append(f"clf_hidden_size={config.clf_hidden_size} (transformers' answer head is 2 x hidden_size)")
    unknown_targets = sorted(set(config.active_region_targets) - set(REGION_LOSS_SWITCHES))
    if unknown_targets:
        problems.append(
            f"region targets {unknown_targets} (LXMERT predicts objects '3', attributes '4', features '5')"
        )
    for name in SIZE_MAPS:
        if getattr(config, name):
            problems.append(f"{name} is set (transformers' LXMERT has one size for every layer)")
    if problems:
        raise ValueError("this model cannot be written as transformers' LXMERT:\n  " + "\n  ".join(problems))


def transformers_config(
    config: VLConfig, l_layers: int, r_layers: int, x_layers: int, task: str
) -> transformers.LxmertConfig:
    """transformers' LxmertConfig of an LXMERT-shaped vl_zoo config: sizes, layer counts and which heads exist."""
    values: dict[str, Any] = {theirs: getattr(config, ours) for ours, theirs in TRANSFORMERS_FIELDS.items()}
    values.update(l_layers=l_layers, r_layers=r_layers, x_layers=x_layers, pad_token_id=config.pad_token_id)
    targets = config.active_region_targets
    values["task_obj_predict"] = bool(targets)
    values.update({switch: target_id in targets for target_id, switch in REGION_LOSS_SWITCHES.items()})
    if "3" in targets:
        values["num_object_labels"] = config.region_target_size("3")
    if "4" in targets:
        values["num_attr_labels"] = config.region_target_size("4")
    values["task_qa"] = config.qa_num_answers > 0 or task == "vqa"
    values["num_qa_labels"] = config.qa_num_answers if task != "vqa" else config.num_labels
    if task == "vqa":
        values["id2label"] = dict(config.id2label)
    if config.visual_target_weights:
        weights = set(targets.values())
        if len(weights) == 1:
            values["visual_loss_normalizer"] = weights.pop()
    return transformers.LxmertConfig(**values)


def task_of(model: torch.nn.Module) -> str:
    """Which of the three vl_zoo classes `model` is: "pretraining", "vqa" or "backbone"."""
    if isinstance(model, VLForPreTraining):
        return "pretraining"
    if isinstance(model, VLForVisualQuestionAnswering):
        return "vqa"
    if isinstance(model, VLModel):
        return "backbone"
    raise ValueError(f"{type(model).__name__} is not a vl_zoo backbone, pretraining or VQA model")


def load_exactly(
    hf_model: transformers.PreTrainedModel, state: dict[str, torch.Tensor]
) -> transformers.PreTrainedModel:
    """Load `state` into a transformers model, refusing any key left unfilled (tied ones aside) or unused."""
    tied = set(getattr(hf_model, "all_tied_weights_keys", None) or {})
    expected = {key for key in hf_model.state_dict() if key not in tied and not key.endswith("position_ids")}
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise ConversionError(f"the export does not fill {type(hf_model).__name__}: missing {missing}, extra {extra}")
    result = hf_model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ConversionError(f"{type(hf_model).__name__} did not take {result.unexpected_keys}")
    hf_model.tie_weights()
    return hf_model.eval()
