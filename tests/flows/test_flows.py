"""The Prefect flows end to end on a tiny copy of the project, against a real moto S3 server over HTTP:
retrain three times (publish + promote; unchanged no-op; data change judged by the promotion rule), the
DVC remote on the same S3, publish retries when the S3 server goes away, and a deployment on a real
`prefect server` with its schedule."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
import yaml

from mmp_core.storage import open_store
from tests.conftest import MotoServer, flow_env
from tests.flows.projects import ARTIFACTS, DVC_BUCKET, copy_project
from tests.model_fixtures import REPO

pytestmark = pytest.mark.slow


def run_flow(module: str, project: Path, endpoint: str, *extra: str) -> str:
    """`module` (a flow) on `project` with the S3 store and remote at `endpoint`; its log (stdout, then stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--repo", str(project), "--store", f"s3://{ARTIFACTS}/team",
         "--s3-endpoint-url", endpoint, *extra],
        cwd=project, env=flow_env(project.parent, endpoint), capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, f"{module} failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    return result.stdout + result.stderr


def constructed_champion(store, run_id: str, offset: float, project: Path) -> None:
    """Publish a run whose input-method grid is the current results' shifted by `offset` in every cell, and
    make it the champion."""
    metrics = json.loads((project / "results" / "input" / "metrics.json").read_text())
    for row in metrics["grid"]:
        row["f1_macro"] += offset
    metrics["headline"]["f1_macro"] += offset
    value = metrics["headline"]["f1_macro"]
    path = project.parent / f"{run_id}-metrics.json"
    path.write_text(json.dumps(metrics))
    store.publish_run(run_id, {"results/input/metrics.json": path}, {"data_version": "constructed"})
    store.set_champion(run_id, {"method": "input", "primary_metric": "f1_macro", "value": value}, reason="test")


