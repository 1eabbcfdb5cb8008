"""The tiny project every flow test runs: a copy of this repository with tiny params, its own git and DVC
remote, and the first whole run of its pipeline, made once per test session and copied by the tests that need
a project that has run (a copy has its outputs, its dvc.lock and its DVC cache, so nothing runs twice)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import flow_env
from tests.model_fixtures import REPO, TINY_IMAGE, TINY_RECIPE

METHODS = ("baseline", "attention", "input")

ARTIFACTS = "mmp-artifacts"
DVC_BUCKET = "mmp-dvc"

TINY_PARAMS = {
    "methods": list(METHODS),
    "generate": {"seed": 0, "train": 64, "dev": 32, "test": 48, "label_noise": 0.02, "natural_missing": 0.0},
    "prepare": {
        "dataset": "embedded",
        "raw": "data/raw/embedded",
        "on_bad_sample": "fail",
        "vocab_size": 512,
        "missing_seed": 0,
        "missing_types": ["text", "image", "both"],
        "missing_rates": [0.0, 0.5, 0.7, 1.0],
    },
    "seeds": [0],
    "train": {
        "backbone": "backbones/embedded",  # the shipped one (copied with the tracked files)
        "max_text_len": 40,
        "image": TINY_IMAGE,
        "prompt_length": 6,
        "prompt_layers": [0, 1, 2],
        "epochs": 1,
        "batch_size": 16,
        "effective_batch_size": 16,
        "val_per_epoch": 1,
        **TINY_RECIPE,
    },
    "evaluate": {"rates": [0.0, 0.5, 0.7, 1.0], "batch_size": 16},
}


def make_project(root: Path, endpoint: str) -> Path:
    """A clean copy of this repository (tracked and new files) with tiny params, its own git and DVC remote."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in files:
        source = REPO / name
        if source.is_file() and not name.startswith(("tests/", "bench/", "results/", "models/")):  # no local outputs
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    (root / "params.yaml").write_text(yaml.safe_dump(TINY_PARAMS, sort_keys=False))
    env = flow_env(root)
    for command in (
        ["git", "init", "-q"],
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"],
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "project"],
        [sys.executable, "-m", "dvc", "remote", "add", "-d", "store", f"s3://{DVC_BUCKET}/cache"],
        [sys.executable, "-m", "dvc", "remote", "modify", "store", "endpointurl", endpoint],
    ):
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    return root


def copy_project(project: Path, root: Path, endpoint: str) -> Path:
    """A copy of `project` (git, DVC cache, outputs, dvc.lock) at `root`, its DVC remote at `endpoint`.
    DVC's own state (`.dvc/tmp`: locks, hash cache by inode) is not copied: the copy makes its own."""

    def dvc_state(directory: str, names: list[str]) -> list[str]:
        return ["tmp"] if Path(directory).name == ".dvc" else []

    shutil.copytree(project, root, symlinks=True, ignore=dvc_state)
    subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "modify", "store", "endpointurl", endpoint],
        cwd=root, env=flow_env(root.parent), check=True, capture_output=True,
    )  # fmt: skip
    return root


def pipeline(project: Path, store: Path, *extra: str, env: dict | None = None) -> str:
    """`flows.pipeline` on `project` into the local store `store`, one CPU thread per stage; its log."""
    result = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--repo", str(project), "--store", str(store),
         "--no-require-learning", *extra],
        cwd=project, env=env or {**flow_env(project.parent), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return result.stdout + result.stderr


def outcome(project: Path, methods: tuple[str, ...] = METHODS) -> dict:
    """What a user keeps from a run: each method's adapter bytes and its published metrics and grid."""
    found = {}
    for method in methods:
        adapter = project / "models" / method / "seeds" / "0" / "adapter" / "adapter_model.safetensors"
        found[method] = {
            "adapter": adapter.read_bytes(),
            "metrics": json.loads((project / "results" / method / "metrics.json").read_text()),
            "grid": (project / "results" / method / "grid.tsv").read_text(),
        }
    return found
