"""LXMERT and VisualBERT checkpoints (the authors' layouts and transformers' ports) to vl_zoo and back.

The independent reference is transformers' LxmertForPreTraining / VisualBertForPreTraining (and their QA and
bare classes): random weights are drawn there, written out in each layout, converted, and both models run the
same padded batch (1e-5 in float32). The authors' key lists are written out by hand below from their module
structure (airsplay/lxmert src/lxrt/modeling.py, uclanlp/visualbert pytorch_pretrained_bert/modeling.py), and
checked to be transformers' keys under the authors' names before those tensors are used.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from conftest import make_inputs, randomize_
from transformers import AutoModelForPreTraining, AutoProcessor, BertTokenizer

import vl_zoo
from vl_zoo.conversion.common import ConversionError
from vl_zoo.conversion.export import export_folder, to_transformers
from vl_zoo.conversion.originals import cli, convert_original
from vl_zoo.conversion.originals.common import read_original_config, unwrap_checkpoint

ATOL = 1e-5
SIZES = {"vocab_size": 99, "hidden_size": 32, "num_attention_heads": 4, "intermediate_size": 64}
BERT_LAYER = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
]


def parameters(modules: list[str]) -> set[str]:
    return {f"{module}.{leaf}" for module in modules for leaf in ("weight", "bias")}


# ---------------------------------------------------------------------------------------------- LXMERT


def hf_lxmert(seed: int = 0, cls=transformers.LxmertForPreTraining) -> transformers.PreTrainedModel:
    config = transformers.LxmertConfig(
        **SIZES, l_layers=3, r_layers=2, x_layers=2, visual_feat_dim=16, num_qa_labels=11, max_position_embeddings=64
    )
    return randomize_(cls(config), seed=seed).eval()


def authors_lxmert_keys(l_layers: int, r_layers: int, x_layers: int) -> set[str]:
    """LXRTPretraining.state_dict() keys with every head on, listed from the module structure."""
    cross = ["visual_attention.att.query", "visual_attention.att.key", "visual_attention.att.value"]
    cross += ["visual_attention.output.dense", "visual_attention.output.LayerNorm"]
    for side in ("lang", "visn"):
        cross += [f"{side}_self_att.{name.removeprefix('attention.')}" for name in BERT_LAYER[:5]]
        cross += [f"{side}_inter.dense", f"{side}_output.dense", f"{side}_output.LayerNorm"]
    modules = ["bert.embeddings.LayerNorm", "bert.pooler.dense"]
    modules += [f"bert.encoder.visn_fc.{name}" for name in ("visn_fc", "visn_layer_norm", "box_fc", "box_layer_norm")]
    modules += [f"bert.encoder.layer.{k}.{name}" for k in range(l_layers) for name in BERT_LAYER]
    modules += [f"bert.encoder.r_layers.{k}.{name}" for k in range(r_layers) for name in BERT_LAYER]
    modules += [f"bert.encoder.x_layers.{k}.{name}" for k in range(x_layers) for name in cross]
    modules += ["cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.seq_relationship"]
    modules += ["obj_predict_head.transform.dense", "obj_predict_head.transform.LayerNorm"]
    modules += [f"obj_predict_head.decoder_dict.{name}" for name in ("obj", "attr", "feat")]
    modules += [f"answer_head.logit_fc.{i}" for i in (0, 2, 3)]
    keys = parameters(modules) | {
        f"bert.embeddings.{name}_embeddings.weight" for name in ("word", "position", "token_type")
    }
    return keys | {"cls.predictions.bias", "cls.predictions.decoder.weight"}


def authors_lxmert_state(hf: transformers.PreTrainedModel) -> dict[str, torch.Tensor]:
    state = {key.replace("lxmert.", "bert.", 1): value.clone() for key, value in hf.state_dict().items()}
    assert set(state) == authors_lxmert_keys(3, 2, 2)
    return state


def batch_for(config: vl_zoo.VLConfig) -> dict[str, torch.Tensor]:
    inputs = make_inputs(config, regions=4)
    inputs["token_type_ids"][0, 4:] = 1
    return inputs


def lxmert_outputs(hf, inputs: dict[str, torch.Tensor]):
    with torch.no_grad():
        return hf(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            token_type_ids=inputs["token_type_ids"],
            visual_feats=inputs["visual_feats"],
            visual_pos=inputs["visual_pos"][..., :4],
            visual_attention_mask=inputs["visual_attention_mask"],
            output_hidden_states=True,
        )


def assert_lxmert_matches(ours, hf, inputs) -> None:
    with torch.no_grad():
        mine = ours(**inputs)
    theirs = lxmert_outputs(hf, inputs)
    text, vision = inputs["attention_mask"].bool(), inputs["visual_attention_mask"].bool()
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=0, atol=ATOL)  # noqa: E731
    close(mine.text_last_hidden_state[text], theirs.language_hidden_states[-1][text])
    close(mine.vision_last_hidden_state[vision], theirs.vision_hidden_states[-1][vision])
    close(mine.mlm_logits, theirs.prediction_logits)
    close(mine.itm_logits, theirs.cross_relationship_score)  # both: index 1 = matches
    close(mine.answer_logits, theirs.question_answering_score)
    with torch.no_grad():
        regions = hf.obj_predict_head(theirs.vision_hidden_states[-1])
    for target_id, name in (("3", "obj"), ("4", "attr"), ("5", "feat")):
        close(mine.region_logits_by_target[target_id][vision], regions[name][vision])


def test_hf_lxmert_converts_and_exports_exactly():
    hf = hf_lxmert(seed=1)
    result = convert_original("hf-lxmert", hf.state_dict(), hf.config.to_dict())
    assert result.task == "pretraining" and result.tokenizer == "bert-base-uncased"
    assert result.processor.to_dict()["max_regions"] == 36 and result.processor.add_global_feature is None
    assert len(result.report.mapped) + len(result.report.dropped) == len(hf.state_dict())
    ours = result.build_model()
    assert_lxmert_matches(ours, hf, batch_for(ours.config))

    back = to_transformers(ours)
    assert type(back) is transformers.LxmertForPreTraining
    for key, value in hf.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    inputs = batch_for(ours.config)
    again, first = lxmert_outputs(back, inputs), lxmert_outputs(hf, inputs)
    assert torch.equal(again.prediction_logits, first.prediction_logits)
    bare = to_transformers(ours.vl)  # the backbone alone -> LxmertModel
    assert type(bare) is transformers.LxmertModel
    assert all(torch.equal(value, hf.lxmert.state_dict()[key]) for key, value in bare.state_dict().items())


def test_authors_lxmert_checkpoint_converts_every_key():
    hf = hf_lxmert(seed=2)
    hf.half().float()  # the authors' fp16 copy below loses nothing against these weights
    state = {"module." + key: value.half() for key, value in authors_lxmert_state(hf).items()}
    unwrapped, container = unwrap_checkpoint(state)
    result = convert_original("lxmert", unwrapped, {"num_attention_heads": 4, "hidden_act": "gelu"})
    assert container == ["data-parallel prefix 'module.' removed from every key"]
    assert result.report.dtype_cast == {"torch.float16 -> torch.float32": len(result.report.mapped)}
    assert set(result.report.mapped.values()) | set(result.report.dropped) == set(unwrapped)
    assert result.report.dropped == {
        "cls.predictions.decoder.weight": "same tensor as bert.embeddings.word_embeddings.weight"
    }
    assert result.config.num_locs == 4 and result.config.fusion_act == "tanh"
    ours = result.build_model()
    assert_lxmert_matches(ours, hf, batch_for(ours.config))


def test_authors_lxmert_vqa_and_nlvr2_checkpoints():
    hf = hf_lxmert(seed=3, cls=transformers.LxmertForQuestionAnswering)
    backbone = {key.replace("lxmert.", "lxrt_encoder.model.bert.", 1): v for key, v in hf.state_dict().items()}
    vqa = {key.replace("answer_head.", "", 1): value for key, value in backbone.items()}
    result = convert_original("lxmert", vqa, {"num_attention_heads": 4})
    assert result.task == "vqa" and type(result.build_model()).__name__ == "LxmertForVisualQuestionAnswering"
    ours = result.build_model()
    inputs = batch_for(ours.config)
    with torch.no_grad():
        theirs = lxmert_outputs(hf, inputs).question_answering_score
        torch.testing.assert_close(ours(**inputs).logits, theirs, rtol=0, atol=ATOL)
    assert torch.equal(to_transformers(ours).state_dict()["answer_head.logit_fc.3.weight"], vqa["logit_fc.3.weight"])
    answers = {**hf.config.to_dict(), "id2label": {i: f"answer {i}" for i in range(11)}}
    ported = convert_original("hf-lxmert", hf.state_dict(), answers)  # transformers' LxmertForQuestionAnswering
    assert ported.task == "vqa" and ported.config.id2label[3] == "answer 3"
    assert all(torch.equal(ported.state_dict[key], value) for key, value in result.state_dict.items())

    nlvr2 = {key: value for key, value in vqa.items() if not key.startswith("logit_fc.")}
    nlvr2.update({"logit_fc.0.weight": torch.zeros(64, 64), "logit_fc.0.bias": torch.zeros(64)})
    result = convert_original("lxmert", nlvr2, {"num_attention_heads": 4})
    assert result.task == "backbone" and "NLVR2" in result.report.dropped["logit_fc.0.weight"]


def test_lxmert_refuses_checkpoints_that_do_not_fit():
    state = authors_lxmert_state(hf_lxmert(seed=4))
    missing = {key: value for key, value in state.items() if key != "bert.encoder.r_layers.1.output.dense.bias"}
    with pytest.raises(ConversionError, match=r"r_layers\.1\.output\.dense\.bias"):
        convert_original("lxmert", missing, {"num_attention_heads": 4})
    unexpected = {**state, "bert.encoder.layer.0.adapter.weight": torch.zeros(2)}
    with pytest.raises(ConversionError, match=r"layer\.0\.adapter\.weight"):
        convert_original("lxmert", unexpected, {"num_attention_heads": 4})
    with pytest.raises(ValueError, match="hidden_size: the checkpoint shows 32, the BERT config says 768"):
        convert_original("lxmert", state, {"hidden_size": 768, "num_attention_heads": 4})
    with pytest.raises(ConversionError, match="no LXMERT backbone"):
        convert_original("hf-lxmert", state, None)


# ---------------------------------------------------------------------------------------------- VisualBERT


def hf_visual_bert(seed: int = 0, **sizes) -> transformers.VisualBertForPreTraining:
    config = transformers.VisualBertConfig(
        **{**SIZES, **sizes}, num_hidden_layers=3, visual_embedding_dim=16, max_position_embeddings=64
    )
    return randomize_(transformers.VisualBertForPreTraining(config), seed=seed).eval()


AUTHORS_VISUAL_NAMES = {  # transformers' name -> the authors' name
    "visual_bert.": "bert.bert.",
    "cls.": "bert.cls.",
    "visual_projection": "projection",
    "visual_token_type_embeddings": "token_type_embeddings_visual",
    "visual_position_embeddings": "position_embeddings_visual",
}


def authors_visual_bert_keys(num_layers: int) -> set[str]:
    """TrainVisualBERTObjective (pretraining head) keys inside the AllenNLP wrapper, from the module structure."""
    modules = ["bert.bert.embeddings.LayerNorm", "bert.bert.embeddings.projection", "bert.bert.pooler.dense"]
    modules += [f"bert.bert.encoder.layer.{k}.{name}" for k in range(num_layers) for name in BERT_LAYER]
    modules += ["bert.cls.predictions.transform.dense", "bert.cls.predictions.transform.LayerNorm"]
    modules += ["bert.cls.seq_relationship"]
    tables = ["word_embeddings", "position_embeddings", "token_type_embeddings"]
    tables += ["token_type_embeddings_visual", "position_embeddings_visual"]
    keys = parameters(modules) | {f"bert.bert.embeddings.{name}.weight" for name in tables}
    return keys | {"bert.cls.predictions.bias", "bert.cls.predictions.decoder.weight"}


def authors_visual_bert_state(hf: transformers.VisualBertForPreTraining) -> dict[str, torch.Tensor]:
    state = {}
    for key, value in hf.state_dict().items():
        if key == "cls.predictions.decoder.bias":  # the authors' decoder has no bias of its own
            continue
        for theirs, authors in AUTHORS_VISUAL_NAMES.items():
            key = key.replace(theirs, authors, 1)
        state[key] = value.clone()
    assert set(state) == authors_visual_bert_keys(3)
    return state


def visual_bert_outputs(hf, inputs: dict[str, torch.Tensor], visual_type: int):
    with torch.no_grad():
        return hf(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            token_type_ids=inputs["token_type_ids"],
            visual_embeds=inputs["visual_feats"],
            visual_attention_mask=inputs["visual_attention_mask"],
            visual_token_type_ids=torch.full_like(inputs["visual_attention_mask"], visual_type),
            output_hidden_states=True,
        )


def assert_visual_bert_matches(ours, hf, visual_type: int) -> None:
    """vl_zoo against transformers fed the visual token type the checkpoint's own code fed."""
    inputs = batch_for(ours.config)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, 1] = 3
    with torch.no_grad():
        mine = ours(**inputs, labels=labels)
    theirs = visual_bert_outputs(hf, inputs, visual_type)
    joint = torch.cat([mine.text_last_hidden_state, mine.vision_last_hidden_state], dim=1)
    real = torch.cat([inputs["attention_mask"], inputs["visual_attention_mask"]], dim=1).bool()
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=0, atol=ATOL)  # noqa: E731
    close(joint[real], theirs.hidden_states[-1][real])
    close(mine.mlm_logits, theirs.prediction_logits[:, : labels.shape[1]])
    close(mine.itm_logits, theirs.seq_relationship_logits.flip(-1))  # transformers: index 0 = matches
    with torch.no_grad():
        pooled = hf.visual_bert.pooler(theirs.hidden_states[-1])
    close(mine.pooler_output, pooled)


