"""The mmp pipeline: DVC stages (generate → prepare → train × methods × seeds → evaluate → aggregate) → report
→ publish to the artifact store → champion decision → dashboard.

    python -m flows.pipeline [--store DIR|s3://bucket/prefix] [--run-id ID] ...
"""

from __future__ import annotations

import argparse
import sys
import time

from prefect import flow, get_run_logger

from flows.dvc_stages import run_stages
from flows.tasks import (
    DvcCommandFailed,
    assemble,
    dashboard,
    dvc_pull,
    dvc_push,
    dvc_repro,
    open_artifact_store,
    preflight,
    promote,
    publish,
    publish_prefect_artifacts,
    set_seeds,
    versions_of,
)
from mmp_core.config import PipelineParams
from mmp_core.evaluation.paired import format_paired, paired_table
from mmp_core.publishing.publish import new_run_id, unchanged_since
from mmp_core.publishing.report import TABLE_RATE, lead_verdict, prompt_margins, scenario_table
from mmp_core.publishing.workspaces import default_git_url


def run_name() -> str:
    """The flow run's name in the Prefect UI: dataset, methods, seeds and commit, e.g.
    `embedded · baseline+attention+input · seeds 0 · 1a2b3c4`."""
    from prefect.runtime import flow_run

    from mmp_core.params_file import read_params
    from mmp_core.publishing.publish import git_commit

    params = flow_run.parameters.get("params") or {}

    def given(name: str):  # a PipelineParams in process, a dict from a deployment
        return params.get(name) if isinstance(params, dict) else getattr(params, name, None)

    repo = given("repo") or "."
    try:
        document = read_params(f"{repo}/params.yaml")
    except (OSError, ValueError):
        document = {}
    dataset = (document.get("prepare") or {}).get("dataset", "embedded")
    methods = given("methods") or document.get("methods") or []
    seeds = given("seeds") or document.get("seeds") or [0]
    commit = (git_commit(repo) or "uncommitted")[:7]
    return f"{dataset} · {'+'.join(methods)} · seeds {','.join(map(str, seeds))} · {commit}"


