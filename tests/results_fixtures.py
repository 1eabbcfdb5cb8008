"""metrics.json documents (the evaluation's output format) built from a per-cell value function."""

from __future__ import annotations

from collections.abc import Callable

TYPES = ("text", "image", "both")
RATES = [round(0.1 * i, 1) for i in range(11)]


def metrics_document(method: str, value: Callable[[str, float], float], micro_offset: float | None = 0.05) -> dict:
    """One method's metrics.json: f1_macro = value(type, rate) in every cell (f1_micro offset from it)."""
    grid = []
    for missing_type in TYPES:
        for rate in RATES:
            cell = {"missing_type": missing_type, "missing_rate": rate, "f1_macro": round(value(missing_type, rate), 6)}
            if micro_offset is not None:
                cell["f1_micro"] = round(cell["f1_macro"] + micro_offset, 6)
            grid.append(cell)
    head = next(c for c in grid if c["missing_type"] == "both" and c["missing_rate"] == 0.7)
    return {
        "dataset": "embedded",
        "method": method,
        "primary_metric": "f1_macro",
        "train_setting": {"missing_type": "both", "missing_rate": 0.7},
        "headline": dict(head),
        "grid": grid,
    }
