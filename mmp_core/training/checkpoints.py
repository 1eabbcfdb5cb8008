"""Resumable training state: DeepSpeed checkpoints with the loop position, the best-so-far and each rank's RNG,
claimed by one run's fingerprint, and the best adapter kept beside them until training delivers it.

At every validation point all ranks save a DeepSpeed checkpoint (trainable tensors, optimizer, scheduler; the
frozen backbone excluded) with the loop state in its client state; a rerun of the same command with the same
parameters resumes from the latest one and ends with the same adapter as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mmp_core.fileio import atomic_write_json, replace_dir

ADAPTER_DIR = "adapter"
BEST_ADAPTER = "best-adapter"  # inside the checkpoint folder
logger = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint's client state."""

    epoch: int = 0
    micro_step_in_epoch: int = 0  # micro-batches of this epoch already consumed (per rank)
    global_step: int = 0  # optimizer steps
    best_metric: float = -math.inf
    best_step: int = -1
    best_sanity: dict = field(default_factory=dict)  # the best validation's check against the label prior
    history: list = field(default_factory=list)


def save_checkpoint(engine, checkpoint_dir: Path, state: LoopState, fingerprint: str, keep: int, rank: int):
    tag = f"step{state.global_step:08d}"
    # Each rank's RNG (dropout, ViLT's patch shuffling) continues exactly where it was.
    rng_path = checkpoint_dir / tag / f"rng_rank{rank}.safetensors"
    rng_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"torch": torch.get_rng_state()}, str(rng_path))
    torch.distributed.barrier()
    engine.save_checkpoint(
        str(checkpoint_dir),
        tag=tag,
        client_state={"loop": asdict(state), "training_fingerprint": fingerprint},
        exclude_frozen_parameters=True,  # the frozen backbone is not part of a checkpoint
    )
    torch.distributed.barrier()
    if rank == 0:
        tags = sorted(p.name for p in checkpoint_dir.glob("step*") if p.is_dir())
        for old in tags[:-keep]:
            shutil.rmtree(checkpoint_dir / old, ignore_errors=True)


def claim_checkpoint_dir(checkpoint_dir: Path, fingerprint: str, rank: int) -> None:
    """Keep checkpoints only if they were made by a run with the same parameters and data."""
    marker = checkpoint_dir / "run.json"
    if rank == 0:
        if marker.is_file() and json.loads(marker.read_text()).get("training_fingerprint") != fingerprint:
            logger.info("removing checkpoints in %s: they were made with other parameters or data", checkpoint_dir)
            shutil.rmtree(checkpoint_dir)
        atomic_write_json(marker, {"training_fingerprint": fingerprint})
    torch.distributed.barrier()


def resume(engine, checkpoint_dir: Path, fingerprint: str, rank: int) -> LoopState:
    latest = checkpoint_dir / "latest"
    if not latest.is_file():
        return LoopState()
    tag = latest.read_text().strip()
    load_path, client_state = engine.load_checkpoint(
        str(checkpoint_dir), tag=tag, load_module_strict=False, load_optimizer_states=True
    )
    if load_path is None or client_state is None:
        raise ValueError(f"{checkpoint_dir / tag}: checkpoint could not be loaded; delete it to start over")
    if client_state.get("training_fingerprint") != fingerprint:
        raise RuntimeError(f"{checkpoint_dir / tag}: checkpoint belongs to another run")
    torch.set_rng_state(load_file(str(checkpoint_dir / tag / f"rng_rank{rank}.safetensors"))["torch"])
    return LoopState(**client_state["loop"])


def _deliver_adapter(checkpoint_dir: Path, out_dir: Path) -> None:
    """Copy the best adapter from the checkpoint folder into `out_dir/adapter` (atomically)."""
    staged = out_dir / f".{ADAPTER_DIR}.staged"
    shutil.rmtree(staged, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(checkpoint_dir / BEST_ADAPTER, staged)
    replace_dir(staged, out_dir / ADAPTER_DIR)


def _adapter_step(adapter_dir: Path) -> int | None:
    try:
        return json.loads((adapter_dir / "adapter_config.json").read_text())["training"]["step"]
    except (FileNotFoundError, KeyError, ValueError):
        return None


def ensure_adapter(state: LoopState, checkpoint_dir: Path, out_dir: Path) -> None:
    """The summary will name `out_dir/adapter`: put the best step's there, from the checkpoint folder."""
    if _adapter_step(checkpoint_dir / BEST_ADAPTER) != state.best_step:
        raise RuntimeError(
            f"the best adapter (step {state.best_step}) is not in {checkpoint_dir / BEST_ADAPTER}; "
            f"delete {checkpoint_dir} and train again"
        )
    _deliver_adapter(checkpoint_dir, out_dir)
