"""Convert an original authors' checkpoint (or a transformers port's) into a vl_zoo model folder.

    python conversion/convert_original.py --model lxmert --checkpoint Epoch20_LXRT.pth --output DIR
    python conversion/convert_original.py --model visualbert --checkpoint vqa_coco_pre_train.th \\
        --config visualbert/configs/vqa/coco-pre-train.json --output DIR --tokenizer bert-base-uncased/

The folder holds config.json and model.safetensors (loaded by the Auto class of the converted task),
processor_config.json (the region processor set up as the original's data loader), README.md (a short card)
and conversion_report.json (every key mapped or dropped with its reason, the container, the dtype cast).
The tokenizer the original expects is recorded as `bert_model` in config.json and in the report; with
`--tokenizer DIR` (a local tokenizer folder) it is saved into the folder too, and otherwise
`AutoProcessor.from_pretrained(DIR)` works once that tokenizer's files are saved there
(`AutoTokenizer.from_pretrained(<tokenizer folder>).save_pretrained(DIR)`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, BertTokenizer

from ...processing import RegionFeatureProcessor, VLProcessor
from ..common import ConversionError, prepare_output_dir, staged_output
from . import MODULES, convert_original
from .common import OriginalConversion, read_checkpoint, read_original_config

logger = logging.getLogger(__name__)

AUTO_CLASSES = {"pretraining": "AutoModelForPreTraining", "vqa": "AutoModelForVisualQuestionAnswering"}


def convert_file(model: str, checkpoint: str | Path, config: str | Path | None = None) -> OriginalConversion:
    """Read a checkpoint file (and the original's config file) and convert it; the report records the container."""
    state, container = read_checkpoint(checkpoint)
    original_config = read_original_config(config) if config is not None else None
    result = convert_original(model, state, original_config)
    result.report.container = container
    return result


def save_conversion(
    result: OriginalConversion,
    output: Path,
    source: dict[str, Any],
    overwrite: bool = False,
    tokenizer_dir: str | Path | None = None,
) -> None:
    """Write the model, its processor settings, a card and the report into a staging folder, check that the
    model loads back with identical tensors, then move the folder into place."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir is not None else None
    model = result.build_model()
    model.config.bert_model = result.tokenizer

    with staged_output(output, overwrite) as staging:
        model.save_pretrained(staging)
        save_processor(result.processor, staging, tokenizer)
        report = {
            "source": source,
            "model_type": result.config.model_type,
            "task": result.task,
            "tokenizer": result.tokenizer,
            "tokenizer_saved": tokenizer is not None,
            "processor": result.processor.to_dict(),
            **result.report.to_dict(),
        }
        (staging / "conversion_report.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "README.md").write_text(model_card(result, source, str(output), tokenizer is not None))
        check_reloads(result, staging)


def save_processor(processor: RegionFeatureProcessor, folder: Path, tokenizer: Any | None) -> None:
    """Save a VLProcessor; without a tokenizer, only its processor_config.json (the region settings)."""
    if tokenizer is not None:
        VLProcessor(tokenizer, processor).save_pretrained(folder)
        return
    # VLProcessor needs a tokenizer to exist; a two-word one serialises the region settings (none of its own
    # files are written), so processor_config.json is exactly what VLProcessor.from_pretrained reads.
    placeholder = BertTokenizer(vocab={"[PAD]": 0, "[UNK]": 1})
    (folder / "processor_config.json").write_text(VLProcessor(placeholder, processor).to_json_string())


def check_reloads(result: OriginalConversion, folder: Path) -> None:
    """The saved folder loads into the converted class with every tensor as converted."""
    loaded = result.model_class.from_pretrained(folder).state_dict()
    differing = [key for key, value in result.state_dict.items() if not torch.equal(loaded[key], value)]
    if differing:
        raise ConversionError(f"the saved model does not reload as converted: {differing}")


def model_card(result: OriginalConversion, source: dict[str, Any], folder: str, tokenizer_saved: bool) -> str:
    """A short card: what was converted, how to load it, what to feed it."""
    auto = AUTO_CLASSES.get(result.task, "AutoModel")
    processor = result.processor
    tokenizer_line = (
        "The tokenizer is saved in this folder."
        if tokenizer_saved
        else f"Save the `{result.tokenizer}` tokenizer into this folder before `AutoProcessor.from_pretrained`."
    )
    notes = "".join(f"- {note}\n" for note in result.report.notes)
    return f"""# {Path(str(source["checkpoint"])).name} as a vl_zoo {result.config.model_type} model

Converted from `{source["checkpoint"]}` (`--model {source["model"]}`) by `conversion/convert_original.py`.

```python
import vl_zoo
from transformers import {auto}, AutoProcessor

model = {auto}.from_pretrained("{folder}")
processor = AutoProcessor.from_pretrained("{folder}")
```

Tokenizer: `{result.tokenizer}`. {tokenizer_line}
Regions: up to {processor.max_regions} per image, global region: {processor.add_global_feature or "none"}; give
region features, pixel boxes and image sizes to the processor.

{notes}
`conversion_report.json` lists every source key and where it went, or why it was dropped.
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=sorted(MODULES), help="the layout of the checkpoint")
    parser.add_argument("--checkpoint", required=True, help="the checkpoint file as its authors saved it")
    parser.add_argument("--config", help="the original's config file (JSON, or YAML for VL-BERT)")
    parser.add_argument("--output", required=True, help="folder to write the converted model into")
    parser.add_argument("--tokenizer", help="a local tokenizer folder to save into the output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace the output folder if it is not empty")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        output = prepare_output_dir(args.output, args.overwrite)
        result = convert_file(args.model, args.checkpoint, args.config)
        source = {"model": args.model, "checkpoint": str(args.checkpoint), "config": args.config}
        save_conversion(result, output, source, args.overwrite, args.tokenizer)
    except (ValueError, ConversionError, FileNotFoundError, FileExistsError) as error:
        raise SystemExit(f"convert_original.py: {error}") from error

    report = result.report
    print(
        f"converted {len(report.mapped)} tensors into {output} ({result.config.model_type}, {result.task}); "
        f"dropped {len(report.dropped)} source keys; cast {report.dtype_cast or 'nothing'}; tokenizer "
        f"{result.tokenizer}"
    )
