"""The files of a method's results: `metrics.json` (DVC metrics), `grid.tsv` and `curves/<type>.tsv` (what
dvc.yaml's robustness plots read). Written by evaluation and by the fold over seeds."""

from __future__ import annotations

from pathlib import Path

from mmp_core.fileio import atomic_write_json, atomic_write_text


def write_results(document: dict, out_dir: str | Path) -> None:
    """`metrics.json` (DVC metrics), `grid.tsv` (one row per cell) and `curves/<type>.tsv` (missing_rate,
    score: the primary metric; what dvc.yaml's robustness plots read), written atomically."""
    out_dir = Path(out_dir)
    metric_names = [k for k in document["grid"][0] if k not in ("missing_type", "missing_rate")]
    lines = ["\t".join(["method", "missing_type", "missing_rate", *metric_names])]
    for row in document["grid"]:
        values = [f"{row[name]:.6f}" for name in metric_names]
        lines.append("\t".join([document["method"], row["missing_type"], f"{row['missing_rate']:.2f}", *values]))
    atomic_write_text(out_dir / "grid.tsv", "\n".join(lines) + "\n")
    metric = document["primary_metric"]
    for missing_type in dict.fromkeys(row["missing_type"] for row in document["grid"]):
        rows = sorted((r["missing_rate"], r[metric]) for r in document["grid"] if r["missing_type"] == missing_type)
        text = "missing_rate\tscore\n" + "".join(f"{rate:.2f}\t{value:.6f}\n" for rate, value in rows)
        atomic_write_text(out_dir / "curves" / f"{missing_type}.tsv", text)
    atomic_write_json(out_dir / "metrics.json", document)
