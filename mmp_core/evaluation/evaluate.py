"""Evaluation across missing-modality scenarios.

The grid (every rate x every missing type, plus the training setting) is assembled, not re-run: each test
sample is run once per *variant* (complete, text missing, image missing), and a scenario's predictions are
picked from those cached outputs by its per-sample missing table. The cost is three passes over the test
split whatever the grid's size, and a cell's result is exactly what running that scenario directly gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmp_core.evaluation.metrics import PRIMARY_METRIC, compute_metrics, prior_baseline, sanity_check
from mmp_core.evaluation.results import write_results
from mmp_core.fileio import atomic_write
from mmp_core.model.features import FeatureDataset, feature_collate, frozen_features_off, variant_features
from mmp_core.model.inference import predict
from mmp_core.model.precision import resolve_precision, torch_dtype
from mmp_core.model.prompts import COMPLETE, IMAGE_MISSING, NUM_MISSING_TYPES, TEXT_MISSING

VARIANTS = (COMPLETE, TEXT_MISSING, IMAGE_MISSING)


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
    from mmp_core.model.loading import (
        backbone_for,
        data_checksum,
        missing_seed,
        open_prepared,
        split_dataset,
        tokenizer_for,
    )
    from mmp_core.model.prompts import MissingAwarePromptModel, read_adapter_config
    from mmp_core.scenarios import MissingScenario

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
    # The precision the adapter was trained in (recorded), else what training would pick.
    recorded = ((read_adapter_config(adapter_dir).get("training") or {}).get("inputs") or {}).get("precision")
    precision = recorded or resolve_precision(train_params.precision, hidden_size=backbone.config.hidden_size)
    dtype = torch_dtype(precision)
    model = model.to(dtype)
    test_set = split_dataset(prepared, split, tokenizer, train_params, None)
    make_dataset, data_collate = test_set.with_missing, collate
    if frozen_features_off(model, train_params.frozen_features) is None:
        # The baseline's backbone output does not depend on the adapter: computed once, shared by every seed.
        features = variant_features(model, test_set, collate, batch_size=params.batch_size, dtype=dtype)
        make_dataset, data_collate = (
            (lambda table: FeatureDataset(features, test_set.with_missing(table))),
            feature_collate,
        )
    outputs = run_variants(
        model,
        make_dataset,
        data_collate,
        prepared.rows(split),
        batch_size=params.batch_size,
        seed=params.seed,
        dtype=dtype,
    )
    reference = params.test_missing.source == "reference"

    def table_for(missing_type: str, rate: float) -> np.ndarray:
        # The headline cell (and its grid cell) from the imported reference table when asked for.
        from_reference = reference and (missing_type, float(rate)) == (headline[0], float(headline[1]))
        return prepared.missing_table(
            split, MissingScenario(missing_type, rate), missing_seed(prepared, train_params), reference=from_reference
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
    document["data_checksum"] = data_checksum(prepared)
    document["precision"] = precision
    headline_table = table_for(*headline)
    document["sanity"] = sanity_check(
        prepared.spec.task,
        outputs.assemble(headline_table),
        outputs.labels,
        prior_baseline(prepared.spec.task, prepared.open_split(prepared.spec.train_split).labels(), outputs.labels),
    )
    write_results(document, out_dir)
    save_variant_outputs(outputs, Path(out_dir) / SCORES_NAME)
    return document


SCORES_NAME = "scores.npz"


def save_variant_outputs(outputs: VariantOutputs, path: Path) -> None:
    """Every test sample's scores under each variant, with the labels: what a paired bootstrap over test samples
    (mmp_core.evaluation.paired.bootstrap_interval) needs to compare two methods cell by cell, without running them again."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:  # a file object: np.savez would add ".npz" to a temporary name
            np.savez(handle, scores=outputs.scores.astype(np.float32), labels=outputs.labels)

    atomic_write(path, write)


def load_variant_outputs(path: str | Path) -> VariantOutputs:
    """What `save_variant_outputs` wrote."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return VariantOutputs(data["scores"], data["labels"])
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no per-sample test scores; run `mmp evaluate` for this adapter") from None
    except (KeyError, ValueError, OSError) as error:
        raise ValueError(f"{path}: not a per-sample scores file ({error})") from None
