"""The embedded synthetic dataset: deterministic, MM-IMDb layout, and it needs both modalities."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from mmp_core.data import MultimodalDataset, build_tokenizer, collate, load_prepared
from mmp_core.data.convert import prepare
from mmp_core.data.datasets import EMBEDDED_GENRES, get_spec
from mmp_core.data.generate import GenerateConfig, draw_sample, generate_embedded, make_sample
from mmp_core.data.images import EMBEDDED_IMAGE_CONFIG

ROOT = Path(__file__).resolve().parents[2]


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "generator.json"
    }


def test_generation_is_deterministic_per_sample(tmp_path):
    small = GenerateConfig(train=8, dev=4, test=4, seed=0)
    generate_embedded(tmp_path / "a", small, workers=3)
    generate_embedded(tmp_path / "b", small, workers=1)
    a = _hashes(tmp_path / "a")
    assert a == _hashes(tmp_path / "b")
    assert len([k for k in a if k.startswith("images/")]) == 16
    # a larger training split adds samples without changing any other one
    generate_embedded(tmp_path / "c", GenerateConfig(train=12, dev=4, test=4, seed=0), workers=2)
    c = _hashes(tmp_path / "c")
    assert {k: v for k, v in c.items() if k in a and k != "split.json"} == {
        k: v for k, v in a.items() if k != "split.json"
    }
    assert len(c) == len(a) + 8
    generate_embedded(tmp_path / "d", GenerateConfig(train=8, dev=4, test=4, seed=1))
    assert _hashes(tmp_path / "d")["images/1000000.jpeg"] != a["images/1000000.jpeg"]


def test_layout_and_prepare(tmp_path):
    generate_embedded(tmp_path / "raw", GenerateConfig(train=30, dev=10, test=10, natural_missing=0.2))
    split = json.loads((tmp_path / "raw" / "split.json").read_text())
    assert [len(split[s]) for s in ("train", "dev", "test")] == [30, 10, 10]
    record = json.loads((tmp_path / "raw" / "labels" / f"{split['dev'][0]}.json").read_text())
    assert isinstance(record["plot"], list) and set(record["genres"]) <= set(EMBEDDED_GENRES)
    manifest = prepare("embedded", tmp_path / "out", raw_dir=tmp_path / "raw", vocab_size=1024)
    spec = get_spec("embedded")
    assert manifest["label_names"] == list(EMBEDDED_GENRES) and spec.num_labels == 8 and spec.task == "multilabel"
    natural = sum(
        manifest["files"][s]["natural_missing"]["text"] + manifest["files"][s]["natural_missing"]["image"]
        for s in split
    )
    assert 3 <= natural <= 20  # about 20% of 50 samples, each without image or without plot
    prepared = load_prepared(tmp_path / "out")
    tokenizer = build_tokenizer(prepared=prepared)
    assert len(tokenizer) <= 1024
    dataset = MultimodalDataset(prepared, "train", tokenizer)
    assert dataset.image_config == EMBEDDED_IMAGE_CONFIG and dataset.max_text_len == 40
    batch = collate([dataset[i] for i in range(8)])
    assert batch["input_ids"].shape == (8, 40) and batch["labels"].shape == (8, 8)
    assert batch["pixel_values"].shape[2] == 96 and batch["pixel_values"].shape[3] in (96, 112, 128, 144, 160)
    # plots fit the small backbone's 40 text positions; no word is unknown
    lengths = [len(tokenizer(t)["input_ids"]) for t in dataset.texts]
    assert max(lengths) <= 48 and sum(n > 40 for n in lengths) <= 1
    assert all(tokenizer.unk_token_id not in tokenizer(t)["input_ids"] for t in dataset.texts)


@pytest.fixture(scope="module")
def baselines():
    path = ROOT / "bench" / "embedded_baselines.py"
    spec = importlib.util.spec_from_file_location("embedded_baselines", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_complete_beats_each_single_modality(tmp_path, baselines):
    generate_embedded(tmp_path / "raw", GenerateConfig(train=600, dev=10, test=300, seed=3))
    prepare("embedded", tmp_path / "out", raw_dir=tmp_path / "raw")
    rows = baselines.run(tmp_path / "out")["rows"]
    image, text, complete = (rows[k]["f1_macro"] for k in ("image only", "text only", "complete"))
    assert complete > max(image, text) + 0.15, rows
    assert complete < 0.97  # noise: nothing is perfect
    per_label = {k: dict(zip(EMBEDDED_GENRES, rows[k]["per_label"], strict=True)) for k in rows}
    for genre in ("Horror", "Western", "Animation"):
        assert per_label["image only"][genre] > per_label["text only"][genre] + 0.4
    for genre in ("Romance", "Comedy", "Sci-Fi"):
        assert per_label["text only"][genre] > per_label["image only"][genre] + 0.4
    assert per_label["complete"]["Mystery"] > max(per_label["image only"]["Mystery"], per_label["text only"]["Mystery"])


def test_drawn_sample_is_the_written_one_with_its_cues(tmp_path):
    cfg = GenerateConfig(train=4, dev=2, test=2, seed=5)
    generate_embedded(tmp_path / "raw", cfg, workers=1)
    for split, index in (("train", 3), ("test", 1)):
        sample = draw_sample(cfg, split, index)
        record, image = make_sample(cfg, split, index)
        assert sample.record == record and sample.image == image
        written = tmp_path / "raw" / "images" / f"{record['id']}.jpeg"
        assert written.read_bytes() == image
        assert sample.image_cues <= set(EMBEDDED_GENRES) and sample.text_cues <= set(EMBEDDED_GENRES)
        # image-only genres never show a text cue, text-only genres never an image cue
        assert not sample.text_cues & {"Horror", "Western", "Animation"}
        assert not sample.image_cues & {"Romance", "Comedy", "Sci-Fi"}


def test_perfect_perceiver_ceiling(tmp_path):
    """The ceiling a model can approach: high but below 1 on complete data, lower as a modality goes missing."""
    path = ROOT / "bench" / "embedded_ceiling.py"
    spec = importlib.util.spec_from_file_location("embedded_ceiling", path)
    ceiling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ceiling)
    generate_embedded(tmp_path / "raw", GenerateConfig(train=600, dev=10, test=300, seed=3))
    prepare("embedded", tmp_path / "out", raw_dir=tmp_path / "raw")
    result = ceiling.run(tmp_path / "raw", tmp_path / "out", rates=(0.7, 1.0))
    f1 = {row["scenario"]: row["f1_macro"] for row in result["scenarios"]}
    assert result["test_samples"] == 300
    assert 0.85 <= f1["complete"] < 0.97, f1  # cue noise and flipped labels keep it below 1
    for missing_type in ("text", "image", "both"):
        assert f1["complete"] > f1[f"{missing_type}:0.7"] > f1[f"{missing_type}:1"], f1
    # with every text gone, the three text-only genres cannot be told: about 5/8 of the complete ceiling
    assert f1["text:1"] < 0.7 * f1["complete"], f1
    assert all(0.75 <= value <= 1.0 for value in result["complete_per_genre"].values()), result
    # a mismatched generator config is an error, not a silent wrong ceiling
    (tmp_path / "raw" / "generator.json").write_text(json.dumps({"seed": 4, "train": 600, "dev": 10, "test": 300}))
    with pytest.raises(RuntimeError, match="does not match"):
        ceiling.run(tmp_path / "raw", tmp_path / "out", rates=(0.7,))
