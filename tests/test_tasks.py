"""Task loaders on tiny hand-written files in each public format, answer normalisation and the answer vocabulary."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from vl_zoo.data.tasks import (
    TASK_FEATURES,
    AnswerVocabulary,
    answer_score,
    load_task,
    normalize_answer,
    read_conceptual_captions_tsv,
)


def write_json(path: Path, content) -> Path:
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------------
# Pretraining captions


def test_conceptual_captions_tsv_ids_follow_the_release_downloader(tmp_path):
    tsv = tmp_path / "Train_GCC-training.tsv"
    tsv.write_text(
        'a dog on a beach\thttp://example.com/a.jpg\nthe "red" car\thttps://img.example.org/b.png\n', encoding="utf-8"
    )

    dataset = load_task("pretraining", tsv)

    # zlib.crc32 of each url, masked to 32 bits, in decimal (computed once by hand with zlib)
    assert dataset.to_list() == [
        {"image_id": "1917781814", "caption": "a dog on a beach"},
        {"image_id": "1825115344", "caption": 'the "red" car'},
    ]
    assert dataset.features == TASK_FEATURES["pretraining"]
    assert [row["image_id"] for row in read_conceptual_captions_tsv(tsv, id_rule="index")] == ["0", "1"]


def test_conceptual_captions_tsv_refuses_bad_lines_and_rules(tmp_path):
    tsv = tmp_path / "captions.tsv"
    tsv.write_text("only a caption\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: expected 2 tab-separated fields"):
        load_task("pretraining", tsv)
    with pytest.raises(ValueError, match="id_rule must be one of"):
        read_conceptual_captions_tsv(tsv, id_rule="md5")


def test_release_caption_json_from_a_folder(tmp_path):
    write_json(tmp_path / "caption_valid.json", {"3079": "a cat", "55": "two birds"})

    dataset = load_task("pretraining", tmp_path, split="validation")

    assert dataset.to_list() == [{"image_id": "3079", "caption": "a cat"}, {"image_id": "55", "caption": "two birds"}]
    with pytest.raises(ValueError, match="split is needed"):
        load_task("pretraining", tmp_path)
    with pytest.raises(ValueError, match=r"looked for \['caption_train.json'"):
        load_task("pretraining", tmp_path, split="train")


# ---------------------------------------------------------------------------------------------------------------
# VQA and GQA


def write_vqa(folder: Path) -> None:
    questions = [
        {"image_id": 262148, "question": "What color is the bus?", "question_id": 262148000},
        {"image_id": 393225, "question": "How many dogs?", "question_id": 393225001},
    ]
    answers = [["red"] * 7 + ["Red.", "maroon", "red"], ["2", "two", "2", "3", "2", "2", "two", "2", "1", "2"]]
    annotations = [
        {
            "question_id": question["question_id"],
            "image_id": question["image_id"],
            "multiple_choice_answer": given[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(given)],
        }
        for question, given in zip(questions, answers, strict=True)
    ]
    write_json(
        folder / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": questions, "task_type": "Open-Ended"}
    )
    write_json(folder / "v2_mscoco_val2014_annotations.json", {"annotations": annotations})
    write_json(folder / "v2_OpenEnded_mscoco_test2015_questions.json", {"questions": questions[:1]})


def test_vqa_rows_from_folder_and_from_questions_file(tmp_path):
    write_vqa(tmp_path)

    dataset = load_task("vqa", tmp_path, split="val")
    from_file = load_task("vqa", tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json")

    assert dataset.features == TASK_FEATURES["vqa"]
    assert dataset[0] == {
        "question_id": "262148000",
        "image_id": "262148",
        "question": "What color is the bus?",
        "answers": ["red"] * 7 + ["Red.", "maroon", "red"],
    }
    assert dataset[1]["answers"] == ["2", "two", "2", "3", "2", "2", "two", "2", "1", "2"]
    assert from_file.to_list() == dataset.to_list()


def test_vqa_test_split_has_no_answers(tmp_path):
    write_vqa(tmp_path)

    dataset = load_task("vqa", tmp_path, split="test")

    assert dataset.to_list() == [
        {"question_id": "262148000", "image_id": "262148", "question": "What color is the bus?", "answers": []}
    ]


def test_vqa_missing_field_names_field_and_task(tmp_path):
    write_json(tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": [{"question_id": 1}]})
    with pytest.raises(ValueError, match="vqa record .* lacks the field 'image_id'"):
        load_task("vqa", tmp_path, split="val2014")


def test_gqa_balanced_questions(tmp_path):
    questions = {
        "20968379": {"imageId": "n288870", "question": "Is the sky blue?", "answer": "yes", "fullAnswer": "Yes."},
        "201640614": {"imageId": "n161313", "question": "Who is wearing the shirt?", "answer": "man"},
    }
    write_json(tmp_path / "val_balanced_questions.json", questions)
    write_json(tmp_path / "testdev_balanced_questions.json", {"1": {"imageId": "n1", "question": "What is it?"}})

    dataset = load_task("gqa", tmp_path, split="validation")
    test = load_task("gqa", tmp_path, split="test-dev")

    assert dataset.features == TASK_FEATURES["gqa"]
    assert dataset.to_list() == [
        {"question_id": "20968379", "image_id": "n288870", "question": "Is the sky blue?", "answers": ["yes"]},
        {
            "question_id": "201640614",
            "image_id": "n161313",
            "question": "Who is wearing the shirt?",
            "answers": ["man"],
        },
    ]
    assert test.to_list() == [{"question_id": "1", "image_id": "n1", "question": "What is it?", "answers": []}]


# ---------------------------------------------------------------------------------------------------------------
# NLVR2 and SNLI-VE


def test_nlvr2_image_ids_come_from_the_identifier(tmp_path):
    records = [
        {"identifier": "dev-850-0-0", "sentence": "There are two dogs.", "label": "True", "synset": "dog"},
        {"identifier": "dev-850-1-3", "sentence": "One image has a cat.", "label": "False"},
    ]
    write_lines(tmp_path / "dev.json", records)

    dataset = load_task("nlvr2", tmp_path, split="validation")

    assert dataset.features == TASK_FEATURES["nlvr2"]
    assert dataset.to_list() == [
        {
            "identifier": "dev-850-0-0",
            "sentence": "There are two dogs.",
            "left_image_id": "dev-850-0-img0",
            "right_image_id": "dev-850-0-img1",
            "label": 1,
        },
        {
            "identifier": "dev-850-1-3",
            "sentence": "One image has a cat.",
            "left_image_id": "dev-850-1-img0",
            "right_image_id": "dev-850-1-img1",
            "label": 0,
        },
    ]


def test_nlvr2_refuses_an_unknown_label(tmp_path):
    path = write_lines(tmp_path / "train.json", [{"identifier": "train-1-0-0", "sentence": "x", "label": "yes"}])
    with pytest.raises(ValueError, match="line 1: label must be 'True' or 'False'"):
        load_task("nlvr2", path)


def test_snli_ve_labels_ids_and_skipped_pairs(tmp_path):
    records = [
        {"Flickr30K_ID": "3416050480", "sentence2": "A man is outside.", "gold_label": "entailment", "pairID": "p1"},
        {"Flikr30kID": "2267923837.jpg", "sentence2": "Kids sleep.", "gold_label": "contradiction", "pairID": "p2"},
        {"Flickr30K_ID": "1", "sentence2": "Unclear.", "gold_label": "-", "pairID": "p3"},
        {"Flickr30K_ID": "2", "sentence2": "A girl runs.", "gold_label": "neutral", "pairID": "p4"},
    ]
    write_lines(tmp_path / "snli_ve_dev.jsonl", records)

    dataset = load_task("snli-ve", tmp_path, split="dev")

    assert dataset.features == TASK_FEATURES["snli-ve"]
    assert dataset.to_list() == [
        {"pair_id": "p1", "image_id": "3416050480", "hypothesis": "A man is outside.", "label": 0},
        {"pair_id": "p2", "image_id": "2267923837", "hypothesis": "Kids sleep.", "label": 2},
        {"pair_id": "p4", "image_id": "2", "hypothesis": "A girl runs.", "label": 1},
    ]


# ---------------------------------------------------------------------------------------------------------------
# RefCOCO


def write_refcoco(folder: Path) -> None:
    refs = [
        {
            "ref_id": 0,
            "ann_id": 1001,
            "image_id": 581857,
            "split": "train",
            "sentences": [{"raw": "the lady with the blue shirt", "sent_id": 0}, {"raw": "left woman", "sent_id": 1}],
        },
        {"ref_id": 7, "ann_id": 1002, "image_id": 581857, "split": "testA", "sentences": [{"raw": "man on right"}]},
        {"ref_id": 9, "ann_id": 1003, "image_id": 9, "split": "testB", "sentences": [{"raw": "red car"}]},
    ]
    with open(folder / "refs(unc).p", "wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    annotations = [
        {"id": 1001, "image_id": 581857, "bbox": [103.5, 20.0, 50.0, 120.25], "category_id": 1},
        {"id": 1002, "image_id": 581857, "bbox": [300, 10, 40, 80], "category_id": 1},
        {"id": 1003, "image_id": 9, "bbox": [0, 0, 10, 5], "category_id": 3},
    ]
    write_json(folder / "instances.json", {"images": [], "annotations": annotations, "categories": []})


def test_refcoco_rows_boxes_and_splits(tmp_path):
    write_refcoco(tmp_path)

    train = load_task("refcoco", tmp_path, split="train")
    test = load_task("refcoco", tmp_path / "refs(unc).p", split="test")
    test_a = load_task("refcoco", tmp_path, split="testA")

    assert train.features == TASK_FEATURES["refcoco"]
    # bbox [x, y, w, h] -> [x, y, x + w, y + h]
    assert train.to_list() == [
        {
            "ref_id": "0",
            "image_id": "581857",
            "expression": "the lady with the blue shirt",
            "box": [103.5, 20.0, 153.5, 140.25],
        },
        {"ref_id": "0", "image_id": "581857", "expression": "left woman", "box": [103.5, 20.0, 153.5, 140.25]},
    ]
    assert [(row["ref_id"], row["box"]) for row in test] == [
        ("7", [300.0, 10.0, 340.0, 90.0]),
        ("9", [0.0, 0.0, 10.0, 5.0]),
    ]
    assert [row["ref_id"] for row in test_a] == ["7"]


class Exploit:
    """Unpickling this would call `print`: a stand-in for code a hostile pickle runs."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_refcoco_pickle_loader_refuses_code(tmp_path):
    write_refcoco(tmp_path)
    with open(tmp_path / "refs(unc).p", "wb") as handle:
        pickle.dump([Exploit()], handle, protocol=2)
    ref = {"ref_id": 5, "ann_id": 1003, "image_id": 9, "split": "val", "sentences": [{"raw": "a car"}], "tags": {"x"}}
    (tmp_path / "refs(umd).p").write_bytes(pickle.dumps([ref], protocol=2))

    with pytest.raises(ValueError, match=r"refusing to load (__builtin__|builtins)\.print"):
        load_task("refcoco", tmp_path)
    # builtin containers are fine, Python 2's module name included (protocol 2 pickles a set by reference)
    rows = load_task("refcoco", tmp_path / "refs(umd).p", split="validation").to_list()
    assert rows == [{"ref_id": "5", "image_id": "9", "expression": "a car", "box": [0.0, 0.0, 10.0, 5.0]}]
    (tmp_path / "refs(umd).p").write_bytes(pickle.dumps({"refs": []}, protocol=2))
    with pytest.raises(ValueError, match="must hold a pickled list of refs, got a dict"):
        load_task("refcoco", tmp_path / "refs(umd).p")