@flow(name="mmp-pipeline", log_prints=True, flow_run_name=run_name)
def pipeline(params: PipelineParams = PipelineParams()) -> dict:  # noqa: B008 - a frozen pydantic default
    preflight(params)  # params.yaml, the store (reached and written), the backbone, DVC: before any stage runs
    logger = get_run_logger()
    store = open_artifact_store(params)
    if params.pull:
        dvc_pull(params.repo)
    started = time.perf_counter()
    stages: dict[str, str] = {}
    stage_seconds: dict[str, float] = {}
    placed: dict[str, dict] = {}
    if params.seeds and params.max_parallel == 1:  # the whole DAG as one DVC experiment over these seeds
        dvc_repro(params.repo, seeds=params.seeds)
    else:
        if params.seeds:  # fanned out: params.yaml's seeds set, then the stages as usual
            set_seeds(params.repo, params.seeds)
        stages, stage_seconds, placed = run_stages(
            params.repo, params.max_parallel, params.executor, params.stage_deployment, stage_git_url(params)
        )
    versions = versions_of(params.repo)
    latest = None if params.seeds or stage_seconds or params.run_id or not stages else unchanged_since(store, versions)
    if latest:
        # Every stage was up to date and the store's latest run has these inputs: publishing again would add a
        # copy of it. (A fresh store, another run id or new seeds still publish.)
        logger.info("nothing changed since run %s: every stage up to date, nothing published", latest["run_id"])
        return {"status": "unchanged", "run_id": latest["run_id"], "stages": stages, "stage_seconds": {},
                "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    run_id = params.run_id or new_run_id(versions)
    bundle = assemble(params.repo, store, params, run_id, versions)
    manifest = publish(store, bundle)
    pointer, decision = promote(store, bundle)
    dashboard_url = dashboard(store)
    if params.push:
        dvc_push(params.repo)
    publish_prefect_artifacts(bundle, store, dashboard_url)
    candidate = bundle.promote_method  # the method chosen (promote_method best: by validation score)
    head = bundle.results[candidate]["headline"]
    metric = bundle.results[candidate]["primary_metric"]
    summary = {
        "status": "promoted" if pointer else "published",
        "run_id": run_id,
        "headline": {method: r["headline"][r["primary_metric"]] for method, r in bundle.results.items()},
        "headline_sd": {
            method: (r.get("headline_sd") or {}).get(r["primary_metric"]) for method, r in bundle.results.items()
        },
        "seeds": bundle.results[candidate].get("seeds", []),
        "table_rate": TABLE_RATE,
        "table": scenario_table(bundle.results, TABLE_RATE, metric),
        "paired": paired_table(bundle.results, TABLE_RATE),
        "warnings": {
            method: r["sanity"]["warnings"]
            for method, r in bundle.results.items()
            if (r.get("sanity") or {}).get("warnings")
        },
        "metric": metric,
        "candidate": candidate,
        "chosen": bundle.selection.reason if bundle.selection else None,
        "decision": decision.reason,
        "report": store.url_for(f"runs/{run_id}/report.html"),
        "dashboard": dashboard_url,
        "files": len(manifest["files"]),
        "data_version": versions.data_version,
        "params_fingerprint": versions.params_fingerprint,
        "stages": stages,
        "stage_seconds": stage_seconds,
        "stage_placement": {name: where["where"] for name, where in placed.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    logger.info(
        "run %s: %s %.4f at %s missing %.0f%% (%s); %s",
        run_id,
        metric,
        head[metric],
        head["missing_type"],
        100 * head["missing_rate"],
        candidate,
        summary["status"],
    )
    return summary


def stage_git_url(params: PipelineParams) -> str | None:
    """Where workers clone the project from (None for the local executor)."""
    if params.executor != "workers":
        return None
    return params.git_url or default_git_url(params.repo)


def unchanged_run(params: PipelineParams) -> str | None:
    """The store's latest run when running the pipeline would change nothing: every DVC stage up to date and
    that run published from the same data and parameters. Checked before Prefect starts: its temporary server
    alone takes longer than the check. None when anything could run (or seeds, a run id or a pull are asked)."""
    import contextlib

    from dvc.repo import Repo

    from mmp_core.publishing.publish import project_versions

    if params.seeds or params.run_id or params.pull:
        return None
    with contextlib.chdir(params.repo), Repo(params.repo) as project:
        if project.status():
            return None
    latest = unchanged_since(open_artifact_store(params), project_versions(params.repo))
    return latest["run_id"] if latest else None


def _cell(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" if sd is None else f"{mean:.4f} ± {sd:.4f}"


def print_summary(summary: dict) -> None:
    print()
    stages = summary.get("stages") or {}
    if stages:
        skipped = [name for name, outcome in stages.items() if outcome == "skipped"]
        print(f"DVC stages: {len(stages) - len(skipped)} ran, {len(skipped)} skipped (up to date)")
        if seconds := summary.get("stage_seconds"):
            print("  " + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items()))
        placement = summary.get("stage_placement") or {}
        for where in sorted(set(placement.values())):
            print(f"  on {where}: " + ", ".join(name for name, w in placement.items() if w == where))
    if "seconds" in summary:
        print(f"Flow time: {summary['seconds']:.0f} s")
    if summary["status"] == "unchanged":
        print(f"Nothing changed since run {summary['run_id']}: no retraining, nothing published.")
        return
    if candidate := summary.get("candidate"):  # which method was put up for champion, and why
        print(f"Candidate: {candidate}" + (f", {summary['chosen']}" if summary.get("chosen") else ""))
    print(f"Run {summary['run_id']} ({summary['status']}): {summary['decision']}")
    seeds = summary.get("seeds") or []
    several = len(seeds) > 1
    if table := summary.get("table"):
        # The paper's Table 1: each method at the table's missing rate of each missing type, and on complete data.
        columns = list(next(iter(table.values())))
        rate = f"{summary.get('table_rate', TABLE_RATE):.0%}"
        names = [column if column == "complete" else f"{column} {rate}" for column in columns]
        width = 17 if several else 11
        over = f", mean ± sd over training seeds {seeds}" if several else f" (seed {seeds[0]})" if seeds else ""
        print(f"  test {summary['metric']} by missing type{over}:")
        print(f"  {'method':<10} " + "".join(f"{name:>{width}}" for name in names))
        for method, cells in table.items():
            row = "".join(f"{_cell(mean, sd if several else None):>{width}}" for mean, sd in cells.values())
            print(f"  {method:<10} {row}")
        margins = prompt_margins(table)
        if several and any(m["sd"] is not None for m in margins.values()):
            # What the method is for: do the prompts beat the frozen baseline beyond the seeds' noise?
            leads = [f"{c} {m['method']} {m['margin']:+.4f} ({lead_verdict(m, '>')})" for c, m in margins.items()]
            print("  best prompts vs baseline: " + ", ".join(leads))
    paired = summary.get("paired") or {}
    if several and paired:
        # Seed by seed on the same test samples: the difference's own interval, not two methods' spreads.
        print("  paired with the baseline (mean difference over seeds, 95% t-interval, verdict):")
        for method, columns in paired.items():
            cells = "; ".join(f"{column} {format_paired(cell)}" for column, cell in columns.items())
            print(f"  {method:<10} {cells}")
            recovered = {c: cell["gap_recovered"] for c, cell in columns.items() if cell["gap_recovered"] is not None}
            if recovered:
                print(f"  {'':<10} baseline→finetune gap recovered: "
                      + ", ".join(f"{c} {value:.0%}" for c, value in recovered.items()))  # fmt: skip
    for method, warnings in (summary.get("warnings") or {}).items():
        for warning in warnings:
            print(f"  WARNING {method}: {warning}")
    print(f"Report:    {summary['report']}")
    print(f"Dashboard: {summary['dashboard']}")


def parse_params(argv: list[str] | None, description: str, **defaults) -> tuple[PipelineParams, bool, bool]:
    """The flow's parameters from the command line (every PipelineParams field a flag), --debug and --always-run."""
    parser = argparse.ArgumentParser(description=description)
    for name, field in PipelineParams.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=field.description)
        elif name == "methods":
            parser.add_argument(flag, nargs="+", default=None, help="methods to train and publish")
        elif name == "seeds":
            parser.add_argument(flag, nargs="+", type=int, default=None, help=field.description)
        else:
            parser.add_argument(flag, default=None, help=field.description)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of a failure")
    parser.add_argument(
        "--always-run", action="store_true", help="run the flow even when nothing changed since the latest run"
    )
    args = vars(parser.parse_args(argv))
    debug, always_run = args.pop("debug"), args.pop("always_run")
    return PipelineParams(**{**defaults, **{k: v for k, v in args.items() if v is not None}}), debug, always_run


def run_from_command_line(flow_function, argv: list[str] | None, description: str, **defaults) -> int:
    """Parse, run the flow and print its summary; bad parameters exit 2, and a failure a user can cause ends
    in one line naming it (exit 1; Prefect's log has the details, --debug the traceback)."""
    from pydantic import ValidationError

    from mmp_core.cli import user_error

    try:
        params, debug, always_run = parse_params(argv, description, **defaults)
    except ValidationError as error:
        print(f"invalid parameters: {validation_line(error)}", file=sys.stderr)
        return 2
    try:
        started = time.perf_counter()
        preflight(params)  # before Prefect starts: a wrong store or params.yaml fails here, not after the stages
        # Nothing to run: say so without starting Prefect (deployments and --always-run always run the flow).
        if flow_function is pipeline and not always_run and (latest := unchanged_run(params)):
            seconds = round(time.perf_counter() - started, 1)
            print(f"Every DVC stage is up to date and run {latest} has these inputs ({seconds} s): nothing to run, "
                  "nothing published (--always-run to run the flow anyway).")  # fmt: skip
            return 0
        summary = flow_function(params)
    except Exception as error:
        message = str(error) if isinstance(error, DvcCommandFailed) else user_error(error)
        if message is None or debug:
            raise
        print(f"{flow_function.name}: failed: {message} (--debug for the traceback)", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0


def validation_line(error) -> str:
    """A pydantic ValidationError on one line: `store: unsupported store location ...; seeds: ...`."""
    return "; ".join(
        (f"{'.'.join(map(str, item['loc']))}: " if item["loc"] else "") + item["msg"].removeprefix("Value error, ")
        for item in error.errors()
    )


def main(argv: list[str] | None = None) -> int:
    return run_from_command_line(pipeline, argv, __doc__.splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
