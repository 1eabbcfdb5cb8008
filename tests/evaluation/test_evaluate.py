"""Evaluation: metrics, the cached-variant scenario grid, and `mmp evaluate`'s files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from mmp_core.config import TrainParams
from mmp_core.data import collate
from mmp_core.evaluation.evaluate import VariantOutputs, load_variant_outputs, run_variants
from mmp_core.evaluation.metrics import compute_metrics
from mmp_core.model.backbone import load_backbone
from mmp_core.model.inference import predict
from mmp_core.model.loading import missing_seed, open_prepared, split_dataset, tokenizer_for
from mmp_core.model.prompts import MissingAwarePromptConfig, MissingAwarePromptModel
from mmp_core.scenarios import MissingScenario
from tests.model_fixtures import TINY_IMAGE, make_workspace, run_mmp, write_params


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("evaluate"))


def test_multilabel_metrics_match_hand_computation():
    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    scores = np.array([[0.9, 0.2], [0.4, 0.8], [0.6, 0.7], [0.1, 0.3]])
    metrics = compute_metrics("multilabel", scores, labels)
    # class 0: tp 1 (row 0), fn 1 (row 1), fp 1 (row 2) -> F1 0.5; class 1: tp 2, fp 0, fn 0 -> F1 1.0
    assert metrics["f1_macro"] == pytest.approx(0.75)
    assert metrics["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert metrics["f1_weighted"] == pytest.approx((0.5 * 2 + 1.0 * 2) / 4)
    # per sample: row0 1.0, row1 2/3, row2 2/3, row3 (no labels, no predictions) 0
    assert metrics["f1_samples"] == pytest.approx((1 + 2 / 3 + 2 / 3 + 0) / 4)


def test_multiclass_and_binary_metrics():
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    assert compute_metrics("multiclass", scores, np.array([0, 1, 2, 1]))["accuracy"] == pytest.approx(0.75)
    binary = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    metrics = compute_metrics("binary", binary, np.array([0, 1, 1, 0]))
    # positive-class scores 0.1, 0.8, 0.4, 0.7 for labels 0, 1, 1, 0: 3 of 4 pairs ordered right
    assert metrics["auroc"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert math.isnan(compute_metrics("binary", binary, np.array([1, 1, 1, 1]))["auroc"])
    with pytest.raises(ValueError, match="empty"):
        compute_metrics("binary", binary[:0], np.array([]))


def test_assembled_grid_equals_running_each_cell(workspace):
    params = TrainParams(backbone=str(workspace / "backbone"), max_text_len=40, image=TINY_IMAGE)
    prepared = open_prepared(workspace / "prepared")
    tokenizer = tokenizer_for(params.backbone, prepared)
    backbone = load_backbone(params.backbone)
    torch.manual_seed(0)
    config = MissingAwarePromptConfig("multilabel", prepared.spec.num_labels, prompt_init="normal")
    model = MissingAwarePromptModel(backbone, config).eval()
    n = prepared.rows("test")

    def make(table):
        return split_dataset(prepared, "test", tokenizer, params, table)

    outputs = run_variants(model, make, collate, n, batch_size=16)
    assert outputs.scores.shape == (3, n, prepared.spec.num_labels)
    assert not np.allclose(outputs.scores[0], outputs.scores[1]), "variants must differ"
    for missing_type in ("text", "image", "both"):
        for rate in (0.0, 0.5, 1.0):
            table = prepared.missing_table("test", MissingScenario(missing_type, rate), 0)
            direct, labels = predict(model, make(table), collate, batch_size=16)
            np.testing.assert_allclose(outputs.assemble(table), direct, rtol=0, atol=2e-5)
            assembled = compute_metrics("multilabel", outputs.assemble(table), outputs.labels)
            expected = compute_metrics("multilabel", direct, labels)
            assert assembled == pytest.approx(expected, abs=1e-6)


def test_assemble_rejects_bad_tables():
    outputs = VariantOutputs(np.zeros((3, 4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="expected"):
        outputs.assemble(np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="0, 1 or 2"):
        outputs.assemble(np.array([0, 1, 2, 3]))


def test_evaluate_command_writes_grid_metrics_and_curves(workspace):
    params = write_params(workspace / "params.yaml", workspace / "backbone")
    prepared = open_prepared(workspace / "prepared")
    model = MissingAwarePromptModel(
        load_backbone(str(workspace / "backbone")),
        MissingAwarePromptConfig("multilabel", prepared.spec.num_labels, prompt_type="attention", prompt_length=6),
    )
    model.save_pretrained(workspace / "adapter")
    result = run_mmp(
        ["evaluate", "--method", "attention", "--prepared", str(workspace / "prepared"),
         "--adapter", str(workspace / "adapter"), "--out", str(workspace / "results"), "--params", str(params)],
        workspace,
    )  # fmt: skip
    metrics = json.loads((workspace / "results" / "metrics.json").read_text())
    assert metrics["method"] == "attention" and metrics["primary_metric"] == "f1_macro"
    # rates 0, .5, .7, 1 x 3 types; the headline (both, 0.7) is one of them
    assert len(metrics["grid"]) == 12
    assert metrics["headline"]["missing_type"] == "both" and metrics["headline"]["missing_rate"] == 0.7
    assert metrics["train_setting"] == {"missing_type": "both", "missing_rate": 0.7}
    assert metrics["test_samples"] == 48
    lines = (workspace / "results" / "grid.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:4] == ["method", "missing_type", "missing_rate", "f1_macro"]
    assert len(lines) == 13
    curve = (workspace / "results" / "curves" / "image.tsv").read_text().splitlines()
    assert curve[0] == "missing_rate\tscore" and [c.split("\t")[0] for c in curve[1:]] == [
        "0.00",
        "0.50",
        "0.70",
        "1.00",
    ]
    # at rate 0 every type is the same scenario: all complete
    zero = {row["missing_type"]: row["f1_macro"] for row in metrics["grid"] if row["missing_rate"] == 0.0}
    assert zero["text"] == zero["image"] == zero["both"]
    assert "[attention] test f1_macro" in result.stdout
    # The per-sample scores give back every grid cell: what a paired bootstrap of two methods reads.
    outputs = load_variant_outputs(workspace / "results" / "scores.npz")
    assert outputs.scores.shape == (3, 48, prepared.spec.num_labels) and outputs.scores.dtype == np.float32
    train = TrainParams.model_validate(yaml.safe_load(params.read_text())["train"])
    table = prepared.missing_table("test", MissingScenario("image", 0.7), missing_seed(prepared, train))
    cell = next(r for r in metrics["grid"] if (r["missing_type"], r["missing_rate"]) == ("image", 0.7))
    assert compute_metrics("multilabel", outputs.assemble(table), outputs.labels)["f1_macro"] == pytest.approx(
        cell["f1_macro"], abs=1e-6
    )
    with pytest.raises(FileNotFoundError, match="no per-sample test scores"):
        load_variant_outputs(workspace / "nowhere.npz")
