"""VLConfig: ctrl defaults with the release's parameter counts, presets, overrides, round trips and validation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REFERENCE_DIRS, VOLTA_FIXTURES, tiny_config
from transformers import AutoConfig, AutoModelForPreTraining

import vl_zoo
from vl_zoo.models import list_presets

# Parameter counts of the release's BertForVLPreTraining, tied word embeddings counted once.
RELEASE_PARAMETERS = {
    ("vlzoo_vilbert", "ctrl"): 242_076_029,
    ("vlzoo_lxmert", "ctrl"): 211_369_853,
    ("vlzoo_vl_bert", "ctrl"): 116_066_941,
    ("vlzoo_visual_bert", "ctrl"): 114_882_941,
    ("vlzoo_uniter", "ctrl"): 114_497_405,
    ("vlzoo_vilbert", "original"): 239_023_229,
    ("vlzoo_lxmert", "original_qa"): 228_051_752,
}


def count_parameters(config: vl_zoo.VLConfig) -> int:
    with torch.device("meta"):
        model = AutoModelForPreTraining.from_config(config)
    return model.num_parameters()


@pytest.mark.parametrize(("model_type", "preset"), sorted(RELEASE_PARAMETERS))
def test_parameter_count_matches_the_release(model_type, preset):
    config = vl_zoo.config_from_preset(model_type, preset)
    assert count_parameters(config) == RELEASE_PARAMETERS[model_type, preset]


def test_auto_config_defaults_are_ctrl(model_type):
    config = AutoConfig.for_model(model_type)
    assert type(config) is vl_zoo.ARCHITECTURES[model_type][0]
    assert (config.hidden_size, config.pooler_size, config.fusion_method) == (768, 1024, "mul")
    assert config.add_global_imgfeat == "first" and config.visual_target_weights == {"0": 1.0}


def test_ctrl_program_equals_the_release_config(model_type):
    """The generated tiny programs equal the reference dumps' shrunk release configs, list for list."""
    release = json.loads((VOLTA_FIXTURES / REFERENCE_DIRS[model_type] / "config.json").read_text())
    config = tiny_config(model_type)
    for name in vl_zoo.configuration.PROGRAM_LISTS:
        assert getattr(config, name) == sorted(release[name]), name


def test_keyword_overrides_and_round_trip(model_type, tmp_path):
    config = AutoConfig.for_model(
        model_type, hidden_size=64, v_hidden_size=64, num_attention_heads=4, v_num_attention_heads=4
    )
    assert config.hidden_size == 64 and config.num_attention_heads == 4
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.to_diff_dict() == config.to_diff_dict()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["tt_attn_sublayers"] == config.tt_attn_sublayers  # programs are always written out


def test_presets_are_listed_and_build():
    presets = list_presets()
    assert set(presets) == set(vl_zoo.ARCHITECTURES)
    for model_type, names in presets.items():
        assert {"ctrl", "tiny"} <= set(names)
        for name in names:
            vl_zoo.config_from_preset(model_type, name)
    assert vl_zoo.ViLBertConfig.from_preset("original").sublayer2attn_hidden_size["12"] == 1024


def test_unknown_preset_and_model_type():
    with pytest.raises(ValueError, match="preset='huge'.*allowed"):
        vl_zoo.ViLBertConfig.from_preset("huge")
    with pytest.raises(ValueError, match="model_type='vlzoo_clip'.*allowed"):
        vl_zoo.config_from_preset("vlzoo_clip")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_embeddings": "clip"}, "image_embeddings='clip' is not supported; allowed"),
        ({"fusion_method": "concat"}, "fusion_method='concat'"),
        ({"num_locs": 6}, "num_locs=6"),
        ({"add_global_imgfeat": "middle"}, "add_global_imgfeat='middle'"),
        ({"hidden_size": 30, "v_hidden_size": 30}, "width 30 does not divide into 4 heads"),
        ({"sublayer2num_attention_heads": {"4": 3}}, "sub-layer 4 text attention: width 32 does not divide into 3"),
        ({"visual_target_weights": {"9": 1.0}}, "visual_target_weights key='9'"),
        ({"pooler_size": 16}, "pooler_size \\(16\\) must equal v_pooler_size \\(24\\)"),
        ({"v_hidden_size": 48, "v_num_attention_heads": 4}, "mixes modalities"),
    ],
)
def test_invalid_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config("vlzoo_vilbert", **overrides)


