"""Model cards for the published checkpoints, generated from `vl_zoo.pretrained.PUBLISHED` by one template.

Every fact on a card comes from the checkpoint's record (`PublishedCheckpoint`), from its siblings' records, or
from the package itself (the architecture's description is its module docstring; the inputs come from the
preset's config). Nothing is copied by hand, so a card changes when the table does, and
`tests/test_cards.py` checks that `model_cards/` matches what this module renders today.

A card is validated with huggingface_hub's `ModelCard` before it is written or pushed: the YAML must parse,
the `model-index` must parse back into exactly the published results, and the metadata the Hub indexes
(`license`, `library_name`, `tags`, `datasets`, `pipeline_tag`, `base_model`) must be there.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..models import ARCHITECTURES, config_from_preset
from ..pretrained import PUBLISHED, PublishedCheckpoint

logger = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "vl-zoo"
LIBRARY_NAME = "transformers"
PIPELINE_TAG = "feature-extraction"
ARCHITECTURE_TAGS = {
    "vlzoo_vilbert": "vilbert",
    "vlzoo_lxmert": "lxmert",
    "vlzoo_vl_bert": "vl-bert",
    "vlzoo_visual_bert": "visualbert",
    "vlzoo_uniter": "uniter",
}
# Hub licence ids of the licences the table names ("unspecified ..." means the publisher states none).
LICENSES = {"mit": "mit", "apache-2.0": "apache-2.0", "unspecified": "unknown"}
# Hub dataset ids of the pretraining corpora the table names.
DATASET_IDS = {
    "Conceptual Captions": "google-research-datasets/conceptual_captions",
    "MS COCO captions": "HuggingFaceM4/COCO",
    "Visual Genome captions": "ranjaykrishna/visual_genome",
    "Visual Genome QA": "ranjaykrishna/visual_genome",
    "VQA v2.0": "HuggingFaceM4/VQAv2",
    "GQA": "lmms-lab/GQA",
    "SBU Captions": "vicenteor/sbu_captions",
    "BooksCorpus": "bookcorpus/bookcorpus",
    "English Wikipedia": "wikimedia/wikipedia",
}


@dataclass(frozen=True)
class Benchmark:
    """How a downstream task is named in a model-index entry."""

    task_type: str
    task_name: str
    dataset_type: str
    dataset_name: str
    metric_type: str
    metric_name: str


BENCHMARKS = {
    "vqav2": Benchmark(
        "visual-question-answering",
        "Visual Question Answering",
        "HuggingFaceM4/VQAv2",
        "VQAv2",
        "accuracy",
        "VQA accuracy",
    ),
    "gqa": Benchmark(
        "visual-question-answering", "Visual Question Answering", "lmms-lab/GQA", "GQA", "accuracy", "accuracy"
    ),
    "nlvr2": Benchmark("visual-reasoning", "Visual Reasoning", "nlvr2", "NLVR2", "accuracy", "accuracy"),
    "refcoco+": Benchmark(
        "referring-expression-comprehension",
        "Referring Expressions",
        "lmms-lab/RefCOCOplus",
        "RefCOCO+",
        "accuracy",
        "accuracy (IoU >= 0.5)",
    ),
    "flickr30k_ir": Benchmark(
        "image-retrieval", "Image Retrieval", "nlphuji/flickr30k", "Flickr30k", "recall", "Recall@{k}"
    ),
    "flickr30k_tr": Benchmark(
        "text-retrieval", "Text Retrieval", "nlphuji/flickr30k", "Flickr30k", "recall", "Recall@{k}"
    ),
}
SPLITS = {
    "test_dev": "test-dev",
    "test_std": "test-std",
    "test_p": "test-P",
    "test_u": "test-U",
    "dev": "dev",
    "val": "val",
    "test": "test",
}
RETRIEVAL_KEY = re.compile(r"^(flickr30k_[it]r)_r(\d+)$")

TEMPLATE = Template(
    """# $name

$summary

- **Architecture**: `$model_type`, preset `$preset`, $stream.
- **Visual input**: $visual_input
- **Weights**: published by $source_link ([original file]($url)); converted with `$converter_command`.
- **Tokenizer**: `$tokenizer`.

## How it differs from its siblings

$notes

$siblings

$architecture

## Usage

`vl_zoo` need not be installed: the repository carries its model code (`trust_remote_code=True`). With
`import vl_zoo` first, vl_zoo's own classes are used instead.

```python
$usage
```

## Training data and set-up

$training

## Evaluation results

$results

## Known limitations

$limitations

## Licence and citation

$licence

```bibtex
$citation
```
"""
)

USAGE = Template(
    """import numpy as np
