"""Publish a vl_zoo model to the Hub: weights, processor, remote code and model card in one commit.

`save_for_hub` writes what a repository holds into a folder: `config.json` (with `auto_map`) and
`model.safetensors` from `save_pretrained`, the processor's files, the self-contained model code generated
from the package (see remote_code.py) and `README.md`. `push_to_hub` stages that folder and uploads it with
one `upload_folder` call, so a repository never shows weights without their code or card. Files a previous
push left that this push does not write (weights, code) are deleted in the same commit; the Hub keeps them
in the repository's history.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi
from transformers import PreTrainedModel, ProcessorMixin

from ..models import ARCHITECTURES
from .cards import validate_card
from .remote_code import write_remote_code

logger = logging.getLogger(__name__)

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Files of an earlier push that this push replaces: weights in any layout and generated code.
REPLACED_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.bin", "*.py"]


def check_repo_id(repo_id: str) -> str:
    """A repo id is "namespace/name"; ValueError otherwise."""
    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id) or ".." in repo_id:
        raise ValueError(f"repo_id={repo_id!r} is not a Hub repository id; expected 'namespace/name'")
    return repo_id


def check_vl_zoo_model(model: PreTrainedModel) -> str:
    """The model's `model_type`, or ValueError when it is not one of the five vl_zoo architectures."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"model is a {type(model).__name__} with model_type={model_type!r}, not a vl_zoo architecture; "
            f"allowed: {sorted(ARCHITECTURES)}"
        )
    return model_type


def save_for_hub(
    model: PreTrainedModel,
    folder: str | Path,
    processor: ProcessorMixin | None = None,
    card: str | None = None,
    extra_files: list[Path] | None = None,
) -> list[str]:
    """Write a repository's content into the empty folder `folder`; returns the file names written.

    Args:
        model: a vl_zoo model (any head).
        folder: an empty or missing folder.
        processor: the model's `VLProcessor`; without it the repository holds no tokenizer.
        card: the model card (README.md), validated with huggingface_hub's ModelCard first.
        extra_files: files copied in as they are (e.g. a converter's `conversion_report.json`).
    """
    model_type = check_vl_zoo_model(model)
    if card is not None:
        validate_card(card)
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; save_for_hub writes a repository's content into a new folder")
    folder.mkdir(parents=True, exist_ok=True)

    model.save_pretrained(folder)
    if processor is not None:
        processor.save_pretrained(folder)
    write_remote_code(folder, model_type)
    if card is not None:
        (folder / "README.md").write_text(card, encoding="utf-8")
    for path in extra_files or []:
        shutil.copyfile(path, folder / Path(path).name)
    _check_saved(folder)
    return sorted(path.name for path in folder.iterdir())


def _check_saved(folder: Path) -> None:
    """The folder holds safetensors weights only, and a config with the auto_map."""
    if not (folder / "model.safetensors").is_file() and not (folder / "model.safetensors.index.json").is_file():
        raise RuntimeError(f"save_pretrained wrote no safetensors weights into {folder}")
    pickled = sorted(path.name for path in folder.glob("*.bin"))
    if pickled:
        raise RuntimeError(f"{folder} holds pickled weights {pickled}; only safetensors are pushed")
    if "auto_map" not in json.loads((folder / "config.json").read_text()):
        raise RuntimeError(f"{folder}/config.json has no auto_map after writing the remote code")


def push_to_hub(
    model: PreTrainedModel,
    repo_id: str,
    processor: ProcessorMixin | None = None,
    card: str | None = None,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    extra_files: list[Path] | None = None,
    token: str | None = None,
) -> CommitInfo:
    """Upload model, processor, remote code and card to `repo_id` in one commit; returns the commit.

    Args:
        revision: the branch to commit to (created from main when missing); main by default.
        private: create the repository private (only when it does not exist yet).
        commit_message: defaults to "Upload <model_type> with vl_zoo".
        token: a Hub token; by default the one `hf auth login` stored.
    """
    check_repo_id(repo_id)
    model_type = check_vl_zoo_model(model)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="vl_zoo_push_") as staging:
        files = save_for_hub(model, Path(staging) / "repo", processor, card, extra_files)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=Path(staging) / "repo",
            revision=revision,
            commit_message=commit_message or f"Upload {model_type} with vl_zoo",
            delete_patterns=REPLACED_PATTERNS,
        )
    logger.info("pushed %d files to %s@%s: %s", len(files), repo_id, revision or "main", commit.commit_url)
    return commit
