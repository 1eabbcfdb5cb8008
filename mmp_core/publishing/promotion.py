"""The champion/challenger rule over results documents (`metrics.json` of evaluation): per-cell comparison,
the decision and its reasons, and the headline summaries a run's manifest and the champion pointer carry."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


Cell = tuple[str, float]


def _cell_id(missing_type: str, missing_rate: float) -> Cell:
    return (str(missing_type), round(float(missing_rate), 6))


def _grid_cells(grid: Sequence[Mapping] | Mapping, metric: str, what: str) -> dict[Cell, float]:
    if isinstance(grid, Mapping):  # a whole metrics.json
        grid = grid["grid"]
    cells: dict[Cell, float] = {}
    for row in grid:
        cell = _cell_id(row["missing_type"], row["missing_rate"])
        if metric not in row:
            raise ValueError(f"{what} grid cell {cell} has no metric {metric!r}")
        value = float(row[metric])
        if not math.isfinite(value):
            raise ValueError(f"{what} grid cell {cell}: {metric} is {value}")
        if cell in cells:
            raise ValueError(f"{what} grid has cell {cell} twice")
        cells[cell] = value
    return cells


def headline_summary(metrics: Mapping[str, Any]) -> dict:
    """The headline of one method's metrics.json, flat: {method, primary_metric, missing_type, missing_rate,
    value, <every metric of the headline cell>}; what `set_champion` and the dashboard expect."""
    metric = metrics["primary_metric"]
    headline = dict(metrics["headline"])
    summary = {
        "method": metrics.get("method"),
        "primary_metric": metric,
        **headline,
        "value": float(headline[metric]),
    }
    if "seeds" in metrics:  # the mean over training seeds, with its standard deviation
        summary.update(seeds=list(metrics["seeds"]), value_sd=float(metrics["headline_sd"][metric]))
    warnings = (metrics.get("sanity") or {}).get("warnings")
    if warnings:
        summary["warnings"] = list(warnings)
    return summary


def build_run_metadata(
    results: Mapping[str, Mapping[str, Any]],
    *,
    data_version: str | None = None,
    params_fingerprint: str | None = None,
    git_commit: str | None = None,
    created_at: str | None = None,
    **extra: Any,
) -> dict:
    """The manifest metadata of a run from its results ({method: metrics.json dict}) and provenance."""
    first = next(iter(results.values()), {})
    return {
        "created_at": created_at or _now(),
        "data_version": data_version,
        "params_fingerprint": params_fingerprint,
        "git_commit": git_commit,
        "dataset": first.get("dataset"),
        "primary_metric": first.get("primary_metric"),
        "methods": list(results),
        "headline": {method: headline_summary(m) for method, m in results.items()},
        **extra,
    }


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    metric: str
    headline: Cell
    tolerance: float
    champion_value: float | None = None  # headline cell
    challenger_value: float | None = None
    rows: list[dict] = field(default_factory=list)  # per cell: type, rate, champion, challenger, delta, status

    @property
    def regressions(self) -> list[dict]:
        return [r for r in self.rows if r["status"] in ("regression", "missing")]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["headline"] = {"missing_type": self.headline[0], "missing_rate": self.headline[1]}
        return data

    def to_markdown(self) -> str:
        verdict = "PROMOTE" if self.promote else "REJECT"
        lines = [
            f"**{verdict}**: {self.reason}",
            "",
            f"metric `{self.metric}`, headline cell {self.headline[0]}@{self.headline[1]:g}, "
            f"tolerance {self.tolerance:g}",
        ]
        if self.rows:
            lines += ["", "| type | rate | champion | challenger | delta | status |", "|---|---|---|---|---|---|"]
            for r in self.rows:
                lines.append(
                    f"| {r['missing_type']} | {r['missing_rate']:g} | {_fmt(r['champion'])} | "
                    f"{_fmt(r['challenger'])} | {_fmt(r['delta'], signed=True)} | {r['status']} |"
                )
        return "\n".join(lines)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


_EPS = 1e-12


def decide_promotion(
    champion_grid: Sequence[Mapping] | Mapping | None,
    challenger_grid: Sequence[Mapping] | Mapping,
    *,
    metric: str,
    headline: Mapping[str, Any] | Sequence,
    tolerance: float,
) -> PromotionDecision:
    """Should the challenger replace the champion? Grids are lists of cells (or whole metrics.json dicts).

    Promote only if no champion cell is worse in the challenger by more than `tolerance` (a champion cell
    missing from the challenger counts as worse) AND the challenger is strictly better on the headline cell.
    No champion → promote. Raises ValueError on malformed grids or a headline cell missing from either grid.
    """
    if tolerance < 0 or not math.isfinite(tolerance):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if isinstance(headline, Mapping):
        head = _cell_id(headline["missing_type"], headline["missing_rate"])
    else:
        head = _cell_id(*headline)
    challenger = _grid_cells(challenger_grid, metric, "challenger")
    if head not in challenger:
        raise ValueError(f"challenger grid has no headline cell {head}")
    common = {"metric": metric, "headline": head, "tolerance": float(tolerance)}
    if champion_grid is None:
        rows = [
            {"missing_type": t, "missing_rate": r, "champion": None, "challenger": v, "delta": None, "status": "new"}
            for (t, r), v in sorted(challenger.items())
        ]
        return PromotionDecision(
            promote=True,
            reason="no champion yet: the first published run becomes the champion",
            challenger_value=challenger[head],
            rows=rows,
            **common,
        )
    champion = _grid_cells(champion_grid, metric, "champion")
    if head not in champion:
        raise ValueError(f"champion grid has no headline cell {head}")
    rows = []
    for cell in sorted(set(champion) | set(challenger)):
        old, new = champion.get(cell), challenger.get(cell)
        if old is None:
            status, delta = "new", None
        elif new is None:
            status, delta = "missing", None
        else:
            delta = new - old
            if delta < -tolerance - _EPS:
                status = "regression"
            elif delta > _EPS:
                status = "better"
            elif delta < -_EPS:
                status = "worse_within_tolerance"
            else:
                status = "equal"
        rows.append(
            {
                "missing_type": cell[0],
                "missing_rate": cell[1],
                "champion": old,
                "challenger": new,
                "delta": delta,
                "status": status,
            }
        )
    old_head, new_head = champion[head], challenger[head]
    bad = [r for r in rows if r["status"] in ("regression", "missing")]
    head_text = f"{metric} at {head[0]}@{head[1]:g}: {new_head:.4f} vs champion {old_head:.4f}"
    if bad:
        worst = min((r for r in bad if r["delta"] is not None), key=lambda r: r["delta"], default=bad[0])
        detail = f"{worst['missing_type']}@{worst['missing_rate']:g} " + (
            f"{worst['delta']:+.4f}" if worst["delta"] is not None else "missing from the challenger"
        )
        reason = (
            f"rejected: {len(bad)} cell(s) worse than the champion by more than {tolerance:g} "
            f"(worst {detail}); {head_text}"
        )
        promote = False
    elif new_head - old_head > _EPS:
        reason = f"promoted: headline improved ({head_text}, {new_head - old_head:+.4f}); no cell regressed beyond {tolerance:g}"
        promote = True
    else:
        reason = f"rejected: headline not better ({head_text}); no cell regressed beyond {tolerance:g}"
        promote = False
    return PromotionDecision(
        promote=promote, reason=reason, champion_value=old_head, challenger_value=new_head, rows=rows, **common
    )


# ---------------------------------------------------------------------------------------------- the run's candidate
BEST = "best"  # promote_method: the method with the best validation score is the run's candidate


@dataclass(frozen=True)
class Selection:
    """Which method is a run's candidate for champion, and why. `scores`: each method's validation score (the
    mean over training seeds of the best validation score, the one its adapter was kept for); `setting`: the
    validation split's missing setting; `headline`: the test headline cell it is compared with."""

    method: str
    rule: str  # "best", or the method named
    metric: str
    scores: dict[str, float | None]
    setting: str  # e.g. both@0.7
    headline: str

    @property
    def reason(self) -> str:
        scores = ", ".join(f"{m} {_fmt(v)}" for m, v in self.scores.items())
        where = (
            f"validation split at {self.setting}, the headline cell"
            if self.setting == self.headline
            else f"validation split at {self.setting}, not the headline cell {self.headline}"
        )
        if self.rule == BEST:
            return f"best validation {self.metric} {_fmt(self.scores[self.method])} of {scores} ({where})"
        return f"named by promote_method (validation {self.metric}: {scores}; {where})"

    def to_dict(self) -> dict:
        return {**asdict(self), "reason": self.reason}


