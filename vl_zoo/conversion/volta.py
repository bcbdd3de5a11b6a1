"""Convert a checkpoint of the unified-framework release (e-bug/volta) and its config JSON into a vl_zoo model.

The release saves `BertForVLPreTraining.state_dict()` with `torch.save`: tied tensors (the MLM decoder, the
text and vision names of a shared sub-layer, UNITER's image token-type table) appear under every name. Each
such alias is checked to equal its canonical tensor and dropped; every other key is renamed; the image-text
matching classifier swaps its two rows, since the release calls a match 0 and vl_zoo calls it 1.

A fine-tuned task checkpoint of the release (`BertForVLTasks.state_dict()`: the backbone under `bert.*` and
one head per task under `clfs_dict.TASK<id>.*`, no pretraining heads) converts into the task's vl_zoo class
(`VLForVisualQuestionAnswering`, `VLForVisualReasoning`, ...), its task recorded as `config.finetuning_task`.
The release's task ids (its `config_tasks/*.yml`) say which task a head is; `--task` names it for other ids.

Usage:
    python conversion/convert_volta.py --checkpoint pytorch_model_9.bin --config ctrl_vilbert_base.json --output DIR
    python conversion/convert_volta.py --checkpoint VQA_ctrl_uniter_base/pytorch_model_19.bin \
        --config ctrl_uniter_base.json --labels vqa_answers.json --output DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from ..configuration import VLConfig
from ..data.tasks import AnswerVocabulary
from ..modeling.tasks import NLVR2_LABELS, SNLI_VE_LABELS
from ..models import ARCHITECTURES, MODEL_TYPE_BY_EMBEDDING, task_model_class
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
# The release's task ids (config_tasks/*.yml) of the six fine-tuning tasks.
RELEASE_TASK_IDS = {
    "1": "vqa",
    "15": "gqa",
    "12": "nlvr2",
    "13": "snli-ve",
    "9": "refcoco",
    "10": "refcoco",
    "11": "refcoco",
    "7": "retrieval",
    "8": "retrieval",
}
_ANSWER_HEAD = {"logit_fc.0": "dense", "logit_fc.2": "layer_norm", "logit_fc.3": "decoder"}
# Each task's head: the release's module under clfs_dict.TASK<id> ("" for a bare Linear) -> the vl_zoo module.
TASK_HEADS: dict[str, dict[str, str]] = {
    "vqa": {module: f"classifier.{ours}" for module, ours in _ANSWER_HEAD.items()},
    "gqa": {module: f"classifier.{ours}" for module, ours in _ANSWER_HEAD.items()},
    "nlvr2": {module: f"pair_classifier.{ours}" for module, ours in _ANSWER_HEAD.items()},
    "snli-ve": {"": "entailment_classifier"},
    "refcoco": {"": "region_classifier"},
    "retrieval": {"": "matching_classifier"},
}
TASK_KEY = re.compile(r"^clfs_dict\.TASK(\w+?)\.(?:(.+)\.)?(weight|bias)$")


@dataclass(frozen=True)
class ReleaseTask:
    """Which head of a release task checkpoint is converted (`TASK<task_id>`), and which vl_zoo task it is."""

    task_id: str
    task: str

    def hint(self) -> str:
        expected = sorted(f"clfs_dict.TASK{self.task_id}.{module}".rstrip(".") for module in TASK_HEADS[self.task])
        return (
            f"\n  (the checkpoint is a fine-tuned task model of the release, its head TASK{self.task_id} converted as "
            f"{self.task!r}: it should hold the backbone bert.* and that head's weight and bias under {expected}; "
            "a task model holds no pretraining heads cls.*)"
        )


def find_release_task(
    source: dict[str, torch.Tensor], task_id: str | None = None, task: str | None = None
) -> ReleaseTask | None:
    """The task head to convert from a release checkpoint, or None for a pretraining checkpoint (no clfs_dict.*)."""
    found = sorted({match.group(1) for key in source if (match := TASK_KEY.match(key))}, key=str)
    if not found and not any(key.startswith("clfs_dict.") for key in source):
        if task_id is not None or task is not None:
            raise ConversionError("task_id / task were given, but the checkpoint has no task heads (clfs_dict.*)")
        return None
    if task_id is None:
        if len(found) != 1:
            heads = [f"TASK{i}" for i in found]
            raise ConversionError(f"the checkpoint holds the heads {heads}; pass task_id (--task-id) to pick one")
        task_id = found[0]
    task_id = str(task_id).removeprefix("TASK")
    if task_id not in found:
        raise ConversionError(f"task_id {task_id!r}: the checkpoint has heads {[f'TASK{i}' for i in found]} only")
    task = task or RELEASE_TASK_IDS.get(task_id)
    if task not in TASK_HEADS:
        raise ConversionError(
            f"TASK{task_id} is not one of the release's ids of the six tasks ({RELEASE_TASK_IDS}); pass task "
            f"(--task) to say which kind of head it is, one of {sorted(TASK_HEADS)}"
        )
    return ReleaseTask(task_id, task)


def convert_state_dict(
    source: dict[str, torch.Tensor], config: VLConfig, release_task: ReleaseTask | None = None
) -> StateDictConversion:
    """Decide, for every key of a release state dict, which vl_zoo key it fills or why it is dropped.

    `release_task` names the task head to convert from a fine-tuned checkpoint (see `find_release_task`).
    """
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
        elif (match := TASK_KEY.match(key)) and release_task is not None:
            _convert_task_key(conversion, key, release_task, match)
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


def _convert_task_key(conversion: StateDictConversion, key: str, release_task: ReleaseTask, match: re.Match) -> None:
    """A key of the chosen task head is renamed (SNLI-VE's rows reversed); other tasks' heads are dropped."""
    task_id, module, leaf = match.group(1), match.group(2) or "", match.group(3)
    if task_id != release_task.task_id:
        conversion.drop(
            key, f"head of the release task TASK{task_id}; the conversion keeps TASK{release_task.task_id}"
        )
        return
    heads = TASK_HEADS[release_task.task]
    if module not in heads:
        conversion.unknown.append(key)
        return
    # The release numbers SNLI-VE's classes contradiction 0, neutral 1, entailment 2; vl_zoo the other way round.
    transform = (lambda t: t.flip(0)) if release_task.task == "snli-ve" else None
    conversion.map(key, f"{heads[module]}.{leaf}", transform)


def _task_config(
    config: VLConfig, release_task: ReleaseTask, source: dict[str, torch.Tensor], labels: list[str] | None
) -> None:
    """Record the task on the config, with the class names of its head."""
    config.finetuning_task = release_task.task
    names: list[str] | None = None
    if release_task.task in ("vqa", "gqa"):
        decoder = source.get(f"clfs_dict.TASK{release_task.task_id}.logit_fc.3.weight")
        size = decoder.shape[0] if decoder is not None else len(labels or [])
        if labels is not None and len(labels) != size:
            raise ConversionError(f"labels has {len(labels)} answers, but the checkpoint's answer head has {size}")
        names = labels or [f"LABEL_{index}" for index in range(size)]
    elif labels is not None:
        raise ConversionError(f"labels name the answers of a vqa or gqa head, not of a {release_task.task} head")
    elif release_task.task == "nlvr2":
        names = list(NLVR2_LABELS)
    elif release_task.task == "snli-ve":
        names = list(SNLI_VE_LABELS)
    if names:
        config.id2label = dict(enumerate(names))
        config.label2id = {name: index for index, name in enumerate(names)}


# ---------------------------------------------------------------------------------------------- driver


def convert(
    checkpoint: str | Path,
    config_path: str | Path,
    task_id: str | None = None,
    task: str | None = None,
    labels: list[str] | None = None,
) -> tuple[PreTrainedModel, dict]:
    """Build the vl_zoo model of a release checkpoint and return it with the conversion report.

    Args:
        checkpoint: a pretraining checkpoint (-> the architecture's `...ForPreTraining`) or a fine-tuned task
            checkpoint (-> the task's class).
        config_path: the release's config JSON of that checkpoint.
        task_id: which head of a task checkpoint holding several (`TASK<id>` or `<id>`).
        task: the vl_zoo task of that head, for task ids outside `RELEASE_TASK_IDS`.
        labels: the answers of a VQA or GQA head in class order (the release keeps them apart from the checkpoint,
            in its `*_label2ans.pkl`); without them the classes are named LABEL_0, LABEL_1, ...
    """
    volta_config = json.loads(Path(config_path).read_text())
    config = config_from_volta(volta_config)
    source = load_state_dict(checkpoint)
    if source and all(key.startswith("module.") for key in source):
        source = {key[len("module.") :]: value for key, value in source.items()}
    release_task = find_release_task(source, task_id, task)

    conversion = convert_state_dict(source, config, release_task)
    if release_task is None:
        model = ARCHITECTURES[config.model_type][2](config)
    else:
        _task_config(config, release_task, source, labels)
        model = task_model_class(config.model_type, release_task.task)(config)
    state = conversion.check(model, release_task.hint() if release_task else "")
    state = {key: value.to(torch.float32) if value.is_floating_point() else value for key, value in state.items()}
    model.load_state_dict(state, strict=False)
    _check_loaded(model, state)
    model.eval()

    report = {
        "source": {"checkpoint": str(checkpoint), "config": str(config_path)},
        "model_type": config.model_type,
        "model_class": type(model).__name__,
        "release_compatibility": {
            key: getattr(config, key) for key in ("vl_bert_shared_text_positions", "vl_bert_visual_from_last_row")
        },
        **_head_notes(release_task),
        **conversion.report(),
    }
    return model, report


def _head_notes(release_task: ReleaseTask | None) -> dict[str, str]:
    """What the report says about the converted head."""
    if release_task is None:
        return {"itm_head": "rows swapped: the release's index 0 (match) is vl_zoo's index 1"}
    notes = {"task": release_task.task, "release_task": f"TASK{release_task.task_id}"}
    if release_task.task == "snli-ve":
        notes["task_head"] = "rows reversed: the release's classes are contradiction, neutral, entailment"
    return notes


def _check_loaded(model: PreTrainedModel, state: dict[str, torch.Tensor]) -> None:
    """After loading, every converted tensor is in the model and any MLM decoder is tied to the word embeddings."""
    loaded = model.state_dict()
    for key, value in state.items():
        if not torch.equal(loaded[key], value):
            raise ConversionError(f"{key} did not load")
    decoder = getattr(getattr(model, "mlm_head", None), "decoder", None)
    if decoder is not None and decoder.weight.data_ptr() != model.vl.embeddings.word_embeddings.weight.data_ptr():
        raise ConversionError("the MLM decoder is not tied to the word embeddings after loading")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="the release's torch.save'd state dict (.bin)")
    parser.add_argument("--config", required=True, help="the release's config JSON of that checkpoint")
    parser.add_argument("--output", required=True, help="folder to write config.json and model.safetensors into")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it is not empty")
    parser.add_argument("--task-id", default=None, help="the head to convert when a task checkpoint holds several")
    parser.add_argument("--task", default=None, choices=sorted(TASK_HEADS), help="the task of a head (other ids)")
    parser.add_argument("--labels", default=None, help="JSON list of a VQA/GQA head's answers, in class order")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    output = prepare_output_dir(args.output, args.overwrite)
    labels = AnswerVocabulary.load(args.labels).answers if args.labels else None
    model, report = convert(args.checkpoint, args.config, args.task_id, args.task, labels)
    save_atomically(model, output, report, args.overwrite)
    shared = type(model).__mro__[1].__name__
    logger.info(
        "converted %d tensors (%d source keys dropped) into %s (%s); load it with "
        "vl_zoo.%s.from_pretrained(%r) after `import vl_zoo`",
        len(report["mapped"]),
        len(report["dropped"]),
        output,
        report["model_class"],
        shared,
        str(output),
    )


if __name__ == "__main__":
    main()
