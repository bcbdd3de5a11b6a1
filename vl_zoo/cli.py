"""`vl-zoo`: publish, convert, list and describe vl_zoo checkpoints.

    vl-zoo push DIR REPO_ID [--revision BRANCH] [--private] [--commit-message MSG] [--card NAME] [--tokenizer TOK]
    vl-zoo convert volta --checkpoint CKPT --config CONFIG.json [--output DIR] [--push-to REPO_ID] [--card NAME]
    vl-zoo convert original --model MODEL --checkpoint CKPT [--config CFG] [--output DIR] [--push-to REPO_ID] ...
    vl-zoo pull REPO_ID [--revision REV] [--head {model,pretraining,vqa}]
    vl-zoo list
    vl-zoo card (NAME | --all) [--output-dir model_cards] [--repo-id REPO_ID] [--overwrite]

A pushed repository holds the model (safetensors), its processor, self-contained model code for
`trust_remote_code=True` and a model card, all in one commit. Bad arguments exit with a message naming them.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedModel

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- push


def _load_folder_model(folder: Path) -> PreTrainedModel:
    """The vl_zoo model saved in `folder`, in the class its config.json names (strict loading)."""
    from .models import ARCHITECTURE_CLASSES

    config_path = folder / "config.json"
    if not config_path.is_file():
        raise SystemExit(f"DIR {str(folder)!r} has no config.json; give a folder written by save_pretrained")
    config = json.loads(config_path.read_text())
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURE_CLASSES:
        raise SystemExit(
            f"DIR {str(folder)!r} holds model_type={model_type!r}, not a vl_zoo architecture; "
            f"allowed: {sorted(ARCHITECTURE_CLASSES)}"
        )
    classes = {cls.__name__: cls for cls in ARCHITECTURE_CLASSES[model_type].values()}
    name = (config.get("architectures") or [None])[0]
    if name is not None and name not in classes:
        raise SystemExit(f"DIR {str(folder)!r} names architecture {name!r}; {model_type} has {sorted(classes)}")
    model_class = classes[name] if name is not None else next(iter(ARCHITECTURE_CLASSES[model_type].values()))
    return model_class.from_pretrained(folder)


def _processor_for(model: PreTrainedModel, folder: Path | None, tokenizer: str | None) -> Any:
    """The folder's saved processor, else one built around `tokenizer` for the model's config."""
    from .processing import VLProcessor

    if folder is not None and (folder / "processor_config.json").is_file():
        return VLProcessor.from_pretrained(folder)
    if tokenizer is None:
        where = f"DIR {str(folder)!r} has no processor_config.json; " if folder is not None else ""
        raise SystemExit(
            f"{where}pass --tokenizer PATH_OR_REPO_ID (the BERT vocabulary the model was trained with) so that a "
            "processor can be pushed with the model"
        )
    return VLProcessor.for_model(model.config, AutoTokenizer.from_pretrained(tokenizer))


def _card_for(model: PreTrainedModel, repo_id: str, name: str | None, folder: Path | None) -> str:
    """The published checkpoint's card, else the folder's README.md; a push without a card is refused."""
    from .hub.cards import render_card, validate_card

    if name is not None:
        checkpoint = _published(name)
        if checkpoint.model_type != model.config.model_type:
            raise SystemExit(
                f"--card {name} describes a {checkpoint.model_type} checkpoint, but the model is "
                f"{model.config.model_type}"
            )
        return render_card(checkpoint, repo_id)
    readme = folder / "README.md" if folder is not None else None
    if readme is not None and readme.is_file():
        text = readme.read_text(encoding="utf-8")
        try:
            validate_card(text)
        except ValueError as error:
            raise SystemExit(f"{readme} is not a valid model card: {error}") from error
        return text
    raise SystemExit(
        "no model card: pass --card NAME for a published checkpoint (see `vl-zoo list`), or write README.md into "
        "the model folder (`vl-zoo card NAME` writes one to start from)"
    )


def _published(name: str):
    from .pretrained import get

    try:
        return get(name)
    except ValueError as error:
        raise SystemExit(f"--card: {error}") from error


def cmd_push(args: argparse.Namespace) -> None:
    from .hub.push import check_repo_id, push_to_hub

    folder = Path(args.dir)
    _check(check_repo_id, args.repo_id, "REPO_ID")
    model = _load_folder_model(folder)
    processor = _processor_for(model, folder, args.tokenizer)
    card = _card_for(model, args.repo_id, args.card, folder)
    extra = [folder / "conversion_report.json"] if (folder / "conversion_report.json").is_file() else []
    commit = push_to_hub(
        model, args.repo_id, processor, card, args.revision, args.private or None, args.commit_message, extra
    )
    print(f"pushed {model.config.model_type} to {args.repo_id}@{args.revision or 'main'}: {commit.commit_url}")


def _check(function, value: str, name: str) -> None:
    try:
        function(value)
    except ValueError as error:
        raise SystemExit(f"{name}: {error}") from error


# ---------------------------------------------------------------------------------------------- convert


def _convert_volta(args: argparse.Namespace) -> tuple[PreTrainedModel, dict, Any, str | None]:
    """The release converter: model, report, region-processor settings (None: from the config), tokenizer."""
    from .conversion.common import ConversionError
    from .conversion.volta import convert

    try:
        model, report = convert(args.checkpoint, args.config)
    except (ValueError, NotImplementedError, ConversionError, FileNotFoundError) as error:
        raise SystemExit(f"convert volta: {error}") from error
    return model, report, None, None


def _convert_original(args: argparse.Namespace) -> tuple[PreTrainedModel, dict, Any, str | None]:
    """The original-checkpoint converter (conversion/convert_original.py's `convert_file`)."""
    from .conversion.common import ConversionError
    from .conversion.originals.cli import convert_file

    try:
        result = convert_file(args.model, args.checkpoint, args.original_config)
    except (ValueError, ConversionError, FileNotFoundError) as error:
        raise SystemExit(f"convert original: {error}") from error
    source = {"model": args.model, "checkpoint": str(args.checkpoint), "config": args.original_config}
    report = {"source": source, "model_type": result.config.model_type, "task": result.task, **result.report.to_dict()}
    return result.build_model(), report, result.processor, result.tokenizer


def cmd_convert(args: argparse.Namespace) -> None:
    from .hub.cards import default_repo_id
    from .hub.push import check_repo_id, push_to_hub, save_for_hub
    from .processing import VLProcessor

    if args.output is None and args.push_to is None:
        raise SystemExit("give --output DIR, --push-to REPO_ID or both")
    if args.push_to is not None:
        _check(check_repo_id, args.push_to, "--push-to")
        if args.card is None:
            raise SystemExit("--push-to needs --card NAME (the published checkpoint this is; see `vl-zoo list`)")
    output = Path(args.output) if args.output is not None else None
    if output is not None and output.exists() and any(output.iterdir()) and not args.overwrite:
        raise SystemExit(f"--output {str(output)!r} exists and is not empty; pass --overwrite to replace it")
    checkpoint = _published(args.card) if args.card is not None else None
    expected = "volta" if args.source == "volta" else args.model
    if checkpoint is not None and checkpoint.converter != expected:
        raise SystemExit(f"--card {args.card} is converted by {checkpoint.converter!r}, not by {expected!r}")

    model, report, region_processor, tokenizer = (_convert_volta if args.source == "volta" else _convert_original)(
        args
    )
    tokenizer = args.tokenizer or tokenizer or (checkpoint.tokenizer if checkpoint is not None else None)
    if tokenizer is None:
        raise SystemExit("pass --tokenizer PATH_OR_REPO_ID (or --card NAME, whose record names the tokenizer)")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    processor = (
        VLProcessor(tokenizer, region_processor)
        if region_processor is not None
        else VLProcessor.for_model(model.config, tokenizer)
    )
    card = _card_for(model, args.push_to or default_repo_id(checkpoint), args.card, None) if checkpoint else None

    with tempfile.TemporaryDirectory(prefix="vl_zoo_convert_") as staging:
        report_path = Path(staging) / "conversion_report.json"
        report_path.write_text(json.dumps(report, indent=2) + "\n")
        if output is not None:
            _save_atomically(model, output, processor, card, [report_path], args.overwrite, save_for_hub)
            print(f"wrote {model.config.model_type} to {output}")
        if args.push_to is not None:
            commit = push_to_hub(
                model,
                args.push_to,
                processor,
                card,
                args.revision,
                args.private or None,
                args.commit_message,
                [report_path],
            )
            print(f"pushed {model.config.model_type} to {args.push_to}@{args.revision or 'main'}: {commit.commit_url}")


def _save_atomically(model, output: Path, processor, card, extra, overwrite: bool, save_for_hub) -> None:
    """Write the repository content into a sibling folder, then move it into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        save_for_hub(model, staging / "repo", processor, card, extra)
        if output.exists():
            if not overwrite:
                raise SystemExit(f"--output {str(output)!r} appeared while converting; not replacing it")
            shutil.rmtree(output)
        (staging / "repo").rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- pull, list, card


def cmd_pull(args: argparse.Namespace) -> None:
    from .hub.pull import load_model, load_processor

    try:
        model = load_model(args.repo_id, args.head, args.revision)
        processor = load_processor(args.repo_id, args.revision)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(str(error)) from error
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"{args.repo_id}@{args.revision or 'main'}: {type(model).__name__} ({model.config.model_type}), "
        f"{parameters:,} parameters; processor: {type(processor).__name__} with max_regions={processor.max_regions}"
    )


def cmd_list(args: argparse.Namespace) -> None:
    from .pretrained import format_table

    print(format_table())


def cmd_card(args: argparse.Namespace) -> None:
    from .hub.cards import write_cards
    from .pretrained import PUBLISHED

    if args.all == (args.name is not None):
        raise SystemExit("give either a checkpoint NAME or --all")
    if args.all and args.repo_id is not None:
        raise SystemExit("--repo-id names one repository; give it with a checkpoint NAME, not with --all")
    names = sorted(PUBLISHED) if args.all else [_published(args.name).name]
    try:
        paths = write_cards(args.output_dir, names, args.overwrite, args.repo_id)
    except FileExistsError as error:
        raise SystemExit(str(error)) from error
    for path in paths:
        print(path)


# ---------------------------------------------------------------------------------------------- parser


def _add_push_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", help="branch to commit to (created from main when missing); default main")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--commit-message", help="the commit's message")
    parser.add_argument("--card", help="name of the published checkpoint whose model card to push (vl-zoo list)")
    parser.add_argument("--tokenizer", help="tokenizer folder or Hub id to build the processor from")


def build_parser() -> argparse.ArgumentParser:
    from .conversion.originals import MODULES

    parser = argparse.ArgumentParser(prog="vl-zoo", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    push = commands.add_parser("push", help="upload a saved model folder with processor, code and card")
    push.add_argument("dir", help="folder written by save_pretrained (or by vl-zoo convert --output)")
    push.add_argument("repo_id", help="namespace/name on the Hub")
    _add_push_options(push)
    push.set_defaults(func=cmd_push)

    convert = commands.add_parser("convert", help="convert a published checkpoint, then save and/or push it")
    sources = convert.add_subparsers(dest="source", required=True)
    volta = sources.add_parser("volta", help="a checkpoint of the unified-framework release")
    volta.add_argument("--checkpoint", required=True, help="the release's torch.save'd state dict (.bin)")
    volta.add_argument("--config", required=True, help="the release's config JSON of that checkpoint")
    original = sources.add_parser("original", help="an original authors' checkpoint")
    original.add_argument("--model", required=True, choices=sorted(MODULES), help="the checkpoint's layout")
    original.add_argument("--checkpoint", required=True, help="the authors' checkpoint file")
    original.add_argument("--config", dest="original_config", help="the authors' config file, when there is one")
    for sub in (volta, original):
        sub.add_argument("--output", help="folder to write the repository content into")
        sub.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
        sub.add_argument("--push-to", help="namespace/name on the Hub to push to")
        _add_push_options(sub)
        sub.set_defaults(func=cmd_convert)

    pull = commands.add_parser("pull", help="download and check a vl_zoo repository")
    pull.add_argument("repo_id", help="namespace/name on the Hub")
    pull.add_argument("--revision", help="branch, tag or commit sha")
    pull.add_argument("--head", default="pretraining", choices=("model", "pretraining", "vqa"))
    pull.set_defaults(func=cmd_pull)

    listing = commands.add_parser("list", help="print the table of published checkpoints")
    listing.set_defaults(func=cmd_list)

    card = commands.add_parser("card", help="write the model card of a published checkpoint")
    card.add_argument("name", nargs="?", help="the checkpoint's name (vl-zoo list)")
    card.add_argument("--all", action="store_true", help="every published checkpoint")
    card.add_argument("--output-dir", default="model_cards", help="folder for <name>.md (default model_cards)")
    card.add_argument("--repo-id", help="repository the usage snippet loads from (default vl-zoo/<name>)")
    card.add_argument("--overwrite", action="store_true", help="replace cards that exist with other content")
    card.set_defaults(func=cmd_card)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `vl-zoo` console command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
