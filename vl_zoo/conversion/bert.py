"""Initialise the text side of a vl_zoo model from a text-only BERT checkpoint, as the release does.

BERT layer i's attention goes to sub-layer `config.bert_layer2attn_sublayer[i]` and its feed-forward block to
`config.bert_layer2ff_sublayer[i]` (the text parameters there, or the shared ones in a shared sub-layer). The
word, position and token-type tables, the embedding LayerNorm and, when present, the masked-word head come
along. Everything else (the vision stream, cross-attention, poolers, region and matching heads) keeps its
fresh initialisation, and the function says which parameters those are.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..modeling.model import VLPreTrainedModel
from .common import ConversionError, load_state_dict

logger = logging.getLogger(__name__)

EMBEDDINGS = {
    "embeddings.word_embeddings": "embeddings.word_embeddings",
    "embeddings.position_embeddings": "embeddings.position_embeddings",
    "embeddings.token_type_embeddings": "embeddings.token_type_embeddings",
    "embeddings.LayerNorm": "embeddings.layer_norm",
}
LAYER_PARTS = {  # BERT layer part -> (which map, vl_zoo name inside the stream)
    "attention.self.query": ("attn", "query"),
    "attention.self.key": ("attn", "key"),
    "attention.self.value": ("attn", "value"),
    "attention.output.dense": ("attn", "output"),
    "attention.output.LayerNorm": ("attn", "layer_norm"),
    "intermediate.dense": ("ff", "intermediate"),
    "output.dense": ("ff", "output"),
    "output.LayerNorm": ("ff", "layer_norm"),
}
MLM_HEAD = {
    "cls.predictions.transform.dense": "mlm_head.transform.dense",
    "cls.predictions.transform.LayerNorm": "mlm_head.transform.layer_norm",
}
LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
IGNORED = ("pooler.", "cls.seq_relationship.", "cls.predictions.decoder.", "embeddings.position_ids")


def read_bert_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A BERT state dict from a folder (model.safetensors or pytorch_model.bin) or a file."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "model.safetensors", path / "pytorch_model.bin"]
        path = next((c for c in candidates if c.is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{candidates[0].parent} holds neither model.safetensors nor pytorch_model.bin")
    return load_file(path) if path.suffix == ".safetensors" else load_state_dict(path)


def bert_to_vl_state_dict(bert: dict[str, torch.Tensor], model: VLPreTrainedModel) -> dict[str, torch.Tensor]:
    """Rename a BERT state dict's keys to the model's, through the config's BERT layer maps."""
    config = model.config
    prefix = "vl." if hasattr(model, "vl") else ""
    specs = {spec.index: spec for spec in config.sublayer_specs()}
    maps = {"attn": config.bert_layer2attn_sublayer, "ff": config.bert_layer2ff_sublayer}
    out: dict[str, torch.Tensor] = {}
    unused = []
    for key, value in bert.items():
        name = key.removeprefix("bert.")
        module, _, leaf = name.rpartition(".")
        if module in EMBEDDINGS:
            out[f"{prefix}{EMBEDDINGS[module]}.{leaf}"] = value
        elif module == "cls.predictions" and leaf == "bias" and prefix:
            out["mlm_head.bias"] = value
        elif module in MLM_HEAD and prefix:
            out[f"{MLM_HEAD[module]}.{leaf}"] = value
        elif match := LAYER_KEY.match(name):
            layer, part, leaf = match.groups()
            which, ours = LAYER_PARTS.get(part, (None, None))
            index = maps.get(which, {}).get(layer)
            if index is None:
                unused.append(key)
                continue
            stream = "shared" if specs[index].shares_parameters else "text"
            out[f"{prefix}encoder.sublayers.{index}.{stream}.{ours}.{leaf}"] = value
        elif not any(name.startswith(ignored) for ignored in IGNORED):
            unused.append(key)
    if unused:
        logger.warning("BERT keys with no place in this model (left out): %s", sorted(unused))
    return out


def initialise_text_from_bert(model: VLPreTrainedModel, bert_path: str | Path) -> list[str]:
    """Copy a BERT checkpoint into the text side of `model`; returns the parameters it did not fill.

    A table with more rows than BERT's (VL-BERT's three token types) gets BERT's rows first and keeps its
    fresh extra rows; any other shape that differs is an error.
    """
    state = bert_to_vl_state_dict(read_bert_checkpoint(bert_path), model)
    own = model.state_dict()
    bad = {}
    with torch.no_grad():
        for key, value in state.items():
            target = own[key]
            if target.shape == value.shape:
                target.copy_(value)
            elif (
                key.endswith("_embeddings.weight") and value.shape[1:] == target.shape[1:] and len(value) < len(target)
            ):
                target[: len(value)].copy_(value)
                logger.info(
                    "%s: BERT has %d rows, the model %d; the extra rows stay fresh", key, len(value), len(target)
                )
            else:
                bad[key] = (tuple(value.shape), tuple(target.shape))
    if bad:
        raise ConversionError(f"BERT tensors do not fit the model (BERT shape, model shape): {bad}")

    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    fresh = sorted(set(own) - set(state) - tied)
    logger.info(
        "initialised %d tensors from %s; %d keep their fresh initialisation", len(state), bert_path, len(fresh)
    )
    return fresh