# ---------------------------------------------------------------------------------------------------------------
# Retrieval


def test_karpathy_flickr30k_and_coco(tmp_path):
    flickr = {
        "dataset": "flickr30k",
        "images": [
            {
                "filename": "1000092795.jpg",
                "imgid": 0,
                "split": "train",
                "sentences": [{"raw": "Two men."}, {"raw": "Guys."}],
            },
            {"filename": "1001.jpg", "imgid": 1, "split": "test", "sentences": [{"raw": "A dog."}]},
        ],
    }
    coco = {
        "dataset": "coco",
        "images": [
            {"filename": "x.jpg", "cocoid": 391895, "split": "restval", "sentences": [{"raw": "A man on a bike."}]},
            {"filename": "y.jpg", "cocoid": 522418, "split": "train", "sentences": [{"raw": "A woman."}]},
            {"filename": "z.jpg", "cocoid": 184613, "split": "val", "sentences": [{"raw": "A boy."}]},
        ],
    }
    write_json(tmp_path / "dataset_flickr30k.json", flickr)
    coco_path = write_json(tmp_path / "dataset_coco.json", coco)

    flickr_train = load_task("retrieval", tmp_path, split="train")
    coco_train = load_task("retrieval", coco_path, split="train")
    coco_restval = load_task("retrieval", coco_path, split="restval")

    assert flickr_train.features == TASK_FEATURES["retrieval"]
    assert flickr_train.to_list() == [
        {"image_id": "1000092795", "caption": "Two men."},
        {"image_id": "1000092795", "caption": "Guys."},
    ]
    assert [row["image_id"] for row in coco_train] == ["391895", "522418"]
    assert [row["image_id"] for row in coco_restval] == ["391895"]


