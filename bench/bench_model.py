"""Throughput and memory of the prompt model, and the cost of the scenario grid.

Prints two tables:
  1. training and evaluation samples/s and peak memory per (backbone shape x method): the embedded default's
     small ViLT and ViLT-B/32's shapes (random weights, a few steps; each shape in its own process so that the
     peak RSS is its own);
  2. the grid evaluation (3 cached variant passes + assembly) against a loop that runs every cell.

    python bench/bench_model.py [--steps 3] [--b32-batch 8] [--grid-samples 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from mmp_core.evaluation.evaluate import run_variants
from mmp_core.evaluation.metrics import compute_metrics
from mmp_core.model.backbone import load_backbone
from mmp_core.model.inference import predict
from mmp_core.model.prompts import MissingAwarePromptConfig, MissingAwarePromptModel

SHAPES = {
    # name: (backbone, text length, image side, batch)
    "embedded (small)": ("small:small", 40, 96, 32),
    "ViLT-B/32": ("small:vilt-b32", 40, 384, 8),
}
from mmp_core.config import METHODS  # noqa: E402


class SyntheticSplit(torch.utils.data.Dataset):
    """Random text and images in the collate contract; a missing table blanks text or image like the data layer."""

    def __init__(self, n: int, text_len: int, side: int, vocab: int, num_labels: int, table=None, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, vocab, (n, text_len), generator=g)
        self.images = torch.rand(n, 3, side, side, generator=g) * 2 - 1
        self.labels = (torch.rand(n, num_labels, generator=g) < 0.3).float()
        self.table = np.zeros(n, dtype=np.int64) if table is None else np.asarray(table, dtype=np.int64)
        self.text_len, self.side = text_len, side

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        missing = int(self.table[i])
        ids, mask = self.ids[i].clone(), torch.ones(self.text_len, dtype=torch.long)
        if missing == 1:  # [CLS] [SEP] + padding
            ids[:] = 0
            ids[0], ids[1] = 2, 3
            mask[2:] = 0
        image = torch.ones(3, self.side, self.side) if missing == 2 else self.images[i]
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "pixel_values": image,
            "pixel_mask": torch.ones(self.side, self.side, dtype=torch.long),
            "missing_type": torch.tensor(missing),
            "labels": self.labels[i],
            "index": torch.tensor(i),
        }


def collate(samples: list[dict]) -> dict:
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


def measure_shape(name: str, steps: int, batch_override: int | None) -> list[dict]:
    source, text_len, side, batch = SHAPES[name]
    batch = batch_override or batch
    backbone = load_backbone(source, seed=0, image_size=side, max_position_embeddings=text_len)
    rows = []
    for method, prompt_type in METHODS.items():
        torch.manual_seed(0)
        model = MissingAwarePromptModel(
            backbone,
            MissingAwarePromptConfig(
                task="multilabel", num_labels=23, prompt_type=prompt_type, missing_aware=method != "shared"
            ),
        )
        data = SyntheticSplit(batch * (steps + 1), text_len, side, backbone.config.vocab_size, 23, seed=1)
        data.table = np.arange(len(data)) % 3
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        batches = [collate([data[i] for i in range(k * batch, (k + 1) * batch)]) for k in range(steps + 1)]
        model.train()
        timings = []
        for batch_inputs in batches:  # the first step warms up and is not timed
            started = time.perf_counter()
            labels = batch_inputs.pop("labels")
            batch_inputs.pop("index")
            loss = model.loss(model(**batch_inputs), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            timings.append(time.perf_counter() - started)
        train_sps = batch * steps / sum(timings[1:])
        started = time.perf_counter()
        predict(model, data, collate, batch_size=batch)
        eval_sps = len(data) / (time.perf_counter() - started)
        trainable, _ = model.get_nb_trainable_parameters()
        rows.append(
            {
                "shape": name,
                "method": method,
                "batch": batch,
                "trainable": trainable,
                "train_samples_per_s": round(train_sps, 1),
                "eval_samples_per_s": round(eval_sps, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    return rows


def measure_grid(samples: int) -> dict:
    source, text_len, side, batch = SHAPES["embedded (small)"]
    backbone = load_backbone(source, seed=0, image_size=side, max_position_embeddings=text_len)
    torch.manual_seed(0)
    model = MissingAwarePromptModel(backbone, MissingAwarePromptConfig(task="multilabel", num_labels=23)).eval()
    rates = [round(0.1 * i, 1) for i in range(11)]
    rng = np.random.default_rng(0)
    tables = {(t, r): rng.choice(3, samples, p=[1 - r, r / 2, r / 2]) for t in ("text", "image", "both") for r in rates}

    def make(table):
        return SyntheticSplit(samples, text_len, side, backbone.config.vocab_size, 23, table=table, seed=2)

    started = time.perf_counter()
    outputs = run_variants(model, make, collate, samples, batch_size=batch)
    assembled = {cell: compute_metrics("multilabel", outputs.assemble(t), outputs.labels) for cell, t in tables.items()}
    cached_s = time.perf_counter() - started
    started = time.perf_counter()
    looped = {}
    for cell, table in tables.items():
        scores, labels = predict(model, make(table), collate, batch_size=batch)
        looped[cell] = compute_metrics("multilabel", scores, labels)
    loop_s = time.perf_counter() - started
    worst = max(abs(assembled[c]["f1_macro"] - looped[c]["f1_macro"]) for c in tables)
    return {"cells": len(tables), "samples": samples, "cached_s": cached_s, "loop_s": loop_s, "max_diff": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--b32-batch", type=int, default=None)
    parser.add_argument("--grid-samples", type=int, default=256)
    parser.add_argument("--shape", help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.shape:
        batch = args.b32_batch if args.shape == "ViLT-B/32" else None
        print(json.dumps(measure_shape(args.shape, args.steps, batch)))
        return

    rows = []
    for shape in SHAPES:
        command = [sys.executable, __file__, "--shape", shape, "--steps", str(args.steps)]
        if args.b32_batch:
            command += ["--b32-batch", str(args.b32_batch)]
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        rows.extend(json.loads(result.stdout.strip().splitlines()[-1]))
    device = "cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads"
    print(f"\nPrompt model throughput ({device}, torch {torch.__version__}, fp32, {args.steps} timed steps)\n")
    header = (
        f"{'shape':<18}{'method':<11}{'batch':>6}{'trainable':>12}{'train/s':>10}{'eval/s':>10}{'peak RSS MiB':>14}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['shape']:<18}{r['method']:<11}{r['batch']:>6}{r['trainable']:>12,d}{r['train_samples_per_s']:>10}"
            f"{r['eval_samples_per_s']:>10}{r['peak_rss_mib']:>14}"
        )
    grid = measure_grid(args.grid_samples)
    print(f"\nScenario grid: {grid['cells']} cells x {grid['samples']} test samples (embedded shape, input-level)\n")
    print(f"{'strategy':<34}{'model passes':>14}{'seconds':>10}")
    print(f"{'3 cached variants + assembly':<34}{3:>14}{grid['cached_s']:>10.1f}")
    print(f"{'one pass per cell':<34}{grid['cells']:>14}{grid['loop_s']:>10.1f}")
    print(f"speed-up {grid['loop_s'] / grid['cached_s']:.1f}x; largest F1-macro difference {grid['max_diff']:.2e}")


if __name__ == "__main__":
    main()
