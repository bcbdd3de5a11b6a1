"""Load vl_zoo models and processors from the Hub by repo id and revision, with errors that say what is wrong.

transformers' `from_pretrained` already downloads, caches and reuses files (offline too, with
`HF_HUB_OFFLINE=1`). What this module adds is a check before loading: the repository and revision exist, and
the repository holds a vl_zoo architecture. Without it, a wrong revision surfaces as a generic OSError and a
repository of another architecture either loads as something else (through the Auto classes) or fails deep
inside weight loading.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from transformers import AutoProcessor, PreTrainedModel, ProcessorMixin

from ..models import ARCHITECTURES
from .push import check_repo_id

logger = logging.getLogger(__name__)

# Which class of the architecture's ARCHITECTURES entry each head name loads.
HEADS = {"model": 1, "pretraining": 2, "vqa": 3}


@dataclass(frozen=True)
class HubCheckpoint:
    """A vl_zoo repository at one revision, as found on the Hub or in the local cache."""

    repo_id: str
    revision: str | None  # as asked (None: the default branch)
    commit: str  # the commit the revision resolved to
    model_type: str
    architectures: tuple[str, ...]


def resolve_checkpoint(repo_id: str, revision: str | None = None, **hub_kwargs: Any) -> HubCheckpoint:
    """Fetch `config.json` of `repo_id` at `revision` (or read it from the cache) and check it is vl_zoo's.

    Raises ValueError when the repository or revision does not exist, when the repository has no config.json,
    or when its `model_type` is not a vl_zoo architecture; FileNotFoundError when offline and not cached.
    `hub_kwargs` go to `hf_hub_download` (cache_dir, token, local_files_only).
    """
    check_repo_id(repo_id)
    try:
        path = hf_hub_download(repo_id, "config.json", revision=revision, **hub_kwargs)
    except RepositoryNotFoundError as error:
        raise ValueError(
            f"repo_id={repo_id!r}: no such model repository on the Hub (or it is private and no token with access "
            "was given)"
        ) from error
    except RevisionNotFoundError as error:
        raise ValueError(f"revision={revision!r} does not exist in {repo_id}; {_known_refs(repo_id)}") from error
    except LocalEntryNotFoundError as error:
        raise FileNotFoundError(
            f"{repo_id}@{revision or 'main'} is not in the local cache and the Hub cannot be reached (offline mode "
            "or no network); download it once while online"
        ) from error
    except EntryNotFoundError as error:
        raise ValueError(
            f"{repo_id}@{revision or 'main'} has no config.json, so it holds no transformers model and no vl_zoo "
            "architecture"
        ) from error

    config = json.loads(Path(path).read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"{repo_id}@{revision or 'main'} holds a model of type {model_type!r}, which is not a vl_zoo "
            f"architecture; vl_zoo loads {sorted(ARCHITECTURES)}"
        )
    commit = path.replace("\\", "/").split("/snapshots/")[-1].split("/")[0]
    return HubCheckpoint(repo_id, revision, commit, model_type, tuple(config.get("architectures") or ()))


def _known_refs(repo_id: str) -> str:
    """The branches and tags of a repository, for an error message (best effort: it needs the Hub)."""
    try:
        refs = HfApi().list_repo_refs(repo_id)
    except (HfHubHTTPError, OSError):
        return "give a branch, a tag or a full commit sha"
    branches = sorted(ref.name for ref in refs.branches)
    tags = sorted(ref.name for ref in refs.tags)
    return f"branches: {branches}, tags: {tags}, or give a full commit sha"


def load_model(repo_id: str, head: str = "pretraining", revision: str | None = None, **kwargs: Any) -> PreTrainedModel:
    """The vl_zoo model of `repo_id` at `revision`, with the given head.

    Args:
        head: "model" (the backbone with pooler), "pretraining" or "vqa".
        kwargs: passed to `from_pretrained` (cache_dir, token, local_files_only, dtype, ...).
    """
    if head not in HEADS:
        raise ValueError(f"head={head!r} is not supported; allowed: {sorted(HEADS)}")
    hub_kwargs = {key: kwargs[key] for key in ("cache_dir", "token", "local_files_only") if key in kwargs}
    checkpoint = resolve_checkpoint(repo_id, revision, **hub_kwargs)
    model_class = ARCHITECTURES[checkpoint.model_type][HEADS[head]]
    logger.info("loading %s from %s@%s (commit %s)", model_class.__name__, repo_id, revision, checkpoint.commit)
    return model_class.from_pretrained(repo_id, revision=checkpoint.commit, **kwargs)


def load_processor(repo_id: str, revision: str | None = None, **kwargs: Any) -> ProcessorMixin:
    """The `VLProcessor` of `repo_id` at `revision` (after the same checks as `load_model`)."""
    hub_kwargs = {key: kwargs[key] for key in ("cache_dir", "token", "local_files_only") if key in kwargs}
    checkpoint = resolve_checkpoint(repo_id, revision, **hub_kwargs)
    return AutoProcessor.from_pretrained(repo_id, revision=checkpoint.commit, **kwargs)
