"""Pooling with fusion, and the heads on top of the encoder: masked words, masked regions, matching, answers."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from ..configuration import VLConfig
from .embeddings import last_real_row

POOLER_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class VLPooler(nn.Module):
    """Pools the text stream at [CLS] and the vision stream at the global image row, then fuses the two.

    `fusion_method` "mul" and "sum" combine both pooled vectors element-wise, "text" keeps the text one only.
    The vision stream is pooled at row 0 when the global row is first (or absent, as the release does), and at
    the last real region when it is last.
    """

    def __init__(self, config: VLConfig) -> None:
        super().__init__()
        self.fusion_method = config.fusion_method
        self.global_region = config.add_global_imgfeat
        self.activation = POOLER_ACTIVATIONS[config.fusion_act]()
        self.text_dense = nn.Linear(config.hidden_size, config.pooler_size)
        self.vision_dense = None
        if config.has_vision_pooler:
            self.vision_dense = nn.Linear(config.v_hidden_size, config.v_pooler_size)

    def forward(
        self, text: torch.Tensor, vision: torch.Tensor, visual_attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Returns the fused pooled output (B, P), and the text (B, P) and vision (B, Pv or None) pooled vectors."""
        pooled_text = self.activation(self.text_dense(text[:, 0]))
        if self.vision_dense is None:
            return pooled_text, pooled_text, None

        if self.global_region == "last":
            rows = torch.arange(vision.shape[0], device=vision.device)
            global_row = vision[rows, last_real_row(visual_attention_mask)]
        else:
            global_row = vision[:, 0]
        pooled_vision = self.activation(self.vision_dense(global_row))
        fused = pooled_text * pooled_vision if self.fusion_method == "mul" else pooled_text + pooled_vision
        return fused, pooled_text, pooled_vision


class PredictionTransform(nn.Module):
    """Dense, activation, then an optional LayerNorm: the shared trunk of the word and region heads."""

    def __init__(self, hidden_size: int, act: str, layer_norm_eps: float, use_layer_norm: bool = True) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = ACT2FN[act]
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps) if use_layer_norm else nn.Identity()

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.act(self.dense(states)))


class MaskedLMHead(nn.Module):
    """Masked word prediction; the decoder weight is tied to the word embeddings, the bias is its own."""

    def __init__(self, config: VLConfig) -> None:
        super().__init__()
        self.transform = PredictionTransform(config.hidden_size, config.hidden_act, config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(text)) + self.bias  # (B, T, V)


class RegionHead(nn.Module):
    """Masked region prediction: one shared transform, then one decoder per active region target."""

    def __init__(self, config: VLConfig) -> None:
        super().__init__()
        # The release takes the activation from `hidden_act` here, not `v_hidden_act`.
        self.transform = PredictionTransform(
            config.v_hidden_size, config.hidden_act, config.layer_norm_eps, use_layer_norm=config.image_head_ln
        )
        self.decoders = nn.ModuleDict(
            {
                key: nn.Linear(config.v_hidden_size, config.region_target_size(key))
                for key in config.active_region_targets
            }
        )

    def forward(self, vision: torch.Tensor) -> dict[str, torch.Tensor]:
        states = self.transform(vision)
        return {key: decoder(states) for key, decoder in self.decoders.items()}  # each (B, R, C)


class ClassifierMLP(nn.Module):
    """Linear, GELU, LayerNorm, Linear: the release's answer and task classifier."""

    def __init__(self, in_size: int, hidden_size: int, out_size: int, layer_norm_eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_size, hidden_size)
        self.act = nn.GELU()
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.decoder = nn.Linear(hidden_size, out_size)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(self.act(self.dense(states))))
