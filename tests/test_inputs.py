"""Bad input fails at the top of forward with a message naming the argument, what came and what is allowed."""

from __future__ import annotations

import pytest
import torch
from conftest import make_inputs, tiny_config
from transformers import AutoModel


def corrupt(name, value):
    def apply(inputs):
        inputs = dict(inputs)
        inputs[name] = value(inputs) if callable(value) else value
        return inputs

    return apply


CASES = [
    (corrupt("visual_feats", None), "visual_feats is required"),
    (corrupt("input_ids", None), "input_ids is required"),
    (corrupt("visual_feats", lambda x: x["visual_feats"][..., :8]), "visual_feats has shape \\(3, 5, 8\\), expected"),
    (corrupt("visual_feats", lambda x: x["visual_feats"][:2]), "visual_feats has shape \\(2, 5, 16\\)"),
    (corrupt("visual_feats", lambda x: x["visual_feats"].long()), "visual_feats must be floating point"),
    (corrupt("visual_pos", lambda x: x["visual_pos"][..., :4]), "visual_pos has shape \\(3, 5, 4\\).*x1/W"),
    (corrupt("visual_pos", lambda x: x["visual_pos"] * 100), "visual_pos holds values in \\[0, .*must be normalised"),
    (corrupt("visual_pos", lambda x: x["visual_pos"][:, :4]), "visual_pos has shape \\(3, 4, 5\\)"),
    (corrupt("visual_attention_mask", lambda x: x["visual_attention_mask"][:, :3]), "visual_attention_mask has"),
    (corrupt("attention_mask", lambda x: x["attention_mask"][:2]), "attention_mask has shape \\(2, 7\\)"),
    (corrupt("input_ids", lambda x: x["input_ids"].float()), "input_ids must hold integer token ids"),
    (corrupt("input_ids", lambda x: x["input_ids"] + 1000), "outside the vocabulary \\[0, 98\\]"),
    (corrupt("token_type_ids", lambda x: x["token_type_ids"] + 7), "token_type_ids holds values in \\[7, 7\\]"),
    (corrupt("input_ids", lambda x: torch.ones(3, 200, dtype=torch.long)), "max_position_embeddings is 128"),
    (corrupt("visual_feats", lambda x: x["visual_feats"][:, :0]), "has shape \\(3, 0, 16\\)|0 regions"),
]


@pytest.mark.parametrize(("make_bad", "message"), CASES)
def test_bad_input_is_refused(model_type, make_bad, message):
    config = tiny_config(model_type)
    model = AutoModel.from_config(config).eval()
    inputs = make_bad(make_inputs(config))
    if model_type == "vlzoo_visual_bert" and "visual_pos" in message:
        pytest.skip("VisualBERT has no box input; its visual_pos is checked only for shape when given")
    with pytest.raises(ValueError, match=message):
        model(**inputs)


def test_visual_bert_does_not_need_boxes():
    config = tiny_config("vlzoo_visual_bert")
    model = AutoModel.from_config(config).eval()
    inputs = make_inputs(config)
    with_boxes = model(**inputs).pooler_output
    inputs.pop("visual_pos")
    torch.testing.assert_close(model(**inputs).pooler_output, with_boxes)


def test_other_models_need_boxes():
    config = tiny_config("vlzoo_uniter")
    model = AutoModel.from_config(config).eval()
    inputs = make_inputs(config)
    inputs.pop("visual_pos")
    with pytest.raises(ValueError, match="visual_pos is required by image_embeddings='uniter'"):
        model(**inputs)


def test_label_shapes_are_checked():
    config = tiny_config("vlzoo_vilbert")
    from transformers import AutoModelForPreTraining

    model = AutoModelForPreTraining.from_config(config).eval()
    inputs = make_inputs(config)
    with pytest.raises(ValueError, match="labels has shape \\(3, 6\\), expected \\(batch, text length\\)"):
        model(**inputs, labels=torch.zeros(3, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="region_targets and region_mask go together"):
        model(**inputs, region_targets=torch.zeros(3, 5, 1601))
    with pytest.raises(ValueError, match="itm_labels has shape \\(2,\\)"):
        model(**inputs, itm_labels=torch.zeros(2, dtype=torch.long))
