"""The training loop: one method's prompts (or the baseline's pooler and head) trained with DeepSpeed over a
frozen ViLT, validated, and its best adapter delivered.

One process or several (gloo on the CPU, NCCL on GPUs): launch `mmp train` directly, or under `torchrun` /
the `deepspeed` launcher with `-m mmp_core.cli train ...`. The loop follows docs/method.md §6: AdamW on the trainable
parameters only (no decay on biases and norms, prompts decayed), linear warmup then linear decay, an effective
batch reached by gradient accumulation, validation several times per epoch under the val missing setting,
and the best adapter by the dataset's metric.

Interrupted training resumes from its latest checkpoint (mmp_core.training.checkpoints); the process group, DeepSpeed's
config and the optimizer's parameter groups come from mmp_core.training.deepspeed_setup.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import get_linear_schedule_with_warmup

from mmp_core.config import METHODS, TrainParams
from mmp_core.evaluation.metrics import PRIMARY_METRIC, compute_metrics, prior_baseline, sanity_check
from mmp_core.fileio import atomic_write_json, recover_dir, replace_dir
from mmp_core.model.features import FeatureDataset, feature_collate, frozen_features_off
from mmp_core.model.inference import model_inputs, predict
from mmp_core.model.loading import backbone_for, data_checksum, open_prepared, split_dataset, tokenizer_for
from mmp_core.model.precision import resolve_precision
from mmp_core.model.prompts import MissingAwarePromptConfig, MissingAwarePromptModel
from mmp_core.progress import Progress
from mmp_core.training.budget import epoch_order, finished, step_budget, still_improving, validation_interval
from mmp_core.training.checkpoints import (
    ADAPTER_DIR,
    BEST_ADAPTER,
    claim_checkpoint_dir,
    ensure_adapter,
    resume,
    save_checkpoint,
)
from mmp_core.training.deepspeed_setup import deepspeed_config, init_distributed, master_weights, parameter_groups

SUMMARY_NAME = "train_summary.json"
logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- inputs
@dataclass
class TrainingData:
    """What the loop needs from a prepared dataset (built by mmp_core.data from prepared files)."""

    task: str
    num_labels: int
    train_dataset: torch.utils.data.Dataset  # the train split under the train missing setting
    val_dataset: torch.utils.data.Dataset  # the val split under the val missing setting
    collate: Callable
    data_checksum: str  # the prepared data's content (loading.data_checksum)
    vocab_size: int  # of the tokenizer: must fit the backbone's embedding table
    dataset: str = ""  # the dataset's name (recorded in the adapter)
    label_names: tuple[str, ...] = ()  # in label-index order (recorded in the adapter: predictions name labels)
    unk_rate: float | None = None  # share of the train split's text tokens that are [UNK] under the tokenizer


def training_data(prepared_dir: str | Path, params: TrainParams) -> TrainingData:
    """The train and val splits of a prepared dataset under the params' missing settings. Logs the [UNK] rate
    of the train split's text under the backbone's vocabulary (main rank only), warning when it is high."""
    import os

    from mmp_core.data.vocab import report_unk_rate

    prepared = open_prepared(prepared_dir)
    spec = prepared.spec
    tokenizer = tokenizer_for(params.backbone, prepared)
    own = params.backbone.startswith("small:")
    vocabulary = "the prepared vocab.txt" if own else f"the vocab.txt of backbone {params.backbone!r}"
    rate = report_unk_rate(
        tokenizer,
        prepared.open_split(spec.train_split).texts(),
        logger if os.environ.get("RANK", "0") == "0" else None,  # one report per run, from the main rank
        vocabulary=f"{vocabulary} ({len(tokenizer)} tokens)",
        backbone=params.backbone,
        prepared=str(prepared_dir),
    )
    return TrainingData(
        task=spec.task,
        num_labels=spec.num_labels,
        train_dataset=split_dataset(prepared, spec.train_split, tokenizer, params, params.train_missing),
        val_dataset=split_dataset(prepared, spec.val_split, tokenizer, params, params.val_missing),
        collate=_collate(),
        data_checksum=data_checksum(prepared),
        vocab_size=len(tokenizer),
        dataset=spec.name,
        label_names=spec.label_names,
        unk_rate=round(rate, 4),
    )


def _collate():
    from mmp_core.data import collate

    return collate


def build_model(params: TrainParams, method: str, task: str, num_labels: int) -> MissingAwarePromptModel:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    backbone = backbone_for(params)
    shared = method == "shared"  # one prompt set for every missing case: what missing-awareness adds, isolated
    config = MissingAwarePromptConfig(
        task=task,
        num_labels=num_labels,
        prompt_type=params.shared_prompt_type if shared else METHODS[method],
        missing_aware=not shared,
        train_backbone=method == "finetune",
        prompt_length=params.prompt_length,
        prompt_layers=params.prompt_layers,
    )
    return MissingAwarePromptModel(backbone, config)


def training_fingerprint(params: TrainParams, method: str, data_checksum: str) -> str:
    """Identifies a training run's inputs: a checkpoint is only resumed by a run with the same one."""
    payload = json.dumps({"params": params.model_dump(mode="json"), "method": method, "data": data_checksum})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def adapter_hash(model: MissingAwarePromptModel) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.trainable_state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- training
