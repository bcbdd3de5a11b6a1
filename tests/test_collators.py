"""Collators on a tiny feature table: masking statistics, no leak through the global row, seeds, targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertTokenizer

from vl_zoo.data.collators import (
    GQACollator,
    NLVR2Collator,
    PretrainingCollator,
    RefCOCOCollator,
    RetrievalCollator,
    SeededDraws,
    SNLIVECollator,
    VQACollator,
    box_iou,
)
from vl_zoo.data.features import FeatureStore, write_feature_table
from vl_zoo.data.tasks import AnswerVocabulary
from vl_zoo.processing import RegionFeatureProcessor

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = "a red blue green cube ball ring left of right there are two three what color is the ? how many".split()
FEATURE_SIZE = 4
MAX_REGIONS = 5
# image id -> (index, region count); features of region k of image i are 100 i + k + 1 (+ 0.25 per dimension)
IMAGES = {"img_a": (1, 4), "img_b": (2, 2), "img_c": (3, 7)}
# img_a's boxes, in a 100 x 50 image, for the hand-computed IoU targets
BOXES_A = [[0, 0, 9, 9], [5, 5, 14, 14], [20, 20, 29, 29], [0, 0, 19, 9]]


def image_record(image_id: str) -> dict:
    index, count = IMAGES[image_id]
    features = 100 * index + np.arange(1, count + 1)[:, None] + 0.25 * np.arange(FEATURE_SIZE)[None, :]
    boxes = BOXES_A if image_id == "img_a" else [[k, k, k + 10, k + 5] for k in range(count)]
    cls_prob = np.zeros((count, 1601), dtype=np.float16)
    cls_prob[np.arange(count), 10 * index + np.arange(count)] = 1.0  # one-hot at a class naming (image, region)
    return {
        "image_id": image_id,
        "features": features.astype(np.float32),
        "boxes": np.asarray(boxes, dtype=np.float32),
        "image_width": 100,
        "image_height": 50,
        "cls_prob": cls_prob,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    folder = tmp_path_factory.mktemp("features") / "table"
    records = [image_record(image_id) for image_id in IMAGES]
    write_feature_table(records, folder, feature_size=FEATURE_SIZE, dtype="float32", optional=["cls_prob"])
    return FeatureStore(folder)


@pytest.fixture(scope="module")
def plain_store(tmp_path_factory) -> FeatureStore:
    folder = tmp_path_factory.mktemp("features") / "plain"
    records = [{k: v for k, v in image_record(image_id).items() if k != "cls_prob"} for image_id in IMAGES]
    write_feature_table(records, folder, feature_size=FEATURE_SIZE, dtype="float32")
    return FeatureStore(folder)


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizer:
    return BertTokenizer(vocab={token: index for index, token in enumerate(SPECIAL + WORDS)})


@pytest.fixture(scope="module")
def processor() -> RegionFeatureProcessor:
    return RegionFeatureProcessor(max_regions=MAX_REGIONS, add_global_feature="first")


def random_captions(count: int, seed: int = 0) -> list[dict]:
    """Rows with captions of 8-12 random words over the three images."""
    rng = np.random.default_rng(seed)
    image_ids = list(IMAGES)
    return [
        {"image_id": image_ids[i % 3], "caption": " ".join(rng.choice(WORDS, size=rng.integers(8, 13)))}
        for i in range(count)
    ]


def kept_regions(image_id: str) -> int:
    return min(IMAGES[image_id][1], MAX_REGIONS)


# ---------------------------------------------------------------------------------------------------------------
# Pretraining


def test_word_masking_statistics(tokenizer, processor, store):
    rows = random_captions(1000)
    collator = PretrainingCollator(tokenizer, processor, store, negative_probability=0.0, seed=3)
    original = tokenizer([row["caption"] for row in rows], padding="longest", return_tensors="pt")["input_ids"]

    batch = collator(rows)

    real = (original >= len(SPECIAL)).sum().item()  # caption words (no [CLS], [SEP], padding)
    chosen = batch["labels"] != -100
    assert abs(chosen.sum().item() / real - 0.15) < 0.02
    assert torch.equal(batch["labels"][chosen], original[chosen])  # labels are the original ids
    special = original < len(SPECIAL)
    assert not (chosen & special).any()  # [CLS], [SEP] and padding are never chosen
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen])  # nothing else changes

    new = batch["input_ids"][chosen]
    masked = (new == tokenizer.mask_token_id).float().mean().item()
    kept = (new == original[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.05 and abs(kept - 0.1) < 0.04 and abs(1 - masked - kept - 0.1) < 0.04
    assert batch["itm_labels"].eq(1).all()


def test_region_masking_statistics_and_targets(tokenizer, processor, store):
    rows = random_captions(1000, seed=1)
    collator = PretrainingCollator(tokenizer, processor, store, negative_probability=0.0, seed=5)

    batch = collator(rows)

    mask = batch["region_mask"]
    assert mask.shape == (1000, MAX_REGIONS + 1) and mask.dtype == torch.float32
    assert mask[:, 0].eq(0).all()  # never the global row
    assert (mask <= batch["visual_attention_mask"].float()).all()  # never a padding row
    real = sum(kept_regions(row["image_id"]) for row in rows)
    assert abs(mask.sum().item() / real - 0.15) < 0.025

    chosen = mask.bool()
    zeroed = batch["visual_feats"][chosen].abs().sum(-1) == 0
    assert abs(zeroed.float().mean().item() - 0.9) < 0.05
    unchosen = ~chosen & batch["visual_attention_mask"].bool()
    unchosen[:, 0] = False  # the global row is 0 when every region of an image was zeroed
    assert not (batch["visual_feats"][unchosen][:, 0] == 0).any()  # unchosen regions keep their features

    # the target of region k of image i is its one-hot detector distribution at class 10 i + k
    for b in (0, 1, 2):
        index, count = IMAGES[rows[b]["image_id"]]
        for k in range(kept_regions(rows[b]["image_id"])):
            assert batch["region_targets"][b, k + 1].argmax().item() == 10 * index + k
        assert batch["region_targets"][b, 0].eq(0).all()


def test_global_row_does_not_leak_zeroed_regions(tokenizer, processor, store):
    rows = random_captions(60, seed=2)
    collator = PretrainingCollator(
        tokenizer, processor, store, region_probability=0.5, region_zero_probability=1.0, negative_probability=0.0
    )

    batch = collator(rows)

    for b, row in enumerate(rows):
        kept = kept_regions(row["image_id"])
        features = torch.from_numpy(image_record(row["image_id"])["features"][:kept])
        visible = features * (1 - batch["region_mask"][b, 1 : kept + 1, None])
        assert torch.allclose(batch["visual_feats"][b, 0], visible.sum(0) / kept)  # mean with masked ones zeroed
        assert torch.equal(batch["visual_feats"][b, 1 : kept + 1], visible)
    assert batch["region_mask"].sum() > 0


def test_same_seed_same_batches_other_seed_other_batches(tokenizer, processor, store):
    rows = random_captions(64, seed=4)

    def batches(seed: int) -> list[dict[str, torch.Tensor]]:
        collator = PretrainingCollator(tokenizer, processor, store, seed=seed)
        return [collator(rows), collator(rows)]

    first, again, other = batches(0), batches(0), batches(1)

    for one, two in zip(first, again, strict=True):
        assert one.keys() == two.keys() and all(torch.equal(one[key], two[key]) for key in one)
    assert not torch.equal(first[0]["labels"], other[0]["labels"])
    assert not torch.equal(first[0]["labels"], first[1]["labels"])  # the call count moves the draws on


def test_indexed_rows_get_the_same_draws_whenever_they_come(tokenizer, processor, store):
    """Rows carrying `_index` are masked by their content, not by how many batches came before (exact resume)."""
    rows = [dict(row, _index=i) for i, row in enumerate(random_captions(16, seed=5))]
    fresh = PretrainingCollator(tokenizer, processor, store, seed=3)
    used = PretrainingCollator(tokenizer, processor, store, seed=3)
    used(rows[8:])  # an earlier batch moves the call count on
    one, two = fresh(rows[:8]), used(rows[:8])
    assert all(torch.equal(one[key], two[key]) for key in one)
    other = fresh(rows[8:])
    assert not torch.equal(one["region_mask"], other["region_mask"][:, : one["region_mask"].shape[1]])


def test_draws_differ_by_rank_and_worker(monkeypatch):
    main, rank_one = SeededDraws(0, rank=0), SeededDraws(0, rank=1)
    reference = main.next_generator().random(4)
    assert not np.array_equal(reference, rank_one.next_generator().random(4))

    class WorkerInfo:
        id = 0

    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: WorkerInfo())
    assert not np.array_equal(reference, SeededDraws(0, rank=0).next_generator().random(4))
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        SeededDraws(-1, rank=0)


def test_matching_negatives_come_from_other_images(tokenizer, processor, store):
    rows = [{"image_id": "img_a", "caption": "a red cube"}, {"image_id": "img_b", "caption": "a blue ball"}]
    swapped = PretrainingCollator(tokenizer, processor, store, negative_probability=1.0, mlm_probability=0.0)
    everything = PretrainingCollator(
        tokenizer, processor, store, negative_probability=1.0, mlm_probability=1.0, region_probability=1.0
    )

    batch = swapped(rows)
    masked = everything(rows)

    # with two images in the batch, each caption can only be swapped for the other one
    assert torch.equal(batch["input_ids"], tokenizer(["a blue ball", "a red cube"], return_tensors="pt")["input_ids"])
    assert batch["itm_labels"].tolist() == [0, 0]
    # every word and region was chosen, but negatives train matching only: no word or region labels
    assert masked["labels"].eq(-100).all() and masked["region_mask"].eq(0).all()
    assert masked["input_ids"][:, 1:-1].ne(batch["input_ids"][:, 1:-1]).any()  # the inputs are masked all the same
    # a batch with a single image and no pool has nothing to swap in: the pair stays a match
    assert swapped(rows[:1])["itm_labels"].tolist() == [1]


def test_matching_negatives_from_a_caption_pool(tokenizer, processor, store):
    pool = [{"image_id": "img_a", "caption": "red"}, {"image_id": "elsewhere", "caption": "three green ring"}]
    rows = [{"image_id": "img_a", "caption": "a red cube"}] * 200
    collator = PretrainingCollator(tokenizer, processor, store, captions=pool, mlm_probability=0.0, seed=7)

    batch = collator(rows)

    negatives = batch["itm_labels"] == 0
    expected = tokenizer(["three green ring"], padding="max_length", max_length=batch["input_ids"].shape[1])
    assert abs(negatives.float().mean().item() - 0.5) < 0.1
    assert (batch["input_ids"][negatives] == torch.tensor(expected["input_ids"])).all()


def test_pretraining_refuses_missing_fields_images_and_class_probabilities(tokenizer, processor, store, plain_store):
    collator = PretrainingCollator(tokenizer, processor, store)
    with pytest.raises(ValueError, match=r"pretraining row lacks the field\(s\) \['caption'\]"):
        collator([{"image_id": "img_a"}])
    with pytest.raises(ValueError, match="row's image_id 'img_z' is not in the feature store"):
        collator([{"image_id": "img_z", "caption": "a"}])
    with pytest.raises(ValueError, match="no 'cls_prob' column"):
        PretrainingCollator(tokenizer, processor, plain_store)([{"image_id": "img_a", "caption": "a"}])
    with pytest.raises(ValueError, match=r"mlm_probability must be a probability in \[0, 1\], got 1.5"):
        PretrainingCollator(tokenizer, processor, store, mlm_probability=1.5)


# ---------------------------------------------------------------------------------------------------------------
# Fine-tuning


def expected_regions(processor: RegionFeatureProcessor, image_ids: list[str]) -> dict[str, torch.Tensor]:
    records = [image_record(image_id) for image_id in image_ids]
    return processor([r["features"] for r in records], [r["boxes"] for r in records], [(50, 100)] * len(records))


def test_vqa_soft_score_labels_and_inputs(tokenizer, processor, store):
    vocabulary = AnswerVocabulary(["red", "2", "blue"])
    rows = [
        {
            "image_id": "img_a",
            "question": "what color is the cube ?",
            "answers": ["red"] * 2 + ["Red", "blue"] + ["x"] * 6,
        },
        {"image_id": "img_c", "question": "how many ?", "answers": ["two", "2", "3", "2", "2", "two"]},
        {"image_id": "img_b", "question": "what color ?", "answers": []},
    ]

    batch = VQACollator(tokenizer, processor, store, vocabulary)(rows)

    # red x3 -> 0.9, blue x1 -> 0.3; 2 x5 -> 1.0; no answers -> zeros
    assert torch.equal(batch["labels"], torch.tensor([[0.9, 0.0, 0.3], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    text = tokenizer([row["question"] for row in rows], padding="longest", return_tensors="pt")
    assert torch.equal(batch["input_ids"], text["input_ids"])
    assert torch.equal(batch["attention_mask"], text["attention_mask"])
    regions = expected_regions(processor, ["img_a", "img_c", "img_b"])
    for key in ("visual_feats", "visual_pos", "visual_attention_mask"):
        assert torch.equal(batch[key], regions[key])
    assert batch["visual_attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1] * 6, [1, 1, 1, 0, 0, 0]]


def test_gqa_scores_the_answer_one(tokenizer, processor, store):
    vocabulary = AnswerVocabulary(["yes", "no", "Two"], normalize=False)
    rows = [{"image_id": "img_a", "question": "is the cube red ?", "answers": ["no"]}]
    rows += [{"image_id": "img_b", "question": "how many ?", "answers": ["Two"]}]

    batch = GQACollator(tokenizer, processor, store, vocabulary)(rows)

    assert batch["labels"].tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]


def test_nlvr2_two_rows_per_example(tokenizer, processor, store):
    rows = [
        {
            "identifier": "dev-1-0-0",
            "sentence": "there are two cubes",
            "left_image_id": "img_a",
            "right_image_id": "img_b",
            "label": 1,
        },
        {
            "identifier": "dev-1-1-0",
            "sentence": "a red ball",
            "left_image_id": "img_c",
            "right_image_id": "img_a",
            "label": 0,
        },
    ]

    batch = NLVR2Collator(tokenizer, processor, store)(rows)

    assert batch["labels"].tolist() == [1, 0]
    regions = expected_regions(processor, ["img_a", "img_b", "img_c", "img_a"])
    assert torch.equal(batch["visual_feats"], regions["visual_feats"])
    text = tokenizer(["there are two cubes"] * 2 + ["a red ball"] * 2, padding="longest", return_tensors="pt")
    assert torch.equal(batch["input_ids"], text["input_ids"])


def test_snli_ve_labels(tokenizer, processor, store):
    rows = [
        {"pair_id": "p1", "image_id": "img_b", "hypothesis": "a blue ball", "label": 2},
        {"pair_id": "p2", "image_id": "img_a", "hypothesis": "a red cube", "label": 0},
    ]

    batch = SNLIVECollator(tokenizer, processor, store)(rows)

    assert batch["labels"].tolist() == [2, 0]
    assert torch.equal(batch["visual_feats"], expected_regions(processor, ["img_b", "img_a"])["visual_feats"])
    with pytest.raises(ValueError, match=r"snli-ve row lacks the field\(s\) \['label'\]"):
        SNLIVECollator(tokenizer, processor, store)([{"image_id": "img_a", "hypothesis": "a"}])


def test_box_iou_by_hand():
    # inclusive pixels: 10x10 boxes; r1 overlaps 5x5 = 25 of 175; r3 (20x10) holds r0 wholly: 100 / 200
    assert np.allclose(box_iou(np.array(BOXES_A), [0, 0, 9, 9]), [1.0, 25 / 175, 0.0, 0.5])
    # continuous: 9x9 boxes; r1 overlaps 4x4 = 16 of 81 + 81 - 16; r3 (19x9) holds r0: 81 / 171
    assert np.allclose(box_iou(np.array(BOXES_A), [0, 0, 9, 9], pixel_offset=0), [1.0, 16 / 146, 0.0, 81 / 171])


def test_refcoco_targets_in_the_row_layout(tokenizer, processor, store):
    rows = [
        {"ref_id": "0", "image_id": "img_a", "expression": "left red cube", "box": [0.0, 0.0, 9.0, 9.0]},
        {"ref_id": "1", "image_id": "img_b", "expression": "the ball", "box": [50.0, 20.0, 60.0, 30.0]},
    ]
    last = RegionFeatureProcessor(max_regions=MAX_REGIONS, add_global_feature="last")

    batch = RefCOCOCollator(tokenizer, processor, store)(rows)
    batch_last = RefCOCOCollator(tokenizer, last, store)(rows)

    expected = torch.tensor([[0.0, 1.0, 25 / 175, 0.0, 0.5, 0.0], [0.0] * 6])  # global row first, padding last
    assert torch.allclose(batch["region_targets"], expected)
    assert torch.allclose(batch_last["region_targets"][0], torch.tensor([1.0, 25 / 175, 0.0, 0.5, 0.0, 0.0]))
    with pytest.raises(ValueError, match="box must be 4 pixel values"):
        RefCOCOCollator(tokenizer, processor, store)([{"image_id": "img_a", "expression": "a", "box": [1.0, 2.0]}])


def test_retrieval_four_rows_per_example(tokenizer, processor, store):
    captions = {"img_a": "a red cube", "img_b": "a blue ball", "img_c": "three green ring"}
    rows = [{"image_id": image_id, "caption": caption} for image_id, caption in captions.items()]
    collator = RetrievalCollator(tokenizer, processor, store, seed=1)

    batch = collator(rows)

    assert batch["input_ids"].shape[0] == 12 and batch["visual_feats"].shape[0] == 12
    assert batch["labels"].tolist() == [0, 0, 0]
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["input_ids"]]
    images = [list(IMAGES)[int(feats[1, 0].item()) // 100 - 1] for feats in batch["visual_feats"]]
    for i, row in enumerate(rows):
        pairs = list(zip(images[4 * i : 4 * i + 4], texts[4 * i : 4 * i + 4], strict=True))
        assert pairs[0] == (row["image_id"], row["caption"])  # gold first
        assert pairs[1][0] == row["image_id"] and pairs[1][1] != row["caption"]  # gold image, another caption
        assert pairs[2][0] != row["image_id"] and pairs[2][1] == row["caption"]  # another image, gold caption
        assert (pairs[3][0] == row["image_id"]) != (pairs[3][1] == row["caption"])  # a negative of either kind
        assert all(captions[image] != text for image, text in pairs[1:])  # every negative is a mismatch
    again = RetrievalCollator(tokenizer, processor, store, seed=1)(rows)
    assert torch.equal(again["input_ids"], batch["input_ids"])


def test_retrieval_needs_another_image(tokenizer, processor, store):
    with pytest.raises(ValueError, match="need a caption pool with an image other than 'img_a'"):
        RetrievalCollator(tokenizer, processor, store)([{"image_id": "img_a", "caption": "a red cube"}])
    with pytest.raises(ValueError, match="num_negatives must be a non-negative int"):
        RetrievalCollator(tokenizer, processor, store, num_negatives=-1)
