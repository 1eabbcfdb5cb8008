"""Metrics of a classifier's scores, and whether it learned anything: the dataset metrics (scikit-learn), the
label-prior baseline and the degenerate-model check. Used by training (validation), evaluation and probes."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from mmp_core.tasks import PRIMARY_METRIC

# A model gives near-constant answers (`degenerate`) when its most common answer covers more samples than the
# labels' most common answer does, and either covers at least DEGENERATE_SHARE of them, or covers most of them
# (at least half) and DEGENERATE_EXCESS more than the labels' most common answer.
DEGENERATE_SHARE = 0.95
DEGENERATE_EXCESS = 0.3


def compute_metrics(task: str, scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Dataset metrics from per-class probabilities.

    Args:
        task: `multilabel` (scores (N, C) sigmoid, labels (N, C) multi-hot), `multiclass` or `binary`
            (scores (N, C) softmax, labels (N,) class ids).
    Returns:
        multilabel: f1_macro, f1_micro, f1_weighted, f1_samples (threshold 0.5); multiclass: accuracy, f1_macro;
        binary: auroc (on the positive class's softmax) and accuracy. Values in [0, 1].
    """
    if len(scores) == 0:
        raise ValueError("cannot compute metrics on an empty set of predictions")
    if task == "multilabel":
        predicted = (scores > 0.5).astype(int)
        truth = labels.astype(int)
        return {
            f"f1_{average}": float(f1_score(truth, predicted, average=average, zero_division=0))
            for average in ("macro", "micro", "weighted", "samples")
        }
    predicted = scores.argmax(axis=1)
    truth = labels.astype(int)
    if task == "multiclass":
        return {
            "accuracy": float(accuracy_score(truth, predicted)),
            "f1_macro": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        }
    if task == "binary":
        auroc = float(roc_auc_score(truth, scores[:, 1])) if len(np.unique(truth)) == 2 else math.nan
        return {"auroc": auroc, "accuracy": float(accuracy_score(truth, predicted))}
    raise ValueError(f"unknown task {task!r}")


def prior_baseline(task: str, train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """The primary metric of the best predictor that ignores its input, knowing only the train labels' prior.

    multilabel F1-macro: predict every label the train split has (a constant all-positive answer scores
    2p/(1+p) per label, more than any random or all-negative one); multiclass accuracy: always the train split's
    most frequent class; binary AUROC: 0.5 (a constant score ranks nothing).
    """
    if task == "multilabel":
        present = (np.asarray(train_labels).sum(axis=0) > 0).astype(int)
        predicted = np.broadcast_to(present, np.asarray(test_labels).shape)
        return float(f1_score(np.asarray(test_labels).astype(int), predicted, average="macro", zero_division=0))
    if task == "multiclass":
        majority = np.bincount(np.asarray(train_labels).astype(int)).argmax()
        return float(accuracy_score(np.asarray(test_labels).astype(int), np.full(len(test_labels), majority)))
    if task == "binary":
        return 0.5
    raise ValueError(f"unknown task {task!r}")


def predictions(task: str, scores: np.ndarray) -> np.ndarray:
    """What the model answers per sample: the multi-hot set above 0.5 (multilabel) or the argmax class."""
    return (scores > 0.5).astype(np.int8) if task == "multilabel" else scores.argmax(axis=1)[:, None]


def answer_share(answers: np.ndarray) -> tuple[float, int]:
    """(share of the samples given the most common answer, distinct answers) of (N, K) answers, one row each."""
    _, counts = np.unique(answers, axis=0, return_counts=True)
    return float(counts.max() / len(answers)), len(counts)


def is_degenerate(share: float, label_share: float) -> bool:
    """Near-constant answers: the most common answer covers more of the samples than the labels' most common
    answer, and at least DEGENERATE_SHARE of them, or at least half and DEGENERATE_EXCESS more than the labels'."""
    excess = share - label_share
    return excess > 0 and (share >= DEGENERATE_SHARE or (share >= 0.5 and excess >= DEGENERATE_EXCESS))


def sanity_check(task: str, scores: np.ndarray, labels: np.ndarray, prior: float) -> dict:
    """Does the model learn at all? Flags a model whose answers are near-constant (`is_degenerate`: (almost)
    every sample gets the same answer, far more often than the labels repeat their most common answer), and one
    whose primary metric does not beat the label-prior baseline. A near-constant model's warning says whether
    its score still beats the prior (both can hold: the answer it repeats may be a good one).

    Returns {degenerate, most_common_answer_share, label_most_common_share, distinct_answers, beats_prior,
    prior_baseline, score, warnings: [one line each]}.
    """
    share, distinct = answer_share(predictions(task, scores))
    truth = np.asarray(labels).astype(np.int8) if task == "multilabel" else np.asarray(labels).astype(int)[:, None]
    label_share, _ = answer_share(truth)
    metric = PRIMARY_METRIC[task]
    score = compute_metrics(task, scores, labels)[metric]
    beats = bool(score > prior)
    degenerate = is_degenerate(share, label_share)
    versus = (
        f"{metric} {score:.4f} still beats the label prior {prior:.4f} (by {score - prior:.4f})"
        if beats
        else f"{metric} {score:.4f} does not beat the label-prior baseline {prior:.4f}"
    )
    warnings = []
    if degenerate:
        warnings.append(
            f"near-constant answers: {share:.0%} of the samples get the same answer ({distinct} distinct answers; "
            f"the labels' most common answer covers {label_share:.0%}); {versus}"
        )
    elif not beats:
        warnings.append(versus)
    return {
        "degenerate": degenerate,
        "most_common_answer_share": round(share, 4),
        "label_most_common_share": round(label_share, 4),
        "distinct_answers": distinct,
        "beats_prior": beats,
        "prior_baseline": round(prior, 4),
        "score": round(score, 4),
        "warnings": warnings,
    }
