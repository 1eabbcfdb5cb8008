"""The scheduled retraining: newest data → anything changed? → pipeline → champion vs. challenger.

Ends in seconds when neither the data nor the parameters changed since the last published run.

    python -m flows.retrain [--store ...] [--tolerance 0.01] ...
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger

from flows.pipeline import pipeline, run_from_command_line
from flows.tasks import dvc_pull, dvc_repro, open_artifact_store, preflight, versions_of
from mmp_core.config import PipelineParams
from mmp_core.publishing.publish import latest_run_metadata, unchanged_since


@flow(name="mmp-retrain", log_prints=True)
def retrain(params: PipelineParams = PipelineParams(pull=True)) -> dict:  # noqa: B008
    preflight(params)  # before the pull and any stage: params.yaml, the store (reached and written), the backbone
    logger = get_run_logger()
    store = open_artifact_store(params)
    if params.pull:
        dvc_pull(params.repo)
    dvc_repro(params.repo, "prepare")  # the data as the newest inputs define it (a no-op if unchanged)
    versions = versions_of(params.repo)
    latest = unchanged_since(store, versions)
    if latest:
        logger.info(
            "nothing changed since run %s (data %s, params %s): not retraining",
            latest["run_id"],
            versions.data_version,
            versions.params_fingerprint,
        )
        return {
            "status": "unchanged",
            "run_id": latest["run_id"],
            "data_version": versions.data_version,
            "params_fingerprint": versions.params_fingerprint,
        }
    previous = latest_run_metadata(store) or {}
    logger.info(
        "inputs changed (data %s -> %s, params %s -> %s): retraining",
        previous.get("data_version"),
        versions.data_version,
        previous.get("params_fingerprint"),
        versions.params_fingerprint,
    )
    return pipeline(params.model_copy(update={"pull": False}))


def main(argv: list[str] | None = None) -> int:
    return run_from_command_line(retrain, argv, __doc__.splitlines()[0], pull=True)


if __name__ == "__main__":
    sys.exit(main())
