"""Every module a stage's code imports is a dependency of that stage in dvc.yaml: a code change always reruns
what it affects (DVC would otherwise call stale results up to date)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# The module that does each stage's work (what its `mmp ...` command calls).
STAGE_MODULES = {
    "generate": "mmp_core/data/generate.py",
    "prepare": "mmp_core/data/convert.py",
    "train": "mmp_core/training/train.py",
    "evaluate": "mmp_core/evaluation/evaluate.py",
    "aggregate": "mmp_core/evaluation/seeds.py",
}
# Imported for types or helpers that cannot change a stage's output.
NEUTRAL = {"mmp_core/__init__.py"}


def _module_file(name: str) -> Path | None:
    base = REPO / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(entry: str) -> set[str]:
    """Every mmp_core file `entry` imports, directly or not (imports inside functions included)."""
    seen, todo = set(), [REPO / entry]
    while todo:
        path = todo.pop()
        relative = path.relative_to(REPO).as_posix()
        if relative in seen:
            continue
        seen.add(relative)
        package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:  # a relative import: resolved against this file's package
                    parts = package.split(".")
                    module = ".".join([*parts[: len(parts) - node.level + 1], module]).strip(".")
                names = [module] + [f"{module}.{alias.name}" for alias in node.names]
            for name in names:
                if name.startswith("mmp_core") and (found := _module_file(name)) is not None:
                    todo.append(found)
    return seen - NEUTRAL


def stage_deps(stage: str) -> list[str]:
    definition = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    body = definition.get("do", definition)
    return [d for d in body["deps"] if d.startswith("mmp_core")]


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_every_imported_module_is_a_dependency(stage):
    deps = stage_deps(stage)
    uncovered = sorted(
        f
        for f in imported_files(STAGE_MODULES[stage])
        if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)
    )
    assert not uncovered, f"dvc.yaml stage {stage!r} does not depend on {uncovered}"
