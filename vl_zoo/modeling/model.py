"""The model classes every architecture shares: the backbone, pretraining, and visual question answering.

The five architectures in vl_zoo/models/ subclass these only to bind their config class (transformers' Auto
classes look a model up by its config class); all behaviour lives here.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init

from ..configuration import VLConfig
from .embeddings import EMBEDDING_CLASSES, VLBertEmbeddings
from .encoder import AttentionMasks, VLEncoder
from .heads import ClassifierMLP, MaskedLMHead, RegionHead, VLPooler
from .inputs import check_inputs
from .losses import answer_loss, masked_lm_loss, matching_loss, region_loss, soft_score_loss
from .outputs import VLClassificationOutput, VLForPreTrainingOutput, VLModelOutput

logger = logging.getLogger(__name__)


class VLPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the capabilities transformers asks a model class about."""

    config_class = VLConfig
    base_model_prefix = "vl"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["AttentionSublayer", "FeedForwardSublayer"]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' `from_pretrained`, refusing a checkpoint that does not fit instead of initialising.

        A head the checkpoint lacks entirely (a task head on a pretrained backbone) is initialised, as fine-tuning
        needs. A backbone key that is missing or unexpected, a head that is filled only in part, or a shape that
        does not fit raises RuntimeError naming the keys.
        """
        if cls.config_class is VLConfig and kwargs.get("config") is None:
            # A shared class (VLModel, VLForVisualEntailment, ...) loads as the saved architecture's subclass, so
            # that the config is that architecture's and saves its model_type again.
            from ..models import architecture_class

            model_type = _saved_model_type(pretrained_model_name_or_path, kwargs)
            return architecture_class(model_type, cls).from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        check_loading_info(model, info, str(pretrained_model_name_or_path))
        return (model, info) if want_info else model

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation (normal 0.02, LayerNorm 1/0); VL-BERT's visual LayerNorms start at zero."""
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, MaskedLMHead):
            init.zeros_(module.bias)
        elif isinstance(module, VLBertEmbeddings):
            # VL-BERT lets vision in gradually: its visual LayerNorms start with zero gain, the mask feature at 0.
            init.zeros_(module.region_mask_embedding)
            init.zeros_(module.text_visual_layer_norm.weight)
            init.zeros_(module.object_visual_layer_norm.weight)
            for embedding in (module.object_embedding, module.end_embedding, module.masked_object_embedding):
                if embedding is not None:
                    init.normal_(embedding, mean=0.0, std=std)


class VLModel(VLPreTrainedModel):
    """Embeddings, the unified encoder and the pooler. Returns `VLModelOutput`."""

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        self.embeddings = EMBEDDING_CLASSES[config.image_embeddings](config)
        self.encoder = VLEncoder(config)
        self.pooler = VLPooler(config) if config.has_pooler else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        visual_feats: torch.Tensor | None = None,
        visual_pos: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> VLModelOutput | tuple:
        """Encode a batch of texts with their regions.

        Args:
            input_ids: (B, T) token ids; attention_mask (B, T) 1 for real tokens; token_type_ids (B, T).
            visual_feats: (B, R, F) region features, with the global row where the config puts it.
            visual_pos: (B, R, 5) boxes as (x1/W, y1/H, x2/W, y2/H, area/(W*H)), all in [0, 1].
            visual_attention_mask: (B, R) 1 for a real region, 0 for padding.
            output_hidden_states: also return every sub-layer's output per stream.
            output_attentions: also return attention probabilities (computed with eager attention).
        """
        output_hidden_states = output_hidden_states or self.config.output_hidden_states
        output_attentions = output_attentions or self.config.output_attentions
        return_dict = self.config.return_dict if return_dict is None else return_dict
        inputs = check_inputs(
            self.config, input_ids, attention_mask, token_type_ids, visual_feats, visual_pos, visual_attention_mask
        )

        text, vision = self.embeddings(
            inputs.input_ids,
            inputs.token_type_ids,
            inputs.visual_feats,
            inputs.visual_pos,
            inputs.attention_mask,
            inputs.visual_attention_mask,
        )
        implementation = "eager" if output_attentions else (self.config._attn_implementation or "sdpa")
        masks = AttentionMasks.build(inputs.attention_mask, inputs.visual_attention_mask, text.dtype, implementation)
        text, vision, text_states, vision_states, attentions = self.encoder(
            text, vision, masks, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )

        pooled = pooled_text = pooled_vision = None
        if self.pooler is not None:
            pooled, pooled_text, pooled_vision = self.pooler(text, vision, inputs.visual_attention_mask)
        output = VLModelOutput(
            text_last_hidden_state=text,
            vision_last_hidden_state=vision,
            pooler_output=pooled,
            text_pooler_output=pooled_text,
            vision_pooler_output=pooled_vision,
            text_hidden_states=text_states,
            vision_hidden_states=vision_states,
            attentions=attentions,
        )
        return output if return_dict else output.to_tuple()


