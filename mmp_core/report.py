"""Self-contained HTML: the report of one run and the store's dashboard.

Both pages carry everything inline (CSS, charts as base64 PNG data URIs): no external asset, no script, so they
open offline from a file:// URL or from an object store.

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

from mmp_core.artifact_store import DASHBOARD_KEY, ArtifactStore

METHOD_ORDER = ("baseline", "attention", "input")
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


def _cell_value(metrics: Mapping, missing_type: str, rate: float, metric: str, grid: str = "grid") -> float | None:
    """A grid cell's value; `grid="grid_sd"`: its standard deviation over seeds (None for one evaluation)."""
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


def rate_table(results: Mapping[str, Mapping], rate: float = TABLE_RATE, metric: str | None = None) -> dict:
    """{method: {missing_type: value or None}} at one missing rate."""
    metric = metric or _primary_metric(results)
    types = _ordered((row["missing_type"] for m in results.values() for row in m.get("grid", [])), TYPE_ORDER)
    return {
        method: {t: _cell_value(results[method], t, rate, metric) for t in types}
        for method in _ordered(results, METHOD_ORDER)
    }


def _with_sd(value: float | None, sd: float | None) -> str:
    return _fmt(value) if sd is None or value is None else f"{_fmt(value)} ± {_fmt(sd)}"


def _seeds_note(results: Mapping[str, Mapping]) -> str:
    seeds = sorted({len(m.get("seeds", [])) for m in results.values()})
    if not seeds or seeds == [0]:
        return ""
    return f" (mean ± sd over {'/'.join(map(str, seeds))} training seeds)"


