"""vl_zoo: ViLBERT, LXMERT, VL-BERT, VisualBERT and UNITER as transformers models on one unified encoder.

Importing the package registers the five architectures with `AutoConfig`, `AutoModel`,
`AutoModelForPreTraining`, `AutoModelForVisualQuestionAnswering` and `AutoProcessor`.
"""

from .configuration import VLConfig
from .modeling import (
    VLClassificationOutput,
    VLForPreTraining,
    VLForPreTrainingOutput,
    VLForVisualQuestionAnswering,
    VLModel,
    VLModelOutput,
    VLPreTrainedModel,
)
from .models import ARCHITECTURES, config_class_for, config_from_preset, list_presets, register_auto_classes
from .models.lxmert import LxmertConfig, LxmertForPreTraining, LxmertForVisualQuestionAnswering, LxmertModel
from .models.uniter import UniterConfig, UniterForPreTraining, UniterForVisualQuestionAnswering, UniterModel
from .models.vilbert import ViLBertConfig, ViLBertForPreTraining, ViLBertForVisualQuestionAnswering, ViLBertModel
from .models.visual_bert import (
    VisualBertConfig,
    VisualBertForPreTraining,
    VisualBertForVisualQuestionAnswering,
    VisualBertModel,
)
from .models.vl_bert import VLBertConfig, VLBertForPreTraining, VLBertForVisualQuestionAnswering, VLBertModel
from .processing import RegionFeatureProcessor, VLProcessor

__version__ = "0.1.0"

register_auto_classes()

__all__ = [
    "ARCHITECTURES",
    "LxmertConfig",
    "LxmertForPreTraining",
    "LxmertForVisualQuestionAnswering",
    "LxmertModel",
    "RegionFeatureProcessor",
    "UniterConfig",
    "UniterForPreTraining",
    "UniterForVisualQuestionAnswering",
    "UniterModel",
    "VLBertConfig",
    "VLBertForPreTraining",
    "VLBertForVisualQuestionAnswering",
    "VLBertModel",
    "VLClassificationOutput",
    "VLConfig",
    "VLForPreTraining",
    "VLForPreTrainingOutput",
    "VLForVisualQuestionAnswering",
    "VLModel",
    "VLModelOutput",
    "VLPreTrainedModel",
    "VLProcessor",
    "ViLBertConfig",
    "ViLBertForPreTraining",
    "ViLBertForVisualQuestionAnswering",
    "ViLBertModel",
    "VisualBertConfig",
    "VisualBertForPreTraining",
    "VisualBertForVisualQuestionAnswering",
    "VisualBertModel",
    "config_class_for",
    "config_from_preset",
    "list_presets",
    "register_auto_classes",
]
