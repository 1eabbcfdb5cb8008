"""Backbone loading: local directories, named small configs, position interpolation, freezing."""

from __future__ import annotations

import pytest
import torch

from mmp_core.backbone import fingerprint, load_backbone


def test_small_backbone_is_frozen_and_deterministic():
    a = load_backbone("small:tiny", seed=3)
    b = load_backbone("small:tiny", seed=3)
    assert not any(p.requires_grad for p in a.parameters())
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(load_backbone("small:tiny", seed=4))


def test_unknown_small_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown small backbone 'huge'"):
        load_backbone("small:huge")


def test_directory_round_trip_loads_safetensors_only(tmp_path):
    original = load_backbone("small:tiny", seed=5)
    original.save_pretrained(tmp_path / "vilt")
    loaded = load_backbone(str(tmp_path / "vilt"))
    assert fingerprint(loaded) == fingerprint(original)
    assert not any(p.requires_grad for p in loaded.parameters())
    assert loaded.config._name_or_path == str(tmp_path / "vilt")

    (tmp_path / "vilt" / "model.safetensors").rename(tmp_path / "vilt" / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="only loads safetensors"):
        load_backbone(str(tmp_path / "vilt"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone(str(tmp_path / "nowhere"))


def test_text_positions_are_interpolated_and_frozen():
    base = load_backbone("small:tiny", seed=0)
    longer = load_backbone("small:tiny", seed=0, max_text_len=64)
    old = base.embeddings.text_embeddings.position_embeddings.weight
    new = longer.embeddings.text_embeddings.position_embeddings.weight
    assert new.shape == (64, old.shape[1]) and longer.config.max_position_embeddings == 64
    # Linear interpolation with aligned corners keeps both end points.
    torch.testing.assert_close(new[0], old[0])
    torch.testing.assert_close(new[-1], old[-1])
    assert not new.requires_grad
    ids = torch.randint(1, 60, (2, 64))
    out = longer(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values=torch.randn(2, 3, 64, 64),
        pixel_mask=torch.ones(2, 64, 64, dtype=torch.long),
    )
    assert out.last_hidden_state.shape[1] == 64 + 1 + 16