def train(
    params: TrainParams,
    method: str,
    data: TrainingData,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
) -> dict:
    """Train one method; returns the summary (also written to `out_dir/train_summary.json` by rank 0).

    Args:
        data: the train and val splits under their missing settings, with task, collate and data checksum.
        out_dir: receives `adapter/` (the best adapter), `train_summary.json` and `dvclive/` (rank 0 only).
        checkpoint_dir: scratch space for resumable checkpoints; removed after a successful run.
    """
    import deepspeed

    rank, world_size = init_distributed()
    out_dir, checkpoint_dir = Path(out_dir), Path(checkpoint_dir)
    started = time.perf_counter()
    torch.manual_seed(params.seed)
    model = build_model(params, method, data.task, data.num_labels)
    if data.vocab_size > model.backbone.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {data.vocab_size} tokens but backbone {params.backbone!r} embeds only "
            f"{model.backbone.config.vocab_size}: use the backbone's own vocab.txt"
        )
    # `auto` decided once, for this machine and backbone: everything after (DeepSpeed, the adapter's record,
    # the checkpoints' fingerprint) sees the precision actually used.
    hidden_size = model.backbone.config.hidden_size
    params = params.model_copy(update={"precision": resolve_precision(params.precision, hidden_size=hidden_size)})
    metric_name = PRIMARY_METRIC[data.task]
    fingerprint = training_fingerprint(params, method, data.data_checksum)
    finetune = model.config.train_backbone
    ds_config = deepspeed_config(
        params.finetune_deepspeed_config if finetune else params.deepspeed_config, params, world_size
    )
    accumulation = ds_config["gradient_accumulation_steps"]

    train_set = data.train_dataset
    per_rank = len(train_set) // world_size
    micro_per_epoch = (per_rank // params.batch_size) // accumulation * accumulation
    steps_per_epoch = micro_per_epoch // accumulation
    if steps_per_epoch < 1:
        raise ValueError(
            f"the train split ({len(train_set)} samples) is smaller than one effective batch "
            f"({params.effective_batch_size}); lower effective_batch_size"
        )
    total_steps = step_budget(steps_per_epoch, params)
    epochs = math.ceil(total_steps / steps_per_epoch)
    val_interval = validation_interval(steps_per_epoch, total_steps, params.val_per_epoch)

    optimizer = torch.optim.AdamW(
        parameter_groups(model, params.weight_decay, params.head_lr, params.backbone_lr if finetune else None),
        lr=params.lr,
        betas=params.betas,
        eps=params.eps,
    )
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=lambda opt: get_linear_schedule_with_warmup(
            opt, round(params.warmup_ratio * total_steps), total_steps
        ),
        config=ds_config,
    )
    dtype = torch.bfloat16 if engine.bfloat16_enabled() else torch.float32
    device = engine.device
    if model.prompts is None and not finetune:
        data = _on_frozen_features(model, data, params, dtype, method, rank)
        train_set = data.train_dataset

    claim_checkpoint_dir(checkpoint_dir, fingerprint, rank)
    state = resume(engine, checkpoint_dir, fingerprint, rank)
    recover_dir(out_dir / ADAPTER_DIR)
    live = _open_live(out_dir, resume=state.global_step > 0) if rank == 0 else None
    if rank == 0:
        logger.info(
            "[%s] %d train samples, %d process(es), micro batch %d, accumulation %d, %d steps/epoch: %d steps "
            "(%d epochs), validation every %d, early stop after %s; lr %s, %g (pooler and head), %s, ZeRO stage %d; %s",
            method, len(train_set), world_size, params.batch_size, accumulation, steps_per_epoch, total_steps,
            epochs, val_interval, f"{params.patience} without progress" if params.patience else "never",
            f"{params.backbone_lr:g} (backbone)" if finetune else f"{params.lr:g} (prompts)",
            params.head_lr or params.lr, params.precision, ds_config.get("zero_optimization", {}).get("stage", 0),
            f"resuming at step {state.global_step}" if state.global_step else "starting fresh",
        )  # fmt: skip
        model.print_trainable_parameters()
    # The main rank reports: a bar on a terminal, periodic log lines (step, loss, rate, ETA) elsewhere.
    progress = Progress(total_steps, f"train {method}", initial=state.global_step, enabled=rank == 0)
    loader_generator = torch.Generator().manual_seed(params.seed)  # keeps DataLoader off the global RNG
    samples_seen = 0
    timing = {"setup_seconds": time.perf_counter() - started, "validation_seconds": 0.0, "checkpoint_seconds": 0.0}
    loop_started = time.perf_counter()
    for epoch in range(state.epoch, epochs):
        if finished(state, total_steps, params.patience):
            break
        order = epoch_order(len(train_set), params.seed, epoch)[rank::world_size][: micro_per_epoch * params.batch_size]
        remaining = order[state.micro_step_in_epoch * params.batch_size :]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(train_set, remaining.tolist()),
            batch_size=params.batch_size,
            shuffle=False,
            drop_last=True,
            num_workers=params.num_workers,
            collate_fn=data.collate,
            generator=loader_generator,
        )
        engine.train()
        for batch in loader:
            logits = engine(**model_inputs(batch, device, dtype))
            loss = model.loss(logits, batch["labels"].to(device))
            engine.backward(loss)
            engine.step()
            samples_seen += len(batch["index"]) * world_size
            state.micro_step_in_epoch += 1
            if state.micro_step_in_epoch % accumulation:
                continue
            state.global_step += 1
            progress.update(1, loss=loss.item(), lr=scheduler.get_last_lr()[0])
            step_in_epoch = state.micro_step_in_epoch // accumulation
            if state.global_step % val_interval == 0 or state.global_step == total_steps:
                tick = time.perf_counter()
                _validate(
                    engine, model, data, params, state, metric_name, method, fingerprint, out_dir, checkpoint_dir, live
                )
                if step_in_epoch == steps_per_epoch:  # the epoch is done: the checkpoint points at the next
                    state.epoch, state.micro_step_in_epoch = epoch + 1, 0
                tock = time.perf_counter()
                save_checkpoint(engine, checkpoint_dir, state, fingerprint, params.keep_checkpoints, rank)
                timing["validation_seconds"] += tock - tick
                timing["checkpoint_seconds"] += time.perf_counter() - tock
                if finished(state, total_steps, params.patience):
                    break
        else:
            state.epoch, state.micro_step_in_epoch = epoch + 1, 0
    progress.close()
    # The step loop alone (data, forward, backward, optimizer), without validation and checkpoints: what
    # bench/ compares with the bare model step.
    timing["loop_seconds"] = (
        time.perf_counter() - loop_started - timing["validation_seconds"] - timing["checkpoint_seconds"]
    )
    timing["loop_samples_per_second"] = samples_seen / max(timing["loop_seconds"], 1e-9)

    if rank == 0:
        ensure_adapter(state, checkpoint_dir, out_dir)
    summary = _finish(model, state, params, method, metric_name, fingerprint, data, world_size, rank, out_dir)
    summary.update(
        budget_steps=total_steps,
        stopped_early=state.global_step < total_steps,
        still_improving=still_improving(state, total_steps, params.patience),
        epochs=math.ceil(state.global_step / steps_per_epoch),
        unk_rate=data.unk_rate,
    )
    summary["seconds"] = round(time.perf_counter() - started, 2)
    summary["train_samples_per_second_this_run"] = round(samples_seen / max(summary["seconds"], 1e-9), 2)
    summary["timing"] = {name: round(value, 2) for name, value in timing.items()}
    if rank == 0:
        atomic_write_json(out_dir / SUMMARY_NAME, summary)
        if live is not None:
            live.end()
    torch.distributed.barrier()
    if rank == 0:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the adapter is the product; scratch goes
    return summary