def test_hf_visual_bert_converts_and_exports_exactly():
    hf = hf_visual_bert(seed=5)
    result = convert_original("hf-visualbert", hf.state_dict(), hf.config.to_dict())
    assert result.task == "pretraining" and result.processor.add_global_feature is None
    assert len(result.report.mapped) + len(result.report.dropped) == len(hf.state_dict())
    ours = result.build_model()
    assert_visual_bert_matches(ours, hf, visual_type=1)  # transformers' default visual type

    back = to_transformers(ours)
    for key, value in hf.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    inputs = batch_for(ours.config)
    first, again = visual_bert_outputs(hf, inputs, 1), visual_bert_outputs(back, inputs, 1)
    assert torch.equal(first.seq_relationship_logits, again.seq_relationship_logits)


def test_authors_visual_bert_checkpoint_converts_every_key():
    hf = hf_visual_bert(seed=6)
    state = authors_visual_bert_state(hf)
    result = convert_original("visualbert", state, {"num_attention_heads": 4})
    assert set(result.report.mapped.values()) | set(result.report.dropped) == set(state)
    assert any("token-type rows 0 and 1 swapped" in note for note in result.report.notes)
    assert_visual_bert_matches(result.build_model(), hf, visual_type=0)  # the authors' loaders feed type 0


