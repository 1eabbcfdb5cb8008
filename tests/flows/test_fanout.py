"""Fan-out: the pipeline's independent stages at once, in git worktrees on this machine and on two Prefect
workers through an S3 DVC remote, end with the same adapters and metrics as the in-process run. Every run uses
one CPU thread per stage, the setting in which training is bitwise reproducible. Both start as a fresh clone
does: a committed dvc.lock whose trained outputs are in no cache, and every stage runs once, where it was sent."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml

from tests.conftest import MotoServer, flow_env, stop_process
from tests.flows.projects import ARTIFACTS, DVC_BUCKET, METHODS, copy_project, make_project, outcome, pipeline
from tests.model_fixtures import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sequential(first_run) -> dict:
    """What the in-process run (every stage in the project, one after the other) kept."""
    return outcome(first_run)


def commit_lock_made_elsewhere(project: Path, lock: Path) -> None:
    """`lock` (the sequential run's dvc.lock) committed into `project` as if its trainings had run on another
    machine: the hashes of their outputs (and the evaluations' record of them) changed, so no cache has those
    outputs, as on a fresh clone of a project whose dvc.lock someone else committed."""
    text = lock.read_text()
    for name, entry in yaml.safe_load(text)["stages"].items():
        if name.startswith("train@"):
            for out in entry["outs"]:
                text = text.replace(out["md5"], "0" * 8 + out["md5"][8:])
    (project / "dvc.lock").write_text(text)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "commit", "-qm", "dvc.lock of a run elsewhere", "dvc.lock"], cwd=project, check=True)


def runs_of(log: str, stage: str) -> int:
    """How many times DVC ran `stage`'s command (in the project, a worktree or a worker whose log this is)."""
    return log.count(f"Running stage '{stage}'")


@pytest.mark.slow(seconds=145)
def test_local_fan_out_runs_stages_in_worktrees_and_matches_the_sequential_run(tmp_path, sequential,
                                                                              first_run):  # fmt: skip
    project = make_project(tmp_path / "project", "http://127.0.0.1:9")
    commit_lock_made_elsewhere(project, first_run / "dvc.lock")
    (project / "NOTES.md").write_text("an uncommitted file: the worktrees see the working tree as it is\n")
    log = pipeline(project, tmp_path / "store", "--max-parallel", "3")

    # The three trainings, then the three evaluations, ran in worktrees (one thread each) and were restored by
    # the dvc.lock entry each run produced: not run again in the project, whatever the committed dvc.lock said.
    for method in METHODS:
        for stage in (f"train@{method}-0", f"evaluate@{method}-0"):
            assert f"Task run '{stage} (worktree)' - Finished in state Completed" in log, log[-3000:]
            assert f"{stage}: ran in worktree (1 thread), restored into the project" in log
            assert runs_of(log, stage) == 1, f"{stage} ran {runs_of(log, stage)} times"
            assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in log
    assert "DVC ran it in the project" not in log
    assert "on worktree (1 thread): " in log
    assert outcome(project) == sequential, "fan-out changed an adapter or a metric"

    # No worktree is left behind, and the user's git state is untouched.
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=project, capture_output=True, text=True).stdout
    assert len(worktrees.splitlines()) == 1, worktrees
    assert not any((project / ".dvc" / "tmp" / "workspaces").iterdir())
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True).stdout
    assert "?? NOTES.md" in status
    assert subprocess.run(["git", "stash", "list"], cwd=project, capture_output=True, text=True).stdout == ""

    # Nothing changed: every stage skipped, none sent to a worktree.
    again = pipeline(project, tmp_path / "store", "--max-parallel", "3", "--always-run")
    assert "DVC stages: 0 ran, 11 skipped (up to date)" in again
    assert "(worktree)" not in again

    # Back to a setting run before: DVC's run-cache restores the evaluations (they end `Restored`, not run
    # again), and what depends on them reruns.
    params = (project / "params.yaml").read_text()
    changed = yaml.safe_load(params)
    changed["evaluate"]["batch_size"] = 8
    (project / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    pipeline(project, tmp_path / "store", "--max-parallel", "3", "--always-run")  # the evaluations, in worktrees
    (project / "params.yaml").write_text(params)
    back = pipeline(project, tmp_path / "store", "--always-run")
    for method in METHODS:
        assert f"Task run 'evaluate@{method}-0' - Finished in state Restored" in back, back[-3000:]
        assert f"Task run 'train@{method}-0' - Finished in state Skipped" in back
    assert outcome(project) == sequential


def test_seeds_are_set_in_params_yaml_keeping_everything_else(tmp_path):
    from flows.tasks import set_seeds

    text = "# the methods\nmethods: [input]\nseeds:\n  - 0\n  - 1\ntrain:  # training\n  seed: 3\n"
    (tmp_path / "params.yaml").write_text(text)
    set_seeds(str(tmp_path), (4, 5, 6))
    edited = (tmp_path / "params.yaml").read_text()
    assert edited == "# the methods\nmethods: [input]\nseeds: [4, 5, 6]\ntrain:  # training\n  seed: 3\n"
    set_seeds(str(tmp_path), (7,))
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["seeds"] == [7]
    (tmp_path / "params.yaml").write_text("methods: [input]\n")
    with pytest.raises(ValueError, match=r"params\.yaml: expected one top-level `seeds:` line"):
        set_seeds(str(tmp_path), (1,))


@pytest.mark.slow(seconds=20)
def test_a_failing_stage_fails_the_flow_with_its_own_error_and_publishes_nothing(tmp_path, first_run):
    project = copy_project(first_run, tmp_path / "project", "http://127.0.0.1:9")
    # The backbone's weights are garbage: preflight sees a backbone directory, and the trainings (the backbone is
    # their dependency) run again, in worktrees, and fail when they load it.
    (project / "backbones" / "embedded" / "model.safetensors").write_bytes(b"not a safetensors file" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--repo", str(project), "--store", str(tmp_path / "store"),
         "--no-require-learning", "--max-parallel", "2"],
        cwd=project, env=flow_env(tmp_path), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 1, log[-3000:]
    # The stage's own error, from inside its worktree.
    assert "SafetensorError: Error while deserializing header" in result.stderr, result.stderr[-3000:]
    assert "failed to reproduce 'train@" in result.stderr and "/.dvc/tmp/workspaces/train-" in result.stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("manifest.json"))
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=project, capture_output=True, text=True).stdout
    assert len(worktrees.splitlines()) == 1, worktrees


