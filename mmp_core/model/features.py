"""Frozen features: the baseline's backbone output, computed once per sample and missing variant, and cached.

The baseline trains a pooler and a head over a frozen backbone. Nothing that trains sits inside the backbone,
so its final [CLS] state for a sample fed complete, text-missing or image-missing is the same at every step,
epoch, validation and seed. `variant_features` computes it once per split, (3, N, H) indexed by variant, and
the baseline then trains on those vectors (a pooler and a head: seconds) instead of running the backbone for
every sample of every epoch. Prompts cannot be served this way: input-level prompts join the sequence before
their first layer and attention-level prompts act inside every prompted layer, so with prompts from layer 0
(the method's setting) every layer above them depends on what trains.

The features are exactly those of the live path only if the frozen backbone is deterministic: no dropout and
no random image-patch sampling (`max_image_length`); `live_reason` says why a backbone is not, and training
then runs it live. The cache is a safetensors file under `$MMP_CACHE_DIR/features/` (default
`~/.cache/mmp/features`) named by everything the features depend on: the backbone's weights (fingerprint),
the split's content (arrow checksum), the input settings (text length, image resize rule) and the precision.
Anything else is another file, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mmp_core.fileio import atomic_write, default_cache_dir
from mmp_core.model.backbone import backbone_fingerprint
from mmp_core.model.inference import predict
from mmp_core.model.prompts import NUM_MISSING_TYPES

FORMAT = 1  # bump when what is stored changes
logger = logging.getLogger(__name__)


def live_reason(backbone) -> str | None:
    """None when the frozen backbone's output is a pure function of its inputs; otherwise why it is not."""
    config = backbone.config
    if config.hidden_dropout_prob or config.attention_probs_dropout_prob:
        return "the backbone applies dropout in training"
    if (getattr(config, "max_image_length", -1) or -1) > 0:
        return f"the backbone samples {config.max_image_length} image patches at random"
    return None


def frozen_features_off(model, enabled: bool) -> str | None:
    """None when `model` can run on cached frozen features (the `train.frozen_features` switch `enabled`, no
    prompts inside the backbone, a deterministic backbone); otherwise why not."""
    if not enabled:
        return "train.frozen_features is false"
    if model.prompts is not None:
        return "prompts change the backbone's output"
    if model.config.train_backbone:
        return "the backbone trains"
    return live_reason(model.backbone)


def feature_key(model, dataset, dtype: torch.dtype) -> str:
    """Everything `dataset`'s frozen features depend on, hashed: the name of their cache file."""
    payload = {
        "format": FORMAT,
        "backbone": backbone_fingerprint(model.backbone),
        "text_positions": model.backbone.config.max_position_embeddings,
        "split": dataset.split,
        "data": dataset.checksum,
        "max_text_len": dataset.max_text_len,
        "image": [dataset.image_config.shorter_side, dataset.image_config.longer_side, dataset.image_config.patch_size],
        "dtype": str(dtype),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def variant_features(
    model,
    dataset,
    collate,
    *,
    needed: np.ndarray | None = None,
    batch_size: int,
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """(3, N, H) float32: the frozen [CLS] state of the samples of `dataset` fed as each variant.

    `needed` (3, N) bool names the (variant, sample) pairs wanted (default: all); training needs only each
    sample's own variant, evaluation all three. The cache file holds what was ever computed with a mask of it:
    only what is wanted and absent is computed (sharded across ranks under torch.distributed, like every
    prediction), then rank 0 writes the file back. A damaged cache file is recomputed and replaced. Rows not
    wanted and never computed are zeros.
    """
    path = Path(cache_dir or default_cache_dir() / "features") / f"{feature_key(model, dataset, dtype)}.safetensors"
    shape = (NUM_MISSING_TYPES, len(dataset), model.backbone.config.hidden_size)
    needed = np.ones(shape[:2], dtype=bool) if needed is None else np.asarray(needed, dtype=bool)
    features, filled = _read_cache(path, shape)
    missing = needed & ~filled
    for variant in np.flatnonzero(missing.any(axis=1)):
        rows = np.flatnonzero(missing[variant])
        table = np.full(len(dataset), variant, dtype=np.int8)
        computed, _ = predict(
            model,
            _Rows(dataset.with_missing(table), rows),
            collate,
            batch_size=batch_size,
            dtype=dtype,
            output=lambda core, inputs: core.frozen_cls(**inputs),
        )
        features[variant, torch.from_numpy(rows)] = torch.from_numpy(computed)
        filled[variant, rows] = True
    if missing.any() and (not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0):
        tensors = {"features": features.contiguous(), "filled": torch.from_numpy(filled)}
        atomic_write(path, lambda tmp: save_file(tensors, tmp))
    return features


def _read_cache(path: Path, shape: tuple[int, int, int]) -> tuple[torch.Tensor, np.ndarray]:
    if path.is_file():
        try:
            tensors = load_file(path)
            if tuple(tensors["features"].shape) == shape and tuple(tensors["filled"].shape) == shape[:2]:
                return tensors["features"], tensors["filled"].numpy().copy()
            logger.warning("%s: frozen features of another shape than %s; recomputing", path, shape)
        except (SafetensorError, OSError, KeyError, RuntimeError) as error:
            logger.warning("%s: unreadable frozen features (%s); recomputing", path, error)
    return torch.zeros(shape), np.zeros(shape[:2], dtype=bool)


class _Rows(torch.utils.data.Dataset):
    """Some rows of a dataset, renumbered 0..len-1 (what `predict` orders its output by)."""

    def __init__(self, dataset, rows: np.ndarray):
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return {**self.dataset[int(self.rows[index])], "index": index}


class FeatureDataset(torch.utils.data.Dataset):
    """A split as frozen features: sample i is `features[t_i, i]` for its missing type t_i under the split's
    table, with its label, in the batch contract `model_inputs` reads (`frozen_cls` instead of the inputs)."""

    def __init__(self, features: torch.Tensor, source):
        if features.shape[1] != len(source):
            raise ValueError(f"{features.shape[1]} feature rows for a split of {len(source)} samples")
        self.features, self.source = features, source
        self.missing_types, self.labels = source.missing_types, source.labels

    @classmethod
    def of(cls, model, source, collate, **kwargs) -> FeatureDataset:
        """`source` (a MultimodalDataset under its missing table) as features, each sample's own variant only."""
        needed = np.arange(NUM_MISSING_TYPES)[:, None] == source.missing_types[None, :]
        return cls(variant_features(model, source, collate, needed=needed, **kwargs), source)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        missing_type = int(self.missing_types[index])
        return {
            "frozen_cls": self.features[missing_type, index],
            "missing_type": torch.tensor(missing_type, dtype=torch.long),
            "labels": self.source.label(index),
            "index": torch.tensor(index, dtype=torch.long),
        }


feature_collate = torch.utils.data.default_collate
