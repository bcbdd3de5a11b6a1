"""The five embedding kinds: how text ids and regions (features + boxes) become the two input streams.

Every kind embeds text as BERT does (word + position + token type, LayerNorm) and differs in how regions are
embedded; VL-BERT also mixes a visual feature into each text token. All kinds take the canonical box code
`visual_pos` = (x1/W, y1/H, x2/W, y2/H, area/(W*H)) and derive what they need from it (`box_code`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..configuration import VLConfig


def box_code(visual_pos: torch.Tensor, num_locs: int) -> torch.Tensor:
    """The box vector a model's location embedding reads: 4-d corners, the 5-d code, or UNITER's 7-d code."""
    if num_locs == 4:
        return visual_pos[..., :4]
    if num_locs == 5:
        return visual_pos
    width = visual_pos[..., 2:3] - visual_pos[..., 0:1]
    height = visual_pos[..., 3:4] - visual_pos[..., 1:2]
    return torch.cat([visual_pos[..., :4], width, height, visual_pos[..., 4:5]], dim=-1)  # (B, R, 7)


def sincos_box_geometry(visual_pos: torch.Tensor, dim: int) -> torch.Tensor:
    """VL-BERT's box code: centre, width and height (in percent) through `dim` sin and cos frequencies each.

    Returns (B, R, 8 * dim), laid out per coordinate as [sin(dim values), cos(dim values)].
    """
    x1, y1, x2, y2 = visual_pos[..., :4].unbind(-1)
    geometry = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1) * 100  # (B, R, 4)
    frequencies = 1000 ** (torch.arange(dim, dtype=visual_pos.dtype, device=visual_pos.device) / dim)
    angles = geometry.unsqueeze(-1) / frequencies  # (B, R, 4, dim)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (B, R, 8 * dim)


def last_real_row(visual_attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last region whose mask is 1, per example (0 when there is none)."""
    num_rows = visual_attention_mask.shape[1]
    flipped_first = visual_attention_mask.flip(1).to(torch.int64).argmax(dim=1)
    return (num_rows - 1 - flipped_first) * visual_attention_mask.any(dim=1)


class BaseEmbeddings(nn.Module):
    """Text embeddings shared by every kind; subclasses add the region embedding in `forward`."""

    def __init__(self, config: VLConfig) -> None:
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.v_dropout = nn.Dropout(config.v_hidden_dropout_prob)

    def embed_text(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """BERT's text embedding: LayerNorm(word + position + token type), then dropout. (B, T, H)"""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        text = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.layer_norm(text))

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        visual_feats: torch.Tensor,
        visual_pos: torch.Tensor | None,
        attention_mask: torch.Tensor,
        visual_attention_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class ViLBertEmbeddings(BaseEmbeddings):
    """ViLBERT: regions = LayerNorm(W_f feature + W_b box)."""

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        self.region_proj = nn.Linear(config.v_feature_size, config.v_hidden_size)
        self.box_proj = nn.Linear(config.num_locs, config.v_hidden_size)
        self.region_layer_norm = nn.LayerNorm(config.v_hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, token_type_ids, visual_feats, visual_pos, attention_mask, visual_attention_mask):
        regions = self.region_proj(visual_feats) + self.box_proj(box_code(visual_pos, self.config.num_locs))
        return self.embed_text(input_ids, token_type_ids), self.v_dropout(self.region_layer_norm(regions))


class LxmertEmbeddings(BaseEmbeddings):
    """LXMERT: regions = (LayerNorm(W_f feature) + LayerNorm(W_b box)) / 2."""

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        self.region_proj = nn.Linear(config.v_feature_size, config.v_hidden_size)
        self.box_proj = nn.Linear(config.num_locs, config.v_hidden_size)
        self.region_layer_norm = nn.LayerNorm(config.v_hidden_size, eps=config.layer_norm_eps)
        self.box_layer_norm = nn.LayerNorm(config.v_hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, token_type_ids, visual_feats, visual_pos, attention_mask, visual_attention_mask):
        features = self.region_layer_norm(self.region_proj(visual_feats))
        boxes = self.box_layer_norm(self.box_proj(box_code(visual_pos, self.config.num_locs)))
        return self.embed_text(input_ids, token_type_ids), self.v_dropout((features + boxes) / 2)


