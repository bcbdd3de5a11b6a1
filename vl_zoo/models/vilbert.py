"""ViLBERT (Lu et al., 2019): two streams joined by co-attention blocks.

ctrl: 6 text-only BERT layers, then 6 blocks of [co-attention, feed-forward, self-attention, feed-forward],
both streams 768 wide; regions embedded as LayerNorm(W_f feature + W_b box); pooled output = pooled text x
pooled vision. "original": the published sizes, a 1024-wide vision stream with 8 heads and 1024-wide
co-attention.
"""

from __future__ import annotations

from typing import Any

from ..configuration import VLConfig
from ..modeling.model import VLForPreTraining, VLForVisualQuestionAnswering, VLModel
from .programs import vilbert_program

# A 128-wide model trained from scratch, for tests and demos. Without dropout: attention dropout over the ~10 rows
# of a small scene keeps such a model from binding words to regions (on builtin:synthetic, masked colour words
# stayed at 0.25 accuracy after 2,500 steps with BERT's 0.1, and reached 0.60 without it). Width matters more than
# depth here: on builtin:synthetic a 32-wide UNITER had not started matching images and texts after 5,000 steps,
# a 64-wide one started at 1,500 and a 128-wide one matched 0.87 of pairs at 3,000, while a step costs twice a
# 64-wide one's.
TINY = {
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "v_hidden_dropout_prob": 0.0,
    "v_attention_probs_dropout_prob": 0.0,
    "hidden_size": 128,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "v_hidden_size": 128,
    "v_num_attention_heads": 4,
    "v_intermediate_size": 256,
    "pooler_size": 128,
    "v_pooler_size": 128,
    "clf_hidden_size": 256,
    "max_position_embeddings": 128,
}


def _original() -> dict[str, Any]:
    """vilbert_base.json of the release: co-attention sub-layers 1024 wide with 8 heads."""
    program = vilbert_program(6, 6)
    co_attention = {str(n): 1024 for n in program["tv_attn_sublayers"]}
    heads = {str(n): 8 for n in program["tv_attn_sublayers"]}
    return {
        **program,
        "v_hidden_size": 1024,
        "v_num_attention_heads": 8,
        "v_intermediate_size": 1024,
        "sublayer2attn_hidden_size": co_attention,
        "sublayer2num_attention_heads": heads,
    }


class ViLBertConfig(VLConfig):
    """ViLBERT; defaults are the controlled setting (`ctrl_vilbert_base` of the release)."""

    model_type = "vlzoo_vilbert"
    image_embeddings: str = "vilbert"
    presets = {
        "ctrl": {},
        "original": _original(),
        "tiny": {**TINY, **vilbert_program(2, 2)},
    }

    @classmethod
    def default_program(cls) -> dict[str, Any]:
        return vilbert_program(6, 6)


class ViLBertModel(VLModel):
    config_class = ViLBertConfig


class ViLBertForPreTraining(VLForPreTraining):
    config_class = ViLBertConfig


class ViLBertForVisualQuestionAnswering(VLForVisualQuestionAnswering):
    config_class = ViLBertConfig
