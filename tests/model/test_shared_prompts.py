"""Method `shared`: ONE prompt set that every sample gets whatever is missing (missing_aware=False)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmp_core.cli.stages import METHOD_CHOICES
from mmp_core.config import METHODS, PipelineParams, TrainParams
from mmp_core.model.backbone import load_backbone
from mmp_core.model.prompts import ADAPTER_CONFIG_NAME, MissingAwarePromptConfig, MissingAwarePromptModel
from mmp_core.params_file import read_methods
from tests.model.test_prompts import make_batch, seeded_logits

PROMPT_TYPES = ["attention", "input"]


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("small:tiny", seed=0)


def build(backbone, prompt_type, missing_aware=False, **kwargs):
    config = MissingAwarePromptConfig(
        task="multilabel", num_labels=5, prompt_type=prompt_type, missing_aware=missing_aware, **kwargs
    )
    torch.manual_seed(0)
    return MissingAwarePromptModel(backbone, config).eval()


def record_layer_inputs(model):
    """Wrap `vilt_layer` so that every call's (hidden, prefix) is kept: what the prompts put into the encoder."""
    calls, layer_fn = [], model.vilt_layer

    def recording(layer, hidden, mask, prefix=None):
        calls.append((hidden.detach().clone(), None if prefix is None else prefix.detach().clone()))
        return layer_fn(layer, hidden, mask, prefix)

    model.vilt_layer = recording
    return calls


def test_shared_is_a_method_everywhere_methods_are_listed():
    assert "shared" in METHODS and "shared" in METHOD_CHOICES
    pipeline = PipelineParams(methods=["baseline", "shared"], promote_method="shared")
    assert pipeline.methods == ("baseline", "shared") and pipeline.promote_method == "shared"
    assert PipelineParams().methods is None  # the flow publishes what params.yaml trains
    assert "shared" not in read_methods(Path(__file__).resolve().parents[2] / "params.yaml")  # not run unless asked
    assert TrainParams().shared_prompt_type == "attention"
    assert TrainParams(shared_prompt_type="input").shared_prompt_type == "input"
    with pytest.raises(ValueError, match="shared_prompt_type"):
        TrainParams(shared_prompt_type="none")


@pytest.mark.parametrize("prompt_type", PROMPT_TYPES)
def test_shared_has_exactly_one_prompt_set(backbone, prompt_type):
    model = build(backbone, prompt_type)
    hidden = backbone.config.hidden_size
    assert model.config.num_prompt_sets == 1
    assert model.prompts.shape == (1, 6, 16, hidden)
    assert (
        model.num_prompt_parameters() == build(backbone, prompt_type, missing_aware=True).num_prompt_parameters() // 3
    )
    # `reference` init: the complete case's marker row (keys and values for attention), nothing else.
    marked = {0, 8} if prompt_type == "attention" else {0}
    rows = model.prompts.detach()[0].abs().sum(dim=(0, 2))
    assert {i for i, total in enumerate(rows.tolist()) if total > 0} == marked


@pytest.mark.parametrize("prompt_type", PROMPT_TYPES)
def test_the_one_set_reaches_the_encoder_for_every_missing_type(backbone, prompt_type):
    model = build(backbone, prompt_type, prompt_init="normal")
    calls = record_layer_inputs(model)
    batch = make_batch(backbone, batch_size=3, missing=[0, 1, 2])  # complete, text missing, image missing
    seeded_logits(model, batch)
    shared = model.prompts.detach()[0]  # (layers, L, H)
    length = model.config.prompt_length
    for slot, (hidden, prefix) in enumerate(calls):
        for sample in range(3):
            if prompt_type == "attention":
                torch.testing.assert_close(prefix[sample], shared[slot], rtol=0, atol=0)
            else:  # the newest prompt tokens lead the sequence
                assert prefix is None
                torch.testing.assert_close(hidden[sample, :length], shared[slot], rtol=0, atol=0)