class UniterEmbeddings(BaseEmbeddings):
    """UNITER: regions = LayerNorm(LN(W_f feature) + LN(W_b box) + token type 1 of the text table)."""

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        self.region_proj = nn.Linear(config.v_feature_size, config.v_hidden_size)
        self.box_proj = nn.Linear(config.num_locs, config.v_hidden_size)
        self.region_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.box_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.vision_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, token_type_ids, visual_feats, visual_pos, attention_mask, visual_attention_mask):
        features = self.region_layer_norm(self.region_proj(visual_feats))
        boxes = self.box_layer_norm(self.box_proj(box_code(visual_pos, self.config.num_locs)))
        region_type = self.token_type_embeddings.weight[1]
        regions = self.vision_layer_norm(features + boxes + region_type)
        return self.embed_text(input_ids, token_type_ids), self.dropout(regions)


class VisualBertEmbeddings(BaseEmbeddings):
    """VisualBERT: regions = LayerNorm(W_f feature + visual position 0 + visual token type 1); no boxes.

    The LayerNorm is the text one. VisualBERT has no spatial input, so `visual_pos` is not read.
    """

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        self.region_proj = nn.Linear(config.v_feature_size, config.hidden_size)
        self.visual_token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.visual_position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)

    def forward(self, input_ids, token_type_ids, visual_feats, visual_pos, attention_mask, visual_attention_mask):
        region_type = self.visual_token_type_embeddings.weight[1]
        region_position = self.visual_position_embeddings.weight[0]
        regions = self.region_proj(visual_feats) + region_position + region_type
        return self.embed_text(input_ids, token_type_ids), self.dropout(self.layer_norm(regions))


