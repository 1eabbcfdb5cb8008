"""Does the default recipe learn on data it was not tuned for? One row per synthetic dataset.

For every dataset (a raw layout, a world seed and a size; mmp_core/data/synthetic.py) the script runs what a user
runs, through the `mmp` CLI with the project's params.yaml: `generate`, `prepare`, `probe` (a logistic regression
on the frozen backbone's pooled [CLS]: what a linear read-out of the features reaches), then `train` + `evaluate`
of the baseline on complete data, and optionally of prompt methods at the default missing setting, beside the
baseline trained at that same setting. It prints:

    dataset | train size | probe complete | baseline complete | ratio | steps | time | baseline both@70 |
    prompts complete / both@70 (and their difference to the baseline)

The target of the recipe: the baseline trained on complete data reaches at least 95% of the probe's complete score
on every dataset, and no run is degenerate where the probe shows signal.

    python bench/recipe_bench.py --work /tmp/recipe --datasets food101:11:800 hatememes:12:1000 mmimdb:13:1200
    python bench/recipe_bench.py --work /tmp/recipe --methods attention --set train.lr=0.003   # a variant

Each row's commands and outputs stay under --work/<dataset>/ (rerun: finished steps are reused with --reuse).
Time nothing while other heavy work runs: the column is wall time on this machine.
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

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"train": 1.0, "dev": 0.25, "test": 0.5}  # of the train size
PROBE_NAME = "probe.json"


def mmp(*args: str, cwd: Path, log: Path) -> None:
    env = {**os.environ, "MMP_PROGRESS": "log", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    with log.open("a") as out:
        out.write(f"$ mmp {' '.join(args)}\n")
        out.flush()
        result = subprocess.run([sys.executable, "-m", "mmp_core.cli", *args], cwd=cwd, env=env, stdout=out, stderr=out)
    if result.returncode:
        raise SystemExit(f"mmp {' '.join(args)} failed (rc {result.returncode}); see {log}")


def parse_dataset(text: str) -> tuple[str, int, int]:
    layout, seed, size = text.split(":")
    return layout, int(seed), int(size)


def complete_and_headline(metrics_path: Path) -> tuple[float, float | None]:
    document = json.loads(metrics_path.read_text())
    metric = document["primary_metric"]
    complete = next(c[metric] for c in document["grid"] if c["missing_rate"] == 0.0)
    return complete, document["headline"][metric]


def run_dataset(
    work: Path, layout: str, seed: int, size: int, methods: list[str], overrides: list[str], reuse: bool,
    mode: str = "shipped", pretrain_epochs: int = 20, pretrain_lr: float | None = None,
):  # fmt: skip
    name = f"{layout}-s{seed}-n{size}"
    folder = work / name
    if folder.exists() and not reuse:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "params.yaml", folder / "params.yaml")
    (folder / "dvc.yaml").write_text("stages: {}\n")
    log = folder / "log.txt"
    sets = [arg for override in overrides for arg in ("--set", override)]
    sizes = [f"--{split}={max(20, int(share * size))}" for split, share in SIZES.items()]
    if not (folder / "prepared").is_dir():
        mmp("generate", "--layout", layout, "--seed", str(seed), *sizes, "--out", "raw", cwd=folder, log=log)
        mmp("prepare", "--dataset", layout, "--raw", "raw", "--out", "prepared", "--missing-rates", "0", "0.7",
            "--vocab-size", "0", cwd=folder, log=log)  # fmt: skip
    backbone, prepared, out_root = ROOT / "backbones" / "embedded", "prepared", folder
    if mode != "shipped":  # a backbone pretrained on this dataset's complete train pairs, in its own subfolder
        out_root = folder / (mode if pretrain_lr is None else f"{mode}-lr{pretrain_lr:g}")
        backbone = out_root / "backbone"
        pretrain = ["--set=pretrain.corpus=prepared", f"--set=pretrain.epochs={pretrain_epochs}"]
        if pretrain_lr is not None:
            pretrain.append(f"--set=pretrain.lr={pretrain_lr}")
        if mode == "scratch" and not (folder / "prepared-vocab").is_dir():  # its own vocabulary, from the text
            mmp("prepare", "--dataset", layout, "--raw", "raw", "--out", "prepared-vocab", "--missing-rates", "0",
                "0.7", "--vocab-size", "2048", cwd=folder, log=log)  # fmt: skip
        prepared = "prepared-vocab" if mode == "scratch" else "prepared"
        init = ["--init", str(ROOT / "backbones" / "embedded")] if mode == "init" else []
        if not (backbone / "pretrain_summary.json").is_file():
            started = time.perf_counter()
            mmp("pretrain", *init, "--prepared", prepared, "--out", str(backbone), *pretrain, cwd=folder, log=log)
            (out_root / "pretrain_seconds.txt").write_text(f"{time.perf_counter() - started:.0f}\n")
    if not (out_root / PROBE_NAME).is_file():
        with log.open("a") as out:
            probe = subprocess.run(
                [sys.executable, "-m", "mmp_core.cli", "probe", "--backbone", str(backbone), "--prepared", prepared],
                cwd=folder, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )  # fmt: skip
            out.write(probe.stderr)
        if probe.returncode:
            raise SystemExit(f"mmp probe failed on {name}: {probe.stderr[-2000:]}")
        text = probe.stdout
        (out_root / PROBE_NAME).write_text(text[text.index("{") :])
    probe = json.loads((out_root / PROBE_NAME).read_text())
    metric = probe["metric"]
    row = {"dataset": name, "train": size, "backbone": out_root.name if mode != "shipped" else mode, "metric": metric,
           "probe": probe["complete"][metric]}  # fmt: skip
    row["probe_single"] = max(probe["text missing"][metric], probe["image missing"][metric])
    if mode != "shipped":
        summary = json.loads((backbone / "pretrain_summary.json").read_text())
        row["heldout_itm"] = (summary.get("heldout") or {}).get("itm_accuracy")
        row["pretrain_seconds"] = float((out_root / "pretrain_seconds.txt").read_text())
    base = [f"--set=train.backbone={backbone}", *sets]
    runs = [("baseline-complete", "baseline", ["--set=train.train_missing.rate=0", "--set=train.val_missing.rate=0"])]
    if methods:  # the prompt methods' reference: the baseline trained and validated at the same missing setting
        runs.append(("baseline", "baseline", []))
    runs += [(method, method, []) for method in methods]
    for label, method, extra in runs:
        started = time.perf_counter()
        out = out_root / "models" / label
        mmp("train", "--method", method, "--prepared", prepared, "--out", str(out), *base, *extra, cwd=folder, log=log)
        mmp("evaluate", "--method", method, "--prepared", prepared, "--adapter", str(out / "adapter"),
            "--out", str(out_root / "results" / label), "--set=evaluate.rates=[0.0, 0.7]", *base, *extra,
            cwd=folder, log=log)  # fmt: skip
        summary = json.loads((out / "train_summary.json").read_text())
        complete, headline = complete_and_headline(out_root / "results" / label / "metrics.json")
        row[label] = {
            "complete": complete,
            "both70": headline,
            "steps": summary["steps"],
            "best_step": summary["best_step"],
            "degenerate": summary["sanity"]["degenerate"],
            "seconds": round(time.perf_counter() - started, 1),
        }
    (out_root / "row.json").write_text(json.dumps(row, indent=2))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, type=Path, help="working folder (one subfolder per dataset)")
    parser.add_argument("--datasets", nargs="+", default=["food101:11:800", "hatememes:12:1000", "mmimdb:13:1200"],
                        help="LAYOUT:SEED:TRAIN_SIZE (dev and test are 1/4 and 1/2 of it); LAYOUT mmimdb, food101, "
                        "hatememes or embedded (the benchmark's world)")  # fmt: skip
    parser.add_argument("--methods", nargs="*", default=[], help="prompt methods to train at the default setting")
    parser.add_argument("--set", action="append", default=[], help="train.KEY=VALUE for every training run")
    parser.add_argument("--reuse", action="store_true", help="keep each dataset's generated and prepared data")
    parser.add_argument(
        "--backbone",
        choices=("shipped", "init", "scratch"),
        default="shipped",
        help="shipped: backbones/embedded as is; init: continued pretraining from it on the dataset's "
        "pairs (vocabulary extended); scratch: pretrained from scratch on them (own vocabulary)",
    )
    parser.add_argument("--pretrain-epochs", type=int, default=20, help="epochs of init / scratch pretraining")
    parser.add_argument("--pretrain-lr", type=float, default=None,
                        help="learning rate of init / scratch pretraining (default: params.yaml's pretrain.lr); "
                        "its backbone gets a folder of its own (<backbone>-lr<LR>)")  # fmt: skip
    args = parser.parse_args()
    rows = [
        run_dataset(args.work, *parse_dataset(d), args.methods, args.set, args.reuse, args.backbone,
                    args.pretrain_epochs, args.pretrain_lr)
        for d in args.datasets
    ]  # fmt: skip
    print(
        f"backbone: {args.backbone}" + (f", pretrain.lr {args.pretrain_lr:g}" if args.pretrain_lr is not None else "")
    )
    print("| dataset | train | metric | probe complete | baseline complete | ratio | steps (best) | time |"
          + (" baseline both@70 |" if args.methods else "")
          + "".join(f" {m} complete | {m} both@70 |" for m in args.methods))  # fmt: skip
    print("|---" * (8 + bool(args.methods) + 2 * len(args.methods)) + "|")
    for row in rows:
        base = row["baseline-complete"]
        flag = " (degenerate)" if base["degenerate"] else ""
        line = (
            f"| {row['dataset']} | {row['train']} | {row['metric']} | {row['probe']:.3f} | {base['complete']:.3f}{flag} "
            f"| {base['complete'] / row['probe']:.2f} | {base['steps']} ({base['best_step']}) | {base['seconds']:.0f} s |"
        )
        reference = row.get("baseline")  # at the prompts' missing setting; only with --methods
        if reference:
            line += f" {reference['both70']:.3f} ({reference['steps']} steps, {reference['seconds']:.0f} s) |"
        for method in args.methods:
            run = row[method]
            line += (
                f" {run['complete']:.3f} | {run['both70']:.3f} {run['both70'] - reference['both70']:+.3f} "
                f"({run['steps']} steps, {run['seconds']:.0f} s) |"
            )
        print(line)
    (args.work / "table.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
