"""Loading and freezing the ViLT backbone.

A backbone source is one of
  * a local directory written by `ViltModel.save_pretrained`, optionally with the tokenizer's `vocab.txt` beside
    it (only `model.safetensors` is read);
  * an `s3://bucket/prefix` URI: the objects are mirrored into a local cache with boto3, each one verified;
  * a Hugging Face model id, `org/name` or `org/name@revision` (e.g. `dandelin/vilt-b32-mlm`), loaded through
    transformers' cache (see `mmp_core.model.hub`); a path that exists locally always wins over a hub id;
  * `small:<name>`: a named small configuration with random weights (tests, benchmarks, pretraining).

Weights are never unpickled: safetensors, or a hub `.bin` through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import ViltConfig, ViltModel
from transformers.utils import logging as hf_logging

from mmp_core.data.vocab import VOCAB_NAME
from mmp_core.fileio import default_cache_dir

WEIGHTS_NAME = "model.safetensors"

# Named small configurations. `vilt-b32` has the shapes of dandelin/vilt-b32-mlm (random weights): it is for
# shape accounting and benchmarks, never for results.
SMALL_CONFIGS: dict[str, dict] = {
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=6,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=16,
        max_position_embeddings=16,
        vocab_size=64,
    ),
    "small": dict(
        hidden_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        image_size=128,
        patch_size=16,
        max_position_embeddings=40,
        vocab_size=1024,
        # Trained from scratch on a few thousand pairs: a wider init than BERT's 0.02 keeps attention selective,
        # so the text [CLS] that the pooler reads varies across samples (at 0.02 it is nearly constant).
        initializer_range=0.1,
    ),
    "vilt-b32": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        image_size=384,
        patch_size=32,
        max_position_embeddings=40,
        vocab_size=30522,
    ),
}


def small_config(name: str, **overrides) -> ViltConfig:
    """The ViltConfig of a named small configuration, with optional overrides (e.g. `vocab_size`)."""
    if name not in SMALL_CONFIGS:
        raise ValueError(f"unknown small backbone {name!r}; choose one of {sorted(SMALL_CONFIGS)}")
    values = {**SMALL_CONFIGS[name], **overrides}
    # max_image_length=-1: keep every image patch (no random subsampling), as ViLT does at fine-tuning time.
    return ViltConfig(max_image_length=-1, **values)


def hub_id_of(source: str):
    """The `HubId` when `source` names a hub model (not `small:`, `s3://` or an existing local path), else None."""
    from mmp_core.model.hub import parse_hub_id

    if source.startswith(("small:", "s3://")) or Path(source).expanduser().exists():
        return None
    return parse_hub_id(source)


def vocab_path(source: str, cache_dir: Path | None = None, endpoint_url: str | None = None) -> Path:
    """The tokenizer vocabulary that belongs to a backbone: `vocab.txt` beside its weights or in its hub repo."""
    hub_id = hub_id_of(source)
    if hub_id is not None:
        from mmp_core.model import hub

        return hub.file_path(hub_id, VOCAB_NAME)
    directory = resolve_backbone_dir(source, cache_dir, endpoint_url)
    if not (directory / VOCAB_NAME).is_file():
        raise FileNotFoundError(
            f"{directory}: no {VOCAB_NAME} beside the backbone weights; copy the checkpoint's tokenizer vocab there"
        )
    return directory / VOCAB_NAME


def resolve_backbone_dir(source: str, cache_dir: Path | None = None, endpoint_url: str | None = None) -> Path:
    """The local directory holding a backbone given as a path or an s3:// URI (downloaded and verified)."""
    if source.startswith("s3://"):
        from mmp_core import s3

        location = s3.S3Uri.parse(source)
        target = (cache_dir or default_cache_dir()) / "backbones" / location.bucket / location.prefix
        return s3.download_prefix(source, target, client=s3.make_client(endpoint_url))
    path = Path(source).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"backbone directory {path} does not exist (a backbone is a directory, an s3:// URI, a Hugging Face "
            "model id such as dandelin/vilt-b32-mlm, or small:<name>)"
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"backbone directory {path} has no config.json (expected save_pretrained output)")
    if not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"backbone directory {path} has no {WEIGHTS_NAME}; mmp only loads safetensors weights "
            "(convert a .bin checkpoint once with transformers' save_pretrained(safe_serialization=True))"
        )
    return path


def load_backbone(
    source: str,
    *,
    text_positions: int | None = None,
    cache_dir: Path | None = None,
    endpoint_url: str | None = None,
    seed: int = 0,
    **small_overrides,
) -> ViltModel:
    """Load a ViLT backbone, optionally stretch its text position table to `text_positions`, and freeze it.

    `source` is a directory, an s3:// URI (`endpoint_url` or MMP_S3_ENDPOINT_URL for S3-compatible servers), a
    hub id `org/name[@revision]` or `small:<name>` (random init from `seed`; `small_overrides` such as
    `vocab_size` adjust the named config). `text_positions` None keeps the checkpoint's positions.
    """
    if source.startswith("small:"):
        config = small_config(source.removeprefix("small:"), **small_overrides)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = ViltModel(config, add_pooling_layer=True)
    else:
        if small_overrides:
            raise ValueError(f"overrides {sorted(small_overrides)} only apply to small:<name> backbones")
        hf_logging.disable_progress_bar()  # no "Loading weights" bar for every stage
        hub_id = hub_id_of(source)
        if hub_id is not None:
            from mmp_core.model import hub

            model = hub.load_model(hub_id)
        else:
            directory = resolve_backbone_dir(source, cache_dir, endpoint_url)
            model = ViltModel.from_pretrained(directory, use_safetensors=True, local_files_only=True)
    model.config._name_or_path = source
    if text_positions is not None:
        interpolate_text_positions(model, text_positions)
    freeze(model)
    # Identify the weights as loaded (fp32), before any precision change by DeepSpeed (bf16) alters the bytes.
    model.mmp_fingerprint = fingerprint(model)
    return model


def interpolate_text_positions(model: ViltModel, positions: int) -> None:
    """Stretch the frozen text position table (P, H) linearly to (positions, H) (docs/method.md §1).

    ViLT-B/32 was pretrained with 40 text positions; MM-IMDb plots need far more. The same number of positions
    is a no-op; fewer is refused (a shorter text simply uses the first positions, no change needed).
    """
    text = model.embeddings.text_embeddings
    old = text.position_embeddings.weight.data  # (P, H)
    if positions == old.shape[0]:
        return
    if positions < old.shape[0]:
        raise ValueError(
            f"text_positions {positions} is fewer than the backbone's {old.shape[0]} text positions; positions are "
            "only ever stretched: leave text_positions unset (texts up to that length use the first positions)"
        )
    new = F.interpolate(old.T.unsqueeze(0), size=positions, mode="linear", align_corners=True)[0].T
    text.position_embeddings = nn.Embedding(positions, old.shape[1]).to(old.dtype)
    text.position_embeddings.weight.data.copy_(new)
    text.position_ids = torch.arange(positions).expand((1, -1))
    text.token_type_ids = torch.zeros((1, positions), dtype=torch.long)
    model.config.max_position_embeddings = positions


def freeze(model: nn.Module) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(False)


def backbone_fingerprint(model: nn.Module) -> str:
    """The fingerprint taken when the backbone was loaded, or computed now for a backbone built elsewhere."""
    return getattr(model, "mmp_fingerprint", None) or fingerprint(model)


def fingerprint(model: nn.Module) -> str:
    """SHA-256 over every parameter and persistent buffer (names, dtypes, shapes, bytes), in name order.

    Adapters record it so that loading onto other weights is caught.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
