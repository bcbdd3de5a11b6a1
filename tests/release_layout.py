"""The release's state-dict layout, restated from its model code's rules: every key, its shape, and its aliases.

Used by the tests to build checkpoints "as the release saves them" for configs that have no reference dump.
The statement is checked against the real dumps in fixtures/volta (same keys, same shapes, same tied groups)
and against the release's documented key counts of the full-size ctrl models.
"""

from __future__ import annotations

import torch

REGION_SIZES = {"0": 1601, "1": 2048, "3": 1600, "4": 400, "5": 2048, "6": 1601}


def _linear(keys, name, n_in, n_out, bias=True):
    keys[f"{name}.weight"] = (n_out, n_in)
    if bias:
        keys[f"{name}.bias"] = (n_out,)


def _norm(keys, name, size):
    keys[f"{name}.weight"] = (size,)
    keys[f"{name}.bias"] = (size,)


def release_layout(c: dict) -> tuple[dict[str, tuple], dict[str, str]]:
    """(key -> shape, alias key -> canonical key) of `BertForVLPreTraining.state_dict()` for release config `c`."""
    keys: dict[str, tuple] = {}
    aliases: dict[str, str] = {}
    hidden, v_hidden, feat = c["hidden_size"], c["v_hidden_size"], c["v_feature_size"]
    kind = c["image_embeddings"]

    keys["bert.embeddings.word_embeddings.weight"] = (c["vocab_size"], hidden)
    keys["bert.embeddings.position_embeddings.weight"] = (c["max_position_embeddings"], hidden)
    keys["bert.embeddings.token_type_embeddings.weight"] = (c["type_vocab_size"], hidden)
    _norm(keys, "bert.embeddings.LayerNorm", hidden)
    _embedding_keys(keys, aliases, c, kind, hidden, v_hidden, feat)
    for n in range(_depth(c)):
        _sublayer_keys(keys, aliases, c, n, hidden, v_hidden)

    fusion = c.get("fusion_method", "mul")
    if fusion != "none":
        _linear(keys, "bert.t_pooler.dense", hidden, c.get("pooler_size", 768))
        _linear(keys, "cls.bi_seq_relationship", c.get("pooler_size", 768), 2)
    if fusion in ("mul", "sum"):
        _linear(keys, "bert.v_pooler.dense", v_hidden, c.get("v_pooler_size", 1024))
    keys["cls.predictions.bias"] = (c["vocab_size"],)
    _linear(keys, "cls.predictions.transform.dense", hidden, hidden)
    _norm(keys, "cls.predictions.transform.LayerNorm", hidden)
    keys["cls.predictions.decoder.weight"] = (c["vocab_size"], hidden)
    aliases["cls.predictions.decoder.weight"] = "bert.embeddings.word_embeddings.weight"
    _linear(keys, "cls.imagePredictions.transform.dense", v_hidden, v_hidden)
    if c.get("image_head_ln", True):
        _norm(keys, "cls.imagePredictions.transform.LayerNorm", v_hidden)
    for target, weight in c.get("visual_target_weights", {"0": 1}).items():
        if weight > 0:
            _linear(keys, f"cls.imagePredictions.decoder_dict.{target}", v_hidden, REGION_SIZES[target])
    if c.get("qa_task_weight", 0):
        _linear(keys, "cls.qaPredictions.logit_fc.0", v_hidden, 2 * v_hidden)
        _norm(keys, "cls.qaPredictions.logit_fc.2", 2 * v_hidden)
        _linear(keys, "cls.qaPredictions.logit_fc.3", 2 * v_hidden, c["qa_num_answers"])
    return keys, aliases


def _depth(c: dict) -> int:
    names = ("tt_attn", "tv_attn", "vt_attn", "vv_attn", "t_ff", "v_ff")
    return len(set().union(*(c[f"{name}_sublayers"] for name in names)))


