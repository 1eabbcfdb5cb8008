"""Paired statistics for comparing a method with the baseline on the same seeds and the same test samples.

Two sources of spread, two intervals: `seed_interval` over the per-seed differences (training noise; a Student-t
interval over seeds), `bootstrap_interval` over the test samples (which samples were drawn; a percentile bootstrap
that resamples the same sample indices for both methods). `contrast_interval` compares two such experiments, e.g.
a method's lead over the baseline on two backbones. `verdict` reads either interval against 0 and
`gap_recovered` says how much of the baseline -> full-finetune gap a method closes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
from scipy import stats

Verdict = Literal["ahead", "behind", "within"]


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")


def seed_interval(differences: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """Mean of the paired per-seed differences (method - baseline, seed by seed) with a Student-t interval.

    The interval is mean ± t((1 + confidence) / 2, n - 1) · s / sqrt(n), s the sample standard deviation (ddof 1).
    With one seed there is no spread to estimate: the interval is (None, None), and `verdict` reads it as "within".
    Equal differences give the degenerate interval [mean, mean].

    Returns:
        (mean, low, high).
    """
    _check_confidence(confidence)
    values = np.asarray(differences, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"differences must be a non-empty 1-D sequence, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"differences must be finite, got {values.tolist()}")
    mean = float(values.mean())
    n = values.size
    if n == 1:
        return mean, None, None
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return mean, mean - half, mean + half


def contrast_interval(
    first: Mapping, second: Mapping, confidence: float = 0.95
) -> tuple[float, float | None, float | None]:
    """first's mean paired difference minus second's, with a Welch interval: two experiments, each summarised by
    `seed_interval` (a cell of `paired_table`: "mean", "low", "high", "seeds").

    The two experiments are independent (e.g. the same method on two backbones: seed s of one has nothing to pair
    with seed s of the other), so the interval is Welch's: each sample standard deviation is recovered from its own
    t-interval's half-width, s = half · sqrt(n) / t((1 + confidence) / 2, n - 1), and the degrees of freedom are
    Welch-Satterthwaite's. Below two seeds on either side there is no interval: (difference, None, None).

    Returns:
        (difference, low, high).
    """
    _check_confidence(confidence)
    difference = float(first["mean"]) - float(second["mean"])
    if first["low"] is None or second["low"] is None:
        return difference, None, None
    quantile = (1.0 + confidence) / 2.0
    variances = []  # of each mean: s² / n
    for cell in (first, second):
        n = int(cell["seeds"])
        sd = (cell["high"] - cell["low"]) / 2.0 * math.sqrt(n) / stats.t.ppf(quantile, n - 1)
        variances.append((sd**2 / n, n))
    total = sum(v for v, _ in variances)
    if total == 0.0:
        return difference, difference, difference
    dof = total**2 / sum(v**2 / (n - 1) for v, n in variances)
    half = float(stats.t.ppf(quantile, dof) * math.sqrt(total))
    return difference, difference - half, difference + half


def bootstrap_interval(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    labels: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """metric(a) - metric(b) on the test samples, with a paired percentile bootstrap interval over them.

    Every resample draws N sample indices with replacement (all resamples' indices in one draw from
    `numpy.random.default_rng(seed)`) and scores both methods on the SAME indices, so the interval holds only the
    spread of the difference, not of each metric. A resample whose metric is undefined (NaN, e.g. AUROC on a
    resample with one class) is left out; if all are, the interval is NaN.

    A metric_fn with a `weighted(scores, labels, counts)` attribute ((R, N) times each sample was drawn -> (R,)
    metrics; `metric` gives one for accuracy, F1-macro and F1-micro) scores many resamples at once from per-class
    counts; any other metric_fn is called once per resample and method. Both ways see the same resamples.

    Args:
        metric_fn: (scores, labels) -> float, higher is better, e.g.
            `lambda s, y: compute_metrics(task, s, y)["f1_macro"]` (see `metric`).
        scores_a, scores_b: per-sample scores of the two methods, first axis the N samples: (N, C) or (N,).
        labels: (N,) class ids or (N, C) multi-hot, in the same sample order.
    Returns:
        (diff, low, high): the difference on all N samples and the (1 - confidence) / 2 and (1 + confidence) / 2
        percentiles of the resampled differences.
    """
    _check_confidence(confidence)
    if not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    scores_a, scores_b, labels = np.asarray(scores_a), np.asarray(scores_b), np.asarray(labels)
    n = len(labels)
    if n == 0:
        raise ValueError("cannot bootstrap an empty test set")
    if len(scores_a) != n or len(scores_b) != n:
        raise ValueError(
            f"scores and labels must cover the same samples: {len(scores_a)} and {len(scores_b)} scores, {n} labels"
        )
    if scores_a.shape != scores_b.shape:
        raise ValueError(f"the two methods' scores differ in shape: {scores_a.shape} vs {scores_b.shape}")
    diff = float(metric_fn(scores_a, labels)) - float(metric_fn(scores_b, labels))
    indices = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    weighted = getattr(metric_fn, "weighted", None)
    if weighted is not None:
        chunks = []
        for start in range(0, n_resamples, _CHUNK):  # (R, N) counts, a chunk of resamples at a time
            rows = indices[start : start + _CHUNK]
            flat = rows + n * np.arange(len(rows))[:, None]
            counts = np.bincount(flat.ravel(), minlength=len(rows) * n).reshape(len(rows), n).astype(float)
            chunks.append(weighted(scores_a, labels, counts) - weighted(scores_b, labels, counts))
        differences = np.concatenate(chunks)
    else:
        differences = np.fromiter(
            (float(metric_fn(scores_a[i], labels[i])) - float(metric_fn(scores_b[i], labels[i])) for i in indices),
            dtype=float,
            count=n_resamples,
        )
    differences = differences[~np.isnan(differences)]
    if differences.size == 0:
        return diff, math.nan, math.nan
    low, high = np.quantile(differences, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return diff, float(low), float(high)


def metric(task: str, name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """The metric_fn of `bootstrap_interval` for one of `mmp_core.evaluation.metrics.compute_metrics`'s metrics.

    Accuracy, F1-macro and F1-micro also get the `weighted` form (the same values from per-class counts, for all
    resamples at once); the others (f1_weighted, f1_samples, AUROC) are computed per resample.
    """
    from mmp_core.evaluation.metrics import compute_metrics

    def metric_fn(scores: np.ndarray, labels: np.ndarray) -> float:
        return compute_metrics(task, scores, labels)[name]

    if (task, name) in _WEIGHTED:
        metric_fn.weighted = _WEIGHTED[task, name]
    return metric_fn


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """2TP / (2TP + FP + FN), 0 where it is undefined (scikit-learn's zero_division=0)."""
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def _multilabel_counts(scores, labels, counts):
    predicted, truth = np.asarray(scores) > 0.5, np.asarray(labels).astype(int) == 1
    return (counts @ (predicted & truth), counts @ (predicted & ~truth), counts @ (~predicted & truth))


def _multilabel_f1_macro(scores, labels, counts):
    return _f1(*_multilabel_counts(scores, labels, counts)).mean(axis=1)


def _multilabel_f1_micro(scores, labels, counts):
    return _f1(*(c.sum(axis=1) for c in _multilabel_counts(scores, labels, counts)))


def _class_accuracy(scores, labels, counts):
    right = np.asarray(scores).argmax(axis=1) == np.asarray(labels).astype(int)
    return counts @ right / counts.sum(axis=1)


def _class_f1_macro(scores, labels, counts):
    # Over the classes present in the resample's labels or predictions, as scikit-learn's macro average.
    classes = np.asarray(scores).shape[1]
    predicted = np.eye(classes, dtype=bool)[np.asarray(scores).argmax(axis=1)]
    truth = np.eye(classes, dtype=bool)[np.asarray(labels).astype(int)]
    tp, fp, fn = counts @ (predicted & truth), counts @ (predicted & ~truth), counts @ (~predicted & truth)
    present = (counts @ (predicted | truth)) > 0
    return (_f1(tp, fp, fn) * present).sum(axis=1) / present.sum(axis=1)


_CHUNK = 128  # resamples scored at once by a weighted metric
_WEIGHTED = {
    ("multilabel", "f1_macro"): _multilabel_f1_macro,
    ("multilabel", "f1_micro"): _multilabel_f1_micro,
    ("multiclass", "accuracy"): _class_accuracy,
    ("multiclass", "f1_macro"): _class_f1_macro,
    ("binary", "accuracy"): _class_accuracy,
}


def verdict(low: float | None, high: float | None) -> Verdict:
    """Read an interval of (method - baseline): "ahead" above 0, "behind" below 0, else "within".

    No interval (None or NaN bounds, e.g. one seed) is "within": no evidence either way. An interval that only
    touches 0 is "within".
    """
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "within"
    if low > high:
        raise ValueError(f"interval bounds out of order: low {low} > high {high}")
    if low > 0:
        return "ahead"
    if high < 0:
        return "behind"
    return "within"


def gap_recovered(baseline: float, method: float, finetune: float) -> float | None:
    """The fraction of the baseline -> finetune gap that a method recovers: (method - baseline) / (finetune - baseline).

    0 is the baseline's score, 1 the finetuned model's; below 0 the method is worse than the baseline, above 1
    better than finetuning. None when the gap is <= 0 (finetuning does not beat the baseline: nothing to recover)
    or a score is not finite.
    """
    values = (baseline, method, finetune)
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    gap = finetune - baseline
    if gap <= 0:
        return None
    return (method - baseline) / gap


# ---------------------------------------------------------------------------------------------- results tables
def cell_values(document: Mapping, missing_type: str, rate: float) -> dict[str, float]:
    """{seed: primary metric} of one grid cell of a results document (`mmp evaluate`'s, or `mmp aggregate`'s
    with `per_seed_grid`); a single evaluation counts as one seed, named "single". Empty when the grid lacks it."""
    metric = document["primary_metric"]
    for index, row in enumerate(document.get("grid", [])):
        if row["missing_type"] == missing_type and math.isclose(row["missing_rate"], rate):
            per_seed = document.get("per_seed_grid")
            if per_seed:
                return {seed: values[index] for seed, values in per_seed.items()}
            return {"single": row[metric]}
    return {}


def paired_table(
    results: Mapping[str, Mapping],
    rate: float,
    types: Sequence[str] = ("text", "image", "both"),
    baseline: str = "baseline",
    reference: str = "finetune",
    confidence: float = 0.95,
) -> dict:
    """Every method against the baseline, seed by seed, per column (each missing type at `rate`, and "complete").

    Returns {method: {column: {"mean", "low", "high", "verdict", "seeds", "gap_recovered"}}}: the mean paired
    difference over the seeds both methods were evaluated with, its Student-t interval (`seed_interval`; None
    below two seeds), the `verdict` and the share of the baseline -> `reference` gap it recovers (on the seed
    means; None for the reference itself or where there is no gap). Empty without a baseline.
    """
    if baseline not in results:
        return {}
    columns = [(t, t, rate) for t in types] + [("complete", types[0], 0.0)]
    table: dict = {}
    for method, document in results.items():
        if method == baseline:
            continue
        row = {}
        for column, missing_type, cell_rate in columns:
            base = cell_values(results[baseline], missing_type, cell_rate)
            own = cell_values(document, missing_type, cell_rate)
            seeds = sorted(set(base) & set(own))
            if not seeds:
                continue
            mean, low, high = seed_interval([own[s] - base[s] for s in seeds], confidence)
            recovered = None
            if reference in results and method != reference:
                tuned = cell_values(results[reference], missing_type, cell_rate)
                if tuned:
                    recovered = gap_recovered(
                        float(np.mean(list(base.values()))),
                        float(np.mean(list(own.values()))),
                        float(np.mean(list(tuned.values()))),
                    )
            row[column] = {
                "mean": mean,
                "low": low,
                "high": high,
                "verdict": verdict(low, high),
                "seeds": len(seeds),
                "gap_recovered": recovered,
            }
        if row:
            table[method] = row
    return table


def format_paired(cell: Mapping, digits: int = 3) -> str:
    """`+0.012 [-0.003, +0.027] within`, or `+0.012 (one seed)` without an interval."""
    if cell["low"] is None:
        return f"{cell['mean']:+.{digits}f} ({cell['seeds']} seed{'s' if cell['seeds'] != 1 else ''}, no interval)"
    return f"{cell['mean']:+.{digits}f} [{cell['low']:+.{digits}f}, {cell['high']:+.{digits}f}] {cell['verdict']}"
