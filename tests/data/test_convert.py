"""Raw layouts and reference arrow files -> prepared directory -> model batch, for every dataset."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from mmp_core.data import ImageConfig, MultimodalDataset, build_tokenizer, collate, load_prepared
from mmp_core.data.convert import prepare
from mmp_core.data.datasets import MMIMDB_GENRES, get_spec
from mmp_core.data.vocab import build_vocab, write_vocab
from mmp_core.fileio import sha256_file
from mmp_core.scenarios import MissingScenario
from tests.data_fixtures import (
    FOOD_CLASSES,
    FOOD_SIZES,
    SIZES,
    make_food101,
    make_hatememes,
    make_mmimdb,
    make_reference_food101,
    make_reference_hatememes,
    make_reference_mmimdb,
    mmimdb_genres,
)

SMALL = ImageConfig(shorter_side=32, longer_side=64, patch_size=16)


def _tokenizer(tmp_path, prepared):
    reader = prepared.open_split(prepared.spec.train_split)
    path = write_vocab(tmp_path / "vocab.txt", build_vocab(reader.texts()))
    return build_tokenizer(path)


def _batch(prepared, split, tokenizer, missing=None, max_text_len=16):
    dataset = MultimodalDataset(
        prepared, split, tokenizer, image_config=SMALL, max_text_len=max_text_len, missing=missing
    )
    return dataset, collate([dataset[i] for i in range(len(dataset))])


def test_mmimdb_round_trip(tmp_path):
    ids = make_mmimdb(tmp_path / "raw")
    manifest = prepare("mmimdb", tmp_path / "out", raw_dir=tmp_path / "raw", workers=2, batch_rows=4)
    assert manifest["task"] == "multilabel" and manifest["num_labels"] == 23
    assert manifest["label_names"] == list(MMIMDB_GENRES)
    assert manifest["primary_metric"] == "f1_macro"
    assert {s: manifest["files"][s]["rows"] for s in SIZES} == SIZES
    assert manifest["skipped_total"] == 0
    for split in SIZES:
        entry = manifest["files"][split]
        assert entry["sha256"] == sha256_file(tmp_path / "out" / entry["file"])
        assert entry["natural_missing"] == {"text": 0, "image": 0}
    prepared = load_prepared(tmp_path / "out", verify=True)
    assert prepared.splits == ("train", "dev", "test")
    reader = prepared.open_split("dev")
    assert reader.ids() == ids["dev"]
    assert reader.texts()[0] == "plot 6 about love and a chase 6"  # the plot list joined
    table = pa.ipc.open_file(str(prepared.arrow_path("dev"))).read_all()
    assert table.column("genres").to_pylist()[0] == mmimdb_genres(6)
    assert table.column("split").to_pylist() == ["dev"] * 3

    tokenizer = _tokenizer(tmp_path, prepared)
    _, batch = _batch(prepared, "train", tokenizer)
    labels = batch["labels"]
    assert labels.dtype == torch.float32 and labels.shape == (6, 23)
    for row in range(6):
        expected = torch.zeros(23)
        for genre in mmimdb_genres(row):
            expected[MMIMDB_GENRES.index(genre)] = 1
        assert torch.equal(labels[row], expected)
    # (48x32 -> 32x48 -> 32 high, 48 wide), (32x48 -> 48x32), (40x40 -> 32x32): padded to 48x48
    assert batch["pixel_values"].shape == (6, 3, 48, 48)
    assert batch["pixel_mask"][0].sum() == 32 * 48 and batch["pixel_mask"][1].sum() == 48 * 32
    assert batch["pixel_mask"][2].sum() == 32 * 32
    assert batch["index"].tolist() == list(range(6))
    text = tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert text == "plot 0 about love and a chase 0"


def test_food101_round_trip(tmp_path):
    entries = make_food101(tmp_path / "raw")
    manifest = prepare("food101", tmp_path / "out", raw_dir=tmp_path / "raw", workers=1)
    assert manifest["task"] == "multiclass" and manifest["primary_metric"] == "accuracy"
    assert manifest["label_names"] == list(FOOD_CLASSES)  # from class_idx.json
    assert manifest["splits"] == ["train", "val", "test"]
    assert {s: manifest["files"][s]["rows"] for s in FOOD_SIZES} == FOOD_SIZES
    prepared = load_prepared(tmp_path / "out")
    assert prepared.spec.num_labels == 3
    assert prepared.open_split("val").ids() == entries["val"]
    tokenizer = _tokenizer(tmp_path, prepared)
    dataset, batch = _batch(prepared, "test", tokenizer)
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [(9 + i) % 3 for i in range(3)]
    assert dataset.texts[0] == "best apple pie recipe 9"
    assert batch["input_ids"].shape == (3, 16)


def test_hatememes_round_trip(tmp_path):
    records = make_hatememes(tmp_path / "raw")
    manifest = prepare("hatememes", tmp_path / "out", raw_dir=tmp_path / "raw", workers=2)
    assert manifest["task"] == "binary" and manifest["num_labels"] == 2 and manifest["primary_metric"] == "auroc"
    prepared = load_prepared(tmp_path / "out")
    assert prepared.open_split("test").ids() == [str(r["id"]) for r in records["test"]]
    tokenizer = _tokenizer(tmp_path, prepared)
    _, batch = _batch(prepared, "train", tokenizer)
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [r["label"] for r in records["train"]]
    assert batch["pixel_values"].shape[0] == 6 and batch["pixel_values"].dtype == torch.float32


def test_natural_missing_is_marked_not_fatal(tmp_path):
    ids = make_mmimdb(tmp_path / "raw")
    (tmp_path / "raw" / "images" / f"{ids['train'][1]}.jpeg").unlink()  # no image file
    label = tmp_path / "raw" / "labels" / f"{ids['train'][2]}.json"
    label.write_text(json.dumps({"plot": [], "genres": ["Drama"]}))  # empty text
    manifest = prepare("mmimdb", tmp_path / "out", raw_dir=tmp_path / "raw")
    assert manifest["files"]["train"]["natural_missing"] == {"text": 1, "image": 1}
    prepared = load_prepared(tmp_path / "out")
    assert prepared.natural_missing("train").tolist() == [0, 2, 1, 0, 0, 0]
    # forced into every table, whatever the scenario
    table = prepared.missing_table("train", MissingScenario("text", 0.0))
    assert table.tolist() == [0, 2, 1, 0, 0, 0]
    # a constant 'text missing' variant keeps the image-less row image-missing
    tokenizer = _tokenizer(tmp_path, prepared)
    _, batch = _batch(prepared, "train", tokenizer, missing=np.ones(6, dtype=np.int8))
    assert batch["missing_type"].tolist() == [1, 2, 1, 1, 1, 1]
    # the image-less row: ones, a square of the shorter side, unmasked; its text is kept
    assert torch.all(batch["pixel_values"][1, :, :32, :32] == 1) and batch["pixel_mask"][1].sum() == 32 * 32
    assert batch["attention_mask"][1].sum() > 2


def test_reference_arrow_files(tmp_path):
    ids = make_reference_mmimdb(tmp_path / "ref")
    manifest = prepare("mmimdb", tmp_path / "out", arrow_dir=tmp_path / "ref")
    assert manifest["source"]["kind"] == "arrow"
    prepared = load_prepared(tmp_path / "out")
    assert prepared.open_split("train").ids() == ids["train"]
    assert prepared.open_split("train").labels().sum(axis=1).tolist() == [2] * 6

    make_reference_hatememes(tmp_path / "ref_hm")
    manifest = prepare("hatememes", tmp_path / "out_hm", arrow_dir=tmp_path / "ref_hm")
    reader = load_prepared(tmp_path / "out_hm").open_split("dev")
    assert reader.ids() == ["dev-0", "dev-1", "dev-2"]  # no image_id in the reference: row-based ids
    assert reader.labels().tolist() == [0, 1, 0]

    # 12 classes and no class_idx.json: the built-in 101 names would misname them, so it is refused.
    make_reference_food101(tmp_path / "ref_food")
    with pytest.raises(ValueError, match=r"use 12 classes \(labels 0..11\) but there is no class_idx.json"):
        prepare("food101", tmp_path / "out_food", arrow_dir=tmp_path / "ref_food")
    # With class_idx.json beside the files, its names and its number of classes are the dataset's.
    names = [f"dish_{i}" for i in range(12)]
    (tmp_path / "ref_food" / "class_idx.json").write_text(json.dumps({name: i for i, name in enumerate(names)}))
    prepare("food101", tmp_path / "out_food", arrow_dir=tmp_path / "ref_food")
    prepared = load_prepared(tmp_path / "out_food")
    assert prepared.spec.num_labels == 12 and list(prepared.spec.label_names) == names
    tokenizer = _tokenizer(tmp_path, prepared)
    _, batch = _batch(prepared, "val", tokenizer)
    assert batch["labels"].tolist() == [6, 7, 8]


def test_reference_arrow_is_readable_directly(tmp_path):
    """The reader opens the reference's files as they are (no image_id column)."""
    from mmp_core.data import ArrowSplit

    make_reference_hatememes(tmp_path / "ref")
    reader = ArrowSplit(tmp_path / "ref" / "hatememes_train.arrow", get_spec("hatememes"))
    assert len(reader) == 6 and reader.texts()[1] == "meme 1" and reader.labels().tolist() == [0, 1, 0, 1, 0, 1]
    assert reader.image(5)[:8] == b"\x89PNG\r\n\x1a\n"


