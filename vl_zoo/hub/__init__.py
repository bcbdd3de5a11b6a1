"""The Hugging Face Hub side of vl_zoo: pushing and loading checkpoints, self-contained remote code, model cards.

    from vl_zoo.hub import push_to_hub, load_model, load_processor

`push_to_hub(model, "org/name", processor, card)` uploads weights (safetensors), processor, the model code that
`trust_remote_code=True` loads without vl_zoo, and the card in one commit; `load_model` / `load_processor` load
by repo id and revision with clear errors for a missing revision or a repository of another architecture.
The `vl-zoo` command (vl_zoo/cli.py) wraps these.
"""

from .cards import render_card, validate_card
from .pull import HubCheckpoint, load_model, load_processor, resolve_checkpoint
from .push import push_to_hub, save_for_hub
from .remote_code import auto_map, remote_code_files, write_remote_code

__all__ = [
    "HubCheckpoint",
    "auto_map",
    "load_model",
    "load_processor",
    "push_to_hub",
    "remote_code_files",
    "render_card",
    "resolve_checkpoint",
    "save_for_hub",
    "validate_card",
    "write_remote_code",
]