def _embedding_keys(keys, aliases, c, kind, hidden, v_hidden, feat):
    locs = c.get("num_locs", 5)
    if kind in ("vilbert", "lxmert"):
        _linear(keys, "bert.v_embeddings.image_embeddings", feat, v_hidden)
        _linear(keys, "bert.v_embeddings.image_location_embeddings", locs, v_hidden)
        norms = ["LayerNorm"] if kind == "vilbert" else ["ImgLayerNorm", "LocLayerNorm"]
        for norm in norms:
            _norm(keys, f"bert.v_embeddings.{norm}", v_hidden)
    elif kind == "uniter":
        _linear(keys, "bert.embeddings.image_embeddings", feat, v_hidden)
        _linear(keys, "bert.embeddings.image_location_embeddings", locs, v_hidden)
        for norm in ("image_layer_norm", "image_location_layer_norm", "v_LayerNorm"):
            _norm(keys, f"bert.embeddings.{norm}", hidden)
        keys["bert.embeddings.image_token_type_embeddings.weight"] = (c["type_vocab_size"], hidden)
        aliases["bert.embeddings.image_token_type_embeddings.weight"] = "bert.embeddings.token_type_embeddings.weight"
    elif kind == "visualbert":
        _linear(keys, "bert.embeddings.projection", feat, hidden)
        keys["bert.embeddings.token_type_embeddings_visual.weight"] = (c["type_vocab_size"], hidden)
        keys["bert.embeddings.position_embeddings_visual.weight"] = (c["max_position_embeddings"], hidden)
    else:  # vl-bert
        _linear(keys, "bert.embeddings.obj_downsample.1", 2 * feat, v_hidden)
        keys["bert.embeddings.object_linguistic_embeddings.weight"] = (1, hidden)
        keys["bert.embeddings.object_mask_visual_embedding.weight"] = (1, feat)
        keys["bert.embeddings.end_embedding.weight"] = (1, hidden)
        if c.get("visual_target_weights", {}).get("6", 0) > 0:
            keys["bert.embeddings.object_mask_word_embedding.weight"] = (1, hidden)
        if v_hidden != hidden:
            _linear(keys, "bert.embeddings.visual_1x1_text", v_hidden, hidden)
            _linear(keys, "bert.embeddings.visual_1x1_object", v_hidden, hidden)
        _norm(keys, "bert.embeddings.visual_ln_text", hidden)
        _norm(keys, "bert.embeddings.visual_ln_object", hidden)


def _sublayer_keys(keys, aliases, c, n, hidden, v_hidden):
    prefix = f"bert.encoder.layer.{n}"
    shared = n in c["shared_sublayers"]
    if n in set(c["tt_attn_sublayers"] + c["tv_attn_sublayers"] + c["vt_attn_sublayers"] + c["vv_attn_sublayers"]):
        text = n in c["tt_attn_sublayers"] or n in c["tv_attn_sublayers"]
        vision = n in c["vv_attn_sublayers"] or n in c["vt_attn_sublayers"]
        attn = c["sublayer2attn_hidden_size"].get(str(n), hidden)
        v_attn = c["sublayer2v_attn_hidden_size"].get(str(n), v_hidden)
        pairs = [("attention_self.query", "attention_self.v_query"), ("attention_self.key", "attention_self.v_key")]
        pairs += [("attention_self.value", "attention_self.v_value")]
        if text:
            for t_name, _ in pairs:
                _linear(keys, f"{prefix}.{t_name}", hidden, attn)
            _linear(keys, f"{prefix}.attention_output.dense", attn, hidden)
            _norm(keys, f"{prefix}.attention_output.LayerNorm", hidden)
        if vision:
            for _, v_name in pairs:
                _linear(keys, f"{prefix}.{v_name}", v_hidden, v_attn)
            _linear(keys, f"{prefix}.attention_output.v_dense", v_attn, v_hidden)
            _norm(keys, f"{prefix}.attention_output.v_LayerNorm", v_attn)
        pairs += [("attention_output.dense", "attention_output.v_dense")]
        pairs += [("attention_output.LayerNorm", "attention_output.v_LayerNorm")]
    else:
        text, vision = n in c["t_ff_sublayers"], n in c["v_ff_sublayers"]
        inter = c["sublayer2intermediate_size"].get(str(n), c["intermediate_size"])
        v_inter = c["sublayer2v_intermediate_size"].get(str(n), c["v_intermediate_size"])
        if text:
            _linear(keys, f"{prefix}.intermediate.dense", hidden, inter)
            _linear(keys, f"{prefix}.output.dense", inter, hidden)
            _norm(keys, f"{prefix}.output.LayerNorm", hidden)
        if vision:
            _linear(keys, f"{prefix}.intermediate.v_dense", v_hidden, v_inter)
            _linear(keys, f"{prefix}.output.v_dense", v_inter, v_hidden)
            _norm(keys, f"{prefix}.output.v_LayerNorm", v_hidden)
        pairs = [("intermediate.dense", "intermediate.v_dense"), ("output.dense", "output.v_dense")]
        pairs += [("output.LayerNorm", "output.v_LayerNorm")]
    if shared and text and vision:
        for t_name, v_name in pairs:
            for leaf in ("weight", "bias"):
                aliases[f"{prefix}.{v_name}.{leaf}"] = f"{prefix}.{t_name}.{leaf}"


def random_release_checkpoint(c: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the release's layout with seeded random values; aliases share their canonical tensor."""
    keys, aliases = release_layout(c)
    generator = torch.Generator().manual_seed(seed)
    state = {key: torch.randn(shape, generator=generator) * 0.2 for key, shape in keys.items() if key not in aliases}
    for alias, canonical in aliases.items():
        state[alias] = state[canonical]
    return state
