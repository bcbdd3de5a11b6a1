"""Checks of model inputs at the public edge, so bad input fails with a message instead of deep in a matmul."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..configuration import VLConfig


@dataclass
class ModelInputs:
    """The six model inputs, with the optional ones filled in."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    visual_feats: torch.Tensor
    visual_pos: torch.Tensor | None
    visual_attention_mask: torch.Tensor


def _shape(name: str, tensor: torch.Tensor, expected: tuple, meaning: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {meaning}, got {type(tensor).__name__}")
    if tensor.dim() != len(expected) or any(
        e is not None and s != e for s, e in zip(tensor.shape, expected, strict=False)
    ):
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {meaning} = {_pretty(expected)}")


def _pretty(expected: tuple) -> str:
    return "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"


def _values_checkable() -> bool:
    """Value checks read tensors back to the host; skip them while tracing or compiling."""
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing())


def check_inputs(
    config: VLConfig,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    visual_feats: torch.Tensor | None,
    visual_pos: torch.Tensor | None,
    visual_attention_mask: torch.Tensor | None,
) -> ModelInputs:
    """Validate the inputs against each other and the config; fill the optional ones."""
    if input_ids is None:
        raise ValueError("input_ids is required: (batch, text length) token ids")
    if visual_feats is None:
        raise ValueError(f"visual_feats is required: (batch, regions, {config.v_feature_size}) region features")
    _shape("input_ids", input_ids, (None, None), "(batch, text length)")
    batch, length = input_ids.shape
    if input_ids.is_floating_point():
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")

    _shape("visual_feats", visual_feats, (batch, None, config.v_feature_size), "(batch, regions, v_feature_size)")
    if not visual_feats.is_floating_point():
        raise ValueError(f"visual_feats must be floating point, got dtype {visual_feats.dtype}")
    regions = visual_feats.shape[1]
    _check_lengths(config, length, regions)

    if visual_pos is None and config.image_embeddings != "visualbert":
        raise ValueError(
            f"visual_pos is required by image_embeddings={config.image_embeddings!r}: (batch, regions, 5) boxes"
        )
    if visual_pos is not None:
        _shape("visual_pos", visual_pos, (batch, regions, 5), "(batch, regions, 5) = x1/W, y1/H, x2/W, y2/H, area")

    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
    if visual_attention_mask is None:
        visual_attention_mask = torch.ones(batch, regions, dtype=torch.long, device=visual_feats.device)
    _shape("attention_mask", attention_mask, (batch, length), "(batch, text length)")
    _shape("token_type_ids", token_type_ids, (batch, length), "(batch, text length)")
    _shape("visual_attention_mask", visual_attention_mask, (batch, regions), "(batch, regions)")

    if _values_checkable():
        _check_values(config, input_ids, token_type_ids, visual_pos)
    return ModelInputs(input_ids, attention_mask, token_type_ids, visual_feats, visual_pos, visual_attention_mask)


def _check_lengths(config: VLConfig, length: int, regions: int) -> None:
    if regions == 0:
        raise ValueError("visual_feats has 0 regions; give at least one region (the processor adds a global one)")
    last_position = length - 1
    if config.image_embeddings == "vl-bert":
        last_position = length + 1  # the regions at "text end", the end token one past it
    if config.image_embeddings == "vl-bert" and config.vl_bert_shared_text_positions:
        last_position = length - 1 + regions  # the release moves text positions past the regions
    if last_position >= config.max_position_embeddings:
        raise ValueError(
            f"input_ids has length {length} (with {regions} regions), which needs position {last_position}, but "
            f"max_position_embeddings is {config.max_position_embeddings}"
        )


def _check_values(
    config: VLConfig, input_ids: torch.Tensor, token_type_ids: torch.Tensor, visual_pos: torch.Tensor | None
) -> None:
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= config.vocab_size:
        raise ValueError(
            f"input_ids holds ids in [{low}, {high}], outside the vocabulary [0, {config.vocab_size - 1}]"
        )
    low, high = int(token_type_ids.min()), int(token_type_ids.max())
    if low < 0 or high >= config.type_vocab_size:
        raise ValueError(
            f"token_type_ids holds values in [{low}, {high}], outside [0, {config.type_vocab_size - 1}] "
            "(type_vocab_size)"
        )
    if visual_pos is not None:
        low, high = float(visual_pos.min()), float(visual_pos.max())
        if not (0.0 <= low and high <= 1.0):
            raise ValueError(
                f"visual_pos holds values in [{low:.4g}, {high:.4g}], but boxes must be normalised to [0, 1] "
                "(x1/W, y1/H, x2/W, y2/H, area/(W*H)); the processor does this from pixel boxes and image sizes"
            )
