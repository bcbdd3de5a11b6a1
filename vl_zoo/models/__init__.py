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