from transformers import AutoModelForPreTraining, AutoProcessor

repo = "$repo_id"
processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
model = AutoModelForPreTraining.from_pretrained(repo, trust_remote_code=True).eval()

# One image's regions from your detector: features (R, F) and pixel boxes x1, y1, x2, y2 (here random).
rng = np.random.default_rng(0)
features = rng.standard_normal((10, model.config.v_feature_size)).astype("float32")
corners = rng.uniform(0, 200, (10, 2))
boxes = np.concatenate([corners, corners + rng.uniform(20, 200, (10, 2))], axis=1).astype("float32")
inputs = processor(text="a dog lying on a couch", features=[features], boxes=[boxes], image_sizes=[(480, 640)])
outputs = model(**inputs)
$last_line"""
)
ITM_LINE = "outputs.itm_logits.softmax(-1)[:, 1]  # probability that the text matches the image"
STATES_LINE = "outputs.text_last_hidden_state, outputs.vision_last_hidden_state  # (1, T, H), (1, R, Hv)"

LIMITATIONS = (
    "- The model reads region features, not pixels: it needs the detector it was pretrained with (see the notes "
    "above), and features from another detector are out of distribution.",
    "- It is a pretrained encoder. The scores above are the publisher's, after fine-tuning on each task; "
    "vl_zoo did not re-measure them. Fine-tune with `accelerate launch -m vl_zoo.finetune`.",
    "- English only, with the vocabulary of `{tokenizer}`.",
    "- The pretraining corpora ({data}) carry the biases of web and crowd-sourced captions.",
)


# ---------------------------------------------------------------------------------------------- rendering


def card_path(output_dir: str | Path, name: str) -> Path:
    """Where `vl-zoo card` writes the card of checkpoint `name`."""
    return Path(output_dir) / f"{name}.md"


def default_repo_id(checkpoint: PublishedCheckpoint) -> str:
    return f"{DEFAULT_NAMESPACE}/{checkpoint.name}"


def render_card(checkpoint: PublishedCheckpoint, repo_id: str | None = None) -> str:
    """The model card of a published checkpoint (YAML metadata and Markdown body), validated."""
    repo_id = repo_id or default_repo_id(checkpoint)
    config = config_from_preset(checkpoint.model_type, checkpoint.preset)
    data = card_data(checkpoint)
    body = TEMPLATE.substitute(
        name=checkpoint.name,
        summary=_summary(checkpoint),
        model_type=checkpoint.model_type,
        preset=checkpoint.preset,
        stream="single-stream" if _is_single_stream(config) else "dual-stream",
        visual_input=_visual_input(config),
        source_link=_link(checkpoint.source),
        url=checkpoint.url,
        converter_command=converter_command(checkpoint),
        tokenizer=checkpoint.tokenizer,
        notes=checkpoint.notes,
        siblings=siblings_table(checkpoint),
        architecture=_architecture(checkpoint),
        usage=usage_snippet(repo_id, config.has_pooler),
        training=_training(checkpoint),
        results=results_table(checkpoint),
        limitations=_limitations(checkpoint),
        licence=_licence(checkpoint),
        citation=checkpoint.citation.strip(),
    )
    text = f"---\n{data.to_yaml()}\n---\n\n{body}"
    validate_card(text, checkpoint)
    return text


def card_data(checkpoint: PublishedCheckpoint) -> ModelCardData:
    """The YAML metadata: licence, library, tags, datasets, pipeline tag, base model and the model-index."""
    results = eval_results(checkpoint)
    return ModelCardData(
        language="en",
        license=hub_license(checkpoint.license),
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        tags=card_tags(checkpoint),
        datasets=pretraining_dataset_ids(checkpoint),
        base_model=checkpoint.base_model,
        model_name=checkpoint.name if results else None,
        eval_results=results or None,
    )


def card_tags(checkpoint: PublishedCheckpoint) -> list[str]:
    setting = "volta" if checkpoint.converter == "volta" else "original-release"
    tags = ["vl_zoo", "vision-and-language", ARCHITECTURE_TAGS[checkpoint.model_type], "region-features"]
    return tags + [f"preset-{checkpoint.preset}", setting, "custom_code"]


def hub_license(license_text: str) -> str:
    """The Hub licence id of a table licence ("MIT" -> "mit"; "unspecified (...)" -> "unknown")."""
    key = license_text.split(" ")[0].lower()
    if key not in LICENSES:
        raise ValueError(f"license={license_text!r} has no Hub licence id here; known: {sorted(LICENSES)}")
    return LICENSES[key]


def pretraining_dataset_ids(checkpoint: PublishedCheckpoint) -> list[str]:
    """Hub dataset ids of the pretraining corpora, in table order, without repeats."""
    unknown = [name for name in checkpoint.pretraining_data if name not in DATASET_IDS]
    if unknown:
        raise ValueError(f"{checkpoint.name}: pretraining corpora {unknown} have no Hub dataset id in DATASET_IDS")
    return list(dict.fromkeys(DATASET_IDS[name] for name in checkpoint.pretraining_data))


def eval_results(checkpoint: PublishedCheckpoint) -> list[EvalResult]:
    """One model-index entry per published result, in table order."""
    return [_eval_result(key, value) for key, value in checkpoint.results.items()]


def _eval_result(key: str, value: float) -> EvalResult:
    benchmark, split, metric_name = describe_result(key)
    return EvalResult(
        task_type=benchmark.task_type,
        task_name=benchmark.task_name,
        dataset_type=benchmark.dataset_type,
        dataset_name=benchmark.dataset_name,
        dataset_split=split,
        metric_type=benchmark.metric_type,
        metric_name=metric_name,
        metric_value=value,
    )


def describe_result(key: str) -> tuple[Benchmark, str, str]:
    """A results key (`vqav2_test_dev`, `flickr30k_ir_r1`, ...) -> (benchmark, split, metric name)."""
    if match := RETRIEVAL_KEY.match(key):
        benchmark = BENCHMARKS[match.group(1)]
        return benchmark, "test", benchmark.metric_name.format(k=match.group(2))
    task, _, split = key.partition("_")
    if task not in BENCHMARKS or split not in SPLITS:
        raise ValueError(
            f"results key {key!r} is not <task>_<split> with a task in {sorted(BENCHMARKS)} and a split in "
            f"{sorted(SPLITS)}, nor flickr30k_ir_r<k> / flickr30k_tr_r<k>"
        )
    return BENCHMARKS[task], SPLITS[split], BENCHMARKS[task].metric_name


# ---------------------------------------------------------------------------------------------- body parts


def converter_command(checkpoint: PublishedCheckpoint) -> str:
    if checkpoint.converter == "volta":
        return "python conversion/convert_volta.py --checkpoint CKPT --config CONFIG.json --output DIR"
    return f"python conversion/convert_original.py --model {checkpoint.converter} --checkpoint CKPT --output DIR"


def usage_snippet(repo_id: str, has_pooler: bool) -> str:
    """Python that loads model and processor from `repo_id` and runs one text-image pair."""
    return USAGE.substitute(repo_id=repo_id, last_line=ITM_LINE if has_pooler else STATES_LINE)


def siblings_table(checkpoint: PublishedCheckpoint) -> str:
    """The checkpoints of the same architecture, and for a ctrl checkpoint the other ctrl ones, as a table."""
    siblings = [
        other
        for other in PUBLISHED.values()
        if other.model_type == checkpoint.model_type or (other.preset == checkpoint.preset == "ctrl")
    ]
    rows = ["| checkpoint | architecture | preset | pretraining data | tokenizer | VQAv2 test-dev |", "|---" * 6 + "|"]
    for other in siblings:
        name = f"**{other.name}** (this one)" if other.name == checkpoint.name else f"`{other.name}`"
        vqa = other.results.get("vqav2_test_dev")
        cells = (
            name,
            f"`{other.model_type}`",
            other.preset,
            ", ".join(other.pretraining_data),
            other.tokenizer,
            "-" if vqa is None else f"{vqa:.2f}",
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def results_table(checkpoint: PublishedCheckpoint) -> str:
    if not checkpoint.results:
        return f"No downstream result is recorded for this checkpoint ({checkpoint.results_source})."
    rows = ["| task | dataset | split | metric | score |", "|---|---|---|---|---|"]
    for key, value in checkpoint.results.items():
        benchmark, split, metric = describe_result(key)
        rows.append(f"| {benchmark.task_name} | {benchmark.dataset_name} | {split} | {metric} | {value:.2f} |")
    return "\n".join(rows) + f"\n\nSource: {checkpoint.results_source}."


def _summary(checkpoint: PublishedCheckpoint) -> str:
    first = _architecture_doc(checkpoint.model_type)[0]
    family = (
        "one of the eight checkpoints of the unified vision-and-language BERT framework (Bugliarello et al., 2021)"
        if checkpoint.converter == "volta"
        else "the original authors' checkpoint"
    )
    return f"{first} This is {family}, as a vl_zoo model: one unified encoder programmed by its config."


def _architecture(checkpoint: PublishedCheckpoint) -> str:
    """The architecture module's own description of its presets (the package docstring, unwrapped)."""
    return "\n\n".join(_architecture_doc(checkpoint.model_type)[1:])


