"""Isolated workspaces for one DVC stage: the project's files at one git commit, checked out beside the project
(a git worktree on this machine, a clone on a worker), where a stage runs without taking the project's DVC lock.
The run's dvc.lock entry comes back with it: the project writes it into its own dvc.lock and checks the outputs out
(or fetches them from the DVC remote) by its hashes, so the stage never runs again there. (By DVC's run-cache alone,
a committed dvc.lock whose outputs are in no cache, as on a fresh clone, would win, and DVC would run it again.)

Nothing here talks to Prefect: the flows run DVC in these workspaces and decide what runs where.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import yaml

from mmp_core.publishing.publish import git_commit

# What a workspace takes from the project beside the commit: the DAG's state (outputs of stages that ran since
# the last commit are recorded only there).
LOCK_FILE = "dvc.lock"


def _git(repo: Path, *args: str, env: dict | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env)
    if result.returncode:
        raise ValueError(f"{repo}: `git {' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.rstrip("\n")  # porcelain lines start with a meaningful space


def working_tree_changes(repo: Path, dvc_bookkeeping: bool = False) -> list[str]:
    """Paths whose working-tree state differs from HEAD (modified, staged, new and not ignored). With
    `dvc_bookkeeping`, without what running the pipeline writes: dvc.lock, .gitignore files and the stages'
    own outputs (uncached ones are visible to git)."""
    lines = _git(repo, "status", "--porcelain", "--untracked-files=all").splitlines()
    paths = [line[3:].split(" -> ")[-1].strip('"') for line in lines]
    if dvc_bookkeeping:
        outputs = dvc_output_paths(repo)
        paths = [
            p for p in paths
            if p != LOCK_FILE and Path(p).name != ".gitignore"
            and not any(p == out or p.startswith(out + "/") for out in outputs)
        ]  # fmt: skip
    return paths


def dvc_output_paths(repo: Path) -> list[str]:
    """Every output of the project's DVC stages (outs, metrics, plots), relative to the project, POSIX style."""
    from dvc.repo import Repo

    repo = Path(repo).resolve()
    with contextlib.chdir(repo), Repo(str(repo)) as project:  # DVC resolves paths against the working directory
        return sorted(
            Path(out.fs_path).resolve().relative_to(repo).as_posix()
            for stage in project.index.stages
            for out in stage.outs
        )


def snapshot_commit(repo: Path) -> str:
    """A commit of the project's working tree as it is now: tracked changes and new files (.gitignore respected).

    Made with a temporary index, so the user's index, branch, stash and working tree stay as they are; HEAD
    itself when nothing changed. Local workspaces check this commit out, so a stage sees exactly the files the
    project has, committed or not."""
    repo = Path(repo)
    head = git_commit(repo)
    if head and not working_tree_changes(repo):
        return head
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "GIT_INDEX_FILE": str(Path(scratch) / "index")}
        if head:
            _git(repo, "read-tree", head, env=env)
        _git(repo, "add", "-A", env=env)
        tree = _git(repo, "write-tree", env=env)
    identity = ["-c", "user.name=mmp", "-c", "user.email=mmp@localhost"]  # the snapshot is never pushed anywhere
    parents = ["-p", head] if head else []
    return _git(repo, *identity, "commit-tree", tree, *parents, "-m", "mmp: working tree for isolated stage runs")


def head_commit(repo: Path) -> str:
    commit = git_commit(repo)
    if commit is None:
        raise ValueError(f"{repo}: no commit yet: workers check out the flow's commit")
    return commit


def default_git_url(repo: Path) -> str:
    """Where workers clone the project from: its `origin` remote, else its path (a worker on this machine or a
    shared filesystem)."""
    origin = subprocess.run(["git", "remote", "get-url", "origin"], cwd=repo, capture_output=True, text=True)
    return origin.stdout.strip() if origin.returncode == 0 else str(Path(repo).resolve())


def _new_workspace(root: Path, label: str) -> Path:
    safe_label = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)
    return root / f"{safe_label}-{uuid.uuid4().hex[:8]}"


def _use_dvc_cache(workspace: Path, cache: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "dvc", "cache", "dir", "--local", str(cache)], cwd=workspace, check=True,
        capture_output=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )  # fmt: skip


def dvc_cache_dir(repo: Path) -> Path:
    """The project's local DVC cache (`.dvc/cache` unless `dvc cache dir` moved it)."""
    from dvc.repo import Repo

    with contextlib.chdir(repo), Repo(str(repo)) as project:  # DVC resolves paths against the working directory
        return Path(project.cache.local_cache_dir).resolve()


