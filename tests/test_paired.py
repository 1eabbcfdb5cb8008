"""Paired statistics (mmp_core.paired) on constructed examples with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mmp_core.paired import bootstrap_interval, gap_recovered, metric, seed_interval, verdict


def accuracy(scores, labels):
    return float((scores.argmax(axis=1) == labels).mean())


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
