"""Pretraining losses, normalised as the unified-framework release normalises them.

Every loss is a sum over the labelled positions divided by how many there are (at least one), so a batch with
no masked word or region contributes zero instead of NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..configuration import REGION_TARGETS

IGNORE_INDEX = -100


def _upcast(tensor: torch.Tensor) -> torch.Tensor:
    """Compute losses in at least float32 (half-precision logits are upcast; float64 stays float64)."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the words whose label is not -100, averaged over them. logits (B, T, V), labels (B, T)"""
    losses = F.cross_entropy(
        _upcast(logits).flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return losses / (labels != IGNORE_INDEX).sum().clamp(min=1)


def region_loss(
    target_id: str, logits: torch.Tensor, target: torch.Tensor | tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor
) -> torch.Tensor:
    """Loss of one masked-region target, over the regions where `mask` (B, R) is 1.

    target by id: "0" the detector's class distribution (B, R, 1601); "1" / "5" the region features
    (B, R, F); "3" / "4" / "6" class ids (B, R), or a pair (class ids, confidences) whose confidences (B, R)
    weight each region's cross-entropy.
    """
    kind = REGION_TARGETS[target_id][0]
    chosen = mask.bool()  # only the masked regions are scored; the other rows cost nothing
    logits = _upcast(logits[chosen])  # (N, C)
    count = max(int(chosen.sum()), 1)
    if kind == "kl":
        per_class = F.kl_div(F.log_softmax(logits, dim=-1), target[chosen].to(logits.dtype), reduction="none")
        return per_class.sum() / count
    if kind in ("mse", "smooth_l1"):
        loss_fn = F.mse_loss if kind == "mse" else F.smooth_l1_loss
        per_value = loss_fn(logits, target[chosen].to(logits.dtype), reduction="none")  # (N, F)
        return per_value.sum() / (count * logits.shape[-1])
    labels, weights = target if isinstance(target, tuple) else (target, None)
    per_region = F.cross_entropy(logits, labels[chosen].long(), reduction="none")  # (N,)
    if weights is not None:
        per_region = per_region * weights[chosen].to(logits.dtype)
    return per_region.sum() / count


def matching_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image-text matching cross-entropy; label 1 means the text matches the image."""
    return F.cross_entropy(_upcast(logits), labels.long())


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LXMERT's pretraining question answering: cross-entropy over answers, -100 ignored."""
    losses = F.cross_entropy(_upcast(logits), labels.long(), ignore_index=IGNORE_INDEX, reduction="sum")
    return losses / (labels != IGNORE_INDEX).sum().clamp(min=1)


def soft_score_loss(logits: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """VQA's loss: binary cross-entropy on soft answer scores, averaged then scaled by the number of answers."""
    return F.binary_cross_entropy_with_logits(_upcast(logits), scores.to(_upcast(logits).dtype)) * scores.shape[-1]
