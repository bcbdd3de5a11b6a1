"""The five architectures: build, forward, backward, save/load, attention back-ends, checkpointing, losses."""

from __future__ import annotations

import pytest
import torch
from conftest import make_inputs, make_labels, randomize_, tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForPreTraining, AutoModelForVisualQuestionAnswering

ATOL = 1e-5


def build(model_type, seed=0, cls=AutoModelForPreTraining, **overrides):
    config = tiny_config(model_type, **overrides)
    return randomize_(cls.from_config(config), seed).eval()


def test_forward_shapes(model_type):
    model = build(model_type)
    config = model.config
    inputs = make_inputs(config)
    out = model(**inputs)
    batch, length = inputs["input_ids"].shape
    regions = inputs["visual_feats"].shape[1]
    assert out.text_last_hidden_state.shape == (batch, length, config.hidden_size)
    assert out.vision_last_hidden_state.shape == (batch, regions, config.v_hidden_size)
    assert out.pooler_output.shape == (batch, config.pooler_size)
    assert out.mlm_logits.shape == (batch, length, config.vocab_size)
    assert out.region_logits.shape == (batch, regions, 1601)
    assert out.itm_logits.shape == (batch, 2)
    assert out.loss is None


def test_backward_reaches_every_parameter(model_type):
    model = build(model_type).train()
    inputs = make_inputs(model.config)
    inputs["visual_feats"][:, 1] = 0.0  # the masked region's feature is zeroed, as the collator does
    out = model(**inputs, **make_labels(model.config, inputs))
    out.loss.backward()
    without = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without == []


def test_save_and_load_give_identical_outputs(model_type, tmp_path):
    model = build(model_type)
    inputs = make_inputs(model.config)
    before = model(**inputs)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    after = loaded(**inputs)
    for name in ("text_last_hidden_state", "vision_last_hidden_state", "mlm_logits", "region_logits", "itm_logits"):
        assert torch.equal(before[name], after[name]), name
    # the decoder is tied to the word embeddings after loading, not a copy
    assert loaded.mlm_head.decoder.weight is loaded.vl.embeddings.word_embeddings.weight
    assert "mlm_head.decoder.weight" not in load_file(tmp_path / "model.safetensors")


def test_backbone_and_vqa_load_from_a_pretraining_folder(model_type, tmp_path):
    model = build(model_type)
    model.save_pretrained(tmp_path)
    inputs = make_inputs(model.config)
    backbone = AutoModel.from_pretrained(tmp_path).eval()
    assert type(backbone).__name__.endswith("Model")
    torch.testing.assert_close(backbone(**inputs).pooler_output, model(**inputs).pooler_output, rtol=0, atol=0)

    vqa = AutoModelForVisualQuestionAnswering.from_pretrained(tmp_path, num_labels=5).eval()
    scores = torch.rand(inputs["input_ids"].shape[0], 5)
    out = vqa(**inputs, labels=scores)
    assert out.logits.shape == scores.shape and torch.isfinite(out.loss)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, scores) * 5
    torch.testing.assert_close(out.loss, expected)


def test_eager_and_sdpa_agree(model_type):
    config = tiny_config(model_type)
    inputs = make_inputs(config)
    outputs = {}
    for implementation in ("eager", "sdpa"):
        config._attn_implementation = implementation
        model = randomize_(AutoModelForPreTraining.from_config(config), seed=3).eval()
        outputs[implementation] = model(**inputs, output_hidden_states=True)
    for name in ("text_last_hidden_state", "vision_last_hidden_state", "pooler_output", "mlm_logits"):
        torch.testing.assert_close(outputs["eager"][name], outputs["sdpa"][name], rtol=0, atol=ATOL)


