"""Thin Prefect tasks shared by the flows. Retries only where the work is idempotent I/O.

No task caches its result: DVC's cache decides what reruns, and the store is the record of what was published.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import deque
from pathlib import Path

import yaml
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from mmp_core.fileio import atomic_write_text
from mmp_core.params_file import read_methods
from mmp_core.publishing.dashboard import write_dashboard
from mmp_core.publishing.promotion import PromotionDecision
from mmp_core.publishing.publish import RunBundle, Versions, assemble_run, project_versions
from mmp_core.publishing.publish import promote as promote_run
from mmp_core.s3 import parse_store_location
from mmp_core.storage import open_store
from mmp_core.storage.artifact_store import ArtifactStore


def _environment(extra: dict | None = None) -> dict:
    env = {**os.environ, **(extra or {})}
    # DVC runs `mmp ...` stage commands and DeepSpeed compiles its ops with the `ninja` first on PATH: keep
    # this interpreter's bin directory (the venv) first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


class DvcCommandFailed(RuntimeError):
    """A DVC command (a stage's own command included) exited non-zero; the message ends with its last lines."""


# DVC's hints for a person at a terminal, not for a flow's log: `git add dvc.lock ...`, auto staging, `dvc push`.
# Its warnings, errors and what each stage ran are kept.
_DVC_HINTS = re.compile(
    r"^(To track the changes with git, run:|\s+git add .*|To enable auto staging, run:|"
    r"\s+dvc config core\.autostage true|Use `dvc push` to send your updates to remote storage\.)$"
)


def is_dvc_hint(line: str) -> bool:
    """A line of DVC's git / auto-staging / push hints (dropped from the flow's log)."""
    return bool(_DVC_HINTS.match(line.rstrip()))


def _logger():
    """The flow run's logger; a module logger outside a flow or task run."""
    import logging

    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def run_dvc(repo: str, *args: str, env: dict | None = None) -> list[str]:
    """Run one DVC command in the project (the CLI: DVC's Python API resolves paths against the process cwd);
    its output lines go to the Prefect log as they come (DVC's git and push hints dropped), and the last 40 are
    returned. `env`: extra variables."""
    logger = _logger()
    logger.info("dvc %s", " ".join(args))
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=_environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for line in process.stdout:
            line = line.rstrip()
            if line and not is_dvc_hint(line):
                tail.append(line)
                logger.info(line)
    if process.returncode:
        raise DvcCommandFailed(
            f"`dvc {' '.join(args)}` in {repo} failed with exit code {process.returncode}:\n" + "\n".join(tail)
        )
    return list(tail)


@task(name="dvc-repro", cache_policy=NO_CACHE)
def dvc_repro(repo: str, *targets: str, seeds: tuple[int, ...] | None = None) -> None:
    """DVC decides what reruns (its cache); Prefect does not cache this task on top. With `seeds`, the pipeline
    runs as a DVC experiment over those training seeds (params.yaml's `seeds` set to them, as -S does)."""
    if seeds:
        original = (Path(repo) / "params.yaml").read_text()
        run_dvc(repo, "exp", "run", "-S", f"seeds={_seeds_value(seeds)}", *targets)
        # DVC writes params.yaml back without its comments: keep the file as it was, with the new seeds line.
        set_seeds(repo, seeds, original)
    else:
        run_dvc(repo, "repro", *targets)


def _seeds_value(seeds: tuple[int, ...]) -> str:
    return f"[{', '.join(map(str, seeds))}]"


def set_seeds(repo: str, seeds: tuple[int, ...], original: str | None = None) -> None:
    """params.yaml's `seeds:` line set to `seeds`, every other line (comments included) as it was."""
    params_file = Path(repo) / "params.yaml"
    text = params_file.read_text() if original is None else original
    # The line and, for a block-style list, the `- item` lines below it.
    edited, count = re.subn(r"(?m)^seeds:[^\n]*(?:\n[ \t]*-[^\n]*)*", f"seeds: {_seeds_value(seeds)}", text)
    if count != 1:
        raise ValueError(f"{params_file}: expected one top-level `seeds:` line to set the seeds, found {count}")
    atomic_write_text(params_file, edited)


@task(name="dvc-pull", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def dvc_pull(repo: str) -> None:
    """The newest data version: imported datasets updated, then cached outputs fetched from the remote."""
    imports = _import_stages(Path(repo))
    if imports:
        run_dvc(repo, "update", *imports)
    run_dvc(repo, "pull", "--allow-missing")


def _import_stages(repo: Path) -> list[str]:
    """`.dvc` files of `dvc import` / `dvc import-url` (frozen stages with a source): what `dvc update` refreshes."""
    found = []
    for path in repo.rglob("*.dvc"):
        if not path.is_file() or ".dvc" in path.relative_to(repo).parts[:-1]:
            continue
        stage = yaml.safe_load(path.read_text()) or {}
        if stage.get("frozen") and stage.get("deps"):
            found.append(str(path.relative_to(repo)))
    return sorted(found)


@task(name="dvc-push", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def dvc_push(repo: str) -> None:
    run_dvc(repo, "push")


@task(name="versions", cache_policy=NO_CACHE)
def versions_of(repo: str) -> Versions:
    return project_versions(repo)


@task(name="assemble-run", cache_policy=NO_CACHE)
def assemble(repo: str, store: ArtifactStore, params, run_id: str, versions: Versions) -> RunBundle:
    return assemble_run(
        repo,
        store,
        methods=tuple(params.methods or read_methods(Path(repo) / "params.yaml")),
        promote_method=params.promote_method,
        tolerance=params.tolerance,
        require_learning=params.require_learning,
        run_id=run_id,
        versions=versions,
    )


@task(name="publish-run", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=2)
def publish(store: ArtifactStore, bundle: RunBundle) -> dict:
    """Objects first, manifest last; re-publishing the same run id after a failure is idempotent."""
    return store.publish_run(bundle.run_id, bundle.files, bundle.metadata)


@task(name="promote", cache_policy=NO_CACHE)
def promote(store: ArtifactStore, bundle: RunBundle) -> tuple[dict | None, PromotionDecision]:
    """Compare-and-swap on the champion pointer, judging again if another flow moved it meanwhile."""
    return promote_run(store, bundle)


@task(name="dashboard", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def dashboard(store: ArtifactStore) -> str:
    return write_dashboard(store)


def open_artifact_store(params) -> ArtifactStore:
    """The store of `params.store` (a relative directory is under the project)."""
    location = parse_store_location(params.store).resolved(params.repo)  # the one grammar (--store, MMP_STORE)
    return open_store(location, endpoint_url=params.s3_endpoint_url)


_PREFLIGHT_PASSED: set[tuple] = set()


def _preflight_key(params) -> tuple:
    params_file = Path(params.repo) / "params.yaml"
    try:
        stat = params_file.stat()
        edited = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        edited = None
    return str(Path(params.repo).resolve()), params.store, params.s3_endpoint_url, edited


def preflight(params) -> None:
    """`mmp_core.publishing.preflight.run_preflight` for the flow's parameters before any stage: params.yaml, the store (an
    S3 store reached and written), the backbone, the DVC project. Raises PreflightFailed naming the first
    failure. Checked once per process for the same project, store and params.yaml (the command line checks
    before Prefect starts; the flow, started by a deployment, checks itself)."""
    from mmp_core.publishing.preflight import run_preflight

    key = _preflight_key(params)
    if key in _PREFLIGHT_PASSED:
        _logger().info("preflight: passed (checked before the flow started)")
        return
    rows = run_preflight(params.repo, params.store, params.s3_endpoint_url)
    _PREFLIGHT_PASSED.add(key)
    _logger().info("preflight: " + ", ".join(f"{row.name} {row.status}" for row in rows))


def publish_prefect_artifacts(bundle: RunBundle, store: ArtifactStore, dashboard_url: str) -> None:
    """Team dashboards in the Prefect UI: the grid table, the decision, links to the report and dashboard."""
    method = bundle.promote_method
    metric = bundle.results[method]["primary_metric"]
    rows = []
    for name, result in bundle.results.items():
        for cell in result["grid"]:
            rows.append(
                {
                    "method": name,
                    "missing_type": cell["missing_type"],
                    "missing_rate": cell["missing_rate"],
                    metric: round(cell[metric], 4),
                }
            )
    create_table_artifact(key="mmp-scenario-grid", table=rows, description=f"{metric} on the test split")
    head = bundle.results[method]["headline"]
    create_markdown_artifact(
        key="mmp-run-summary",
        markdown=(
            f"# mmp run `{bundle.run_id}`\n\n"
            f"Headline ({method}, {head['missing_type']} missing at {head['missing_rate']:.0%}): "
            f"**{metric} {head[metric]:.4f}**\n\n"
            + (f"Candidate **{method}**: {bundle.selection.reason}\n\n" if bundle.selection else "")
            + f"## Promotion\n\n{bundle.decision.to_markdown()}\n\n"
            f"[report]({store.url_for(f'runs/{bundle.run_id}/report.html')}) · [dashboard]({dashboard_url})\n"
        ),
    )
    create_link_artifact(key="mmp-report", link=store.url_for(f"runs/{bundle.run_id}/report.html"))
