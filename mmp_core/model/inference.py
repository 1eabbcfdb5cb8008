"""Inference: a batch on its device, and a model's scores for every sample of a dataset (in order, sharded
across ranks under torch.distributed). Training (its forward and validation), evaluation and `mmp predict`
all go through here, so that they feed the model the same way."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mmp_core.progress import Progress

MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "pixel_mask", "missing_type")


def model_inputs(batch: dict, device: torch.device | str, dtype: torch.dtype = torch.float32) -> dict:
    """The prompt model's keyword inputs from a collated batch, on `device`; images (or the frozen [CLS]
    features a feature batch carries instead of inputs) in `dtype`."""
    if "frozen_cls" in batch:
        return {"frozen_cls": batch["frozen_cls"].to(device, dtype)}
    inputs = {key: batch[key].to(device) for key in MODEL_INPUTS}
    inputs["pixel_values"] = batch["pixel_values"].to(device, dtype)
    return inputs


def class_scores(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """What `predict` returns per batch by default: the model's per-class probabilities."""
    return model.scores(model(**inputs))


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    collate: Callable,
    *,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    progress: str | None = None,
    output: Callable[[torch.nn.Module, dict], torch.Tensor] = class_scores,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-class probabilities (N, C) and labels for every sample of `dataset`, in dataset order.

    `output(model, inputs)` is what is collected per batch (default: the per-class probabilities; the frozen
    feature cache collects `model.frozen_cls(**inputs)`), returned as float32.

    Samples carry an `index` (their position in `dataset`); labels are None when they carry none (new inputs
    in `mmp predict`, which runs this same function so that its scores are evaluation's).
    Under torch.distributed each rank runs a disjoint shard (no padding samples, unlike DistributedSampler)
    and the shards are gathered, so every rank returns the full, exactly ordered result. ViLT draws image
    patch order from the global RNG: inference seeds a forked RNG, leaving the caller's stream untouched.
    `progress` names the loop in progress reports (None: no reports).
    """
    rank, world_size = _dist_info()
    shard = list(range(rank, len(dataset), world_size))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, shard),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
    core = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
    was_training = core.training
    core.eval()
    device = next(core.parameters()).device
    indices, scores, labels = [], [], []
    reporter = Progress(len(loader), progress or "predict", unit="batch", enabled=progress is not None and rank == 0)
    with torch.random.fork_rng(devices=[]), reporter:
        torch.manual_seed(seed)
        for batch in loader:
            scores.append(output(core, model_inputs(batch, device, dtype)).float().cpu().numpy())
            if "labels" in batch:
                labels.append(batch["labels"].numpy())
            indices.append(batch["index"].numpy())
            reporter.update()
    core.train(was_training)
    result = (np.concatenate(indices), np.concatenate(scores), np.concatenate(labels) if labels else None)
    if world_size > 1:
        gathered: list = [None] * world_size
        torch.distributed.all_gather_object(gathered, result)
        result = tuple(
            None if gathered[0][i] is None else np.concatenate([part[i] for part in gathered]) for i in range(3)
        )
    order = np.argsort(result[0], kind="stable")
    if not np.array_equal(result[0][order], np.arange(len(dataset))):
        raise RuntimeError("prediction indices do not cover the dataset exactly once")
    return result[1][order], None if result[2] is None else result[2][order]