def _setting(missing_type: Any, missing_rate: Any) -> str:
    return f"{missing_type}@{float(missing_rate):g}"


def validation_score(metrics: Mapping[str, Any]) -> float | None:
    """A method's validation score (a metrics.json of `mmp aggregate`): the mean over its training seeds of each
    seed's best validation score (`per_seed.<seed>.best_val_<metric>`); None when it has none."""
    key = f"best_val_{metrics['primary_metric']}"
    values = [seed.get(key) for seed in (metrics.get("per_seed") or {}).values()]
    if not values or any(v is None or not math.isfinite(float(v)) for v in values):
        return None
    return sum(float(v) for v in values) / len(values)


def choose_candidate(
    results: Mapping[str, Mapping[str, Any]], rule: str, validation: Mapping[str, Any] | None = None
) -> Selection:
    """The run's candidate: the method named by `rule`, or for `rule="best"` the one whose validation score is
    best (the first of `results` on a tie); the test split is never looked at. `validation`: the validation
    split's missing setting (train.val_missing: {type, rate}), said in the reason next to the headline cell."""
    first = next(iter(results.values()))
    metric, head = first["primary_metric"], first["headline"]
    headline = _setting(head["missing_type"], head["missing_rate"])
    setting = _setting(validation["type"], validation["rate"]) if validation else "its training setting"
    scores = {method: validation_score(m) for method, m in results.items()}
    if rule != BEST:
        if rule not in results:
            raise ValueError(f"promote_method {rule!r} is not one of the run's methods {list(results)}")
        return Selection(rule, rule, metric, scores, setting, headline)
    missing = [method for method, score in scores.items() if score is None]
    if missing:
        raise ValueError(
            f"promote_method best: no validation {metric} (per_seed best_val_{metric} in results/<method>/"
            f"metrics.json) for {', '.join(missing)}; run `dvc repro` (its aggregate stage) or name a method"
        )
    best = max(scores, key=lambda method: (scores[method], -list(scores).index(method)))
    return Selection(best, BEST, metric, scores, setting, headline)
