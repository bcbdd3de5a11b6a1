"""Compare a converted model with reference outputs dumped by the unified-framework release.

A reference folder (see tests/fixtures/volta/README.md) holds the release's inputs and outputs for one model.
This module feeds the same inputs to the converted vl_zoo model, translates the release's conventions (labels
-1 for "ignore", 0 for "matches", region targets without the global row) and reports the largest absolute
difference of every output.

    python -m vl_zoo.conversion.verify --model DIR --reference tests/fixtures/volta/ctrl_vilbert [--float64]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForPreTraining

logger = logging.getLogger(__name__)


def model_inputs_from_reference(inputs: dict[str, torch.Tensor], global_first: bool = True) -> dict[str, torch.Tensor]:
    """The release's forward arguments and labels, in vl_zoo's names and conventions."""
    labels = inputs["masked_lm_labels"].clone()
    labels[labels == -1] = -100
    batch, num_regions = inputs["image_feat"].shape[:2]

    # The release's region labels and class distributions skip the global row; vl_zoo's cover every row.
    extra = num_regions - inputs["image_label"].shape[1]
    region_mask = (inputs["image_label"] == 1).to(inputs["image_feat"].dtype)
    region_targets = inputs["image_cls"].to(inputs["image_feat"].dtype)
    if extra:
        pad_mask = region_mask.new_zeros(batch, extra)
        pad_targets = region_targets.new_zeros(batch, extra, region_targets.shape[-1])
        parts = ((pad_mask, region_mask), (pad_targets, region_targets))
        region_mask, region_targets = (torch.cat(p if global_first else p[::-1], dim=1) for p in parts)
    return {
        "input_ids": inputs["input_ids"],
        "attention_mask": inputs["attention_mask"],
        "token_type_ids": inputs["token_type_ids"],
        "visual_feats": inputs["image_feat"],
        "visual_pos": inputs["image_loc"],
        "visual_attention_mask": inputs["image_attention_mask"],
        "labels": labels,
        "region_targets": region_targets,
        "region_mask": region_mask,
        "itm_labels": 1 - inputs["next_sentence_label"],
    }


@torch.no_grad()
def compare_with_reference(model, reference_dir: str | Path, dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Largest absolute difference per release output, running `model` in `dtype` on the reference inputs."""
    reference_dir = Path(reference_dir)
    outputs_file = "outputs.safetensors" if dtype == torch.float32 else "outputs_fp64.safetensors"
    expected = load_file(reference_dir / outputs_file)
    inputs = {
        key: value.to(dtype) if value.is_floating_point() else value
        for key, value in load_file(reference_dir / "inputs.safetensors").items()
    }
    model = model.to(dtype).eval()
    global_first = model.config.add_global_imgfeat != "last"
    out = model(**model_inputs_from_reference(inputs, global_first), output_hidden_states=True)

    ours = {
        "sequence_output_t": out.text_last_hidden_state,
        "sequence_output_v": out.vision_last_hidden_state,
        "all_layers_t": torch.stack(out.text_hidden_states),
        "all_layers_v": torch.stack(out.vision_hidden_states),
        "pooled_output": out.pooler_output,
        "pooled_output_t": out.text_pooler_output,
        "pooled_output_v": out.vision_pooler_output,
        "prediction_scores_t": out.mlm_logits,
        "seq_relationship_score": out.itm_logits.flip(-1),  # the release's index 0 means "matches"
        "loss_mlm": out.mlm_loss,
        "loss_vis": out.region_loss,
        "loss_itm": out.itm_loss,
    }
    for target_id, logits in (out.region_logits_by_target or {}).items():
        ours[f"prediction_scores_v_{target_id}"] = logits

    missing = sorted(set(expected) - set(ours))
    if missing:
        raise KeyError(f"the reference has outputs this comparison does not produce: {missing}")
    return {key: (ours[key] - expected[key]).abs().max().item() for key in sorted(expected)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a converted vl_zoo folder (AutoModelForPreTraining)")
    parser.add_argument("--reference", required=True, help="a folder of the release's inputs and outputs")
    parser.add_argument("--float64", action="store_true", help="compare in float64 with the float64 reference")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import vl_zoo  # noqa: F401  (registers the architectures)

    model = AutoModelForPreTraining.from_pretrained(args.model)
    dtype = torch.float64 if args.float64 else torch.float32
    diffs = compare_with_reference(model, args.reference, dtype)
    tolerance = 1e-8 if args.float64 else 1e-5
    width = max(len(key) for key in diffs)
    lines = [f"{'output':<{width}}  max |vl_zoo - release|", f"{'-' * width}  {'-' * 24}"]
    lines += [f"{key:<{width}}  {value:.2e}" for key, value in diffs.items()]
    worst = max(diffs.values())
    lines.append(f"worst {worst:.2e} ({'within' if worst <= tolerance else 'OUTSIDE'} the tolerance {tolerance:g})")
    sys.stdout.write("\n".join(lines) + "\n")
    if worst > tolerance:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
