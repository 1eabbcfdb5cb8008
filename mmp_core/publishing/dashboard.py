"""The store's dashboard: the champion and its history across runs, every published run, the latest grid.

One self-contained HTML page (see `mmp_core.publishing.report`), written to dashboard/index.html in the store on publish.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mmp_core.evaluation.paired import paired_table
from mmp_core.publishing.report import (
    TABLE_RATE,
    _esc,
    _figure,
    _fmt,
    _grid_table_html,
    _opt,
    _page,
    _paired_html,
    _png_data_uri,
    _primary_metric,
    _rate_table_html,
    load_run_results,
)
from mmp_core.storage.artifact_store import DASHBOARD_KEY, ArtifactStore


def _report_key(manifest: Mapping) -> str | None:
    keys = [f["key"] for f in manifest.get("files", [])]
    return "report.html" if "report.html" in keys else next((k for k in keys if k.endswith("report.html")), None)


def _candidate(manifest: Mapping, method: str | None) -> str | None:
    """The run's candidate (the method it put up for champion), else `method`."""
    meta = manifest.get("metadata", {})
    return meta["promote_method"] if meta.get("promote_method") in (meta.get("headline") or {}) else method


def _headline_value(manifest: Mapping, method: str | None) -> float | None:
    """The headline of the run's candidate (else of `method`)."""
    headlines = manifest.get("metadata", {}).get("headline") or {}
    method = _candidate(manifest, method)
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
        ax.plot(xs, ys, "o", color="#888", label="run headline (its candidate)")
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
        method = method or _candidate(latest, None)
    metric = metric or "f1_macro"

    parts = ["<h1>mmp dashboard</h1>", f"<p class='muted'>store: <code>{_esc(store.location)}</code></p>"]
    if champion:
        value = _entry_value(champion)
        parts.append(
            f"<p id='champion'>Champion: <b data-run-id='{_esc(champion['run_id'])}'>{_esc(champion['run_id'])}</b>"
            f" ({_esc(method)}, {_esc(metric)} {_fmt(value)}), since {_esc(champion.get('updated_at'))}</p>"
        )
        if chosen := champion.get("metrics", {}).get("chosen"):  # why this method was the run's candidate
            parts.append(f"<p id='champion-chosen'>{_esc(method)} chosen by {_esc(chosen)}</p>")
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
                f"<td class='l'>{_opt(_candidate(manifest, None))}</td>"
                f"<td class='l'>{link}</td></tr>"
            )
        parts.append(
            "<table id='runs'><tr><th class='l'>run</th><th class='l'>created</th><th class='l'>data version</th>"
            f"<th class='l'>params</th><th class='l'>commit</th><th>headline {_esc(metric)}</th>"
            f"<th class='l'>status</th><th class='l'>candidate</th><th class='l'></th></tr>{''.join(rows)}</table>"
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
            parts.append(_paired_html(paired_table(results, TABLE_RATE)))
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
