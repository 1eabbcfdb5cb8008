"""A tiny end-to-end run of every stage, as a user runs them (`python -m mmp_core.cli ...`, a fresh process
each), into one output directory: the evidence that a restructuring changed no behaviour.

Run it on two trees and compare the outputs with bench/compare_outputs.py:

    OMP_NUM_THREADS=1 python bench/tiny_run.py /tmp/before      # on the old tree
    OMP_NUM_THREADS=1 python bench/tiny_run.py /tmp/after       # on the new tree
    python bench/compare_outputs.py /tmp/before /tmp/after

Stages: generate (48/16/24 samples) -> prepare (the shipped backbone's vocabulary) -> data-info -> train and
evaluate every method of `mmp_core.config.METHODS` (seed 0, a few optimizer steps on backbones/embedded) ->
aggregate -> predict (an adapter, complete and single-modality inputs) -> probe (backbones/embedded) ->
pretrain (a tiny ViLT on 192 scenes, 100 held out, one epoch). One thread (OMP_NUM_THREADS=1, set here if unset) makes the
floating-point sums, and so every adapter, bitwise reproducible. About 5-10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BACKBONE = REPO / "backbones" / "embedded"
IMAGE = {"shorter_side": 96, "longer_side": 160, "patch_size": 16}


def tiny_params(out: Path, methods: list[str]) -> dict:
    return {
        "methods": methods,
        "seeds": [0],
        "generate": {"seed": 0, "train": 48, "dev": 16, "test": 24},
        "prepare": {
            "dataset": "embedded",
            "raw": str(out / "raw"),
            "vocab_size": 0,
            "missing_seed": 0,
            "missing_types": ["text", "image", "both"],
            "missing_rates": [0.0, 0.5, 0.7, 1.0],
        },
        "pretrain": {
            "config": "tiny",
            "corpus": "scenes",
            "pairs": 192,
            "heldout": 100,
            "image": {"shorter_side": 64, "longer_side": 96, "patch_size": 16},
            "epochs": 1,
            "batch_size": 16,
        },
        "train": {
            "backbone": str(BACKBONE),
            "max_text_len": 40,
            "image": IMAGE,
            "prompt_length": 6,
            "prompt_layers": [0, 1, 2],
            "epochs": 1,
            "min_steps": 6,
            "patience": 0,
            "batch_size": 8,
            "effective_batch_size": 8,
            "val_per_epoch": 2,
            "train_missing": {"type": "both", "rate": 0.7},
            "val_missing": {"type": "both", "rate": 0.7},
        },
        "evaluate": {
            "rates": [0.0, 0.5, 1.0],
            "types": ["text", "image", "both"],
            "test_missing": {"type": "both", "rate": 0.7},
            "batch_size": 16,
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output directory (replaced)")
    parser.add_argument("--methods", nargs="+", help="default: every method of mmp_core.config.METHODS")
    parser.add_argument("--skip-pretrain", action="store_true", help="leave out the pretraining stage")
    args = parser.parse_args()

    from mmp_core.config import METHODS

    methods = args.methods or list(METHODS)
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    params = out / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(out, methods), sort_keys=False))

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # the venv's ninja for DeepSpeed
    env.setdefault("DS_ACCELERATOR", "cpu")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env["MMP_CACHE_DIR"] = str(out / "cache")
    timings: list[tuple[str, float]] = []

    def mmp(name: str, *argv: str, stdout_to: Path | None = None) -> None:
        start = time.perf_counter()
        with open(out / "logs" / f"{name}.log", "w") as log:
            result = subprocess.run(
                [sys.executable, "-m", "mmp_core.cli", *argv],
                cwd=out,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        if stdout_to is not None:
            stdout_to.parent.mkdir(parents=True, exist_ok=True)
            stdout_to.write_text(result.stdout)
        else:
            (out / "logs" / f"{name}.stdout").write_text(result.stdout)
        timings.append((name, time.perf_counter() - start))
        print(f"{name:<22} rc {result.returncode}  {timings[-1][1]:6.1f} s", flush=True)
        if result.returncode != 0:
            sys.exit(f"mmp {' '.join(argv)} failed (rc {result.returncode}); see {out / 'logs' / name}.log")

    p = str(params)
    mmp("generate", "generate", "--out", str(out / "raw"), "--params", p, "--workers", "1")
    mmp("prepare", "prepare", "--out", str(out / "prepared"), "--params", p, "--workers", "1")
    mmp("data-info", "data-info", str(out / "prepared"), "--json", stdout_to=out / "info" / "data-info.json")
    for method in methods:
        model_dir = out / "models" / method / "seeds" / "0"
        result_dir = out / "results" / method / "seeds" / "0"
        mmp(
            f"train-{method}", "train", "--method", method, "--prepared", str(out / "prepared"),
            "--out", str(model_dir), "--checkpoint-dir", str(out / "checkpoints" / method), "--params", p,
        )  # fmt: skip
        mmp(
            f"evaluate-{method}", "evaluate", "--method", method, "--prepared", str(out / "prepared"),
            "--adapter", str(model_dir / "adapter"), "--out", str(result_dir), "--params", p,
        )  # fmt: skip
        mmp(
            f"aggregate-{method}", "aggregate", "--method", method, "--results", str(out / "results" / method),
            "--models", str(out / "models" / method), "--params", p,
        )  # fmt: skip

    # Inputs for `mmp predict`: complete, text only, image only.
    images = sorted((out / "raw" / "images").iterdir())[:3]
    inputs = out / "predict" / "inputs.jsonl"
    inputs.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": "complete", "image": str(images[0]), "text": "a secret love story in the dark"},
        {"id": "text-only", "text": "they fight and chase with guns"},
        {"id": "image-only", "image": str(images[1])},
        {"id": "complete-2", "image": str(images[2]), "text": "a robot on a spaceship"},
    ]
    inputs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    predicted = methods[1] if len(methods) > 1 else methods[0]
    mmp(
        "predict", "predict", "--adapter", str(out / "models" / predicted / "seeds" / "0" / "adapter"),
        "--inputs", str(inputs), "--json", "--out", str(out / "predict" / f"{predicted}.jsonl"),
    )  # fmt: skip
    mmp(
        "probe", "probe", "--backbone", str(BACKBONE), "--prepared", str(out / "prepared"),
        stdout_to=out / "info" / "probe.txt",
    )  # fmt: skip
    if not args.skip_pretrain:
        mmp(
            "pretrain", "pretrain", "--out", str(out / "pretrained"), "--params", p,
            "--checkpoint-dir", str(out / "checkpoints" / "pretrain"),
        )  # fmt: skip
    total = sum(seconds for _, seconds in timings)
    print(f"done: {len(timings)} commands in {total:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
