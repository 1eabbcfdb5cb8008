"""Resumable pretraining: checkpoints of the whole pretraining state, claimed by one run's fingerprint.

Every `pretrain.checkpoint_every` steps and at each epoch's end, `mmp pretrain` writes `step<N>/` into its
checkpoint folder (the default is under `.checkpoints/`, named after `--out`) and points `latest` at it:

* `model.safetensors`: every tensor of the pretraining model (backbone and heads);
* `optimizer.safetensors`: the AdamW moments, the global and the batch-order RNG states, the epoch's pair order;
* `state.json`: the loop position (epoch, step, the epoch's loss sums so far, the history), the optimizer's
  param groups, the LR schedule and the run's fingerprint.

Each folder is built aside and renamed into place, and `latest` is replaced atomically, so a run killed at any
moment leaves a complete checkpoint. A rerun with the same inputs (parameters, corpus, vocabulary, init backbone)
resumes from it and ends with the same weights as an uninterrupted run; checkpoints of other inputs are removed.
The folder is removed once the backbone is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from mmp_core.config import PretrainParams
from mmp_core.fileio import atomic_write_json, atomic_write_text, replace_dir, staging_dir

logger = logging.getLogger(__name__)

MODEL_NAME, TENSORS_NAME, STATE_NAME, LATEST, RUN_NAME = (
    "model.safetensors",
    "optimizer.safetensors",
    "state.json",
    "latest",
    "run.json",
)
# Settings that change how a run goes, not what it computes.
OPERATIONAL = {"num_workers", "checkpoint_every"}


@dataclass
class PretrainState:
    """Where the pretraining loop is: `global_step` optimizer steps done, `step_in_epoch` of them in `epoch`
    (whose pair order is `order`; None between epochs)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    seconds: float = 0.0
    sums: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    order: torch.Tensor | None = None


def pretrain_fingerprint(params: PretrainParams, corpus: dict, vocab: list[str], init: dict | None) -> str:
    """Identifies a pretraining run's inputs: a checkpoint is only resumed by a run with the same one."""
    payload = {
        "params": params.model_dump(mode="json", exclude={*OPERATIONAL, "init"}),  # init: by content, not path
        "corpus": corpus,
        "vocab": hashlib.sha256("\n".join(vocab).encode()).hexdigest(),
        "init": [(init or {}).get(key) for key in ("weights_sha256", "heads_sha256")],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def claim_checkpoint_dir(checkpoint_dir: Path, fingerprint: str) -> None:
    """Keep the checkpoints in `checkpoint_dir` only if a run with the same fingerprint made them."""
    marker = checkpoint_dir / RUN_NAME
    if marker.is_file() and json.loads(marker.read_text()).get("pretrain_fingerprint") != fingerprint:
        logger.info("removing checkpoints in %s: they were made with other parameters or data", checkpoint_dir)
        shutil.rmtree(checkpoint_dir)
    atomic_write_json(marker, {"pretrain_fingerprint": fingerprint})


def save_checkpoint(
    checkpoint_dir: Path, state: PretrainState, fingerprint: str, model, optimizer, scheduler, generator
):
    """Write `step<N>/` beside the older ones, point `latest` at it, then remove the older ones."""
    tag = f"step{state.global_step:08d}"
    staged = staging_dir(checkpoint_dir / tag)
    save_model(model, str(staged / MODEL_NAME))  # the tied decoder weight is stored once
    optimizer_state = optimizer.state_dict()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.generator": generator.get_state()}
    if state.order is not None:
        tensors["order"] = state.order
    for index, values in optimizer_state["state"].items():
        tensors.update({f"optimizer.{index}.{key}": value for key, value in values.items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(staged / TENSORS_NAME))
    loop = {k: v for k, v in asdict(state).items() if k != "order"}
    document = {
        "pretrain_fingerprint": fingerprint,
        "loop": loop,
        "param_groups": optimizer_state["param_groups"],
        "scheduler": scheduler.state_dict(),
    }
    atomic_write_json(staged / STATE_NAME, document)
    replace_dir(staged, checkpoint_dir / tag)
    atomic_write_text(checkpoint_dir / LATEST, tag)
    for old in checkpoint_dir.glob("step*"):
        if old.name != tag and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    logger.info("pretrain checkpoint at step %d -> %s", state.global_step, checkpoint_dir / tag)


def resume(checkpoint_dir: Path, fingerprint: str, model, optimizer, scheduler, generator) -> PretrainState | None:
    """Load the latest checkpoint into the model, optimizer, schedule and RNGs; None when there is none."""
    latest = checkpoint_dir / LATEST
    if not latest.is_file():
        return None
    directory = checkpoint_dir / latest.read_text().strip()
    document = json.loads((directory / STATE_NAME).read_text())
    if document.get("pretrain_fingerprint") != fingerprint:
        raise RuntimeError(f"{directory}: checkpoint belongs to another run; delete {checkpoint_dir} to start over")
    load_model(model, str(directory / MODEL_NAME))
    tensors = load_file(str(directory / TENSORS_NAME))
    moments: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            moments.setdefault(int(index), {})[name] = value
    groups = [{**group, "betas": tuple(group["betas"])} for group in document["param_groups"]]
    optimizer.load_state_dict({"state": moments, "param_groups": groups})
    scheduler.load_state_dict(document["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    state = PretrainState(**document["loop"], order=tensors.get("order"))
    logger.info("resuming pretraining at step %d (epoch %d) from %s", state.global_step, state.epoch + 1, directory)
    return state
