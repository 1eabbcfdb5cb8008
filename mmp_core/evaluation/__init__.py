"""Evaluation: an adapter turned into numbers, and numbers compared.

Read in this order: `metrics` (the dataset metrics, the label-prior baseline, the "does it learn?" check),
`evaluate` (`mmp evaluate`: the test split once per missing variant, every scenario of the grid assembled from
the variants), `results` (the metrics.json / grid.tsv / curves/ format), `seeds` (`mmp aggregate`: per-seed
results folded into mean ± sd), `paired` (paired intervals of two methods over seeds and test samples).

Names are imported on first use: training imports `metrics` without importing the rest.
"""

_LAZY = {
    "compute_metrics": "mmp_core.evaluation.metrics",
    "evaluate_adapter": "mmp_core.evaluation.evaluate",
    "write_results": "mmp_core.evaluation.results",
    "aggregate_method": "mmp_core.evaluation.seeds",
    "paired_table": "mmp_core.evaluation.paired",
    "format_paired": "mmp_core.evaluation.paired",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["aggregate_method", "compute_metrics", "evaluate_adapter", "format_paired", "paired_table", "write_results"]
