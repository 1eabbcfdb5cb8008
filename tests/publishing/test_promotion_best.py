"""`promote_method: best` (the default): the run's candidate is the method with the best validation score (the mean
over seeds of each seed's best validation score), never chosen on the test split; the champion is compared with it
on the champion's own method; the report, the dashboard and the closing lines say which method and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmp_core.config import PipelineParams
from mmp_core.evaluation.seeds import aggregate_method
from mmp_core.publishing.dashboard import render_dashboard
from mmp_core.publishing.promotion import choose_candidate, validation_score
from mmp_core.publishing.publish import Versions, assemble_run, promote
from mmp_core.storage import open_store
from tests.results_fixtures import metrics_document

METHODS = ("baseline", "attention", "input")
# Validation scores per method and seed: attention is best on validation (mean 0.71), input on the test split.
VALIDATION = {"baseline": (0.69, 0.71), "attention": (0.70, 0.72), "input": (0.68, 0.70)}
TEST_SHIFT = {"baseline": 0.0, "attention": 0.02, "input": 0.05}


def make_repo(root: Path, val_missing: str = "{type: both, rate: 0.7}", test_shift: dict = TEST_SHIFT) -> Path:
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(f"seeds: [0, 1]\ntrain:\n  val_missing: {val_missing}\n")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    for method in METHODS:
        for seed, val in enumerate(VALIDATION[method]):
            models = root / "models" / method / "seeds" / str(seed)
            (models / "adapter").mkdir(parents=True)
            (models / "adapter" / "adapter_model.safetensors").write_bytes(f"{method}-{seed}".encode())
            (models / "train_summary.json").write_text(json.dumps({"best_val_f1_macro": val}))
            document = metrics_document(method, lambda t, r, s=test_shift[method]: 0.6 + s - 0.3 * r)
            results = root / "results" / method / "seeds" / str(seed)
            results.mkdir(parents=True)
            (results / "metrics.json").write_text(json.dumps(document))
        aggregate_method(root / "results" / method, root / "models" / method, (0, 1))
    return root


def assemble(repo: Path, store, run_id: str, promote_method: str = "best"):
    return assemble_run(
        repo, store, methods=METHODS, promote_method=promote_method, tolerance=0.01, run_id=run_id,
        versions=Versions("data", run_id, None), require_learning=False,
    )  # fmt: skip


def test_best_is_the_default_and_a_fixed_method_can_still_be_named():
    assert PipelineParams().promote_method == "best"
    assert PipelineParams(promote_method="input").promote_method == "input"
    with pytest.raises(ValueError, match=r"promote_method 'input' must be one of methods \['baseline'\] or best"):
        PipelineParams(methods=["baseline"], promote_method="input")


def test_the_candidate_is_the_best_mean_validation_score_not_the_best_test_score(tmp_path):
    repo = make_repo(tmp_path / "repo")
    results = {m: json.loads((repo / "results" / m / "metrics.json").read_text()) for m in METHODS}
    assert validation_score(results["attention"]) == pytest.approx(0.71)  # mean over seeds 0 and 1
    chosen = choose_candidate(results, "best", {"type": "both", "rate": 0.7})
    assert chosen.method == "attention"  # input is better on the test split: not looked at
    assert chosen.reason == (
        "best validation f1_macro 0.7100 of baseline 0.7000, attention 0.7100, input 0.6900 "
        "(validation split at both@0.7, the headline cell)"
    )
    named = choose_candidate(results, "input", {"type": "both", "rate": 0.7})
    assert named.method == "input" and named.reason.startswith("named by promote_method (validation f1_macro:")
    other = choose_candidate(results, "best", {"type": "text", "rate": 0.5})
    assert "validation split at text@0.5, not the headline cell both@0.7" in other.reason
    tie = {m: {**results[m], "per_seed": {"0": {"best_val_f1_macro": 0.5}}} for m in METHODS}
    assert choose_candidate(tie, "best").method == "baseline"  # a tie: the first method
    del tie["input"]["per_seed"]
    with pytest.raises(ValueError, match=r"no validation f1_macro .* for input"):
        choose_candidate(tie, "best")


def test_the_chosen_method_is_published_judged_on_the_champions_method_and_shown(tmp_path, capsys):
    store = open_store(str(tmp_path / "store"))
    first = assemble(make_repo(tmp_path / "first"), store, "first", promote_method="input")  # a named method
    store.publish_run(first.run_id, first.files, first.metadata)
    assert promote(store, first)[0]["metrics"]["method"] == "input"

    # The next run, every method 0.04 better on the test split: attention is its candidate (best validation),
    # judged against the champion's deployed input model, which it beats by 0.01.
    better = make_repo(tmp_path / "second", test_shift={m: shift + 0.04 for m, shift in TEST_SHIFT.items()})
    bundle = assemble(better, store, "second")
    assert bundle.promote_method == "attention" and bundle.metadata["promote_method"] == "attention"
    assert bundle.metadata["selection"]["reason"].startswith("best validation f1_macro 0.7100 of baseline")
    assert bundle.decision.promote, bundle.decision.reason
    assert bundle.decision.champion_value == pytest.approx(0.6 + 0.05 - 0.3 * 0.7)  # the champion's input
    assert bundle.decision.challenger_value == pytest.approx(0.6 + 0.06 - 0.3 * 0.7)
    report = bundle.report_path.read_text()
    assert "<p id='candidate' data-method='attention'><b>attention</b>: best validation f1_macro 0.7100" in report
    store.publish_run(bundle.run_id, bundle.files, bundle.metadata)
    pointer, _ = promote(store, bundle)
    assert pointer["metrics"]["method"] == "attention" and pointer["metrics"]["chosen"] == bundle.selection.reason
    dashboard = render_dashboard(store)
    assert "<p id='champion-chosen'>attention chosen by best validation f1_macro 0.7100 of baseline" in dashboard
    assert "<td class='l'>attention</td>" in dashboard and "<td class='l'>input</td>" in dashboard  # candidates

    from flows.pipeline import print_summary

    print_summary({"status": "promoted", "run_id": "second", "decision": pointer["reason"], "seeds": [0, 1],
                   "metric": "f1_macro", "candidate": "attention", "chosen": bundle.selection.reason,
                   "report": "file:///r", "dashboard": "file:///d"})  # fmt: skip
    assert f"Candidate: attention, {bundle.selection.reason}\n" in capsys.readouterr().out
