"""Fan-out: the pipeline's independent stages at once, in git worktrees on this machine and on two Prefect
workers through an S3 DVC remote, end with the same adapters and metrics as the in-process run. Every run uses
one CPU thread per stage, the setting in which training is bitwise reproducible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_flows import flow_env, make_project

pytestmark = pytest.mark.slow

METHODS = ("baseline", "attention", "input")


def pipeline(project: Path, store: Path, *extra: str, env: dict | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--repo", str(project), "--store", str(store),
         "--no-require-learning", *extra],
        cwd=project, env=env or {**flow_env(project.parent), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return result.stdout + result.stderr


def outcome(project: Path) -> dict:
    """What a user keeps from a run: each method's adapter bytes and its published metrics and grid."""
    found = {}
    for method in METHODS:
        adapter = project / "models" / method / "seeds" / "0" / "adapter" / "adapter_model.safetensors"
        found[method] = {
            "adapter": adapter.read_bytes(),
            "metrics": json.loads((project / "results" / method / "metrics.json").read_text()),
            "grid": (project / "results" / method / "grid.tsv").read_text(),
        }
    return found


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> dict:
    """The in-process pipeline, one stage after the other, in the project itself."""
    root = tmp_path_factory.mktemp("sequential")
    project = make_project(root / "project", "http://127.0.0.1:9")
    log = pipeline(project, root / "store")
    assert "worktree" not in log
    return outcome(project)


def test_local_fan_out_runs_stages_in_worktrees_and_matches_the_sequential_run(tmp_path, sequential):
    project = make_project(tmp_path / "project", "http://127.0.0.1:9")
    (project / "NOTES.md").write_text("an uncommitted file: the worktrees see the working tree as it is\n")
    log = pipeline(project, tmp_path / "store", "--max-parallel", "3")

    # The three trainings, then the three evaluations, ran in worktrees (one thread each) and were restored.
    for method in METHODS:
        for stage in (f"train@{method}-0", f"evaluate@{method}-0"):
            assert f"Task run '{stage} (worktree)' - Finished in state Completed" in log, log[-3000:]
            assert f"{stage}: ran in worktree (1 thread), restored into the project" in log
    assert "on worktree (1 thread): " in log
    assert outcome(project) == sequential, "fan-out changed an adapter or a metric"

    # No worktree is left behind, and the user's git state is untouched.
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=project, capture_output=True, text=True).stdout
    assert len(worktrees.splitlines()) == 1, worktrees
    assert not any((project / ".dvc" / "tmp" / "workspaces").iterdir())
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True).stdout
    assert "?? NOTES.md" in status
    assert subprocess.run(["git", "stash", "list"], cwd=project, capture_output=True, text=True).stdout == ""

    # Nothing changed: every stage skipped, none sent to a worktree.
    again = pipeline(project, tmp_path / "store", "--max-parallel", "3", "--always-run")
    assert "DVC stages: 0 ran, 11 skipped (up to date)" in again
    assert "(worktree)" not in again


def test_a_failing_stage_fails_the_flow_with_its_own_error_and_publishes_nothing(tmp_path):
    project = make_project(tmp_path / "project", "http://127.0.0.1:9")
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("prompt_length: 6", "prompt_length: -6"))
    result = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--repo", str(project), "--store", str(tmp_path / "store"),
         "--no-require-learning", "--max-parallel", "2"],
        cwd=project, env=flow_env(tmp_path), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-3000:]
    assert "prompt_length" in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("manifest.json"))
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=project, capture_output=True, text=True).stdout
    assert len(worktrees.splitlines()) == 1, worktrees
