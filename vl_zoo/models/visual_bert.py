"""VisualBERT (Li et al., 2019): one stream; regions are projected features with visual type and position.

ctrl: 12 BERT layers over [text; regions]; VisualBERT has no box input. There is no "original" preset: the
published sizes are those of ctrl, and the published inputs differ only in the detector.
"""

from __future__ import annotations

from typing import Any

from ..configuration import VLConfig
from ..modeling.model import VLForPreTraining, VLForVisualQuestionAnswering, VLModel
from .programs import single_stream_program
from .vl_bert import SINGLE_STREAM_TINY


class VisualBertConfig(VLConfig):
    """VisualBERT; defaults are the controlled setting (`ctrl_visualbert_base` of the release)."""

    model_type = "vlzoo_visual_bert"
    image_embeddings: str = "visualbert"
    presets = {"ctrl": {}, "tiny": SINGLE_STREAM_TINY}

    @classmethod
    def default_program(cls) -> dict[str, Any]:
        return single_stream_program(12)


class VisualBertModel(VLModel):
    config_class = VisualBertConfig


class VisualBertForPreTraining(VLForPreTraining):
    config_class = VisualBertConfig


class VisualBertForVisualQuestionAnswering(VLForVisualQuestionAnswering):
    config_class = VisualBertConfig
