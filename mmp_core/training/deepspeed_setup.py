"""What DeepSpeed needs from mmp and gives back: the process group, the JSON config filled from params (batch
sizes, precision), the optimizer's parameter groups, and the fp32 master weights of the trained tensors."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
from torch import nn

from mmp_core.config import TrainParams
from mmp_core.model.precision import resolve_precision
from mmp_core.model.prompts import MissingAwarePromptModel

REPO_ROOT = Path(__file__).resolve().parents[2]  # mmp_core/training/deepspeed_setup.py -> the repository


def init_distributed() -> tuple[int, int]:
    """Join the process group a launcher prepared, or make a one-process group. Returns (rank, world_size)."""
    import deepspeed

    if "RANK" not in os.environ:  # launched directly: a group of one
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    _skip_shared_memory_op()
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        deepspeed.init_distributed(dist_backend=backend, verbose=False)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def _skip_shared_memory_op() -> None:
    """Keep DeepSpeed from JIT-compiling its CPU shared-memory all-reduce op (about a minute, again whenever
    the compiler toolchain changes) when it sets up communication.

    DeepSpeed builds that op for every CPU process group, but uses it only for tensor-parallel *inference*
    all-reduces; training's gradient all-reduce goes through gloo either way. Marking the op incompatible is
    the switch DeepSpeed itself consults before building it.
    """
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deepspeed_config(path: str | Path, params: TrainParams, world_size: int) -> dict:
    """The JSON config from infra/deepspeed with the batch sizes derived from params and the world size, and
    the bf16 section from `params.precision` (the one place precision is set).

    A relative path is looked up in the current directory, then in the mmp checkout (where infra/ lives).
    """
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: DeepSpeed config not found") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: DeepSpeed config is not valid JSON ({error})") from error
    per_step = params.batch_size * world_size
    if params.effective_batch_size % per_step:
        raise ValueError(
            f"effective_batch_size {params.effective_batch_size} is not a multiple of batch_size x processes "
            f"({params.batch_size} x {world_size})"
        )
    config = {key: value for key, value in config.items() if not key.startswith("_")}
    config.update(
        train_micro_batch_size_per_gpu=params.batch_size,
        gradient_accumulation_steps=params.effective_batch_size // per_step,
        train_batch_size=params.effective_batch_size,
    )
    if "optimizer" in config or "scheduler" in config:
        raise ValueError(f"{path}: the optimizer and scheduler are built by mmp (docs/method.md §6); remove them")
    for section in ("bf16", "fp16", "amp"):
        if section in config:
            raise ValueError(
                f"{path}: remove the {section!r} section; precision is train.precision (auto, bf16 or fp32)"
            )
    bf16 = resolve_precision(params.precision) == "bf16"
    config["bf16"] = {"enabled": bf16}
    if bf16:
        # Gradients accumulate in fp32: bf16 gradients (what DeepSpeed does without ZeRO) cost input-level
        # prompts about 0.02 F1-Macro on the embedded benchmark. DeepSpeed keeps fp32 gradients only in its ZeRO
        # optimizers, so bf16 runs at least at stage 1 (with one process it partitions nothing).
        config["data_types"] = {"grad_accum_dtype": "fp32"}
        zero = config.setdefault("zero_optimization", {})
        zero["stage"] = max(1, int(zero.get("stage", 0)))
    return config


def parameter_groups(
    model: nn.Module, weight_decay: float, head_lr: float | None = None, backbone_lr: float | None = None
) -> list[dict]:
    """Trainable parameters only: decayed (weights, prompts) and not (biases, norms).

    With `head_lr`, the pooler and head get that learning rate in groups of their own, and the prompts keep the
    optimizer's: a head over frozen features diverges at the prompts' rate. With `backbone_lr`, a trained
    backbone's weights (method finetune) get theirs. Empty groups are left out.
    """
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    rates = {"prompts": None, "head": head_lr, "backbone": backbone_lr if backbone_lr is not None else head_lr}
    groups: dict[tuple[str, bool], list] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decayed = not (name.endswith(".bias") or id(parameter) in no_decay_ids)
        part = "prompts" if name == "prompts" else "backbone" if name.startswith("backbone.") else "head"
        if rates[part] is None:
            part = "prompts"  # no rate of its own: the optimizer's
        groups.setdefault((part, decayed), []).append(parameter)
    ordered = []
    for part in ("prompts", "head", "backbone"):
        for decayed in (True, False):
            if (part, decayed) in groups:
                group = {"params": groups[part, decayed], "weight_decay": weight_decay if decayed else 0.0}
                ordered.append({**group, "lr": rates[part]} if rates[part] is not None else group)
    return ordered


def master_weights(model: MissingAwarePromptModel) -> dict[str, torch.Tensor]:
    """The trainable tensors in fp32, as the optimizer holds them.

    Under bf16 (always with a ZeRO optimizer, see `deepspeed_config`) the module's parameters are bf16 roundings
    of ZeRO's fp32 master weights, gathered here from every rank's partition (so call this on all ranks); in
    fp32 there is no master copy and the parameters are the weights.
    """
    from deepspeed.utils import safe_get_full_fp32_param

    tensors = model.trainable_state_dict()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            master = safe_get_full_fp32_param(parameter)
            tensors[name] = parameter if master is None else master
    return {name: tensor.detach().float().cpu().contiguous() for name, tensor in tensors.items()}


def shutdown_distributed() -> None:
    """Leave the process group cleanly (a 2-process gloo run can otherwise abort at exit)."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
