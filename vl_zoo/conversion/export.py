"""Write a vl_zoo LXMERT- or VisualBERT-shaped model as a folder that transformers' own classes load.

    python conversion/export_transformers.py --model VL_ZOO_DIR --output DIR [--overwrite]

`vlzoo_lxmert` -> `LxmertForPreTraining` / `LxmertForQuestionAnswering` / `LxmertModel`;
`vlzoo_visual_bert` -> `VisualBertForPreTraining` / `VisualBertModel` (by the class saved in the folder's
config.json). The model must compute what transformers computes (LXMERT's layer pattern, no global region,
tanh text pooling, ...); anything else is refused with the list of differences. Tokenizer files found in the
source folder are copied along. The reverse of `convert_original.py --model hf-lxmert / hf-visualbert`.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig

from ..models import ARCHITECTURES
from .common import prepare_output_dir
from .originals import hf_lxmert, hf_visualbert

logger = logging.getLogger(__name__)

EXPORTERS = {"vlzoo_lxmert": hf_lxmert.to_transformers, "vlzoo_visual_bert": hf_visualbert.to_transformers}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def to_transformers(model: torch.nn.Module) -> transformers.PreTrainedModel:
    """The transformers model with exactly the weights of a vl_zoo LXMERT or VisualBERT model."""
    model_type = model.config.model_type
    if model_type not in EXPORTERS:
        raise ValueError(f"model_type={model_type!r} has no transformers counterpart; exportable: {sorted(EXPORTERS)}")
    return EXPORTERS[model_type](model)


def load_vl_zoo(folder: str | Path) -> torch.nn.Module:
    """The vl_zoo model saved in `folder`, as the class its config.json names (backbone, pretraining or VQA)."""
    config = AutoConfig.from_pretrained(folder)
    if config.model_type not in ARCHITECTURES:
        raise ValueError(f"--model {str(folder)!r} holds a {config.model_type!r} model, not a vl_zoo one")
    classes = {cls.__name__: cls for cls in ARCHITECTURES[config.model_type][1:]}
    saved = (config.architectures or [None])[0]
    if saved not in classes:
        raise ValueError(f"--model {str(folder)!r} saved a {saved!r}; exportable classes: {sorted(classes)}")
    return classes[saved].from_pretrained(folder).eval()


def export_folder(source: str | Path, output: str | Path, overwrite: bool = False) -> Path:
    """Export the vl_zoo folder `source` to a transformers folder `output` (written atomically)."""
    output = prepare_output_dir(output, overwrite)
    hf_model = to_transformers(load_vl_zoo(source))

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        hf_model.save_pretrained(staging)
        for name in TOKENIZER_FILES:
            if (Path(source) / name).is_file():
                shutil.copy(Path(source) / name, staging / name)
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("wrote %s (%s)", output, type(hf_model).__name__)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a vl_zoo model folder (LXMERT or VisualBERT)")
    parser.add_argument("--output", required=True, help="folder to write the transformers model into")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it is not empty")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        output = export_folder(args.model, args.output, args.overwrite)
    except (ValueError, FileExistsError, OSError) as error:
        raise SystemExit(f"export_transformers.py: {error}") from error
    print(f"wrote {output}; load it with transformers' own classes (no vl_zoo needed)")