def test_authors_visual_bert_fine_tuned_and_vcr_checkpoints():
    hf = hf_visual_bert(seed=7, hidden_size=36, num_attention_heads=12)  # the authors' config implies 12 heads
    state = {key: v for key, v in authors_visual_bert_state(hf).items() if not key.startswith("bert.cls.")}
    state.update({"bert.classifier.weight": torch.zeros(5, 36), "bert.classifier.bias": torch.zeros(5)})
    state["detector.backbone.conv1.weight"] = torch.zeros(2, 3, 1, 1)
    config = {"model": {"visual_embedding_dim": 16, "training_head_type": "vqa"}, "bert_model_name": "bert-x"}
    config["image_feature_type"] = "vqa_fix_100"
    result = convert_original("visualbert", state, config)
    assert result.task == "backbone" and result.tokenizer == "bert-x" and result.processor.max_regions == 100
    assert "mask_sum - 2" in result.report.dropped["bert.classifier.weight"]
    assert "detector" in result.report.dropped["detector.backbone.conv1.weight"]
    ours = result.build_model()
    inputs = batch_for(ours.config)
    with torch.no_grad():
        theirs = hf.visual_bert(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            token_type_ids=inputs["token_type_ids"],
            visual_embeds=inputs["visual_feats"],
            visual_attention_mask=inputs["visual_attention_mask"],
            visual_token_type_ids=torch.zeros_like(inputs["visual_attention_mask"]),
        )
        torch.testing.assert_close(ours(**inputs).pooler_output, theirs.pooler_output, rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="bypass_transformer"):
        convert_original("visualbert", state, {"model": {"visual_embedding_dim": 16, "bypass_transformer": True}})
    with pytest.raises(ValueError, match="visual_embedding_dim: the checkpoint shows 16, --config says 2048"):
        convert_original("visualbert", state, {"model": {"visual_embedding_dim": 2048}})


