"""Artifact store (local directory and S3 on a real moto server), the champion pointer and the promotion rule."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from mmp_core import s3 as s3util
from mmp_core.publishing.promotion import build_run_metadata, decide_promotion, headline_summary
from mmp_core.s3 import validate_run_id
from mmp_core.storage import open_store
from mmp_core.storage.local_store import LocalStore
from mmp_core.storage.s3_store import S3Store
from tests.results_fixtures import metrics_document


def make_metrics(method: str = "input", base: float = 0.6, slope: float = 0.3, bump: dict | None = None) -> dict:
    """A metrics.json dict: f1_macro falls linearly with the missing rate; `bump` adds to chosen cells."""
    bump = bump or {}
    return metrics_document(method, lambda t, r: base - slope * r + bump.get((t, r), 0.0))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def run_files(tmp_path) -> dict[str, Path]:
    src = tmp_path / "src"
    (src / "adapter" / "sub").mkdir(parents=True)
    (src / "adapter" / "prompts.safetensors").write_bytes(os.urandom(70_000))
    (src / "adapter" / "sub" / "config.json").write_text('{"prompt_length": 16}')
    (src / "metrics.json").write_text(json.dumps(make_metrics()))
    (src / "grid.tsv").write_text("missing_type\tmissing_rate\tf1_macro\ntext\t0.0\t0.6\n")
    return {
        "adapters/input": src / "adapter",  # a directory: expanded to one key per file
        "metrics/input.json": src / "metrics.json",
        "grid.tsv": src / "grid.tsv",
    }


EXPECTED_KEYS = [
    "adapters/input/prompts.safetensors",
    "adapters/input/sub/config.json",
    "grid.tsv",
    "metrics/input.json",
]


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("moto_server")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(f"s3://{bucket}/team/mmp", endpoint_url=endpoint)


def test_publish_list_fetch_round_trip(store, run_files, tmp_path):
    metadata = build_run_metadata(
        {"input": make_metrics()}, data_version="d1", params_fingerprint="p1", git_commit="abc123"
    )
    manifest = store.publish_run("20260101-000000-a1", run_files, metadata)

    assert [f["key"] for f in manifest["files"]] == EXPECTED_KEYS
    local_of = {
        "adapters/input/prompts.safetensors": run_files["adapters/input"] / "prompts.safetensors",
        "adapters/input/sub/config.json": run_files["adapters/input"] / "sub" / "config.json",
        "grid.tsv": run_files["grid.tsv"],
        "metrics/input.json": run_files["metrics/input.json"],
    }
    for entry in manifest["files"]:
        assert entry["size"] == local_of[entry["key"]].stat().st_size
        assert entry["sha256"] == sha(local_of[entry["key"]])
    assert manifest["total_size"] == sum(p.stat().st_size for p in local_of.values())
    meta = manifest["metadata"]
    assert (meta["data_version"], meta["params_fingerprint"], meta["git_commit"]) == ("d1", "p1", "abc123")
    assert meta["methods"] == ["input"]
    assert meta["headline"]["input"]["value"] == pytest.approx(0.6 - 0.3 * 0.7)
    assert manifest["created_at"] == meta["created_at"]

    assert store.list_runs() == ["20260101-000000-a1"]
    assert store.get_manifest("20260101-000000-a1") == manifest
    assert store.read_run_json("20260101-000000-a1", "metrics/input.json") == make_metrics()

    dest = store.fetch_run("20260101-000000-a1", tmp_path / "fetched")
    for key, path in local_of.items():
        assert (dest / key).read_bytes() == path.read_bytes()
    assert json.loads((dest / "manifest.json").read_text()) == manifest

    # A second run: listed too; run_manifests() is in creation order.
    later = dict(metadata, created_at="2099-01-01T00:00:00+00:00")
    store.publish_run("00-later", {"grid.tsv": run_files["grid.tsv"]}, later)
    assert store.list_runs() == ["00-later", "20260101-000000-a1"]
    assert [m["run_id"] for m in store.run_manifests()] == ["20260101-000000-a1", "00-later"]
    assert store.latest_run()["run_id"] == "00-later"


def test_publish_is_idempotent_and_runs_are_immutable(store, run_files, tmp_path):
    first = store.publish_run("r1", run_files, {"data_version": "d1"})
    assert store.publish_run("r1", run_files, {"data_version": "d1"}) == first  # a retried task
    changed = tmp_path / "other.tsv"
    changed.write_text("different\n")
    with pytest.raises(FileExistsError, match="already published"):
        store.publish_run("r1", {**run_files, "grid.tsv": changed}, {})


def test_failed_publish_leaves_no_manifest_and_retry_cleans_up(store, run_files, monkeypatch):
    calls = []
    real_put = store._put_file

    def flaky_put(key, path):
        calls.append(key)
        if len(calls) == 3:
            raise ConnectionError("simulated network failure")
        return real_put(key, path)

    monkeypatch.setattr(store, "_put_file", flaky_put)
    with pytest.raises(ConnectionError):
        store.publish_run("half", run_files, {})
    # Two objects made it, but no manifest: the run does not exist for readers.
    assert store._list("runs/half") == ["runs/half/" + k for k in EXPECTED_KEYS[:2]]
    assert store.list_runs() == []
    assert store.get_manifest("half", missing_ok=True) is None
    with pytest.raises(FileNotFoundError):
        store.fetch_run("half", "/nonexistent-never-written")
    with pytest.raises(FileNotFoundError):
        store.set_champion("half", {"value": 1.0})

    # The retry publishes another file set: leftovers of the failed attempt are removed, and a key that was a
    # folder ("adapters/input/...") can now be a file.
    monkeypatch.setattr(store, "_put_file", real_put)
    files = {"grid.tsv": run_files["grid.tsv"], "adapters/input": run_files["metrics/input.json"]}
    manifest = store.publish_run("half", files, {})
    assert [f["key"] for f in manifest["files"]] == ["adapters/input", "grid.tsv"]
    assert store._list("runs/half") == ["runs/half/adapters/input", "runs/half/grid.tsv", "runs/half/manifest.json"]
    assert store.list_runs() == ["half"]


def test_s3_server_killed_mid_publish(moto_server_factory, run_files, monkeypatch):
    """A real outage: the moto server process dies after two uploads; publish fails, the manifest is never sent."""
    import boto3
    from botocore.config import Config

    server = moto_server_factory()
    boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket="outage")
    # One attempt per request (the default client retries with backoff: same outcome, seconds slower).
    client = boto3.client("s3", endpoint_url=server.url, config=Config(retries={"max_attempts": 1}))
    store = S3Store("s3://outage/p", client=client)
    uploads, manifests = [], []
    real_upload = s3util.upload_file

    def upload_then_kill(client, path, bucket, key, content_type=None):
        checksum = real_upload(client, path, bucket, key, content_type)
        uploads.append(key)
        if len(uploads) == 2:
            server.stop()
        return checksum

    monkeypatch.setattr(s3util, "upload_file", upload_then_kill)
    monkeypatch.setattr(store, "_write_manifest", lambda *a: manifests.append(a))
    with pytest.raises(Exception, match=r"(?i)connect|endpoint"):
        store.publish_run("outage-run", run_files, {})
    assert uploads == ["p/runs/outage-run/" + k for k in EXPECTED_KEYS[:2]]
    assert manifests == []


def test_fetch_detects_corruption(tmp_path, run_files):
    store = LocalStore(tmp_path / "store")
    store.publish_run("r1", run_files, {})
    (tmp_path / "store" / "runs" / "r1" / "grid.tsv").write_text("tampered\n")
    with pytest.raises(ValueError, match="fails verification"):
        store.fetch_run("r1", tmp_path / "out")
    assert not (tmp_path / "out" / "grid.tsv").exists()
    with pytest.raises(ValueError, match="checksum"):
        store.read_run_file("r1", "grid.tsv")


@pytest.mark.parametrize(
    "run_id", ["..", "../x", "/abs", "a/b", "a b", "", "a..b", ".hidden", "-x", "é", "r;rm", "x" * 129]
)
def test_run_id_validation(tmp_path, run_files, run_id):
    with pytest.raises(ValueError, match="run id"):
        validate_run_id(run_id)
    with pytest.raises(ValueError):
        LocalStore(tmp_path / "s").publish_run(run_id, run_files, {})
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.json"))


@pytest.mark.parametrize(
    "key", ["../escape", "/etc/passwd", "a//b", "a/../b", "a/./b", "x y", "trail/", "manifest.json", "q?x", "a\\b"]
)
def test_artifact_key_validation(tmp_path, run_files, key):
    store = LocalStore(tmp_path / "s")
    with pytest.raises(ValueError):
        store.publish_run("r1", {key: run_files["grid.tsv"]}, {})
    assert store.list_runs() == []
    assert not (tmp_path / "escape").exists()


def test_key_is_file_and_folder_rejected(tmp_path, run_files):
    with pytest.raises(ValueError, match="both a file and a folder"):
        LocalStore(tmp_path / "s").publish_run("r1", {"a": run_files["grid.tsv"], "a/b": run_files["grid.tsv"]}, {})


def test_open_store_and_locations(tmp_path, moto_server):
    local = open_store(str(tmp_path / "st"))
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "st").resolve()
    assert isinstance(open_store(f"file://{tmp_path}/st"), LocalStore)
    remote = open_store("s3://my-bucket/some/prefix", endpoint_url=moto_server)
    assert isinstance(remote, S3Store)
    assert remote.url_for("champion.json") == "s3://my-bucket/some/prefix/champion.json"
    for bad in ("s3://Bad_Bucket/x", "s3://bucket/../x", "http://host/x"):
        with pytest.raises(ValueError):
            open_store(bad)
    with pytest.raises(ValueError):
        local.write_text("runs/x/report.html", "no")  # runs are written only through publish_run


def test_champion_pointer(store, run_files):
    assert store.get_champion() is None
    for run_id in ("r1", "r2"):
        store.publish_run(run_id, run_files, {})
    first = store.set_champion("r1", {"method": "input", "primary_metric": "f1_macro", "value": 0.4}, reason="first")
    assert first["run_id"] == "r1" and first["previous_run_id"] is None
    second = store.set_champion("r2", {"method": "input", "primary_metric": "f1_macro", "value": 0.45}, reason="better")
    pointer = store.get_champion()
    assert pointer == second
    assert pointer["run_id"] == "r2" and pointer["previous_run_id"] == "r1"
    assert pointer["metrics"]["value"] == 0.45
    assert [(h["run_id"], h["metrics"]["value"], h["reason"]) for h in pointer["history"]] == [
        ("r1", 0.4, "first"),
        ("r2", 0.45, "better"),
    ]
    if isinstance(store, LocalStore):  # atomic replace: no temp file left behind
        assert sorted(p.name for p in store.root.iterdir()) == [".champion.json.lock", "champion.json", "runs"]


def test_headline_summary():
    summary = headline_summary(make_metrics("attention"))
    assert summary["method"] == "attention"
    assert summary["primary_metric"] == "f1_macro"
    assert (summary["missing_type"], summary["missing_rate"]) == ("both", 0.7)
    assert summary["value"] == pytest.approx(0.39)


# ---- the promotion rule ----
HEAD = {"missing_type": "both", "missing_rate": 0.7}


def decide(champion, challenger, tolerance=0.02):
    return decide_promotion(champion, challenger, metric="f1_macro", headline=HEAD, tolerance=tolerance)


def test_promotion_no_champion():
    decision = decide(None, make_metrics()["grid"])
    assert decision.promote is True
    assert "no champion" in decision.reason
    assert decision.challenger_value == pytest.approx(0.39) and decision.champion_value is None
    assert len(decision.rows) == 33 and {r["status"] for r in decision.rows} == {"new"}


def test_promotion_promotes_when_headline_better_and_no_cell_regresses():
    champion = make_metrics()
    # Headline +0.05; one cell worse but within tolerance (-0.015 > -0.02).
    challenger = make_metrics(bump={("both", 0.7): 0.05, ("text", 0.3): -0.015})
    decision = decide(champion, challenger)  # whole metrics dicts are accepted too
    assert decision.promote is True, decision.reason
    assert decision.challenger_value - decision.champion_value == pytest.approx(0.05)
    by_cell = {(r["missing_type"], r["missing_rate"]): r for r in decision.rows}
    assert by_cell[("text", 0.3)]["status"] == "worse_within_tolerance"
    assert by_cell[("text", 0.3)]["delta"] == pytest.approx(-0.015)
    assert by_cell[("both", 0.7)]["status"] == "better"
    assert by_cell[("image", 0.0)]["status"] == "equal"
    assert decision.regressions == []
    assert "promoted" in decision.reason and "+0.0500" in decision.reason
    assert decision.to_dict()["headline"] == HEAD
    assert "| text | 0.3 |" in decision.to_markdown()


def test_promotion_rejects_cell_regression_beyond_tolerance():
    champion = make_metrics()["grid"]
    challenger = make_metrics(bump={("both", 0.7): 0.10, ("image", 0.9): -0.03})["grid"]
    decision = decide(champion, challenger)
    assert decision.promote is False
    assert [(r["missing_type"], r["missing_rate"]) for r in decision.regressions] == [("image", 0.9)]
    assert decision.regressions[0]["delta"] == pytest.approx(-0.03)
    assert "rejected" in decision.reason and "image@0.9 -0.0300" in decision.reason
    # The same regression passes with a looser tolerance.
    assert decide(champion, challenger, tolerance=0.05).promote is True


def test_promotion_rejects_when_headline_not_strictly_better():
    champion = make_metrics()["grid"]
    same = make_metrics(bump={("text", 0.0): 0.2})["grid"]  # better elsewhere, headline equal
    decision = decide(champion, same)
    assert decision.promote is False
    assert "headline not better" in decision.reason
    worse_head = make_metrics(bump={("both", 0.7): -0.01})["grid"]  # within tolerance but worse
    assert decide(champion, worse_head).promote is False


def test_promotion_rejects_missing_cell_and_validates_input():
    champion = make_metrics()["grid"]
    challenger = [c for c in make_metrics(bump={("both", 0.7): 0.1})["grid"] if c["missing_type"] != "image"]
    decision = decide(champion, challenger)
    assert decision.promote is False
    assert len(decision.regressions) == 11 and {r["status"] for r in decision.regressions} == {"missing"}
    with pytest.raises(ValueError, match="headline"):
        decide(champion, [c for c in champion if c["missing_type"] != "both"])
    with pytest.raises(ValueError, match="tolerance"):
        decide(champion, champion, tolerance=-0.1)
    with pytest.raises(ValueError, match="no metric"):
        decide_promotion(None, champion, metric="accuracy", headline=("both", 0.7), tolerance=0.0)


def test_s3_multipart_file_round_trip(moto_server, s3_bucket, tmp_path):
    """Files above boto3's multipart threshold (8 MiB) go up in parts and still verify on fetch."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024))
    store = S3Store(f"s3://{s3_bucket}", endpoint_url=moto_server)
    manifest = store.publish_run("big", {"adapters/big.bin": big}, {})
    head = store.client.head_object(Bucket=s3_bucket, Key="runs/big/adapters/big.bin")
    assert "-" in head["ETag"]  # multipart ETag
    assert head["Metadata"]["sha256"] == manifest["files"][0]["sha256"] == sha(big)
    out = store.fetch_run("big", tmp_path / "out")
    assert (out / "adapters" / "big.bin").read_bytes() == big.read_bytes()


def test_stores_pickle_without_their_client(moto_server, s3_bucket, tmp_path, run_files):
    """Stores can be task parameters (Prefect hashes/pickles them): the boto3 client is recreated on use."""
    import pickle

    store = S3Store(f"s3://{s3_bucket}/p", endpoint_url=moto_server)
    store.publish_run("r1", run_files, {})
    clone = pickle.loads(pickle.dumps(store))
    assert clone._client is None and clone.list_runs() == ["r1"]
    local = pickle.loads(pickle.dumps(LocalStore(tmp_path / "s")))
    assert local.root == (tmp_path / "s").resolve()
