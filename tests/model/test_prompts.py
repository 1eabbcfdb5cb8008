"""The missing-aware prompt model: spec-exact behaviour of each prompt type, routing, freezing, adapters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmp_core.model.backbone import fingerprint, load_backbone
from mmp_core.model.prompts import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    MissingAwarePromptConfig,
    MissingAwarePromptModel,
)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("small:tiny", seed=0)


def make_batch(backbone, batch_size=4, missing=None, seed=1, pad_text=True, pad_image=True):
    """A batch with padded text (last tokens) and one image smaller than the batch (padded pixels)."""
    config = backbone.config
    generator = torch.Generator().manual_seed(seed)
    length, size = config.max_position_embeddings, config.image_size
    input_ids = torch.randint(1, config.vocab_size, (batch_size, length), generator=generator)
    attention_mask = torch.ones(batch_size, length, dtype=torch.long)
    if pad_text:
        attention_mask[0, length // 2 :] = 0
        input_ids[0, length // 2 :] = 0
    pixel_values = torch.randn(batch_size, 3, size, size, generator=generator)
    pixel_mask = torch.ones(batch_size, size, size, dtype=torch.long)
    if pad_image:
        pixel_mask[1, :, size // 2 :] = 0  # right half of image 1 is batch padding
        pixel_values[1, :, :, size // 2 :] = 0.0
    if missing is None:
        missing = [i % 3 for i in range(batch_size)]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": pixel_values,
        "pixel_mask": pixel_mask,
        "missing_type": torch.tensor(missing),
    }


def build(backbone, prompt_type="input", **kwargs):
    config = MissingAwarePromptConfig(task="multilabel", num_labels=5, prompt_type=prompt_type, **kwargs)
    torch.manual_seed(0)
    return MissingAwarePromptModel(backbone, config).eval()


def seeded_logits(model, batch, seed=123):
    # ViLT shuffles image patches (and samples pad patches) with the global RNG: seed every compared run.
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(**batch)


def test_none_matches_stock_vilt_hidden_states(backbone):
    model = build(backbone, "none")
    batch = make_batch(backbone)
    torch.manual_seed(7)
    with torch.no_grad():
        stock = backbone(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            pixel_mask=batch["pixel_mask"],
        ).last_hidden_state
    torch.manual_seed(7)
    with torch.no_grad():
        embeddings, mask = backbone.embeddings(
            batch["input_ids"], batch["attention_mask"], None, batch["pixel_values"], batch["pixel_mask"], None, None
        )
        ours, num_prompt_tokens = model.encode(embeddings, mask, batch["missing_type"])
    assert num_prompt_tokens == 0
    assert ours.shape == stock.shape
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-6)


def test_input_level_grows_sequence_by_96_and_pools_text_cls(backbone):
    model = build(backbone, "input", prompt_length=16, prompt_layers=(0, 1, 2, 3, 4, 5))
    batch = make_batch(backbone)
    with torch.no_grad():
        embeddings, mask = backbone.embeddings(
            batch["input_ids"], batch["attention_mask"], None, batch["pixel_values"], batch["pixel_mask"], None, None
        )
        hidden, num_prompt_tokens = model.encode(embeddings, mask, batch["missing_type"])
    assert num_prompt_tokens == 96
    assert hidden.shape[1] == embeddings.shape[1] + 96

    pooled_inputs = []
    handle = model.pooler.dense.register_forward_hook(lambda module, args, out: pooled_inputs.append(args[0]))
    try:
        torch.manual_seed(3)
        with torch.no_grad():
            model(**batch)
        torch.manual_seed(3)
        with torch.no_grad():
            embeddings, mask = backbone.embeddings(
                batch["input_ids"],
                batch["attention_mask"],
                None,
                batch["pixel_values"],
                batch["pixel_mask"],
                None,
                None,
            )
            hidden, _ = model.encode(embeddings, mask, batch["missing_type"])
    finally:
        handle.remove()
    # The pooler saw the token right after the 96 prompt tokens: the text [CLS].
    torch.testing.assert_close(pooled_inputs[0], hidden[:, 96], rtol=0, atol=0)


@pytest.mark.parametrize("prompt_type", ["input", "attention", "none"])
def test_sdpa_matches_the_explicit_softmax_path(backbone, prompt_type):
    model = build(backbone, prompt_type, prompt_init="normal")
    batch = make_batch(backbone)
    model.attention_implementation = "eager"
    explicit = seeded_logits(model, batch)
    model.attention_implementation = "sdpa"
    fused = seeded_logits(model, batch)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fused, seeded_logits(model, make_batch(backbone, seed=2)), atol=1e-4)  # inputs matter


@pytest.mark.parametrize("prompt_type", ["input", "attention", "none"])
def test_padding_content_does_not_change_logits(backbone, prompt_type):
    model = build(backbone, prompt_type)
    batch = make_batch(backbone)
    reference = seeded_logits(model, batch)

    changed = {key: value.clone() for key, value in batch.items()}
    changed["input_ids"][0, changed["attention_mask"][0] == 0] = 7  # other tokens under the text padding
    padded = changed["pixel_mask"][1] == 0
    changed["pixel_values"][1][:, padded] = 5.0  # other pixels under the image padding
    torch.testing.assert_close(seeded_logits(model, changed), reference, rtol=0, atol=1e-5)

    # Sanity: the same change on real (unmasked) positions does change the logits.
    visible = {key: value.clone() for key, value in batch.items()}
    visible["pixel_values"][1][:, ~padded] = 5.0
    assert not torch.allclose(seeded_logits(model, visible), reference, atol=1e-4)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_attention_level_layer_matches_explicit_prefix_attention(backbone, implementation):
    model = build(backbone, "attention", prompt_length=6, prompt_layers=(0,), prompt_init="normal")
    model.attention_implementation = implementation
    batch = make_batch(backbone)
    with torch.no_grad():
        embeddings, mask = backbone.embeddings(
            batch["input_ids"], batch["attention_mask"], None, batch["pixel_values"], batch["pixel_mask"], None, None
        )
        prompt = model.prompts[batch["missing_type"], 0]  # (B, 6, H)
        layer = backbone.encoder.layer[0]
        ours = model.vilt_layer(layer, embeddings, mask.float(), prompt)

        # Written out: heads, prefix keys/values, masked softmax(Q K^T / sqrt(d)) V, then ViLT's block.
        attn = layer.attention.attention
        heads, d = attn.num_attention_heads, attn.attention_head_size
        x = F.layer_norm(
            embeddings,
            (embeddings.shape[-1],),
            layer.layernorm_before.weight,
            layer.layernorm_before.bias,
            layer.layernorm_before.eps,
        )
        q = x @ attn.query.weight.T + attn.query.bias
        k = torch.cat([prompt[:, :3], x @ attn.key.weight.T + attn.key.bias], dim=1)
        v = torch.cat([prompt[:, 3:], x @ attn.value.weight.T + attn.value.bias], dim=1)
        visible = torch.cat([torch.ones(mask.shape[0], 3), mask.float()], dim=1)
        outputs = []
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d)
            scores = scores.masked_fill(visible[:, None, :] == 0, float("-inf"))
            outputs.append(torch.softmax(scores, dim=-1) @ v[..., sl])
        context = torch.cat(outputs, dim=-1)
        residual = context @ layer.attention.output.dense.weight.T + layer.attention.output.dense.bias + embeddings
        y = F.layer_norm(
            residual,
            (residual.shape[-1],),
            layer.layernorm_after.weight,
            layer.layernorm_after.bias,
            layer.layernorm_after.eps,
        )
        y = F.gelu(y @ layer.intermediate.dense.weight.T + layer.intermediate.dense.bias)
        expected = y @ layer.output.dense.weight.T + layer.output.dense.bias + residual

        hidden, num_prompt_tokens = model.encode(embeddings, mask, batch["missing_type"])
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert ours.shape == embeddings.shape
    assert num_prompt_tokens == 0 and hidden.shape == embeddings.shape


@pytest.mark.parametrize("prompt_type", ["input", "attention"])
@pytest.mark.parametrize("missing_type", [0, 1, 2])
def test_each_missing_type_trains_only_its_prompt_slice(backbone, prompt_type, missing_type):
    model = build(backbone, prompt_type).train()
    batch = make_batch(backbone, batch_size=3, missing=[missing_type] * 3)
    labels = torch.randint(0, 2, (3, 5)).float()
    model.loss(model(**batch), labels).backward()
    grad = model.prompts.grad
    for k in range(3):
        has_gradient = bool(grad[k].abs().sum() > 0)
        assert has_gradient == (k == missing_type), f"slice {k} gradient: {has_gradient}"


def test_mixed_batch_routes_gradients(backbone):
    model = build(backbone, "input").train()
    batch = make_batch(backbone, batch_size=4, missing=[0, 2, 0, 2])
    model.loss(model(**batch), torch.ones(4, 5)).backward()
    assert model.prompts.grad[0].abs().sum() > 0
    assert model.prompts.grad[2].abs().sum() > 0
    assert model.prompts.grad[1].abs().sum() == 0


@pytest.mark.parametrize("prompt_type", ["input", "attention", "none"])
def test_optimizer_step_changes_only_prompts_pooler_head(prompt_type):
    backbone = load_backbone("small:tiny", seed=0)
    model = build(backbone, prompt_type).train()
    before_backbone = {k: v.clone() for k, v in backbone.state_dict().items()}
    before_trainable = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = make_batch(backbone)
    model.loss(model(**batch), torch.ones(4, 5)).backward()
    optimizer.step()

    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before_backbone[name]), f"backbone tensor {name} changed"
    after = model.trainable_state_dict()
    expected = {"pooler.dense.weight", "head.0.weight", "head.3.weight"} | (
        {"prompts"} if prompt_type != "none" else set()
    )
    for name in expected:
        assert not torch.equal(after[name], before_trainable[name]), f"{name} did not change"
    trainable_names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(not n.startswith("backbone.") for n in trainable_names)


def test_vilt_b32_shape_accounting(capsys):
    backbone = load_backbone("small:vilt-b32", seed=0)
    backbone_params = sum(p.numel() for p in backbone.parameters())
    assert 110_000_000 < backbone_params < 114_000_000
    for prompt_type in ("input", "attention"):
        config = MissingAwarePromptConfig(task="multilabel", num_labels=23, prompt_type=prompt_type)
        model = MissingAwarePromptModel(backbone, config)
        assert model.prompts.shape == (3, 6, 16, 768)
        assert model.num_prompt_parameters() == 221_184
        assert model.num_prompt_parameters() / backbone_params == pytest.approx(0.0020, abs=0.0001)
        trainable, total = model.get_nb_trainable_parameters()
        # prompts + pooler (768*768+768) + head (768*1536+1536 + 2*1536 + 1536*23+23)
        assert trainable == 221_184 + 590_592 + 1_181_184 + 3_072 + 35_351
        line = model.print_trainable_parameters()
        assert line.startswith(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: ")
    assert "trainable params: 2,031,383" in capsys.readouterr().out


@pytest.mark.parametrize("prompt_type", ["input", "attention", "none"])
def test_adapter_round_trip_gives_identical_logits(tmp_path, backbone, prompt_type):
    model = build(backbone, prompt_type, prompt_init="normal")
    with torch.no_grad():
        model.head[3].bias.add_(0.5)  # make sure trained-like state (not the init) round-trips
    model.save_pretrained(tmp_path / "adapter", extra={"epoch": 3})
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]

    from safetensors.torch import load_file

    saved = load_file(tmp_path / "adapter" / ADAPTER_WEIGHTS_NAME)
    assert all(not name.startswith("backbone.") for name in saved)
    restored = MissingAwarePromptModel.from_pretrained(backbone, tmp_path / "adapter").eval()
    batch = make_batch(backbone)
    assert torch.equal(seeded_logits(restored, batch), seeded_logits(model, batch))

    import json

    text = (tmp_path / "adapter" / ADAPTER_CONFIG_NAME).read_text()
    meta = json.loads(text)
    assert text == json.dumps(meta, indent=2, sort_keys=True) + "\n"
    assert meta["backbone"]["fingerprint"] == fingerprint(backbone)
    assert meta["backbone"]["name_or_path"] == "small:tiny"
    assert meta["training"] == {"epoch": 3}
    assert meta["mmp_version"]


def test_adapter_rejects_other_backbone(tmp_path, backbone):
    build(backbone, "input").save_pretrained(tmp_path / "a")
    other_weights = load_backbone("small:tiny", seed=1)
    with pytest.raises(ValueError, match="other weights"):
        MissingAwarePromptModel.from_pretrained(other_weights, tmp_path / "a")
    MissingAwarePromptModel.from_pretrained(other_weights, tmp_path / "a", allow_backbone_mismatch=True)
    other_shape = load_backbone("small:tiny", seed=0, hidden_size=64)
    with pytest.raises(ValueError, match="hidden_size=32"):
        MissingAwarePromptModel.from_pretrained(other_shape, tmp_path / "a", allow_backbone_mismatch=True)


def test_corrupt_truncated_or_malformed_adapter_names_the_file(tmp_path, backbone):
    build(backbone, "input").save_pretrained(tmp_path / "a")
    weights = tmp_path / "a" / ADAPTER_WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{weights}: corrupt or truncated"):
        MissingAwarePromptModel.from_pretrained(backbone, tmp_path / "a")
    weights.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match=f"{weights}: corrupt or truncated"):
        MissingAwarePromptModel.from_pretrained(backbone, tmp_path / "a")
    config = tmp_path / "a" / ADAPTER_CONFIG_NAME
    config.write_text("{not json")
    with pytest.raises(ValueError, match=f"{config}: adapter config is not valid JSON"):
        MissingAwarePromptModel.from_pretrained(backbone, tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="adapter config not found"):
        MissingAwarePromptModel.from_pretrained(backbone, tmp_path / "missing")


def test_bad_batches_are_clear_errors(backbone):
    model = build(backbone, "input")
    batch = make_batch(backbone)
    with pytest.raises(ValueError, match="missing_type must be"):
        model(**{**batch, "missing_type": torch.tensor([0, 1, 3, 0])})
    with pytest.raises(ValueError, match="inconsistent batch"):
        model(**{**batch, "missing_type": torch.tensor([0, 1, 2])})
    with pytest.raises(ValueError, match="inconsistent batch"):
        model(**{**batch, "pixel_values": batch["pixel_values"][:2]})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_type": "deep"}, "prompt_type must be one of"),
        ({"task": "regression"}, "task must be one of"),
        ({"task": "binary", "num_labels": 3}, "num_labels must be 2"),
        ({"prompt_type": "attention", "prompt_length": 15}, "must be even"),
        ({"prompt_layers": (2, 1)}, "strictly ascending"),
        ({"prompt_layers": ()}, "at least one layer"),
        ({"prompt_length": 0}, "positive integer"),
        ({"num_labels": 0}, "positive integer"),
    ],
)
def test_config_validation(kwargs, message):
    values = {"task": "multilabel", "num_labels": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        MissingAwarePromptConfig(**values)


def test_prompt_layers_beyond_backbone_are_rejected(backbone):
    config = MissingAwarePromptConfig(task="multilabel", num_labels=5, prompt_layers=(0, 6))
    with pytest.raises(ValueError, match="backbone has 6 layers"):
        MissingAwarePromptModel(backbone, config)


def test_reference_prompt_init_marks_one_row_per_missing_type(backbone):
    model = build(backbone, "attention")
    prompts = model.prompts.detach()
    # complete -> row 0, image-missing (type 2) -> row 1, text-missing (type 1) -> row 2; keys and values.
    for missing_type, row in ((0, 0), (2, 1), (1, 2)):
        ones = (prompts[missing_type] == 1).all(dim=-1)  # (layers, L)
        assert ones[:, row].all() and ones[:, 8 + row].all()
        assert int(ones.sum()) == 2 * 6
