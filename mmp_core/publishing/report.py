"""The run report: one run's self-contained HTML page (with the pieces the dashboard reuses) and its results.

The report and the dashboard (`mmp_core.publishing.dashboard`) carry everything inline (CSS, charts as base64 PNG data
URIs): no external asset, no script, so they open offline from a file:// URL or from an object store.

`results` everywhere is `{method: metrics.json dict}` as written by evaluation:
{"dataset", "method", "primary_metric", "train_setting", "headline": {...}, "grid": [{missing_type,
missing_rate, <metrics>}, ...]}.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from mmp_core.config import METHODS, REFERENCE_METHODS
from mmp_core.evaluation.paired import format_paired, paired_table
from mmp_core.storage.artifact_store import ArtifactStore

METHOD_ORDER = tuple(METHODS)  # the order of the paper's tables
TYPE_ORDER = ("text", "image", "both")
TABLE_RATE = 0.7

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
     padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
caption{text-align:left;color:#555;white-space:nowrap}
tr.current td{background:#eef7ee} td.best{font-weight:bold}
.muted{color:#777} .ok{color:#1a7f37} .bad{color:#b42318}
figure{display:inline-block;margin:.4em}
#curves{display:flex;flex-wrap:wrap;gap:.6em} #curves figure{flex:1 1 300px;margin:0;max-width:360px} figcaption{text-align:center;font-size:.9em;color:#555}
img{max-width:100%} code{background:#f5f5f5;padding:0 .2em}
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _opt(value: Any) -> str:
    """Escaped text, or '-' for a missing value (keeps table cells visibly filled)."""
    return _esc(value) if value not in (None, "") else "-"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _esc(value)


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _ordered(items, order: Sequence[str]) -> list[str]:
    items = list(dict.fromkeys(items))
    return [x for x in order if x in items] + sorted(x for x in items if x not in order)


def _primary_metric(results: Mapping[str, Mapping]) -> str:
    metrics = {m.get("primary_metric") for m in results.values()} - {None}
    if len(metrics) > 1:
        raise ValueError(f"methods disagree on the primary metric: {sorted(metrics)}")
    return metrics.pop() if metrics else "f1_macro"


def _seeded(metrics: Mapping) -> bool:
    """Whether a method's result folds two or more training seeds: `mmp aggregate` writes a standard deviation of 0
    for one seed, which is no spread to show or to judge a lead by."""
    return len(metrics.get("seeds", [])) > 1


def _cell_value(metrics: Mapping, missing_type: str, rate: float, metric: str, grid: str = "grid") -> float | None:
    """A grid cell's value; `grid="grid_sd"`: its standard deviation over seeds (None for fewer than two)."""
    if grid == "grid_sd" and not _seeded(metrics):
        return None
    for row in metrics.get(grid, []):
        if row.get("missing_type") == missing_type and abs(float(row["missing_rate"]) - rate) < 1e-9:
            value = row.get(metric)
            return float(value) if value is not None else None
    return None


def _png_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    # The object-oriented API (no pyplot): no global backend state, safe in worker threads.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def robustness_curves(results: Mapping[str, Mapping], metric: str | None = None) -> dict[str, str]:
    """One PNG data URI per missing type: `metric` vs. missing rate, one line per method."""
    metric = metric or _primary_metric(results)
    methods = _ordered(results, METHOD_ORDER)
    types = _ordered((row["missing_type"] for m in results.values() for row in m.get("grid", [])), TYPE_ORDER)
    charts = {}
    for missing_type in types:
        fig = _figure(3.6, 2.9)
        ax = fig.add_subplot()
        for method in methods:
            points = sorted(
                (float(row["missing_rate"]), float(row[metric]))
                for row in results[method].get("grid", [])
                if row.get("missing_type") == missing_type and row.get(metric) is not None
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=method)
        ax.set_title(f"missing {missing_type}")
        ax.set_xlabel("missing rate")
        ax.set_ylabel(metric)
        ax.set_xlim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        charts[missing_type] = _png_data_uri(fig)
    return charts


def rate_table(
    results: Mapping[str, Mapping], rate: float = TABLE_RATE, metric: str | None = None, grid: str = "grid"
) -> dict:
    """{method: {missing_type: value or None}} at one missing rate; `grid="grid_sd"`: the standard deviations."""
    metric = metric or _primary_metric(results)
    types = _ordered((row["missing_type"] for m in results.values() for row in m.get("grid", [])), TYPE_ORDER)
    return {
        method: {t: _cell_value(results[method], t, rate, metric, grid) for t in types}
        for method in _ordered(results, METHOD_ORDER)
    }


