"""The unified encoder: a program of attention and feed-forward sub-layers over a text and a vision stream.

An attention sub-layer computes queries, keys and values for each stream it touches and runs *one* attention
call whenever it can: when both streams ask queries with the same head layout (single-stream models, shared
cross-attention, same-size self-attention), their queries, keys and values are concatenated and a mask says
which (query stream, key stream) pairs are allowed. The single-stream models are then exactly BERT over the
joint sequence. Only when the two streams' head layouts differ (the original ViLBERT's 1024-wide vision
stream) does each stream get its own call.

A stream that a sub-layer does not touch passes through unchanged. In a shared sub-layer both streams use one
set of parameters, applied to the concatenated sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer

from ..configuration import SublayerSpec, VLConfig

# ---------------------------------------------------------------------------------------------- attention kernels


def eager_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, dropout: float, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention written out; returns the context (B, H, Lq, D) and the probabilities (B, H, Lq, Lk)."""
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale + mask
    probs = torch.softmax(scores, dim=-1)
    context = torch.matmul(F.dropout(probs, p=dropout), value)
    return context, probs


def sdpa_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, dropout: float, scale: float
) -> tuple[torch.Tensor, None]:
    """The same maths through torch's fused scaled_dot_product_attention (no probabilities returned)."""
    # Every call passes a mask, even for a batch without padding, and torch's flash kernel takes none: on a GPU
    # these calls run the memory-efficient kernel (or cuDNN's), never flash, which is the fastest where it applies.
    # Passing no mask for unpadded single-stream batches would let flash run; that path is not written yet.
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scale)
    return context, None


ATTENTION_FUNCTIONS = {"eager": eager_attention, "sdpa": sdpa_attention}


@dataclass
class AttentionMasks:
    """Additive masks over the joint key sequence [text; vision], built once per forward and shared by sub-layers.

    `padding` is (B, 1, 1, T + R): 0 for a real token or region, the dtype's minimum for padding. Masks that
    also forbid some (query stream, key stream) pairs are made on first use and cached for the forward.
    """

    padding: torch.Tensor
    text_length: int
    implementation: str = "sdpa"
    _cache: dict[tuple, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        attention_mask: torch.Tensor,
        visual_attention_mask: torch.Tensor,
        dtype: torch.dtype,
        implementation: str = "sdpa",
    ) -> AttentionMasks:
        """Masks in `dtype`, the dtype attention will compute in (the autocast dtype when autocast is on)."""
        if implementation not in ATTENTION_FUNCTIONS:
            raise ValueError(
                f"attn_implementation={implementation!r} is not supported by vl_zoo models; "
                f"allowed: {sorted(ATTENTION_FUNCTIONS)}"
            )
        device_type = attention_mask.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
        keep = torch.cat([attention_mask, visual_attention_mask], dim=1).bool()  # (B, T + R)
        padding = torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)
        return cls(
            padding=padding[:, None, None, :], text_length=attention_mask.shape[1], implementation=implementation
        )

    def keys(self, text: bool, vision: bool) -> torch.Tensor:
        """Padding mask over the keys of the chosen streams, (B, 1, 1, Lk)."""
        if text and vision:
            return self.padding
        return self.padding[..., : self.text_length] if text else self.padding[..., self.text_length :]

    def prepare(self, specs: list[SublayerSpec]) -> None:
        """Build the joint masks of these sub-layers now, so that sub-layers only read the cache.

        A sub-layer that fills the cache has a side effect, which torch.compile refuses inside activation
        checkpointing (the recomputation in backward would not replay it); built before the first sub-layer, the
        masks are plain inputs to every sub-layer.
        """
        for spec in specs:
            self.joint(spec)

    def joint(self, spec: SublayerSpec) -> torch.Tensor:
        """Mask for both streams' queries over both streams' keys, forbidding the pairs `spec` does not list."""
        pattern = (spec.tt, spec.tv, spec.vt, spec.vv)
        if all(pattern):
            return self.padding
        if pattern not in self._cache:
            # Shapes here depend only on the text length, so torch.compile traces this without a graph break.
            is_text = torch.arange(self.padding.shape[-1], device=self.padding.device) < self.text_length
            query_text, key_text = is_text[:, None], is_text[None, :]  # (T + R, 1), (1, T + R)
            allowed = (query_text & key_text & spec.tt) | (query_text & ~key_text & spec.tv)
            allowed = allowed | (~query_text & key_text & spec.vt) | (~query_text & ~key_text & spec.vv)
            blocked = torch.finfo(self.padding.dtype).min
            self._cache[pattern] = self.padding.masked_fill(~allowed, blocked)  # (B, 1, T + R, T + R)
        return self._cache[pattern]


# ---------------------------------------------------------------------------------------------- sub-layers


