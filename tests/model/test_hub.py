"""Hub backbones (`org/name[@revision]`): loaded by transformers/huggingface_hub from a hub cache laid out exactly
as a download leaves it, offline; safetensors preferred, `.bin` only through weights-only loading."""

from __future__ import annotations

import io
import os
import pickle

import pytest
import torch

from mmp_core.config import TrainParams
from mmp_core.data.vocab import SPECIAL_TOKENS
from mmp_core.model.backbone import fingerprint, hub_id_of, load_backbone
from mmp_core.model.hub import HubId, parse_hub_id
from mmp_core.model.loading import backbone_for, tokenizer_for
from tests.model_fixtures import save_to_hub_cache

REPO_ID = "mmp-test/tiny-vilt"
VOCAB = "".join(f"{token}\n" for token in (*SPECIAL_TOKENS, "quokka", "zebra", "heist"))


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache that huggingface_hub and transformers use, offline (in this process and children)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def model_files(tmp_path, seed: int, **overrides) -> dict[str, bytes]:
    """config.json + model.safetensors of a random tiny ViLT, and a vocab.txt."""
    directory = tmp_path / f"model-{seed}"
    load_backbone("small:tiny", seed=seed, vocab_size=8, **overrides).save_pretrained(directory)
    files = {path.name: path.read_bytes() for path in directory.iterdir()}
    files["vocab.txt"] = VOCAB.encode()
    return files


