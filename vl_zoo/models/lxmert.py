"""LXMERT (Tan & Bansal, 2019): language and object-relationship layers, then cross-modality layers.

ctrl: 9 language and 5 relationship layers (the first 5 side by side), then 5 cross layers whose
cross-attention serves both directions with one set of parameters; regions embedded as
(LayerNorm(W_f feature) + LayerNorm(W_b box)) / 2. "original": the published head and inputs (4-d boxes,
no global region, text-only pooling through a tanh 768 pooler, LXMERT's object, attribute and feature targets);
"original_qa" adds its 9500-answer pretraining question-answering head.
"""

from __future__ import annotations

from typing import Any

from ..configuration import VLConfig
from ..modeling.model import VLForPreTraining, VLForVisualQuestionAnswering, VLModel
from .programs import lxmert_program
from .vilbert import TINY

ORIGINAL = {
    "num_locs": 4,
    "add_global_imgfeat": None,
    "pooler_size": 768,
    "v_pooler_size": 768,
    "fusion_method": "text",
    "fusion_act": "tanh",
    "clf_hidden_size": 1536,
    "visual_target_weights": {"3": 6.667, "4": 6.667, "5": 6.667},
}


class LxmertConfig(VLConfig):
    """LXMERT; defaults are the controlled setting (`ctrl_lxmert` of the release)."""

    model_type = "vlzoo_lxmert"
    image_embeddings: str = "lxmert"
    presets = {
        "ctrl": {},
        "original": ORIGINAL,
        "original_qa": {**ORIGINAL, "qa_task_weight": 1.0, "qa_num_answers": 9500},
        "tiny": {**TINY, **lxmert_program(3, 2, 2)},
    }

    @classmethod
    def default_program(cls) -> dict[str, Any]:
        return lxmert_program(9, 5, 5)


class LxmertModel(VLModel):
    config_class = LxmertConfig


class LxmertForPreTraining(VLForPreTraining):
    config_class = LxmertConfig


class LxmertForVisualQuestionAnswering(VLForVisualQuestionAnswering):
    config_class = LxmertConfig