def program(**lists):
    names = vl_zoo.configuration.PROGRAM_LISTS
    return {name: lists.get(name, []) for name in names} | {
        "bert_layer2attn_sublayer": {},
        "bert_layer2ff_sublayer": {},
    }


@pytest.mark.parametrize(
    ("lists", "message"),
    [
        ({"tt_attn_sublayers": [0], "t_ff_sublayers": [0]}, "listed both as attention and as feed-forward"),
        ({"tt_attn_sublayers": [0], "t_ff_sublayers": [2]}, "must run 0..N-1 without gaps.*missing \\[1\\]"),
        ({"tt_attn_sublayers": [0], "t_ff_sublayers": [1], "single_ln_sublayers": [0]}, "not in shared_sublayers"),
        ({"tt_attn_sublayers": [0], "t_ff_sublayers": [1], "shared_sublayers": [5]}, "names sub-layers \\[5\\]"),
        ({"vt_attn_sublayers": [0], "vv_attn_sublayers": [0], "t_ff_sublayers": [1]}, "text queries attend nothing"),
        (
            {"tt_attn_sublayers": [0], "t_ff_sublayers": [1], "shared_sublayers": [0], "single_ln_sublayers": [0]},
            "does not touch both streams",
        ),
        ({}, "the sub-layer program is empty"),
    ],
)
def test_inconsistent_programs_are_refused(lists, message):
    with pytest.raises(ValueError, match=message):
        tiny_config("vlzoo_vilbert", **program(**lists))


def test_partial_program_is_refused():
    with pytest.raises(ValueError, match="partly given"):
        AutoConfig.for_model("vlzoo_uniter", tt_attn_sublayers=[0])


def test_shared_sublayer_needs_equal_sizes():
    lists = program(tt_attn_sublayers=[0], vv_attn_sublayers=[0], t_ff_sublayers=[1], v_ff_sublayers=[1])
    lists["shared_sublayers"] = [1]
    with pytest.raises(ValueError, match="sub-layer 1 is shared"):
        tiny_config("vlzoo_vilbert", v_hidden_size=48, v_num_attention_heads=4, **lists)


def test_bert_map_must_point_at_text_sublayers():
    with pytest.raises(ValueError, match="bert_layer2attn_sublayer\\[0\\] = 5.*not a text attn"):
        tiny_config("vlzoo_vilbert", bert_layer2attn_sublayer={"0": 5}, **_vilbert_lists())


def _vilbert_lists():
    config = tiny_config("vlzoo_vilbert")
    return {name: getattr(config, name) for name in vl_zoo.configuration.PROGRAM_LISTS} | {
        "bert_layer2ff_sublayer": config.bert_layer2ff_sublayer
    }


def test_unsupported_release_target_says_what_to_use():
    with pytest.raises(NotImplementedError, match="target '2'.*use '1'"):
        tiny_config("vlzoo_vilbert", visual_target_weights={"2": 1.0})


def test_single_stream_embeddings_need_equal_widths():
    with pytest.raises(ValueError, match="v_hidden_size \\(48\\) must equal hidden_size \\(32\\)"):
        tiny_config("vlzoo_uniter", v_hidden_size=48)
    with pytest.raises(ValueError, match="type_vocab_size must be at least 3"):
        tiny_config("vlzoo_vl_bert", type_vocab_size=2)


def test_a_new_design_is_a_config():
    """A pattern none of the five use: a text-only layer, a joint layer with separate parameters, cross-attention."""
    lists = program(
        tt_attn_sublayers=[0, 2],
        tv_attn_sublayers=[2, 4],
        vt_attn_sublayers=[2, 4],
        vv_attn_sublayers=[2],
        t_ff_sublayers=[1, 3, 5],
        v_ff_sublayers=[3, 5],
    )
    config = tiny_config("vlzoo_lxmert", **lists)
    assert config.num_sublayers == 6
    assert [spec.kind for spec in config.sublayer_specs()] == ["attn", "ff"] * 3
