"""The DVC way to change a parameter: `dvc exp run -S train.lr=...` in a copy of this project (tiny data, tiny
backbone, one method), then `dvc exp show --json` holds the experiment's parameters and metrics, and
`dvc metrics diff` / `dvc plots diff` read its results."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.model_fixtures import TINY_IMAGE, TINY_RECIPE

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "methods": ["baseline"],
    "generate": {"seed": 0, "train": 32, "dev": 16, "test": 16},
    "prepare": {"dataset": "embedded", "raw": "data/raw/embedded", "vocab_size": 256, "missing_rates": [0.0, 0.7, 1.0]},
    "seeds": [0],
    "train": {
        "backbone": "backbones/embedded",
        "max_text_len": 40,
        "image": TINY_IMAGE,
        "epochs": 1,
        "batch_size": 16,
        "effective_batch_size": 16,
        "lr": 0.01,
        "val_per_epoch": 1,
        **TINY_RECIPE,
    },
    "evaluate": {"rates": [0.0, 0.7, 1.0], "batch_size": 16},
}


def run(args: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{output[-6000:]}"
    return result.stdout


@pytest.fixture
def project(tmp_path):
    """This repository's pipeline files in a fresh git + DVC repository, with tiny parameters, committed."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("mmp_core", "infra", "backbones"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "pyproject.toml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, copy / name)
    (copy / "params.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(copy),  # the stages run this copy's code
        "DVC_NO_ANALYTICS": "1",
        "DS_ACCELERATOR": "cpu",
        "MMP_CACHE_DIR": str(tmp_path / "cache"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    run(["git", "init", "-q"], copy, env)
    run([sys.executable, "-m", "dvc", "init", "-q"], copy, env)
    run(["git", "add", "-A"], copy, env)
    run(["git", "commit", "-qm", "project"], copy, env)
    return copy, env


@pytest.mark.slow(seconds=25)
def test_dvc_exp_run_set_param_and_exp_show(project):
    copy, env = project
    dvc = [sys.executable, "-m", "dvc"]
    run([*dvc, "exp", "run", "-n", "faster", "-S", "train.lr=3e-3", "-S", "train.epochs=2"], copy, env)

    shown = json.loads(run([*dvc, "exp", "show", "--json"], copy, env))
    experiments = [exp for row in shown for exp in (row.get("experiments") or [])]
    [faster] = [exp for exp in experiments if exp.get("name") == "faster"]
    [revision] = faster["revs"]
    data = revision["data"]
    params = data["params"]["params.yaml"]["data"]
    assert params["train"]["lr"] == 0.003 and params["train"]["epochs"] == 2
    metrics = data["metrics"]["results/baseline/metrics.json"]["data"]
    assert metrics["method"] == "baseline" and metrics["test_samples"] == 16
    assert 0.0 <= metrics["headline"]["f1_macro"] <= 1.0
    # The committed params.yaml is untouched; the workspace holds the experiment's results.
    committed = yaml.safe_load(run(["git", "show", "HEAD:params.yaml"], copy, env))
    assert committed["train"]["lr"] == 0.01
    summary = json.loads((copy / "models" / "baseline" / "seeds" / "0" / "train_summary.json").read_text())
    assert summary["epochs"] == 2

    diff = json.loads(run([*dvc, "metrics", "diff", "--json"], copy, env))
    assert "results/baseline/metrics.json" in diff
    # Robustness curves and the training curve, from the experiment's files (the other methods did not run).
    plots = json.loads(run([*dvc, "plots", "diff", "--json"], copy, env))["data"]
    curve = plots["robustness_text_missing"][0]["content"]["data"]["values"]
    assert [row["missing_rate"] for row in curve if "baseline" in row["filename"]] == ["0.00", "0.70", "1.00"]
    assert "models/baseline/seeds/0/dvclive/plots/metrics/val/f1_macro.tsv" in plots
