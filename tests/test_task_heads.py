"""Fine-tuning heads: the release's task outputs reproduced through conversion, losses, loading and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import MODEL_TYPES, REFERENCE_DIRS, VOLTA_FIXTURES, make_inputs, randomize_, tiny_config
from safetensors.torch import load_file, save_file

import vl_zoo
from vl_zoo.conversion.common import ConversionError
from vl_zoo.conversion.verify import model_inputs_from_reference
from vl_zoo.conversion.volta import convert
from vl_zoo.conversion.volta import main as convert_main
from vl_zoo.models import ARCHITECTURES, task_model_class

REFERENCES = sorted(REFERENCE_DIRS.values())
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "visual_feats", "visual_pos", "visual_attention_mask")
# task_outputs key of each task in the reference dumps, and the vl_zoo task it is
FIXTURE_TASKS = {
    "TASK1_VQA": "vqa",
    "TASK15_GQA": "gqa",
    "TASK12_NLVR2": "nlvr2",
    "TASK13_VisualEntailment": "snli-ve",
    "TASK10_refcoco+": "refcoco",
    "TASK8_RetrievalFlickr30k": "retrieval",
}
SHARED_CLASSES = {
    "vqa": vl_zoo.VLForVisualQuestionAnswering,
    "nlvr2": vl_zoo.VLForVisualReasoning,
    "snli-ve": vl_zoo.VLForVisualEntailment,
    "refcoco": vl_zoo.VLForReferringExpressions,
    "retrieval": vl_zoo.VLForImageTextRetrieval,
}


def release_task_checkpoint(name: str, task_ids: list[str], path) -> dict:
    """A checkpoint as the release's BertForVLTasks saves one: the backbone bert.* and the heads clfs_dict.TASK<id>."""
    folder = VOLTA_FIXTURES / name
    state = {k: v for k, v in torch.load(folder / "pytorch_model.bin", weights_only=True).items() if k[:5] == "bert."}
    heads = load_file(folder / "task_heads.safetensors")
    state |= {key: value for key, value in heads.items() if key.split(".")[1] in task_ids}
    torch.save(state, path)
    return state


def reference_batch(name: str) -> dict[str, torch.Tensor]:
    inputs = model_inputs_from_reference(load_file(VOLTA_FIXTURES / name / "inputs.safetensors"))
    return {key: inputs[key] for key in MODEL_INPUTS}


@pytest.mark.parametrize("name", REFERENCES)
def test_release_task_checkpoints_reproduce_the_release_outputs(name, tmp_path):
    """Each of the six heads, converted from a release task checkpoint, gives the release's output within 1e-5."""
    batch = reference_batch(name)
    expected = load_file(VOLTA_FIXTURES / name / "task_outputs.safetensors")
    assert set(expected) == set(FIXTURE_TASKS)
    real = batch["visual_attention_mask"].bool()
    assert not real.all()  # the reference batch pads regions, so excluding them is exercised

    for output_key, task in FIXTURE_TASKS.items():
        release_task_checkpoint(name, [output_key.split("_")[0]], tmp_path / "task.bin")
        model, report = convert(tmp_path / "task.bin", VOLTA_FIXTURES / name / "config.json")
        assert type(model) is task_model_class(model.config.model_type, task)
        assert model.config.finetuning_task == task and report["task"] == task
        with torch.no_grad():
            logits = model(**batch).logits
        reference = expected[output_key]
        if task == "snli-ve":
            reference = reference.flip(-1)  # the release's classes run contradiction, neutral, entailment
        if task in ("refcoco", "retrieval"):
            reference = reference.squeeze(-1)
        if task == "refcoco":
            assert (logits[real] - reference[real]).abs().max() <= 1e-5, name
            assert (logits[~real] < logits[real].min()).all()  # padded regions are never chosen
        else:
            assert logits.shape == reference.shape
            assert (logits - reference).abs().max() <= 1e-5, (name, task)


def test_a_checkpoint_with_several_heads_converts_the_one_asked_for(tmp_path):
    release_task_checkpoint("ctrl_uniter", ["TASK1", "TASK12", "TASK13"], tmp_path / "task.bin")
    config = VOLTA_FIXTURES / "ctrl_uniter" / "config.json"
    with pytest.raises(ConversionError, match=r"heads \['TASK1', 'TASK12', 'TASK13'\]; pass task_id"):
        convert(tmp_path / "task.bin", config)

    model, report = convert(tmp_path / "task.bin", config, task_id="TASK12")
    assert type(model).__name__ == "UniterForVisualReasoning"
    assert model.config.id2label == {0: "False", 1: "True"}
    dropped = {key for key, reason in report["dropped"].items() if "TASK12" in reason}
    assert dropped and all(key.startswith(("clfs_dict.TASK1.", "clfs_dict.TASK13.")) for key in dropped)


