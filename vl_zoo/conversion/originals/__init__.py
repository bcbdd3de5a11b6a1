"""Converters of the original authors' checkpoints and of the transformers ports of VisualBERT and LXMERT.

One module per source, each with `convert(state_dict, original_config) -> OriginalConversion` (common.py);
`conversion/convert_original.py` (cli.py here) reads the file, dispatches on `--model` and saves the folder.
"""

from __future__ import annotations

import importlib

import torch

from .common import OriginalConversion

# --model name -> module of this package
MODULES = {
    "vilbert": "vilbert",
    "lxmert": "lxmert",
    "vl-bert": "vl_bert",
    "visualbert": "visual_bert",
    "uniter": "uniter",
    "hf-lxmert": "hf_lxmert",
    "hf-visualbert": "hf_visualbert",
}


def convert_original(
    model: str, state_dict: dict[str, torch.Tensor], original_config: dict | None = None
) -> OriginalConversion:
    """Convert an (unwrapped) state dict of the source named by `model` (a key of MODULES)."""
    if model not in MODULES:
        raise ValueError(f"--model {model!r} is not supported; allowed: {sorted(MODULES)}")
    module = importlib.import_module(f"{__name__}.{MODULES[model]}")
    return module.convert(state_dict, original_config)