@contextlib.contextmanager
def stage_worktree(repo: Path, commit: str, lock_text: str, label: str = "stage") -> Iterator[Path]:
    """A git worktree of `commit` that shares the project's DVC cache, with the project's current dvc.lock.

    It lives under `.dvc/tmp/workspaces/` (ignored by git and DVC) and is removed afterwards, also on failure.
    Its `.checkpoints` is the project's, so an interrupted training stage resumes wherever it runs next."""
    repo = Path(repo).resolve()
    cache = dvc_cache_dir(repo)
    root = repo / ".dvc" / "tmp" / "workspaces"
    root.mkdir(parents=True, exist_ok=True)
    workspace = _new_workspace(root, label)
    _git(repo, "worktree", "add", "--detach", "--quiet", str(workspace), commit)
    try:
        (workspace / LOCK_FILE).write_text(lock_text)
        local_config = repo / ".dvc" / "config.local"  # the project's own remote settings, if any
        if local_config.is_file():
            shutil.copyfile(local_config, workspace / ".dvc" / "config.local")
        _use_dvc_cache(workspace, cache)
        checkpoints = repo / ".checkpoints"
        checkpoints.mkdir(exist_ok=True)
        (workspace / ".checkpoints").symlink_to(checkpoints, target_is_directory=True)
        yield workspace
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(workspace)], cwd=repo, capture_output=True)
        shutil.rmtree(workspace, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True)


@contextlib.contextmanager
def stage_clone(git_url: str, commit: str, lock_text: str, cache_dir: Path, root: Path, label: str = "stage"):
    """A fresh clone of `git_url` at `commit` with `lock_text` as its dvc.lock and `cache_dir` as its DVC cache
    (one per worker: what one stage pulled, the next finds). Its DVC remote is the one the commit configures;
    credentials come from the worker's environment. Removed afterwards, also on failure."""
    root, cache_dir = Path(root).resolve(), Path(cache_dir).resolve()  # $MMP_CACHE_DIR may be relative
    root.mkdir(parents=True, exist_ok=True)
    workspace = _new_workspace(root, label)
    try:
        _git(root, "clone", "--quiet", "--no-checkout", git_url, str(workspace))
        try:
            _git(workspace, "checkout", "--quiet", "--detach", commit)
        except ValueError as error:
            raise ValueError(
                f"commit {commit[:12]} is not in {git_url}: push it there, workers check out the flow's commit"
            ) from error
        (workspace / LOCK_FILE).write_text(lock_text)
        cache_dir.mkdir(parents=True, exist_ok=True)
        _use_dvc_cache(workspace, cache_dir)
        yield workspace
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def threads_per_stage(max_parallel: int) -> int:
    """CPU threads for each of `max_parallel` stages running at once on this machine (torch's intra-op pool):
    they share the cores instead of oversubscribing them."""
    return max(1, (os.cpu_count() or 1) // max(1, max_parallel))


def lock_entry(workspace: Path, stage: str) -> dict:
    """`stage`'s entry in the dvc.lock of `workspace` (after its run there: the hashes of what it made)."""
    lock = yaml.safe_load((Path(workspace) / LOCK_FILE).read_text()) or {}
    entry = (lock.get("stages") or {}).get(stage)
    if not entry:
        raise ValueError(f"{workspace}: its dvc.lock has no entry for stage {stage!r} after the stage ran")
    return entry


def write_lock_entry(repo: Path, stage: str, entry: dict) -> None:
    """`entry` as `stage`'s entry of the project's dvc.lock, every other entry as it was (as DVC writes it)."""
    from dvc.utils.serialize import modify_yaml

    with modify_yaml(Path(repo) / LOCK_FILE) as data:
        if not data:
            data.update({"schema": "2.0"})  # first, as DVC writes it
        data["stages"] = data.get("stages") or {}
        data["stages"][stage] = entry


def lock_entry_markdown(stage: str, entry: dict) -> str:
    """A stage run's dvc.lock entry as markdown (a worker's Prefect artifact, read back by `lock_entry_from_markdown`)."""
    text = yaml.safe_dump({stage: entry}, sort_keys=False)
    return f"dvc.lock entry of `{stage}`, the outputs this run made:\n\n```yaml\n{text}```\n"


def lock_entry_from_markdown(stage: str, markdown: str) -> dict:
    found = re.search(r"```yaml\n(.*?)```", markdown, re.DOTALL)
    entry = (yaml.safe_load(found.group(1)) or {}).get(stage) if found else None
    if not entry:
        raise ValueError(f"no dvc.lock entry of stage {stage!r} in: {markdown[:200]!r}")
    return entry