class VLBertEmbeddings(BaseEmbeddings):
    """VL-BERT: each region is ReLU(W [sin/cos box code; feature]); text tokens also receive a visual feature.

    Regions whose feature is all zeros (masked or padded) get a learned mask feature instead. Region tokens add
    the `[IMG]` word embedding (the end embedding on the end row), position "text end" (+1 on the end row) and
    token type 2. Text tokens keep positions 0..end-1 (padding keeps its index, masked). With
    `vl_bert_visual_from_last_row` and `vl_bert_shared_text_positions` the release's behaviour is reproduced
    (see VLConfig). With `vl_bert_end_row` the end row is the original VL-BERT's separate [END] token: end
    embedding + position + token type 2 only, without a visual part.
    """

    def __init__(self, config: VLConfig) -> None:
        super().__init__(config)
        geometry_size = 8 * config.v_coordinate_embeddings_dim
        self.region_dropout = nn.Dropout(config.v_attention_probs_dropout_prob)
        self.region_proj = nn.Linear(geometry_size + config.v_feature_size, config.v_hidden_size)
        self.region_mask_embedding = nn.Parameter(torch.zeros(config.v_feature_size))
        self.object_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.end_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.masked_object_embedding = None
        if config.visual_target_weights.get("6", 0) > 0:
            self.masked_object_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.text_visual_proj = self.object_visual_proj = None
        if config.v_hidden_size != config.hidden_size:
            self.text_visual_proj = nn.Linear(config.v_hidden_size, config.hidden_size)
            self.object_visual_proj = nn.Linear(config.v_hidden_size, config.hidden_size)
        self.text_visual_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.object_visual_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids, token_type_ids, visual_feats, visual_pos, attention_mask, visual_attention_mask):
        batch, num_regions = visual_feats.shape[:2]
        rows = torch.arange(batch, device=visual_feats.device)

        # Regions: masked rows get the mask feature, then one projection of [box code; feature].
        masked = (visual_feats == 0).all(dim=-1)  # (B, R)
        features = torch.where(masked.unsqueeze(-1), self.region_mask_embedding.to(visual_feats.dtype), visual_feats)
        geometry = sincos_box_geometry(visual_pos, self.config.v_coordinate_embeddings_dim)
        regions = torch.relu(self.region_proj(self.region_dropout(torch.cat([geometry, features], dim=-1))))

        # Which row carries the end token, and which region feature the text tokens receive.
        end_row, text_visual = self._end_row_and_text_visual(regions, visual_attention_mask)

        # Region tokens: visual part + [IMG] (or mask, or end) word + position + token type 2.
        object_word = self.object_embedding.expand(batch, num_regions, -1)
        if self.masked_object_embedding is not None:
            object_word = torch.where(masked.unsqueeze(-1), self.masked_object_embedding, object_word)
        is_end = torch.zeros_like(masked).index_put((rows, end_row), torch.ones_like(end_row, dtype=torch.bool))
        object_word = torch.where(is_end.unsqueeze(-1), self.end_embedding, object_word)
        text_positions, object_positions = self._positions(input_ids, attention_mask, num_regions, is_end)
        object_visual = regions if self.object_visual_proj is None else self.object_visual_proj(regions)
        object_tokens = (
            self.object_visual_layer_norm(object_visual)
            + object_word
            + self.position_embeddings(object_positions)
            + self.token_type_embeddings.weight[2]
        )
        if self.config.vl_bert_end_row:
            # The original's [END] token has no visual part: its row's feature and box are not read.
            end_tokens = (
                self.end_embedding + self.position_embeddings(object_positions) + self.token_type_embeddings.weight[2]
            )
            object_tokens = torch.where(is_end.unsqueeze(-1), end_tokens, object_tokens)

        # Text tokens: word + visual part + position + token type.
        if self.text_visual_proj is not None:
            text_visual = self.text_visual_proj(text_visual)
        text_tokens = (
            self.word_embeddings(input_ids)
            + self.text_visual_layer_norm(text_visual).unsqueeze(1)
            + self.position_embeddings(text_positions)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.layer_norm(text_tokens)), self.dropout(self.layer_norm(object_tokens))

    def _end_row_and_text_visual(
        self, regions: torch.Tensor, visual_attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, num_regions = regions.shape[:2]
        rows = torch.arange(batch, device=regions.device)
        if self.config.vl_bert_visual_from_last_row:
            end_row = torch.full((batch,), num_regions - 1, device=regions.device, dtype=torch.int64)
            return end_row, regions[:, -1]

        end_row = last_real_row(visual_attention_mask)
        region_mask = visual_attention_mask
        if self.config.vl_bert_end_row:
            # The end row is a token of its own, not a region: the regions end one row before it.
            region_mask = visual_attention_mask.index_put((rows, end_row), torch.zeros_like(end_row).to(region_mask))
        place = self.config.add_global_imgfeat
        if place == "first":
            return end_row, regions[:, 0]
        if place == "last":
            return end_row, regions[rows, last_real_row(region_mask)]
        weights = region_mask.to(regions.dtype).unsqueeze(-1)
        return end_row, (regions * weights).sum(1) / weights.sum(1).clamp(min=1)

    def _positions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_regions: int, is_end: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text positions (B, T) and region positions (B, R), as VL-BERT lays out [text; regions; end]."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        if self.config.vl_bert_shared_text_positions:
            # The release moves every text position from the batch's shortest text on past the regions.
            text_end = (input_ids != 0).sum(1, keepdim=True)
            text_positions = positions + num_regions * (positions >= text_end.min())
        else:
            # Real text tokens keep 0..end-1; padding (masked, never read) keeps its index, within the table.
            text_end = attention_mask.sum(1, keepdim=True).to(torch.int64)
            text_positions = positions
        object_positions = text_end + is_end.to(torch.int64)  # (B, R)
        return text_positions, object_positions


EMBEDDING_CLASSES: dict[str, type[BaseEmbeddings]] = {
    "vilbert": ViLBertEmbeddings,
    "lxmert": LxmertEmbeddings,
    "vl-bert": VLBertEmbeddings,
    "visualbert": VisualBertEmbeddings,
    "uniter": UniterEmbeddings,
}