@pytest.fixture(scope="module")
def s3(aws_test_env, tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    client = boto3.client(
        "s3", endpoint_url=server.url, aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name="us-east-1",
    )  # fmt: skip
    for bucket in (ARTIFACTS, DVC_BUCKET):
        client.create_bucket(Bucket=bucket)
    yield server.url, client
    server.stop()


@pytest.mark.slow(seconds=70)
def test_retrain_publishes_then_skips_then_judges_a_data_change(tmp_path, s3, first_run):
    endpoint, client = s3
    project = copy_project(first_run, tmp_path / "project", endpoint)
    store = open_store(f"s3://{ARTIFACTS}/team", endpoint_url=endpoint)

    # 1. First retrain: nothing published yet, so the pipeline runs (its stages are up to date: the project has
    # run once), then published and promoted (no champion yet); DVC outputs pushed.
    # (One epoch on 64 samples need not learn: the learning gate is tested in tests/publishing/test_publish_learning.py.)
    out = run_flow("flows.retrain", project, endpoint, "--push", "--no-require-learning")
    assert "inputs changed" in out and "promoted" in out and "Report:" in out and "Dashboard:" in out
    # Every DVC stage is its own task, and every one is skipped: the project has run these inputs.
    assert "DVC stages: 0 ran, 11 skipped (up to date)" in out, out[-3000:]
    for stage in ("generate", "prepare", "train@input-0", "evaluate@baseline-0", "aggregate@attention"):
        assert f"Task run '{stage}' - Finished in state Skipped" in out, out[-3000:]
    runs = store.list_runs()
    assert len(runs) == 1
    manifest = store.get_manifest(runs[0])
    keys = {f["key"] for f in manifest["files"]}
    for method in ("baseline", "attention", "input"):
        assert f"results/{method}/metrics.json" in keys
        assert f"models/{method}/adapter/adapter_model.safetensors" in keys
    assert {"report.html", "decision.json", "params.yaml", "dvc.lock"} <= keys
    assert store.get_champion()["run_id"] == runs[0]
    dashboard = client.get_object(Bucket=ARTIFACTS, Key="team/dashboard/index.html")["Body"].read().decode()
    assert runs[0] in dashboard
    # promote_method best (the default): the candidate is the best validation score, said everywhere.
    selection = manifest["metadata"]["selection"]
    assert selection["rule"] == "best" and manifest["metadata"]["promote_method"] == selection["method"]
    assert f"Candidate: {selection['method']}, best validation f1_macro " in out, out
    assert "(validation split at both@0.7, the headline cell)" in out
    assert store.get_champion()["metrics"]["method"] == selection["method"]
    assert "id='champion-chosen'" in dashboard
    remote = client.list_objects_v2(Bucket=DVC_BUCKET, Prefix="cache/")
    assert remote.get("KeyCount", 0) > 0, "dvc push sent the pipeline outputs to the S3 remote"

    # 2. Nothing changed: ends before the pipeline (no stage task, no training), publishes nothing.
    out = run_flow("flows.retrain", project, endpoint, "--no-require-learning")
    assert f"Nothing changed since run {runs[0]}" in out
    assert "not retraining" in out and "Task run 'train@" not in out and "DVC stages:" not in out, out[-3000:]
    assert store.list_runs() == runs

    # The pipeline on inputs that the store's latest run has: nothing to run and nothing to publish, said
    # before Prefect even starts.
    again = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--repo", str(project), "--store", f"s3://{ARTIFACTS}/team",
         "--s3-endpoint-url", endpoint],
        cwd=project, env=flow_env(tmp_path, endpoint), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "nothing to run, nothing published" in again.stdout
    assert "Starting temporary server" not in again.stdout + again.stderr
    assert store.list_runs() == runs

    # 3. The data changes; the champion (constructed) is far better everywhere: retrained, published, rejected.
    # (Constructed from the first run's results: the new data's results are within 0.5 of them.) One method is
    # enough to judge: the team now trains input-level prompts only.
    constructed_champion(store, "constructed-high", 0.5, project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["generate"]["label_noise"] = 0.05
    params["methods"] = ["input"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run_flow("flows.retrain", project, endpoint, "--no-require-learning")
    # generate and prepare ran before the pipeline (retrain brings the data up to date first, to compare it)
    assert "(published)" in out and "DVC stages: 3 ran, 2 skipped" in out, out[-3000:]
    new_runs = [r for r in store.list_runs() if r not in (*runs, "constructed-high")]
    assert len(new_runs) == 1
    decision = store.read_run_json(new_runs[0], "decision.json")
    assert decision["promote"] is False and decision["rows"], decision
    assert store.get_champion()["run_id"] == "constructed-high"
    assert store.get_manifest(new_runs[0])["metadata"]["data_version"] != manifest["metadata"]["data_version"]

    # The same challenger against a constructed champion that is worse everywhere: promoted by the rule.
    from mmp_core.publishing.publish import assemble_run, project_versions, promote

    constructed_champion(store, "constructed-low", -0.1, project)
    versions = project_versions(project)
    bundle = assemble_run(
        project, store, methods=("input",), promote_method="input", tolerance=0.01,
        run_id="rejudged", versions=versions, require_learning=False,
    )  # fmt: skip
    assert bundle.decision.promote, bundle.decision.reason
    store.publish_run(bundle.run_id, bundle.files, bundle.metadata)
    assert promote(store, bundle)[0]["run_id"] == "rejudged"
    assert store.get_champion()["previous_run_id"] == "constructed-low"


def test_bad_flow_parameters_fail_before_any_work(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--repo", str(tmp_path), "--run-id", "../escape"],
        cwd=REPO, env=flow_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "invalid run id" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "flows.retrain", "--repo", str(tmp_path), "--promote-method", "input",
         "--methods", "baseline"],
        cwd=REPO, env=flow_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "promote_method 'input' must be one of methods" in result.stderr
    assert not (tmp_path / "store").exists()


def test_closing_lines_show_every_method_by_missing_type_with_the_seed_noise(capsys):
    from flows.pipeline import print_summary

    cells = {  # mean, sd over three seeds
        "baseline": {"text": [0.647, 0.022], "image": [0.631, 0.005], "both": [0.668, 0.002], "complete": [0.804, 0.003]},
        "attention": {"text": [0.653, 0.028], "image": [0.646, 0.002], "both": [0.672, 0.004], "complete": [0.805, 0.009]},
        "input": {"text": [0.634, 0.004], "image": [0.613, 0.002], "both": [0.654, 0.009], "complete": [0.787, 0.003]},
    }  # fmt: skip
    print_summary({"status": "published", "run_id": "r1", "decision": "kept the champion", "seeds": [0, 1, 2],
                   "metric": "f1_macro", "table": cells, "table_rate": 0.7, "headline": {}, "report": "file:///r",
                   "dashboard": "file:///d"})  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert "  test f1_macro by missing type, mean ± sd over training seeds [0, 1, 2]:" in lines
    assert lines[lines.index("  test f1_macro by missing type, mean ± sd over training seeds [0, 1, 2]:") + 1].split() == [
        "method", "text", "70%", "image", "70%", "both", "70%", "complete"]  # fmt: skip
    rows = {line.split()[0]: line for line in lines if line.split()[:1] in (["baseline"], ["attention"], ["input"])}
    assert rows["attention"].split() == ["attention", "0.6530", "±", "0.0280", "0.6460", "±", "0.0020",
                                         "0.6720", "±", "0.0040", "0.8050", "±", "0.0090"]  # fmt: skip
    verdict = next(line for line in lines if line.startswith("  best prompts vs baseline:"))
    assert "text attention +0.0060 (within 2 sd)" in verdict  # sd 0.028: noise
    assert "image attention +0.0150 (> 2 sd)" in verdict  # sd 0.005: clear
    assert "complete attention +0.0010 (within 2 sd)" in verdict

    print_summary({"status": "promoted", "run_id": "r2", "decision": "first run", "seeds": [0], "metric": "f1_macro",
                   "table": cells, "headline": {}, "report": "file:///r", "dashboard": "file:///d"})  # fmt: skip
    out = capsys.readouterr().out
    assert "test f1_macro by missing type (seed 0):" in out and "± " not in out
    assert "best prompts vs baseline" not in out  # one seed has no noise to compare with


@pytest.mark.slow(seconds=20)
def test_publish_task_retries_when_the_s3_server_goes_away(tmp_path, monkeypatch):
    """The publish task's retries carry a publish across an S3 outage; the manifest comes last."""
    for key, value in flow_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    from prefect import flow

    from flows.tasks import publish
    from mmp_core.publishing.publish import RunBundle

    server = MotoServer(tmp_path).start()
    boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket=ARTIFACTS)
    store = open_store(f"s3://{ARTIFACTS}/team", endpoint_url=server.url)
    files = {}
    for i in range(3):
        path = tmp_path / f"file{i}.json"
        path.write_text(json.dumps({"i": i}))
        files[f"results/file{i}.json"] = path
    bundle = RunBundle("outage", files, {"data_version": "x"}, None, {}, "input", tmp_path / "file0.json")

    attempts = []
    original = store._put_file

    def restart(server):
        server.start()
        boto3.client("s3", endpoint_url=server.url).create_bucket(Bucket=ARTIFACTS)

    comeback = threading.Timer(8, lambda: restart(server))  # outlasts boto3's own retries (~6 s)

    def put_then_fail_once(key, path):
        attempts.append(key)
        if len(attempts) == 2:  # the server dies in the middle of the first attempt, then comes back
            server.stop()  # in-memory: it comes back empty, so the bucket is made again
            comeback.start()
        return original(key, path)

    monkeypatch.setattr(store, "_put_file", put_then_fail_once)

    @flow(name="publish-under-outage")
    def publish_flow():
        return publish(store, bundle)

    try:
        manifest = publish_flow()
        assert len(attempts) > len(files), "the first attempt failed and the task retried"
        assert [f["key"] for f in manifest["files"]] == sorted(files)
        assert store.list_runs() == ["outage"]
        for key in files:
            assert json.loads(store.read_run_file("outage", key)) == json.loads(files[key].read_text())
    finally:
        comeback.cancel()
        if comeback.ident is not None:  # started: let a restart in progress finish before stopping
            comeback.join()
        server.stop()  # ours only, also if the test failed after the restart


READ_DEPLOYMENT = """
import asyncio, json, sys
from prefect.client.orchestration import get_client

async def main():
    async with get_client() as client:
        d = await client.read_deployment_by_name(sys.argv[1])
        print(json.dumps({
            "work_pool_name": d.work_pool_name, "entrypoint": d.entrypoint, "parameters": d.parameters,
            "schedules": [{"cron": s.schedule.cron, "timezone": s.schedule.timezone, "active": s.active}
                          for s in d.schedules],
        }))

asyncio.run(main())
"""


def test_deployments_register_on_a_prefect_server_with_the_schedule(prefect_server, tmp_path):
    url, env = prefect_server
    env = {**env, "PREFECT_API_URL": url, "MMP_REPO_DIR": str(REPO)}
    prefect = str(Path(sys.executable).with_name("prefect"))
    subprocess.run(
        [prefect, "work-pool", "create", "mmp-process", "--type", "process"], env=env, check=True, capture_output=True
    )
    deployed = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    read = subprocess.run(
        [sys.executable, "-c", READ_DEPLOYMENT, "mmp-retrain/retrain-nightly"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    deployment = json.loads(read.stdout)
    assert deployment["work_pool_name"] == "mmp-process"
    assert deployment["entrypoint"] == "flows/retrain.py:retrain"
    assert deployment["schedules"] == [{"cron": "0 3 * * *", "timezone": "UTC", "active": True}]
    assert deployment["parameters"] == {"params": {"pull": True}}
    listed = subprocess.run([prefect, "deployment", "ls"], env=env, capture_output=True, text=True, check=True)
    assert "mmp-pipeline/pipeline" in listed.stdout
