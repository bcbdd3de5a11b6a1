"""The Hub side against a loopback Hub: push, pull, pinned revisions, the offline cache, remote code, the CLI.

Every request goes to `fake_hub.FakeHub` on 127.0.0.1 through the real huggingface_hub client; nothing
reaches the internet. The trust_remote_code load runs in a subprocess in which `import vl_zoo` fails.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import VOLTA_FIXTURES, make_inputs, randomize_, tiny_config
from fake_hub import serving
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import OfflineModeIsEnabled
from safetensors.torch import save_file
from transformers import (
    AutoModelForPreTraining,
    BertConfig,
    BertModel,
    BertTokenizer,
    LxmertConfig,
    LxmertForPreTraining,
)
from transformers.dynamic_module_utils import get_imports

import vl_zoo
from vl_zoo.cli import main
from vl_zoo.conversion.originals.cli import convert_file
from vl_zoo.conversion.volta import convert
from vl_zoo.hub import remote_code
from vl_zoo.hub.cards import render_card
from vl_zoo.hub.pull import load_model, load_processor, resolve_checkpoint
from vl_zoo.hub.push import push_to_hub
from vl_zoo.models import ARCHITECTURES
from vl_zoo.pretrained import PUBLISHED, format_table
from vl_zoo.processing import VLProcessor

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "on", "the", "couch", "red", "ball"]
OUTPUT_FIELDS = ("text_last_hidden_state", "vision_last_hidden_state", "pooler_output", "itm_logits")


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with serving(monkeypatch, tmp_path / "hub_cache") as fake:
        yield fake


def tiny_model(model_type: str = "vlzoo_uniter", seed: int = 0):
    """A tiny pretraining model with every weight random (no zero-initialised tensor hides a mix-up)."""
    return randomize_(AutoModelForPreTraining.from_config(tiny_config(model_type)), seed).eval()


def tiny_processor(model) -> VLProcessor:
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)})
    return VLProcessor.for_model(model.config, tokenizer, max_regions=4)


def outputs(model, inputs) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        result = model(**inputs)
    return {name: getattr(result, name) for name in OUTPUT_FIELDS}


def assert_same_outputs(model, reference) -> None:
    inputs = make_inputs(reference.config)
    expected, got = outputs(reference, inputs), outputs(model, inputs)
    for name in OUTPUT_FIELDS:
        assert torch.equal(got[name], expected[name]), name


def card(repo_id: str, model_type: str = "vlzoo_uniter") -> str:
    name = next(c.name for c in PUBLISHED.values() if c.model_type == model_type and c.preset == "ctrl")
    return render_card(PUBLISHED[name], repo_id)


# ---------------------------------------------------------------------------------------------- remote code


def _resolve(module: str, dots: int, name: str) -> str:
    """An independent reading of a relative import: `from ..a.b import` in vl_zoo/x/y.py is vl_zoo.a.b."""
    parts = module.split(".")
    package = parts if remote_code.module_source_path(module).name == "__init__.py" else parts[:-1]
    return ".".join(package[: len(package) - dots + 1] + ([name] if name else []))


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_generated_files_are_the_package_sources_with_flat_imports(model_type, tmp_path):
    files = remote_code.remote_code_files(model_type)
    modules = remote_code.required_modules([remote_code.entry_module(model_type), remote_code.PROCESSOR_MODULE])
    assert sorted(files) == sorted(f"{remote_code.flat_module_name(m)}.py" for m in modules)
    relative = re.compile(r"^(\s*)from (\.+)([\w.]*) import (.*)$")
    for module in modules:
        name = f"{remote_code.flat_module_name(module)}.py"
        original = remote_code.module_source_path(module).read_text().splitlines()
        shipped = files[name].splitlines()[remote_code.BANNER.count("\n") :]
        assert len(shipped) == len(original), name
        for ours, theirs in zip(shipped, original, strict=True):
            if ours == theirs:
                continue
            indent, dots, target, names = relative.match(theirs).groups()
            flat = _resolve(module, len(dots), target).replace(".", "_")
            assert ours == f"{indent}from .{flat} import {names}", (name, ours, theirs)

        # transformers copies exactly the files these relative imports name, and checks the rest is installed.
        for target in re.findall(r"^\s*from \.(\w+) import", files[name], flags=re.MULTILINE):
            assert f"{target}.py" in files, (name, target)
        (tmp_path / name).write_text(files[name])
        assert "vl_zoo" not in get_imports(tmp_path / name)

    entry = files[remote_code.auto_map(model_type)["AutoConfig"].split(".")[0] + ".py"]
    defined = {node.name for node in ast.parse(entry).body if isinstance(node, ast.ClassDef)}
    assert {ref.split(".")[1] for ref in remote_code.auto_map(model_type).values()} <= defined


def test_drift_check_catches_an_edited_file():
    module = remote_code.entry_module("vlzoo_vilbert")
    generated = remote_code.flatten_module(module, "0.0.0")
    remote_code.check_generated_source(module, generated)  # another version's banner is not drift
    with pytest.raises(remote_code.RemoteCodeError, match="drifted"):
        remote_code.check_generated_source(module, generated.replace("class ViLBertConfig", "class Other"))


# ---------------------------------------------------------------------------------------------- push and pull


def test_push_then_pull_round_trip(hub):
    model = tiny_model()
    processor = tiny_processor(model)
    commit = push_to_hub(model, "org/tiny-uniter", processor, card("org/tiny-uniter"), commit_message="first")

    # One commit holds weights (safetensors only), config with auto_map, processor, code and card.
    assert hub.count("POST", "/commit/") == 1
    files = hub.files_at("org/tiny-uniter")
    assert {"config.json", "model.safetensors", "processor_config.json", "README.md", "tokenizer.json"} <= set(files)
    assert set(remote_code.remote_code_files("vlzoo_uniter")) <= set(files)
    assert not [name for name in files if name.endswith(".bin")]
    config = json.loads(files["config.json"])
    assert config["auto_map"] == remote_code.auto_map("vlzoo_uniter")
    assert json.loads(files["processor_config.json"])["auto_map"] == remote_code.processor_auto_map()
    assert hub.repos["org/tiny-uniter"].commits[commit.oid].message == "first"

    pulled = load_model("org/tiny-uniter")
    assert type(pulled) is vl_zoo.UniterForPreTraining
    assert_same_outputs(pulled, model)
    assert hub.count("GET", "/blobs/") == 1  # the weights came through the CDN redirect, as LFS files do

    # With vl_zoo imported, trust_remote_code=True still gives vl_zoo's registered class.
    remote = AutoModelForPreTraining.from_pretrained("org/tiny-uniter", trust_remote_code=True)
    assert type(remote) is vl_zoo.UniterForPreTraining

    pulled_processor = load_processor("org/tiny-uniter")
    assert isinstance(pulled_processor, VLProcessor)
    assert pulled_processor.max_regions == 4
    assert (
        pulled_processor("a dog on the couch")["input_ids"].tolist()
        == processor("a dog on the couch")["input_ids"].tolist()
    )


def test_pinned_revisions(hub):
    first, second, branch = tiny_model(seed=1), tiny_model(seed=2), tiny_model(seed=3)
    processor = tiny_processor(first)
    pinned = push_to_hub(first, "org/pinned", processor).oid
    push_to_hub(second, "org/pinned", processor)
    push_to_hub(branch, "org/pinned", processor, revision="experiment")
    HfApi().create_tag("org/pinned", tag="v1", revision=pinned)

    assert_same_outputs(load_model("org/pinned", revision=pinned), first)
    assert_same_outputs(load_model("org/pinned", revision="v1"), first)
    assert_same_outputs(load_model("org/pinned"), second)
    assert_same_outputs(load_model("org/pinned", revision="experiment"), branch)
    assert resolve_checkpoint("org/pinned", revision="v1").commit == pinned

    with pytest.raises(ValueError, match=r"revision='nope' does not exist in org/pinned; .*experiment.*main.*v1"):
        load_model("org/pinned", revision="nope")


def test_offline_reuse_from_the_cache(hub, monkeypatch):
    model = tiny_model("vlzoo_vilbert")
    commit = push_to_hub(model, "org/offline", tiny_processor(model)).oid
    load_model("org/offline")
    load_processor("org/offline")
    seen = len(hub.requests)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_same_outputs(load_model("org/offline"), model)
    assert_same_outputs(load_model("org/offline", revision=commit), model)
    assert load_processor("org/offline").max_regions == 4
    assert len(hub.requests) == seen  # nothing asked of the Hub
    with pytest.raises(FileNotFoundError, match="not in the local cache"):
        load_model("org/offline", revision="never-downloaded")
    with pytest.raises(OfflineModeIsEnabled):
        HfApi().model_info("org/offline")


def test_clear_errors_for_what_is_not_a_vl_zoo_checkpoint(hub, tmp_path):
    with pytest.raises(ValueError, match="repo_id='org/missing': no such model repository"):
        load_model("org/missing")
    with pytest.raises(ValueError, match="not a Hub repository id"):
        load_model("not a repo")
    with pytest.raises(ValueError, match="head='captioning'"):
        load_model("org/missing", head="captioning")

    api = HfApi()
    api.create_repo("org/empty")
    with pytest.raises(ValueError, match="org/empty@main has no config.json"):
        load_model("org/empty")

    bert = BertModel(
        BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    )
    bert.save_pretrained(tmp_path / "bert")
    api.create_repo("org/bert")
    api.upload_folder(repo_id="org/bert", folder_path=tmp_path / "bert")
    with pytest.raises(ValueError, match="holds a model of type 'bert', which is not a vl_zoo architecture"):
        load_model("org/bert")
    with pytest.raises(ValueError, match="model_type='bert', not a vl_zoo architecture"):
        push_to_hub(bert, "org/bert")

    requests = len(hub.requests)
    with pytest.raises(ValueError, match="model card"):
        push_to_hub(tiny_model(), "org/bad-card", card="---\nlicense: mit\n---\n# no library_name, tags or pipeline")
    assert len(hub.requests) == requests  # refused before anything was sent


# ---------------------------------------------------------------------------------------------- remote code


REMOTE_LOAD = textwrap.dedent(
    """
    import sys

    sys.modules["vl_zoo"] = None  # the package is pip-installed (editable) here: make it unimportable
    try:
        import vl_zoo  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("vl_zoo is importable")

    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForPreTraining, AutoProcessor

    repo, inputs_path, expected_path = sys.argv[1:]
    model = AutoModelForPreTraining.from_pretrained(repo, trust_remote_code=True).eval()
    backbone = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    inputs, expected = load_file(inputs_path), load_file(expected_path)
    with torch.no_grad():
        out, base = model(**inputs), backbone(**inputs)
    for name, value in expected.items():
        assert torch.equal(getattr(out, name), value), name
    assert torch.equal(base.pooler_output, expected["pooler_output"])
    loaded = {type(model).__module__, type(backbone).__module__, type(processor).__module__}
    assert all(module.startswith("transformers_modules.") for module in loaded), loaded
    assert not [name for name in sys.modules if name.split(".")[0] == "vl_zoo" and sys.modules[name] is not None]
    print("remote", type(model).__name__, type(processor).__name__, processor("a dog")["input_ids"].tolist())
    """
)


def test_trust_remote_code_loads_where_vl_zoo_cannot_be_imported(hub, tmp_path):
    model = tiny_model("vlzoo_lxmert")
    push_to_hub(model, "org/remote", tiny_processor(model))
    inputs = make_inputs(model.config)
    save_file(inputs, tmp_path / "inputs.safetensors")
    save_file({k: v.contiguous() for k, v in outputs(model, inputs).items()}, tmp_path / "expected.safetensors")

    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    env |= {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    command = [sys.executable, "-I", "-c", REMOTE_LOAD, "org/remote", "inputs.safetensors", "expected.safetensors"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "remote LxmertForPreTraining VLProcessor [[2, 5, 6, 3]]" in done.stdout
    assert hub.count("GET", "/resolve/") > 0 and not hub.count("GET", "agent-harnesses")


# ---------------------------------------------------------------------------------------------- the CLI


@pytest.fixture
def saved_model(tmp_path):
    """A folder as `save_pretrained` leaves it: a tiny UNITER and its processor."""
    model = tiny_model()
    tiny_processor(model).save_pretrained(tmp_path / "saved")
    model.save_pretrained(tmp_path / "saved")
    return model, tmp_path / "saved"


def test_cli_push_folder_to_a_private_branch(hub, saved_model, capsys):
    model, folder = saved_model
    main(
        [
            "push",
            str(folder),
            "org/cli",
            "--revision",
            "dev",
            "--private",
            "--commit-message",
            "from the CLI",
            "--card",
            "volta-ctrl-uniter",
        ]
    )
    assert "pushed vlzoo_uniter to org/cli@dev" in capsys.readouterr().out

    repo = hub.repos["org/cli"]
    assert repo.private
    assert set(hub.files_at("org/cli", "main")) == {".gitattributes"}
    files = hub.files_at("org/cli", "dev")
    assert repo.commits[repo.branches["dev"]].message == "from the CLI"
    assert 'repo = "org/cli"' in files["README.md"].decode()
    assert_same_outputs(load_model("org/cli", revision="dev"), model)


def test_cli_push_refusals(hub, saved_model, tmp_path):
    _, folder = saved_model
    with pytest.raises(SystemExit, match="describes a vlzoo_lxmert checkpoint"):
        main(["push", str(folder), "org/x", "--card", "volta-ctrl-lxmert"])
    with pytest.raises(SystemExit, match="no model card"):
        main(["push", str(folder), "org/x"])
    with pytest.raises(SystemExit, match="REPO_ID: repo_id='x y'"):
        main(["push", str(folder), "x y", "--card", "volta-ctrl-uniter"])
    (folder / "processor_config.json").unlink()
    with pytest.raises(SystemExit, match="--tokenizer"):
        main(["push", str(folder), "org/x", "--card", "volta-ctrl-uniter"])
    with pytest.raises(SystemExit, match="has no config.json"):
        main(["push", str(tmp_path), "org/x"])
    assert not hub.count("POST", "/commit/")


def test_cli_convert_volta_and_push(hub, tmp_path, capsys):
    tokenizer = tmp_path / "tokenizer"
    BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)}).save_pretrained(tokenizer)
    fixture = VOLTA_FIXTURES / "ctrl_uniter"
    args = [
        "convert",
        "volta",
        "--checkpoint",
        str(fixture / "pytorch_model.bin"),
        "--config",
        str(fixture / "config.json"),
        "--tokenizer",
        str(tokenizer),
    ]
    with pytest.raises(SystemExit, match="is converted by 'lxmert', not by 'volta'"):
        main(args + ["--push-to", "org/conv", "--card", "lxmert-pretrained"])
    with pytest.raises(SystemExit, match="--push-to needs --card"):
        main(args + ["--push-to", "org/conv"])

    main(args + ["--push-to", "org/conv", "--card", "volta-ctrl-uniter", "--output", str(tmp_path / "out")])
    reference, report = convert(fixture / "pytorch_model.bin", fixture / "config.json")
    assert_same_outputs(load_model("org/conv"), reference)
    assert json.loads(hub.files_at("org/conv")["conversion_report.json"])["mapped"] == report["mapped"]
    assert set(hub.files_at("org/conv")) - {".gitattributes"} == {p.name for p in (tmp_path / "out").iterdir()}
    with pytest.raises(SystemExit, match="exists and is not empty"):
        main(args + ["--output", str(tmp_path / "out")])


def test_cli_convert_original_writes_the_repository_content(tmp_path):
    """`convert original` runs conversion/convert_original.py's converter (here on transformers' LXMERT port)."""
    config = LxmertConfig(
        vocab_size=30,
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        l_layers=2,
        r_layers=1,
        x_layers=1,
        visual_feat_dim=16,
        num_qa_labels=5,
        max_position_embeddings=64,
    )
    port = randomize_(LxmertForPreTraining(config)).eval()
    torch.save(port.state_dict(), tmp_path / "lxmert.bin")
    config.to_json_file(tmp_path / "lxmert.json")
    tokenizer = tmp_path / "tokenizer"
    BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)}).save_pretrained(tokenizer)
    args = ["convert", "original", "--model", "hf-lxmert", "--checkpoint", str(tmp_path / "lxmert.bin")]
    args += [
        "--config",
        str(tmp_path / "lxmert.json"),
        "--tokenizer",
        str(tokenizer),
        "--output",
        str(tmp_path / "out"),
    ]
    main(args)

    expected = convert_file("hf-lxmert", tmp_path / "lxmert.bin", tmp_path / "lxmert.json")
    saved = AutoModelForPreTraining.from_pretrained(tmp_path / "out").eval()
    state = saved.state_dict()
    assert all(torch.equal(state[key], value) for key, value in expected.state_dict.items())
    assert json.loads((tmp_path / "out" / "config.json").read_text())["auto_map"] == remote_code.auto_map(
        "vlzoo_lxmert"
    )
    processor = VLProcessor.from_pretrained(tmp_path / "out")
    assert (processor.max_regions, processor.add_global_feature) == (
        expected.processor.max_regions,
        expected.processor.add_global_feature,
    )
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert report["num_mapped"] == len(expected.report.mapped) and report["source"]["model"] == "hf-lxmert"

    with pytest.raises(SystemExit, match="convert original: .*does not exist"):
        main(
            [
                "convert",
                "original",
                "--model",
                "lxmert",
                "--checkpoint",
                str(tmp_path / "missing.pth"),
                "--output",
                str(tmp_path / "other"),
            ]
        )


def test_cli_pull_and_list(hub, capsys):
    model = tiny_model()
    push_to_hub(model, "org/listed", tiny_processor(model))
    main(["pull", "org/listed"])
    assert "org/listed@main: UniterForPreTraining (vlzoo_uniter)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="revision='gone' does not exist"):
        main(["pull", "org/listed", "--revision", "gone"])
    main(["list"])
    assert capsys.readouterr().out.strip() == format_table().strip()