class VLForPreTraining(VLPreTrainedModel):
    """The backbone with masked word, masked region and image-text matching heads (and LXMERT's answer head).

    `loss` is the weighted sum of the objectives whose labels are given: masked words (`mlm_weight`), each
    active region target (`visual_target_weights`), matching (`itm_weight`) and answers (`qa_task_weight`).
    """

    _tied_weights_keys = {"mlm_head.decoder.weight": "vl.embeddings.word_embeddings.weight"}

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        self.vl = VLModel(config)
        self.mlm_head = MaskedLMHead(config)
        self.region_head = RegionHead(config) if config.active_region_targets else None
        self.itm_head = nn.Linear(config.pooler_size, 2) if config.has_pooler else None
        self.answer_head = None
        if config.qa_num_answers > 0:
            self.answer_head = ClassifierMLP(
                config.pooler_size, 2 * config.pooler_size, config.qa_num_answers, config.layer_norm_eps
            )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.mlm_head.decoder = value

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        visual_feats: torch.Tensor | None = None,
        visual_pos: torch.Tensor | None = None,
        visual_attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        region_targets: torch.Tensor | dict | None = None,
        region_mask: torch.Tensor | None = None,
        itm_labels: torch.Tensor | None = None,
        answer_labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> VLForPreTrainingOutput | tuple:
        """Run the heads; with labels, also the losses.

        Args:
            labels: (B, T) masked word ids, -100 where a word is not predicted.
            region_targets: the targets of the masked regions, (B, R, C) when one region target is active, or a
                dict by release id ("0": (B, R, 1601) class distribution; "1"/"5": (B, R, F) features;
                "3"/"4"/"6": (B, R) class ids or a pair (class ids, confidences)). R counts every region row,
                the global one included.
            region_mask: (B, R) 1 where a region was masked and is predicted.
            itm_labels: (B,) 1 when the text matches the image, 0 otherwise.
            answer_labels: (B,) answer ids for LXMERT's pretraining question answering, -100 ignored.
        """
        return_dict = self.config.return_dict if return_dict is None else return_dict
        backbone = self.vl(
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
        heads = self._heads(backbone)
        losses = self._losses(heads, labels, region_targets, region_mask, itm_labels, answer_labels)
        by_target = heads["region_logits_by_target"]
        region_logits = None if by_target is None else next(iter(by_target.values()))
        output = VLForPreTrainingOutput(**losses, **heads, region_logits=region_logits, **dict(backbone.items()))
        return output if return_dict else output.to_tuple()

    def _heads(self, backbone: VLModelOutput) -> dict[str, torch.Tensor | dict | None]:
        """Every head's logits; the pooled heads read the fused pooled output after dropout."""
        pooled = None if backbone.pooler_output is None else self.dropout(backbone.pooler_output)
        vision = backbone.vision_last_hidden_state
        return {
            "mlm_logits": self.mlm_head(backbone.text_last_hidden_state),
            "region_logits_by_target": self.region_head(vision) if self.region_head is not None else None,
            "itm_logits": self.itm_head(pooled) if self.itm_head is not None else None,
            "answer_logits": self.answer_head(pooled) if self.answer_head is not None else None,
        }

    def _losses(
        self,
        heads: dict,
        labels: torch.Tensor | None,
        region_targets: torch.Tensor | dict | None,
        region_mask: torch.Tensor | None,
        itm_labels: torch.Tensor | None,
        answer_labels: torch.Tensor | None,
    ) -> dict[str, torch.Tensor | None]:
        """The loss of each objective whose labels were given, and their weighted sum as `loss`."""
        config = self.config
        parts: dict[str, torch.Tensor | None] = {}
        weighted = []
        if labels is not None:
            _check_label_shape("labels", labels, heads["mlm_logits"].shape[:2], "(batch, text length)")
            parts["mlm_loss"] = masked_lm_loss(heads["mlm_logits"], labels)
            weighted.append(config.mlm_weight * parts["mlm_loss"])
        if region_targets is not None or region_mask is not None:
            parts["region_loss"] = self._region_loss(heads["region_logits_by_target"], region_targets, region_mask)
            weighted.append(parts["region_loss"])
        if itm_labels is not None:
            if heads["itm_logits"] is None:
                raise ValueError(
                    "itm_labels were given, but this model has no matching head (fusion_method is 'none')"
                )
            _check_label_shape("itm_labels", itm_labels, heads["itm_logits"].shape[:1], "(batch,)")
            parts["itm_loss"] = matching_loss(heads["itm_logits"], itm_labels)
            weighted.append(config.itm_weight * parts["itm_loss"])
        if answer_labels is not None:
            if heads["answer_logits"] is None:
                raise ValueError("answer_labels were given, but this model has no answer head (qa_num_answers is 0)")
            parts["answer_loss"] = answer_loss(heads["answer_logits"], answer_labels)
            weighted.append(config.qa_task_weight * parts["answer_loss"])
        parts["loss"] = torch.stack(weighted).sum() if weighted else None
        return parts

    def _region_loss(self, by_target, region_targets, region_mask) -> torch.Tensor:
        if by_target is None:
            raise ValueError(
                "region_targets were given, but this model has no masked-region target (visual_target_weights)"
            )
        if region_targets is None or region_mask is None:
            raise ValueError("region_targets and region_mask go together; only one of them was given")
        if not isinstance(region_targets, dict):
            if len(by_target) != 1:
                raise ValueError(
                    f"this model predicts region targets {sorted(by_target)}; pass region_targets as a dict by id"
                )
            region_targets = {next(iter(by_target)): region_targets}
        unknown = sorted(set(region_targets) - set(by_target))
        if unknown:
            raise ValueError(f"region_targets has ids {unknown}; this model predicts {sorted(by_target)}")
        _check_label_shape("region_mask", region_mask, next(iter(by_target.values())).shape[:2], "(batch, regions)")
        total = 0.0
        for target_id, target in region_targets.items():
            weight = self.config.active_region_targets[target_id]
            total = total + weight * region_loss(target_id, by_target[target_id], target, region_mask)
        return total


class VLForVisualQuestionAnswering(VLPreTrainedModel):
    """Answer classification over the fused pooled output, trained on soft answer scores (VQAv2, GQA).

    `labels` are (B, num_labels) soft scores in [0, 1]; the loss is binary cross-entropy scaled by the number
    of answers, as the release trains VQA. The answer vocabulary is `config.id2label`.
    """

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        if not config.has_pooler:
            raise ValueError("visual question answering reads the pooled output, but fusion_method is 'none'")
        self.vl = VLModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = ClassifierMLP(
            config.pooler_size, config.clf_hidden_size, config.num_labels, config.layer_norm_eps
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
        return_dict = self.config.return_dict if return_dict is None else return_dict
        backbone = self.vl(
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
        logits = self.classifier(self.dropout(backbone.pooler_output))
        loss = None
        if labels is not None:
            _check_label_shape("labels", labels, logits.shape, "(batch, num_labels) soft answer scores")
            loss = soft_score_loss(logits, labels)
        output = VLClassificationOutput(
            loss=loss,
            logits=logits,
            pooler_output=backbone.pooler_output,
            text_hidden_states=backbone.text_hidden_states,
            vision_hidden_states=backbone.vision_hidden_states,
            attentions=backbone.attentions,
        )
        return output if return_dict else output.to_tuple()


BACKBONE_PARTS = ("embeddings.", "encoder.", "pooler.")


def check_loading_info(model: PreTrainedModel, info: dict, source: str) -> None:
    """Raise RuntimeError when a loaded checkpoint leaves backbone keys unfilled or unused, or fills a head in part."""

    def is_backbone(key: str) -> bool:
        return key.removeprefix("vl.").startswith(BACKBONE_PARTS)

    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    problems = []
    if info["mismatched_keys"]:
        problems.append(f"shapes that do not fit: {sorted(info['mismatched_keys'])}")
    if bad := [key for key in missing if is_backbone(key)]:
        problems.append(f"backbone keys missing from the checkpoint: {bad}")
    if bad := [key for key in unexpected if is_backbone(key)]:
        problems.append(f"backbone keys in the checkpoint that the model does not have: {bad}")
    new_heads = {key.split(".")[0] for key in missing if not is_backbone(key)}
    present = set(model.state_dict()) - set(missing)
    if partial := sorted(head for head in new_heads if any(key.startswith(head + ".") for key in present)):
        problems.append(f"heads filled only in part: {partial} (missing {[k for k in missing if not is_backbone(k)]})")
    if problems:
        raise RuntimeError(
            f"the checkpoint at {source} does not fit {type(model).__name__} ({model.config.model_type}):\n  "
            + "\n  ".join(problems)
        )
    for head in sorted(new_heads):
        logger.info("%s: the checkpoint has no %s; it is newly initialised", type(model).__name__, head)


# from_pretrained arguments that say where config.json is, as transformers' config loading reads them.
_CONFIG_LOCATION_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder")


def _saved_model_type(pretrained_model_name_or_path, kwargs: dict) -> str:
    """The model_type in the config.json of a checkpoint folder or Hub id."""
    location = {key: kwargs[key] for key in _CONFIG_LOCATION_KWARGS if key in kwargs}
    config_dict, _ = PreTrainedConfig.get_config_dict(pretrained_model_name_or_path, **location)
    return str(config_dict.get("model_type"))


def _check_label_shape(name: str, tensor: torch.Tensor, expected: torch.Size, meaning: str) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {meaning} = {tuple(expected)}")
