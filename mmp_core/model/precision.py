"""Numeric precision: which one `auto` means on this machine, and its torch dtype.

bf16 halves the bytes of every activation and weight and runs matrix products on the bf16 units of recent GPUs
(Ampere and later) and CPUs (AVX512-BF16, AMX). Where the hardware has no such units bf16 is emulated and slower
than fp32, so `auto` picks fp32 there. On a CPU bf16 also needs wide enough matrices to pay for its conversions:
measured on 2 AVX512-BF16 cores (bench/bench_pipeline.py), ViLT-B/32 (hidden size 768) trains about twice as fast
in bf16, the embedded backbone (hidden size 128) trains prompts 10-25% slower. `auto` therefore picks bf16 on a CPU
only from hidden size 512 up.
"""

from __future__ import annotations

import torch

PRECISIONS = ("auto", "bf16", "fp32")
CPU_BF16_MIN_HIDDEN_SIZE = 512


def bf16_native(device: torch.device | str | None = None) -> bool:
    """Whether `device` (default: CUDA if present, else the CPU) computes bf16 matrix products natively."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device | str | None = None, hidden_size: int | None = None) -> str:
    """`bf16` or `fp32`: `auto` resolved for `device` and a backbone of `hidden_size` (None: large enough); an
    explicit choice is kept (bf16 works everywhere)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision != "auto":
        return precision
    if not bf16_native(device):
        return "fp32"
    on_cpu = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")).type == "cpu"
    if on_cpu and hidden_size is not None and hidden_size < CPU_BF16_MIN_HIDDEN_SIZE:
        return "fp32"
    return "bf16"


def torch_dtype(precision: str) -> torch.dtype:
    """The dtype of weights and activations for a resolved precision."""
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[resolve_precision(precision)]
