"""A pipeline run, from the DVC project's outputs to the artifact store.

The DVC stages leave, per method and training seed, `models/<method>/seeds/<seed>/` (adapter/,
train_summary.json) and `results/<method>/seeds/<seed>/`, and per method `results/<method>/` (metrics.json:
the mean ± sd over seeds, grid.tsv). A run bundles those with the report, the promotion decision, params.yaml and
dvc.lock, and is identified by the versions it was made from: the prepared data's DVC hash, a fingerprint
of the parameters and the git commit. The flows call these functions; they hold no logic of their own.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import yaml

from mmp_core.evaluation.seeds import SEEDS_DIR
from mmp_core.fileio import atomic_write_json, atomic_write_text
from mmp_core.publishing.promotion import (
    PromotionDecision,
    Selection,
    build_run_metadata,
    choose_candidate,
    decide_promotion,
    headline_summary,
)
from mmp_core.publishing.report import load_run_results, render_report
from mmp_core.storage.artifact_store import ArtifactStore, ChampionMovedError

MODELS_DIR = "models"
RESULTS_DIR = "results"
STAGING_DIR = ".run/runs"
# params.yaml entries that define a run (the flows' own `pipeline` section does not; `pretrain` records how the
# shipped backbone was made, which the backbone's files themselves version).
RUN_SECTIONS = ("methods", "seeds", "generate", "prepare", "train", "evaluate")


@dataclass(frozen=True)
class Versions:
    """What a run was made from."""

    data_version: str  # DVC's hash of the prepared data (dvc.lock, stage `prepare`)
    params_fingerprint: str  # of the params.yaml sections in RUN_SECTIONS
    git_commit: str | None

    def same_inputs(self, metadata: dict | None) -> bool:
        """True if a published run's metadata records the same data and parameters."""
        return bool(metadata) and (
            metadata.get("data_version") == self.data_version
            and metadata.get("params_fingerprint") == self.params_fingerprint
        )


