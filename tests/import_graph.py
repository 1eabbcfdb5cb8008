"""What imports what inside mmp_core, read from the source and never executed: the graph that
tests/test_architecture.py (the house's rule) and tests/test_dvc_deps.py (each stage's code dependencies) check.

Every import counts: at the top of a module, inside a function, under `if TYPE_CHECKING:` (marked `type_only`),
relative ones, and a module named in a string (`importlib.import_module("mmp_core.cli.data")`, a package face's
`_LAZY` names). `from mmp_core.pkg import name` resolves to the module `name` when there is one, else to the
module a face's `_LAZY` maps `name` to, else to the package's `__init__.py`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mmp_core"


@dataclass(frozen=True)
class Import:
    source: str  # the importing file, relative to the repository ("mmp_core/data/arrow.py")
    target: str  # the imported file
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`: never runs, but the two modules still know each other
    on_demand: bool = False  # named in a face's `_LAZY`: runs only when the name is asked for (an import that
    # asks for it resolves to the module itself)

    def __str__(self) -> str:
        kind = " (under TYPE_CHECKING)" if self.type_only else ""
        return f"{self.source}:{self.line} imports {self.target}{kind}"


def read_sources(root: Path = REPO) -> dict[str, str]:
    """Every .py file of mmp_core: relative path -> source."""
    return {
        path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
        for path in sorted((root / PACKAGE).rglob("*.py"))
    }


def module_file(name: str, files: Mapping[str, str] | set[str]) -> str | None:
    """The file of dotted module `name` among `files`, or None."""
    base = name.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if candidate in files:
            return candidate
    return None


def lazy_names(source: str) -> dict[str, str]:
    """A package face's `_LAZY = {"name": "module", ...}` (names imported on first use), or {}."""
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return {
                key.value: value.value
                for key, value in zip(node.value.keys, node.value.values, strict=True)
                if isinstance(key, ast.Constant) and isinstance(value, ast.Constant)
            }
    return {}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(node: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node below `node`, with whether it sits under `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            yield child, type_only
            for item in child.body:
                yield item, True
                yield from _nodes(item, True)
            for item in child.orelse:
                yield item, type_only
                yield from _nodes(item, type_only)
            continue
        yield child, type_only
        yield from _nodes(child, type_only)


def _package_of(path: str) -> str:
    """The dotted package a file's relative imports start from."""
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1])


def file_imports(path: str, sources: Mapping[str, str]) -> list[Import]:
    """The mmp_core files `path` imports (see the module doc)."""
    found: list[Import] = []
    tree = ast.parse(sources[path])
    on_demand = {
        id(value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets)
        and isinstance(node.value, ast.Dict)
        for value in node.value.values
    }  # fmt: skip

    def add(name: str, node: ast.AST, type_only: bool, alias: str | None = None) -> None:
        if not name.startswith(PACKAGE):
            return
        target = None
        if alias is not None:
            target = module_file(f"{name}.{alias}", sources)
            if target is None and (face := module_file(name, sources)) and face.endswith("__init__.py"):
                lazy = lazy_names(sources[face]).get(alias)
                target = module_file(lazy, sources) if lazy else None
        target = target or module_file(name, sources)
        if target is not None and target != path:
            found.append(Import(path, target, node.lineno, type_only, id(node) in on_demand))

    for node, type_only in _nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node, type_only)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolved against this file's package
                parts = _package_of(path).split(".")
                module = ".".join([*parts[: len(parts) - node.level + 1], module]).strip(".")
            for alias in node.names:
                add(module, node, type_only, alias.name)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith(PACKAGE + ".")
            and module_file(node.value, sources)  # a module named in a string: importlib, a face's lazy names
        ):
            add(node.value, node, type_only)
    return found


def all_imports(sources: Mapping[str, str]) -> list[Import]:
    return [item for path in sources for item in file_imports(path, sources)]


def enclosing_inits(path: str, files: Mapping[str, str] | set[str]) -> list[str]:
    """The `__init__.py` of every package around `path`: importing a module runs them all."""
    parts = path.split("/")[:-1]
    inits = ["/".join(parts[:i]) + "/__init__.py" for i in range(1, len(parts) + 1)]
    return [init for init in inits if init in files and init != path]