def test_answer_labels_and_other_task_ids(tmp_path):
    state = release_task_checkpoint("ctrl_visualbert", ["TASK1"], tmp_path / "task.bin")
    config = VOLTA_FIXTURES / "ctrl_visualbert" / "config.json"
    answers = ["yes", "no", "2", "red", "cube", "1", "blue"]
    model, _ = convert(tmp_path / "task.bin", config, labels=answers)
    assert [model.config.id2label[i] for i in range(7)] == answers
    assert model.config.label2id["cube"] == 4
    with pytest.raises(ConversionError, match="labels has 2 answers, but the checkpoint's answer head has 7"):
        convert(tmp_path / "task.bin", config, labels=["yes", "no"])

    # a head under an id the release's task files do not give these six tasks needs its kind named
    renamed = {key.replace("TASK1.", "TASK4."): value for key, value in state.items()}
    torch.save(renamed, tmp_path / "other.bin")
    with pytest.raises(ConversionError, match="TASK4 is not one of the release's ids"):
        convert(tmp_path / "other.bin", config)
    assert convert(tmp_path / "other.bin", config, task="gqa")[0].config.finetuning_task == "gqa"


def test_a_head_that_does_not_fit_its_task_is_refused_with_the_keys(tmp_path):
    state = release_task_checkpoint("ctrl_uniter", ["TASK13"], tmp_path / "task.bin")
    config = VOLTA_FIXTURES / "ctrl_uniter" / "config.json"
    torch.save(state | {"clfs_dict.TASK13.extra.weight": torch.zeros(2)}, tmp_path / "extra.bin")
    with pytest.raises(ConversionError, match=r"(?s)clfs_dict.TASK13.extra.weight.*fine-tuned task model"):
        convert(tmp_path / "extra.bin", config)
    without = {k: v for k, v in state.items() if k != "clfs_dict.TASK13.bias"}
    torch.save(without, tmp_path / "missing.bin")
    with pytest.raises(ConversionError, match=r"does not fill: \['entailment_classifier.bias'\]"):
        convert(tmp_path / "missing.bin", config)


def test_command_line_writes_a_task_folder_that_the_shared_class_loads(tmp_path):
    release_task_checkpoint("ctrl_lxmert", ["TASK10"], tmp_path / "task.bin")
    folder = VOLTA_FIXTURES / "ctrl_lxmert"
    output = tmp_path / "out"
    args = ["--checkpoint", str(tmp_path / "task.bin"), "--config", str(folder / "config.json")]
    convert_main([*args, "--output", str(output)])
    report = json.loads((output / "conversion_report.json").read_text())
    assert report["model_class"] == "LxmertForReferringExpressions" and report["release_task"] == "TASK10"

    model = vl_zoo.VLForReferringExpressions.from_pretrained(output).eval()
    assert type(model).__name__ == "LxmertForReferringExpressions"
    assert model.config.finetuning_task == "refcoco"
    batch = reference_batch("ctrl_lxmert")
    expected = load_file(folder / "task_outputs.safetensors")["TASK10_refcoco+"].squeeze(-1)
    real = batch["visual_attention_mask"].bool()
    with torch.no_grad():
        assert (model(**batch).logits[real] - expected[real]).abs().max() <= 1e-5


@pytest.mark.parametrize("task", sorted(SHARED_CLASSES))
def test_heads_load_from_any_checkpoint_with_the_backbone_strict(model_type, task, tmp_path):
    """A pretraining folder loads into every task class: backbone as saved, head new; a broken backbone is refused."""
    pretraining = randomize_(ARCHITECTURES[model_type][2](tiny_config(model_type)), seed=1).eval()
    pretraining.save_pretrained(tmp_path)
    kwargs = {"num_labels": 5} if task == "vqa" else {}
    model = SHARED_CLASSES[task].from_pretrained(tmp_path, **kwargs).eval()
    assert type(model) is task_model_class(model_type, task)
    inputs = make_inputs(model.config)
    assert torch.equal(model.vl(**inputs).pooler_output, pretraining.vl(**inputs).pooler_output)

    model.save_pretrained(tmp_path / "task")
    assert json.loads((tmp_path / "task" / "config.json").read_text())["model_type"] == model_type

    state = load_file(tmp_path / "model.safetensors")
    dropped = next(key for key in state if key.startswith("vl.encoder."))
    save_file({k: v for k, v in state.items() if k != dropped}, tmp_path / "model.safetensors")
    with pytest.raises(RuntimeError, match=f"backbone keys missing from the checkpoint: \\['{dropped}'\\]"):
        SHARED_CLASSES[task].from_pretrained(tmp_path, **kwargs)


