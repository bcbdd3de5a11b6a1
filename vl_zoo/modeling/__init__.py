"""Model building blocks: embeddings, the unified encoder, heads, losses and the shared model classes."""

from .model import VLForPreTraining, VLForVisualQuestionAnswering, VLModel, VLPreTrainedModel
from .outputs import VLClassificationOutput, VLForPreTrainingOutput, VLModelOutput

__all__ = [
    "VLClassificationOutput",
    "VLForPreTraining",
    "VLForPreTrainingOutput",
    "VLForVisualQuestionAnswering",
    "VLModel",
    "VLModelOutput",
    "VLPreTrainedModel",
]
