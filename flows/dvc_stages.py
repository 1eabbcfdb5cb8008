"""The DVC pipeline as Prefect tasks: one task per stage, in DVC's dependency order, fanned out when asked.

- `in place` (max_parallel 1, the default): each stage runs in the project itself, one after the other.
- `local` fan-out (max_parallel N): stages whose dependencies are done run at once, up to N, each in its own git
  worktree sharing the project's DVC cache.
- `workers`: each such stage is a run of the `mmp-stage` deployment on a Prefect work pool; the worker pushes its
  outputs and run-cache to the DVC remote.

Either way the isolated run returns the dvc.lock entry it produced: the project writes it into its dvc.lock and
checks the outputs out (fetched first from the remote for a worker) by it, so a stage that ran elsewhere never runs
again here, even where a committed dvc.lock names outputs that are in no cache (a fresh clone).

DVC decides what runs: an up-to-date stage ends in a `Skipped` state, and a restored one is not run twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from flows.tasks import run_dvc
from mmp_core.publishing.workspaces import (
    LOCK_FILE,
    head_commit,
    lock_entry,
    lock_entry_from_markdown,
    snapshot_commit,
    stage_worktree,
    threads_per_stage,
    working_tree_changes,
    write_lock_entry,
)

LOCK_ARTIFACT = "dvc-lock-entry"  # the key of the Prefect artifact a worker's stage run leaves its dvc.lock entry in


@dataclass(frozen=True)
class StagePlan:
    name: str  # DVC's address: `prepare`, `train@input-0`
    upstream: tuple[str, ...]  # the stages it depends on
    up_to_date: bool  # by `dvc status`, before anything ran
    run_cacheable: bool = False  # every output cached: DVC's run-cache can restore a run made elsewhere


@task(name="dvc-plan", cache_policy=NO_CACHE)
def dvc_plan(repo: str) -> list[StagePlan]:
    """The project's stages in dependency order, from DVC's own graph (foreach/matrix items included), each
    with whether `dvc status` finds it up to date."""
    import contextlib

    import networkx as nx
    from dvc.repo import Repo

    with contextlib.chdir(repo), Repo(repo) as project:  # DVC resolves paths against the working directory
        graph = project.index.graph
        stale = project.status()
        order = reversed(list(nx.topological_sort(graph)))  # edges point from a stage to what it depends on
        return [
            StagePlan(
                stage.addressing,
                tuple(d.addressing for d in graph.successors(stage)),
                stage.addressing not in stale,
                bool(stage.outs) and all(out.use_cache for out in stage.outs) and not stage.always_changed,
            )
            for stage in order
            if stage.cmd  # pipeline stages (not `dvc add`/import files)
        ]


# DVC's words for a stage it did not run: nothing changed, or its outputs restored from the run-cache.
_UNCHANGED = "didn't change, skipping"
_RESTORED = "is cached - skipping run"


def _tags(stage: str) -> list[str]:
    # Training stages carry the `gpu` tag: a Prefect concurrency limit on it (`prefect concurrency-limit create
    # gpu N`) keeps a pool from running more of them at once than its machines have accelerators.
    return ["gpu"] if stage.startswith("train@") else []


@task(name="dvc-stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def dvc_stage(repo: str, stage: str, up_to_date: bool, upstream_ran: bool):
    """One DVC stage (`dvc repro --single-item`) in the project, as its own task: its state, duration and log.

    DVC decides what is skipped; a skipped stage ends in a `Skipped` state (not a 0-second success), one whose
    outputs DVC restored from its run-cache (a setting run before) in a `Restored` state."""
    if up_to_date and not upstream_ran:
        return Completed(name="Skipped", message=f"{stage}: up to date (dvc status)", data=False)
    started = time.perf_counter()
    lines = run_dvc(repo, "repro", "--single-item", stage)
    seconds = time.perf_counter() - started
    logger = get_run_logger()
    if any("Running stage" in line for line in lines):
        logger.info("%s: ran in %.1f s", stage, seconds)  # the stage's time, after its result
        return True
    if any(_RESTORED in line for line in lines):  # new outputs all the same: what depends on them reruns
        logger.info("%s: restored from DVC's run-cache in %.1f s", stage, seconds)
        return Completed(name="Restored", message=f"{stage}: restored from DVC's run-cache", data=True)
    if any(_UNCHANGED in line for line in lines):
        return Completed(name="Skipped", message=f"{stage}: DVC found nothing to run", data=False)
    logger.info("%s: done in %.1f s", stage, seconds)
    return True


@task(name="dvc-stage-worktree", task_run_name="{stage} (worktree)", cache_policy=NO_CACHE)
def dvc_stage_in_worktree(repo: str, stage: str, commit: str, lock_text: str, upstream: tuple[str, ...],
                          threads: int) -> dict:  # fmt: skip
    """One stage in its own git worktree of `commit`, sharing the project's DVC cache: its upstream outputs are
    checked out from that cache, and its outputs and run-cache entry land in it. Returns where it ran and its
    dvc.lock entry (`lock`)."""
    started = time.time()
    with stage_worktree(Path(repo), commit, lock_text, label=stage) as workspace:
        if upstream:
            run_dvc(str(workspace), "checkout", *upstream)
        run_dvc(str(workspace), "repro", "--single-item", stage, env={"OMP_NUM_THREADS": str(threads)})
        entry = lock_entry(workspace, stage)
    return {"stage": stage, "where": f"worktree ({threads} thread{'s' if threads > 1 else ''})",
            "started": started, "finished": time.time(), "lock": entry}  # fmt: skip


@task(name="dvc-stage-worker", task_run_name="{stage} (worker)", cache_policy=NO_CACHE, retries=1)
def dvc_stage_on_worker(deployment: str, stage: str, commit: str, git_url: str, lock_text: str,
                        upstream: tuple[str, ...]) -> dict:  # fmt: skip
    """One stage as a run of the `mmp-stage` deployment on a Prefect work pool. A run that crashes or fails
    (its worker killed, a machine lost) is retried once as a new run, which any live worker may take."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(
        deployment,
        parameters={"stage": stage, "commit": commit, "git_url": git_url, "lock_text": lock_text,
                    "upstream": list(upstream)},
        timeout=None, poll_interval=2, tags=_tags(stage),
    )  # fmt: skip
    if not flow_run.state or not flow_run.state.is_completed():
        state = flow_run.state.name if flow_run.state else "unknown"
        message = (flow_run.state.message or "") if flow_run.state else ""
        raise RuntimeError(f"stage {stage}: worker run {flow_run.name} ended {state}: {message}")
    started, finished = flow_run.start_time, flow_run.end_time
    return {"stage": stage, "where": flow_run.name.split(" on ", 1)[-1], "flow_run": str(flow_run.id),
            "started": started.timestamp() if started else None,
            "finished": finished.timestamp() if finished else None,
            "lock": worker_lock_entry(flow_run.id, stage)}  # fmt: skip


