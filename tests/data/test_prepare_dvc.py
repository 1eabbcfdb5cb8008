"""`dvc repro prepare` on the embedded data in a temporary copy of the repository: builds it, a second run
does nothing, and changing a prepare parameter reruns only the prepare stage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(args: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{output}"
    return output


@pytest.fixture
def repo(tmp_path):
    """The files the data stages need, in a fresh git + DVC repository; tiny dataset sizes."""
    if shutil.which("dvc", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("dvc is not installed in this environment")
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copytree(ROOT / "mmp_core", copy / "mmp_core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", "pyproject.toml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, copy / name)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["generate"].update(train=24, dev=8, test=8)
    params["prepare"]["missing_rates"] = [0.0, 0.7]
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        # As on a user's machine: Python writes __pycache__ into the stages' code folders, which DVC must ignore.
        "PYTHONDONTWRITEBYTECODE": "",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(copy),  # run this copy's code (the `mmp` script imports mmp_core)
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    _run(["git", "init", "-q"], copy, env)
    _run(["dvc", "init", "-q"], copy, env)
    _run(["dvc", "config", "core.autostage", "false"], copy, env)
    return copy, env, params


def test_dvc_repro_prepare(repo):
    copy, env, params = repo
    first = _run(["dvc", "repro", "prepare"], copy, env)
    assert "Running stage 'generate'" in first and "Running stage 'prepare'" in first
    manifest = json.loads((copy / "data" / "prepared" / "manifest.json").read_text())
    assert manifest["dataset"] == "embedded" and manifest["files"]["train"]["rows"] == 24
    assert (copy / "data" / "prepared" / "missing" / "test_both_0.70.npy").is_file()
    assert not (copy / "data" / "prepared" / "vocab.txt").exists()  # vocab_size 0: the backbone's own vocabulary
    lock = yaml.safe_load((copy / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"generate", "prepare"}

    second = _run(["dvc", "repro", "prepare"], copy, env)
    assert "Running stage" not in second
    assert "Data and pipelines are up to date" in second or "didn't change" in second
    assert _run(["dvc", "status", "prepare"], copy, env).strip().endswith("Data and pipelines are up to date.")

    params["prepare"]["missing_seed"] = 1
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = _run(["dvc", "repro", "prepare"], copy, env)
    assert "Running stage 'prepare'" in third and "Running stage 'generate'" not in third
    assert json.loads((copy / "data" / "prepared" / "manifest.json").read_text())["missing"]["seed"] == 1