def project_versions(repo: str | Path) -> Versions:
    """Versions of the project as `dvc repro` left it (reads dvc.lock and params.yaml)."""
    repo = Path(repo)
    lock_path = repo / "dvc.lock"
    try:
        lock = yaml.safe_load(lock_path.read_text()) or {}
        outs = lock["stages"]["prepare"]["outs"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{lock_path}: not found; run `dvc repro` first") from None
    except (KeyError, TypeError):
        raise ValueError(f"{lock_path}: has no outputs for stage 'prepare'; run `dvc repro prepare`") from None
    data_version = hashlib.sha256(json.dumps(sorted((o["path"], o.get("md5", "")) for o in outs)).encode()).hexdigest()[
        :16
    ]
    return Versions(data_version, params_fingerprint(repo / "params.yaml"), git_commit(repo))


def params_fingerprint(path: str | Path) -> str:
    params = yaml.safe_load(Path(path).read_text()) or {}
    relevant = {section: params.get(section) for section in RUN_SECTIONS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit(repo: str | Path) -> str | None:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=False)
    return result.stdout.strip() or None if result.returncode == 0 else None


def unchanged_since(store, versions: Versions) -> dict | None:
    """The store's latest run when it was published from these same data and parameters, else None."""
    latest = store.latest_run()
    return latest if latest and versions.same_inputs(latest["metadata"]) else None


def new_run_id(versions: Versions, now: datetime | None = None) -> str:
    """`<UTC time>-<data>-<params>`: sortable, and telling at a glance which inputs changed."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{versions.data_version[:6]}-{versions.params_fingerprint[:6]}"


def collect_results(repo: str | Path, methods: tuple[str, ...]) -> dict[str, dict]:
    """{method: metrics.json} as written by `mmp evaluate`."""
    results = {}
    for method in methods:
        path = Path(repo) / RESULTS_DIR / method / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no evaluation results for method {method!r}; run `dvc repro`")
        results[method] = json.loads(path.read_text())
    return results


@dataclass(frozen=True)
class RunBundle:
    """Everything one run publishes, staged locally."""

    run_id: str
    files: dict[str, Path]  # store key (relative to runs/<run_id>/) -> local file or directory
    metadata: dict
    decision: PromotionDecision
    results: dict[str, dict]
    promote_method: str  # the run's candidate: the method chosen (see `selection`)
    report_path: Path
    tolerance: float = 0.01  # the promotion rule's, kept to judge again if the champion moves
    require_learning: bool = True
    selection: Selection | None = None  # which method is the candidate, and why


def assemble_run(
    repo: str | Path,
    store: ArtifactStore,
    *,
    methods: tuple[str, ...],
    promote_method: str,
    tolerance: float,
    run_id: str,
    versions: Versions,
    require_learning: bool = True,
) -> RunBundle:
    """Choose the run's candidate (`promote_method`: a method, or "best": the best validation score), compare it
    with the champion, render the report, and list the files to publish."""
    repo = Path(repo)
    results = collect_results(repo, methods)
    selection = choose_candidate(results, promote_method, validation_setting(repo / "params.yaml"))
    promote_method = selection.method
    champion = store.get_champion()
    decision = judge(store, champion, results[promote_method], tolerance, require_learning)
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    metadata = build_run_metadata(
        results,
        data_version=versions.data_version,
        params_fingerprint=versions.params_fingerprint,
        git_commit=versions.git_commit,
        created_at=created_at,
        promote_method=promote_method,
        selection=selection.to_dict(),
        champion_before=champion["run_id"] if champion else None,
        promotion={"promote": decision.promote, "reason": decision.reason},
    )
    staging = repo / STAGING_DIR / run_id
    report_path = atomic_write_text(
        staging / "report.html",
        render_report(results, {"run_id": run_id, **metadata, "promotion": decision}),
    )
    atomic_write_json(staging / "decision.json", decision.to_dict())
    files: dict[str, Path] = {"report.html": report_path, "decision.json": staging / "decision.json"}
    for name in ("params.yaml", "dvc.lock"):
        files[name] = repo / name
    for method in methods:
        # The method's published adapter is the seed with the best validation score (`mmp aggregate`); every
        # seed's training summary and evaluation go along, so the mean ± sd can be checked.
        seeds = results[method].get("seeds", [])
        adapter_seed = results[method].get("adapter_seed")
        if adapter_seed is None:
            raise ValueError(
                f"{repo / RESULTS_DIR / method / 'metrics.json'}: names no adapter_seed; run `dvc repro` "
                "(its aggregate stage)"
            )
        files[f"models/{method}/adapter"] = repo / MODELS_DIR / method / SEEDS_DIR / str(adapter_seed) / "adapter"
        for seed in seeds:
            seed_models = repo / MODELS_DIR / method / SEEDS_DIR / str(seed)
            seed_results = repo / RESULTS_DIR / method / SEEDS_DIR / str(seed)
            files[f"models/{method}/seeds/{seed}/train_summary.json"] = seed_models / "train_summary.json"
            files[f"results/{method}/seeds/{seed}/metrics.json"] = seed_results / "metrics.json"
        for name in ("metrics.json", "grid.tsv"):
            files[f"results/{method}/{name}"] = repo / RESULTS_DIR / method / name
    missing = [str(path) for path in files.values() if not path.exists()]
    if missing:
        raise FileNotFoundError(f"cannot publish run {run_id}: missing {', '.join(missing)}")
    return RunBundle(
        run_id, files, metadata, decision, results, promote_method, report_path, tolerance, require_learning, selection
    )


def validation_setting(params_file: Path) -> dict:
    """The validation split's missing setting ({type, rate}): params.yaml's train.val_missing (its default when
    absent)."""
    from mmp_core.config import ScenarioParams

    document = yaml.safe_load(params_file.read_text()) if params_file.is_file() else None
    raw = ((document or {}).get("train") or {}).get("val_missing") or {}
    return ScenarioParams.model_validate(raw).model_dump()


def judge(
    store: ArtifactStore, champion: dict | None, challenger: dict, tolerance: float, require_learning: bool
) -> PromotionDecision:
    """The promotion rule for `challenger` (a method's metrics.json) against the champion pointer `champion`: the
    champion's own method (the model deployed), whichever method the challenger is.

    A champion whose stored results fail their checksums raises (never "no champion"). A challenger flagged
    as not learning is not promoted when `require_learning`."""
    champion_results = load_run_results(store, champion["run_id"]) if champion else {}
    method = ((champion or {}).get("metrics") or {}).get("method") or challenger.get("method")
    if champion and method not in champion_results:
        raise ValueError(f"champion {champion['run_id']!r} has no results for method {method!r} in the store")
    decision = decide_promotion(
        champion_results.get(method),
        challenger,
        metric=challenger["primary_metric"],
        headline=challenger["headline"],
        tolerance=tolerance,
    )
    learning_warnings = (challenger.get("sanity") or {}).get("warnings") or []
    if decision.promote and learning_warnings and require_learning:
        # A model that predicts one answer everywhere (or no better than the label prior) is published, so
        # that it can be looked at, but never becomes the champion, however it compares.
        decision = replace(
            decision, promote=False, reason="not promoted: the model does not learn: " + "; ".join(learning_warnings)
        )
    return decision


def promote(store: ArtifactStore, bundle: RunBundle, attempts: int = 5) -> tuple[dict | None, PromotionDecision]:
    """Apply the decision as a compare-and-swap on the champion pointer: (new pointer or None, final decision).

    The decision was made against the champion read when the run was assembled. If another flow has moved the
    pointer since (or it vanished), the run is judged again against the champion there is now, and the write
    succeeds only if the pointer is still the one judged against."""
    decision, expected = bundle.decision, bundle.metadata.get("champion_before")
    challenger = bundle.results[bundle.promote_method]
    for _ in range(attempts):
        current = store.get_champion()
        found = current["run_id"] if current else None
        if found != expected:
            decision = judge(store, current, challenger, bundle.tolerance, bundle.require_learning)
            decision = replace(decision, reason=f"{decision.reason} (judged again: the champion moved to {found!r})")
            expected = found
        if not decision.promote:
            return None, decision
        try:
            metrics = headline_summary(challenger)
            if bundle.selection is not None:  # which method, and why: the dashboard shows it
                metrics["chosen"] = bundle.selection.reason
            pointer = store.set_champion(bundle.run_id, metrics, reason=decision.reason, expected=expected)
            return pointer, decision
        except ChampionMovedError as moved:
            expected = moved.expected  # the next attempt sees the pointer has moved and judges again
    raise RuntimeError(f"run {bundle.run_id}: the champion kept moving during {attempts} promotion attempts")


def latest_run_metadata(store: ArtifactStore) -> dict | None:
    latest = store.latest_run()
    return latest["metadata"] if latest else None
