"""The published checkpoints vl_zoo knows how to convert: where they live, what they are, what they scored.

Two families. The eight checkpoints of the unified-framework release (Bugliarello et al., TACL 2021; e-bug/volta
`MODELS.md`): five models pretrained in the controlled ("ctrl") setting and three original architectures that the
release pretrained again on Conceptual Captions. They convert with `conversion/convert_volta.py`. Then the original
authors' own checkpoints, which convert with `conversion/convert_original.py --model NAME`.

Results are copied from the source named in `results_source` and only where that source states them; a missing
key means "not published there", never zero. Keys are `<task>_<split>` (`vqav2_test_dev`, `refcoco+_val`,
`nlvr2_test_p`, `flickr30k_ir_r1` for image retrieval Recall@1, `flickr30k_tr_r1` for text retrieval, ...).

`python -m vl_zoo.pretrained` prints the table (`vl-zoo list` prints the same).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

VOLTA_SOURCE = "https://github.com/e-bug/volta"
VOLTA_RESULTS = (
    "e-bug/volta MODELS.md (each model fine-tuned once from this checkpoint; VQAv2 test-dev, RefCOCO+ test, "
    "NLVR2 test-P, Flickr30k 1k test)"
)

CITATIONS = {
    "volta": """@article{bugliarello-etal-2021-multimodal,
  title = {Multimodal Pretraining Unmasked: {A} Meta-Analysis and a Unified Framework of Vision-and-Language {BERT}s},
  author = {Bugliarello, Emanuele and Cotterell, Ryan and Okazaki, Naoaki and Elliott, Desmond},
  journal = {Transactions of the Association for Computational Linguistics},
  volume = {9},
  pages = {978--994},
  year = {2021},
  url = {https://arxiv.org/abs/2011.15124}
}""",
    "vilbert": """@inproceedings{lu2019vilbert,
  title = {{ViLBERT}: Pretraining Task-Agnostic Visiolinguistic Representations for Vision-and-Language Tasks},
  author = {Lu, Jiasen and Batra, Dhruv and Parikh, Devi and Lee, Stefan},
  booktitle = {Advances in Neural Information Processing Systems},
  pages = {13--23},
  year = {2019}
}""",
    "vilbert-12in1": """@inproceedings{lu2020twelve,
  title = {12-in-1: Multi-Task Vision and Language Representation Learning},
  author = {Lu, Jiasen and Goswami, Vedanuj and Rohrbach, Marcus and Parikh, Devi and Lee, Stefan},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year = {2020}
}""",
    "lxmert": """@inproceedings{tan2019lxmert,
  title = {{LXMERT}: Learning Cross-Modality Encoder Representations from Transformers},
  author = {Tan, Hao and Bansal, Mohit},
  booktitle = {Proceedings of the 2019 Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  year = {2019}
}""",
    "vl-bert": """@inproceedings{su2020vlbert,
  title = {{VL-BERT}: Pre-training of Generic Visual-Linguistic Representations},
  author = {Su, Weijie and Zhu, Xizhou and Cao, Yue and Li, Bin and Lu, Lewei and Wei, Furu and Dai, Jifeng},
  booktitle = {International Conference on Learning Representations},
  year = {2020},
  url = {https://openreview.net/forum?id=SygXPaEYvH}
}""",
    "visualbert": """@article{li2019visualbert,
  title = {{VisualBERT}: A Simple and Performant Baseline for Vision and Language},
  author = {Li, Liunian Harold and Yatskar, Mark and Yin, Da and Hsieh, Cho-Jui and Chang, Kai-Wei},
  journal = {arXiv preprint arXiv:1908.03557},
  year = {2019}
}""",
    "uniter": """@inproceedings{chen2020uniter,
  title = {{UNITER}: UNiversal Image-TExt Representation Learning},
  author = {Chen, Yen-Chun and Li, Linjie and Yu, Licheng and El Kholy, Ahmed and Ahmed, Faisal and Gan, Zhe and
            Cheng, Yu and Liu, Jingjing},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year = {2020}
}""",
}


@dataclass(frozen=True)
class PublishedCheckpoint:
    """One published checkpoint and how vl_zoo reads it.

    Attributes:
        name: the zoo's name for it, unique in `PUBLISHED`.
        model_type: the vl_zoo architecture (`vlzoo_*`).
        preset: the config preset of that architecture that matches the checkpoint's layout and inputs.
        source: the repository that published it.
        url: the download address as the source publishes it (some are share pages, not direct files).
        license: the licence of the publishing repository.
        tokenizer: the BERT vocabulary the checkpoint was trained with.
        pretraining_data: the image-text (and text) corpora it was pretrained on.
        results: published downstream scores after fine-tuning from it, in percent; only those the source states.
        results_source: where `results` come from.
        citation: BibTeX of the paper(s) to cite.
        notes: what sets it apart from its siblings in this table.
        base_model: the checkpoint its weights started from, when that is itself a published model.
        converter: "volta" (conversion/convert_volta.py) or the `--model` of conversion/convert_original.py.
    """

    name: str
    model_type: str
    preset: str
    source: str
    url: str
    license: str
    tokenizer: str
    pretraining_data: tuple[str, ...]
    results: Mapping[str, float] = field(default_factory=dict, hash=False)
    results_source: str = ""
    citation: str = ""
    notes: str = ""
    base_model: str | None = None
    converter: str = "volta"

    def __post_init__(self) -> None:
        # A frozen record should not hand out a mutable dict: freeze the results mapping.
        if not isinstance(self.results, MappingProxyType):
            object.__setattr__(self, "results", MappingProxyType(dict(self.results)))

    def as_dict(self) -> dict[str, Any]:
        """A plain-JSON view (lists and dicts), e.g. for a model card's metadata."""
        return {
            "name": self.name,
            "model_type": self.model_type,
            "preset": self.preset,
            "source": self.source,
            "url": self.url,
            "license": self.license,
            "tokenizer": self.tokenizer,
            "pretraining_data": list(self.pretraining_data),
            "results": dict(self.results),
            "results_source": self.results_source,
            "citation": self.citation,
            "notes": self.notes,
            "base_model": self.base_model,
            "converter": self.converter,
        }


CONCEPTUAL_CAPTIONS = ("Conceptual Captions",)


def _volta(
    name: str, model_type: str, preset: str, url: str, results: dict[str, float], notes: str
) -> PublishedCheckpoint:
    """A checkpoint of the unified-framework release: CC-pretrained from bert-base-uncased, MIT, volta converter."""
    return PublishedCheckpoint(
        name=name,
        model_type=model_type,
        preset=preset,
        source=VOLTA_SOURCE,
        url=url,
        license="MIT",
        tokenizer="bert-base-uncased",
        pretraining_data=CONCEPTUAL_CAPTIONS,
        results=results,
        results_source=VOLTA_RESULTS,
        citation=CITATIONS["volta"],
        notes=notes,
        base_model="bert-base-uncased",
        converter="volta",
    )


def _ctrl(name: str, model_type: str, url: str, scores: tuple[float, ...], notes: str) -> PublishedCheckpoint:
    keys = ("vqav2_test_dev", "refcoco+_test", "nlvr2_test_p", "flickr30k_ir_r1", "flickr30k_tr_r1")
    return _volta(name, model_type, "ctrl", url, dict(zip(keys, scores, strict=True)), notes)


CTRL_NOTE = (
    "Controlled setting: same data (Conceptual Captions, 36 bottom-up regions plus a global row first, 5-d boxes), "
    "same hyper-parameters and 12 text-layer budget as the other four ctrl models; "
)

VOLTA_CHECKPOINTS = (
    _ctrl(
        "volta-ctrl-vilbert",
        "vlzoo_vilbert",
        "https://sid.erda.dk/share_redirect/aQCx8cLWK7",
        (68.97, 70.53, 72.24, 60.34, 78.80),
        CTRL_NOTE + "ViLBERT's dual stream with 768-wide co-attention (the original is 1024 wide).",
    ),
    _ctrl(
        "volta-ctrl-lxmert",
        "vlzoo_lxmert",
        "https://sid.erda.dk/share_redirect/Dp1g16DIA5",
        (67.52, 70.49, 71.09, 58.62, 74.90),
        CTRL_NOTE + "LXMERT's 9/5/5 layers with the ctrl pooler and heads, not LXMERT's own.",
    ),
    _ctrl(
        "volta-ctrl-vl-bert",
        "vlzoo_vl_bert",
        "https://sid.erda.dk/share_redirect/Dr8geMQyRd",
        (68.23, 71.23, 73.22, 57.62, 70.90),
        CTRL_NOTE + "VL-BERT's sin/cos box geometry; the release's text positions depend on the batch (see VLConfig).",
    ),
    _ctrl(
        "volta-ctrl-visualbert",
        "vlzoo_visual_bert",
        "https://sid.erda.dk/share_redirect/GCBlzUuoJl",
        (69.03, 70.02, 72.70, 61.48, 75.20),
        CTRL_NOTE + "VisualBERT's embedding has no box input at all.",
    ),
    _ctrl(
        "volta-ctrl-uniter",
        "vlzoo_uniter",
        "https://sid.erda.dk/share_redirect/FeYIWpMSFg",
        (68.67, 71.45, 73.73, 60.54, 76.40),
        CTRL_NOTE + "UNITER's embedding with 5-d boxes and the uncased vocabulary (the original uses 7-d, cased).",
    ),
    _volta(
        "volta-original-vilbert",
        "vlzoo_vilbert",
        "original",
        "https://sid.erda.dk/share_redirect/AgwrMiOjTv",
        {
            "vqav2_test_dev": 66.68,
            "refcoco+_test": 70.49,
            "nlvr2_test_p": 74.26,
            "flickr30k_ir_r1": 58.90,
            "flickr30k_tr_r1": 75.50,
        },
        "ViLBERT as published (1024-wide vision stream and co-attention), pretrained by the release on CC with "
        "ViLBERT's own hyper-parameters.",
    ),
    _volta(
        "volta-original-lxmert",
        "vlzoo_lxmert",
        "original",
        "https://sid.erda.dk/share_redirect/fYBrp01t8M",
        {"vqav2_test_dev": 67.98, "nlvr2_test_p": 71.58},
        "LXMERT as published (4-d boxes, no global row, text pooler, object/attribute/feature region targets), "
        "pretrained by the release on CC only, not on LXMERT's COCO+VG corpus.",
    ),
    _volta(
        "volta-original-vl-bert",
        "vlzoo_vl_bert",
        "original",
        "https://sid.erda.dk/share_redirect/cCMQ8SXHdf",
        {"vqav2_test_dev": 67.44, "refcoco+_test": 71.00},
        "VL-BERT as published (4-d boxes into sin/cos geometry, global row last, no pooler or matching head, "
        "hard-label region classification), pretrained by the release on CC without the text-only corpora.",
    ),
)

ORIGINAL_CHECKPOINTS = (
    PublishedCheckpoint(
        name="vilbert-multi-task-pretrained",
        model_type="vlzoo_vilbert",
        preset="original",
        source="https://github.com/facebookresearch/vilbert-multi-task",
        url="https://dl.fbaipublicfiles.com/vilbert-multi-task/pretrained_model.bin",
        license="MIT",
        tokenizer="bert-base-uncased",
        pretraining_data=CONCEPTUAL_CAPTIONS,
        results_source=(
            "none: the repository publishes no downstream score for the pretrained-only checkpoint (the 12-in-1 "
            "paper reports the multi-task model trained from it)"
        ),
        citation=CITATIONS["vilbert-12in1"] + "\n\n" + CITATIONS["vilbert"],
        notes=(
            "The 12-in-1 code base's Conceptual Captions pretraining (ResNeXt-152 Detectron features, up to 100 "
            "regions plus a mean global row first). Same layout as vilbert_beta; the two poolers use ReLU and are "
            "fused by product; the unused co-attention projections q_dense1/q_dense2 are dropped on conversion."
        ),
        base_model="bert-base-uncased",
        converter="vilbert",
    ),
    PublishedCheckpoint(
        name="vilbert-beta-pretrained",
        model_type="vlzoo_vilbert",
        preset="original",
        source="https://github.com/jiasenlu/vilbert_beta",
        url="https://drive.google.com/drive/folders/1Re0L75uazH3Qrep_aRgtaVelDEz4HV9c?usp=sharing",
        license="unspecified (the repository states no licence)",
        tokenizer="bert-base-uncased",
        pretraining_data=CONCEPTUAL_CAPTIONS,
        results={"vqav2_test_dev": 70.55, "refcoco+_val": 72.34, "flickr30k_ir_r1": 58.20},
        results_source=(
            "Lu et al., NeurIPS 2019 (arXiv:1908.02265), results of fine-tuning this pretrained model, as indexed "
            "by Papers with Code"
        ),
        citation=CITATIONS["vilbert"],
        notes=(
            "The checkpoint of the ViLBERT paper (bottom-up ResNet-101 features, up to 100 regions plus a mean "
            "global row first). Same key layout as vilbert-multi-task-pretrained."
        ),
        base_model="bert-base-uncased",
        converter="vilbert",
    ),
    PublishedCheckpoint(
        name="lxmert-pretrained",
        model_type="vlzoo_lxmert",
        preset="original_qa",
        source="https://github.com/airsplay/lxmert",
        url="http://nlp.cs.unc.edu/data/model_LXRT.pth",
        license="MIT",
        tokenizer="bert-base-uncased",
        pretraining_data=("MS COCO captions", "Visual Genome captions", "VQA v2.0", "GQA", "Visual Genome QA"),
        results={
            "vqav2_test_dev": 72.42,
            "vqav2_test_std": 72.54,
            "gqa_test_dev": 60.00,
            "gqa_test_std": 60.33,
            "nlvr2_dev": 74.10,
            "nlvr2_test_p": 74.50,
            "nlvr2_test_u": 76.18,
        },
        results_source="airsplay/lxmert README.md, 'Results (with this Github version)'",
        citation=CITATIONS["lxmert"],
        notes=(
            "The authors' own pretraining on COCO and Visual Genome with question answering as a pretraining task "
            "(9500-answer head kept); 36 bottom-up regions, 4-d boxes, no global row, tanh text pooler."
        ),
        base_model="bert-base-uncased",
        converter="lxmert",
    ),
    PublishedCheckpoint(
        name="vl-bert-base-prec",
        model_type="vlzoo_vl_bert",
        preset="original",
        source="https://github.com/jackroos/VL-BERT",
        url="https://drive.google.com/file/d/1YBFsyoWwz83VPzbimKymSBxE37gYtfgh/view?usp=sharing",
        license="MIT",
        tokenizer="bert-base-uncased",
        pretraining_data=("Conceptual Captions", "BooksCorpus", "English Wikipedia"),
        results={"vqav2_test_dev": 71.16},
        results_source=(
            "Su et al., ICLR 2020 (arXiv:1908.08530), VL-BERT-BASE, as indexed by Papers with Code; the paper does "
            "not say whether the 'prec' or the 'e2e' release produced it"
        ),
        citation=CITATIONS["vl-bert"],
        notes=(
            "The 'prec' release: pretrained on fixed, precomputed bottom-up features (10-100 regions) with the "
            "whole-image box added, so it fits vl_zoo's region-feature inputs. The 'e2e' release fine-tunes an "
            "in-model Fast R-CNN and needs raw images; vl_zoo does not convert it."
        ),
        base_model="bert-base-uncased",
        converter="vl-bert",
    ),
    PublishedCheckpoint(
        name="visualbert-vqa-coco-pre",
        model_type="vlzoo_visual_bert",
        preset="original",
        source="https://github.com/uclanlp/visualbert",
        url="https://drive.google.com/file/d/1tgYovjB6MZZlqdSAOPzB8bZqnFezWNBO/view?usp=sharing",
        license="MIT",
        tokenizer="bert-base-uncased",
        pretraining_data=("MS COCO captions",),
        results_source=(
            "none recorded: the paper's VQA score is for the model after task-specific pretraining and "
            "fine-tuning, not for this COCO pre-trained checkpoint alone"
        ),
        citation=CITATIONS["visualbert"],
        notes=(
            "COCO pre-training for VQA (2048-d Detectron 'fix_100' features, 100 regions, no boxes, no global "
            "row). The transformers port uclanlp/visualbert-vqa-coco-pre holds the same weights."
        ),
        base_model="bert-base-uncased",
        converter="visualbert",
    ),
    PublishedCheckpoint(
        name="visualbert-nlvr2-coco-pre",
        model_type="vlzoo_visual_bert",
        preset="original",
        source="https://github.com/uclanlp/visualbert",
        url="https://drive.google.com/file/d/1QvivVfRsRF518OQSQNaN7aFk6eQ43vP_/view?usp=sharing",
        license="MIT",
        tokenizer="bert-base-uncased",
        pretraining_data=("MS COCO captions",),
        results={"nlvr2_dev": 67.4, "nlvr2_test_p": 67.0, "nlvr2_test_u": 67.3},
        results_source=(
            "Li et al., arXiv:1908.03557, NLVR2 after task-specific pretraining and fine-tuning from this "
            "checkpoint, as indexed by Papers with Code"
        ),
        citation=CITATIONS["visualbert"],
        notes=(
            "COCO pre-training for NLVR2: 1024-d Detectron R-101-FPN fc6 features (150 regions), so its "
            "v_feature_size is 1024, unlike the VQA checkpoint."
        ),
        base_model="bert-base-uncased",
        converter="visualbert",
    ),
    PublishedCheckpoint(
        name="uniter-base",
        model_type="vlzoo_uniter",
        preset="original",
        source="https://github.com/ChenRocks/UNITER",
        url="https://convaisharables.blob.core.windows.net/uniter/pretrained/uniter-base.pt",
        license="MIT",
        tokenizer="bert-base-cased",
        pretraining_data=("MS COCO captions", "Visual Genome captions", "Conceptual Captions", "SBU Captions"),
        results_source=(
            "none recorded: the UNITER-base scores of the ECCV 2020 paper could not be checked against a "
            "readable copy of the paper here"
        ),
        citation=CITATIONS["uniter"],
        notes=(
            "Cased BERT vocabulary (28996 words); 10-100 adaptive bottom-up regions with 7-d boxes "
            "(x1, y1, x2, y2, w, h, w*h) and no global row; tanh pooler on [CLS]. The masked-region embedding and "
            "the feature-regression head are dropped on conversion."
        ),
        base_model="bert-base-cased",
        converter="uniter",
    ),
)

PUBLISHED: dict[str, PublishedCheckpoint] = {
    checkpoint.name: checkpoint for checkpoint in VOLTA_CHECKPOINTS + ORIGINAL_CHECKPOINTS
}


def get(name: str) -> PublishedCheckpoint:
    """The published checkpoint called `name`, with an error listing every known name otherwise."""
    if name not in PUBLISHED:
        raise ValueError(f"name={name!r} is not a published checkpoint vl_zoo knows; known: {sorted(PUBLISHED)}")
    return PUBLISHED[name]


TABLE_COLUMNS = ("name", "model_type", "preset", "tokenizer", "converter", "VQAv2", "licence")


def _row(checkpoint: PublishedCheckpoint) -> tuple[str, ...]:
    vqa = checkpoint.results.get("vqav2_test_dev")
    return (
        checkpoint.name,
        checkpoint.model_type,
        checkpoint.preset,
        checkpoint.tokenizer,
        checkpoint.converter,
        "-" if vqa is None else f"{vqa:.2f}",
        checkpoint.license.split(" ")[0],
    )


def format_table(checkpoints: list[PublishedCheckpoint] | None = None) -> str:
    """A plain-text table of the checkpoints (all of `PUBLISHED` by default), one per line.

    VQAv2 is the published test-dev accuracy after fine-tuning, "-" where the source gives none.
    """
    rows = [TABLE_COLUMNS] + [_row(c) for c in (checkpoints if checkpoints is not None else PUBLISHED.values())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main() -> None:
    """Print the table of published checkpoints."""
    print(format_table())


if __name__ == "__main__":
    main()