def scenario_table(results: Mapping[str, Mapping], rate: float = TABLE_RATE, metric: str | None = None) -> dict:
    """{method: {column: [mean, sd]}}: each missing type at `rate`, then "complete" (missing rate 0, the same
    test split for every missing type), the columns of the paper's Table 1. `sd` is the standard deviation over
    training seeds, None for a method evaluated with fewer than two; a cell the grid lacks is [None, None]."""
    metric = metric or _primary_metric(results)
    means, sds = rate_table(results, rate, metric), rate_table(results, rate, metric, "grid_sd")
    complete, complete_sd = rate_table(results, 0.0, metric), rate_table(results, 0.0, metric, "grid_sd")
    table = {}
    for method, row in means.items():
        cells = {t: [value, sds[method][t]] for t, value in row.items()}
        if row:
            first = next(iter(row))
            cells["complete"] = [complete[method][first], complete_sd[method][first]]
        table[method] = cells
    return table


def prompt_margins(table: Mapping[str, Mapping[str, Sequence]], baseline: str = "baseline") -> dict:
    """Per column of a `scenario_table`, the best prompt method's lead over the frozen baseline:
    {column: {"method", "margin", "sd", "clear"}}. `sd` is the larger of the two methods' standard deviations over
    seeds (None without seeds) and `clear` says whether the lead is more than two of them (None without an sd).
    Empty when the table has no baseline or no prompt method."""
    prompts = [m for m in table if m != baseline and m not in REFERENCE_METHODS]  # finetune is no prompt method
    if baseline not in table or not prompts:
        return {}
    margins = {}
    for column, (base, base_sd) in table[baseline].items():
        scored = [(table[m][column][0], m) for m in prompts if table[m][column][0] is not None]
        if base is None or not scored:
            continue
        value, method = max(scored)
        method_sd = table[method][column][1]
        sd = max(base_sd, method_sd) if base_sd is not None and method_sd is not None else None
        clear = value - base > 2 * sd if sd is not None else None
        margins[column] = {"method": method, "margin": value - base, "sd": sd, "clear": clear}
    return margins


def lead_verdict(margin: Mapping, more: str = "more than") -> str:
    """A `prompt_margins` entry in words: "behind", "within 2 sd" or "<more> 2 sd"."""
    if margin["margin"] <= 0:
        return "behind"
    return f"{more} 2 sd" if margin["clear"] else "within 2 sd"


def _margins_html(margins: Mapping[str, Mapping]) -> str:
    """One line per column: the best prompt method's lead over the baseline, and whether seeds' noise explains it."""
    if all(m["sd"] is None for m in margins.values()):
        return ""  # no seeds: no noise to judge a lead by
    items = [
        f"<li data-column='{_esc(column)}'>{_esc(column)}: {_esc(m['method'])} {m['margin']:+.4f} "
        f"(sd {_fmt(m['sd'])}; {lead_verdict(m)})</li>"
        for column, m in margins.items()
    ]
    return (
        "<p>Best prompt method vs the frozen baseline (sd: the larger of the two over seeds):</p>"
        f"<ul id='margins'>{''.join(items)}</ul>"
    )


def _paired_html(paired: Mapping[str, Mapping]) -> str:
    """Each method minus the baseline, seed by seed on the same test samples: mean, 95% t-interval, verdict, and
    the share of the baseline -> finetune gap recovered. Nothing when no method shares two seeds with the baseline."""
    if not any(cell["low"] is not None for columns in paired.values() for cell in columns.values()):
        return ""
    columns = list(next(iter(paired.values())))
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    rows = []
    for method, cells in paired.items():
        tds = []
        for column in columns:
            cell = cells.get(column)
            if cell is None:
                tds.append("<td>-</td>")
                continue
            gap = "" if cell["gap_recovered"] is None else f"<br>{cell['gap_recovered']:.0%} of the gap"
            tds.append(f"<td data-verdict='{cell['verdict']}'>{_esc(format_paired(cell))}{gap}</td>")
        rows.append(f"<tr><td class='l'>{_esc(method)}</td>{''.join(tds)}</tr>")
    return (
        "<p>Paired with the baseline: each method minus the baseline on the same seeds and test samples, the mean "
        "difference with its 95% Student-t interval over seeds; ahead or behind when the interval excludes 0, and "
        "the share of the baseline → finetune gap recovered:</p>"
        f"<table id='paired'><tr><th class='l'>method</th>{head}</tr>{''.join(rows)}</table>"
    )


def _with_sd(value: float | None, sd: float | None) -> str:
    return _fmt(value) if sd is None or value is None else f"{_fmt(value)} ± {_fmt(sd)}"


def _seeds_note(results: Mapping[str, Mapping]) -> str:
    seeds = sorted({len(m.get("seeds", [])) for m in results.values()})
    if not seeds or seeds == [0]:
        return ""
    return f" (mean ± sd over {'/'.join(map(str, seeds))} training seeds)"


