"""The five architectures, and their registration with transformers' Auto classes."""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForVisualQuestionAnswering,
    AutoProcessor,
)

from ..configuration import VLConfig
from ..modeling.model import VLForPreTraining, VLForVisualQuestionAnswering, VLModel
from ..modeling.tasks import (
    TASK_MODEL_CLASSES,
    VLForImageTextRetrieval,
    VLForReferringExpressions,
    VLForVisualEntailment,
    VLForVisualReasoning,
)
from .lxmert import LxmertConfig, LxmertForPreTraining, LxmertForVisualQuestionAnswering, LxmertModel
from .uniter import UniterConfig, UniterForPreTraining, UniterForVisualQuestionAnswering, UniterModel
from .vilbert import ViLBertConfig, ViLBertForPreTraining, ViLBertForVisualQuestionAnswering, ViLBertModel
from .visual_bert import (
    VisualBertConfig,
    VisualBertForPreTraining,
    VisualBertForVisualQuestionAnswering,
    VisualBertModel,
)
from .vl_bert import VLBertConfig, VLBertForPreTraining, VLBertForVisualQuestionAnswering, VLBertModel

# model_type -> (config, backbone, pretraining, visual question answering)
ARCHITECTURES = {
    config.model_type: (config, model, pretraining, vqa)
    for config, model, pretraining, vqa in (
        (ViLBertConfig, ViLBertModel, ViLBertForPreTraining, ViLBertForVisualQuestionAnswering),
        (LxmertConfig, LxmertModel, LxmertForPreTraining, LxmertForVisualQuestionAnswering),
        (VLBertConfig, VLBertModel, VLBertForPreTraining, VLBertForVisualQuestionAnswering),
        (VisualBertConfig, VisualBertModel, VisualBertForPreTraining, VisualBertForVisualQuestionAnswering),
        (UniterConfig, UniterModel, UniterForPreTraining, UniterForVisualQuestionAnswering),
    )
}

# The fine-tuning classes shared by all architectures that transformers has no Auto class for.
TASK_HEAD_CLASSES = (VLForVisualReasoning, VLForVisualEntailment, VLForReferringExpressions, VLForImageTextRetrieval)


def _bind(shared: type, config: type[VLConfig]) -> type:
    """The architecture's subclass of a shared model class: it differs only in `config_class`."""
    name = config.__name__.removesuffix("Config") + shared.__name__.removeprefix("VL")
    namespace = {"config_class": config, "__module__": __name__, "__qualname__": name}
    return type(name, (shared,), namespace | {"__doc__": f"{shared.__name__} for {config.model_type}."})


# model_type -> shared class -> that architecture's subclass, for every class a checkpoint loads into.
ARCHITECTURE_CLASSES: dict[str, dict[type, type]] = {
    model_type: {VLModel: model, VLForPreTraining: pretraining, VLForVisualQuestionAnswering: vqa}
    | {shared: _bind(shared, config) for shared in TASK_HEAD_CLASSES}
    for model_type, (config, model, pretraining, vqa) in ARCHITECTURES.items()
}
# The task subclasses as names of this module (UniterForVisualEntailment, ...), so they import and pickle.
globals().update(
    {bound.__name__: bound for by_shared in ARCHITECTURE_CLASSES.values() for bound in by_shared.values()}
)

# The release's `image_embeddings` names, mapped to the architecture that owns each.
MODEL_TYPE_BY_EMBEDDING = {entry[0].image_embeddings: model_type for model_type, entry in ARCHITECTURES.items()}


def register_auto_classes() -> None:
    """Register the five architectures with AutoConfig, the three Auto model classes and AutoProcessor."""
    from ..processing import VLProcessor

    for model_type, (config, model, pretraining, vqa) in ARCHITECTURES.items():
        AutoConfig.register(model_type, config, exist_ok=True)
        AutoModel.register(config, model, exist_ok=True)
        AutoModelForPreTraining.register(config, pretraining, exist_ok=True)
        AutoModelForVisualQuestionAnswering.register(config, vqa, exist_ok=True)
        AutoProcessor.register(config, VLProcessor, exist_ok=True)


def architecture_class(model_type: str, shared: type) -> type:
    """The subclass of a shared model class (VLModel, VLForVisualEntailment, ...) bound to `model_type`'s config."""
    config_class_for(model_type)
    if shared not in ARCHITECTURE_CLASSES[model_type]:
        known = sorted(cls.__name__ for cls in ARCHITECTURE_CLASSES[model_type])
        raise ValueError(f"{shared.__name__} is not a shared vl_zoo model class; allowed: {known}")
    return ARCHITECTURE_CLASSES[model_type][shared]


def task_model_class(model_type: str, task: str) -> type:
    """The class of `model_type` that fine-tunes for `task` (one of the six downstream tasks)."""
    if task not in TASK_MODEL_CLASSES:
        raise ValueError(f"task={task!r} is not a fine-tuning task; allowed: {sorted(TASK_MODEL_CLASSES)}")
    return architecture_class(model_type, TASK_MODEL_CLASSES[task])


def config_class_for(model_type: str) -> type[VLConfig]:
    """The config class of a vl_zoo `model_type`, with a clear error for anything else."""
    if model_type not in ARCHITECTURES:
        raise ValueError(f"model_type={model_type!r} is not a vl_zoo architecture; allowed: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[model_type][0]


def list_presets() -> dict[str, list[str]]:
    """The named presets of each architecture."""
    return {model_type: sorted(entry[0].presets) for model_type, entry in ARCHITECTURES.items()}


def config_from_preset(model_type: str, preset: str = "ctrl", **overrides) -> VLConfig:
    """`config_class_for(model_type).from_preset(preset, **overrides)`."""
    return config_class_for(model_type).from_preset(preset, **overrides)
