"""VisualBERT (Li et al., 2019): one stream; regions are projected features with visual type and position.

ctrl: 12 BERT layers over [text; regions]; VisualBERT has no box input. "original": the authors' head and inputs
(uclanlp/visualbert, and transformers' port): no global region, the tanh pooler on [CLS] alone (768 wide), no
masked-region head; the sizes are those of ctrl.
"""

from __future__ import annotations

from typing import Any

from ..configuration import VLConfig
from ..modeling.model import VLForPreTraining, VLForVisualQuestionAnswering, VLModel
from .programs import single_stream_program
from .vl_bert import SINGLE_STREAM_TINY

ORIGINAL = {
    "add_global_imgfeat": None,
    "fusion_method": "text",
    "fusion_act": "tanh",
    "pooler_size": 768,
    "v_pooler_size": 768,
    "visual_target_weights": {},
}


class VisualBertConfig(VLConfig):
    """VisualBERT; defaults are the controlled setting (`ctrl_visualbert_base` of the release)."""

    model_type = "vlzoo_visual_bert"
    image_embeddings: str = "visualbert"
    presets = {"ctrl": {}, "original": ORIGINAL, "tiny": SINGLE_STREAM_TINY}

    @classmethod
    def default_program(cls) -> dict[str, Any]:
        return single_stream_program(12)


class VisualBertModel(VLModel):
    config_class = VisualBertConfig


class VisualBertForPreTraining(VLForPreTraining):
    config_class = VisualBertConfig


class VisualBertForVisualQuestionAnswering(VLForVisualQuestionAnswering):
    config_class = VisualBertConfig
