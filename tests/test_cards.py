"""Model cards: one per published checkpoint, generated from the table, valid for huggingface_hub, run as written.

The results in each card's model-index are read back with huggingface_hub's own model-index parser and
compared with the table; `model_cards/` must be exactly what the template renders today; and the usage snippet
of a card is executed against a model pushed to the loopback Hub.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from fake_hub import serving
from huggingface_hub import ModelCard, hf_hub_download
from huggingface_hub.repocard_data import model_index_to_eval_results
from transformers import AutoModelForPreTraining, BertTokenizer

from vl_zoo.cli import main
from vl_zoo.hub.cards import (
    DATASET_IDS,
    card_path,
    describe_result,
    render_card,
    validate_card,
)
from vl_zoo.hub.push import push_to_hub
from vl_zoo.models import config_from_preset
from vl_zoo.pretrained import PUBLISHED
from vl_zoo.processing import VLProcessor

MODEL_CARDS = Path(__file__).resolve().parents[1] / "model_cards"
SECTIONS = (
    "## How it differs from its siblings",
    "## Usage",
    "## Training data and set-up",
    "## Evaluation results",
    "## Known limitations",
    "## Licence and citation",
)
# The published task and split names, written out independently of the module under test.
EXPECTED_SPLITS = {
    "vqav2_test_dev": ("VQAv2", "test-dev"),
    "vqav2_test_std": ("VQAv2", "test-std"),
    "gqa_test_dev": ("GQA", "test-dev"),
    "gqa_test_std": ("GQA", "test-std"),
    "nlvr2_dev": ("NLVR2", "dev"),
    "nlvr2_test_p": ("NLVR2", "test-P"),
    "nlvr2_test_u": ("NLVR2", "test-U"),
    "refcoco+_val": ("RefCOCO+", "val"),
    "refcoco+_test": ("RefCOCO+", "test"),
    "flickr30k_ir_r1": ("Flickr30k", "test"),
    "flickr30k_tr_r1": ("Flickr30k", "test"),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_card_metadata_and_model_index_follow_the_table(name):
    checkpoint = PUBLISHED[name]
    text = render_card(checkpoint, "org/some-repo")
    card = ModelCard(text)
    data = card.data

    assert data.library_name == "transformers" and data.pipeline_tag == "feature-extraction"
    assert data.license == ("mit" if checkpoint.license == "MIT" else "unknown")
    assert data.base_model == checkpoint.base_model
    assert {"vl_zoo", "custom_code"} <= set(data.tags)
    assert data.datasets == list(dict.fromkeys(DATASET_IDS[corpus] for corpus in checkpoint.pretraining_data))

    # The model-index, parsed back by huggingface_hub, holds exactly the published numbers.
    model_index = data.to_dict().get("model-index")
    if checkpoint.results:
        model_name, results = model_index_to_eval_results(model_index)
        assert model_name == name
        got = {(r.dataset_name, r.dataset_split, r.metric_type): r.metric_value for r in results}
        expected = {
            (*EXPECTED_SPLITS[key], "recall" if "flickr30k" in key else "accuracy"): value
            for key, value in checkpoint.results.items()
        }
        assert got == expected
    else:
        assert model_index is None
        assert checkpoint.results_source in card.text

    for section in SECTIONS:
        assert section in card.text, section
    assert checkpoint.notes in card.text
    assert checkpoint.citation.strip() in card.text
    assert 'repo = "org/some-repo"' in card.text
    assert f"**{name}** (this one)" in card.text
    # every sibling of the same architecture is listed, with its own VQAv2 score where published
    for other in PUBLISHED.values():
        if other.model_type == checkpoint.model_type and other.name != name:
            assert f"`{other.name}`" in card.text


def test_model_cards_folder_is_what_the_template_renders():
    assert sorted(path.name for path in MODEL_CARDS.glob("*.md")) == sorted(f"{name}.md" for name in PUBLISHED)
    for name, checkpoint in PUBLISHED.items():
        stale = card_path(MODEL_CARDS, name).read_text(encoding="utf-8") != render_card(checkpoint)
        assert not stale, f"model_cards/{name}.md is stale: run `vl-zoo card --all --overwrite`"


def test_results_keys_are_described():
    for checkpoint in PUBLISHED.values():
        for key in checkpoint.results:
            benchmark, split, _ = describe_result(key)
            assert (benchmark.dataset_name, split) == EXPECTED_SPLITS[key]
    with pytest.raises(ValueError, match="results key 'vqav2_testdev'"):
        describe_result("vqav2_testdev")
    with pytest.raises(ValueError, match="results key 'coco_test'"):
        describe_result("coco_test")


def test_validation_refuses_broken_cards():
    checkpoint = PUBLISHED["volta-ctrl-vilbert"]
    text = render_card(checkpoint)
    with pytest.raises(ValueError, match="does not give the published results"):
        validate_card(text.replace("value: 68.97", "value: 70.0"), checkpoint)
    with pytest.raises(ValueError, match="lacks metadata the Hub indexes: \\['license'\\]"):
        validate_card(text.replace("license: mit\n", ""))
    with pytest.raises(ValueError, match="model_index"):
        validate_card(text.replace("  results:\n", "  outcomes:\n"))
    with pytest.raises(ValueError, match="names no pretraining dataset"):
        validate_card(re.sub(r"datasets:\n- \S+\n", "", text), checkpoint)


def test_card_command_writes_and_protects_cards(tmp_path, capsys):
    main(["card", "uniter-base", "--output-dir", str(tmp_path), "--repo-id", "me/uniter"])
    path = tmp_path / "uniter-base.md"
    assert path.read_text() == render_card(PUBLISHED["uniter-base"], "me/uniter")
    assert capsys.readouterr().out.strip() == str(path)

    path.write_text("edited by hand")
    with pytest.raises(SystemExit, match="exist with other content"):
        main(["card", "uniter-base", "--output-dir", str(tmp_path)])
    assert path.read_text() == "edited by hand"
    main(["card", "--all", "--output-dir", str(tmp_path), "--overwrite"])
    assert len(list(tmp_path.glob("*.md"))) == len(PUBLISHED)
    assert path.read_text() == render_card(PUBLISHED["uniter-base"])

    with pytest.raises(SystemExit, match="not a published checkpoint"):
        main(["card", "no-such-model", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="either a checkpoint NAME or --all"):
        main(["card", "--output-dir", str(tmp_path)])


@pytest.mark.parametrize("name", ["volta-original-vl-bert", "volta-ctrl-lxmert"])
def test_usage_snippet_runs_against_the_pushed_repository(name, monkeypatch, tmp_path):
    """The card's own Python, run as written, after pushing a tiny model of that checkpoint's layout."""
    checkpoint = PUBLISHED[name]
    repo_id = f"org/{name}"
    preset = config_from_preset(checkpoint.model_type, checkpoint.preset).to_dict()
    overrides = {key: preset[key] for key in ("add_global_imgfeat", "num_locs", "fusion_method")}
    config = config_from_preset(checkpoint.model_type, "tiny", vocab_size=30, v_feature_size=16, **overrides)
    model = AutoModelForPreTraining.from_config(config).eval()
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "dog"])})

    with serving(monkeypatch, tmp_path / "cache") as hub:
        push_to_hub(model, repo_id, VLProcessor.for_model(config, tokenizer), render_card(checkpoint, repo_id))
        readme = Path(hf_hub_download(repo_id, "README.md")).read_text()
        snippet = re.search(r"```python\n(.*?)```", readme, flags=re.DOTALL).group(1)
        namespace: dict = {}
        exec(compile(snippet, f"{name} card", "exec"), namespace)
        assert hub.count("POST", "/commit/") == 1

    outputs = namespace["outputs"]
    if config.has_pooler:
        assert "itm_logits.softmax" in snippet and outputs.itm_logits.shape == (1, 2)
    else:
        assert "itm_logits" not in snippet and outputs.itm_logits is None
    regions = namespace["inputs"]["visual_feats"].shape[1]
    assert outputs.vision_last_hidden_state.shape == (1, regions, config.v_hidden_size)
    assert torch.isfinite(outputs.text_last_hidden_state).all()
