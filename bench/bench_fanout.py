"""The pipeline's wall time in process versus fanned out to git worktrees (`--max-parallel N`), on the embedded
defaults, each from its own clean clone of HEAD with the data already prepared (generate and prepare untimed).
A clone has the committed dvc.lock, whose trained outputs are in no cache: the case where a fanned-out stage
used to run twice (in its worktree, then again in the project).

    python bench/bench_fanout.py [--parallel 1 2 3]

Prints one row per setting: flow seconds, the seconds of the training and evaluation stages, the speed-up over the
in-process run, how many stage commands DVC ran and which ran more than once (anywhere: project or worktree).
Exits 1 if a stage ran twice. Run it on a quiet machine: the settings are compared with each other as ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pipeline_seconds(scratch: Path, parallel: int) -> dict:
    clone = scratch / f"clone-{parallel}"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {**os.environ, "PYTHONPATH": str(clone), "MMP_CACHE_DIR": str(scratch / f"cache-{parallel}"),
           "PREFECT_HOME": str(scratch / f"prefect-{parallel}"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    subprocess.run([sys.executable, "-m", "dvc", "repro", "prepare"], cwd=clone, env=env, check=True,
                   capture_output=True)  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--max-parallel", str(parallel), "--store", str(scratch / "store")],
        cwd=clone, env=env, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"max_parallel {parallel} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    stages = dict(re.findall(r"(\w+@[\w-]+) (\d+) s", result.stdout))
    # DVC's own line for every stage command it runs, in the project or a worktree (the flow logs both).
    ran = Counter(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr))
    return {"parallel": parallel, "seconds": seconds, "stages": stages, "ran": ran,
            "headline": re.findall(r"^\s+(\w+)\s+f1_macro ([\d.]+)", result.stdout, re.M)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", nargs="+", type=int, default=[1, 3], help="max_parallel settings to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmp-bench-fanout-") as scratch:
        rows = [pipeline_seconds(Path(scratch), parallel) for parallel in args.parallel]
    base = rows[0]["seconds"]
    print(f"{os.cpu_count()} CPU cores; embedded defaults (3 methods, 1 seed)\n")
    print("| max_parallel | flow s | speed-up | train stages s | evaluate stages s | stages run | run twice | "
          "test f1_macro |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        train = ", ".join(f"{k.split('@')[1]} {v}" for k, v in row["stages"].items() if k.startswith("train@"))
        evaluate = ", ".join(f"{k.split('@')[1]} {v}" for k, v in row["stages"].items() if k.startswith("evaluate@"))
        scores = ", ".join(f"{m} {v}" for m, v in row["headline"])
        twice = ", ".join(f"{stage} ×{n}" for stage, n in row["ran"].items() if n > 1) or "none"
        print(f"| {row['parallel']} | {row['seconds']:.0f} | {base / row['seconds']:.2f}x | {train} | {evaluate} | "
              f"{sum(row['ran'].values())} | {twice} | {scores} |")  # fmt: skip
    if any(n > 1 for row in rows for n in row["ran"].values()):
        sys.exit("a stage ran twice")


if __name__ == "__main__":
    main()
