"""Method `finetune`: the reference row. No prompts; the whole backbone trains with the pooler and head, under
DeepSpeed ZeRO (stage 2 by default, 3 for backbones that do not fit), and its adapter is the full state."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmp_core.config import METHODS, REFERENCE_METHODS, TrainParams
from mmp_core.data import collate
from mmp_core.evaluation.metrics import compute_metrics
from mmp_core.model.backbone import backbone_fingerprint, load_backbone
from mmp_core.model.features import frozen_features_off
from mmp_core.model.inference import predict
from mmp_core.model.loading import open_prepared, split_dataset, tokenizer_for
from mmp_core.model.prompts import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    MissingAwarePromptConfig,
    MissingAwarePromptModel,
)
from mmp_core.training.deepspeed_setup import parameter_groups
from tests.model.test_prompts import make_batch, seeded_logits
from tests.model_fixtures import make_workspace, run_mmp, write_params
from tests.training.test_train import train_args


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("small:tiny", seed=0)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("finetune"))


def finetune_model(backbone) -> MissingAwarePromptModel:
    config = MissingAwarePromptConfig(task="multilabel", num_labels=5, prompt_type="none", train_backbone=True)
    torch.manual_seed(0)
    return MissingAwarePromptModel(backbone, config)


def test_finetune_is_a_reference_method_without_prompts():
    assert METHODS["finetune"] == "none" and "finetune" in REFERENCE_METHODS
    assert TrainParams().finetune_deepspeed_config == "infra/deepspeed/zero2.json"
    with pytest.raises(ValueError, match="takes prompt_type 'none'"):
        MissingAwarePromptConfig(task="multilabel", num_labels=5, prompt_type="attention", train_backbone=True)


def test_the_whole_backbone_trains_at_its_own_rate(backbone):
    model = finetune_model(load_backbone("small:tiny", seed=0))
    backbone_names = {n for n, p in model.named_parameters() if n.startswith("backbone.")}
    assert backbone_names and all(p.requires_grad for p in model.parameters())
    groups = parameter_groups(model, 0.02, head_lr=1e-3, backbone_lr=1e-4)
    by_rate = {}
    for group in groups:
        by_rate.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    assert set(by_rate) == {1e-3, 1e-4}
    assert by_rate[1e-4] == {id(p) for n, p in model.named_parameters() if n.startswith("backbone.")}
    assert frozen_features_off(model, True) == "the backbone trains"
    with pytest.raises(ValueError, match="only the baseline has frozen_cls"):
        model.frozen_cls(**make_batch(model.backbone))
    # The prompt methods' groups are what they were: the frozen backbone is in none of them.
    frozen = MissingAwarePromptModel(backbone, MissingAwarePromptConfig("multilabel", 5, prompt_type="input"))
    assert not any(n.startswith("backbone.") for n, p in frozen.named_parameters() if p.requires_grad)


def test_adapter_holds_the_full_state_and_leaves_a_shared_backbone_alone(tmp_path, backbone):
    start = backbone_fingerprint(backbone)
    model = finetune_model(load_backbone("small:tiny", seed=0)).eval()
    with torch.no_grad():  # what training does: the backbone's weights move
        model.backbone.encoder.layer[0].attention.attention.query.weight.add_(0.1)
    model.save_pretrained(tmp_path / "adapter")
    tensors = load_file(tmp_path / "adapter" / ADAPTER_WEIGHTS_NAME)
    assert "backbone.encoder.layer.0.attention.attention.query.weight" in tensors
    assert {n for n in tensors if n.startswith("backbone.")} == {f"backbone.{n}" for n in backbone.state_dict()}
    metadata = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG_NAME).read_text())
    assert metadata["backbone"]["fingerprint"] == start, "the adapter records the weights it started from"
    assert metadata["prompt_config"]["train_backbone"] is True

    restored = MissingAwarePromptModel.from_pretrained(backbone, tmp_path / "adapter").eval()
    batch = make_batch(backbone)
    assert torch.equal(seeded_logits(restored, batch), seeded_logits(model, batch))
    assert backbone_fingerprint(backbone) == start, "the backbone passed in is not overwritten"
    assert backbone_fingerprint(restored.backbone) != start, "cached features must not mistake the tuned weights"
    frozen = MissingAwarePromptModel(backbone, MissingAwarePromptConfig("multilabel", 5, prompt_type="none")).eval()
    assert not torch.allclose(seeded_logits(frozen, batch), seeded_logits(restored, batch))
    other = load_backbone("small:tiny", seed=1)
    with pytest.raises(ValueError, match="other weights"):
        MissingAwarePromptModel.from_pretrained(other, tmp_path / "adapter")


@pytest.mark.parametrize("stage", [2, 3])
def test_mmp_train_finetune_updates_the_backbone_and_reloads_to_its_validation_score(workspace, stage):
    name = f"finetune-zero{stage}"
    params_path = write_params(
        workspace / f"{name}.yaml",
        workspace / "backbone",
        epochs=2,
        backbone_lr=1e-3,
        finetune_deepspeed_config=f"infra/deepspeed/zero{stage}.json",
    )
    result = run_mmp(train_args(workspace, "finetune", name, params_path), workspace)
    assert f"ZeRO stage {stage}" in result.stdout + result.stderr
    assert "frozen [CLS] features" not in result.stdout + result.stderr
    summary = json.loads((workspace / name / "train_summary.json").read_text())
    assert summary["steps"] == 12

    start = load_backbone(str(workspace / "backbone"))
    tensors = load_file(workspace / name / "adapter" / ADAPTER_WEIGHTS_NAME)
    changed = [n for n, t in start.state_dict().items() if not torch.equal(tensors[f"backbone.{n}"], t.float())]
    assert "encoder.layer.0.attention.attention.query.weight" in changed, "the backbone's weights did not train"

    # Reloaded on the starting backbone, the adapter gives back the validation score training recorded.
    train = TrainParams.model_validate(yaml.safe_load(params_path.read_text())["train"])
    prepared = open_prepared(workspace / "prepared")
    model = MissingAwarePromptModel.from_pretrained(start, workspace / name / "adapter")
    val = split_dataset(
        prepared, prepared.spec.val_split, tokenizer_for(train.backbone, prepared), train, train.val_missing
    )
    scores, labels = predict(model, val, collate, batch_size=train.batch_size, seed=train.seed, dtype=torch.float32)
    assert compute_metrics("multilabel", scores, labels)["f1_macro"] == pytest.approx(
        summary["best_val_f1_macro"], abs=1e-6
    )