def _architecture_doc(model_type: str) -> list[str]:
    doc = sys.modules[ARCHITECTURES[model_type][0].__module__].__doc__ or ""
    return [" ".join(paragraph.split()) for paragraph in doc.strip().split("\n\n")]


def _is_single_stream(config) -> bool:
    return all(spec.shares_parameters or spec.kind == "ff" for spec in config.sublayer_specs()) and bool(
        config.single_ln_sublayers
    )


def _visual_input(config) -> str:
    place = {"first": "first", "last": "after the regions", None: "none"}[config.add_global_imgfeat]
    return (
        f"region features ({config.v_feature_size}-d in the preset; a converted checkpoint keeps its own width) "
        f"with boxes given as 5-d normalised vectors, from which the embedding builds a {config.num_locs}-d box "
        f"code; global image row: {place}."
    )


def _training(checkpoint: PublishedCheckpoint) -> str:
    data = ", ".join(checkpoint.pretraining_data)
    start = f", starting from `{checkpoint.base_model}`" if checkpoint.base_model else ""
    return (
        f"Pretrained on {data}{start}. Published at {checkpoint.source}; vl_zoo converts the published weights "
        "and does not retrain them. The conversion maps every tensor of the original file or lists it as "
        "dropped with a reason (`conversion_report.json` in this repository when it was pushed by `vl-zoo "
        "convert --push-to`)."
    )


