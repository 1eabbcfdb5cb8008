"""The run report and the dashboard HTML (content checks; the Chromium rendering is in test_dashboard_chromium)."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import pytest

from mmp_core.publishing.dashboard import render_dashboard, write_dashboard
from mmp_core.publishing.promotion import build_run_metadata, decide_promotion, headline_summary
from mmp_core.publishing.report import load_run_results, prompt_margins, rate_table, render_report, scenario_table
from mmp_core.storage.local_store import LocalStore
from tests.results_fixtures import TYPES, metrics_document

# Distinct, recognisable values per (method, type) at 70%: f1 = base - slope * rate.
BASES = {"baseline": 0.50, "attention": 0.55, "input": 0.60}
SLOPES = {"text": 0.20, "image": 0.30, "both": 0.40}


def make_metrics(method: str, shift: float = 0.0) -> dict:
    return metrics_document(method, lambda t, r: BASES[method] + shift - SLOPES[t] * r)


def make_results(shift: float = 0.0) -> dict:
    return {m: make_metrics(m, shift) for m in ("baseline", "attention", "input")}


class _Collector(HTMLParser):
    """Collects <img> srcs, external references and the text of each table row by table id."""

    def __init__(self):
        super().__init__()
        self.imgs, self.external, self.tables = [], [], {}
        self._table, self._row = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs)
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            if re.match(r"(?i)(https?:)?//", value):
                self.external.append(value)
        if tag in ("script", "link"):
            self.external.append(tag)
        if tag == "table":
            self._table = attrs.get("id")
            self.tables.setdefault(self._table, [])
        if tag == "tr":
            self._row = []

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    return collector


def test_render_report_has_curves_table_and_versions():
    run_info = {
        "run_id": "20260102-r7",
        "created_at": "2026-01-02T03:04:05+00:00",
        "data_version": "data-md5-1234",
        "params_fingerprint": "params-abcd",
        "git_commit": "0123456789abcdef",
        "promotion": decide_promotion(
            None, make_metrics("input")["grid"], metric="f1_macro", headline=("both", 0.7), tolerance=0.01
        ),
    }
    html = render_report(make_results(), run_info)
    doc = parse(html)
    assert doc.external == []  # self-contained: no script, no stylesheet link, no remote URL

    # One robustness-curve PNG per missing type, embedded as a data URI.
    curves = [img for img in doc.imgs if img.get("data-type")]
    assert [img["data-type"] for img in curves] == ["text", "image", "both"]
    for img in curves:
        assert img["src"].startswith("data:image/png;base64,")
        png = base64.b64decode(img["src"].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # The 70% table: methods × types with the exact values.
    rows = doc.tables["table-70"]
    assert rows[0] == ["method", "text", "image", "both"]
    body = {r[0]: r[1:] for r in rows if r[0] in BASES}
    for method, base in BASES.items():
        assert body[method] == [f"{base - SLOPES[t] * 0.7:.4f}" for t in TYPES]
    assert body["input"] == ["0.4600", "0.3900", "0.3200"]

    info = dict(doc.tables["run-info"])
    assert info["data_version"] == "data-md5-1234"
    assert info["params_fingerprint"] == "params-abcd"
    assert info["git_commit"] == "0123456789abcdef"
    assert info["run_id"] == "20260102-r7"
    assert info["primary_metric"] == "f1_macro"
    assert "no champion yet" in html
    headline = {r[0]: r[1:] for r in doc.tables["headline"][1:]}
    assert headline["attention"] == ["both@0.7", "both@0.7", "0.2700"]


def test_render_report_escapes_and_validates():
    results = {"input": make_metrics("input")}
    html = render_report(results, {"run_id": "r1", "data_version": "<script>alert(1)</script>"})
    assert "<script>" not in html and "&lt;script&gt;" in html
    with pytest.raises(ValueError):
        render_report({}, {"run_id": "r1"})
    assert rate_table(results)["input"] == {"text": pytest.approx(0.46), "image": pytest.approx(0.39), "both": 0.32}


def publish(store, run_id, results, created_at, tmp_path, report=True):
    files = {}
    for method, metrics in results.items():
        path = tmp_path / f"{run_id}-{method}.json"
        path.write_text(json.dumps(metrics))
        files[f"results/{method}/metrics.json"] = path  # where the pipeline publishes them
    if report:
        page = tmp_path / f"{run_id}-report.html"
        page.write_text(render_report(results, {"run_id": run_id}))
        files["report.html"] = page
    metadata = build_run_metadata(
        results, data_version=f"data-{run_id}", params_fingerprint="p-1", git_commit="c0ffee" * 6, created_at=created_at
    )
    return store.publish_run(run_id, files, metadata)


def build_store(tmp_path) -> LocalStore:
    """Three runs: r1 champion, r2 promoted (+0.05), r3 rejected (-0.02)."""
    store = LocalStore(tmp_path / "store")
    for i, (run_id, shift, promote) in enumerate([("r1", 0.0, True), ("r2", 0.05, True), ("r3", -0.02, False)]):
        results = make_results(shift)
        publish(store, run_id, results, f"2026-01-0{i + 1}T00:00:00+00:00", tmp_path)
        if promote:
            store.set_champion(run_id, headline_summary(results["input"]), reason=f"promoted {run_id}")
    return store


def test_dashboard_history_runs_and_latest_grid(tmp_path):
    store = build_store(tmp_path)
    location = write_dashboard(store)
    assert location == (tmp_path / "store" / "dashboard" / "index.html").as_uri()
    html = (tmp_path / "store" / "dashboard" / "index.html").read_text()
    assert html == render_dashboard(store)
    doc = parse(html)
    assert doc.external == []

    history = doc.tables["champion-history"][1:]
    assert [r[:2] for r in history] == [["1", "r1"], ["2", "r2"]]
    assert history[0][3:] == ["input", "both@0.7", "0.3200", "promoted r1"]  # method input, headline both@0.7
    assert history[1][3:] == ["input", "both@0.7", "0.3700", "promoted r2"]

    runs = {r[0]: r for r in doc.tables["runs"][1:]}
    assert list(runs) == ["r3", "r2", "r1"]  # newest first
    assert runs["r3"][1:3] == ["2026-01-03T00:00:00+00:00", "data-r3"]
    assert runs["r3"][5] == "0.3000" and runs["r2"][6] == "champion" and runs["r1"][6] == "former champion"
    assert "href='../runs/r2/report.html'" in html

    chart = next(img for img in doc.imgs if img.get("id") == "history-chart")
    assert base64.b64decode(chart["src"].split(",", 1)[1])[:4] == b"\x89PNG"

    latest = {r[0]: r[1:] for r in doc.tables["latest-table-70"] if r[0] in BASES}
    assert latest["input"] == ["0.4400", "0.3700", "0.3000"]  # r3 = shift -0.02
    assert "Champion: " in html and "r2" in html


def test_dashboard_empty_store_and_results_loader(tmp_path):
    store = LocalStore(tmp_path / "empty")
    html = render_dashboard(store)
    assert "No champion yet" in html and "No published runs yet" in html
    full = build_store(tmp_path)
    loaded = load_run_results(full, "r2")
    assert list(loaded) == ["baseline", "attention", "input"]
    assert loaded["input"] == make_metrics("input", 0.05)


def test_scenario_table_and_prompt_margins_say_whether_prompts_beat_the_baseline_beyond_seed_noise():
    results = make_results()
    table = scenario_table(results)
    assert list(table) == ["baseline", "attention", "input"]
    assert list(table["input"]) == ["text", "image", "both", "complete"]
    assert table["input"]["text"][0] == pytest.approx(0.60 - 0.20 * 0.7)
    assert table["baseline"]["complete"][0] == pytest.approx(0.50)
    assert table["input"]["text"][1] is None  # one evaluation: no spread
    assert prompt_margins(table)["text"]["clear"] is None

    def with_sd(sd: float, seeds: tuple = (0, 1, 2)) -> dict:  # as `mmp aggregate` writes a folded result
        for metrics in results.values():
            metrics["seeds"], metrics["grid_sd"] = list(seeds), [{**row, "f1_macro": sd} for row in metrics["grid"]]
        return prompt_margins(scenario_table(results))

    one_seed = with_sd(0.0, seeds=(0,))  # one seed's sd is 0 by definition: not a spread to judge a lead by
    assert all(m["sd"] is None and m["clear"] is None for m in one_seed.values())
    one_seed_report = render_report(results, {"run_id": "r1"})
    assert "id='margins'" not in one_seed_report and "± 0.0000" not in one_seed_report

    small = with_sd(0.01)  # input leads the baseline by 0.10 in every column
    assert small["both"]["method"] == "input"
    assert small["both"]["margin"] == pytest.approx(0.10)
    assert all(m["clear"] for m in small.values())
    report = render_report(results, {"run_id": "r1"})
    assert "<li data-column='both'>both: input +0.1000 (sd 0.0100; more than 2 sd)</li>" in report
    assert not any(m["clear"] for m in with_sd(0.06).values())  # 0.10 is within two sd of 0.06
    assert "both: input +0.1000 (sd 0.0600; within 2 sd)" in render_report(results, {"run_id": "r1"})
    assert prompt_margins({"input": table["input"]}) == {}  # no baseline: nothing to compare
    # The fine-tuned reference row leads everything, but it is no prompt method.
    with_finetune = {**table, "finetune": {c: [v[0] + 0.5, None] for c, v in table["input"].items()}}
    assert {m["method"] for m in prompt_margins(with_finetune).values()} == {"input"}