def worker_lock_entry(flow_run_id, stage: str) -> dict | None:
    """The dvc.lock entry a worker's stage run left in its Prefect artifact; None if it left none (a worker of an
    older checkout: the stage is then restored by DVC's run-cache)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[LOCK_ARTIFACT]),
                                           flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
        )  # fmt: skip
    return lock_entry_from_markdown(stage, artifacts[-1].data) if artifacts else None


@task(name="dvc-restore", task_run_name="restore {stage}", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def dvc_restore(repo: str, stage: str, from_remote: bool, entry: dict | None = None) -> bool:
    """The stage's outputs into the project without running its command: `entry` (the dvc.lock entry of its
    isolated run) written into the project's dvc.lock, its outputs fetched from the DVC remote when they are there
    (`from_remote`), then `dvc repro` checks them out by it and records them. Without an entry, DVC's run-cache
    (fetched from the remote) restores it. False when DVC ran it after all."""
    if entry:
        write_lock_entry(Path(repo), stage, entry)
        if from_remote:
            run_dvc(repo, "fetch", stage)  # by the entry just written
    elif from_remote:
        run_dvc(repo, "fetch", "--run-cache", stage)
    lines = run_dvc(repo, "repro", "--single-item", *(["--pull"] if from_remote and not entry else []), stage)
    restored = not any("Running stage" in line for line in lines)  # checked out, or pulled up to date
    if not restored:
        by = "its dvc.lock entry" if entry else "DVC's run-cache"
        get_run_logger().warning("%s: not restored by %s after its isolated run; DVC ran it in the project", stage, by)
    return restored


def run_stages(repo: str, max_parallel: int = 1, executor: str = "local", deployment: str = "mmp-stage/stage",
               git_url: str | None = None) -> tuple[dict[str, str], dict[str, float], dict[str, dict]]:  # fmt: skip
    """Every DVC stage its own task, in DVC's dependency order; DVC decides what is skipped.

    Returns {stage: "ran" or "skipped"}, the seconds of the stages that ran, and where each fanned-out stage ran
    (worktree or worker, with its start and end time)."""
    logger = get_run_logger()
    plan = dvc_plan(repo)
    by_name = {stage.name: stage for stage in plan}
    fan_out = max_parallel > 1 or executor == "workers"
    commit = None  # taken when the first stage leaves the project (a no-op run needs none)
    threads = threads_per_stage(max_parallel)
    done: dict[str, bool] = {}  # stage -> it ran (or was restored after running elsewhere)
    seconds: dict[str, float] = {}
    placed: dict[str, dict] = {}
    waiting, running = list(plan), {}  # running: future -> (stage, started)
    try:
        while waiting or running:
            for stage in list(waiting):
                if any(u in by_name and u not in done for u in stage.upstream):
                    continue  # an upstream stage is still to run
                upstream_ran = any(done.get(u) for u in stage.upstream)
                isolated = (
                    fan_out
                    and stage.run_cacheable
                    and all(by_name[u].run_cacheable for u in stage.upstream if u in by_name)
                )
                if isolated and (upstream_ran or not stage.up_to_date):
                    if len(running) >= max_parallel:
                        continue
                    commit = commit or _stage_commit(repo, executor, git_url)
                    lock_text = (Path(repo) / LOCK_FILE).read_text() if (Path(repo) / LOCK_FILE).exists() else ""
                    if executor == "workers":
                        if stage.upstream:  # the worker pulls them from the DVC remote (a no-op when there)
                            run_dvc(repo, "push", *stage.upstream)
                        future = dvc_stage_on_worker.submit(deployment, stage.name, commit, git_url or repo,
                                                            lock_text, stage.upstream)  # fmt: skip
                    else:
                        future = dvc_stage_in_worktree.with_options(tags=_tags(stage.name)).submit(
                            repo, stage.name, commit, lock_text, stage.upstream, threads
                        )
                    running[future] = (stage, time.perf_counter())
                    waiting.remove(stage)
                elif not (isolated or running) or (stage.up_to_date and not upstream_ran):
                    # In the project itself: skipped stages at once, others when nothing runs beside them.
                    waiting.remove(stage)
                    started = time.perf_counter()
                    task = dvc_stage.with_options(tags=_tags(stage.name))
                    done[stage.name] = task(repo, stage.name, stage.up_to_date, upstream_ran) is True
                    if done[stage.name]:
                        seconds[stage.name] = round(time.perf_counter() - started, 1)
            finished = [future for future in running if future.state.is_final()]
            if not finished:
                time.sleep(0.5)
            for future in finished:
                stage, started = running.pop(future)
                placed[stage.name] = future.result()  # raises the stage's own error
                dvc_restore(repo, stage.name, executor == "workers", placed[stage.name].pop("lock", None))
                done[stage.name] = True
                seconds[stage.name] = round(time.perf_counter() - started, 1)
                logger.info("%s: ran in %s, restored into the project", stage.name, placed[stage.name]["where"])
    finally:
        for future in running:  # a stage failed: let the others end before the flow fails (nothing published)
            future.wait()
    logger.info("DVC stages: %d ran, %d skipped", len(seconds), len(plan) - len(seconds))
    return {stage.name: "ran" if done.get(stage.name) else "skipped" for stage in plan}, seconds, placed


def _stage_commit(repo: str, executor: str, git_url: str | None) -> str:
    """The commit isolated stages check out. Local worktrees take a snapshot of the working tree as it is;
    workers clone, so the project must be committed (dvc.lock aside: it travels with each stage; and the
    .gitignore entries DVC writes for outputs)."""
    if executor != "workers":
        return snapshot_commit(Path(repo))
    changes = working_tree_changes(Path(repo), dvc_bookkeeping=True)
    if changes:
        shown = ", ".join(changes[:5]) + (f" and {len(changes) - 5} more" if len(changes) > 5 else "")
        raise ValueError(
            f"{repo}: uncommitted changes ({shown}): commit (and push to {git_url or 'the git remote'}) first, "
            "workers check out the flow's commit"
        )
    return head_commit(Path(repo))