def _rate_table_html(results: Mapping[str, Mapping], rate: float, metric: str, table_id: str) -> str:
    table, table_sd = rate_table(results, rate, metric), rate_table(results, rate, metric, "grid_sd")
    types = list(next(iter(table.values()), {}))
    best = {t: max((v[t] for v in table.values() if v[t] is not None), default=None) for t in types}
    head = "".join(f"<th>{_esc(t)}</th>" for t in types)
    rows = []
    for method, values in table.items():
        sds = table_sd[method]
        cells = "".join(
            f"<td class='{'best' if values[t] is not None and values[t] == best[t] else ''}'>"
            f"{_with_sd(values[t], sds[t])}</td>"
            for t in types
        )
        rows.append(f"<tr data-method='{_esc(method)}'><th class='l'>{_esc(method)}</th>{cells}</tr>")
    return (
        f"<table id='{_esc(table_id)}'><caption>{_esc(metric)} at missing rate {rate:.0%} "
        f"(rows: methods, columns: missing type){_esc(_seeds_note(results))}</caption>"
        f"<tr><th class='l'>method</th>{head}</tr>{''.join(rows)}</table>"
    )


def _grid_table_html(metrics: Mapping, metric: str) -> str:
    grid = metrics.get("grid", [])
    types = _ordered((row["missing_type"] for row in grid), TYPE_ORDER)
    rates = sorted({round(float(row["missing_rate"]), 6) for row in grid})
    head = "".join(f"<th>{r:g}</th>" for r in rates)
    rows = []
    for t in types:
        cells = "".join(f"<td>{_fmt(_cell_value(metrics, t, r, metric))}</td>" for r in rates)
        rows.append(f"<tr data-type='{_esc(t)}'><th class='l'>{_esc(t)}</th>{cells}</tr>")
    return (
        f"<table class='grid' data-method='{_esc(metrics.get('method'))}'>"
        f"<tr><th class='l'>type \\ rate</th>{head}</tr>{''.join(rows)}</table>"
    )


def _kv_table(info: Mapping[str, Any], table_id: str) -> str:
    rows = "".join(
        f"<tr><th class='l'>{_esc(k)}</th><td class='l'><code>{_esc(v)}</code></td></tr>" for k, v in info.items()
    )
    return f"<table id='{_esc(table_id)}'>{rows}</table>"


def _promotion_html(promotion: Any) -> str:
    """The decision (a `PromotionDecision` or its dict): verdict, reason and the per-cell comparison."""
    if hasattr(promotion, "to_dict"):
        promotion = promotion.to_dict()
    promote = bool(promotion.get("promote"))
    rows = []
    for r in promotion.get("rows", []):
        css = "bad" if r.get("status") in ("regression", "missing") else ("ok" if r.get("status") == "better" else "")
        delta = r.get("delta")
        rows.append(
            f"<tr class='{css}'><td class='l'>{_esc(r.get('missing_type'))}</td><td>{_esc(r.get('missing_rate'))}</td>"
            f"<td>{_fmt(r.get('champion'))}</td><td>{_fmt(r.get('challenger'))}</td>"
            f"<td>{'-' if delta is None else f'{delta:+.4f}'}</td><td class='l'>{_esc(r.get('status'))}</td></tr>"
        )
    table = (
        "<details><summary>per-cell comparison</summary><table id='promotion-cells'><tr><th class='l'>type</th>"
        "<th>rate</th><th>champion</th><th>challenger</th><th>delta</th><th class='l'>status</th></tr>"
        f"{''.join(rows)}</table></details>"
        if rows
        else ""
    )
    return (
        f"<p id='promotion' class='{'ok' if promote else 'bad'}' data-promote='{str(promote).lower()}'>"
        f"<b>{_esc(promotion.get('reason'))}</b> (metric {_esc(promotion.get('metric'))}, tolerance "
        f"{_esc(promotion.get('tolerance'))})</p>{table}"
    )


_INFO_KEYS = ("run_id", "created_at", "dataset", "data_version", "params_fingerprint", "git_commit")