READ_STAGE_RUNS = """
import asyncio, json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowFilter, FlowFilterName

async def main():
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["mmp-stage"])))
        print(json.dumps([{
            "id": str(r.id), "name": r.name, "state": r.state.type.value if r.state else None,
            "start": r.start_time.timestamp() if r.start_time else None,
            "end": r.end_time.timestamp() if r.end_time else None,
        } for r in runs]))

asyncio.run(main())
"""


def stage_runs(env: dict) -> list[dict]:
    result = subprocess.run([sys.executable, "-c", READ_STAGE_RUNS], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def runs_process(flow_run_id: str) -> list[int]:
    """The processes running flow run `flow_run_id` (a process worker starts them with its id in the environment),
    with everything below them."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours
        if f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode() in variables:
            pid = int(environ.parent.name)
            found += [pid, *descendants(pid)]
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (each of its threads lists the children it started)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in map(int, children.read_text().split()):
            found += [child, *descendants(child)]
    return found


@pytest.fixture
def work_pool(prefect_server, tmp_path, aws_test_env):
    """A Prefect server, moto S3 (the DVC remote and the store), the `stage` deployment on a process work pool
    and two workers, each with its own cache directory (as two machines would have); one stage at a time each."""
    url, env = prefect_server
    moto = MotoServer(tmp_path).start()
    boto3.client("s3", endpoint_url=moto.url).create_bucket(Bucket=DVC_BUCKET)
    boto3.client("s3", endpoint_url=moto.url).create_bucket(Bucket=ARTIFACTS)
    env = {**env, "PREFECT_API_URL": url, "MMP_REPO_DIR": str(REPO), "OMP_NUM_THREADS": "1",
           "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "1"}  # fmt: skip
    prefect = str(Path(sys.executable).with_name("prefect"))
    subprocess.run([prefect, "work-pool", "create", "mmp-process", "--type", "process"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    deployed = subprocess.run([prefect, "--no-prompt", "deploy", "--name", "stage"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    automation = REPO / "infra" / "prefect" / "crash-unresponsive-runs.yaml"
    subprocess.run([prefect, "automation", "create", "--from-file", str(automation)], env=env, check=True,
                   capture_output=True)  # fmt: skip
    workers = {}
    for name in ("a", "b"):
        log = open(tmp_path / f"worker-{name}.log", "wb")  # noqa: SIM115 - closed at teardown
        workers[name] = (subprocess.Popen(
            [prefect, "worker", "start", "--pool", "mmp-process", "--name", f"worker-{name}", "--limit", "1"],
            env={**env, "MMP_CACHE_DIR": str(tmp_path / f"machine-{name}"), "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"},
            stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        ), log)  # fmt: skip
    yield env, moto.url, {f"worker-{name}": process for name, (process, _) in workers.items()}
    for process, log in workers.values():
        # A process worker that has run flows often outlives SIGTERM (it forwards SIGINT to itself and waits on
        # its task group); nothing of the test's is left to save at this point, so the grace is short.
        stop_process(process, group=True, grace=3)
        log.close()
    moto.stop()


@pytest.mark.slow(seconds=205)
def test_workers_run_the_stages_concurrently_survive_a_lost_worker_and_match_the_in_process_run(
    tmp_path, work_pool, sequential, first_run
):
    env, endpoint, workers = work_pool
    project = make_project(tmp_path / "project", endpoint)
    commit_lock_made_elsewhere(project, first_run / "dvc.lock")
    # Two methods are enough for two trainings at once on two workers (the first run's dvc.lock also has the
    # third's stages: DVC leaves an entry of a stage that is gone alone).
    methods = ("baseline", "attention")
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump({**params, "methods": list(methods)}, sort_keys=False))
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "commit", "-qam", "the DVC remote, two methods"], cwd=project, check=True)  # workers clone
    command = [
        sys.executable, "-m", "flows.pipeline", "--repo", str(project), "--store", f"s3://{ARTIFACTS}/team",
        "--s3-endpoint-url", endpoint, "--no-require-learning", "--executor", "workers", "--max-parallel", "2",
    ]  # fmt: skip
    flow = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # A worker dies in the middle of a training, with the stage's process: its run stops sending heartbeats, the
    # automation marks it Crashed, and the stage task starts the stage again, on the worker that is left.
    deadline = time.monotonic() + 600
    victim = None
    while victim is None and time.monotonic() < deadline and flow.poll() is None:
        running = [r for r in stage_runs(env) if r["state"] == "RUNNING" and r["name"].startswith("train@")]
        if running:
            victim = running[0]
            time.sleep(3)  # mid-stage: cloned, pulling or training
        else:
            time.sleep(0.5)
    assert victim is not None, f"no training stage started on a worker:\n{flow.communicate()[0][-4000:]}"
    killed = victim["name"].split(" on ")[1]
    doomed = {workers[killed].pid, *descendants(workers[killed].pid), *runs_process(victim["id"])}
    assert len(doomed) > 1, "the stage run's process was found"
    for pid in doomed:  # the machine is lost: nothing of it reports anything
        os.kill(pid, signal.SIGKILL)
    log, _ = flow.communicate(timeout=1500)
    assert flow.returncode == 0, log[-6000:]
    survivor = next(name for name in workers if name != killed)
    stage_name = victim["name"].split(" on ")[0]
    again_runs = [r for r in stage_runs(env) if r["name"].startswith(stage_name + " on ")]
    assert [r["state"] for r in again_runs if r["id"] == victim["id"]] == ["CRASHED"], again_runs  # no heartbeat
    assert [r["state"] for r in again_runs if r["id"] != victim["id"]] == ["COMPLETED"], again_runs
    assert all(r["name"] == f"{stage_name} on {survivor}" for r in again_runs if r["id"] != victim["id"]), again_runs

    # What the user keeps is what the in-process run made, bitwise: the stage that ran twice (its first run lost
    # with its worker) too. Each stage ran on a worker only: the project restored it by the dvc.lock entry the
    # worker's run left.
    assert outcome(project, methods) == {m: sequential[m] for m in methods}, "the workers changed an adapter"
    for method in methods:
        for stage in (f"train@{method}-0", f"evaluate@{method}-0"):
            assert runs_of(log, stage) == 0, f"{stage} ran in the project too"
            assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in log, log[-3000:]
    assert "DVC ran it in the project" not in log
    published = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=ARTIFACTS, Prefix="team/runs/")
    assert published.get("KeyCount", 0) > 0, "the run was published once every stage had completed"

    # Each fanned-out stage was a run of the stage deployment; the trainings ran on both workers at once (the lost
    # one's run ends when it is marked Crashed).
    runs = stage_runs(env)
    trainings = [r for r in runs if r["name"].startswith("train@")]
    assert sorted(r["state"] for r in trainings) == ["COMPLETED", "COMPLETED", "CRASHED"], trainings
    assert {r["name"].split(" on ")[1] for r in trainings} == set(workers), trainings
    windows = sorted((r["start"], r["end"] or float("inf")) for r in trainings)
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(windows)), windows
    completed = {r["name"].split(" on ")[0] for r in runs if r["state"] == "COMPLETED"}
    assert completed >= {"generate", "prepare", *(f"{s}@{m}-0" for s in ("train", "evaluate") for m in methods)}

    # A rerun with nothing changed skips every stage and sends nothing to the (remaining) worker.
    again = subprocess.run([*command, "--always-run"], cwd=project, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "DVC stages: 0 ran, 8 skipped (up to date)" in again.stdout
    assert len(stage_runs(env)) == len(runs)
