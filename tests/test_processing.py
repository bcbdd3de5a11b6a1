"""The region processor against the release's normalisation, and VLProcessor's save/load and Auto loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import MODEL_TYPES, tiny_config
from transformers import AutoModel, AutoProcessor, BertTokenizer

import vl_zoo
from vl_zoo import RegionFeatureProcessor, VLProcessor

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "cube", "left", "of", "blue", "ball"]


def tokenizer() -> BertTokenizer:
    return BertTokenizer(vocab={word: i for i, word in enumerate(WORDS)})


def two_images():
    features = [np.arange(3 * 4, dtype=np.float16).reshape(3, 4), np.full((5, 4), 2.0, dtype=np.float32)]
    boxes = [
        np.array([[0, 0, 100, 50], [10, 20, 30, 40], [50, 50, 200, 100]], dtype=np.float32),
        np.array([[0, 0, 64, 48]] * 5, dtype=np.float32),
    ]
    return features, boxes, [(100, 200), (48, 64)]


def test_boxes_are_normalised_as_the_release_does():
    features, boxes, sizes = two_images()
    out = RegionFeatureProcessor(max_regions=4, add_global_feature="first")(features, boxes, sizes)
    # x1/W, y1/H, x2/W, y2/H, (x2-x1)(y2-y1)/(W*H), with H=100, W=200 for the first image
    expected = [
        [0, 0, 0.5, 0.5, 0.25],
        [0.05, 0.2, 0.15, 0.4, 20 * 20 / 20000],
        [0.25, 0.5, 1.0, 1.0, 150 * 50 / 20000],
    ]
    torch.testing.assert_close(out["visual_pos"][0, 1:4], torch.tensor(expected))
    torch.testing.assert_close(out["visual_pos"][0, 0], torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))


def test_global_row_first_last_and_none():
    features, boxes, sizes = two_images()
    mean_first = torch.tensor(features[0].astype(np.float32).mean(0))
    first = RegionFeatureProcessor(4, "first")(features, boxes, sizes)
    assert first["visual_feats"].shape == (2, 5, 4) and first["visual_feats"].dtype == torch.float32
    torch.testing.assert_close(first["visual_feats"][0, 0], mean_first)
    torch.testing.assert_close(first["visual_feats"][0, 1:4], torch.tensor(features[0], dtype=torch.float32))
    assert first["visual_attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]

    last = RegionFeatureProcessor(4, "last")(features, boxes, sizes)
    torch.testing.assert_close(last["visual_feats"][0, 3], mean_first)  # right after the 3 kept regions
    assert last["visual_attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    # the second image has 5 regions: 4 are kept, the global row (their mean) follows
    torch.testing.assert_close(last["visual_feats"][1, 4], torch.full((4,), 2.0))

    none = RegionFeatureProcessor(4, None)(features, boxes, sizes, return_tensors="np")
    assert none["visual_feats"].shape == (2, 4, 4) and isinstance(none["visual_feats"], np.ndarray)
    assert none["visual_attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]


def test_global_row_is_the_mean_of_the_kept_regions_only():
    features = [np.stack([np.full(2, float(i)) for i in range(6)])]
    boxes = [np.zeros((6, 4), dtype=np.float32)]
    out = RegionFeatureProcessor(max_regions=3)(features, boxes, [(10, 10)])
    torch.testing.assert_close(out["visual_feats"][0, 0], torch.full((2,), 1.0))  # mean of 0, 1, 2


def test_scatter_aligns_region_values_with_the_rows():
    processor = RegionFeatureProcessor(3, "first")
    out = processor.scatter([np.array([1.0, 2.0]), np.array([5.0, 6.0, 7.0, 8.0])], fill=-1)
    assert out.tolist() == [[-1, 1, 2, -1], [-1, 5, 6, 7]]
    assert processor.region_rows(2).tolist() == [1, 2] and processor.global_row(2) == 0
    assert RegionFeatureProcessor(3, "last").global_row(2) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f, b, s: (f, b[:1], s), "must list the same images"),
        (lambda f, b, s: (f, [b[0][:2], b[1]], s), "boxes\\[0\\] has shape \\(2, 4\\)"),
        (lambda f, b, s: (f, [b[0] * 10, b[1]], s), "boxes\\[0\\] has a box outside the 200x100 image"),
        (lambda f, b, s: (f, b, [(100, 200), (0, 64)]), "image_sizes\\[1\\] is \\(0, 64\\)"),
        (lambda f, b, s: ([f[0], f[1][:, :3]], b, s), "features\\[1\\] has shape \\(5, 3\\)"),
    ],
)
def test_bad_input_is_refused(change, message):
    with pytest.raises(ValueError, match=message):
        RegionFeatureProcessor(4)(*change(*two_images()))


def test_settings_are_checked():
    with pytest.raises(ValueError, match="add_global_feature='middle'"):
        RegionFeatureProcessor(4, "middle")
    with pytest.raises(ValueError, match="max_regions must be a positive int"):
        RegionFeatureProcessor(0)


def test_vl_processor_feeds_the_model(tmp_path):
    config = tiny_config("vlzoo_uniter", v_feature_size=4, vocab_size=len(WORDS))
    processor = VLProcessor.for_model(config, tokenizer(), max_regions=4)
    features, boxes, sizes = two_images()
    batch = processor(
        text=["a red cube", "a blue ball left of a red cube"], features=features, boxes=boxes, image_sizes=sizes
    )
    assert batch["input_ids"].shape == (2, 10) and batch["visual_feats"].shape == (2, 5, 4)
    model = AutoModel.from_config(config).eval()
    assert model(**batch).pooler_output.shape == (2, config.pooler_size)

    # saved next to the model, AutoProcessor restores it
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert (
        isinstance(loaded, VLProcessor) and loaded.region_processor.to_dict() == processor.region_processor.to_dict()
    )
    again = loaded(
        text=["a red cube", "a blue ball left of a red cube"], features=features, boxes=boxes, image_sizes=sizes
    )
    for key in batch:
        assert torch.equal(batch[key], again[key]), key


def test_vl_processor_follows_the_model_config():
    lxmert = vl_zoo.LxmertConfig.from_preset("original")
    assert VLProcessor.for_model(lxmert, tokenizer()).region_processor.add_global_feature is None
    vl_bert = vl_zoo.VLBertConfig.from_preset("original")
    assert VLProcessor.for_model(vl_bert, tokenizer()).region_processor.add_global_feature == "last"
    with pytest.raises(ValueError, match="text has 1 entries but features has 2 images"):
        VLProcessor(tokenizer())(
            text=["a red cube"], features=two_images()[0], boxes=two_images()[1], image_sizes=two_images()[2]
        )


def test_longest_padding_pads_to_the_batch_and_keeps_the_rows_aligned():
    features, boxes, sizes = two_images()
    full = RegionFeatureProcessor(max_regions=8, add_global_feature="last")
    short = RegionFeatureProcessor(max_regions=8, add_global_feature="last", padding="longest")
    padded, trimmed = full(features, boxes, sizes), short(features, boxes, sizes)
    assert padded["visual_feats"].shape == (2, 9, 4) and trimmed["visual_feats"].shape == (2, 6, 4)
    for key in padded:
        assert torch.equal(padded[key][:, :6], trimmed[key]), key
    assert not padded["visual_attention_mask"][:, 6:].any()
    per_region = [np.arange(3.0), np.arange(5.0)]
    assert np.array_equal(short.scatter(per_region), full.scatter(per_region)[:, :6])
    # max_regions still caps the rows
    capped = RegionFeatureProcessor(max_regions=2, add_global_feature="first", padding="longest")
    assert capped(features, boxes, sizes)["visual_feats"].shape == (2, 3, 4)
    with pytest.raises(ValueError, match="padding='shortest' is not supported"):
        RegionFeatureProcessor(4, padding="shortest")


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_longest_padding_gives_the_same_outputs(model_type):
    config = tiny_config(model_type, v_feature_size=4, vocab_size=len(WORDS))
    model = AutoModel.from_config(config).eval()
    features, boxes, sizes = two_images()
    outputs = []
    for padding in ("max_regions", "longest"):
        processor = VLProcessor(tokenizer(), RegionFeatureProcessor.from_config(config, 12, padding=padding))
        batch = processor(text=["a red cube", "a blue ball"], features=features, boxes=boxes, image_sizes=sizes)
        with torch.no_grad():
            outputs.append((model(**batch), batch["visual_attention_mask"].bool()))
    (full, full_mask), (short, short_mask) = outputs
    torch.testing.assert_close(full.text_last_hidden_state, short.text_last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(full.pooler_output, short.pooler_output, atol=1e-5, rtol=0)
    kept = full.vision_last_hidden_state[:, : short_mask.shape[1]][short_mask]
    torch.testing.assert_close(kept, short.vision_last_hidden_state[short_mask], atol=1e-5, rtol=0)


def test_vl_processor_saves_its_region_padding(tmp_path):
    processor = VLProcessor(tokenizer(), RegionFeatureProcessor(6, "first", padding="longest"))
    processor.save_pretrained(tmp_path)
    assert VLProcessor.from_pretrained(tmp_path).region_processor.padding == "longest"