def render_report(results: Mapping[str, Mapping], run_info: Mapping[str, Any]) -> str:
    """The run's self-contained HTML report.

    `run_info`: the run's provenance (run_id, created_at, data_version, params_fingerprint, git_commit, ... any
    other scalar is listed too) and optionally "promotion" (a `PromotionDecision` or its `to_dict()`) and
    "selection" (the candidate and why: `Selection.to_dict()`).
    """
    if not results:
        raise ValueError("render_report needs the results of at least one method")
    metric = _primary_metric(results)
    run_info = dict(run_info)
    promotion, selection = run_info.pop("promotion", None), run_info.pop("selection", None)
    info = {k: run_info[k] for k in _INFO_KEYS if run_info.get(k) is not None}
    info.setdefault("dataset", next(iter(results.values())).get("dataset"))
    for key, value in run_info.items():
        if key not in info and isinstance(value, str | int | float | bool) and value is not None:
            info[key] = value
    info["primary_metric"] = metric
    methods = _ordered(results, METHOD_ORDER)
    title = f"mmp run {run_info.get('run_id', '')}".strip()

    parts = [f"<h1>{_esc(title)}</h1>", f"<p class='muted'>methods: {_esc(', '.join(methods))}</p>"]
    parts.append("<h2>Versions</h2>" + _kv_table(info, "run-info"))

    headline_rows = []
    for method in methods:
        m = results[method]
        head = m.get("headline", {})
        train = m.get("train_setting", {})
        headline_rows.append(
            f"<tr data-method='{_esc(method)}'><th class='l'>{_esc(method)}</th>"
            f"<td class='l'>{_esc(train.get('missing_type'))}@{_esc(train.get('missing_rate'))}</td>"
            f"<td class='l'>{_esc(head.get('missing_type'))}@{_esc(head.get('missing_rate'))}</td>"
            f"<td>{_with_sd(head.get(metric), (m.get('headline_sd') or {}).get(metric) if _seeded(m) else None)}</td></tr>"
        )
    parts.append(
        "<h2>Headline</h2><table id='headline'><tr><th class='l'>method</th><th class='l'>trained on</th>"
        f"<th class='l'>headline cell</th><th>{_esc(metric)}</th></tr>{''.join(headline_rows)}</table>"
    )

    warnings = [
        f"{method}: {warning}"
        for method in methods
        for warning in (results[method].get("sanity") or {}).get("warnings", [])
    ]
    if warnings:
        items = "".join(f"<li>{_esc(w)}</li>" for w in warnings)
        parts.append(f"<h2>Does it learn?</h2><ul id='sanity' class='bad'>{items}</ul>")

    if selection:  # which method is the run's candidate, and why (never from the test split)
        parts.append(f"<h2>Candidate</h2><p id='candidate' data-method='{_esc(selection['method'])}'><b>"
                     f"{_esc(selection['method'])}</b>: {_esc(selection['reason'])}</p>")  # fmt: skip
    if promotion is not None:
        parts.append("<h2>Promotion</h2>" + _promotion_html(promotion))

    parts.append("<h2>Robustness curves</h2><div id='curves'>")
    for missing_type, uri in robustness_curves(results, metric).items():
        parts.append(
            f"<figure><img alt='{_esc(metric)} vs missing rate, missing {_esc(missing_type)}' "
            f"data-type='{_esc(missing_type)}' src='{uri}'><figcaption>missing {_esc(missing_type)}</figcaption></figure>"
        )
    parts.append("</div>")
    parts.append(f"<h2>At {TABLE_RATE:.0%} missing</h2>" + _rate_table_html(results, TABLE_RATE, metric, "table-70"))
    parts.append(_margins_html(prompt_margins(scenario_table(results, TABLE_RATE, metric))))
    parts.append(_paired_html(paired_table(results, TABLE_RATE)))
    parts.append("<h2>Full grids</h2>")
    for method in methods:
        parts.append(f"<details><summary>{_esc(method)}</summary>{_grid_table_html(results[method], metric)}</details>")
    return _page(title, "\n".join(parts))


def load_run_results(store: ArtifactStore, run_id: str, manifest: Mapping | None = None) -> dict[str, dict]:
    """{method: metrics dict} of a published run: its `results/<method>/metrics.json` files (per-seed results
    under `results/<method>/seeds/` are not the method's result), each verified against the manifest.

    A file that fails its checksum, or is not a results document, raises: a run whose results cannot be
    trusted must never pass for a run without results (a corrupt champion would otherwise lose to anything)."""
    manifest = manifest or store.get_manifest(run_id)
    results: dict[str, dict] = {}
    for entry in manifest["files"]:
        parts = entry["key"].split("/")
        if len(parts) != 3 or parts[0] != "results" or parts[2] != "metrics.json":
            continue
        data = store.read_run_file(run_id, entry["key"])  # ValueError on a checksum mismatch
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"run {run_id!r}: {entry['key']!r} is not valid JSON ({error})") from None
        if not isinstance(document, dict) or "grid" not in document or document.get("method") != parts[1]:
            raise ValueError(f"run {run_id!r}: {entry['key']!r} is not the results document of method {parts[1]!r}")
        results[parts[1]] = document
    return {m: results[m] for m in _ordered(results, METHOD_ORDER)}
