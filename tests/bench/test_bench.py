"""The GPU benchmark, run here on the CPU at a tiny shape: it must be ready to run when an accelerator is lent."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.model_fixtures import REPO


def test_gpu_bench_runs_at_a_tiny_shape_and_reports_mfu():
    result = subprocess.run(
        [sys.executable, "bench/gpu_bench.py", "--device", "cpu", "--shape", "tiny", "--steps", "2", "--batch", "4",
         "--peak-tflops", "0.001"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if re.match(r"\| (baseline|attention|input|shared) \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["baseline", "attention", "input", "shared"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        train_rate, train_mfu = float(cells[2]), cells[4]
        assert train_rate > 0
        assert float(train_mfu) > 0, f"MFU against the given peak: {row}"
