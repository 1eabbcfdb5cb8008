"""The premise experiment's measurements on a backbone alone (docs/premise.md): missing-case separability of
the frozen features, and the shipped ViLT-faithful stand-in `backbones/generic`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from mmp_core.config import PretrainParams
from mmp_core.data import build_tokenizer
from mmp_core.pretraining.data import CaptionPairs
from mmp_core.pretraining.model_card import CARD_DATA_NAME, CARD_NAME, verify_card
from mmp_core.pretraining.pretrain import load_pretraining_model, matching_metrics
from mmp_core.pretraining.probe import missing_case_accuracy
from tests.model_fixtures import REPO


def test_missing_case_accuracy_reads_how_far_apart_the_three_inputs_are():
    rng = np.random.default_rng(0)

    def inputs(spread: float) -> dict:
        centres = {"complete": 0.0, "text missing": spread, "image missing": -spread}
        return {
            name: {split: rng.normal(size=(n, 8)) + centre for split, n in (("train", 300), ("test", 150))}
            for name, centre in centres.items()
        }

    assert missing_case_accuracy(inputs(10.0), "train", "test") == 1.0  # far apart: told apart every time
    assert missing_case_accuracy(inputs(0.0), "train", "test") == pytest.approx(1 / 3, abs=0.08)  # the same: chance


# ---------------------------------------------------------------------------------------------- backbones/generic
GENERIC = REPO / "backbones" / "generic"


def test_generic_backbone_is_the_one_its_card_describes():
    assert verify_card(GENERIC) == json.loads((GENERIC / CARD_DATA_NAME).read_text())["weights_sha256"]
    card = (GENERIC / CARD_NAME).read_text()
    assert verify_card(GENERIC) in card and "mmp pretrain" in card and "captions" in card
    size = sum(p.stat().st_size for p in GENERIC.iterdir())
    assert size <= 10 * 2**20, f"{GENERIC} is {size / 2**20:.1f} MB, over the 10 MB budget"
    summary = json.loads((GENERIC / "pretrain_summary.json").read_text())
    assert summary["params"]["corpus"] == "captions"
    assert all("itc_loss" not in epoch for epoch in summary["history"]), "complete pairs only: no image-text contrast"
    assert summary["heldout"]["itm_accuracy"] >= 0.85  # P1 of docs/premise.md
    # Token ids of the shipped vocabulary are unchanged: the embedded benchmark tokenises the same way.
    embedded = (REPO / "backbones" / "embedded" / "vocab.txt").read_text().splitlines()
    assert (GENERIC / "vocab.txt").read_text().splitlines()[: len(embedded)] == embedded


def test_make_run_trains_on_the_vilt_faithful_backbone():
    assert (REPO / yaml.safe_load((REPO / "params.yaml").read_text())["train"]["backbone"]).resolve() == GENERIC


def test_generic_backbone_matches_captions_it_never_saw():
    """Image-text matching on freshly generated captioned pictures (corpus part 2: neither pretraining's 0 nor the
    held-out 1), against content-changing hard negatives and other captions."""
    params = PretrainParams.model_validate(json.loads((GENERIC / "pretrain_summary.json").read_text())["params"])
    model = load_pretraining_model(GENERIC)
    pairs = CaptionPairs(params, build_tokenizer(GENERIC / "vocab.txt"), part=2, size=160)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        metrics = matching_metrics(model, pairs, candidates=None)
    assert metrics["itm_accuracy"] >= 0.85, metrics
