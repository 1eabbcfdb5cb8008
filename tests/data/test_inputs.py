"""Model inputs: tokenizer, image resizing, missing-modality representation, collate, DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmp_core.data import BATCH_KEYS, ImageConfig, MultimodalDataset, build_tokenizer, collate, load_prepared
from mmp_core.data.convert import prepare
from mmp_core.data.images import load_pixels, missing_pixels
from mmp_core.data.vocab import SPECIAL_TOKENS, build_vocab, write_vocab
from tests.data_fixtures import image_bytes, make_mmimdb

SMALL = ImageConfig(shorter_side=32, longer_side=64, patch_size=16)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    make_mmimdb(root / "raw", sizes={"train": 6, "dev": 3, "test": 3})
    prepare("mmimdb", root / "out", raw_dir=root / "raw", vocab_size=128)
    return load_prepared(root / "out")


@pytest.fixture(scope="module")
def tokenizer(prepared):
    return build_tokenizer(prepared=prepared)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (450, 300, (576, 384)),  # portrait poster: shorter side 384
        (300, 450, (384, 576)),
        (200, 1000, (128, 640)),  # very wide: the longer side is capped at 640
        (400, 400, (384, 384)),
        (390, 700, (352, 640)),  # 384 x 689 -> capped 357 x 640 -> rounded down to multiples of 32
    ],
)
def test_resize_rule_vilt_b32(height, width, expected):
    config = ImageConfig()
    assert config.output_size(height, width) == expected
    pixels = load_pixels(image_bytes(width, height), config)
    assert pixels.shape == (3, *expected) and pixels.dtype == np.float32


def test_normalisation_mean_std_half():
    white = load_pixels(image_bytes(40, 40, colour=(255, 255, 255)), SMALL)
    black = load_pixels(image_bytes(40, 40, colour=(0, 0, 0)), SMALL)
    assert white.max() <= 1.0 and black.min() >= -1.0
    assert white.mean() > 0.8 and black.mean() < -0.8


def test_image_config_validation():
    with pytest.raises(ValueError, match="patch_size"):
        ImageConfig(shorter_side=8, longer_side=64, patch_size=16)
    with pytest.raises(ValueError, match="longer_side"):
        ImageConfig(shorter_side=64, longer_side=32, patch_size=16)


def test_missing_pixels_shapes():
    data = image_bytes(48, 32)  # 32 high, 48 wide
    assert missing_pixels(data, SMALL).shape == (3, 32, 48)
    assert np.all(missing_pixels(data, SMALL) == 1.0)
    assert missing_pixels(None, SMALL).shape == (3, 32, 32)  # no image at all: square of the shorter side


def test_tokenizer_from_vocab_file(tmp_path):
    path = write_vocab(tmp_path / "vocab.txt", build_vocab(["Hello world, hello!"]))
    assert path.read_text().split("\n")[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    tokenizer = build_tokenizer(path)
    encoded = tokenizer("Hello WORLD", max_length=6, padding="max_length", truncation=True)
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == [
        "[CLS]",
        "hello",
        "world",
        "[SEP]",
        "[PAD]",
        "[PAD]",
    ]
    assert tokenizer.pad_token_id == 0
    with pytest.raises(FileNotFoundError, match="no vocabulary found"):
        build_tokenizer(backbone_dir=tmp_path / "nowhere")


def test_batch_contract(prepared, tokenizer):
    dataset = MultimodalDataset(prepared, "train", tokenizer, image_config=SMALL, max_text_len=8)
    batch = collate([dataset[i] for i in (0, 1, 2, 3)])
    assert tuple(batch) == BATCH_KEYS
    dtypes = {k: v.dtype for k, v in batch.items()}
    assert dtypes == {
        "input_ids": torch.long,
        "attention_mask": torch.long,
        "pixel_values": torch.float32,
        "pixel_mask": torch.long,
        "missing_type": torch.long,
        "labels": torch.float32,
        "index": torch.long,
    }
    assert batch["input_ids"].shape == (4, 8) and batch["attention_mask"].shape == (4, 8)
    assert batch["pixel_values"].shape == (4, 3, 48, 48) and batch["pixel_mask"].shape == (4, 48, 48)
    assert batch["labels"].shape == (4, 23) and batch["missing_type"].tolist() == [0, 0, 0, 0]
    # padding: zeros in the image, 0 in the mask; real pixels 1
    assert batch["pixel_mask"][0, :32, :48].all() and not batch["pixel_mask"][0, 32:].any()
    assert torch.all(batch["pixel_values"][0, :, 32:] == 0)
    # text ("plot 0 about love and a chase 0", 8 words) truncated to max_text_len: [CLS] 6 words [SEP]
    ids = batch["input_ids"][0]
    assert tokenizer.decode(ids[1:-1]) == "plot 0 about love and a"
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and batch["attention_mask"][0].all()


def test_missing_text_and_image_representation(prepared, tokenizer):
    table = np.array([1, 2, 0, 1, 2, 0], dtype=np.int8)
    dataset = MultimodalDataset(prepared, "train", tokenizer, image_config=SMALL, max_text_len=10, missing=table)
    batch = collate([dataset[i] for i in range(6)])
    assert batch["missing_type"].tolist() == table.tolist()
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert batch["input_ids"][0].tolist() == [cls, sep] + [0] * 8  # [CLS] [SEP] + padding
    assert batch["attention_mask"][0].tolist() == [1, 1] + [0] * 8
    assert batch["attention_mask"][2].sum() > 2  # complete keeps its text
    # sample 1 (32x48 image -> 48 high, 32 wide): ones of the resized shape, fully unmasked
    assert torch.all(batch["pixel_values"][1, :, :48, :32] == 1.0)
    assert batch["pixel_mask"][1].sum() == 48 * 32
    assert not torch.all(batch["pixel_values"][2] == 1.0)


def test_forced_variant_keeps_natural_missing(tmp_path, tokenizer):
    ids = make_mmimdb(tmp_path / "raw", sizes={"train": 4, "dev": 2, "test": 2})
    (tmp_path / "raw" / "images" / f"{ids['test'][0]}.jpeg").unlink()
    prepare("mmimdb", tmp_path / "out", raw_dir=tmp_path / "raw")
    prepared = load_prepared(tmp_path / "out")
    for variant, expected in ((0, [2, 0]), (1, [2, 1]), (2, [2, 2])):
        dataset = MultimodalDataset(prepared, "test", tokenizer, missing=np.full(2, variant, np.int8))
        assert dataset.missing_types.tolist() == expected


def test_missing_table_validation(prepared, tokenizer):
    with pytest.raises(ValueError, match="shape"):
        MultimodalDataset(prepared, "train", tokenizer, missing=np.zeros(5, np.int8))
    with pytest.raises(ValueError, match="values"):
        MultimodalDataset(prepared, "train", tokenizer, missing=np.full(6, 3, np.int8))


def test_dataloader_with_workers(prepared, tokenizer):
    dataset = MultimodalDataset(prepared, "train", tokenizer, image_config=SMALL, max_text_len=8)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate)
    indices = torch.cat([batch["index"] for batch in loader])
    assert indices.tolist() == list(range(6))


def test_pixel_cache_feeds_exactly_the_decoded_inputs(prepared, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("MMP_CACHE_DIR", str(tmp_path))
    table = np.arange(prepared.rows("train")) % 3  # every sample complete, text missing or image missing
    decoded = MultimodalDataset(prepared, "train", tokenizer, image_config=SMALL, missing=table)
    cached = MultimodalDataset(prepared, "train", tokenizer, image_config=SMALL, missing=table, cache_pixels=True)
    files = sorted(p.name for p in (tmp_path / "pixels").iterdir())
    assert len(files) == 2 and files[0].endswith(".images.npy") and files[1].endswith(".sizes.npy")
    for row in range(len(decoded)):
        expected, got = decoded[row], cached[row]
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            assert torch.equal(value, got[key]) if torch.is_tensor(value) else value == got[key], (row, key)
    # Another resize rule is another cache file, never the first one reused.
    other = ImageConfig(shorter_side=48, longer_side=64, patch_size=16)
    resized = MultimodalDataset(prepared, "train", tokenizer, image_config=other, missing=table, cache_pixels=True)
    reference = MultimodalDataset(prepared, "train", tokenizer, image_config=other, missing=table)
    assert torch.equal(resized[0]["pixel_values"], reference[0]["pixel_values"])
    assert resized[0]["pixel_values"].shape != decoded[0]["pixel_values"].shape
    assert len(list((tmp_path / "pixels").iterdir())) == 4
