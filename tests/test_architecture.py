"""The house's rule, checked on the code itself: imports inside mmp_core point one way, down the layers, and
never in a circle (imports inside functions count; `if TYPE_CHECKING:` ones, which never run, do not)."""

from __future__ import annotations

import ast
from fnmatch import fnmatch

import networkx as nx

from tests.test_dvc_deps import REPO, _module_file

# Bottom to top; a module may import its own layer and the ones below, never one above.
LAYERS = (
    ("ground", ("fileio.py", "progress.py", "s3.py", "tasks.py", "config.py", "params_file.py", "scenarios.py", "evaluation/metrics.py", "evaluation/results.py",
                "evaluation/paired.py", "training/budget.py", "pretraining/model_card.py", "pretraining/checks.py", "model/precision.py", "model/hub.py", "model/backbone.py", "model/prompts/*", "data/vocab.py", "__init__.py", "model/__init__.py", "evaluation/__init__.py", "training/__init__.py", "pretraining/__init__.py")),
    ("data", ("data/*",)),
    ("model stages", ("model/loading.py", "model/inference.py", "model/features.py", "training/deepspeed_setup.py", "training/checkpoints.py", "pretraining/probe.py", "pretraining/data.py", "pretraining/model.py", "pretraining/init.py", "pretraining/checkpoints.py", "pretraining/pretrain.py", "training/train.py", "evaluation/evaluate.py", "evaluation/seeds.py")),
    ("publishing", ("storage/artifact_store.py", "storage/local_store.py", "storage/s3_store.py", "storage/locations.py", "storage/__init__.py", "publishing/preflight.py", "publishing/promotion.py", "publishing/report.py",
                    "publishing/dashboard.py", "publishing/publish.py", "publishing/workspaces.py", "publishing/__init__.py")),
    ("interfaces", ("missing.py", "predict/inputs.py", "predict/predictor.py", "predict/__init__.py", "cli/*")),
)  # fmt: skip


def layer_of(relative: str) -> int:
    name = relative.removeprefix("mmp_core/")
    matches = [i for i, (_, patterns) in enumerate(LAYERS) for p in patterns if fnmatch(name, p)]
    assert matches, f"{relative} is in no layer: add it to tests/test_architecture.py's LAYERS"
    return min(matches)


def _runtime_nodes(node: ast.AST):
    """Every node except the bodies of `if TYPE_CHECKING:` blocks."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
            continue
        yield from _runtime_nodes(child)


def import_graph() -> nx.DiGraph:
    graph = nx.DiGraph()
    for path in sorted((REPO / "mmp_core").rglob("*.py")):
        source = path.relative_to(REPO).as_posix()
        graph.add_node(source)
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("mmp_core") and (found := _module_file(name)) is not None:
                    target = found.relative_to(REPO).as_posix()
                    if target != source:
                        graph.add_edge(source, target)
    return graph


def test_no_import_circles():
    graph = import_graph()
    # A package's __init__ re-exporting its modules is not a circle of logic.
    graph.remove_edges_from([(a, b) for a, b in list(graph.edges) if a.endswith("__init__.py")])
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import circles: {cycles}"


def test_imports_point_down_the_layers():
    upward = [
        f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
        for a, b in import_graph().edges
        if layer_of(b) > layer_of(a) and not a.endswith("__init__.py")
    ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)
