"""Where the time goes on the embedded defaults: the model alone, `mmp train`, `mmp evaluate`, and the pipeline.

Prints one table per method and precision:
  * model step: forward + backward + AdamW on real, pre-collated batches of the prepared train split (the
    shape and batch of params.yaml), and an inference forward; nothing else;
  * `mmp train` (a fresh process, as DVC runs it): samples/s of its step loop (data loading, forward, backward,
    optimizer; validation and checkpoints are timed apart and reported as their own column), and its peak RSS;
  * `mmp evaluate`: test samples x 3 variants per second over the whole evaluation, and its peak RSS;
then the baseline trained live against on cached frozen features (cold and warm cache), and with --pipeline the
whole embedded pipeline from a clean clone of HEAD (per stage) and its no-op rerun.

    python bench/bench_pipeline.py [--epochs 2] [--precisions fp32 bf16] [--methods baseline attention input]
                                   [--pipeline]

Run it on a quiet machine: with 2 cores, anything else running makes torch several times slower.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREPARED = REPO / "data" / "prepared"


def run(args: list[str], env: dict, cwd: Path = REPO) -> tuple[str, float, float]:
    """Run a command; (stdout + stderr, wall seconds, peak RSS MiB of that process and its children)."""
    started = time.perf_counter()
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"{' '.join(args)} failed ({process.returncode}):\n{output[-4000:]}")
    return output, seconds, usage.ru_maxrss / 1024


def child_result(output: str) -> dict:
    return json.loads(next(line for line in reversed(output.splitlines()) if line.startswith("{")))


# ---------------------------------------------------------------------------------------------- child: model step
def model_step(method: str, precision: str, steps: int) -> dict:
    import torch

    from mmp_core.config import TrainParams
    from mmp_core.data import collate
    from mmp_core.model.inference import model_inputs
    from mmp_core.model.loading import open_prepared, split_dataset, tokenizer_for
    from mmp_core.model.precision import torch_dtype
    from mmp_core.params_file import load_section
    from mmp_core.training.deepspeed_setup import parameter_groups
    from mmp_core.training.train import build_model

    params = load_section(REPO / "params.yaml", "train", TrainParams)
    prepared = open_prepared(PREPARED)
    dataset = split_dataset(
        prepared, prepared.spec.train_split, tokenizer_for(params.backbone, prepared), params, params.train_missing
    )
    batches = [
        collate([dataset[i] for i in range(k * params.batch_size, (k + 1) * params.batch_size)]) for k in range(steps)
    ]
    dtype = torch_dtype(precision)
    torch.manual_seed(0)
    model = build_model(params, method, prepared.spec.task, prepared.spec.num_labels).to(dtype)
    optimizer = torch.optim.AdamW(parameter_groups(model, params.weight_decay), lr=params.lr)

    def inputs(batch):
        return model_inputs(batch, "cpu", dtype)

    def train_step(batch):
        loss = model.loss(model(**inputs(batch)), batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    train_step(batches[0])  # warm-up
    started = time.perf_counter()
    for batch in batches:
        train_step(batch)
    train_rate = steps * params.batch_size / (time.perf_counter() - started)
    model.eval()
    with torch.no_grad():
        model(**inputs(batches[0]))
        started = time.perf_counter()
        for batch in batches:
            model(**inputs(batch))
    eval_rate = steps * params.batch_size / (time.perf_counter() - started)
    return {"train": train_rate, "eval": eval_rate}


def b32_step(method: str, precision: str, steps: int) -> dict:
    """bench/gpu_bench.py's measurement at ViLT-B/32's shapes on the CPU: batch 4, 40 text tokens, 384 x 384."""
    import argparse

    import torch

    sys.path.insert(0, str(REPO / "bench"))
    from gpu_bench import SHAPES, measure

    from mmp_core.model.backbone import load_backbone
    from mmp_core.model.precision import torch_dtype

    options = argparse.Namespace(shape="vilt-b32", batch=4, steps=steps, warmup=1, attention="sdpa")
    row = measure(options, method, load_backbone(SHAPES["vilt-b32"][0]), torch.device("cpu"), torch_dtype(precision))
    return {"train": row["train_samples_per_s"], "eval": row["eval_samples_per_s"]}


def evaluate_child(method: str, adapter: str, precision: str, out: str) -> dict:
    from mmp_core.config import EvaluateParams, TrainParams
    from mmp_core.evaluation.evaluate import evaluate_adapter
    from mmp_core.params_file import load_section

    train = load_section(REPO / "params.yaml", "train", TrainParams).model_copy(update={"precision": precision})
    params = load_section(REPO / "params.yaml", "evaluate", EvaluateParams)
    started = time.perf_counter()
    document = evaluate_adapter(PREPARED, adapter, method, train, params, out)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "samples": 3 * document["test_samples"], "headline": document["headline"]}


# ---------------------------------------------------------------------------------------------- parent
def bench_env(cache: Path) -> dict:
    env = dict(os.environ)
    env.update(MMP_CACHE_DIR=str(cache), DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def mmp_train(method: str, precision: str, epochs: int, out: Path, env: dict, **overrides) -> tuple[dict, float]:
    settings = {"epochs": epochs, "precision": precision, **overrides}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"train.{key}={value}")]
    _, _, rss = run(
        [sys.executable, "-m", "mmp_core.cli", "train", "--method", method, "--prepared", str(PREPARED),
         "--out", str(out), "--checkpoint-dir", str(out) + ".ckpt", *sets],
        env,
    )  # fmt: skip
    return json.loads((out / "train_summary.json").read_text()), rss


def measure(args, scratch: Path) -> list[dict]:
    rows = []
    for precision in args.precisions:
        for method in args.methods:
            env = bench_env(scratch / f"cache-{method}-{precision}")
            output, _, model_rss = run(
                [sys.executable, __file__, "--child", "model", "--method", method, "--precision", precision,
                 "--steps", str(args.steps)],
                env,
            )  # fmt: skip
            model = child_result(output)
            out = scratch / f"{method}-{precision}"
            live = {"frozen_features": False} if method == "baseline" else {}
            summary, train_rss = mmp_train(method, precision, args.epochs, out, env, **live)
            output, _, eval_rss = run(
                [sys.executable, __file__, "--child", "evaluate", "--method", method, "--precision", precision,
                 "--adapter", str(out / "adapter"), "--out", str(scratch / f"eval-{method}-{precision}")],
                env,
            )  # fmt: skip
            evaluation = child_result(output)
            timing = summary["timing"]
            rows.append(
                {
                    "method": method + (" (live)" if live else ""),
                    "precision": precision,
                    "model_train": model["train"],
                    "model_eval": model["eval"],
                    "train_loop": timing["loop_samples_per_second"],
                    "validation_s": timing["validation_seconds"] + timing["checkpoint_seconds"],
                    "train_s": summary["seconds"],
                    "train_rss": train_rss,
                    "eval": evaluation["samples"] / evaluation["seconds"],
                    "eval_rss": eval_rss,
                    "model_rss": model_rss,
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def b32_rows(args, scratch: Path) -> list[dict]:
    rows = []
    for method in args.methods:
        row = {"method": method}
        for precision in ("fp32", "bf16"):
            output, _, rss = run(
                [sys.executable, __file__, "--child", "b32", "--method", method, "--precision", precision,
                 "--steps", "3"],
                bench_env(scratch / "cache-b32"),
            )  # fmt: skip
            row[precision] = {**child_result(output), "rss": rss}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def cached_baseline(args, scratch: Path) -> dict:
    precision = args.precisions[-1]
    env = bench_env(scratch / "cache-features")
    live, _ = mmp_train("baseline", precision, 8, scratch / "baseline-live", env, frozen_features=False)
    cold, _ = mmp_train("baseline", precision, 8, scratch / "baseline-cold", env)
    warm, _ = mmp_train("baseline", precision, 8, scratch / "baseline-warm", env)
    return {
        "precision": precision,
        **{f"{name}_s": s["seconds"] for name, s in (("live", live), ("cold", cold), ("warm", warm))},
        **{f"{name}_val": s[f"best_val_{s['metric']}"] for name, s in (("live", live), ("cold", cold))},
    }


def pipeline(scratch: Path) -> dict:
    clone = scratch / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = bench_env(scratch / "cache-pipeline")
    # The clone's code, not this checkout's (the editable install points here).
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_HOME=str(scratch / "prefect"), PYTHONPATH=str(clone))
    first, first_s, _ = run([sys.executable, "-m", "flows.pipeline"], env, cwd=clone)
    _, again_s, _ = run([sys.executable, "-m", "flows.pipeline"], env, cwd=clone)
    stages = re.search(r"DVC stages: .*\n\s+(.*)", first)
    return {"first_s": first_s, "stages": stages.group(1) if stages else "?", "noop_s": again_s}


def print_tables(rows: list[dict], b32: list[dict], cached: dict | None, flow: dict | None) -> None:
    print("| method | precision | model step train / eval samples/s | `mmp train` loop samples/s (% of model) | "
          "validation + checkpoints s | `mmp train` total s | `mmp evaluate` samples/s | peak RSS MiB model / "
          "train / evaluate |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['precision']} | {r['model_train']:.0f} / {r['model_eval']:.0f} | "
            f"{r['train_loop']:.0f} ({100 * r['train_loop'] / r['model_train']:.0f}%) | {r['validation_s']:.1f} | "
            f"{r['train_s']:.1f} | {r['eval']:.0f} | {r['model_rss']:.0f} / {r['train_rss']:.0f} / {r['eval_rss']:.0f} |"
        )
    if b32:
        print("\nViLT-B/32 shapes (random weights, batch 4, 384 px, prompts at layers 0-5), the model step alone:\n")
        print("| method | fp32 train / eval samples/s | bf16 train / eval samples/s | bf16 speed-up train / eval | "
              "peak RSS MiB fp32 / bf16 |")  # fmt: skip
        print("|---|---|---|---|---|")
        for r in b32:
            low, high = r["bf16"], r["fp32"]
            print(
                f"| {r['method']} | {high['train']:.2f} / {high['eval']:.2f} | {low['train']:.2f} / {low['eval']:.2f} | "
                f"{low['train'] / high['train']:.2f}x / {low['eval'] / high['eval']:.2f}x | "
                f"{high['rss']:.0f} / {low['rss']:.0f} |"
            )
    if cached:
        print(
            f"\nBaseline, 8 epochs, {cached['precision']}: live backbone {cached['live_s']:.1f} s (best val "
            f"{cached['live_val']:.4f}); cached frozen features, cold {cached['cold_s']:.1f} s "
            f"({cached['live_s'] / cached['cold_s']:.0f}x, best val {cached['cold_val']:.4f}), warm "
            f"{cached['warm_s']:.1f} s ({cached['live_s'] / cached['warm_s']:.0f}x)"
        )
    if flow:
        print(
            f"\nPipeline from a clean clone: {flow['first_s']:.0f} s ({flow['stages']}); "
            f"no-op rerun {flow['noop_s']:.1f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each `mmp train` run")
    parser.add_argument("--steps", type=int, default=12, help="batches of the model-step measurement")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--methods", nargs="+", default=["baseline", "attention", "input"])
    parser.add_argument("--pipeline", action="store_true", help="also time the pipeline from a clean clone")
    parser.add_argument("--no-cached-baseline", action="store_true")
    parser.add_argument("--no-b32", action="store_true", help="skip the ViLT-B/32-shape model steps")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--adapter", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "model":
        print(json.dumps(model_step(args.method, args.precision, args.steps)))
        return
    if args.child == "b32":
        print(json.dumps(b32_step(args.method, args.precision, args.steps)))
        return
    if args.child == "evaluate":
        print(json.dumps(evaluate_child(args.method, args.adapter, args.precision, args.out)))
        return
    if not (PREPARED / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "dvc", "repro", "prepare"], cwd=REPO, check=True)
    with tempfile.TemporaryDirectory(prefix="mmp-bench-") as scratch:
        scratch = Path(scratch)
        rows = measure(args, scratch)
        b32 = [] if args.no_b32 else b32_rows(args, scratch)
        cached = None if args.no_cached_baseline else cached_baseline(args, scratch)
        flow = pipeline(scratch) if args.pipeline else None
    print_tables(rows, b32, cached, flow)


if __name__ == "__main__":
    main()
