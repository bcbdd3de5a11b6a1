"""UNITER (Chen et al., 2020): one stream; regions are LayerNorm'd feature and box projections, summed.

ctrl: 12 BERT layers over [text; regions], 5-d boxes. "original": the published inputs, UNITER's 7-d boxes
and no global region, with text-only pooling through tanh.
"""

from __future__ import annotations

from typing import Any

from ..configuration import VLConfig
from ..modeling.model import VLForPreTraining, VLForVisualQuestionAnswering, VLModel
from .programs import single_stream_program
from .vl_bert import SINGLE_STREAM_TINY


class UniterConfig(VLConfig):
    """UNITER; defaults are the controlled setting (`ctrl_uniter_base` of the release)."""

    model_type = "vlzoo_uniter"
    image_embeddings: str = "uniter"
    presets = {
        "ctrl": {},
        "original": {
            "vocab_size": 28996,
            "num_locs": 7,
            "add_global_imgfeat": None,
            "pooler_size": 768,
            "v_pooler_size": 768,
            "fusion_method": "text",
            "fusion_act": "tanh",
        },
        "tiny": SINGLE_STREAM_TINY,
    }

    @classmethod
    def default_program(cls) -> dict[str, Any]:
        return single_stream_program(12)


class UniterModel(VLModel):
    config_class = UniterConfig


class UniterForPreTraining(VLForPreTraining):
    config_class = UniterConfig


class UniterForVisualQuestionAnswering(VLForVisualQuestionAnswering):
    config_class = UniterConfig
