"""Frozen features: the baseline trained and evaluated on cached [CLS] states gives what the live backbone gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mmp_core.config import TrainParams
from mmp_core.data import collate
from mmp_core.model.backbone import load_backbone
from mmp_core.model.features import FeatureDataset, feature_collate, feature_key, live_reason, variant_features
from mmp_core.model.inference import predict
from mmp_core.model.loading import open_prepared, split_dataset, tokenizer_for
from mmp_core.model.prompts import MissingAwarePromptConfig, MissingAwarePromptModel
from tests.model_fixtures import TINY_IMAGE, make_workspace, run_mmp, write_params


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("features"))


def _baseline(workspace, seed: int = 0) -> tuple[MissingAwarePromptModel, object]:
    params = TrainParams(backbone=str(workspace / "backbone"), max_text_len=40, image=TINY_IMAGE)
    prepared = open_prepared(workspace / "prepared")
    dataset = split_dataset(prepared, "train", tokenizer_for(params.backbone, prepared), params, params.train_missing)
    torch.manual_seed(seed)
    model = MissingAwarePromptModel(
        load_backbone(params.backbone), MissingAwarePromptConfig("multilabel", 8, prompt_type="none")
    )
    return model, dataset


def test_cached_features_give_the_live_scores(workspace, tmp_path):
    model, dataset = _baseline(workspace)
    live, _ = predict(model, dataset, collate, batch_size=16)
    features = FeatureDataset.of(model, dataset, collate, batch_size=16, cache_dir=tmp_path)
    cached, labels = predict(model, features, feature_collate, batch_size=16)
    np.testing.assert_allclose(cached, live, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, dataset.labels)
    # Only each sample's own variant was computed, and the file says which.
    [path] = tmp_path.glob("*.safetensors")
    filled = load_file(path)["filled"].numpy()
    assert filled.sum() == len(dataset)
    assert np.array_equal(filled.argmax(axis=0), dataset.missing_types)


def test_the_cache_is_reused_filled_up_and_repaired(workspace, tmp_path):
    model, dataset = _baseline(workspace)
    first = variant_features(model, dataset, collate, batch_size=16, cache_dir=tmp_path)
    [path] = tmp_path.glob("*.safetensors")
    stamp = path.stat().st_mtime_ns
    again = variant_features(model, dataset, collate, batch_size=16, cache_dir=tmp_path)
    assert torch.equal(first, again) and path.stat().st_mtime_ns == stamp, "a full cache is read, not rewritten"
    path.write_bytes(b"not a safetensors file")
    repaired = variant_features(model, dataset, collate, batch_size=16, cache_dir=tmp_path)
    torch.testing.assert_close(repaired, first)
    assert load_file(path)["filled"].all()


def test_the_key_changes_with_weights_data_settings_and_precision(workspace):
    model, dataset = _baseline(workspace)
    key = feature_key(model, dataset, torch.float32)
    assert feature_key(model, dataset, torch.bfloat16) != key
    params = TrainParams(backbone=str(workspace / "backbone"), max_text_len=24, image=TINY_IMAGE)
    prepared = open_prepared(workspace / "prepared")
    shorter = split_dataset(prepared, "train", tokenizer_for(params.backbone, prepared), params, None)
    assert feature_key(model, shorter, torch.float32) != key
    assert feature_key(model, dataset.__class__(prepared, "dev", dataset.tokenizer), torch.float32) != key
    other = MissingAwarePromptModel(
        load_backbone("small:tiny", seed=1), MissingAwarePromptConfig("multilabel", 8, prompt_type="none")
    )
    assert feature_key(other, dataset, torch.float32) != key


def test_prompts_and_nondeterministic_backbones_run_live(workspace):
    backbone = load_backbone(str(workspace / "backbone"))
    assert live_reason(backbone) is None
    prompted = MissingAwarePromptModel(backbone, MissingAwarePromptConfig("multilabel", 8, prompt_type="input"))
    with pytest.raises(ValueError, match="only the baseline"):
        prompted.frozen_cls(*[None] * 5)
    with pytest.raises(ValueError, match="baseline only"):
        prompted(frozen_cls=torch.zeros(2, backbone.config.hidden_size))
    backbone.config.hidden_dropout_prob = 0.1
    assert "dropout" in live_reason(backbone)


def test_baseline_training_on_features_matches_the_live_backbone(workspace):
    """`mmp train --method baseline` on cached features: the same validation history as the live loop."""
    params = write_params(workspace / "params.yaml", workspace / "backbone", epochs=2, precision="fp32")
    summaries = {}
    for frozen in (True, False):
        out = workspace / f"baseline-{frozen}"
        args = ["train", "--method", "baseline", "--prepared", str(workspace / "prepared"), "--out", str(out),
                "--params", str(params), "--checkpoint-dir", str(out) + ".ckpt",
                "--set", f"train.frozen_features={str(frozen).lower()}"]  # fmt: skip
        result = run_mmp(args, workspace)
        assert ("the backbone does not run in the loop" in result.stderr) is frozen
        summaries[frozen] = json.loads((out / "train_summary.json").read_text())
    cached, live = summaries[True], summaries[False]
    assert [h["step"] for h in cached["history"]] == [h["step"] for h in live["history"]]
    for ours, theirs in zip(cached["history"], live["history"], strict=True):
        assert ours["f1_macro"] == pytest.approx(theirs["f1_macro"], abs=1e-3)
    assert cached["best_step"] == live["best_step"]
