"""Linear probes on a frozen backbone: how much of a dataset its pooled [CLS] carries, per modality.

The backbone runs unchanged (its own pooler, no prompts) on the train and test splits, fed complete, with every
text missing, or with every image missing (the inputs the prompt model gets for a missing modality). A
standardised logistic regression per input is fitted on the train features and scored on the test features with
the dataset's metric. A backbone that aligns the modalities scores well complete and clearly lower on either one.

A label that never occurs in the train split is never predicted (scikit-learn fits a constant for it, warning once
per label and input: silenced here), and one absent from the test split scores 0 in F1-macro: `linear_probe`
names both sets once (`absent_labels`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmp_core.scenarios import COMPLETE, IMAGE_MISSING, TEXT_MISSING

PROBE_INPUTS = {"complete": COMPLETE, "text missing": TEXT_MISSING, "image missing": IMAGE_MISSING}
# What OneVsRestClassifier warns for each label no training example has.
ABSENT_LABEL_WARNING = r"Label not .* is present in all training examples"


@torch.no_grad()
def frozen_outputs(backbone, dataset, read, batch_size: int = 64) -> np.ndarray:
    """`read(batch, output)` -> (B, D) tensor for every batch of `dataset` through the frozen backbone, in order,
    concatenated to (N, D)."""
    from mmp_core.data import collate

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    backbone.eval()
    features = []
    with torch.random.fork_rng():
        torch.manual_seed(0)  # ViLT draws its image patch order from the global RNG
        for batch in loader:
            out = backbone(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"],
                pixel_mask=batch["pixel_mask"],
            )
            features.append(read(batch, out).float().numpy())
    return np.concatenate(features)


def pooled_features(backbone, dataset, batch_size: int = 64) -> np.ndarray:
    """The backbone's pooled [CLS] (N, H) for every sample of `dataset`, in order."""
    return frozen_outputs(backbone, dataset, lambda batch, out: out.pooler_output, batch_size)


def fit_probe(task: str, train_x: np.ndarray, train_y: np.ndarray, seed: int = 0):
    """A standardised logistic regression: one-vs-rest for multi-label, multinomial otherwise."""
    regression = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    classifier = OneVsRestClassifier(regression) if task == "multilabel" else regression
    with warnings.catch_warnings():  # an absent label is named once by linear_probe, not once per fit
        warnings.filterwarnings("ignore", message=ABSENT_LABEL_WARNING, category=UserWarning)
        return make_pipeline(StandardScaler(), classifier).fit(train_x, train_y)


def absent_labels(task: str, labels: np.ndarray, label_names) -> list[str]:
    """The names of the labels that never occur in `labels` ((N, C) multi-hot, or (N,) class ids)."""
    labels = np.asarray(labels)
    if task == "multilabel":
        present = labels.sum(axis=0) > 0
    else:
        present = np.bincount(labels.astype(int), minlength=len(label_names)) > 0
    return [name for name, seen in zip(label_names, present, strict=False) if not seen]


def probe_scores(model, task: str, num_labels: int, test_x: np.ndarray) -> np.ndarray:
    """Per-class probabilities (N, num_labels) in the layout `compute_metrics` takes (a class that never occurs
    in the train split gets probability 0)."""
    probabilities = model.predict_proba(test_x)
    if task == "multilabel":
        return probabilities
    scores = np.zeros((len(test_x), num_labels))
    scores[:, model[-1].classes_.astype(int)] = probabilities
    return scores


def missing_case_accuracy(by_input: dict[str, dict[str, np.ndarray]], train_split: str, test_split: str) -> float:
    """How missing-aware the frozen features already are: test accuracy of a logistic regression telling the
    complete, text-missing and image-missing inputs apart from the pooled [CLS] (chance: 1/3). A backbone that
    never saw a missing modality in pretraining can still separate them; prompts add most where it barely does."""
    names = list(by_input)
    train_x = np.concatenate([by_input[n][train_split] for n in names])
    train_y = np.repeat(np.arange(len(names)), [len(by_input[n][train_split]) for n in names])
    test_x = np.concatenate([by_input[n][test_split] for n in names])
    test_y = np.repeat(np.arange(len(names)), [len(by_input[n][test_split]) for n in names])
    model = fit_probe("multiclass", train_x, train_y)
    return float((model.predict(test_x) == test_y).mean())


def linear_probe(backbone, prepared, tokenizer, image_config, max_text_len: int, batch_size: int = 64) -> dict:
    """{input: {metric: value}} for the complete, text-missing and image-missing inputs, plus the split sizes,
    `absent_labels`: {"train": names, "test": names} of the labels that never occur in each split, and
    `missing_case_accuracy` (`missing_case_accuracy`)."""
    from mmp_core.data import MultimodalDataset
    from mmp_core.evaluation.metrics import compute_metrics

    spec = prepared.spec
    results: dict = {"dataset": spec.name, "metric": spec.primary_metric}
    by_input: dict[str, dict[str, np.ndarray]] = {}
    for name, code in PROBE_INPUTS.items():
        features, labels = {}, {}
        for split in (spec.train_split, spec.test_split):
            dataset = MultimodalDataset(
                prepared,
                split,
                tokenizer,
                image_config=image_config,
                max_text_len=max_text_len,
                missing=np.full(prepared.rows(split), code, dtype=np.int8),
            )
            features[split], labels[split] = pooled_features(backbone, dataset, batch_size), dataset.labels
        by_input[name] = features
        results.setdefault(
            "absent_labels",
            {
                role: absent_labels(spec.task, labels[split], spec.label_names)
                for role, split in (("train", spec.train_split), ("test", spec.test_split))
            },
        )
        model = fit_probe(spec.task, features[spec.train_split], labels[spec.train_split])
        scores = probe_scores(model, spec.task, spec.num_labels, features[spec.test_split])
        results[name] = compute_metrics(spec.task, scores, labels[spec.test_split])
    results["missing_case_accuracy"] = missing_case_accuracy(by_input, spec.train_split, spec.test_split)
    results["train_samples"] = prepared.rows(spec.train_split)
    results["test_samples"] = prepared.rows(spec.test_split)
    return results