def test_release_retrieval_json_lines(tmp_path):
    records = [{"img_path": "1000092795.jpg", "sentences": ["Two men.", "Guys."]}, {"id": 42, "sentences": ["A cat."]}]
    path = write_lines(tmp_path / "train_ann.jsonl", records)

    dataset = load_task("retrieval", path)

    assert dataset.to_list() == [
        {"image_id": "1000092795", "caption": "Two men."},
        {"image_id": "1000092795", "caption": "Guys."},
        {"image_id": "42", "caption": "A cat."},
    ]


def test_load_task_refuses_unknown_task_and_missing_path(tmp_path):
    with pytest.raises(ValueError, match=r"task must be one of \('pretraining'"):
        load_task("vcr", tmp_path)
    with pytest.raises(ValueError, match="path of the vqa annotations does not exist"):
        load_task("vqa", tmp_path / "absent")


# ---------------------------------------------------------------------------------------------------------------
# Answers


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),  # number words become digits
        ("none", "0"),
        ("the dog.", "dog"),  # articles dropped, a final period removed
        ("A man's hat", "man's hat"),  # apostrophes are not punctuation
        ("yes!", "yes"),  # punctuation not next to a space becomes a space
        ("left-hand", "left hand"),
        ("black - white", "black white"),  # punctuation next to a space is removed
        ("1,000", "1000"),  # a digit-comma-digit group removes punctuation everywhere
        ("3.5", "3.5"),  # a period before a digit stays
        ("dont", "don't"),  # contractions get their apostrophe back
        ("Hi\tthere\n", "hi there"),
        ("ten dollars", "10 dollars"),
    ],
)
def test_normalize_answer_matches_the_official_processing(raw, expected):
    assert normalize_answer(raw) == expected


