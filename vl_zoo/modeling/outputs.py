"""What vl_zoo models return. Field names are part of the public contract (DESIGN.md, section 2)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class VLModelOutput(ModelOutput):
    """Output of `VLModel`.

    Args:
        text_last_hidden_state: (B, T, H) the text stream after the last sub-layer.
        vision_last_hidden_state: (B, R, Hv) the vision stream after the last sub-layer.
        pooler_output: (B, P) the fused pooled vector (None when `fusion_method` is "none").
        text_pooler_output: (B, P) the text stream pooled at [CLS].
        vision_pooler_output: (B, Pv) the vision stream pooled at the global row (None without a vision pooler).
        text_hidden_states: the embedding output then every sub-layer's text output, when asked.
        vision_hidden_states: the same for the vision stream.
        attentions: one entry per attention sub-layer, when asked. A sub-layer computed as one call over the
            joint sequence gives (B, heads, T + R, T + R); one computed per stream gives a pair of the text
            queries' and the vision queries' probabilities.
    """

    text_last_hidden_state: torch.Tensor | None = None
    vision_last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    text_pooler_output: torch.Tensor | None = None
    vision_pooler_output: torch.Tensor | None = None
    text_hidden_states: tuple[torch.Tensor, ...] | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple | None = None


@dataclass
class VLForPreTrainingOutput(ModelOutput):
    """Output of `VLForPreTraining`.

    Args:
        loss: the weighted sum of the losses whose labels were given (None when none were).
        mlm_loss, region_loss, itm_loss, answer_loss: the separate objectives (region_loss already weighted
            and summed over the active region targets).
        mlm_logits: (B, T, V) masked word logits.
        region_logits: (B, R, C) masked region logits of the first active region target (by release id).
        region_logits_by_target: every active region target's logits, by release id.
        itm_logits: (B, 2) image-text matching logits; index 1 means "the text matches the image".
        answer_logits: (B, A) LXMERT's pretraining answer logits, when the config has an answer head.
        The backbone's fields (see `VLModelOutput`) follow.
    """

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    region_loss: torch.Tensor | None = None
    itm_loss: torch.Tensor | None = None
    answer_loss: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    region_logits: torch.Tensor | None = None
    region_logits_by_target: dict[str, torch.Tensor] | None = None
    itm_logits: torch.Tensor | None = None
    answer_logits: torch.Tensor | None = None
    text_last_hidden_state: torch.Tensor | None = None
    vision_last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    text_pooler_output: torch.Tensor | None = None
    vision_pooler_output: torch.Tensor | None = None
    text_hidden_states: tuple[torch.Tensor, ...] | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple | None = None


@dataclass
class VLClassificationOutput(ModelOutput):
    """Output of a classification head on the pooled output (VQA and friends)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    text_hidden_states: tuple[torch.Tensor, ...] | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple | None = None