def _rate_table_html(results: Mapping[str, Mapping], rate: float, metric: str, table_id: str) -> str:
    table = rate_table(results, rate, metric)
    types = list(next(iter(table.values()), {}))
    best = {t: max((v[t] for v in table.values() if v[t] is not None), default=None) for t in types}
    head = "".join(f"<th>{_esc(t)}</th>" for t in types)
    rows = []
    for method, values in table.items():
        sds = {t: _cell_value(results[method], t, rate, metric, "grid_sd") for t in types}
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
    other scalar is listed too) and optionally "promotion" (a `PromotionDecision` or its `to_dict()`).
    """
    if not results:
        raise ValueError("render_report needs the results of at least one method")
    metric = _primary_metric(results)
    run_info = dict(run_info)
    promotion = run_info.pop("promotion", None)
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
            f"<td>{_with_sd(head.get(metric), (m.get('headline_sd') or {}).get(metric))}</td></tr>"
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
    parts.append("<h2>Full grids</h2>")
    for method in methods:
        parts.append(f"<details><summary>{_esc(method)}</summary>{_grid_table_html(results[method], metric)}</details>")
    return _page(title, "\n".join(parts))


# ---------------------------------------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------------------------------------


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


def _report_key(manifest: Mapping) -> str | None:
    keys = [f["key"] for f in manifest.get("files", [])]
    return "report.html" if "report.html" in keys else next((k for k in keys if k.endswith("report.html")), None)


def _headline_value(manifest: Mapping, method: str | None) -> float | None:
    headlines = manifest.get("metadata", {}).get("headline") or {}
    entry = headlines.get(method) if method else None
    if entry is None and len(headlines) == 1:
        entry = next(iter(headlines.values()))
    if not isinstance(entry, Mapping):
        return None
    value = entry.get("value", entry.get(entry.get("primary_metric", ""), None))
    return float(value) if value is not None else None


def _entry_value(entry: Mapping) -> float | None:
    metrics = entry.get("metrics", {})
    value = metrics.get("value", metrics.get(metrics.get("primary_metric", ""), None))
    return float(value) if value is not None else None


def _history_chart(manifests: Sequence[Mapping], history: Sequence[Mapping], method: str | None, metric: str) -> str:
    fig = _figure(8, 3.4)
    ax = fig.add_subplot()
    index = {m["run_id"]: i for i, m in enumerate(manifests)}
    xs, ys = [], []
    for i, manifest in enumerate(manifests):
        value = _headline_value(manifest, method)
        if value is not None:
            xs.append(i)
            ys.append(value)
    if xs:
        ax.plot(xs, ys, "o", color="#888", label=f"run headline ({method or 'method'})")
    # Champion after each run: the latest promotion whose run is at or before that run.
    champ_x, champ_y, current = [], [], None
    promotions = {e["run_id"]: _entry_value(e) for e in history if e.get("run_id") in index}
    for i, manifest in enumerate(manifests):
        if manifest["run_id"] in promotions:
            current = promotions[manifest["run_id"]]
        if current is not None:
            champ_x.append(i)
            champ_y.append(current)
    if champ_x:
        ax.step(champ_x, champ_y, where="post", color="#1a7f37", linewidth=2, label="champion")
        px = [index[r] for r in promotions]
        ax.plot(px, [promotions[r] for r in promotions], "*", color="#1a7f37", markersize=12, label="promotion")
    labels = [m["run_id"] for m in manifests]
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(
        [lbl if len(lbl) <= 22 else lbl[:10] + "…" + lbl[-10:] for lbl in labels], rotation=30, ha="right", fontsize=7
    )
    ax.set_ylabel(f"headline {metric}")
    ax.set_xlabel("published runs (oldest → newest)")
    ax.grid(True, alpha=0.3)
    if xs or champ_x:
        ax.legend(fontsize=8)
    return _png_data_uri(fig)


def render_dashboard(store: ArtifactStore) -> str:
    """The store's dashboard: the champion and its history across runs (table + chart), every published run,
    and the latest run's grid. Links to run reports are relative to dashboard/index.html."""
    champion = store.get_champion()
    manifests = store.run_manifests()
    history = list(champion.get("history", [])) if champion else []
    method = (champion or {}).get("metrics", {}).get("method")
    metric = (champion or {}).get("metrics", {}).get("primary_metric")
    latest = manifests[-1] if manifests else None
    if latest is not None:
        meta = latest.get("metadata", {})
        metric = metric or meta.get("primary_metric")
        method = method or ("input" if "input" in (meta.get("headline") or {}) else None)
    metric = metric or "f1_macro"

    parts = ["<h1>mmp dashboard</h1>", f"<p class='muted'>store: <code>{_esc(store.location)}</code></p>"]
    if champion:
        value = _entry_value(champion)
        parts.append(
            f"<p id='champion'>Champion: <b data-run-id='{_esc(champion['run_id'])}'>{_esc(champion['run_id'])}</b>"
            f" ({_esc(method)}, {_esc(metric)} {_fmt(value)}), since {_esc(champion.get('updated_at'))}</p>"
        )
    else:
        parts.append("<p id='champion' class='muted'>No champion yet.</p>")

    parts.append("<h2>Champion history</h2>")
    if history:
        rows = []
        for number, entry in enumerate(history, 1):
            m = entry.get("metrics", {})
            is_current = number == len(history)
            rows.append(
                f"<tr class='{'current' if is_current else ''}' data-run-id='{_esc(entry['run_id'])}'>"
                f"<td>{number}</td><td class='l'>{_esc(entry['run_id'])}</td>"
                f"<td class='l'>{_opt(entry.get('promoted_at'))}</td><td class='l'>{_opt(m.get('method'))}</td>"
                f"<td class='l'>{_esc(m.get('missing_type'))}@{_esc(m.get('missing_rate'))}</td>"
                f"<td>{_fmt(_entry_value(entry))}</td><td class='l'>{_opt(entry.get('reason'))}</td></tr>"
            )
        parts.append(
            "<table id='champion-history'><tr><th>#</th><th class='l'>run</th><th class='l'>promoted at</th>"
            f"<th class='l'>method</th><th class='l'>headline cell</th><th>{_esc(metric)}</th>"
            f"<th class='l'>reason</th></tr>{''.join(rows)}</table>"
        )
    else:
        parts.append("<table id='champion-history'><tr><td class='muted'>no promotion yet</td></tr></table>")

    if manifests:
        chart = _history_chart(manifests, history, method, metric)
        parts.append(
            f"<figure><img id='history-chart' alt='headline {_esc(metric)} over runs' src='{chart}'>"
            "<figcaption>headline metric over published runs; the green line is the champion</figcaption></figure>"
        )

    parts.append("<h2>Published runs</h2>")
    if manifests:
        champion_ids = {e["run_id"] for e in history}
        rows = []
        for manifest in reversed(manifests):
            meta = manifest.get("metadata", {})
            run_id = manifest["run_id"]
            report = _report_key(manifest)
            link = f"<a href='../runs/{_esc(run_id)}/{_esc(report)}'>report</a>" if report else "-"
            status = (
                "champion"
                if champion and run_id == champion["run_id"]
                else ("former champion" if run_id in champion_ids else "")
            )
            rows.append(
                f"<tr data-run-id='{_esc(run_id)}'><td class='l'>{_esc(run_id)}</td>"
                f"<td class='l'>{_opt(manifest.get('created_at'))}</td><td class='l'>{_opt(meta.get('data_version'))}</td>"
                f"<td class='l'>{_opt(meta.get('params_fingerprint'))}</td>"
                f"<td class='l'>{_opt((meta.get('git_commit') or '')[:12])}</td>"
                f"<td>{_fmt(_headline_value(manifest, method))}</td><td class='l'>{_opt(status)}</td>"
                f"<td class='l'>{link}</td></tr>"
            )
        parts.append(
            "<table id='runs'><tr><th class='l'>run</th><th class='l'>created</th><th class='l'>data version</th>"
            f"<th class='l'>params</th><th class='l'>commit</th><th>headline {_esc(metric)}</th>"
            f"<th class='l'>status</th><th class='l'></th></tr>{''.join(rows)}</table>"
        )
    else:
        parts.append("<p class='muted'>No published runs yet.</p>")

    if latest is not None:
        parts.append(f"<h2>Latest grid: run <code>{_esc(latest['run_id'])}</code></h2>")
        try:
            results = load_run_results(store, latest["run_id"], latest)
        except ValueError as error:  # shown, not hidden: the page is where a team would notice
            results = None
            parts.append(f"<p id='latest-error' class='bad'>{_esc(error)}</p>")
        if results:
            grid_metric = _primary_metric(results)
            parts.append(_rate_table_html(results, TABLE_RATE, grid_metric, "latest-table-70"))
            parts.append("<div id='latest-grid'>")
            for name, metrics in results.items():
                parts.append(f"<h3>{_esc(name)}</h3>" + _grid_table_html(metrics, grid_metric))
            parts.append("</div>")
        elif results is not None:
            parts.append("<p class='muted'>This run has no metrics files.</p>")
    return _page("mmp dashboard", "\n".join(parts))


def write_dashboard(store: ArtifactStore) -> str:
    """Render the dashboard and write it to dashboard/index.html in the store; returns its location."""
    return store.write_text(DASHBOARD_KEY, render_dashboard(store))