class StreamAttention(nn.Module):
    """One stream's projections in an attention sub-layer: query, key, value, output and residual LayerNorm."""

    def __init__(self, hidden_size: int, attn_size: int, dropout: float, layer_norm_eps: float) -> None:
        super().__init__()
        self.query = nn.Linear(hidden_size, attn_size)
        self.key = nn.Linear(hidden_size, attn_size)
        self.value = nn.Linear(hidden_size, attn_size)
        self.output = nn.Linear(attn_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def project(self, states: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values split into heads, each (B, heads, L, head size)."""
        batch, length = states.shape[:2]

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, num_heads, -1).transpose(1, 2)

        return split(self.query(states)), split(self.key(states)), split(self.value(states))

    def finish(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Merge heads, project back, add the residual and normalise. context: (B, heads, L, head size)"""
        merged = context.transpose(1, 2).flatten(2)  # (B, L, attn_size)
        return self.layer_norm(self.dropout(self.output(merged)) + residual)


class StreamFeedForward(nn.Module):
    """One stream's feed-forward block: LayerNorm(x + W2 act(W1 x))."""

    def __init__(self, hidden_size: int, intermediate_size: int, act: str, dropout: float, eps: float) -> None:
        super().__init__()
        self.intermediate = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[act]
        self.output = nn.Linear(intermediate_size, hidden_size)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.dropout(self.output(self.act(self.intermediate(states)))) + states)


class Sublayer(GradientCheckpointingLayer):
    """Common wiring: parameters for `text`, `vision` or `shared`, depending on the spec."""

    def __init__(self, spec: SublayerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.text = self.vision = self.shared = None

    def stream_modules(self) -> tuple[nn.Module | None, nn.Module | None]:
        """The parameter sets the text and the vision stream use here (None for an untouched stream)."""
        if self.shared is not None:
            return self.shared, self.shared
        return self.text, self.vision


class AttentionSublayer(Sublayer):
    """An attention sub-layer of the program; see the module docstring for how calls are merged."""

    def __init__(self, config: VLConfig, spec: SublayerSpec) -> None:
        super().__init__(spec)
        eps = config.layer_norm_eps
        if spec.shares_parameters:
            self.shared = StreamAttention(config.hidden_size, spec.attn_size, config.hidden_dropout_prob, eps)
        else:
            if spec.text_active:
                self.text = StreamAttention(config.hidden_size, spec.attn_size, config.hidden_dropout_prob, eps)
            if spec.vision_active:
                self.vision = StreamAttention(
                    config.v_hidden_size, spec.v_attn_size, config.v_hidden_dropout_prob, eps
                )
        self.text_probs_dropout = config.attention_probs_dropout_prob
        self.vision_probs_dropout = config.v_attention_probs_dropout_prob
        self.text_layout = (spec.num_heads, spec.attn_size // spec.num_heads)
        self.vision_layout = (spec.v_num_heads, spec.v_attn_size // spec.v_num_heads)

    def forward(
        self, text: torch.Tensor, vision: torch.Tensor, masks: AttentionMasks
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | tuple | None]:
        spec = self.spec
        if spec.shares_parameters:
            return self._forward_shared(text, vision, masks)
        text_params, vision_params = self.stream_modules()

        projected = {}
        if spec.text_active:
            projected["text"] = text_params.project(text, self.text_layout[0])
        if spec.vision_active:
            projected["vision"] = vision_params.project(vision, self.vision_layout[0])

        # Both streams ask queries with one head layout: a single call over the joint sequence. Where the mask
        # forbids whole blocks (dual-stream self- or cross-attention), the call still computes them: twice the
        # attention FLOPs of per-stream calls (under 0.5% of a ctrl step) and, in CPU training with dropout,
        # about 50 MiB more kept for backward in ctrl LXMERT at batch 8 (see benchmarks/RESULTS.md).
        if len(projected) == 2 and self._joint_call_possible():
            q, k, v = (torch.cat([t, r], dim=2) for t, r in zip(projected["text"], projected["vision"], strict=False))
            context, probs = self._attend(q, k, v, masks.joint(spec), self.text_layout, self.text_probs_dropout, masks)
            context_t, context_v = context.split([text.shape[1], vision.shape[1]], dim=2)
            return text_params.finish(context_t, text), vision_params.finish(context_v, vision), probs

        # Otherwise one call per querying stream, over the keys of the streams it attends to.
        probs = []
        if spec.text_active:
            context, text_probs = self._attend_stream(projected, "text", spec.tt, spec.tv, masks)
            text = text_params.finish(context, text)
            probs.append(text_probs)
        if spec.vision_active:
            context, vision_probs = self._attend_stream(projected, "vision", spec.vt, spec.vv, masks)
            vision = vision_params.finish(context, vision)
            probs.append(vision_probs)
        return text, vision, probs[0] if len(probs) == 1 else tuple(probs)

    def _forward_shared(
        self, text: torch.Tensor, vision: torch.Tensor, masks: AttentionMasks
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Both streams with one parameter set: the sub-layer runs once over the concatenated sequence."""
        joint = torch.cat([text, vision], dim=1)  # (B, T + R, H)
        q, k, v = self.shared.project(joint, self.text_layout[0])
        mask = masks.joint(self.spec)
        context, probs = self._attend(q, k, v, mask, self.text_layout, self.text_probs_dropout, masks)
        joint = self.shared.finish(context, joint)
        text, vision = joint.split([text.shape[1], vision.shape[1]], dim=1)
        return text, vision, probs

    def uses_joint_mask(self) -> bool:
        """Whether this sub-layer attends over the joint sequence, and so reads `AttentionMasks.joint`."""
        both = self.spec.text_active and self.spec.vision_active
        return self.spec.shares_parameters or (both and self._joint_call_possible())

    def _joint_call_possible(self) -> bool:
        same_layout = self.text_layout == self.vision_layout
        return same_layout and self.text_probs_dropout == self.vision_probs_dropout

    def _attend_stream(
        self, projected: dict, stream: str, to_text: bool, to_vision: bool, masks: AttentionMasks
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One stream's queries over the keys and values of the streams it attends to."""
        sources = [projected[name] for name, wanted in (("text", to_text), ("vision", to_vision)) if wanted]
        k = torch.cat([source[1] for source in sources], dim=2)
        v = torch.cat([source[2] for source in sources], dim=2)
        layout = self.text_layout if stream == "text" else self.vision_layout
        dropout = self.text_probs_dropout if stream == "text" else self.vision_probs_dropout
        return self._attend(projected[stream][0], k, v, masks.keys(to_text, to_vision), layout, dropout, masks)

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor,
        layout: tuple[int, int],
        dropout: float,
        masks: AttentionMasks,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention = ATTENTION_FUNCTIONS[masks.implementation]
        if mask.dtype != q.dtype:  # called under another autocast than the masks were built for
            mask = mask.to(q.dtype).clamp(min=torch.finfo(q.dtype).min)
        dropout = dropout if self.training else 0.0
        return attention(q, k, v, mask, dropout, 1.0 / math.sqrt(layout[1]))


class FeedForwardSublayer(Sublayer):
    """A feed-forward sub-layer of the program."""

    def __init__(self, config: VLConfig, spec: SublayerSpec) -> None:
        super().__init__(spec)
        eps = config.layer_norm_eps
        text_args = (config.hidden_size, spec.intermediate_size, config.hidden_act, config.hidden_dropout_prob, eps)
        if spec.shares_parameters:
            self.shared = StreamFeedForward(*text_args)
        else:
            if spec.text_active:
                self.text = StreamFeedForward(*text_args)
            if spec.vision_active:
                vision_args = (config.v_hidden_size, spec.v_intermediate_size, config.v_hidden_act)
                self.vision = StreamFeedForward(*vision_args, config.v_hidden_dropout_prob, eps)

    def forward(
        self, text: torch.Tensor, vision: torch.Tensor, masks: AttentionMasks
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        if self.shared is not None:
            joint = self.shared(torch.cat([text, vision], dim=1))
            text, vision = joint.split([text.shape[1], vision.shape[1]], dim=1)
            return text, vision, None
        if self.text is not None:
            text = self.text(text)
        if self.vision is not None:
            vision = self.vision(vision)
        return text, vision, None


# ---------------------------------------------------------------------------------------------- encoder


class VLEncoder(nn.Module):
    """Runs the sub-layer program of a config over the two streams."""

    def __init__(self, config: VLConfig) -> None:
        super().__init__()
        sublayers = []
        for spec in config.sublayer_specs():
            block = AttentionSublayer if spec.kind == "attn" else FeedForwardSublayer
            sublayers.append(block(config, spec))
        self.sublayers = nn.ModuleList(sublayers)
        joint = [block for block in sublayers if isinstance(block, AttentionSublayer) and block.uses_joint_mask()]
        self.joint_mask_specs = [block.spec for block in joint]

    def forward(
        self,
        text: torch.Tensor,
        vision: torch.Tensor,
        masks: AttentionMasks,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple | None, tuple | None, tuple | None]:
        text_states = [text] if output_hidden_states else None
        vision_states = [vision] if output_hidden_states else None
        attentions = [] if output_attentions else None
        masks.prepare(self.joint_mask_specs)
        for sublayer in self.sublayers:
            text, vision, probs = sublayer(text, vision, masks)
            if output_hidden_states:
                text_states.append(text)
                vision_states.append(vision)
            if output_attentions and sublayer.spec.kind == "attn":
                attentions.append(probs)
        return text, vision, _as_tuple(text_states), _as_tuple(vision_states), _as_tuple(attentions)


def _as_tuple(items: list | None) -> tuple | None:
    return None if items is None else tuple(items)
