"""Results over training seeds: one method's per-seed evaluations folded into mean ± standard deviation.

The pipeline trains and evaluates every method once per seed of params.yaml's `seeds` (DVC stages
`train@<method>-<seed>`, `evaluate@<method>-<seed>`, writing `models/<method>/seeds/<seed>/` and
`results/<method>/seeds/<seed>/`). `mmp aggregate` then writes `results/<method>/metrics.json` in the same
layout as a single evaluation, every metric the mean over seeds, plus:

- `seeds`: the seeds folded in; `headline_sd` and `grid_sd`: the sample standard deviation of every metric
  (0 for one seed), so a difference between methods can be read against the seed noise;
- `per_seed`: each seed's headline value, its best validation score and its sanity verdict;
- `per_seed_grid`: {seed: the primary metric of every grid cell, in grid order}: what paired comparisons of two
  methods seed by seed read (mmp_core.evaluation.paired.paired_table);
- `adapter_seed`: the seed whose adapter is published for the method — the one with the best *validation*
  score (model selection never looks at the test split);
- `sanity`: the published seed's check against the label prior, plus a warning per other seed that failed it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mmp_core.evaluation.results import write_results

SEEDS_DIR = "seeds"
_CELL_KEYS = ("missing_type", "missing_rate")


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    sd = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return float(array.mean()), sd


def _fold(rows: Sequence[Mapping]) -> tuple[dict, dict]:
    """(mean row, sd row) of the same cell across seeds."""
    first = rows[0]
    mean, sd = {k: first[k] for k in _CELL_KEYS if k in first}, {k: first[k] for k in _CELL_KEYS if k in first}
    for key, value in first.items():
        if key in _CELL_KEYS or not isinstance(value, int | float):
            continue
        values = [row[key] for row in rows]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            mean[key] = sd[key] = math.nan
        else:
            mean[key], sd[key] = _mean_sd(values)
    return mean, sd


def aggregate_documents(documents: Mapping[int, dict], train_summaries: Mapping[int, dict]) -> dict:
    """Fold per-seed evaluation documents (`metrics.json` of `mmp evaluate`) into one.

    Args:
        documents: {seed: metrics.json document}, all of the same method, dataset and grid.
        train_summaries: {seed: train_summary.json}: the best validation score picks the published adapter.
    """
    if not documents:
        raise ValueError("no per-seed results to aggregate")
    seeds = sorted(documents)
    first = documents[seeds[0]]
    for seed in seeds[1:]:
        other = documents[seed]
        for key in ("method", "dataset", "task", "primary_metric", "train_setting"):
            if other.get(key) != first.get(key):
                raise ValueError(
                    f"seed {seed}: {key} {other.get(key)!r} differs from seed {seeds[0]}'s {first.get(key)!r}"
                )
        cells = [tuple(row[k] for k in _CELL_KEYS) for row in other["grid"]]
        if cells != [tuple(row[k] for k in _CELL_KEYS) for row in first["grid"]]:
            raise ValueError(f"seed {seed}: its scenario grid differs from seed {seeds[0]}'s")
    metric = first["primary_metric"]
    val_key = f"best_val_{metric}"
    missing = [seed for seed in seeds if val_key not in train_summaries.get(seed, {})]
    if missing:
        raise ValueError(f"no training summary with {val_key} for seed(s) {missing}")

    grid, grid_sd = zip(
        *(_fold([documents[s]["grid"][i] for s in seeds]) for i in range(len(first["grid"]))), strict=True
    )
    headline, headline_sd = _fold([documents[s]["headline"] for s in seeds])
    adapter_seed = max(seeds, key=lambda s: (train_summaries[s][val_key], -s))
    per_seed = {
        str(s): {
            "headline": documents[s]["headline"][metric],
            val_key: train_summaries[s][val_key],
            "sanity": documents[s].get("sanity"),
        }
        for s in seeds
    }
    per_seed_grid = {str(s): [row[metric] for row in documents[s]["grid"]] for s in seeds}
    sanity = dict(documents[adapter_seed].get("sanity") or {})
    if sanity:
        others = [
            f"seed {s}: {warning}"
            for s in seeds
            if s != adapter_seed
            for warning in (documents[s].get("sanity") or {}).get("warnings", [])
        ]
        sanity["warnings"] = [*sanity.get("warnings", []), *others]
    return {
        **{k: v for k, v in first.items() if k not in ("headline", "grid", "sanity")},
        "headline": headline,
        "headline_sd": headline_sd,
        "grid": list(grid),
        "grid_sd": list(grid_sd),
        "seeds": seeds,
        "per_seed": per_seed,
        "per_seed_grid": per_seed_grid,
        "adapter_seed": adapter_seed,
        "sanity": sanity,
    }


def _read(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no {what}; run `dvc repro` (or mmp train/evaluate for this seed)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def aggregate_method(results_dir: str | Path, models_dir: str | Path, seeds: Sequence[int]) -> dict:
    """Read `<results_dir>/seeds/<seed>/metrics.json` and `<models_dir>/seeds/<seed>/train_summary.json` for
    each seed, write the folded `metrics.json`, `grid.tsv` and `curves/` into `results_dir`; returns it."""
    results_dir, models_dir = Path(results_dir), Path(models_dir)
    if not seeds:
        raise ValueError("seeds must name at least one training seed")
    documents = {s: _read(results_dir / SEEDS_DIR / str(s) / "metrics.json", "evaluation results") for s in seeds}
    summaries = {s: _read(models_dir / SEEDS_DIR / str(s) / "train_summary.json", "training summary") for s in seeds}
    document = aggregate_documents(documents, summaries)
    write_results(document, results_dir)
    return document


def has_spread(seeds: Sequence) -> bool:
    """Whether a mean over `seeds` has a standard deviation to show: two seeds or more. The sd `aggregate` writes
    for one seed (0) is no spread: shown nowhere, and no lead is judged by it."""
    return len(seeds) > 1


def format_cell(mean: float | None, sd: float | None, digits: int = 3, seeds: Sequence | None = None) -> str:
    """`0.712 ± 0.008` (just the mean where there is no sd, or `seeds` names fewer than two: `has_spread`)."""
    if seeds is not None and not has_spread(seeds):
        sd = None
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"
