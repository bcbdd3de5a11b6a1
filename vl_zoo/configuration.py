"""One configuration for every vl_zoo model: sizes, the embedding kind and the sub-layer program.

Field names follow the unified-framework release (Bugliarello et al., TACL 2021), so that one of its config
files turns into a `VLConfig` by renaming nothing. The five architectures subclass `VLConfig` in
`vl_zoo/models/` to set their own `model_type`, their controlled-setting ("ctrl") defaults and their presets.

A model is a flat list of numbered sub-layers. Each number is an attention sub-layer or a feed-forward
sub-layer, and the membership lists say which streams it touches:

- `tt_attn_sublayers`: text queries attend to text; `tv_attn_sublayers`: text queries attend to vision;
  `vt_attn_sublayers`: vision queries attend to text; `vv_attn_sublayers`: vision queries attend to vision;
- `t_ff_sublayers`, `v_ff_sublayers`: the text / vision stream has a feed-forward block there;
- `shared_sublayers`: text and vision use one set of parameters there;
- `single_ln_sublayers`: text and vision share the residual LayerNorm (needs sharing).

A stream that a sub-layer does not touch passes through it unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

from transformers import PreTrainedConfig

EMBEDDING_KINDS = ("vilbert", "lxmert", "vl-bert", "visualbert", "uniter")
FUSION_METHODS = ("mul", "sum", "text", "none")
FUSION_ACTIVATIONS = ("relu", "tanh")
GLOBAL_REGION_PLACES = ("first", "last", None)
BOX_WIDTHS = (4, 5, 7)

# Masked-region targets of the release, by id: (loss, output width). None means "the feature width".
REGION_TARGETS: dict[str, tuple[str, int | None]] = {
    "0": ("kl", 1601),  # KL to the detector's class distribution (every ctrl model)
    "1": ("mse", None),  # feature regression, mean squared error
    "3": ("xent", 1600),  # hard object label, cross-entropy weighted by the detector's confidence (LXMERT)
    "4": ("xent", 400),  # hard attribute label, weighted likewise (LXMERT)
    "5": ("smooth_l1", None),  # feature regression, smooth L1 (LXMERT)
    "6": ("xent", 1601),  # hard object label with background, plain cross-entropy (VL-BERT)
}

PROGRAM_LISTS = (
    "tt_attn_sublayers",
    "tv_attn_sublayers",
    "vt_attn_sublayers",
    "vv_attn_sublayers",
    "t_ff_sublayers",
    "v_ff_sublayers",
    "shared_sublayers",
    "single_ln_sublayers",
)
PROGRAM_MAPS = ("bert_layer2attn_sublayer", "bert_layer2ff_sublayer")
SIZE_MAPS = (
    "sublayer2attn_hidden_size",
    "sublayer2num_attention_heads",
    "sublayer2intermediate_size",
    "sublayer2v_attn_hidden_size",
    "sublayer2v_num_attention_heads",
    "sublayer2v_intermediate_size",
)


@dataclass(frozen=True)
class SublayerSpec:
    """What one numbered sub-layer does, read off the membership lists and size maps of a config."""

    index: int
    kind: str  # "attn" or "ff"
    tt: bool = False
    tv: bool = False
    vt: bool = False
    vv: bool = False
    t_ff: bool = False
    v_ff: bool = False
    shared: bool = False
    single_ln: bool = False
    attn_size: int = 0  # text attention width (all heads together)
    num_heads: int = 0
    v_attn_size: int = 0
    v_num_heads: int = 0
    intermediate_size: int = 0
    v_intermediate_size: int = 0

    @property
    def text_active(self) -> bool:
        """Whether the text stream changes in this sub-layer."""
        return self.tt or self.tv if self.kind == "attn" else self.t_ff

    @property
    def vision_active(self) -> bool:
        """Whether the vision stream changes in this sub-layer."""
        return self.vv or self.vt if self.kind == "attn" else self.v_ff

    @property
    def shares_parameters(self) -> bool:
        """Sharing only means something when both streams are active."""
        return self.shared and self.text_active and self.vision_active


class VLConfig(PreTrainedConfig):
    """Configuration of a vl_zoo model (the base of the five architecture configs).

    Sizes and dropouts are those of BERT, with `v_` twins for the vision stream. The sub-layer program lists
    default to `None`, which means "the architecture's controlled-setting program"; the lists written to
    `config.json` are always explicit.

    Release-compatibility switches (off for new models, set by `conversion/convert_volta.py`):
        vl_bert_shared_text_positions: reproduce the release's VL-BERT text positions, which are shifted on a
            tensor shared by the whole batch, so that every row's positions at or past the *shortest* caption's
            end move by the number of regions.
        vl_bert_visual_from_last_row: give VL-BERT's text tokens the feature of the last region row and put
            the end token on row R-1, as the release does, instead of the global image row and the last real
            region.

    Original-checkpoint switch (off by default, set by `conversion/convert_original.py --model vl-bert`):
        vl_bert_end_row: the last real row of the vision stream is VL-BERT's own [END] token, as jackroos/VL-BERT
            appends it after the regions: end embedding, position "text end + 1" and token type 2 only, its
            feature and box unread. Off, the end embedding takes the place of the [IMG] word on the last real
            region row instead (the unified release's reading). On, the inputs need that extra row (the
            processor's `end_row`).
    """

    model_type = "vlzoo"
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

    # Text stream (BERT).
    vocab_size: int = 30522
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0

    # Vision stream.
    v_feature_size: int = 2048
    v_hidden_size: int = 768
    v_num_attention_heads: int = 12
    v_intermediate_size: int = 3072
    v_hidden_act: str = "gelu"
    v_hidden_dropout_prob: float = 0.1
    v_attention_probs_dropout_prob: float = 0.1

    # Visual input and its embedding.
    image_embeddings: str = "vilbert"
    num_locs: int = 5
    add_global_imgfeat: str | None = "first"
    v_coordinate_embeddings_dim: int = 256

    # Pooling and fusion.
    pooler_size: int = 1024
    v_pooler_size: int = 1024
    fusion_method: str = "mul"
    fusion_act: str = "relu"

    # Pretraining objectives and heads.
    visual_target_weights: dict[str, float] = field(default_factory=lambda: {"0": 1.0})
    image_head_ln: bool = True
    mlm_weight: float = 1.0
    itm_weight: float = 1.0
    qa_task_weight: float = 0.0
    qa_num_answers: int = 0
    clf_hidden_size: int = 1536

    # The sub-layer program (None: the architecture's ctrl program).
    tt_attn_sublayers: list[int] | None = None
    tv_attn_sublayers: list[int] | None = None
    vt_attn_sublayers: list[int] | None = None
    vv_attn_sublayers: list[int] | None = None
    t_ff_sublayers: list[int] | None = None
    v_ff_sublayers: list[int] | None = None
    shared_sublayers: list[int] | None = None
    single_ln_sublayers: list[int] | None = None
    bert_layer2attn_sublayer: dict[str, int] | None = None
    bert_layer2ff_sublayer: dict[str, int] | None = None
    sublayer2attn_hidden_size: dict[str, int] = field(default_factory=dict)
    sublayer2num_attention_heads: dict[str, int] = field(default_factory=dict)
    sublayer2intermediate_size: dict[str, int] = field(default_factory=dict)
    sublayer2v_attn_hidden_size: dict[str, int] = field(default_factory=dict)
    sublayer2v_num_attention_heads: dict[str, int] = field(default_factory=dict)
    sublayer2v_intermediate_size: dict[str, int] = field(default_factory=dict)

    # Release-compatibility switches (see the class docstring).
    vl_bert_shared_text_positions: bool = False
    vl_bert_visual_from_last_row: bool = False

    # Original-checkpoint switch (see the class docstring).
    vl_bert_end_row: bool = False

    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self._fill_default_program()
        self._normalise_maps()
        validate_config(self)

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def default_program(cls) -> dict[str, Any]:
        """The architecture's ctrl sub-layer program (lists and BERT maps); subclasses define it."""
        raise NotImplementedError(
            "VLConfig is the shared base class and has no default sub-layer program; use one of the five "
            "architecture configs (AutoConfig.for_model('vlzoo_vilbert'), ...) or pass every *_sublayers list."
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VLConfig:
        """Build the config of a named preset ("ctrl", "tiny", "original", ...), then apply keyword overrides.

        The preset's name is kept as `config.preset` (saved in config.json), so that a script reading a saved folder
        can tell a tiny model from a full-size one.
        """
        if name not in cls.presets:
            raise ValueError(f"preset={name!r} is not a preset of {cls.model_type}; allowed: {sorted(cls.presets)}")
        values = copy.deepcopy(cls.presets[name])
        values.update(overrides)
        values.setdefault("preset", name)  # saved with the config: fine-tuning picks its recipe by it
        return cls(**values)

    def _fill_default_program(self) -> None:
        missing = [name for name in PROGRAM_LISTS + PROGRAM_MAPS if getattr(self, name) is None]
        if not missing:
            return
        given = [name for name in PROGRAM_LISTS if getattr(self, name) is not None]
        if given:
            raise ValueError(
                f"the sub-layer program is partly given: {given} were passed but {missing} were not; pass every "
                f"list of the program ({', '.join(PROGRAM_LISTS)}) or none of them"
            )
        program = self.default_program()
        for name in missing:
            setattr(self, name, copy.deepcopy(program[name]))

    def _normalise_maps(self) -> None:
        # JSON object keys are strings; the release writes them so, and so do we.
        for name in SIZE_MAPS + PROGRAM_MAPS:
            value = getattr(self, name)
            if not isinstance(value, dict):
                raise ValueError(f"{name} must be a dict from sub-layer (or BERT layer) number to int, got {value!r}")
            setattr(self, name, {str(k): int(v) for k, v in value.items()})
        self.visual_target_weights = {str(k): float(v) for k, v in self.visual_target_weights.items()}
        for name in PROGRAM_LISTS:
            setattr(self, name, sorted(int(i) for i in getattr(self, name)))

    # ------------------------------------------------------------------ derived views

    @property
    def num_sublayers(self) -> int:
        """Number of sub-layers in the program."""
        return len(set().union(*(getattr(self, name) for name in PROGRAM_LISTS[:6])))

    @property
    def active_region_targets(self) -> dict[str, float]:
        """The masked-region targets with a positive weight, by release id."""
        return {k: w for k, w in sorted(self.visual_target_weights.items()) if w > 0}

    @property
    def has_pooler(self) -> bool:
        return self.fusion_method != "none"

    @property
    def has_vision_pooler(self) -> bool:
        return self.fusion_method in ("mul", "sum")

    def region_target_size(self, target_id: str) -> int:
        """Output width of the masked-region decoder for `target_id`."""
        size = REGION_TARGETS[target_id][1]
        return self.v_feature_size if size is None else size

    def sublayer_spec(self, index: int) -> SublayerSpec:
        """Everything the encoder needs to build sub-layer `index`."""
        key = str(index)
        member = {name: index in getattr(self, name) for name in PROGRAM_LISTS}
        is_attn = any(member[name] for name in PROGRAM_LISTS[:4])
        return SublayerSpec(
            index=index,
            kind="attn" if is_attn else "ff",
            tt=member["tt_attn_sublayers"],
            tv=member["tv_attn_sublayers"],
            vt=member["vt_attn_sublayers"],
            vv=member["vv_attn_sublayers"],
            t_ff=member["t_ff_sublayers"],
            v_ff=member["v_ff_sublayers"],
            shared=member["shared_sublayers"],
            single_ln=member["single_ln_sublayers"],
            attn_size=self.sublayer2attn_hidden_size.get(key, self.hidden_size),
            num_heads=self.sublayer2num_attention_heads.get(key, self.num_attention_heads),
            v_attn_size=self.sublayer2v_attn_hidden_size.get(key, self.v_hidden_size),
            v_num_heads=self.sublayer2v_num_attention_heads.get(key, self.v_num_attention_heads),
            intermediate_size=self.sublayer2intermediate_size.get(key, self.intermediate_size),
            v_intermediate_size=self.sublayer2v_intermediate_size.get(key, self.v_intermediate_size),
        )

    def sublayer_specs(self) -> list[SublayerSpec]:
        return [self.sublayer_spec(i) for i in range(self.num_sublayers)]


# ---------------------------------------------------------------------------------------------- validation


def validate_config(config: VLConfig) -> None:
    """Raise ValueError (or NotImplementedError for a release feature vl_zoo lacks) on an inconsistent config."""
    _check_choices(config)
    _check_embedding_sizes(config)
    _check_program_numbers(config)
    for spec in config.sublayer_specs():
        _check_sublayer(config, spec)
    _check_bert_maps(config)


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; allowed: {list(allowed)}")


def _check_choices(config: VLConfig) -> None:
    _choice("image_embeddings", config.image_embeddings, EMBEDDING_KINDS)
    _choice("fusion_method", config.fusion_method, FUSION_METHODS)
    _choice("fusion_act", config.fusion_act, FUSION_ACTIVATIONS)
    _choice("add_global_imgfeat", config.add_global_imgfeat, GLOBAL_REGION_PLACES)
    _choice("num_locs", config.num_locs, BOX_WIDTHS)
    for target_id in config.visual_target_weights:
        if target_id == "2":
            raise NotImplementedError(
                "visual_target_weights has target '2' (NCE over sampled negative features), which vl_zoo does not "
                "implement; use '1' (MSE) or '5' (smooth L1) feature regression instead"
            )
        _choice("visual_target_weights key", target_id, tuple(REGION_TARGETS))
    for name in ("vocab_size", "hidden_size", "v_hidden_size", "v_feature_size", "max_position_embeddings"):
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}")
    if config.has_vision_pooler and config.pooler_size != config.v_pooler_size:
        raise ValueError(
            f"fusion_method={config.fusion_method!r} combines the two pooled vectors element-wise, so pooler_size "
            f"({config.pooler_size}) must equal v_pooler_size ({config.v_pooler_size})"
        )
    if config.qa_num_answers > 0 and not config.has_pooler:
        raise ValueError("qa_num_answers > 0 needs a pooled output, but fusion_method is 'none'")


def _check_program_numbers(config: VLConfig) -> None:
    attn = set().union(*(getattr(config, n) for n in PROGRAM_LISTS[:4]))
    ff = set(config.t_ff_sublayers) | set(config.v_ff_sublayers)
    both = sorted(attn & ff)
    if both:
        raise ValueError(
            f"sub-layers {both} are listed both as attention and as feed-forward; each is one or the other"
        )
    numbers = attn | ff
    if not numbers:
        raise ValueError("the sub-layer program is empty: no attention or feed-forward sub-layer is listed")
    if numbers != set(range(len(numbers))):
        gaps = sorted(set(range(max(numbers) + 1)) - numbers)
        raise ValueError(
            f"sub-layer numbers must run 0..N-1 without gaps; got {sorted(numbers)} (missing {gaps}, or negative)"
        )
    for name in ("shared_sublayers", "single_ln_sublayers"):
        unknown = sorted(set(getattr(config, name)) - numbers)
        if unknown:
            raise ValueError(f"{name} names sub-layers {unknown}, which no attention or feed-forward list has")
    loose = sorted(set(config.single_ln_sublayers) - set(config.shared_sublayers))
    if loose:
        raise ValueError(f"single_ln_sublayers {loose} are not in shared_sublayers; one LayerNorm needs sharing")


def _check_sublayer(config: VLConfig, spec: SublayerSpec) -> None:
    n = spec.index
    if spec.kind == "attn":
        if spec.text_active:
            _check_heads(f"sub-layer {n} text attention", spec.attn_size, spec.num_heads)
        if spec.vision_active:
            _check_heads(f"sub-layer {n} vision attention", spec.v_attn_size, spec.v_num_heads)
        # A stream whose keys are attended to projects its keys with its own query-side parameters.
        if spec.vt and not spec.text_active:
            raise ValueError(
                f"sub-layer {n} is in vt_attn_sublayers but text queries attend nothing there (add tt or tv)"
            )
        if spec.tv and not spec.vision_active:
            raise ValueError(
                f"sub-layer {n} is in tv_attn_sublayers but vision queries attend nothing there (add vv or vt)"
            )
        crosses = spec.tv or spec.vt
        if crosses and (spec.attn_size, spec.num_heads) != (spec.v_attn_size, spec.v_num_heads):
            raise ValueError(
                f"sub-layer {n} mixes modalities, so its text and vision attention must have the same width and "
                f"heads; got text {spec.attn_size}/{spec.num_heads}, vision {spec.v_attn_size}/{spec.v_num_heads}"
            )
    if spec.single_ln and not (spec.text_active and spec.vision_active):
        raise ValueError(f"sub-layer {n} is in single_ln_sublayers but does not touch both streams")
    if spec.shares_parameters:
        text = (config.hidden_size, spec.attn_size, spec.num_heads, spec.intermediate_size)
        vision = (config.v_hidden_size, spec.v_attn_size, spec.v_num_heads, spec.v_intermediate_size)
        if spec.kind == "ff":
            text, vision = (text[0], text[3]), (vision[0], vision[3])
        else:
            text, vision = text[:3], vision[:3]
        if text != vision:
            raise ValueError(
                f"sub-layer {n} is shared, so text and vision sizes must agree; got text {text} and vision {vision} "
                "(hidden size, then attention width and heads or feed-forward width)"
            )


def _check_heads(what: str, width: int, heads: int) -> None:
    if heads <= 0 or width <= 0 or width % heads:
        raise ValueError(f"{what}: width {width} does not divide into {heads} heads")


def _check_embedding_sizes(config: VLConfig) -> None:
    kind = config.image_embeddings
    if kind in ("vl-bert", "visualbert", "uniter") and config.v_hidden_size != config.hidden_size:
        raise ValueError(
            f"image_embeddings={kind!r} embeds regions into the text width, so v_hidden_size "
            f"({config.v_hidden_size}) must equal hidden_size ({config.hidden_size})"
        )
    if kind == "vl-bert":
        if config.type_vocab_size < 3:
            raise ValueError(
                f"image_embeddings='vl-bert' uses token type 2 for regions, so type_vocab_size must be at least 3; "
                f"got {config.type_vocab_size}"
            )
        if config.v_coordinate_embeddings_dim <= 0:
            raise ValueError(
                f"v_coordinate_embeddings_dim must be positive for image_embeddings='vl-bert', got "
                f"{config.v_coordinate_embeddings_dim}"
            )
    if config.vl_bert_end_row and kind != "vl-bert":
        raise ValueError(f"vl_bert_end_row=True is VL-BERT's [END] token, but image_embeddings is {kind!r}")
    if config.vl_bert_end_row and config.vl_bert_visual_from_last_row:
        raise ValueError(
            "vl_bert_end_row=True (a separate [END] row) and vl_bert_visual_from_last_row=True (the release's end "
            "token on row R-1) describe two different end tokens; set at most one"
        )
    if config.vl_bert_end_row and config.add_global_imgfeat == "last" and config.has_vision_pooler:
        raise ValueError(
            "vl_bert_end_row=True puts the [END] token on the last real row, where the vision pooler would look for "
            "the global row (add_global_imgfeat='last'); put the global row first or pool text only"
        )
    if kind in ("uniter", "visualbert") and config.type_vocab_size < 2:
        raise ValueError(
            f"image_embeddings={kind!r} uses token type 1 for regions; type_vocab_size is {config.type_vocab_size}"
        )


def _check_bert_maps(config: VLConfig) -> None:
    specs = {spec.index: spec for spec in config.sublayer_specs()}
    for name, kind in (("bert_layer2attn_sublayer", "attn"), ("bert_layer2ff_sublayer", "ff")):
        for bert_layer, index in getattr(config, name).items():
            spec = specs.get(index)
            if spec is None or spec.kind != kind or not spec.text_active:
                raise ValueError(
                    f"{name}[{bert_layer}] = {index}, but sub-layer {index} is not a text {kind} sub-layer "
                    "of this program"
                )
