"""Convert a checkpoint of the unified-framework release (e-bug/volta) and its config JSON into a vl_zoo model.

The release saves `BertForVLPreTraining.state_dict()` with `torch.save`: tied tensors (the MLM decoder, the
text and vision names of a shared sub-layer, UNITER's image token-type table) appear under every name. Each
such alias is checked to equal its canonical tensor and dropped; every other key is renamed; the image-text
matching classifier swaps its two rows, since the release calls a match 0 and vl_zoo calls it 1.

Usage:
    python conversion/convert_volta.py --checkpoint pytorch_model_9.bin --config ctrl_vilbert_base.json --output DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..configuration import VLConfig
from ..modeling.model import VLForPreTraining
from ..models import ARCHITECTURES, MODEL_TYPE_BY_EMBEDDING
from .common import ConversionError, StateDictConversion, load_state_dict, prepare_output_dir, save_atomically

logger = logging.getLogger(__name__)

# Constructor defaults of the release's BertConfig that differ from VLConfig's, for keys a JSON may omit.
RELEASE_DEFAULTS: dict[str, Any] = {
    "pooler_size": 768,
    "v_pooler_size": 1024,
    "add_global_imgfeat": None,
    "v_coordinate_embeddings_dim": None,
    "visual_target_weights": {"0": 1.0},
    "image_head_ln": True,
    "fusion_act": "relu",
    "qa_task_weight": 0.0,
    "qa_num_answers": 0,
    "clf_hidden_size": 1536,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
# Release config keys that vl_zoo keeps on the config unchanged, as a record of the tokenizer.
KEPT_AS_RECORD = ("bert_model", "do_lower_case")
# Release config keys with no effect on the five architectures, and the value that means "no effect".
INERT_KEYS: dict[str, Any] = {
    "model": "bert",
    "itm_dim": 2,
    "max_boxes": None,
    "v_initializer_range": None,
    "fixed_layers": None,
    "objective": None,
    "visualization": None,
    "fixed_embs": None,
    "m_encoder": None,
    "m_layer": None,
    "v_layers": None,
    "has_mapping": None,
    "has_mapping_bias": None,
    "load_x_model": None,
    "norm_embeddings": False,
}


# ---------------------------------------------------------------------------------------------- config


def config_from_volta(volta: dict[str, Any]) -> VLConfig:
    """The vl_zoo config of a release config dict; the architecture comes from `image_embeddings`."""
    kind = volta.get("image_embeddings", "vilbert")
    if kind not in MODEL_TYPE_BY_EMBEDDING:
        raise ValueError(
            f"image_embeddings={kind!r} in the release config is not one of the five architectures; "
            f"allowed: {sorted(MODEL_TYPE_BY_EMBEDDING)}"
        )
    config_class = ARCHITECTURES[MODEL_TYPE_BY_EMBEDDING[kind]][0]
    fields = set(config_class.__dataclass_fields__)
    values = {**RELEASE_DEFAULTS, **volta}

    kwargs: dict[str, Any] = {}
    unknown = []
    for key, value in values.items():
        if key == "vocab_size_or_config_json_file":
            kwargs["vocab_size"] = value
        elif key in fields or key in KEPT_AS_RECORD:
            kwargs[key] = value
        elif key in INERT_KEYS:
            _check_inert(key, value)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"the release config has keys vl_zoo does not know: {sorted(unknown)}")
    if kwargs.get("v_coordinate_embeddings_dim") is None:
        kwargs.pop("v_coordinate_embeddings_dim", None)

    # Converted VL-BERT checkpoints were trained with the release's position and visual-row behaviour.
    if kind == "vl-bert":
        kwargs["vl_bert_shared_text_positions"] = True
        kwargs["vl_bert_visual_from_last_row"] = True
    return config_class(**kwargs)


def _check_inert(key: str, value: Any) -> None:
    expected = INERT_KEYS[key]
    if expected is None or value == expected or (key == "model" and value is None):
        return
    if key == "model":
        raise NotImplementedError(f"model={value!r}: vl_zoo converts the release's BERT-based models, not {value!r}")
    raise ValueError(f"{key}={value!r} in the release config is not supported; vl_zoo needs {expected!r}")


# ---------------------------------------------------------------------------------------------- keys

EMBEDDING_RENAMES = {
    "vilbert": {
        "bert.v_embeddings.image_embeddings": "region_proj",
        "bert.v_embeddings.image_location_embeddings": "box_proj",
        "bert.v_embeddings.LayerNorm": "region_layer_norm",
    },
    "lxmert": {
        "bert.v_embeddings.image_embeddings": "region_proj",
        "bert.v_embeddings.image_location_embeddings": "box_proj",
        "bert.v_embeddings.ImgLayerNorm": "region_layer_norm",
        "bert.v_embeddings.LocLayerNorm": "box_layer_norm",
    },
    "uniter": {
        "bert.embeddings.image_embeddings": "region_proj",
        "bert.embeddings.image_location_embeddings": "box_proj",
        "bert.embeddings.image_layer_norm": "region_layer_norm",
        "bert.embeddings.image_location_layer_norm": "box_layer_norm",
        "bert.embeddings.v_LayerNorm": "vision_layer_norm",
    },
    "visualbert": {
        "bert.embeddings.projection": "region_proj",
        "bert.embeddings.token_type_embeddings_visual": "visual_token_type_embeddings",
        "bert.embeddings.position_embeddings_visual": "visual_position_embeddings",
    },
    "vl-bert": {
        "bert.embeddings.obj_downsample.1": "region_proj",
        "bert.embeddings.visual_ln_text": "text_visual_layer_norm",
        "bert.embeddings.visual_ln_object": "object_visual_layer_norm",
        "bert.embeddings.visual_1x1_text": "text_visual_proj",
        "bert.embeddings.visual_1x1_object": "object_visual_proj",
    },
}
# VL-BERT's single-row embedding tables, stored by vl_zoo as vectors.
VL_BERT_VECTORS = {
    "bert.embeddings.object_linguistic_embeddings.weight": "object_embedding",
    "bert.embeddings.object_mask_visual_embedding.weight": "region_mask_embedding",
    "bert.embeddings.object_mask_word_embedding.weight": "masked_object_embedding",
    "bert.embeddings.end_embedding.weight": "end_embedding",
}
TEXT_EMBEDDINGS = {
    "bert.embeddings.word_embeddings": "word_embeddings",
    "bert.embeddings.position_embeddings": "position_embeddings",
    "bert.embeddings.token_type_embeddings": "token_type_embeddings",
    "bert.embeddings.LayerNorm": "layer_norm",
}
HEADS = {
    "cls.predictions.transform.dense": "mlm_head.transform.dense",
    "cls.predictions.transform.LayerNorm": "mlm_head.transform.layer_norm",
    "cls.imagePredictions.transform.dense": "region_head.transform.dense",
    "cls.imagePredictions.transform.LayerNorm": "region_head.transform.layer_norm",
    "cls.qaPredictions.logit_fc.0": "answer_head.dense",
    "cls.qaPredictions.logit_fc.2": "answer_head.layer_norm",
    "cls.qaPredictions.logit_fc.3": "answer_head.decoder",
    "bert.t_pooler.dense": "vl.pooler.text_dense",
    "bert.v_pooler.dense": "vl.pooler.vision_dense",
}
# Sub-layer parameter names of the release: (module, vision twin) -> vl_zoo name inside a stream.
SUBLAYER_NAMES = {
    ("attention_self.query", "attention_self.v_query"): "query",
    ("attention_self.key", "attention_self.v_key"): "key",
    ("attention_self.value", "attention_self.v_value"): "value",
    ("attention_output.dense", "attention_output.v_dense"): "output",
    ("attention_output.LayerNorm", "attention_output.v_LayerNorm"): "layer_norm",
    ("intermediate.dense", "intermediate.v_dense"): "intermediate",
    ("output.dense", "output.v_dense"): "output",
    ("output.LayerNorm", "output.v_LayerNorm"): "layer_norm",
}
SUBLAYER_KEY = re.compile(r"^bert\.encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
TASK_HEAD_HINT = (
    "\n  (keys under clfs_dict.* belong to a fine-tuned task model of the release; this converter reads the "
    "pretraining checkpoints, pytorch_model_{epoch}.bin of the pretraining runs)"
)


def convert_state_dict(source: dict[str, torch.Tensor], config: VLConfig) -> StateDictConversion:
    """Decide, for every key of a release state dict, which vl_zoo key it fills or why it is dropped."""
    conversion = StateDictConversion(source)
    specs = {spec.index: spec for spec in config.sublayer_specs()}
    embeddings = {**TEXT_EMBEDDINGS, **EMBEDDING_RENAMES[config.image_embeddings]}
    for key in source:
        module, _, leaf = key.rpartition(".")
        if key == "cls.predictions.decoder.weight":
            conversion.alias(key, "bert.embeddings.word_embeddings.weight")
        elif key == "bert.embeddings.image_token_type_embeddings.weight":
            conversion.alias(key, "bert.embeddings.token_type_embeddings.weight")
        elif key in VL_BERT_VECTORS and config.image_embeddings == "vl-bert":
            conversion.map(key, f"vl.embeddings.{VL_BERT_VECTORS[key]}", lambda t: t.reshape(-1))
        elif module in embeddings:
            conversion.map(key, f"vl.embeddings.{embeddings[module]}.{leaf}")
        elif module in HEADS:
            conversion.map(key, f"{HEADS[module]}.{leaf}")
        elif key == "cls.predictions.bias":
            conversion.map(key, "mlm_head.bias")
        elif module == "cls.bi_seq_relationship":
            conversion.map(key, f"itm_head.{leaf}", lambda t: t.flip(0))  # release: 0 = match; vl_zoo: 1 = match
        elif module.startswith("cls.imagePredictions.decoder_dict."):
            conversion.map(key, f"region_head.decoders.{module.rsplit('.', 1)[1]}.{leaf}")
        elif (match := SUBLAYER_KEY.match(key)) and int(match.group(1)) in specs:
            _convert_sublayer_key(conversion, key, specs[int(match.group(1))], match.group(2), match.group(3))
        else:
            conversion.unknown.append(key)
    return conversion


def _convert_sublayer_key(conversion: StateDictConversion, key: str, spec, name: str, leaf: str) -> None:
    n = spec.index
    for (text_name, vision_name), ours in SUBLAYER_NAMES.items():
        if name not in (text_name, vision_name):
            continue
        is_vision = name == vision_name
        if spec.shares_parameters:
            if is_vision:  # the vision name of a shared sub-layer repeats the text tensor
                conversion.alias(key, f"bert.encoder.layer.{n}.{text_name}.{leaf}")
            else:
                conversion.map(key, f"vl.encoder.sublayers.{n}.shared.{ours}.{leaf}")
            return
        stream = "vision" if is_vision else "text"
        conversion.map(key, f"vl.encoder.sublayers.{n}.{stream}.{ours}.{leaf}")
        return
    conversion.unknown.append(key)


# ---------------------------------------------------------------------------------------------- driver


def convert(checkpoint: str | Path, config_path: str | Path) -> tuple[VLForPreTraining, dict]:
    """Build the vl_zoo pretraining model of a release checkpoint and return it with the conversion report."""
    volta_config = json.loads(Path(config_path).read_text())
    config = config_from_volta(volta_config)
    source = load_state_dict(checkpoint)
    if source and all(key.startswith("module.") for key in source):
        source = {key[len("module.") :]: value for key, value in source.items()}

    conversion = convert_state_dict(source, config)
    model = ARCHITECTURES[config.model_type][2](config)
    hint = TASK_HEAD_HINT if any(key.startswith("clfs_dict.") for key in source) else ""
    state = conversion.check(model, hint)
    state = {key: value.to(torch.float32) if value.is_floating_point() else value for key, value in state.items()}
    model.load_state_dict(state, strict=False)
    _check_loaded(model, state)
    model.eval()

    report = {
        "source": {"checkpoint": str(checkpoint), "config": str(config_path)},
        "model_type": config.model_type,
        "release_compatibility": {
            key: getattr(config, key) for key in ("vl_bert_shared_text_positions", "vl_bert_visual_from_last_row")
        },
        "itm_head": "rows swapped: the release's index 0 (match) is vl_zoo's index 1",
        **conversion.report(),
    }
    return model, report


def _check_loaded(model: VLForPreTraining, state: dict[str, torch.Tensor]) -> None:
    """After loading, every converted tensor is in the model and the decoder is tied to the word embeddings."""
    loaded = model.state_dict()
    for key, value in state.items():
        if not torch.equal(loaded[key], value):
            raise ConversionError(f"{key} did not load")
    if model.mlm_head.decoder.weight.data_ptr() != model.vl.embeddings.word_embeddings.weight.data_ptr():
        raise ConversionError("the MLM decoder is not tied to the word embeddings after loading")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the release's torch.save'd state dict (.bin)")
    parser.add_argument("--config", required=True, help="the release's config JSON of that checkpoint")
    parser.add_argument("--output", required=True, help="folder to write config.json and model.safetensors into")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it is not empty")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    output = prepare_output_dir(args.output, args.overwrite)
    model, report = convert(args.checkpoint, args.config)
    save_atomically(model, output, report, args.overwrite)
    logger.info(
        "converted %d tensors (%d source keys dropped as aliases) into %s (%s); load it with "
        "AutoModelForPreTraining.from_pretrained(%r) after `import vl_zoo`",
        len(report["mapped"]),
        len(report["dropped"]),
        output,
        report["model_type"],
        str(output),
    )


if __name__ == "__main__":
    main()