# ---------------------------------------------------------------------------------------------- containers, CLIs


@pytest.mark.parametrize(
    "wrap, notes",
    [
        (lambda sd: sd, 0),
        (lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}, "optimizer": {}, "epoch": 3}, 2),
        (lambda sd: {"model": sd, "optimizer": {"state": {}}}, 1),
    ],
)
def test_containers_are_unwrapped(wrap, notes):
    state = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    unwrapped, container = unwrap_checkpoint(wrap(state))
    assert unwrapped.keys() == state.keys() and len(container) == notes
    if notes:
        assert "optimizer" in container[0]


def test_unwrap_and_config_refusals(tmp_path):
    with pytest.raises(ConversionError, match=r"\['ema', 'net2'\]"):
        unwrap_checkpoint({"ema": {"a": torch.ones(1)}, "net2": {"a": torch.ones(1)}})
    (tmp_path / "c.json").write_text('{\n  // a comment, as VisualBERT writes them\n  "hidden_size": 32\n}')
    (tmp_path / "c.yaml").write_text("NETWORK:\n  VLBERT:\n    hidden_size: 32\n")
    assert read_original_config(tmp_path / "c.json") == {"hidden_size": 32}
    assert read_original_config(tmp_path / "c.yaml")["NETWORK"]["VLBERT"]["hidden_size"] == 32
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(ValueError, match="allowed are .json and .yaml"):
        read_original_config(tmp_path / "c.txt")
    with pytest.raises(ValueError, match="--model 'oscar' is not supported"):
        convert_original("oscar", {}, None)


