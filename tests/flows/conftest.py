from __future__ import annotations

import os
from pathlib import Path

import pytest
from filelock import FileLock

from tests.flows.projects import make_project, pipeline


@pytest.fixture(scope="session")
def first_run(tmp_path_factory) -> Path:
    """The tiny project after its first whole run (`flows.pipeline`, every stage in the project, one thread
    each, into a local store): made once per test session, also when pytest-xdist runs the session in several
    processes (the first one to get here makes it, the others wait for it). Read it; copy it to change it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this session
    root, done = base / "first-run", base / "first-run.done"
    with FileLock(str(base / "first-run.lock")):
        if not done.exists():
            project = make_project(root / "project", "http://127.0.0.1:9")
            log = pipeline(project, root / "store")
            assert "DVC stages: 11 ran" in log and "worktree" not in log, log[-3000:]
            done.touch()
    return root / "project"
