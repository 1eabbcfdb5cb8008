"""The house's rule, checked on the code itself (docs/architecture.md).

mmp_core is a ground floor of top-level modules and one package per stage of the pipeline, in this order:

    ground < data < model < evaluation < {training, pretraining} < storage < {publishing, predict} < cli

- Package level: a package imports only itself, the ground floor and the packages before it; two packages of one
  rank (training and pretraining, publishing and predict) never import each other; so no two packages know each
  other. Every import counts: inside functions, under `if TYPE_CHECKING:`, and modules named in strings.
- Module level: no circle of imports between modules that run (a type-only import may point back inside a
  package: data/missing.py names data/prepared.py's PreparedDataset, which imports it).
- Old import paths kept for users (COMPAT) may import anything and are imported by nothing inside mmp_core.
- A package's face (its `__init__`) never exports a name that is also one of its modules, and every name its
  `_LAZY` table promises exists.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping

import networkx as nx

from tests.import_graph import Import, all_imports, lazy_names, module_file, read_sources

# Bottom to top: a package may import the ranks below its own, never its own rank's other packages or above.
RANKS = (
    ("ground",),
    ("data",),
    ("model",),
    ("evaluation",),
    ("training", "pretraining"),
    ("storage",),
    ("publishing", "predict"),
    ("cli",),
)
# The ground floor: top-level modules every stage may use. A new top-level module is a decision: list it here.
GROUND = ("__init__.py", "config.py", "fileio.py", "params_file.py", "progress.py", "s3.py", "scenarios.py", "tasks.py")
# Old import paths kept as re-exports for code written against them; nothing inside mmp_core may import them.
COMPAT = ("missing.py",)
RANK = {package: i for i, packages in enumerate(RANKS) for package in packages} | {"compat": len(RANKS)}


def package_of(path: str) -> str:
    """'mmp_core/model/prompts/model.py' -> 'model'; 'mmp_core/config.py' -> 'ground'."""
    parts = path.split("/")
    if len(parts) == 2:
        if parts[1] in GROUND:
            return "ground"
        if parts[1] in COMPAT:
            return "compat"
        raise AssertionError(f"{path} is a top-level module in neither GROUND nor COMPAT of tests/test_architecture.py")
    assert parts[1] in RANK, f"{path} is in package {parts[1]!r}, which is in no rank of tests/test_architecture.py"
    return parts[1]


def package_violations(imports: Iterable[Import]) -> list[str]:
    """Every import that breaks the package rule, and every pair of packages that know each other both ways."""
    problems, between = [], {}
    for item in imports:
        source, target = package_of(item.source), package_of(item.target)
        if source == target:
            continue
        between.setdefault((source, target), item)
        if target == "compat":
            problems.append(f"{item}: {item.target} is an old import path kept for users, never imported inside")
        elif RANK[target] > RANK[source]:
            problems.append(f"{item}: {source} imports {target}, which comes after it (upward)")
        elif RANK[target] == RANK[source]:
            problems.append(f"{item}: {source} imports {target}, its sibling (neither may know the other)")
    for (source, target), item in sorted(between.items()):
        if source < target and (target, source) in between:
            problems.append(f"{source} and {target} import each other: {item}; {between[target, source]}")
    return problems


def module_cycles(imports: Iterable[Import]) -> list[list[str]]:
    """Circles of runtime imports between modules (a face's `__init__` re-exporting its modules is not one)."""
    graph = nx.DiGraph()
    graph.add_edges_from(
        (item.source, item.target) for item in imports if not item.type_only and not item.source.endswith("__init__.py")
    )
    return list(nx.simple_cycles(graph))


def _defined_names(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            names |= {e.id for t in node.targets if isinstance(t, ast.Tuple) for e in t.elts if isinstance(e, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def face_problems(sources: Mapping[str, str]) -> list[str]:
    problems = []
    for path, source in sources.items():
        if not path.endswith("/__init__.py") or path.count("/") < 2:
            continue
        folder = path.removesuffix("__init__.py")
        modules = {
            p.removeprefix(folder).removesuffix(".py").removesuffix("/__init__")
            for p in sources
            if p.startswith(folder) and p != path and p.removeprefix(folder).count("/") <= 1
            and (p.endswith("/__init__.py") or "/" not in p.removeprefix(folder))
        }  # fmt: skip
        lazy = lazy_names(source)
        for name in sorted((_defined_names(source) | set(lazy)) & modules):
            problems.append(f"{path} exports {name!r}, which is also its module {folder}{name}: one hides the other")
        for name, module in sorted(lazy.items()):
            target = module_file(module, sources)
            if target is None:
                problems.append(f"{path}: _LAZY[{name!r}] names {module}, which is no module")
            elif name not in _defined_names(sources[target]):
                problems.append(f"{path}: _LAZY[{name!r}] names {module}, which defines no {name}")
    return problems


def test_imports_point_down_the_packages():
    problems = package_violations(all_imports(read_sources()))
    assert not problems, "imports against the package order:\n" + "\n".join(problems)


def test_no_import_circles_between_modules():
    cycles = module_cycles(all_imports(read_sources()))
    assert not cycles, f"import circles: {cycles}"


def test_faces_neither_hide_modules_nor_promise_missing_names():
    problems = face_problems(read_sources())
    assert not problems, "\n".join(problems)


def test_the_checker_catches_what_it_forbids():
    """Small made-up packages, each breaking the rule one way; the checker names every one, and none in a tree
    that keeps it."""
    clean = {
        "mmp_core/__init__.py": "",
        "mmp_core/fileio.py": "import os\n",
        "mmp_core/data/__init__.py": '_LAZY = {"Table": "mmp_core.data.tables"}\n',
        "mmp_core/data/tables.py": (
            "from typing import TYPE_CHECKING\nfrom mmp_core.fileio import x\n"
            "if TYPE_CHECKING:\n    from mmp_core.data.prepared import Prepared\nclass Table: ...\n"
        ),
        "mmp_core/data/prepared.py": "from mmp_core.data.tables import Table\nclass Prepared: ...\n",
        "mmp_core/model/__init__.py": "",
        "mmp_core/model/backbone.py": "from mmp_core.data import Table\n",
        "mmp_core/training/__init__.py": "",
        "mmp_core/training/train.py": "def train():\n    from mmp_core.model.backbone import load\n",
        "mmp_core/pretraining/__init__.py": "",
        "mmp_core/pretraining/pretrain.py": "import mmp_core.model.backbone\n",
        "mmp_core/cli/__init__.py": "",
        "mmp_core/cli/app.py": 'MODULES = ("mmp_core.training.train", "mmp_core.pretraining.pretrain")\n',
        "mmp_core/missing.py": "from mmp_core.data.tables import *\n",
    }
    imports = all_imports(clean)
    assert package_violations(imports) == [] and module_cycles(imports) == []
    lazy = next(i for i in imports if i.source == "mmp_core/model/backbone.py")
    assert lazy.target == "mmp_core/data/tables.py"  # `from a face import name` reaches the module behind it

    def problems(path: str, source: str) -> list[str]:
        return package_violations(all_imports({**clean, path: source}))

    upward = problems("mmp_core/data/tables.py", "from mmp_core.model.backbone import load\n")
    assert len(upward) == 2 and "data imports model, which comes after it (upward)" in upward[0]
    assert "data and model import each other" in upward[1]  # model/backbone.py imports data
    in_function = problems("mmp_core/model/backbone.py", "def f():\n    from mmp_core.cli import app\n")
    assert len(in_function) == 1 and "model imports cli, which comes after it" in in_function[0]
    type_only = problems(
        "mmp_core/data/prepared.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mmp_core.model.backbone import Backbone\n",
    )
    assert len(type_only) == 2 and "(under TYPE_CHECKING)" in type_only[0] and "upward" in type_only[0]
    sibling = problems("mmp_core/training/train.py", "from mmp_core.pretraining.pretrain import pretrain\n")
    assert len(sibling) == 1 and "training imports pretraining, its sibling" in sibling[0]
    in_string = problems("mmp_core/data/prepared.py", 'import_module("mmp_core.training.train")\n')
    assert len(in_string) == 1 and "data imports training" in in_string[0]
    relative = problems("mmp_core/data/tables.py", "from ..model import backbone\n")
    assert len(relative) == 2 and "data imports model" in relative[0]
    compat = problems("mmp_core/cli/app.py", "from mmp_core.missing import Table\n")
    assert len(compat) == 1 and "old import path kept for users" in compat[0]
    # A circle of modules that run is caught; the type-only one back inside data/ above is not a circle.
    circle = {**clean, "mmp_core/data/tables.py": "from mmp_core.data.prepared import Prepared\n"}
    assert module_cycles(all_imports(circle)) != []
    # Faces: a name that hides a module, and a lazy name its module lacks.
    faces = face_problems(
        {**clean, "mmp_core/training/__init__.py": '_LAZY = {"train": "mmp_core.training.train", "fit": "x"}\n'}
    )
    assert any("exports 'train', which is also its module" in p for p in faces)
    assert any("_LAZY['fit'] names x, which is no module" in p for p in faces)
