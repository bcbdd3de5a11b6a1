"""Shared training pieces: output folders, checkpoints, model building, the optimiser's parameter groups."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from vl_zoo.models import ARCHITECTURES
from vl_zoo.training import (
    build_optimizer,
    build_pretraining_model,
    check_output_dir,
    checkpoint_step,
    find_checkpoint,
    load_task_data,
    resolve_data_folder,
)


def test_non_empty_output_is_kept_unless_told(tmp_path):
    (tmp_path / "model.safetensors").write_text("precious")
    with pytest.raises(ValueError, match="is not empty; pass --overwrite-output-dir"):
        check_output_dir(tmp_path, overwrite=False, resuming=False)
    check_output_dir(tmp_path, overwrite=False, resuming=True)
    assert (tmp_path / "model.safetensors").exists()
    check_output_dir(tmp_path, overwrite=True, resuming=False)
    assert not tmp_path.exists()


def test_latest_checkpoint_is_the_highest_step(tmp_path):
    for step in (5, 40, 100):
        (tmp_path / "checkpoints" / f"step_{step}").mkdir(parents=True)
    (tmp_path / "checkpoints" / "notes").mkdir()
    latest = find_checkpoint(tmp_path, "latest")
    assert latest.name == "step_100" and checkpoint_step(latest) == 100
    assert find_checkpoint(tmp_path, None) is None
    with pytest.raises(ValueError, match="holds no checkpoint"):
        find_checkpoint(tmp_path / "elsewhere", "latest")


def test_data_folder_errors_name_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        resolve_data_folder(str(tmp_path / "nothing"), 0, tmp_path, 10)
    with pytest.raises(ValueError, match="'builtin:imagenet' is not a built-in data set"):
        resolve_data_folder("builtin:imagenet", 0, tmp_path, 10)
    (tmp_path / "features").mkdir()
    with pytest.raises(ValueError, match="lacks \\['pretraining/train'\\]"):
        load_task_data(tmp_path, "pretraining")


def test_model_from_type_or_folder(tmp_path):
    model = build_pretraining_model("vlzoo_uniter", "tiny", vocab_size=50, feature_size=16, overrides={})
    assert model.config.vocab_size == 50 and model.config.v_feature_size == 16
    model.save_pretrained(tmp_path)
    assert type(build_pretraining_model(str(tmp_path), "ctrl", 50, 16, {})) is ARCHITECTURES["vlzoo_uniter"][2]
    with pytest.raises(ValueError, match="a 60-word tokenizer"):
        build_pretraining_model(str(tmp_path), "ctrl", 60, 16, {})
    with pytest.raises(ValueError, match="neither a vl_zoo model_type"):
        build_pretraining_model(str(tmp_path / "none"), "ctrl", 50, 16, {})


def test_no_weight_decay_on_biases_and_layer_norms():
    model = ARCHITECTURES["vlzoo_vilbert"][2](tiny_config("vlzoo_vilbert"))
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.01, eps=1e-6, betas=(0.9, 0.999))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 2 and "layer_norm" not in names[id(p)] for p in decayed["params"])
    assert any(names[id(p)].endswith("layer_norm.weight") for p in plain["params"])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    assert isinstance(optimizer, torch.optim.AdamW)
