"""VL-BERT (Su et al., 2020): one stream; each region is a projected [sin/cos box code; feature].

ctrl: 12 BERT layers over [text; regions]; text tokens also receive a region's visual feature; regions carry
the [IMG] word embedding, token type 2 and the text-end position. "original": the unified release's reading of
the published model (vl-bert_base.json: 4-d boxes, the global region last, the end token on a region row), no
pooler and no matching head, and the hard-label region classifier. "original_authors": the inputs of the
authors' own release (jackroos/VL-BERT), which `conversion/convert_original.py --model vl-bert` converts: the
whole-image region first (text tokens read its feature) and [END] as a row of its own after the regions.
"""

from __future__ import annotations

from typing import Any

from ..configuration import VLConfig
from ..modeling.model import VLForPreTraining, VLForVisualQuestionAnswering, VLModel
from .programs import single_stream_program
from .vilbert import TINY

SINGLE_STREAM_TINY = {**TINY, **single_stream_program(3)}


ORIGINAL = {
    "num_locs": 4,
    "add_global_imgfeat": "last",
    "fusion_method": "none",
    "visual_target_weights": {"6": 1.0},
    "clf_hidden_size": 768,
}


class VLBertConfig(VLConfig):
    """VL-BERT; defaults are the controlled setting (`ctrl_vl-bert_base` of the release)."""

    model_type = "vlzoo_vl_bert"
    image_embeddings: str = "vl-bert"
    type_vocab_size: int = 3
    image_head_ln: bool = False
    presets = {
        "ctrl": {},
        "original": ORIGINAL,
        "original_authors": {**ORIGINAL, "add_global_imgfeat": "first", "vl_bert_end_row": True},
        "tiny": {**SINGLE_STREAM_TINY, "v_coordinate_embeddings_dim": 256},
    }

    @classmethod
    def default_program(cls) -> dict[str, Any]:
        return single_stream_program(12)


class VLBertModel(VLModel):
    config_class = VLBertConfig


class VLBertForPreTraining(VLForPreTraining):
    config_class = VLBertConfig


class VLBertForVisualQuestionAnswering(VLForVisualQuestionAnswering):
    config_class = VLBertConfig
