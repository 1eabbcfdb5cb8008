"""Evaluation across missing-modality scenarios.

The grid (every rate x every missing type, plus the training setting) is assembled, not re-run: each test
sample is run once per *variant* (complete, text missing, image missing), and a scenario's predictions are
picked from those cached outputs by its per-sample missing table. The cost is three passes over the test
split whatever the grid's size, and a cell's result is exactly what running that scenario directly gives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from mmp_core.fileio import atomic_write_json, atomic_write_text
from mmp_core.progress import Progress
from mmp_core.prompts import COMPLETE, IMAGE_MISSING, NUM_MISSING_TYPES, TEXT_MISSING

VARIANTS = (COMPLETE, TEXT_MISSING, IMAGE_MISSING)
PRIMARY_METRIC = {"multilabel": "f1_macro", "multiclass": "accuracy", "binary": "auroc"}
# A model whose most common answer covers this share of the samples is flagged as degenerate.
DEGENERATE_SHARE = 0.98


# ---------------------------------------------------------------------------------------------- metrics
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


def sanity_check(task: str, scores: np.ndarray, labels: np.ndarray, prior: float) -> dict:
    """Does the model learn at all? Flags a model that gives (almost) every sample the same answer, and one
    whose primary metric does not beat the label-prior baseline.

    Returns {degenerate, most_common_answer_share, distinct_answers, beats_prior, prior_baseline, score,
    warnings: [one line each]}.
    """
    answers = predictions(task, scores)
    _, counts = np.unique(answers, axis=0, return_counts=True)
    share = float(counts.max() / len(answers))
    metric = PRIMARY_METRIC[task]
    score = compute_metrics(task, scores, labels)[metric]
    warnings = []
    degenerate = share >= DEGENERATE_SHARE
    if degenerate:
        warnings.append(
            f"degenerate model: {share:.0%} of the samples get the same answer ({len(counts)} distinct answers)"
        )
    beats = bool(score > prior)
    if not beats:
        warnings.append(f"{metric} {score:.4f} does not beat the label-prior baseline {prior:.4f}")
    return {
        "degenerate": degenerate,
        "most_common_answer_share": round(share, 4),
        "distinct_answers": len(counts),
        "beats_prior": beats,
        "prior_baseline": round(prior, 4),
        "score": round(score, 4),
        "warnings": warnings,
    }


# ---------------------------------------------------------------------------------------------- inference
def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    collate: Callable,
    *,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    progress: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-class probabilities (N, C) and labels for every sample of `dataset`, in dataset order.

    Samples carry an `index` (their position in `dataset`); labels are None when they carry none (new inputs
    in `mmp predict`, which runs this same function so that its scores are evaluation's).
    Under torch.distributed each rank runs a disjoint shard (no padding samples, unlike DistributedSampler)
    and the shards are gathered, so every rank returns the full, exactly ordered result. ViLT draws image
    patch order from the global RNG: inference seeds a forked RNG, leaving the caller's stream untouched.
    `progress` names the loop in progress reports (None: no reports).
    """
    rank, world_size = _dist_info()
    shard = list(range(rank, len(dataset), world_size))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, shard),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )
    core = getattr(model, "module", model)  # a DeepSpeed engine wraps the model
    was_training = core.training
    core.eval()
    device = next(core.parameters()).device
    indices, scores, labels = [], [], []
    reporter = Progress(len(loader), progress or "predict", unit="batch", enabled=progress is not None and rank == 0)
    with torch.random.fork_rng(devices=[]), reporter:
        torch.manual_seed(seed)
        for batch in loader:
            inputs = {
                "input_ids": batch["input_ids"].to(device),
                "attention_mask": batch["attention_mask"].to(device),
                "pixel_values": batch["pixel_values"].to(device, dtype),
                "pixel_mask": batch["pixel_mask"].to(device),
                "missing_type": batch["missing_type"].to(device),
            }
            scores.append(core.scores(core(**inputs)).cpu().numpy())
            if "labels" in batch:
                labels.append(batch["labels"].numpy())
            indices.append(batch["index"].numpy())
            reporter.update()
    core.train(was_training)
    result = (np.concatenate(indices), np.concatenate(scores), np.concatenate(labels) if labels else None)
    if world_size > 1:
        gathered: list = [None] * world_size
        torch.distributed.all_gather_object(gathered, result)
        result = tuple(
            None if gathered[0][i] is None else np.concatenate([part[i] for part in gathered]) for i in range(3)
        )
    order = np.argsort(result[0], kind="stable")
    if not np.array_equal(result[0][order], np.arange(len(dataset))):
        raise RuntimeError("prediction indices do not cover the dataset exactly once")
    return result[1][order], None if result[2] is None else result[2][order]


