"""The release converter: reference dumps reproduced, the nine release configs, and strictness."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from conftest import REFERENCE_DIRS, VOLTA_FIXTURES
from release_layout import random_release_checkpoint, release_layout
from transformers import AutoModelForPreTraining

import vl_zoo
from vl_zoo.conversion.common import ConversionError
from vl_zoo.conversion.verify import compare_with_reference
from vl_zoo.conversion.volta import config_from_volta, convert, convert_state_dict

CONFIGS = VOLTA_FIXTURES.parent / "volta_configs"
REFERENCES = sorted(REFERENCE_DIRS.values())
RELEASE_CONFIGS = sorted(path.stem for path in CONFIGS.glob("*.json"))
# state-dict key counts of the release's full-size ctrl pretraining models
RELEASE_KEY_COUNTS = {
    "ctrl_vilbert_base": 509,
    "ctrl_lxmert": 515,
    "ctrl_vl-bert_base": 414,
    "ctrl_visualbert_base": 411,
    "ctrl_uniter_base": 418,
}


@pytest.fixture(scope="module")
def converted():
    """Each reference checkpoint converted once, in memory."""
    models = {}
    for name in REFERENCES:
        folder = VOLTA_FIXTURES / name
        models[name] = convert(folder / "pytorch_model.bin", folder / "config.json")[0]
    return models


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_outputs_reproduced_in_float32(converted, name):
    diffs = compare_with_reference(copy.deepcopy(converted[name]), VOLTA_FIXTURES / name, torch.float32)
    assert len(diffs) == 13
    assert max(diffs.values()) <= 1e-5, diffs


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_outputs_reproduced_in_float64(converted, name):
    diffs = compare_with_reference(copy.deepcopy(converted[name]), VOLTA_FIXTURES / name, torch.float64)
    assert max(diffs.values()) <= 1e-8, diffs


@pytest.mark.parametrize("name", REFERENCES)
def test_sdpa_and_eager_both_reproduce_the_reference(converted, name, tmp_path):
    converted[name].save_pretrained(tmp_path)
    for implementation in ("eager", "sdpa"):
        model = AutoModelForPreTraining.from_pretrained(tmp_path, attn_implementation=implementation)
        assert max(compare_with_reference(model, VOLTA_FIXTURES / name).values()) <= 1e-5


@pytest.mark.parametrize("name", REFERENCES)
def test_the_layout_statement_matches_the_real_dumps(name):
    folder = VOLTA_FIXTURES / name
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    keys, aliases = release_layout(json.loads((folder / "config.json").read_text()))
    assert {key: tuple(value.shape) for key, value in state.items()} == keys
    groups = json.loads((folder / "tied_params.json").read_text())
    tied = {member: min(group) for group in groups for member in group}
    assert {alias: tied[alias] for alias in aliases} == {alias: min(alias, c) for alias, c in aliases.items()}
    assert set(tied) == set(aliases) | set(aliases.values())


@pytest.mark.parametrize("name", sorted(RELEASE_KEY_COUNTS))
def test_the_layout_statement_has_the_release_key_counts(name):
    keys, _ = release_layout(json.loads((CONFIGS / f"{name}.json").read_text()))
    assert len(keys) == RELEASE_KEY_COUNTS[name]


@pytest.mark.parametrize("name", RELEASE_CONFIGS)
def test_every_release_config_converts(name):
    """The nine model configs of the release, full size: the config converts and the target has every key."""
    release = json.loads((CONFIGS / f"{name}.json").read_text())
    config = config_from_volta(release)
    assert config.model_type == vl_zoo.models.MODEL_TYPE_BY_EMBEDDING[release["image_embeddings"]]
    with torch.device("meta"):
        model = vl_zoo.ARCHITECTURES[config.model_type][2](config)
    keys, aliases = release_layout(release)
    source = {key: torch.empty(shape, device="meta") for key, shape in keys.items() if key not in aliases}
    source |= {alias: source[canonical] for alias, canonical in aliases.items()}
    conversion = convert_state_dict(source, config)
    assert set(conversion.dropped) == set(aliases)
    target = {key for key in model.state_dict() if key != "mlm_head.decoder.weight"}
    assert set(conversion.mapped) == target
    for key, value in conversion.mapped.items():
        assert tuple(value.shape) == tuple(model.state_dict()[key].shape), key


def shrink(release: dict) -> dict:
    """A release config with small sizes and the same structure (co-attention stays wider than the text)."""
    small = dict(release, hidden_size=32, num_attention_heads=4, intermediate_size=48, vocab_size=99)
    small |= {"max_position_embeddings": 64, "clf_hidden_size": 40}  # features stay 2048-d, as the heads assume
    wide = release["v_hidden_size"] != release["hidden_size"]
    small |= {
        "v_hidden_size": 40 if wide else 32,
        "v_num_attention_heads": 4,
        "v_intermediate_size": 40 if wide else 48,
    }
    small["sublayer2attn_hidden_size"] = {k: 40 for k in release["sublayer2attn_hidden_size"]}
    small["sublayer2num_attention_heads"] = {k: 4 for k in release["sublayer2num_attention_heads"]}
    for key in ("pooler_size", "v_pooler_size"):
        if key in release:
            small[key] = 24
    if release.get("qa_num_answers"):
        # the release sizes LXMERT's answer head by v_hidden_size and feeds it the pooled output
        small |= {"qa_num_answers": 11, "pooler_size": 32, "v_pooler_size": 32}
    return small


@pytest.mark.parametrize("name", RELEASE_CONFIGS)
def test_every_release_config_converts_a_checkpoint(name, tmp_path):
    release = shrink(json.loads((CONFIGS / f"{name}.json").read_text()))
    (tmp_path / "config.json").write_text(json.dumps(release))
    state = random_release_checkpoint(release)
    torch.save(state, tmp_path / "model.bin")
    model, report = convert(tmp_path / "model.bin", tmp_path / "config.json")

    ours = model.state_dict()
    for target, source in report["mapped"].items():
        expected = state[source].reshape(ours[target].shape)
        if source.startswith("cls.bi_seq_relationship"):
            expected = expected.flip(0)  # the release's "match" row moves to index 1
        assert torch.equal(ours[target], expected), target
    assert set(report["dropped"]) | set(report["mapped"].values()) == set(state)

    batch = {"input_ids": torch.tensor([[2, 5, 7, 3]]), "visual_feats": torch.randn(1, 3, 2048)}
    batch["visual_pos"] = torch.tensor([[[0.0, 0.0, 1.0, 1.0, 1.0]] * 3])
    assert torch.isfinite(model(**batch).mlm_logits).all()


def test_defaults_the_json_omits_are_the_release_defaults():
    for name in REFERENCES:
        plain = json.loads((VOLTA_FIXTURES / name / "config.json").read_text())
        resolved = json.loads((VOLTA_FIXTURES / name / "config_resolved.json").read_text())
        assert config_from_volta(plain).to_diff_dict() == config_from_volta(resolved).to_diff_dict()


def test_a_config_without_model_key_and_without_global_row():
    release = json.loads((CONFIGS / "lxmert.json").read_text())
    assert "add_global_imgfeat" not in release
    assert config_from_volta(release).add_global_imgfeat is None
    ctrl_lxmert = json.loads((CONFIGS / "ctrl_lxmert.json").read_text())
    assert "model" not in ctrl_lxmert
    assert config_from_volta(ctrl_lxmert).model_type == "vlzoo_lxmert"


def test_vl_bert_conversion_switches_on_the_release_behaviour():
    config = config_from_volta(json.loads((CONFIGS / "ctrl_vl-bert_base.json").read_text()))
    assert config.vl_bert_shared_text_positions and config.vl_bert_visual_from_last_row
    assert not vl_zoo.VLBertConfig().vl_bert_shared_text_positions


def test_unknown_config_keys_and_models_are_refused():
    release = json.loads((CONFIGS / "ctrl_uniter_base.json").read_text())
    with pytest.raises(ValueError, match="keys vl_zoo does not know: \\['colour'\\]"):
        config_from_volta(release | {"colour": "red"})
    with pytest.raises(NotImplementedError, match="model='roberta'"):
        config_from_volta(release | {"model": "roberta"})
    with pytest.raises(ValueError, match="image_embeddings='m3p'"):
        config_from_volta(release | {"image_embeddings": "m3p"})


@pytest.fixture
def uniter_checkpoint(tmp_path):
    folder = VOLTA_FIXTURES / "ctrl_uniter"
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    return state, folder / "config.json", tmp_path / "model.bin"


def _with(key, value):
    return lambda state: state | {key: value}


def _without(key):
    return lambda state: {k: v for k, v in state.items() if k != key}


BROKEN_CHECKPOINTS = {
    "unused key": (_with("cls.extra.weight", torch.zeros(2)), "no counterpart: \\['cls.extra.weight'\\]"),
    "missing key": (_without("bert.t_pooler.dense.bias"), "does not fill: \\['vl.pooler.text_dense.bias'\\]"),
    "wrong shape": (
        _with("bert.t_pooler.dense.bias", torch.zeros(7)),
        "bert.t_pooler.dense.bias -> vl.pooler.text_dense.bias: shape \\(7,\\)",
    ),
    "aliases disagree": (
        lambda state: state | {"cls.predictions.decoder.weight": state["cls.predictions.decoder.weight"] + 1},
        "cls.predictions.decoder.weight should be the same tensor",
    ),
    "task checkpoint": (_with("clfs_dict.TASK1.weight", torch.zeros(2)), "fine-tuned task model"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CHECKPOINTS))
def test_checkpoints_that_do_not_fit_are_refused_with_the_keys(uniter_checkpoint, case):
    state, config, path = uniter_checkpoint
    edit, message = BROKEN_CHECKPOINTS[case]
    torch.save(edit(state), path)
    with pytest.raises(ConversionError, match=message):
        convert(path, config)


def test_data_parallel_prefix_is_removed(uniter_checkpoint):
    state, config, path = uniter_checkpoint
    torch.save({f"module.{key}": value for key, value in state.items()}, path)
    assert convert(path, config)[0].config.model_type == "vlzoo_uniter"


def test_pickled_objects_are_not_loaded(uniter_checkpoint):
    _, config, path = uniter_checkpoint
    torch.save({"weights": torch.zeros(1), "extra": ConversionError("not a tensor")}, path)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        convert(path, config)


def test_command_line_writes_a_loadable_folder_and_keeps_existing_files(tmp_path):
    folder = VOLTA_FIXTURES / "ctrl_visualbert"
    output = tmp_path / "out"
    command = [sys.executable, "conversion/convert_volta.py", "--checkpoint", str(folder / "pytorch_model.bin")]
    command += ["--config", str(folder / "config.json"), "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=VOLTA_FIXTURES.parents[2])
    assert result.returncode == 0, result.stderr
    assert {p.name for p in output.iterdir()} == {"config.json", "model.safetensors", "conversion_report.json"}
    report = json.loads((output / "conversion_report.json").read_text())
    assert (
        report["dropped"]["cls.predictions.decoder.weight"] == "same tensor as bert.embeddings.word_embeddings.weight"
    )
    model = AutoModelForPreTraining.from_pretrained(output)
    assert max(compare_with_reference(model, folder).values()) <= 1e-5

    again = subprocess.run(command, capture_output=True, text=True, cwd=VOLTA_FIXTURES.parents[2])
    assert again.returncode != 0 and "pass --overwrite" in again.stderr
    assert (output / "model.safetensors").exists()
    forced = subprocess.run(command + ["--overwrite"], capture_output=True, text=True, cwd=VOLTA_FIXTURES.parents[2])
    assert forced.returncode == 0, forced.stderr
