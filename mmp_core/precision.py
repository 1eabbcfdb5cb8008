"""Numeric precision: which one `auto` means on this machine, and its torch dtype.

bf16 halves the bytes of every activation and weight and runs matrix products on the bf16 units of recent GPUs
(Ampere and later) and CPUs (AVX512-BF16, AMX). Where the hardware has no such units bf16 is emulated and slower
than fp32, so `auto` picks fp32 there.
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def bf16_native(device: torch.device | str | None = None) -> bool:
    """Whether `device` (default: CUDA if present, else the CPU) computes bf16 matrix products natively."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device | str | None = None) -> str:
    """`bf16` or `fp32`: `auto` resolved for `device`; an explicit choice is kept (bf16 works everywhere)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_native(device) else "fp32"
    return precision


def torch_dtype(precision: str) -> torch.dtype:
    """The dtype of weights and activations for a resolved precision."""
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[resolve_precision(precision)]