@dataclass(frozen=True)
class VariantOutputs:
    """Cached per-sample outputs: `scores[v]` (N, C) with every sample fed as variant v (0/1/2)."""

    scores: np.ndarray  # (3, N, C)
    labels: np.ndarray  # (N, C) or (N,)

    def assemble(self, table: np.ndarray) -> np.ndarray:
        """Scores (N, C) for a scenario whose per-sample missing types are `table` (N,) of 0/1/2."""
        table = np.asarray(table)
        if table.shape != (self.scores.shape[1],):
            raise ValueError(f"missing table has shape {table.shape}, expected ({self.scores.shape[1]},)")
        if table.min(initial=0) < 0 or table.max(initial=0) >= NUM_MISSING_TYPES:
            raise ValueError("missing table values must be 0, 1 or 2")
        return self.scores[table.astype(np.int64), np.arange(len(table))]


def run_variants(
    model: torch.nn.Module,
    make_dataset: Callable[[np.ndarray], torch.utils.data.Dataset],
    collate: Callable,
    num_samples: int,
    **predict_kwargs,
) -> VariantOutputs:
    """Run the test split once per variant; `make_dataset(table)` builds the split under a missing table."""
    per_variant, labels = [], None
    for variant in VARIANTS:
        table = np.full(num_samples, variant, dtype=np.int8)
        name = {COMPLETE: "complete", TEXT_MISSING: "text missing", IMAGE_MISSING: "image missing"}[variant]
        scores, labels = predict(model, make_dataset(table), collate, progress=f"test ({name})", **predict_kwargs)
        per_variant.append(scores)
    return VariantOutputs(np.stack(per_variant), labels)


def evaluate_grid(
    outputs: VariantOutputs,
    task: str,
    tables: Sequence[tuple[str, float, np.ndarray]],
) -> list[dict]:
    """One row per scenario: {missing_type, missing_rate, <metrics>}, from the cached variant outputs."""
    rows = []
    for missing_type, rate, table in tables:
        metrics = compute_metrics(task, outputs.assemble(table), outputs.labels)
        rows.append({"missing_type": missing_type, "missing_rate": float(rate), **metrics})
    return rows


def results_document(
    outputs: VariantOutputs,
    task: str,
    table_for: Callable[[str, float], np.ndarray],
    *,
    types: Sequence[str],
    rates: Sequence[float],
    headline: tuple[str, float],
    dataset: str,
    method: str,
    train_setting: dict,
) -> dict:
    """The `metrics.json` document of one method: the whole grid plus the headline (test setting) cell.

    `table_for(type, rate)` gives the test split's per-sample missing table of a scenario.
    """
    cells = [(t, r) for t in types for r in rates]
    if headline not in cells:
        cells.append(headline)
    rows = evaluate_grid(outputs, task, [(t, r, table_for(t, r)) for t, r in cells])
    head = next(row for row in rows if (row["missing_type"], row["missing_rate"]) == (headline[0], float(headline[1])))
    return {
        "dataset": dataset,
        "method": method,
        "task": task,
        "primary_metric": PRIMARY_METRIC[task],
        "train_setting": train_setting,
        "headline": head,
        "grid": rows,
        "test_samples": int(outputs.scores.shape[1]),
    }