@pytest.mark.parametrize("prompt_type", PROMPT_TYPES)
def test_outputs_ignore_the_missing_type_label_and_follow_the_one_set(backbone, prompt_type):
    batch = make_batch(backbone, batch_size=3, missing=[0, 0, 0])
    relabelled = {**batch, "missing_type": torch.tensor([1, 2, 1])}
    model = build(backbone, prompt_type, prompt_init="normal")
    assert torch.equal(seeded_logits(model, batch), seeded_logits(model, relabelled))
    aware = build(backbone, prompt_type, missing_aware=True, prompt_init="normal")
    assert not torch.allclose(seeded_logits(aware, batch), seeded_logits(aware, relabelled))
    # Zeroing the one set changes every sample's logits, whatever its missing type.
    before = seeded_logits(model, relabelled)
    with torch.no_grad():
        model.prompts.zero_()
    after = seeded_logits(model, relabelled)
    assert all(not torch.allclose(before[i], after[i]) for i in range(3))


@pytest.mark.parametrize("prompt_type", PROMPT_TYPES)
@pytest.mark.parametrize("missing_type", [0, 1, 2])
def test_every_missing_type_trains_the_one_set(backbone, prompt_type, missing_type):
    model = build(backbone, prompt_type).train()
    batch = make_batch(backbone, batch_size=3, missing=[missing_type] * 3)
    model.loss(model(**batch), torch.randint(0, 2, (3, 5)).float()).backward()
    grad = model.prompts.grad
    assert grad.shape == model.prompts.shape
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("prompt_type", PROMPT_TYPES)
def test_shared_adapter_round_trips(tmp_path, backbone, prompt_type):
    model = build(backbone, prompt_type, prompt_init="normal")
    with torch.no_grad():
        model.head[3].bias.add_(0.5)
    model.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG_NAME).read_text())
    assert saved["prompt_config"]["missing_aware"] is False
    assert saved["prompt_config"]["prompt_type"] == prompt_type
    restored = MissingAwarePromptModel.from_pretrained(backbone, tmp_path / "adapter").eval()
    assert restored.config == model.config and restored.prompts.shape[0] == 1
    batch = make_batch(backbone)
    assert torch.equal(seeded_logits(restored, batch), seeded_logits(model, batch))


def test_adapters_from_before_the_field_load_as_missing_aware(tmp_path, backbone):
    build(backbone, "input", missing_aware=True).save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / ADAPTER_CONFIG_NAME
    metadata = json.loads(path.read_text())
    del metadata["prompt_config"]["missing_aware"]
    path.write_text(json.dumps(metadata))
    restored = MissingAwarePromptModel.from_pretrained(backbone, tmp_path / "old")
    assert restored.config.missing_aware and restored.prompts.shape[0] == 3


def test_weights_of_the_other_kind_are_refused(tmp_path, backbone):
    build(backbone, "attention", missing_aware=True).save_pretrained(tmp_path / "aware")
    shared = build(backbone, "attention")
    with pytest.raises(ValueError, match="prompts has shape"):
        shared.load_adapter_weights(tmp_path / "aware" / "adapter_model.safetensors")


def test_config_validation():
    with pytest.raises(ValueError, match="missing_aware must be true or false"):
        MissingAwarePromptConfig(task="multilabel", num_labels=5, missing_aware="no")
    # One marked row (two for attention: key and value) is all a shared reference init needs.
    MissingAwarePromptConfig(
        task="multilabel", num_labels=5, prompt_type="attention", prompt_length=2, missing_aware=False
    )
    MissingAwarePromptConfig(task="multilabel", num_labels=5, prompt_type="input", prompt_length=1, missing_aware=False)
    with pytest.raises(ValueError, match="at least 6"):
        MissingAwarePromptConfig(task="multilabel", num_labels=5, prompt_type="attention", prompt_length=4)
