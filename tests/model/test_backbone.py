"""Backbone loading: local directories, named small configs, position interpolation, freezing."""

from __future__ import annotations

import pytest
import torch

from mmp_core.model.backbone import fingerprint, load_backbone


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
    longer = load_backbone("small:tiny", seed=0, text_positions=64)
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


def test_s3_backbone_is_downloaded_verified_and_cached(tmp_path, moto_server, s3_bucket):
    import boto3

    from mmp_core import s3

    original = load_backbone("small:tiny", seed=7)
    original.save_pretrained(tmp_path / "vilt")
    (tmp_path / "vilt" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    client = s3.make_client(moto_server)
    for path in sorted((tmp_path / "vilt").iterdir()):
        s3.upload_file(client, path, s3_bucket, f"backbones/tiny/{path.name}")
    uri = f"s3://{s3_bucket}/backbones/tiny"

    cache = tmp_path / "cache"
    loaded = load_backbone(uri, cache_dir=cache, endpoint_url=moto_server)
    assert fingerprint(loaded) == fingerprint(original)
    local = cache / "backbones" / s3_bucket / "backbones" / "tiny"
    assert (local / "model.safetensors").is_file() and (local / "vocab.txt").is_file()

    # A cached file that was tampered with is detected and fetched again.
    (local / "vocab.txt").write_text("tampered")
    load_backbone(uri, cache_dir=cache, endpoint_url=moto_server)
    assert (local / "vocab.txt").read_text().startswith("[PAD]")

    # An object whose content does not match its recorded checksum is refused, naming it.
    boto3.client("s3", endpoint_url=moto_server).put_object(
        Bucket=s3_bucket, Key="backbones/tiny/config.json", Body=b"{}", Metadata={"sha256": "0" * 64}
    )
    with pytest.raises(ValueError, match=r"config\.json: downloaded file fails verification"):
        load_backbone(uri, cache_dir=tmp_path / "cache2", endpoint_url=moto_server)
    with pytest.raises(FileNotFoundError, match="no objects under this prefix"):
        load_backbone(f"s3://{s3_bucket}/nothing", cache_dir=cache, endpoint_url=moto_server)
