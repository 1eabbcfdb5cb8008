"""The dashboard rendered by a real browser: headless Debian Chromium loads dashboard/index.html from file://."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmp_core.publishing.dashboard import write_dashboard
from mmp_core.publishing.promotion import build_run_metadata, headline_summary
from mmp_core.storage.local_store import LocalStore
from tests.results_fixtures import metrics_document

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (CI installs it)")


def make_metrics(method: str, base: float) -> dict:
    return metrics_document(method, lambda t, r: base - 0.3 * r, micro_offset=None)


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    env = {**os.environ, "HOME": str(tmp_path)}  # keep the browser's caches out of the real home
    return subprocess.run(command, capture_output=True, text=True, timeout=90, env=env, check=True)


class _Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.imgs: list[dict] = []
        self._table = self._row = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
            self.rows.setdefault(self._table, [])
        elif tag == "tr":
            self._row = []
        elif tag == "img":
            self.imgs.append(attrs)

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows[self._table].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._row is not None and data.strip():
            self._row.append(data.strip())


@pytest.fixture
def dashboard(tmp_path) -> Path:
    store = LocalStore(tmp_path / "store")
    for i, (run_id, base, promote) in enumerate([("run-a", 0.60, True), ("run-b", 0.65, True), ("run-c", 0.62, False)]):
        results = {"input": make_metrics("input", base), "baseline": make_metrics("baseline", base - 0.1)}
        files = {}
        for method, metrics in results.items():
            path = tmp_path / f"{run_id}-{method}.json"
            path.write_text(json.dumps(metrics))
            files[f"results/{method}/metrics.json"] = path
        meta = build_run_metadata(results, data_version=f"v{i}", created_at=f"2026-02-0{i + 1}T00:00:00+00:00")
        store.publish_run(run_id, files, meta)
        if promote:
            store.set_champion(run_id, headline_summary(results["input"]), reason=f"promoted {run_id}")
    write_dashboard(store)
    return tmp_path / "store" / "dashboard" / "index.html"


def test_dashboard_dom_in_chromium(dashboard, tmp_path):
    result = chromium(tmp_path, "--dump-dom", dashboard.as_uri())
    dom = _Rows()
    dom.feed(result.stdout)
    history = dom.rows["champion-history"]
    assert history[0][:2] == ["#", "run"]
    assert [row[:2] for row in history[1:]] == [["1", "run-a"], ["2", "run-b"]]
    assert [row[5] for row in history[1:]] == ["0.3900", "0.4400"]  # base - 0.3 * 0.7
    assert [row[0] for row in dom.rows["runs"][1:]] == ["run-c", "run-b", "run-a"]
    assert [row[5] for row in dom.rows["runs"][1:]] == ["0.4100", "0.4400", "0.3900"]
    latest = {row[0]: row[1:] for row in dom.rows["latest-table-70"][1:]}
    assert latest == {"baseline": ["0.3100"] * 3, "input": ["0.4100"] * 3}
    chart = next(img for img in dom.imgs if img.get("id") == "history-chart")
    assert chart["src"].startswith("data:image/png;base64,")
    assert "Champion: run-b" in " ".join(result.stdout.split()).replace('<b data-run-id="run-b">', "")


def test_dashboard_screenshot_in_chromium(dashboard, tmp_path):
    shot = tmp_path / "dashboard.png"
    chromium(tmp_path, "--window-size=1200,1600", "--hide-scrollbars", f"--screenshot={shot}", dashboard.as_uri())
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1200, 1600)
        rgb = image.convert("RGB")
    pixels = np.asarray(rgb, dtype=np.int16)
    packed = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    assert len(np.unique(packed)) > 50  # text, tables and the chart were painted, not a blank page
    # The chart's champion line (#1a7f37) only appears if the embedded PNG was decoded and painted.
    near = (np.abs(pixels - np.array([0x1A, 0x7F, 0x37])) < 12).all(axis=2)
    ys, _ = np.nonzero(near)
    assert len(ys) > 300, len(ys)
    assert min(ys) > 150 and max(ys) < 900  # within the chart, below the champion table