def write_results(document: dict, out_dir: str | Path) -> None:
    """`metrics.json` (DVC metrics), `grid.tsv` (one row per cell) and `curves/<type>.tsv` (missing_rate,
    score: the primary metric; what dvc.yaml's robustness plots read), written atomically."""
    out_dir = Path(out_dir)
    metric_names = [k for k in document["grid"][0] if k not in ("missing_type", "missing_rate")]
    lines = ["\t".join(["method", "missing_type", "missing_rate", *metric_names])]
    for row in document["grid"]:
        values = [f"{row[name]:.6f}" for name in metric_names]
        lines.append("\t".join([document["method"], row["missing_type"], f"{row['missing_rate']:.2f}", *values]))
    atomic_write_text(out_dir / "grid.tsv", "\n".join(lines) + "\n")
    metric = document["primary_metric"]
    for missing_type in dict.fromkeys(row["missing_type"] for row in document["grid"]):
        rows = sorted((r["missing_rate"], r[metric]) for r in document["grid"] if r["missing_type"] == missing_type)
        text = "missing_rate\tscore\n" + "".join(f"{rate:.2f}\t{value:.6f}\n" for rate, value in rows)
        atomic_write_text(out_dir / "curves" / f"{missing_type}.tsv", text)
    atomic_write_json(out_dir / "metrics.json", document)


def evaluate_adapter(
    prepared_dir: str | Path,
    adapter_dir: str | Path,
    method: str,
    train_params,
    params,
    out_dir: str | Path,
) -> dict:
    """Evaluate a trained adapter on the test split's scenario grid; writes metrics.json, grid.tsv, curves/.

    Args:
        train_params: the `train` section (backbone, text length, image sizes, train missing setting).
        params: the `evaluate` section (rates, types, headline test setting, batch size, seed).
    """
    from mmp_core.data import collate
    from mmp_core.loading import backbone_for, data_version, open_prepared, split_dataset, tokenizer_for
    from mmp_core.missing import MissingScenario
    from mmp_core.prompts import MissingAwarePromptModel

    prepared = open_prepared(prepared_dir)
    split = prepared.spec.test_split
    backbone = backbone_for(train_params)
    model = MissingAwarePromptModel.from_pretrained(backbone, adapter_dir)
    if model.config.task != prepared.spec.task or model.config.num_labels != prepared.spec.num_labels:
        raise ValueError(
            f"{adapter_dir}: adapter is for a {model.config.task} task with {model.config.num_labels} labels, "
            f"{prepared.root} is {prepared.spec.task} with {prepared.spec.num_labels}"
        )
    tokenizer = tokenizer_for(train_params.backbone, prepared)
    headline = (params.test_missing.type, params.test_missing.rate)
    outputs = run_variants(
        model,
        lambda table: split_dataset(prepared, split, tokenizer, train_params, table),
        collate,
        prepared.rows(split),
        batch_size=params.batch_size,
        seed=params.seed,
    )
    reference = params.test_missing.source == "reference"

    def table_for(missing_type: str, rate: float) -> np.ndarray:
        # The headline cell (and its grid cell) from the imported reference table when asked for.
        from_reference = reference and (missing_type, float(rate)) == (headline[0], float(headline[1]))
        return prepared.missing_table(
            split, MissingScenario(missing_type, rate), train_params.missing_seed, reference=from_reference
        )

    document = results_document(
        outputs,
        prepared.spec.task,
        table_for,
        types=params.types,
        rates=params.rates,
        headline=headline,
        dataset=prepared.spec.name,
        method=method,
        train_setting={
            "missing_type": train_params.train_missing.type,
            "missing_rate": train_params.train_missing.rate,
        },
    )
    document["data_version"] = data_version(prepared)
    headline_table = table_for(*headline)
    document["sanity"] = sanity_check(
        prepared.spec.task,
        outputs.assemble(headline_table),
        outputs.labels,
        prior_baseline(prepared.spec.task, prepared.open_split(prepared.spec.train_split).labels(), outputs.labels),
    )
    write_results(document, out_dir)
    return document