def test_sdpa_is_the_default_and_eager_can_be_asked_for(model_type, tmp_path):
    build(model_type).save_pretrained(tmp_path)
    assert AutoModelForPreTraining.from_pretrained(tmp_path).config._attn_implementation == "sdpa"
    eager = AutoModelForPreTraining.from_pretrained(tmp_path, attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"


def test_activation_checkpointing_gives_the_same_gradients(model_type):
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    no_dropout |= {"v_hidden_dropout_prob": 0.0, "v_attention_probs_dropout_prob": 0.0}
    grads = []
    for checkpointing in (False, True):
        model = build(model_type, **no_dropout).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert all(layer.gradient_checkpointing for layer in model.vl.encoder.sublayers)
        inputs = make_inputs(model.config)
        model(**inputs, **make_labels(model.config, inputs)).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


def test_padding_does_not_change_real_outputs(model_type):
    """Each example gives the same outputs alone, trimmed to its real tokens and regions, as in a padded batch."""
    model = build(model_type)
    inputs = make_inputs(model.config, batch=3)
    batched = model(**inputs)
    for row in range(3):
        length = int(inputs["attention_mask"][row].sum())
        regions = int(inputs["visual_attention_mask"][row].sum())
        alone = {key: value[row : row + 1] for key, value in inputs.items()}
        alone = {key: value[:, :length] if value.shape[1] == 7 else value[:, :regions] for key, value in alone.items()}
        single = model(**alone)
        torch.testing.assert_close(single.text_last_hidden_state[0], batched.text_last_hidden_state[row, :length])
        torch.testing.assert_close(single.vision_last_hidden_state[0], batched.vision_last_hidden_state[row, :regions])
        torch.testing.assert_close(single.pooler_output[0], batched.pooler_output[row])


def test_vl_bert_release_positions_depend_on_the_batch():
    """With the release's switch on, a caption's positions move at the shortest batch-mate's end, as in the release."""
    model = build("vlzoo_vl_bert", vl_bert_shared_text_positions=True)
    inputs = make_inputs(model.config, batch=3)
    batched = model(**inputs).text_last_hidden_state[0]
    alone = model(**{key: value[:1] for key, value in inputs.items()}).text_last_hidden_state[0]
    assert not torch.allclose(batched, alone, atol=1e-3)

    def text_embedding(batch_inputs):
        names = (
            "input_ids",
            "token_type_ids",
            "visual_feats",
            "visual_pos",
            "attention_mask",
            "visual_attention_mask",
        )
        return model.vl.embeddings(*(batch_inputs[name] for name in names))[0][0]

    shortest = int(inputs["attention_mask"].sum(1).min())
    batched = text_embedding(inputs)
    alone = text_embedding({key: value[:1] for key, value in inputs.items()})
    torch.testing.assert_close(batched[:shortest], alone[:shortest])
    assert not torch.allclose(batched[shortest:], alone[shortest:], atol=1e-3)


def test_loss_is_the_weighted_sum_of_the_given_objectives(model_type):
    model = build(model_type, mlm_weight=2.0, itm_weight=0.5, visual_target_weights={"0": 3.0})
    inputs = make_inputs(model.config)
    labels = make_labels(model.config, inputs)
    full = model(**inputs, **labels)
    expected = 2.0 * full.mlm_loss + full.region_loss + 0.5 * full.itm_loss
    torch.testing.assert_close(full.loss, expected)
    only_itm = model(**inputs, itm_labels=labels["itm_labels"])
    torch.testing.assert_close(only_itm.loss, 0.5 * full.itm_loss)
    assert only_itm.mlm_loss is None and only_itm.region_loss is None

    # each loss, written out by hand
    logits = full.mlm_logits[:, 1]
    mlm = torch.nn.functional.cross_entropy(logits, labels["labels"][:, 1])
    torch.testing.assert_close(full.mlm_loss, mlm)
    log_probs = torch.log_softmax(full.region_logits[:, 1], dim=-1)
    target = labels["region_targets"][:, 1]
    kl = (target * (target.log() - log_probs)).sum(-1).mean()
    torch.testing.assert_close(full.region_loss, 3.0 * kl)
    itm = torch.nn.functional.cross_entropy(full.itm_logits, labels["itm_labels"])
    torch.testing.assert_close(full.itm_loss, itm)


def test_no_masked_word_gives_zero_not_nan(model_type):
    model = build(model_type)
    inputs = make_inputs(model.config)
    out = model(**inputs, labels=torch.full_like(inputs["input_ids"], -100))
    assert out.loss.item() == 0.0


def test_lxmert_targets_by_id_with_confidences():
    model = build("vlzoo_lxmert", visual_target_weights={"3": 2.0, "4": 1.0, "5": 1.0})
    inputs = make_inputs(model.config)
    batch, regions = inputs["visual_feats"].shape[:2]
    mask = torch.zeros(batch, regions)
    mask[:, 2] = 1
    objects = torch.randint(0, 1600, (batch, regions))
    confidences = torch.rand(batch, regions)
    targets = {"3": (objects, confidences), "4": torch.randint(0, 400, (batch, regions)), "5": inputs["visual_feats"]}
    out = model(**inputs, region_targets=targets, region_mask=mask)
    assert set(out.region_logits_by_target) == {"3", "4", "5"}
    by_hand = torch.nn.functional.cross_entropy(
        out.region_logits_by_target["3"][:, 2], objects[:, 2], reduction="none"
    )
    object_loss = (by_hand * confidences[:, 2]).mean()
    attribute_loss = torch.nn.functional.cross_entropy(out.region_logits_by_target["4"][:, 2], targets["4"][:, 2])
    feature_loss = torch.nn.functional.smooth_l1_loss(
        out.region_logits_by_target["5"][:, 2], inputs["visual_feats"][:, 2]
    )
    torch.testing.assert_close(out.region_loss, 2.0 * object_loss + attribute_loss + feature_loss)
    with pytest.raises(ValueError, match="pass region_targets as a dict by id"):
        model(**inputs, region_targets=inputs["visual_feats"], region_mask=mask)


def test_output_attentions(model_type):
    model = build(model_type)
    inputs = make_inputs(model.config)
    out = model(**inputs, output_attentions=True, output_hidden_states=True)
    num_attention = sum(spec.kind == "attn" for spec in model.config.sublayer_specs())
    assert len(out.attentions) == num_attention
    assert len(out.text_hidden_states) == model.config.num_sublayers + 1
    first = out.attentions[0]
    probs = first if isinstance(first, torch.Tensor) else first[0]
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))


def test_bf16_autocast_runs_close_to_float32(model_type):
    model = build(model_type)
    inputs = make_inputs(model.config)
    reference = model(**inputs).text_last_hidden_state
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs, **make_labels(model.config, inputs))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert (out.text_last_hidden_state.float() - reference).abs().max() < 0.2


def test_refuses_a_checkpoint_with_missing_backbone_keys(tmp_path):
    model = build("vlzoo_uniter")
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["vl.encoder.sublayers.0.shared.query.weight"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="backbone keys missing.*sublayers.0.shared.query.weight"):
        AutoModelForPreTraining.from_pretrained(tmp_path)
    del state["itm_head.bias"]
    state["vl.encoder.sublayers.0.shared.query.weight"] = torch.zeros(32, 32)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="heads filled only in part: \\['itm_head'\\]"):
        AutoModelForPreTraining.from_pretrained(tmp_path)