class Payload:
    """A pickle that runs a command when unpickled: what a hostile pytorch_model.bin can hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cached_hub_id_loads_weights_vocab_and_pinned_revisions(tmp_path, hub_cache):
    files = model_files(tmp_path, seed=1)
    main = save_to_hub_cache(hub_cache, REPO_ID, files)
    other = save_to_hub_cache(hub_cache, REPO_ID, model_files(tmp_path, seed=2), ref="v2")
    expected = load_backbone("small:tiny", seed=1, vocab_size=8)

    loaded = load_backbone(REPO_ID)
    assert fingerprint(loaded) == fingerprint(expected)
    assert loaded.config._name_or_path == REPO_ID
    assert not any(p.requires_grad for p in loaded.parameters())
    # A pinned commit and a named revision load exactly those weights.
    assert fingerprint(load_backbone(f"{REPO_ID}@{main}")) == fingerprint(expected)
    assert fingerprint(load_backbone(f"{REPO_ID}@v2")) == fingerprint(load_backbone("small:tiny", seed=2, vocab_size=8))
    assert other != main

    tokenizer = tokenizer_for(f"{REPO_ID}@{main}", prepared=None)
    ids = tokenizer("A quokka heist")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "[UNK]", "quokka", "heist", "[SEP]"]


def test_bin_checkpoint_loads_weights_only_and_safetensors_win(tmp_path, hub_cache):
    files = model_files(tmp_path, seed=3)
    expected = load_backbone("small:tiny", seed=3, vocab_size=8)
    state = io.BytesIO()
    torch.save(expected.state_dict(), state)
    marker = tmp_path / "payload-ran"
    hostile = io.BytesIO()
    torch.save({"weights": Payload(marker)}, hostile)

    # A .bin of plain tensors loads (transformers' torch.load(weights_only=True)).
    save_to_hub_cache(
        hub_cache, "mmp-test/bin-only", {"config.json": files["config.json"], "pytorch_model.bin": state.getvalue()}
    )
    assert fingerprint(load_backbone("mmp-test/bin-only")) == fingerprint(expected)

    # With both formats the safetensors file is read: the hostile .bin beside it is never opened.
    save_to_hub_cache(hub_cache, "mmp-test/both", {**files, "pytorch_model.bin": hostile.getvalue()})
    assert fingerprint(load_backbone("mmp-test/both")) == fingerprint(expected)

    # A .bin that holds more than tensors is refused, and its code never runs.
    save_to_hub_cache(
        hub_cache, "mmp-test/hostile", {"config.json": files["config.json"], "pytorch_model.bin": hostile.getvalue()}
    )
    with pytest.raises(ValueError, match=r"mmp-test/hostile.*refused"):
        load_backbone("mmp-test/hostile")
    assert not marker.exists()


def test_uncached_models_say_how_to_fetch_them(tmp_path, hub_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_backbone("mmp-test/absent")
    message = str(error.value)
    assert "`hf download mmp-test/absent`" in message and "HF_HUB_OFFLINE=1" in message and str(hub_cache) in message
    assert f"there is no directory {tmp_path / 'mmp-test' / 'absent'}" in message

    save_to_hub_cache(hub_cache, REPO_ID, model_files(tmp_path, seed=1))
    with pytest.raises(FileNotFoundError, match=rf"`hf download {REPO_ID} --revision v9`"):
        load_backbone(f"{REPO_ID}@v9")
    # The weights are cached but the tokenizer's vocabulary is not: named, with the same advice.
    files = model_files(tmp_path, seed=1)
    del files["vocab.txt"]
    save_to_hub_cache(hub_cache, "mmp-test/no-vocab", files)
    with pytest.raises(FileNotFoundError, match=r"its vocab\.txt is not in the Hugging Face cache"):
        tokenizer_for("mmp-test/no-vocab", prepared=None)


def test_hub_ids_are_told_apart_from_paths_and_validated(tmp_path, monkeypatch):
    assert parse_hub_id("dandelin/vilt-b32-mlm") == HubId("dandelin/vilt-b32-mlm")
    assert parse_hub_id("dandelin/vilt-b32-mlm@0123abc") == HubId("dandelin/vilt-b32-mlm", "0123abc")
    assert parse_hub_id("org/name@refs/pr/1") == HubId("org/name", "refs/pr/1")
    for not_hub in ("s3://bucket/prefix", "small:tiny", "./org/name", "/abs/org/name", "a/b/c", "single"):
        assert parse_hub_id(not_hub) is None, not_hub
    for bad in ("org/name@", "org/name@../../etc", "org/na--me", "org/name.git"):
        with pytest.raises(ValueError, match="invalid"):
            parse_hub_id(bad)
    # An existing local directory always wins over the hub id it resembles (as in transformers).
    monkeypatch.chdir(tmp_path)
    assert hub_id_of("models/backbone") == HubId("models/backbone")
    (tmp_path / "models" / "backbone").mkdir(parents=True)
    assert hub_id_of("models/backbone") is None


def test_text_longer_than_the_positions_needs_text_positions(tmp_path, hub_cache):
    save_to_hub_cache(hub_cache, REPO_ID, model_files(tmp_path, seed=1, max_position_embeddings=40))
    with pytest.raises(ValueError) as error:
        backbone_for(TrainParams(backbone=REPO_ID, max_text_len=64))
    message = str(error.value)
    assert "train.max_text_len 64 exceeds the 40 text positions" in message
    assert "set train.text_positions: 64" in message and "lower train.max_text_len to 40" in message

    stretched = backbone_for(TrainParams(backbone=REPO_ID, max_text_len=64, text_positions=64))
    assert stretched.embeddings.text_embeddings.position_embeddings.weight.shape[0] == 64
    assert backbone_for(TrainParams(backbone=REPO_ID, max_text_len=24)).config.max_position_embeddings == 40
    with pytest.raises(ValueError, match="max_text_len 64 exceeds text_positions 48"):
        TrainParams(backbone=REPO_ID, max_text_len=64, text_positions=48)
    with pytest.raises(ValueError, match="fewer than the backbone's 40 text positions"):
        backbone_for(TrainParams(backbone=REPO_ID, max_text_len=24, text_positions=32))


def test_payload_fixture_is_really_hostile(tmp_path):
    """Guards the security test above: unpickling the payload without weights_only does run its command."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