def tiny_tokenizer(folder) -> str:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cube"]
    BertTokenizer(vocab={word: i for i, word in enumerate(words)}).save_pretrained(folder)
    return str(folder)


def test_convert_original_cli_end_to_end(tmp_path, capsys):
    hf = hf_lxmert(seed=8)
    hf.half().float()
    bundle = {"state_dict": {"module." + k: v.half() for k, v in authors_lxmert_state(hf).items()}, "optimizer": {}}
    torch.save(bundle, tmp_path / "Epoch20_LXRT.pth")
    (tmp_path / "bert_config.json").write_text(json.dumps({"num_attention_heads": 4, "hidden_size": 32}))
    output = tmp_path / "converted"
    args = ["--model", "lxmert", "--checkpoint", str(tmp_path / "Epoch20_LXRT.pth"), "--output", str(output)]
    args += ["--config", str(tmp_path / "bert_config.json"), "--tokenizer", tiny_tokenizer(tmp_path / "tok")]
    cli.main(args)
    assert "tokenizer bert-base-uncased" in capsys.readouterr().out

    report = json.loads((output / "conversion_report.json").read_text())
    assert report["dtype_cast"] == {"torch.float16 -> torch.float32": report["num_mapped"]}
    assert "'optimizer': 'optimizer state'" in report["container"][0] and report["tokenizer_saved"]
    model = AutoModelForPreTraining.from_pretrained(output).eval()
    assert model.config.bert_model == "bert-base-uncased"

    # raw features, pixel boxes and image sizes through the saved processor give transformers' outputs on
    # boxes normalised as LXMERT's loader does (x / width, y / height)
    processor = AutoProcessor.from_pretrained(output)
    rng = np.random.default_rng(0)
    features = [rng.standard_normal((n, 16)).astype(np.float32) for n in (3, 5)]
    boxes = [
        np.array([[0, 0, 60, 40], [10, 5, 30, 35], [20, 10, 80, 48]] + [[5, 5, 50, 25]] * (n - 3), np.float32)
        for n in (3, 5)
    ]
    batch = processor(text=["a red cube", "a cube"], features=features, boxes=boxes, image_sizes=[(48, 80), (48, 80)])
    assert batch["visual_feats"].shape == (2, 36, 16) and batch["visual_attention_mask"].sum().item() == 8
    with torch.no_grad():
        mine = model(**batch)
    loader_boxes = torch.from_numpy(
        np.stack([np.pad(b / [80, 48, 80, 48], ((0, 36 - len(b)), (0, 0))) for b in boxes])
    )
    inputs = {**batch, "visual_pos": loader_boxes.float()}
    torch.testing.assert_close(mine.mlm_logits, lxmert_outputs(hf, inputs).prediction_logits, rtol=0, atol=ATOL)

    with pytest.raises(SystemExit, match="not empty; pass --overwrite"):
        cli.main(args)
    cli.main([*args[:-2], "--overwrite"])
    assert not (output / "tokenizer_config.json").exists() and (output / "processor_config.json").exists()
    tiny_tokenizer(output)
    assert AutoProcessor.from_pretrained(output).max_regions == 36


def test_export_transformers_cli_and_refusal(tmp_path):
    hf = hf_visual_bert(seed=9)
    ours = convert_original("hf-visualbert", hf.state_dict(), hf.config.to_dict()).build_model()
    ours.save_pretrained(tmp_path / "ours")
    tiny_tokenizer(tmp_path / "ours")
    export_folder(tmp_path / "ours", tmp_path / "theirs")
    loaded = transformers.VisualBertForPreTraining.from_pretrained(tmp_path / "theirs").eval()
    assert (tmp_path / "theirs" / "tokenizer_config.json").exists()
    for key, value in hf.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    ctrl = vl_zoo.LxmertForPreTraining(vl_zoo.LxmertConfig.from_preset("tiny", vocab_size=99, v_feature_size=16))
    with pytest.raises(ValueError, match="add_global_imgfeat='first'.*\n.*pooling mul/relu"):
        to_transformers(ctrl)