def test_conversion_is_deterministic_and_atomic(tmp_path):
    make_mmimdb(tmp_path / "raw")
    first = prepare("mmimdb", tmp_path / "a", raw_dir=tmp_path / "raw", workers=3, batch_rows=2)
    second = prepare("mmimdb", tmp_path / "b", raw_dir=tmp_path / "raw", workers=1, batch_rows=2)
    assert first["fingerprint"] == second["fingerprint"]
    assert {s: e["sha256"] for s, e in first["files"].items()} == {s: e["sha256"] for s, e in second["files"].items()}
    # a failed conversion leaves the previous output untouched and no temporary directories behind
    (tmp_path / "raw" / "split.json").write_text("{broken")
    with pytest.raises(ValueError):
        prepare("mmimdb", tmp_path / "a", raw_dir=tmp_path / "raw")
    assert load_prepared(tmp_path / "a", verify=True).fingerprint == first["fingerprint"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "raw"]


def test_prepare_saves_missing_tables_and_vocab(tmp_path):
    make_mmimdb(tmp_path / "raw")
    scenarios = [MissingScenario(t, r) for t in ("text", "image", "both") for r in (0.0, 0.5)]
    prepare("mmimdb", tmp_path / "out", raw_dir=tmp_path / "raw", vocab_size=64, missing_scenarios=scenarios)
    names = sorted(p.name for p in (tmp_path / "out" / "missing").iterdir())
    assert len(names) == 3 * 6 + 1 and "train_both_0.50.npy" in names and "index.json" in names
    table = np.load(tmp_path / "out" / "missing" / "train_both_0.50.npy")
    assert table.dtype == np.int8 and np.bincount(table, minlength=3).tolist() == [3, 2, 1]
    vocab = (tmp_path / "out" / "vocab.txt").read_text().split("\n")
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] and "love" in vocab
    tokenizer = build_tokenizer(prepared=load_prepared(tmp_path / "out"))
    assert tokenizer.unk_token_id not in tokenizer("plot about love")["input_ids"]
