"""ViLT-B/32 prompt training and evaluation throughput on an accelerator, with model FLOPs utilisation (MFU).

For each method (baseline, attention-level, input-level prompts) it runs a few warm-up steps, then times
training steps (forward, backward, AdamW on the trainable tensors) and evaluation forwards on random inputs of
the paper's shape, and prints samples/s, achieved TFLOP/s and MFU against the device's peak. The frozen backbone
and everything else are cast to `--dtype` (bf16 by default, as DeepSpeed's bf16 mode holds them); attention runs
through SDPA (fused kernels) unless `--attention eager`.

FLOPs are counted analytically per sample (matrix products only, 2 per multiply-add): every layer's projections
and MLP for every token plus attention scores and values; a training step costs the forward plus a backward that
computes activation gradients through the frozen layers (another forward's worth: the frozen weights get no
gradients) and the trainable tensors' own gradients.

    python bench/gpu_bench.py                        # on a CUDA machine: B/32, 384x384, batch 64, bf16
    python bench/gpu_bench.py --device cpu --shape tiny --steps 2 --batch 4   # a quick check anywhere

Prepared to finish in a few minutes on one H100/H200; `--peak-tflops` overrides the device table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from mmp_core.config import METHODS
from mmp_core.model.backbone import load_backbone
from mmp_core.model.prompts import MissingAwarePromptConfig, MissingAwarePromptModel

SHAPES = {
    # name: (backbone, text length, image side, patch)
    "vilt-b32": ("small:vilt-b32", 40, 384, 32),
    "tiny": ("small:tiny", 16, 64, 16),
}
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets; matched against the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


def device_peak(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "unknown for this device (pass --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value, name
    return None, f"{name}: not in the table (pass --peak-tflops)"


def forward_flops(config, text_len: int, image_tokens: int, prompt_type: str, prompt_len: int, layers: int) -> float:
    """Matrix FLOPs of one sample's forward pass through the encoder (2 per multiply-add)."""
    hidden, inner = config.hidden_size, config.intermediate_size
    tokens = text_len + image_tokens
    total = 0.0
    prompt_tokens = 0
    for layer in range(config.num_hidden_layers):
        keys = tokens + prompt_tokens
        if prompt_type == "input" and layer < layers:
            prompt_tokens += prompt_len
            keys = tokens + prompt_tokens
        queries = tokens + (prompt_tokens if prompt_type == "input" else 0)
        if prompt_type == "attention" and layer < layers:
            keys = tokens + prompt_len // 2
        total += 2 * queries * (4 * hidden * hidden + 2 * hidden * inner)  # q, k, v, output + MLP
        total += 2 * 2 * queries * keys * hidden  # scores and weighted values
    return total


def random_batch(config, batch: int, text_len: int, side: int, device, dtype) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(5, config.vocab_size, (batch, text_len), generator=generator).to(device),
        "attention_mask": torch.ones(batch, text_len, dtype=torch.long, device=device),
        "pixel_values": torch.randn(batch, 3, side, side, generator=generator).to(device, dtype),
        "pixel_mask": torch.ones(batch, side, side, dtype=torch.long, device=device),
        "missing_type": (torch.arange(batch) % 3).to(device),
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args, method: str, backbone, device, dtype) -> dict:
    prompt_type = METHODS[method]
    config = MissingAwarePromptConfig(
        task="multilabel", num_labels=23, prompt_type=prompt_type, missing_aware=method != "shared"
    )
    torch.manual_seed(0)
    model = MissingAwarePromptModel(backbone, config).to(device, dtype)
    model.attention_implementation = args.attention
    _, text_len, side, _ = SHAPES[args.shape]
    batch = random_batch(backbone.config, args.batch, text_len, side, device, dtype)
    labels = (torch.rand(args.batch, 23) < 0.3).to(device, dtype)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def train_step() -> None:
        loss = model.loss(model(**batch), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def eval_step() -> None:
        with torch.no_grad():
            model(**batch)

    timings = {}
    for name, step, mode in (("train", train_step, model.train), ("eval", eval_step, model.eval)):
        mode()
        for _ in range(args.warmup):
            step()
        synchronize(device)
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(device)
        timings[name] = (time.perf_counter() - started) / args.steps

    image_tokens = (side // SHAPES[args.shape][3]) ** 2 + 1
    layers = len(config.prompt_layers) if prompt_type != "none" else 0
    fwd = forward_flops(backbone.config, text_len, image_tokens, prompt_type, config.prompt_length, layers)
    trainable, _ = model.get_nb_trainable_parameters()
    train_flops = 2 * fwd + 6 * trainable  # forward + activation gradients; trainable tensors' fwd+bwd
    row = {"method": method, "batch": args.batch, "gflops_per_sample_fwd": float(f"{fwd / 1e9:.3g}")}
    for name, flops in (("train", train_flops), ("eval", fwd)):
        samples_per_s = args.batch / timings[name]
        row[f"{name}_samples_per_s"] = round(samples_per_s, 1)
        row[f"{name}_tflops"] = float(f"{flops * samples_per_s / 1e12:.3g}")
    if device.type == "cuda":
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        torch.cuda.reset_peak_memory_stats(device)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="vilt-b32")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--attention", choices=("sdpa", "eager"), default="sdpa")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method and mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--peak-tflops", type=float, help="the device's dense peak for --dtype, TFLOP/s")
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    source, text_len, side, patch = SHAPES[args.shape]
    backbone = load_backbone(source, seed=0, image_size=side, max_position_embeddings=text_len, patch_size=patch)
    peak, peak_source = device_peak(device, args.peak_tflops)
    rows = [measure(args, method, backbone, device, dtype) for method in args.methods]
    for row in rows:
        for name in ("train", "eval"):
            row[f"{name}_mfu"] = round(row[f"{name}_tflops"] / peak, 3) if peak else None

    print(f"{args.shape} on {device} ({peak_source}), {args.dtype}, attention {args.attention}, batch {args.batch}")
    header = ["method", "GFLOP/sample", "train samples/s", "train TFLOP/s", "train MFU", "eval samples/s"]
    header += ["eval TFLOP/s", "eval MFU"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [row["method"], row["gflops_per_sample_fwd"], row["train_samples_per_s"], row["train_tflops"]]
        cells += [row["train_mfu"], row["eval_samples_per_s"], row["eval_tflops"], row["eval_mfu"]]
        print("| " + " | ".join("n/a" if c is None else str(c) for c in cells) + " |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
