"""Paired statistics (mmp_core.evaluation.paired) on constructed examples with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mmp_core.evaluation.paired import (
    bootstrap_interval,
    contrast_interval,
    format_paired,
    gap_recovered,
    metric,
    paired_table,
    seed_interval,
    verdict,
)
from mmp_core.evaluation.seeds import aggregate_documents


def accuracy(scores, labels):
    return float((scores.argmax(axis=1) == labels).mean())


def summarised(differences):
    mean, low, high = seed_interval(differences)
    return {"mean": mean, "low": low, "high": high, "seeds": len(differences)}


def test_contrast_interval_is_welchs_interval_from_the_two_summaries():
    # Two independent experiments, known per-seed differences: the interval rebuilt from the two t-interval
    # summaries is scipy's Welch interval on the raw values.
    first, second = [0.05, 0.02, 0.04, 0.07, 0.03], [0.01, -0.01, 0.00, 0.02, 0.005, 0.012]
    difference, low, high = contrast_interval(summarised(first), summarised(second))
    welch = stats.ttest_ind(first, second, equal_var=False).confidence_interval(0.95)
    assert difference == pytest.approx(np.mean(first) - np.mean(second))
    assert (low, high) == (pytest.approx(welch.low), pytest.approx(welch.high))
    assert verdict(low, high) == "ahead"
    # The other way round is the mirror image; one seed on either side gives no interval.
    assert contrast_interval(summarised(second), summarised(first))[1] == pytest.approx(-high)
    assert contrast_interval(summarised(first), summarised([0.01]))[1:] == (None, None)


def test_seed_interval_is_the_student_t_interval_over_seeds():
    mean, low, high = seed_interval([1.0, 2.0, 3.0])
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sample sd of 1, 2, 3 is 1
    assert mean == pytest.approx(2.0)
    assert (low, high) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    assert (low, high) == (pytest.approx(-0.484, abs=1e-3), pytest.approx(4.484, abs=1e-3))
    _, narrow_low, narrow_high = seed_interval([1.0, 2.0, 3.0], confidence=0.5)
    assert low < narrow_low < 2.0 < narrow_high < high


def test_seed_interval_edge_cases():
    assert seed_interval([0.25]) == (0.25, None, None)  # one seed: no spread to estimate
    assert seed_interval([0.1, 0.1, 0.1]) == (pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.1))
    for bad in ([], [1.0, math.nan]):
        with pytest.raises(ValueError):
            seed_interval(bad)
    with pytest.raises(ValueError, match="confidence"):
        seed_interval([1.0, 2.0], confidence=1.0)


def test_bootstrap_of_a_copy_is_exactly_zero():
    rng = np.random.default_rng(1)
    scores = rng.random((50, 4))
    labels = rng.integers(0, 4, 50)
    assert bootstrap_interval(accuracy, scores, scores.copy(), labels, n_resamples=200) == (0.0, 0.0, 0.0)


def test_bootstrap_always_right_against_always_wrong_is_one():
    labels = np.arange(40) % 3
    right = np.eye(3)[labels]
    wrong = np.eye(3)[(labels + 1) % 3]
    diff, low, high = bootstrap_interval(metric("multiclass", "f1_macro"), right, wrong, labels, n_resamples=200)
    assert (diff, low, high) == (1.0, 1.0, 1.0)
    diff, low, high = bootstrap_interval(accuracy, wrong, right, labels, n_resamples=200)
    assert (diff, low, high) == (-1.0, -1.0, -1.0)


def test_bootstrap_is_paired_reproducible_and_covers_the_difference():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    b = np.eye(2)[np.where(rng.random(200) < 0.6, labels, 1 - labels)]  # ~60% right
    a = b.copy()
    flip = np.flatnonzero(b.argmax(axis=1) != labels)[:20]  # a also gets 20 of b's misses right
    a[flip] = np.eye(2)[labels[flip]]
    diff, low, high = bootstrap_interval(accuracy, a, b, labels, n_resamples=500, seed=3)
    assert diff == pytest.approx(0.1)
    assert 0 < low < diff < high  # paired: a is never worse on a sample, so no resample has a behind
    assert bootstrap_interval(accuracy, a, b, labels, n_resamples=500, seed=3) == (diff, low, high)
    assert bootstrap_interval(accuracy, a, b, labels, n_resamples=500, seed=4) != (diff, low, high)


def test_bootstrap_multilabel_scores():
    rng = np.random.default_rng(2)
    labels = (rng.random((30, 5)) < 0.4).astype(int)
    perfect = labels.astype(float)
    diff, low, high = bootstrap_interval(metric("multilabel", "f1_micro"), perfect, 1.0 - perfect, labels, 100)
    assert (diff, low, high) == (1.0, 1.0, 1.0)
    noisy = np.clip(perfect + rng.normal(0, 0.4, perfect.shape), 0, 1)
    diff, low, high = bootstrap_interval(metric("multilabel", "f1_macro"), perfect, noisy, labels, 100)
    assert 0 < low <= diff <= high <= 1


@pytest.mark.parametrize(
    ("task", "name"),
    [
        ("multilabel", "f1_macro"),
        ("multilabel", "f1_micro"),
        ("multiclass", "f1_macro"),
        ("multiclass", "accuracy"),
        ("binary", "accuracy"),
    ],
)
def test_counted_metrics_match_scikit_learn_resample_by_resample(task, name):
    rng = np.random.default_rng(5)
    classes = {"multilabel": 6, "multiclass": 7, "binary": 2}[task]
    if task == "multilabel":
        labels = (rng.random((40, classes)) < 0.2).astype(int)
        a, b = rng.random((40, classes)), rng.random((40, classes)) * 0.8
    else:  # a few rare classes, so that resamples lose some of them
        labels = rng.choice(classes, 40, p=np.r_[0.4, np.full(classes - 1, 0.6 / (classes - 1))])
        a, b = rng.dirichlet(np.ones(classes), 40), rng.dirichlet(np.ones(classes), 40)
    counted = metric(task, name)
    assert hasattr(counted, "weighted")

    def one_by_one(scores, y):
        return counted(scores, y)

    fast = bootstrap_interval(counted, a, b, labels, n_resamples=100, seed=7)
    slow = bootstrap_interval(one_by_one, a, b, labels, n_resamples=100, seed=7)
    assert fast == pytest.approx(slow, abs=1e-12)
    assert not hasattr(metric("multilabel", "f1_samples"), "weighted")


def test_bootstrap_rejects_mismatched_inputs():
    scores, labels = np.zeros((4, 2)), np.zeros(4, dtype=int)
    with pytest.raises(ValueError, match="same samples"):
        bootstrap_interval(accuracy, scores, scores[:3], labels)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_interval(accuracy, scores, scores, labels, n_resamples=0)
    with pytest.raises(ValueError, match="empty"):
        bootstrap_interval(accuracy, scores[:0], scores[:0], labels[:0])


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.01, 0.2, "ahead"),
        (-0.2, -0.01, "behind"),
        (-0.1, 0.1, "within"),
        (0.0, 0.1, "within"),  # touching 0 is not above it
        (-0.1, 0.0, "within"),
        (0.0, 0.0, "within"),
        (None, None, "within"),  # one seed: no interval
        (math.nan, math.nan, "within"),
    ],
)
def test_verdict(low, high, expected):
    assert verdict(low, high) == expected


def test_verdict_rejects_reversed_bounds():
    with pytest.raises(ValueError, match="out of order"):
        verdict(0.2, 0.1)


@pytest.mark.parametrize(
    ("baseline", "method", "finetune", "expected"),
    [
        (0.5, 0.6, 0.7, 0.5),
        (0.5, 0.7, 0.7, 1.0),
        (0.5, 0.5, 0.7, 0.0),
        (0.5, 0.4, 0.7, -0.5),  # worse than the baseline
        (0.5, 0.8, 0.7, 1.5),  # better than finetuning
        (0.5, 0.6, 0.5, None),  # no gap
        (0.5, 0.6, 0.4, None),  # finetuning below the baseline
        (0.5, math.nan, 0.7, None),
    ],
)
def test_gap_recovered(baseline, method, finetune, expected):
    result = gap_recovered(baseline, method, finetune)
    assert result == (None if expected is None else pytest.approx(expected))


def seeded_document(method: str, values_by_seed: dict[int, dict[tuple[str, float], float]]) -> dict:
    """As `mmp aggregate` folds per-seed evaluation documents: the real fold, on constructed grids."""
    documents, summaries = {}, {}
    for seed, cells in values_by_seed.items():
        grid = [{"missing_type": t, "missing_rate": r, "f1_macro": v} for (t, r), v in cells.items()]
        documents[seed] = {"method": method, "dataset": "d", "task": "multilabel", "primary_metric": "f1_macro",
                           "train_setting": {}, "headline": grid[0], "grid": grid}  # fmt: skip
        summaries[seed] = {"best_val_f1_macro": 0.5}
    return aggregate_documents(documents, summaries)


def cells(text: float, image: float, both: float, complete: float) -> dict:
    return {("text", 0.0): complete, ("text", 0.7): text, ("image", 0.7): image, ("both", 0.7): both}


def test_paired_table_pairs_seeds_and_reads_the_gap_to_finetune():
    base = [0.50, 0.52, 0.48]
    results = {
        # +0.10 on every seed for text (interval [0.1, 0.1]: ahead); image differences 0.02, -0.02, 0.0 (within)
        "attention": seeded_document(
            "attention",
            {
                s: cells(b + 0.10, b + d, b, b + 0.2)
                for s, (b, d) in enumerate(zip(base, (0.02, -0.02, 0), strict=True))
            },
        ),
        "baseline": seeded_document("baseline", {s: cells(b, b, b, b + 0.2) for s, b in enumerate(base)}),
        "finetune": seeded_document("finetune", {s: cells(b + 0.20, b, b - 0.01, b + 0.3) for s, b in enumerate(base)}),
    }
    table = paired_table(results, 0.7)
    assert set(table) == {"attention", "finetune"}
    text = table["attention"]["text"]
    assert text["mean"] == pytest.approx(0.10) and text["seeds"] == 3
    assert (text["low"], text["high"]) == (pytest.approx(0.10), pytest.approx(0.10))
    assert text["verdict"] == "ahead"
    assert text["gap_recovered"] == pytest.approx(0.5)  # 0.10 of finetune's 0.20
    image = table["attention"]["image"]
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert image["mean"] == pytest.approx(0.0, abs=1e-12) and image["high"] == pytest.approx(half)
    assert image["verdict"] == "within" and image["gap_recovered"] is None  # finetune does not beat the baseline
    assert table["attention"]["both"]["verdict"] == "within"
    assert table["attention"]["complete"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert table["finetune"]["both"]["verdict"] == "behind" and table["finetune"]["text"]["gap_recovered"] is None
    assert format_paired(text) == "+0.100 [+0.100, +0.100] ahead"


def test_paired_table_uses_only_the_seeds_both_methods_have():
    results = {
        "baseline": seeded_document("baseline", {0: cells(0.5, 0.5, 0.5, 0.7), 1: cells(0.6, 0.6, 0.6, 0.8)}),
        "input": seeded_document("input", {1: cells(0.7, 0.6, 0.6, 0.8), 2: cells(0.0, 0.0, 0.0, 0.0)}),
    }
    text = paired_table(results, 0.7)["input"]["text"]
    assert text["seeds"] == 1 and text["mean"] == pytest.approx(0.1)
    assert text["low"] is None and text["verdict"] == "within"
    assert format_paired(text) == "+0.100 (1 seed, no interval)"
    assert paired_table({"input": results["input"]}, 0.7) == {}


def test_report_and_closing_lines_show_the_paired_intervals(capsys):
    from flows.pipeline import print_summary
    from mmp_core.publishing.report import render_report

    base = [0.50, 0.52, 0.48]
    results = {
        "baseline": seeded_document("baseline", {s: cells(b, b, b, b + 0.2) for s, b in enumerate(base)}),
        "attention": seeded_document("attention", {s: cells(b + 0.1, b, b, b + 0.2) for s, b in enumerate(base)}),
        "finetune": seeded_document("finetune", {s: cells(b + 0.2, b, b, b + 0.3) for s, b in enumerate(base)}),
    }
    report = render_report(results, {"run_id": "r1"})
    assert "<table id='paired'>" in report
    assert "<td data-verdict='ahead'>+0.100 [+0.100, +0.100] ahead<br>50% of the gap</td>" in report

    print_summary({"status": "published", "run_id": "r1", "decision": "d", "seeds": [0, 1, 2], "metric": "f1_macro",
                   "paired": paired_table(results, 0.7), "headline": {}, "report": "r", "dashboard": "d"})  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("  attention "))
    assert "text +0.100 [+0.100, +0.100] ahead" in row and "image +0.000" in row
    gap = next(line for line in lines if "gap recovered" in line)
    assert gap.split(": ")[1] == "text 50%, complete 0%"  # no gap to recover on image and both

    one_seed = {m: seeded_document(m, {0: cells(0.5, 0.5, 0.5, 0.7)}) for m in ("baseline", "attention")}
    assert "id='paired'" not in render_report(one_seed, {"run_id": "r2"})  # one seed: no interval to show


def test_dashboard_shows_the_latest_runs_paired_intervals(tmp_path):
    from mmp_core.publishing.dashboard import render_dashboard
    from mmp_core.storage.local_store import LocalStore
    from tests.publishing.test_report import publish

    base = [0.50, 0.52, 0.48]
    results = {
        "baseline": seeded_document("baseline", {s: cells(b, b, b, b + 0.2) for s, b in enumerate(base)}),
        "input": seeded_document("input", {s: cells(b - 0.05, b, b, b + 0.2) for s, b in enumerate(base)}),
    }
    store = LocalStore(tmp_path / "store")
    publish(store, "r1", results, "2026-01-01T00:00:00+00:00", tmp_path)
    html = render_dashboard(store)
    assert "<table id='paired'>" in html
    assert "<td data-verdict='behind'>-0.050 [-0.050, -0.050] behind</td>" in html
