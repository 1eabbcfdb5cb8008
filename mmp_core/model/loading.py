"""What the model stages read: the backbone with its text positions, the tokenizer that matches it, and a
prepared split under a scenario.

Shared by pretraining, training, evaluation and prediction so that all of them see the data the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mmp_core.config import ScenarioParams, TrainParams
from mmp_core.model.backbone import load_backbone, vocab_path


def backbone_for(params: TrainParams):
    """The frozen backbone of `params.backbone` with `params.text_positions` text positions (unset: its own).

    Texts longer than the backbone's position table cannot be embedded: that mismatch is an error here, before
    any work, naming the two settings (the table is only stretched when text_positions asks for it).
    """
    backbone = load_backbone(params.backbone, text_positions=params.text_positions)
    positions = backbone.config.max_position_embeddings
    if params.max_text_len > positions:
        raise ValueError(
            f"train.max_text_len {params.max_text_len} exceeds the {positions} text positions of backbone "
            f"{params.backbone!r}: set train.text_positions: {params.max_text_len} to stretch its position table "
            f"(linear interpolation, docs/method.md §1), or lower train.max_text_len to {positions}"
        )
    return backbone


def tokenizer_for(backbone: str, prepared):
    """The backbone's own vocabulary (`vocab.txt` beside its weights or in its hub repository); `small:*`
    backbones use the prepared dataset's vocabulary (built from its training text)."""
    from mmp_core.data import build_tokenizer

    if backbone.startswith("small:"):
        return build_tokenizer(prepared=prepared)
    return build_tokenizer(vocab_path(backbone))


def image_config(params: TrainParams):
    from mmp_core.data import ImageConfig

    return ImageConfig.from_params(params.image)


def split_dataset(prepared, split: str, tokenizer, params: TrainParams, missing):
    """A split as model inputs; `missing` is a ScenarioParams (its table is looked up), a per-row table, or
    None (natural missingness only)."""
    from mmp_core.data import MultimodalDataset

    if isinstance(missing, ScenarioParams):
        missing = prepared.missing_table(
            split,
            missing.scenario,
            missing_seed(prepared, params),
            reference=missing.source == "reference",
        )
    return MultimodalDataset(
        prepared,
        split,
        tokenizer,
        image_config=image_config(params),
        max_text_len=params.max_text_len,
        missing=missing,
        cache_pixels=params.cache_images,
    )


def missing_seed(prepared, params: TrainParams) -> int:
    """The seed of the missing tables a run uses: `train.missing_seed`, or else the one the data was prepared
    with (one setting, `prepare.missing_seed`, unless a run asks for another)."""
    if params.missing_seed is not None:
        return params.missing_seed
    return int((prepared.manifest.get("missing") or {}).get("seed", 0))


def data_checksum(prepared) -> str:
    """The prepared data's content (its sample fingerprint and every arrow file's checksum), as recorded in
    adapters, training summaries and metrics. Not the published run's `data_version`, which is DVC's hash."""
    digest = hashlib.sha256(prepared.fingerprint.encode())
    for split in prepared.splits:
        digest.update(f"|{split}:{prepared.manifest['files'][split]['sha256']}".encode())
    return digest.hexdigest()[:16]


def open_prepared(path: str | Path):
    from mmp_core.data import load_prepared

    return load_prepared(path)
