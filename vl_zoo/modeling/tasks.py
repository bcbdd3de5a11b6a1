"""Fine-tuning heads of the four tasks transformers has no Auto class for, built as the unified release builds them.

Visual question answering (VQAv2, GQA) is `VLForVisualQuestionAnswering` in model.py. The others:

- `VLForVisualReasoning` (NLVR2): the statement runs once with each image; the two pooled outputs, concatenated,
  go through Linear, GELU, LayerNorm, Linear to 2; binary cross-entropy on the one-hot label.
- `VLForVisualEntailment` (SNLI-VE): Linear(pooled -> 3); binary cross-entropy on the one-hot label.
- `VLForReferringExpressions` (RefCOCO, RefCOCO+, RefCOCOg): Linear(region state -> 1) per region, padded regions
  never win; binary cross-entropy against each region's IoU with the referred box, summed over real regions.
- `VLForImageTextRetrieval` (Flickr30k, COCO): Linear(pooled -> 1), a matching score; cross-entropy over the gold
  pair and its negatives (the release trains with 3).

Every pooled or region state passes through dropout (`hidden_dropout_prob`) before its head, as in the release.
Each class loads any vl_zoo checkpoint with `from_pretrained`: the backbone must fit exactly, a head the
checkpoint lacks is initialised (see `VLPreTrainedModel.from_pretrained`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration import VLConfig
from .heads import ClassifierMLP
from .losses import _upcast
from .model import VLForVisualQuestionAnswering, VLModel, VLPreTrainedModel, _check_label_shape
from .outputs import VLClassificationOutput, VLModelOutput

NLVR2_LABELS = ("False", "True")
# The order of vl_zoo's SNLI-VE rows (vl_zoo/data/tasks.py); the release's classifier has these rows reversed.
SNLI_VE_LABELS = ("entailment", "neutral", "contradiction")


class VLTaskModel(VLPreTrainedModel):
    """The backbone and the dropout every fine-tuning head reads through; subclasses add the head and its loss."""

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        self.vl = VLModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def _require_pooler(self, task: str) -> None:
        if not self.config.has_pooler:
            raise ValueError(f"{task} reads the pooled output, but fusion_method is 'none' (the model has no pooler)")

    def _encode(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        visual_feats: torch.Tensor | None,
        visual_pos: torch.Tensor | None,
        visual_attention_mask: torch.Tensor | None,
        output_hidden_states: bool | None,
        output_attentions: bool | None,
    ) -> VLModelOutput:
        return self.vl(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            visual_feats=visual_feats,
            visual_pos=visual_pos,
            visual_attention_mask=visual_attention_mask,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )

    def _output(
        self, loss: torch.Tensor | None, logits: torch.Tensor, backbone: VLModelOutput, return_dict: bool | None
    ) -> VLClassificationOutput | tuple:
        output = VLClassificationOutput(
            loss=loss,
            logits=logits,
            pooler_output=backbone.pooler_output,
            text_hidden_states=backbone.text_hidden_states,
            vision_hidden_states=backbone.vision_hidden_states,
            attentions=backbone.attentions,
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        return output if return_dict else output.to_tuple()


class VLForVisualReasoning(VLTaskModel):
    """NLVR2: is a statement true of a pair of images?

    The inputs hold two rows per example, (statement, left image) in row 2i and (statement, right image) in row
    2i + 1, as `NLVR2Collator` lays them out. `logits` (B, 2): index 1 means "true". `labels` (B,) are 0/1.
    """

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        self._require_pooler("visual reasoning")
        self.pair_classifier = ClassifierMLP(
            2 * config.pooler_size, config.clf_hidden_size, len(NLVR2_LABELS), config.layer_norm_eps
        )
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        visual_feats: torch.Tensor | None = None,
        visual_pos: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> VLClassificationOutput | tuple:
        if input_ids is not None and input_ids.shape[0] % 2:
            raise ValueError(
                f"input_ids has {input_ids.shape[0]} rows; visual reasoning takes two rows per example "
                "(statement with the left image, then with the right image)"
            )
        backbone = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            visual_feats,
            visual_pos,
            visual_attention_mask,
            output_hidden_states,
            output_attentions,
        )
        pooled = self.dropout(backbone.pooler_output)  # (2B, P)
        logits = self.pair_classifier(pooled.reshape(-1, 2 * pooled.shape[-1]))  # (B, 2)
        loss = None
        if labels is not None:
            _check_label_shape("labels", labels, logits.shape[:1], "(examples,) with 1 for a true statement")
            loss = one_hot_bce_loss(logits, labels)
        return self._output(loss, logits, backbone, return_dict)


class VLForVisualEntailment(VLTaskModel):
    """SNLI-VE: does the image entail, leave open or contradict a hypothesis?

    `logits` (B, 3) in the order of `SNLI_VE_LABELS` (0 entailment, 1 neutral, 2 contradiction); `labels` (B,).
    """

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        self._require_pooler("visual entailment")
        self.entailment_classifier = nn.Linear(config.pooler_size, len(SNLI_VE_LABELS))
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        visual_feats: torch.Tensor | None = None,
        visual_pos: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> VLClassificationOutput | tuple:
        backbone = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            visual_feats,
            visual_pos,
            visual_attention_mask,
            output_hidden_states,
            output_attentions,
        )
        logits = self.entailment_classifier(self.dropout(backbone.pooler_output))  # (B, 3)
        loss = None
        if labels is not None:
            _check_label_shape("labels", labels, logits.shape[:1], "(batch,) class ids 0, 1, 2")
            loss = one_hot_bce_loss(logits, labels)
        return self._output(loss, logits, backbone, return_dict)


class VLForReferringExpressions(VLTaskModel):
    """RefCOCO, RefCOCO+, RefCOCOg: which region does an expression refer to?

    `logits` (B, R): one score per region row (the global row included, as in the release); padded rows get the
    dtype's lowest value, so they are never picked. `region_targets` (B, R) is each row's IoU with the referred
    box (`RefCOCOCollator`); the loss is binary cross-entropy against it, summed over the real rows and averaged
    over examples, which is the release's mean over all rows times R with its padded rows contributing nothing.
    """

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        self.region_classifier = nn.Linear(config.v_hidden_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        visual_feats: torch.Tensor | None = None,
        visual_pos: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        region_targets: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> VLClassificationOutput | tuple:
        backbone = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            visual_feats,
            visual_pos,
            visual_attention_mask,
            output_hidden_states,
            output_attentions,
        )
        vision = self.dropout(backbone.vision_last_hidden_state)  # (B, R, Hv)
        logits = self.region_classifier(vision).squeeze(-1)  # (B, R)
        real = torch.ones_like(logits, dtype=torch.bool)
        if visual_attention_mask is not None:
            real = visual_attention_mask.to(logits.device).bool()
        logits = logits.masked_fill(~real, torch.finfo(logits.dtype).min)

        loss = None
        if region_targets is not None:
            _check_label_shape("region_targets", region_targets, logits.shape, "(batch, regions) IoU per region")
            logits32 = _upcast(logits)
            per_region = F.binary_cross_entropy_with_logits(
                logits32, region_targets.to(logits32.dtype), reduction="none"
            )
            loss = (per_region * real).sum() / logits.shape[0]
        return self._output(loss, logits, backbone, return_dict)


class VLForImageTextRetrieval(VLTaskModel):
    """Image-text retrieval (Flickr30k, COCO): how well does a text match an image?

    `logits` (N,) is one matching score per (text, image) row. With `labels` (B,) the N rows are read as B groups
    of N / B candidates (the gold pair and its negatives, as `RetrievalCollator` lays them out) and the loss is
    the cross-entropy of picking the labelled candidate, the release's 4-way training objective.
    """

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        self._require_pooler("image-text retrieval")
        self.matching_classifier = nn.Linear(config.pooler_size, 1)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        visual_feats: torch.Tensor | None = None,
        visual_pos: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> VLClassificationOutput | tuple:
        backbone = self._encode(
            input_ids,
            attention_mask,
            token_type_ids,
            visual_feats,
            visual_pos,
            visual_attention_mask,
            output_hidden_states,
            output_attentions,
        )
        logits = self.matching_classifier(self.dropout(backbone.pooler_output)).squeeze(-1)  # (N,)
        loss = None
        if labels is not None:
            if labels.ndim != 1 or labels.shape[0] == 0 or logits.shape[0] % labels.shape[0]:
                raise ValueError(
                    f"labels has shape {tuple(labels.shape)}; expected (groups,) dividing the {logits.shape[0]} "
                    "input rows into groups of candidates, each label the position of the matching pair"
                )
            candidates = _upcast(logits).reshape(labels.shape[0], -1)  # (B, 1 + negatives)
            loss = F.cross_entropy(candidates, labels.long())
        return self._output(loss, logits, backbone, return_dict)


def one_hot_bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of (B, C) logits against one-hot labels, averaged over all B x C entries.

    The release trains its two- and three-way classifiers (NLVR2, SNLI-VE) this way rather than with softmax
    cross-entropy.
    """
    logits = _upcast(logits)
    if labels.min() < 0 or labels.max() >= logits.shape[-1]:
        raise ValueError(f"labels must be class ids in [0, {logits.shape[-1]}), got {labels.tolist()}")
    targets = F.one_hot(labels.long(), logits.shape[-1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, targets)


# The model class of each fine-tuning task (VQA and GQA share the answer classifier).
TASK_MODEL_CLASSES: dict[str, type[VLPreTrainedModel]] = {
    "vqa": VLForVisualQuestionAnswering,
    "gqa": VLForVisualQuestionAnswering,
    "nlvr2": VLForVisualReasoning,
    "snli-ve": VLForVisualEntailment,
    "refcoco": VLForReferringExpressions,
    "retrieval": VLForImageTextRetrieval,
}
