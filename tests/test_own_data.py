"""The README's "your own data" guide, run as a user would: raw MM-IMDb-layout files -> `mmp prepare` -> either
a small backbone pretrained on the data's own vocabulary, or a hub backbone (offline, from its cache) with its
vocabulary and longer texts -> `mmp train` -> `mmp evaluate` -> `mmp predict`. Every command from a subfolder of
the project, so params.yaml is found at its root."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from mmp_core.data.datasets import MMIMDB_GENRES
from mmp_core.data.vocab import build_vocab, write_vocab
from mmp_core.model.backbone import load_backbone
from mmp_core.model.precision import resolve_precision
from tests.data_fixtures import make_mmimdb
from tests.model_fixtures import TINY_IMAGE, TINY_RECIPE, mmp_env, save_backbone_to_hub_cache

pytestmark = pytest.mark.slow

HUB_ID = "my-org/tiny-vilt"


@pytest.mark.slow(seconds=30)
def test_own_dataset_from_raw_files_to_predictions(tmp_path):
    project = tmp_path / "project"
    work = project / "work"  # every command runs here: params.yaml is found one level up, beside dvc.yaml
    work.mkdir(parents=True)
    (project / "dvc.yaml").write_text("stages: {}\n")
    ids = make_mmimdb(project / "raw", sizes={"train": 16, "dev": 8, "test": 8})

    # A "pretrained" hub model: a tiny ViLT with 40 text positions and a vocabulary of its own, in a hub cache.
    texts = [" ".join(json.loads(p.read_text())["plot"]) for p in (project / "raw" / "labels").glob("*.json")]
    hub = tmp_path / "hub-model"
    vocab = write_vocab(hub / "vocab.txt", build_vocab(texts, max_size=64))
    load_backbone("small:tiny", vocab_size=64, max_position_embeddings=40, image_size=64).save_pretrained(hub)
    assert vocab.is_file()
    env = mmp_env(tmp_path)
    env.update(HF_HUB_CACHE=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", MMP_PROGRESS="log", MMP_PROGRESS_INTERVAL="0")
    commit = save_backbone_to_hub_cache(tmp_path / "hf", HUB_ID, hub)

    def mmp(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "mmp_core.cli", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == expect, f"mmp {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        return result

    # 1. prepare, with a vocabulary from the training text (for the pretrained-here backbone)
    mmp("prepare", "--dataset", "mmimdb", "--raw", "../raw", "--out", "../data/prepared", "--vocab-size", "200")
    assert (project / "data" / "prepared" / "vocab.txt").is_file()

    params = {
        "pretrain": {
            "config": "tiny",
            "corpus": "prepared",
            "image": TINY_IMAGE,
            "epochs": 1,
            "batch_size": 8,
            "text_positions": 40,
        },
        "train": {
            "backbone": "../models/backbone",  # the pretrained one; 2b switches to the hub
            "max_text_len": 40,
            "image": TINY_IMAGE,
            "prompt_length": 6,
            "prompt_layers": [0, 1, 2],
            "epochs": 2,
            "batch_size": 4,
            "effective_batch_size": 4,
            "val_per_epoch": 1,
            **TINY_RECIPE,
        },
        "evaluate": {"rates": [0.0, 0.7, 1.0], "batch_size": 8},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    # 2a. a small backbone pretrained on this data, with its vocabulary (training on it: tests/flows/test_flows.py)
    result = mmp("pretrain", "--prepared", "../data/prepared", "--out", "../models/backbone")
    assert "pretrain: step 2/2 (100%)" in result.stderr  # off a terminal: log lines with step, rate, ETA
    summary = json.loads((project / "models" / "backbone" / "pretrain_summary.json").read_text())
    words = (project / "data" / "prepared" / "vocab.txt").read_text().splitlines()
    assert summary["params"]["text_positions"] == 40 and summary["vocab_size"] == len(words)

    # 2b. a hub backbone with longer texts: the mismatch is refused, naming the setting to change
    train = ["train", "--method", "input", "--prepared", "../data/prepared", "--out", "../models/input",
             "--checkpoint-dir", "../ckpt/input"]  # fmt: skip
    params["train"].update(backbone=f"{HUB_ID}@{commit}", max_text_len=64)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    refused = mmp(*train, expect=2)
    assert "train.max_text_len 64 exceeds the 40 text positions" in refused.stderr
    assert "set train.text_positions: 64" in refused.stderr
    params["train"]["text_positions"] = 64
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = mmp(*train)
    assert "train input: step 8/8 (100%)" in result.stderr and "ETA" in result.stderr
    adapter = json.loads((project / "models" / "input" / "adapter" / "adapter_config.json").read_text())
    assert adapter["backbone"]["name_or_path"] == f"{HUB_ID}@{commit}"
    assert adapter["backbone"]["max_position_embeddings"] == 64
    assert adapter["training"]["label_names"] == list(MMIMDB_GENRES)
    assert adapter["training"]["inputs"] == {
        "max_text_len": 64, "text_positions": 64, "image": TINY_IMAGE, "precision": resolve_precision("auto", hidden_size=32),
    }  # fmt: skip

    # 3. evaluate on the scenario grid
    mmp("evaluate", "--method", "input", "--prepared", "../data/prepared", "--adapter", "../models/input/adapter",
        "--out", "../results/input")  # fmt: skip
    metrics = json.loads((project / "results" / "input" / "metrics.json").read_text())
    assert metrics["dataset"] == "mmimdb" and metrics["test_samples"] == len(ids["test"])
    assert len(metrics["grid"]) == 9 and 0.0 <= metrics["headline"]["f1_macro"] <= 1.0

    # 4. predict on a new input: the backbone and its vocabulary come from the hub cache, as recorded
    result = mmp("predict", "--adapter", "../models/input/adapter", "--text", "plot about love and a chase", "--json")
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["missing_type"] == "image_missing" and set(row["scores"]) == set(MMIMDB_GENRES)
