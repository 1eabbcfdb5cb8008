"""What the model stages read: the tokenizer that matches a backbone, and a prepared split under a scenario.

Shared by pretraining, training and evaluation so that all three see the data the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from mmp_core.backbone import resolve_backbone_dir
from mmp_core.config import ScenarioParams, TrainParams


def tokenizer_for(backbone: str, prepared):
    """The backbone's own vocabulary (`vocab.txt` beside its weights); `small:*` backbones use the prepared
    dataset's vocabulary (built from its training text)."""
    from mmp_core.data import build_tokenizer

    if backbone.startswith("small:"):
        return build_tokenizer(prepared=prepared)
    directory = resolve_backbone_dir(backbone)
    if not (directory / "vocab.txt").is_file():
        raise FileNotFoundError(
            f"{directory}: no vocab.txt beside the backbone weights; copy the checkpoint's tokenizer vocab there"
        )
    return build_tokenizer(backbone_dir=directory)


def image_config(params: TrainParams):
    from mmp_core.data import ImageConfig

    return ImageConfig(**params.image.model_dump())


def split_dataset(prepared, split: str, tokenizer, params: TrainParams, missing):
    """A split as model inputs; `missing` is a ScenarioParams (its table is looked up), a per-row table, or
    None (natural missingness only)."""
    from mmp_core.data import MultimodalDataset
    from mmp_core.missing import MissingScenario

    if isinstance(missing, ScenarioParams):
        missing = prepared.missing_table(split, MissingScenario(missing.type, missing.rate), params.missing_seed)
    return MultimodalDataset(
        prepared,
        split,
        tokenizer,
        image_config=image_config(params),
        max_text_len=params.max_text_len,
        missing=missing,
    )


def data_version(prepared) -> str:
    """Identifies the prepared data's content: its sample fingerprint and every arrow file's checksum."""
    digest = hashlib.sha256(prepared.fingerprint.encode())
    for split in prepared.splits:
        digest.update(f"|{split}:{prepared.manifest['files'][split]['sha256']}".encode())
    return digest.hexdigest()[:16]


def open_prepared(path: str | Path):
    from mmp_core.data import load_prepared

    return load_prepared(path)