def build(task: str, model_type: str = "vlzoo_uniter"):
    return randomize_(task_model_class(model_type, task)(tiny_config(model_type)), seed=2).eval()


def manual_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))], elementwise."""
    probability = torch.sigmoid(logits.double())
    return -(targets * probability.log() + (1 - targets) * (1 - probability).log())


def test_visual_reasoning_pairs_rows_and_uses_one_hot_bce():
    model = build("nlvr2")
    inputs = make_inputs(model.config, batch=4)
    labels = torch.tensor([1, 0])
    out = model(**inputs, labels=labels)

    pooled = model.vl(**inputs).pooler_output  # (4, P): example 0 in rows 0 and 1, example 1 in rows 2 and 3
    expected = model.pair_classifier(torch.cat([pooled[0::2], pooled[1::2]], dim=-1))
    torch.testing.assert_close(out.logits, expected)
    one_hot = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    torch.testing.assert_close(out.loss.double(), manual_bce(out.logits, one_hot).mean())

    with pytest.raises(ValueError, match="input_ids has 3 rows; visual reasoning takes two rows per example"):
        model(**make_inputs(model.config, batch=3))


def test_visual_entailment_loss_and_label_range():
    model = build("snli-ve")
    inputs = make_inputs(model.config, batch=3)
    labels = torch.tensor([2, 0, 1])
    out = model(**inputs, labels=labels)
    assert out.logits.shape == (3, 3)
    torch.testing.assert_close(out.loss.double(), manual_bce(out.logits, torch.eye(3)[labels].double()).mean())
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\)"):
        model(**inputs, labels=torch.tensor([0, 3, 1]))


def test_referring_expressions_score_real_regions_only():
    model = build("refcoco", "vlzoo_vilbert")
    inputs = make_inputs(model.config, batch=3, regions=5)  # rows 1 and 2 have 1 and 2 padded regions
    real = inputs["visual_attention_mask"].bool()
    targets = torch.rand(3, 5) * real
    out = model(**inputs, region_targets=targets)

    assert (out.logits[~real] == torch.finfo(torch.float32).min).all()
    scores = model.region_classifier(model.vl(**inputs).vision_last_hidden_state).squeeze(-1)
    torch.testing.assert_close(out.logits[real], scores[real])
    expected = (manual_bce(scores, targets.double()) * real).sum() / 3  # summed over real regions, per example
    torch.testing.assert_close(out.loss.double(), expected)
    # what a padded row's target says does not matter
    changed = model(**inputs, region_targets=torch.where(real, targets, torch.ones_like(targets)))
    torch.testing.assert_close(changed.loss, out.loss)


def test_retrieval_scores_groups_of_candidates_with_cross_entropy():
    model = build("retrieval", "vlzoo_lxmert")
    inputs = make_inputs(model.config, batch=8)
    labels = torch.tensor([0, 2])
    out = model(**inputs, labels=labels)
    assert out.logits.shape == (8,)
    groups = out.logits.double().reshape(2, 4)
    expected = -(groups.log_softmax(-1)[torch.arange(2), labels]).mean()
    torch.testing.assert_close(out.loss.double(), expected)
    with pytest.raises(ValueError, match="dividing the 8 input rows into groups"):
        model(**inputs, labels=torch.tensor([0, 0, 0]))


def test_task_classes_for_every_architecture():
    for model_type in MODEL_TYPES:
        for task in vl_zoo.TASK_MODEL_CLASSES:
            cls = vl_zoo.task_model_class(model_type, task)
            assert issubclass(cls, vl_zoo.TASK_MODEL_CLASSES[task])
            assert cls.config_class is ARCHITECTURES[model_type][0]
    with pytest.raises(ValueError, match="task='vqav2' is not a fine-tuning task"):
        vl_zoo.task_model_class("vlzoo_uniter", "vqav2")
    with pytest.raises(ValueError, match="model_type='vlzoo_clip' is not a vl_zoo architecture"):
        vl_zoo.task_model_class("vlzoo_clip", "vqa")


def test_heads_that_read_the_pooled_output_need_a_pooler():
    config = tiny_config("vlzoo_vl_bert", fusion_method="none")
    for task in ("nlvr2", "snli-ve", "retrieval"):
        with pytest.raises(ValueError, match="fusion_method is 'none'"):
            task_model_class("vlzoo_vl_bert", task)(config)
    assert task_model_class("vlzoo_vl_bert", "refcoco")(config) is not None  # reads the region states
