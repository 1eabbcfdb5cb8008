"""Every module a stage's code imports is a dependency of that stage in dvc.yaml: a code change always reruns
what it affects (DVC would otherwise call stale results up to date)."""

from __future__ import annotations

import pytest
import yaml

from tests.import_graph import REPO, enclosing_inits, file_imports, read_sources

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


def imported_files(entry: str) -> set[str]:
    """Every mmp_core file `entry` imports, directly or not (imports inside functions included), and the
    `__init__.py` of every package on the way (importing a module runs them). A face's `_LAZY` names run only
    when asked for, and an import that asks for one is followed to its module."""
    sources = read_sources()
    seen, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += enclosing_inits(path, sources)
        todo += [item.target for item in file_imports(path, sources) if not item.on_demand]
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