def _on_frozen_features(model, data: TrainingData, params: TrainParams, dtype, method: str, rank: int) -> TrainingData:
    """The baseline's splits as cached frozen [CLS] features (mmp_core.model.features), when the backbone allows it."""
    reason = frozen_features_off(model, params.frozen_features)
    if reason is not None:
        if rank == 0:
            logger.info("[%s] frozen features off: %s; the backbone runs at every step", method, reason)
        return data
    started = time.perf_counter()
    kwargs = {"batch_size": max(64, params.batch_size), "dtype": dtype}
    train_set = FeatureDataset.of(model, data.train_dataset, data.collate, **kwargs)
    val_set = FeatureDataset.of(model, data.val_dataset, data.collate, **kwargs)
    if rank == 0:
        logger.info(
            "[%s] frozen [CLS] features of %d + %d samples ready in %.1f s (cached); the backbone does not run in the loop",
            method, len(train_set), len(val_set), time.perf_counter() - started,
        )  # fmt: skip
    return replace(data, train_dataset=train_set, val_dataset=val_set, collate=feature_collate)


def _validate(
    engine, model, data, params, state, metric_name, method, fingerprint, out_dir, checkpoint_dir, live
) -> None:
    scores, labels = predict(
        engine,
        data.val_dataset,
        data.collate,
        batch_size=params.batch_size,
        seed=params.seed,
        dtype=torch.bfloat16 if engine.bfloat16_enabled() else torch.float32,
    )
    metrics = compute_metrics(data.task, scores, labels)
    value = metrics[metric_name]
    improved = value > state.best_metric
    state.history.append({"step": state.global_step, "epoch": state.epoch, **metrics})
    if improved:
        state.best_metric, state.best_step = value, state.global_step
        # Does it learn at all? One answer for every sample, or no better than knowing only the label prior.
        prior = prior_baseline(data.task, data.train_dataset.labels, labels)
        state.best_sanity = sanity_check(data.task, scores, labels, prior)
    weights = master_weights(model) if improved else None  # a collective under ZeRO-2: every rank takes part
    if torch.distributed.get_rank() == 0:
        if improved:
            # The best adapter is written into the checkpoint folder first: a run that is killed and resumed
            # (even with another --out, or after DVC removed the stage's outputs) still has it to deliver.
            staged = checkpoint_dir / f".{BEST_ADAPTER}.staged"
            shutil.rmtree(staged, ignore_errors=True)
            model.save_pretrained(
                staged,
                state_dict=weights,
                extra={
                    "method": method,
                    "step": state.global_step,
                    f"val_{metric_name}": value,
                    "training_fingerprint": fingerprint,
                    "data_checksum": data.data_checksum,
                    "val_missing": params.val_missing.model_dump(),
                    "train_missing": params.train_missing.model_dump(),
                    # What `mmp predict` needs to feed new inputs as training did, and to name the labels.
                    "dataset": data.dataset,
                    "label_names": list(data.label_names),
                    "inputs": input_settings(params),
                },
            )
            replace_dir(staged, checkpoint_dir / BEST_ADAPTER)  # delivered to out_dir once training ends
        if live is not None:
            for name, metric_value in metrics.items():
                live.log_metric(f"val/{name}", metric_value)
            live.log_metric("train/lr", engine.lr_scheduler.get_last_lr()[0])
            live.step = state.global_step
            live.next_step()