def _limitations(checkpoint: PublishedCheckpoint) -> str:
    data = ", ".join(checkpoint.pretraining_data)
    return "\n".join(line.format(tokenizer=checkpoint.tokenizer, data=data) for line in LIMITATIONS)


def _licence(checkpoint: PublishedCheckpoint) -> str:
    return (
        f"The weights are distributed under the licence of their publisher: {checkpoint.license} "
        f"({checkpoint.source}). vl_zoo's code is MIT-licensed. If you use this checkpoint, cite:"
    )


def _link(url: str) -> str:
    label = url.removeprefix("https://github.com/") if url.startswith("https://github.com/") else url
    return f"[{label}]({url})"


# ---------------------------------------------------------------------------------------------- validation


def validate_card(text: str, checkpoint: PublishedCheckpoint | None = None) -> ModelCard:
    """Parse `text` with huggingface_hub's ModelCard and check what the Hub indexes; ValueError otherwise.

    With `checkpoint`, the model-index must parse back into exactly its published results.
    """
    card = ModelCard(text)  # raises ValueError on YAML that is not a mapping or a model-index it cannot parse
    data = card.data
    missing = [key for key in ("license", "library_name", "tags", "pipeline_tag") if not getattr(data, key)]
    if missing:
        raise ValueError(f"the model card lacks metadata the Hub indexes: {missing}")
    if checkpoint is None:
        return card
    if not data.datasets:
        raise ValueError(f"the card of {checkpoint.name} names no pretraining dataset")
    if data.base_model != checkpoint.base_model:
        raise ValueError(f"the card's base_model {data.base_model!r} is not {checkpoint.base_model!r}")
    parsed = {(r.dataset_name, r.dataset_split, r.metric_name): r.metric_value for r in data.eval_results or []}
    expected = {
        (benchmark.dataset_name, split, metric): value
        for benchmark, split, metric, value in (
            (*describe_result(key), value) for key, value in checkpoint.results.items()
        )
    }
    if parsed != expected:
        raise ValueError(f"the card's model-index {parsed} does not give the published results {expected}")
    return card


def write_cards(
    output_dir: str | Path, names: list[str], overwrite: bool = False, repo_id: str | None = None
) -> list[Path]:
    """Render, validate and write the cards of `names`; an existing different file needs `overwrite`.

    `repo_id` (one name only) is the repository the usage snippet loads from; by default vl-zoo/<name>.
    """
    if repo_id is not None and len(names) != 1:
        raise ValueError(f"repo_id={repo_id!r} names one repository, but {len(names)} cards were asked for")
    output_dir = Path(output_dir)
    texts = {name: render_card(PUBLISHED[name], repo_id) for name in names}
    clashes = [
        str(card_path(output_dir, name))
        for name, text in texts.items()
        if card_path(output_dir, name).exists() and card_path(output_dir, name).read_text() != text
    ]
    if clashes and not overwrite:
        raise FileExistsError(f"these cards exist with other content: {clashes}; pass --overwrite to replace them")
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        card_path(output_dir, name).write_text(text, encoding="utf-8")
    logger.info("wrote %d model cards into %s", len(texts), output_dir)
    return [card_path(output_dir, name) for name in names]
