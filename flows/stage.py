"""One DVC stage on a worker: the `mmp-stage` flow, deployed on a Prefect work pool (prefect.yaml: `stage`).

The pipeline flow (executor `workers`) starts one run per stage. The worker clones the project at the flow's
commit, pulls the stage's inputs from the DVC remote, runs the stage and pushes its outputs and its run-cache
entry back, and leaves the stage's dvc.lock entry in a Prefect artifact (key `dvc-lock-entry`): the pipeline writes it
into its dvc.lock and fetches the outputs by it, so that `dvc repro` restores the stage instead of running it again.

    prefect worker start --pool mmp-process     # on each machine, in a checkout of this repository
"""

from __future__ import annotations

import os
import socket

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.dvc_stages import LOCK_ARTIFACT
from flows.tasks import run_dvc
from mmp_core.fileio import default_cache_dir
from mmp_core.publishing.workspaces import lock_entry, lock_entry_markdown, stage_clone


def worker_name() -> str:
    """Which worker runs this: the name Prefect's worker gives its flow runs (`prefect worker start --name`),
    else host:pid of the process that started this one."""
    return os.environ.get("PREFECT__WORKER_NAME") or f"{socket.gethostname()}:{os.getppid()}"


def run_name() -> str:
    """`train@input-0 on gpu-node-3`: the UI's flow-run list says which worker ran which stage."""
    return f"{flow_run.parameters.get('stage', 'stage')} on {worker_name()}"


def use_remote_from_environment(workspace: str) -> None:
    """$MMP_DVC_REMOTE (with $MMP_S3_ENDPOINT_URL), when the worker has it, as the clone's default DVC remote,
    in its local config: machine-specific URLs need not be committed (infra/local-stack.sh exports both)."""
    remote = os.environ.get("MMP_DVC_REMOTE")
    if not remote:
        return  # the remote the commit configures
    run_dvc(workspace, "remote", "add", "--local", "--default", "--force", "mmp-worker", remote)
    if endpoint := os.environ.get("MMP_S3_ENDPOINT_URL"):
        run_dvc(workspace, "remote", "modify", "--local", "mmp-worker", "endpointurl", endpoint)


@task(name="dvc-pull-inputs", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def pull_inputs(workspace: str, upstream: list[str]) -> None:
    """The outputs of the stages this one depends on, from the DVC remote (idempotent)."""
    run_dvc(workspace, "pull", *upstream)


@task(name="dvc-push-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def push_run(workspace: str, stage: str) -> None:
    """The stage's outputs and its run-cache entry to the DVC remote (idempotent)."""
    run_dvc(workspace, "push", "--run-cache", stage)


@flow(name="mmp-stage", flow_run_name=run_name, log_prints=True)
def stage(stage: str, commit: str, git_url: str, lock_text: str, upstream: list[str]) -> dict:
    """Run DVC stage `stage` of the project at `git_url`@`commit`, with the pipeline's dvc.lock (`lock_text`)."""
    from prefect import get_run_logger

    cache = default_cache_dir() / "dvc-cache"  # one per worker machine: inputs pulled once serve later stages
    with stage_clone(git_url, commit, lock_text, cache, default_cache_dir() / "stage-workspaces", stage) as workspace:
        use_remote_from_environment(str(workspace))
        if upstream:
            pull_inputs(str(workspace), upstream)
        run_dvc(str(workspace), "repro", "--single-item", stage)
        push_run(str(workspace), stage)
        entry = lock_entry(workspace, stage)
    # What the pipeline restores the stage by (a flow run's return value does not reach it without shared result
    # storage; an artifact is kept by the Prefect server, and shown in its UI).
    create_markdown_artifact(lock_entry_markdown(stage, entry), key=LOCK_ARTIFACT, description=f"{stage}: dvc.lock")
    get_run_logger().info("%s: done on %s", stage, worker_name())
    return {"stage": stage, "worker": worker_name(), "workspace": workspace.name, "lock": entry}