def input_settings(params: TrainParams) -> dict:
    """The settings that turn a text and an image into this model's inputs (stored with the adapter)."""
    return {
        "max_text_len": params.max_text_len,
        "text_positions": params.text_positions,
        "image": params.image.model_dump(),
        "precision": resolve_precision(params.precision),
    }


def _open_live(out_dir: Path, resume: bool):
    from dvclive import Live

    return Live(str(out_dir / "dvclive"), resume=resume, save_dvc_exp=False, dvcyaml=None)


def _finish(model, state, params, method, metric_name, fingerprint, data, world_size, rank, out_dir) -> dict:
    # Every rank holds the same trainable tensors after data-parallel training: check it, don't assume it.
    hashes: list = [None] * world_size
    torch.distributed.all_gather_object(hashes, adapter_hash(model))
    if len(set(hashes)) != 1:
        raise RuntimeError(f"ranks disagree on the trained parameters: {hashes}")
    return {
        "method": method,
        "metric": metric_name,
        f"best_val_{metric_name}": state.best_metric,
        "best_step": state.best_step,
        "steps": state.global_step,
        "world_size": world_size,
        "precision": params.precision,  # resolved once, at the start of train()
        "rank_parameter_hashes": hashes,
        "training_fingerprint": fingerprint,
        "data_checksum": data.data_checksum,
        "sanity": state.best_sanity,
        "history": state.history,
        "adapter": str(out_dir / ADAPTER_DIR),
    }
