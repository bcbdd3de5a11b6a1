"""vl_zoo: ViLBERT, LXMERT, VL-BERT, VisualBERT and UNITER as transformers models on one unified encoder.

Importing the package registers the five architectures with `AutoConfig`, `AutoModel`,
`AutoModelForPreTraining`, `AutoModelForVisualQuestionAnswering` and `AutoProcessor`. The fine-tuning tasks
transformers has no Auto class for load through the shared classes (`VLForVisualReasoning`,
`VLForVisualEntailment`, `VLForReferringExpressions`, `VLForImageTextRetrieval`), whose `from_pretrained` returns
the saved architecture's subclass; `task_model_class(model_type, task)` names the class of each task.
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
from .modeling.tasks import (
    TASK_MODEL_CLASSES,
    VLForImageTextRetrieval,
    VLForReferringExpressions,
    VLForVisualEntailment,
    VLForVisualReasoning,
)
from .models import (
    ARCHITECTURE_CLASSES,
    ARCHITECTURES,
    architecture_class,
    config_class_for,
    config_from_preset,
    list_presets,
    register_auto_classes,
    task_model_class,
)
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
    "ARCHITECTURE_CLASSES",
    "LxmertConfig",
    "LxmertForPreTraining",
    "LxmertForVisualQuestionAnswering",
    "LxmertModel",
    "RegionFeatureProcessor",
    "TASK_MODEL_CLASSES",
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
    "VLForImageTextRetrieval",
    "VLForPreTrainingOutput",
    "VLForReferringExpressions",
    "VLForVisualEntailment",
    "VLForVisualQuestionAnswering",
    "VLForVisualReasoning",
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
    "architecture_class",
    "config_class_for",
    "config_from_preset",
    "list_presets",
    "register_auto_classes",
    "task_model_class",
]