def test_answer_scores_are_the_release_rule():
    assert [answer_score(n) for n in range(7)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0]


def test_soft_scores_count_normalised_answers():
    vocabulary = AnswerVocabulary(["yes", "no", "2", "maybe"])
    answers = ["yes", "Yes", "yes."] + ["no"] + ["maybe", "Maybe"] + ["two", "2", "Two", "2 "] + ["purple"]

    # yes x3 -> 0.9, no x1 -> 0.3, 2 x4 -> 1.0, maybe x2 -> 0.6; "purple" is not a class
    assert vocabulary.soft_scores(answers) == {0: 0.9, 1: 0.3, 2: 1.0, 3: 0.6}
    assert vocabulary.exact_scores(["maybe"]) == {3: 1.0}
    assert vocabulary.soft_scores([]) == {}


def test_vocabulary_from_rows_counts_majority_answers():
    rows = [{"answers": ["red", "red", "Red", "blue"]}] * 3 + [{"answers": ["blue"] * 6 + ["red"] * 4}] * 2
    rows += [{"answers": ["Two", "2", "green"]}] * 2 + [{"answers": ["green"]}] + [{"answers": []}]

    vocabulary = AnswerVocabulary.from_rows(rows, min_count=2)

    # majority votes: red 3, blue 2, 2 2, green 1 -> kept with >= 2, sorted by votes then alphabetically
    assert vocabulary.answers == ["red", "2", "blue"]
    assert vocabulary.index("RED") == 0 and "two" in vocabulary and "green" not in vocabulary


def test_vocabulary_without_normalisation_keeps_answers_as_written():
    vocabulary = AnswerVocabulary.from_rows([{"answers": ["Two"]}, {"answers": ["two"]}], min_count=1, normalize=False)

    assert vocabulary.answers == ["Two", "two"]
    assert vocabulary.index("2") is None


def test_vocabulary_save_load_round_trip(tmp_path):
    vocabulary = AnswerVocabulary(["yes", "no", "2"])
    vocabulary.save(tmp_path / "answers.json")
    plain = write_json(tmp_path / "label2ans.json", ["yes", "no"])

    loaded = AnswerVocabulary.load(tmp_path / "answers.json")

    assert loaded.answers == ["yes", "no", "2"] and loaded.normalize
    assert AnswerVocabulary.load(plain).answers == ["yes", "no"]
    with pytest.raises(ValueError, match="answers must be distinct"):
        AnswerVocabulary(["yes", "yes"])
    with pytest.raises(ValueError, match="min_count must be at least 1"):
        AnswerVocabulary.from_rows([], min_count=0)
    with pytest.raises(ValueError, match="row lacks the field 'answers'"):
        AnswerVocabulary.from_rows([{"question": "x"}])
