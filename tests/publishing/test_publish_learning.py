"""Publishing a run made of several training seeds, and the learning gate: a model flagged as not learning is
published with its warning but never promoted (unless the gate is turned off)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmp_core.evaluation.seeds import aggregate_method
from mmp_core.publishing.publish import Versions, assemble_run, promote
from mmp_core.publishing.report import load_run_results
from mmp_core.storage import open_store
from mmp_core.storage.artifact_store import ChampionMovedError
from tests.results_fixtures import metrics_document

METHODS = ("baseline", "input")
WARNING = "degenerate model: 100% of the samples get the same answer (1 distinct answers)"


def make_repo(root: Path, seeds=(0, 1), degenerate: bool = False) -> Path:
    root.mkdir(parents=True)
    (root / "params.yaml").write_text("seeds: [0, 1]\n")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    for method in METHODS:
        for seed in seeds:
            models = root / "models" / method / "seeds" / str(seed)
            (models / "adapter").mkdir(parents=True)
            (models / "adapter" / "adapter_model.safetensors").write_bytes(f"{method}-{seed}".encode())
            (models / "train_summary.json").write_text(json.dumps({"best_val_f1_macro": 0.3 + 0.1 * seed}))
            document = metrics_document(method, lambda t, r, s=seed: 0.6 - 0.3 * r + 0.01 * s)
            bad = degenerate and method == "input"
            document["sanity"] = {"degenerate": bad, "warnings": [WARNING] if bad else []}
            results = root / "results" / method / "seeds" / str(seed)
            results.mkdir(parents=True)
            (results / "metrics.json").write_text(json.dumps(document))
        aggregate_method(root / "results" / method, root / "models" / method, seeds)
    return root


def assemble(repo: Path, store, run_id: str, **kwargs):
    versions = Versions("data", "params", None)
    return assemble_run(
        repo, store, methods=METHODS, promote_method="input", tolerance=0.01, run_id=run_id, versions=versions, **kwargs
    )


def test_a_run_of_several_seeds_publishes_the_best_validation_adapter_and_every_seed(tmp_path):
    repo = make_repo(tmp_path / "repo")
    store = open_store(str(tmp_path / "store"))
    bundle = assemble(repo, store, "two-seeds")
    assert bundle.decision.promote
    store.publish_run(bundle.run_id, bundle.files, bundle.metadata)
    keys = {f["key"] for f in store.get_manifest("two-seeds")["files"]}
    for method in METHODS:
        assert (
            f"results/{method}/seeds/1/metrics.json" in keys and f"models/{method}/seeds/0/train_summary.json" in keys
        )
    # seed 1 had the better validation score: its adapter is the method's
    assert store.read_run_file("two-seeds", "models/input/adapter/adapter_model.safetensors") == b"input-1"
    results = load_run_results(store, "two-seeds")
    assert set(results) == set(METHODS) and results["input"]["seeds"] == [0, 1]  # the folded ones, not a seed's
    headline = store.get_manifest("two-seeds")["metadata"]["headline"]["input"]
    assert headline["seeds"] == [0, 1] and headline["value_sd"] == pytest.approx(0.01 / 2**0.5)
    report = (repo / ".run" / "runs" / "two-seeds" / "report.html").read_text()
    assert "± 0.0071" in report and "mean ± sd over 2 training seeds" in report


def test_a_model_that_does_not_learn_is_published_but_never_promoted(tmp_path):
    repo = make_repo(tmp_path / "repo", degenerate=True)
    store = open_store(str(tmp_path / "store"))
    bundle = assemble(repo, store, "flat")
    assert not bundle.decision.promote
    assert bundle.decision.reason.startswith("not promoted: the model does not learn: degenerate model")
    store.publish_run(bundle.run_id, bundle.files, bundle.metadata)
    assert promote(store, bundle)[0] is None and store.get_champion() is None
    assert store.get_manifest("flat")["metadata"]["headline"]["input"]["warnings"] == [WARNING, f"seed 0: {WARNING}"]
    report = (repo / ".run" / "runs" / "flat" / "report.html").read_text()
    assert "id='sanity'" in report and "input: degenerate model" in report

    allowed = assemble(repo, store, "flat-allowed", require_learning=False)
    assert allowed.decision.promote


def test_a_corrupt_champion_stops_the_run_instead_of_losing(tmp_path):
    repo = make_repo(tmp_path / "repo")
    store = open_store(str(tmp_path / "store"))
    first = assemble(repo, store, "first")
    store.publish_run(first.run_id, first.files, first.metadata)
    promote(store, first)
    stored = tmp_path / "store" / "runs" / "first" / "results" / "input" / "metrics.json"
    stored.write_bytes(stored.read_bytes().replace(b"0.", b"9.", 1))  # one byte changed in the store
    with pytest.raises(ValueError, match=r"'results/input/metrics\.json' fails its checksum"):
        assemble(repo, store, "second")


# ---------------------------------------------------------------------------------------------- promotion races
def _racing_stores(kind: str, tmp_path, request):
    if kind == "local":
        return open_store(str(tmp_path / "store"))
    bucket, endpoint = request.getfixturevalue("s3_bucket"), request.getfixturevalue("moto_server")
    return open_store(f"s3://{bucket}/team", endpoint_url=endpoint)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_two_flows_promoting_at_once_are_both_judged_against_the_champion_there_is(kind, tmp_path, request):
    """Both runs are assembled against 'no champion'; the second to promote must be judged against the first."""
    store = _racing_stores(kind, tmp_path, request)
    better = make_repo(tmp_path / "better")
    worse = make_repo(tmp_path / "worse")
    for seed_dir in (worse / "results" / "input" / "seeds").iterdir():  # the same grid, 0.1 lower everywhere
        path = seed_dir / "metrics.json"
        document = json.loads(path.read_text())
        for row in (*document["grid"], document["headline"]):
            row["f1_macro"] -= 0.1
        path.write_text(json.dumps(document))
    aggregate_method(worse / "results" / "input", worse / "models" / "input", (0, 1))

    first, second = assemble(better, store, "run-better"), assemble(worse, store, "run-worse")
    assert first.decision.promote and second.decision.promote  # each saw no champion
    for bundle in (first, second):
        store.publish_run(bundle.run_id, bundle.files, bundle.metadata)
    pointer, decision = promote(store, first)
    assert pointer["run_id"] == "run-better" and pointer["previous_run_id"] is None
    pointer, decision = promote(store, second)
    assert pointer is None and not decision.promote
    assert "judged again: the champion moved to 'run-better'" in decision.reason
    assert store.get_champion()["run_id"] == "run-better"

    # The write itself is a compare-and-swap: a stale expectation changes nothing.
    with pytest.raises(ChampionMovedError, match="moved from None to 'run-better'"):
        store.set_champion("run-worse", {"value": 0.0}, expected=None)
    assert store.get_champion()["run_id"] == "run-better"


def test_a_champion_that_vanished_is_not_judged_against(tmp_path):
    store = open_store(str(tmp_path / "store"))
    repo = make_repo(tmp_path / "repo")
    old = assemble(repo, store, "old")
    store.publish_run(old.run_id, old.files, old.metadata)
    promote(store, old)
    challenger = assemble(repo, store, "new")  # equal results: rejected against 'old'
    assert not challenger.decision.promote
    (tmp_path / "store" / "champion.json").unlink()  # the store lost its pointer (an S3 restart)
    store.publish_run(challenger.run_id, challenger.files, challenger.metadata)
    pointer, decision = promote(store, challenger)
    assert pointer["run_id"] == "new" and "judged again: the champion moved to None" in decision.reason
