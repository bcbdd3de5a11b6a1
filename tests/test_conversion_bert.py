"""Initialising the text side from a text-only BERT checkpoint through the config's BERT layer maps."""

from __future__ import annotations

import pytest
import torch
from conftest import make_inputs, tiny_config
from transformers import AutoModelForPreTraining, BertConfig, BertForMaskedLM

from vl_zoo.conversion.bert import initialise_text_from_bert


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = BertForMaskedLM(config).eval()
    folder = tmp_path_factory.mktemp("bert")
    model.save_pretrained(folder)
    return folder, model


def test_text_only_layers_compute_what_bert_computes(bert_folder):
    folder, bert = bert_folder
    model = AutoModelForPreTraining.from_config(tiny_config("vlzoo_vilbert")).eval()
    fresh = initialise_text_from_bert(model, folder)
    assert "vl.embeddings.word_embeddings.weight" not in fresh and "vl.embeddings.region_proj.weight" in fresh

    inputs = make_inputs(model.config)
    ours = model(**inputs, output_hidden_states=True).text_hidden_states
    theirs = bert.bert(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True
    )
    real = inputs["attention_mask"].bool()
    # tiny ViLBERT: BERT layers 0 and 1 are sub-layers 0-3, text-only
    torch.testing.assert_close(ours[4][real], theirs.hidden_states[2][real], rtol=0, atol=1e-5)


def test_every_bert_layer_lands_where_the_maps_say(bert_folder, model_type):
    folder, bert = bert_folder
    model = AutoModelForPreTraining.from_config(tiny_config(model_type))
    initialise_text_from_bert(model, folder)
    config = model.config
    layers = len(bert.bert.encoder.layer)  # a map may name more BERT layers than this small BERT has
    for layer, index in config.bert_layer2attn_sublayer.items():
        if int(layer) >= layers:
            continue
        sublayer = model.vl.encoder.sublayers[index]
        params = sublayer.shared or sublayer.text
        expected = bert.bert.encoder.layer[int(layer)].attention.self.query.weight
        assert torch.equal(params.query.weight, expected)
    for layer, index in config.bert_layer2ff_sublayer.items():
        if int(layer) >= layers:
            continue
        sublayer = model.vl.encoder.sublayers[index]
        params = sublayer.shared or sublayer.text
        assert torch.equal(params.intermediate.weight, bert.bert.encoder.layer[int(layer)].intermediate.dense.weight)
    assert torch.equal(model.mlm_head.decoder.weight, bert.bert.embeddings.word_embeddings.weight)
    assert torch.equal(model.mlm_head.bias, bert.cls.predictions.bias)
