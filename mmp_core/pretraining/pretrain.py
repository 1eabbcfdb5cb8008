"""Pretraining a small ViLT: the embedded backbone from captioned scenes, or one from your own image-text pairs.

Three objectives on each batch of pairs, all through the one single-stream transformer:
  * image-text matching (ITM) on the pooled [CLS]: half the pairs keep their text, the rest get a *hard negative*
    (the caption with one fact changed: a colour, a shape, the background, a topic that is not drawn) or another
    pair's text. Hard negatives make matching depend on content, which is what aligns the two modalities;
  * masked language modelling (MLM) on the matched pairs, with whole words that name what is drawn masked far
    more often (`concept_mlm_probability`), so that they must be read from the image;
  * image-text contrast (ITC): the pooled [CLS] of the text alone (the image fed as missing) and of the image
    alone (the text fed as missing) are pulled together for a pair and apart across the batch. The single-
    modality inputs are exactly what the prompt model sees when a modality is missing.

Pairs come from the generated scene corpus (`mmp_core.data.scenes`, hard negatives and concept words known), from
generic captioned pictures (`corpus: captions`, `mmp_core.data.captions`: ViLT's own recipe, ITM with hard
negatives and whole-word MLM at one rate on complete pairs only, no ITC whatever `itc_weight` says) or
from a prepared dataset's complete training pairs (`corpus: prepared`; in-batch negatives and plain MLM only,
its validation split's complete pairs held out). Pretraining starts from random weights (`pretrain.config`) or
continues from a pretrained backbone (`pretrain.init`, `mmp_core.pretraining.init`), and resumes from its latest
checkpoint after an interruption (`mmp_core.pretraining.checkpoints`). The result is a `save_pretrained` directory
with `vocab.txt` and `pretrain_summary.json` (held-out metrics, warnings) beside it: exactly what a downloaded
checkpoint looks like, loaded by the same code.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from mmp_core.config import PretrainParams
from mmp_core.fileio import atomic_write_json, replace_dir
from mmp_core.model.backbone import small_config
from mmp_core.pretraining.checkpoints import (
    PretrainState,
    claim_checkpoint_dir,
    pretrain_fingerprint,
    resume,
    save_checkpoint,
)
from mmp_core.pretraining.checks import chance_warning
from mmp_core.pretraining.data import (
    HARD_NEGATIVE,
    MATCHED,
    OTHER_TEXT,
    CaptionPairs,
    ScenePairs,
    collate_pairs,
    prepared_pairs,
)
from mmp_core.pretraining.model import HEADS_NAME, PretrainingModel, load_pretraining_model, save_heads
from mmp_core.progress import Progress

__all__ = ["HEADS_NAME", "PretrainingModel", "load_pretraining_model", "matching_metrics", "pretrain", "save_heads"]

logger = logging.getLogger(__name__)


def mask_tokens(
    batch: dict, tokenizer, params: PretrainParams, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-word masking (every word of the lexicon is one token): concept tokens with probability
    `concept_mlm_probability`, other words with `mlm_probability`; of the chosen, 80% [MASK], 10% a random
    token, 10% unchanged (BERT's rule). Returns (inputs, labels with -100 where not chosen)."""
    ids = batch["input_ids"]
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids)) | (batch["attention_mask"] == 0)
    probability = torch.where(batch["concept"], params.concept_mlm_probability, params.mlm_probability)
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special
    labels = ids.masked_fill(~chosen, -100)
    draw = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (draw < 0.8)] = tokenizer.mask_token_id
    random_tokens = torch.randint(len(tokenizer), ids.shape, generator=generator)
    replace_random = chosen & (draw >= 0.8) & (draw < 0.9)
    inputs[replace_random] = random_tokens[replace_random]
    return inputs, labels


def empty_text(tokenizer, batch_size: int, max_text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The missing-text input: [CLS] [SEP] + padding, for a whole batch."""
    encoded = tokenizer("", max_length=max_text_len, padding="max_length", truncation=True)
    ids = torch.tensor(encoded["input_ids"]).expand(batch_size, -1)
    return ids, torch.tensor(encoded["attention_mask"]).expand(batch_size, -1)


# ---------------------------------------------------------------------------------------------- held-out checks
@torch.no_grad()
def matching_metrics(
    model: PretrainingModel, pairs: ScenePairs, batch_size: int = 64, candidates: int | None = 100
) -> dict:
    """Held-out image-text matching: accuracy on matched vs hard-negative vs other-text pairs (half matched, a
    quarter each of the two negatives; pairs without hard negatives, a prepared dataset's: half matched, half
    another pair's text), accuracy on matched vs hard negative alone, and image->text retrieval recall@1 among
    `candidates` texts (the true one and the next candidates-1 pairs' texts; None: skipped)."""
    model.eval()
    loader = torch.utils.data.DataLoader(pairs, batch_size=batch_size, shuffle=False, collate_fn=collate_pairs)
    with_hard = getattr(pairs, "has_hard_negatives", True)
    matched, hard, other = [], [], []
    with torch.random.fork_rng():
        torch.manual_seed(0)  # ViLT draws its patch order from the global RNG
        for batch in loader:
            roll = torch.roll(torch.arange(len(batch["input_ids"])), 1)
            for scores, ids, mask in (
                (matched, batch["input_ids"], batch["attention_mask"]),
                (hard, batch["negative_ids"], batch["negative_mask"]),
                (other, batch["input_ids"][roll], batch["attention_mask"][roll]),
            ):
                if scores is not hard or with_hard:
                    scores.append(torch.log_softmax(model.itm_logits(batch, ids, mask), -1)[:, 1])
        matched, other = torch.cat(matched), torch.cat(other)
        half = len(matched) // 2  # the mix of training: first half matched, then hard and other negatives
        if with_hard:
            hard = torch.cat(hard)
            quarter = (len(matched) - half) // 2
            decisions = torch.cat([matched[:half] > np.log(0.5), hard[half : half + quarter] <= np.log(0.5)])
            decisions = torch.cat([decisions, other[half + quarter :] <= np.log(0.5)])
            hard_decisions = torch.cat([matched[:half] > np.log(0.5), hard[half:] <= np.log(0.5)])
        else:
            decisions = torch.cat([matched[:half] > np.log(0.5), other[half:] <= np.log(0.5)])
        metrics = {"itm_accuracy": round(decisions.float().mean().item(), 4)}
        if with_hard:
            metrics["itm_accuracy_hard_negatives"] = round(hard_decisions.float().mean().item(), 4)
        metrics["heldout_pairs"] = len(pairs)
        if candidates:
            candidates = min(candidates, len(pairs))
            metrics[f"retrieval_r1_at_{candidates}"] = _retrieval_recall_at_1(model, pairs, candidates, batch_size)
    model.train()
    return metrics


def _retrieval_recall_at_1(model: PretrainingModel, pairs: ScenePairs, candidates: int, batch_size: int) -> float:
    queries = min(len(pairs), 200)
    texts = [pairs[i] for i in range(len(pairs))]
    hits = 0
    for query in range(queries):
        image = pairs[query]
        options = [(query + k) % len(pairs) for k in range(candidates)]  # option 0 is the true text
        scores = []
        for start in range(0, candidates, batch_size):
            chunk = options[start : start + batch_size]
            batch = collate_pairs([{**texts[i], "pixel_values": image["pixel_values"]} for i in chunk])
            scores.append(model.itm_logits(batch, batch["input_ids"], batch["attention_mask"]).log_softmax(-1)[:, 1])
        scores = torch.cat(scores)
        hits += int(scores[0] > scores[1:].max())  # a tie is a miss: a constant model must score 0, not 1
    return round(hits / queries, 4)


# ---------------------------------------------------------------------------------------------- training
def autocast(precision: str):
    """bf16 autocast on the CPU (or GPU): matrix products in bf16, weights and their updates in fp32."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


def _corpus(params: PretrainParams, tokenizer, prepared_dir) -> tuple[torch.utils.data.Dataset, object, dict]:
    """(training pairs, held-out pairs or None, a description of both for the summary and the fingerprint)."""
    if params.corpus in ("scenes", "captions"):
        pairs = ScenePairs if params.corpus == "scenes" else CaptionPairs
        dataset = pairs(params, tokenizer, part=0, size=params.pairs)
        heldout = pairs(params, tokenizer, part=1, size=params.heldout)
        return dataset, heldout, {"kind": params.corpus, "train_pairs": len(dataset), "heldout_pairs": len(heldout)}
    if prepared_dir is None:
        raise ValueError("pretrain.corpus 'prepared' needs a prepared dataset (--prepared)")
    from mmp_core.data import load_prepared
    from mmp_core.model.loading import data_checksum

    prepared = load_prepared(prepared_dir)
    spec = prepared.spec
    dataset = prepared_pairs(prepared_dir, params, tokenizer, spec.train_split)
    heldout = prepared_pairs(prepared_dir, params, tokenizer, spec.val_split)  # never trained on
    corpus = {
        "kind": "prepared",
        "dataset": spec.name,
        "data_checksum": data_checksum(prepared),
        "train_split": spec.train_split,
        "train_pairs": len(dataset),
        "heldout_split": spec.val_split,
        "heldout_pairs": len(heldout),
    }
    return dataset, (heldout if len(heldout) else None), corpus


def _epoch_order(generator: torch.Generator, size: int) -> torch.Tensor:
    """The epoch's pair order, with the draws `DataLoader(shuffle=True, generator=generator)` makes (a worker
    seed, then the permutation; another permutation after the last batch, `_end_epoch`), so that runs made before
    resumable checkpoints are reproduced."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    return torch.randperm(size, generator=generator)


def _end_epoch(generator: torch.Generator, size: int) -> None:
    torch.randperm(size, generator=generator)


_SUMS = ("mlm_loss", "itm_loss", "itc_loss", "train_itm_accuracy")  # per-epoch means in the history


class _Batches(torch.utils.data.Sampler):
    """The batches still to run in this epoch (set before each pass): the DataLoader's batch_sampler."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def pretrain(
    params: PretrainParams,
    tokenizer,
    out_dir: str | Path,
    *,
    prepared_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
) -> dict:
    """Pretrain on the scene corpus (or `prepared_dir`'s pairs when `params.corpus == 'prepared'`) and write
    the backbone to `out_dir` atomically: weights, config, vocab.txt and pretrain_summary.json.

    With `params.init` the model continues from that backbone and `tokenizer` is ignored (the init backbone's
    vocabulary extended with the corpus's words is used). With `checkpoint_dir`, the run resumes from its latest
    checkpoint there (if the same inputs made it), saves one every `params.checkpoint_every` steps and at each
    epoch's end, and removes the folder once the backbone is written."""
    torch.manual_seed(params.seed)
    init = None
    if params.init and params.corpus == "captions":
        raise ValueError(
            "pretrain.init: continuing a backbone on corpus 'captions' is not supported; start from scratch"
        )
    if params.init:
        from mmp_core.pretraining.init import init_model

        model, tokenizer, init = init_model(params, prepared_dir)
        config = model.mlm.config
    dataset, heldout, corpus = _corpus(params, tokenizer, prepared_dir)
    if not params.init:
        config = small_config(
            params.config,
            vocab_size=len(tokenizer),
            image_size=params.image.shorter_side,
            patch_size=params.image.patch_size,
            max_position_embeddings=params.text_positions,
        )
        model = PretrainingModel(config)
    generator = torch.Generator().manual_seed(params.seed)
    batches = _Batches()
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate_pairs,
        generator=torch.Generator().manual_seed(params.seed),  # worker seeds only
        num_workers=params.num_workers,
        persistent_workers=params.num_workers > 0,
    )
    steps_per_epoch = len(dataset) // params.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"pretraining needs at least {params.batch_size} pairs, got {len(dataset)}")
    total_steps = params.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(params.warmup_ratio * total_steps), total_steps)
    hard_share = params.hard_negatives if dataset.has_hard_negatives else 0.0
    contrast = params.itc_weight > 0 and params.corpus != "captions"  # captions: complete pairs only, as ViLT
    empty_ids, empty_mask = empty_text(tokenizer, params.batch_size, 2)  # [CLS] [SEP]
    vocab = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    fingerprint = pretrain_fingerprint(params, corpus, vocab, init)
    state = None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        claim_checkpoint_dir(checkpoint_dir, fingerprint)
        state = resume(checkpoint_dir, fingerprint, model, optimizer, scheduler, generator)
    resumed_from = state.global_step if state else None
    state = state or PretrainState()

    def checkpoint() -> None:
        if checkpoint_dir is not None:
            state.seconds = round(time.perf_counter() - started, 1)
            save_checkpoint(checkpoint_dir, state, fingerprint, model, optimizer, scheduler, generator)

    started = time.perf_counter() - state.seconds
    model.train()
    with Progress(total_steps, "pretrain", initial=state.global_step) as progress:  # bar or log lines
        for epoch in range(state.epoch, params.epochs):
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            if state.order is None:
                state.order, state.step_in_epoch = _epoch_order(generator, len(dataset)), 0
                state.sums = dict.fromkeys(_SUMS, 0.0)
            order, size = state.order.tolist(), params.batch_size
            batches.batches = [order[i * size : (i + 1) * size] for i in range(state.step_in_epoch, steps_per_epoch)]
            for batch in loader:
                draw = torch.rand(params.batch_size, generator=generator)
                kinds = torch.where(
                    draw < 0.5,
                    MATCHED,
                    torch.where(draw < 0.5 + 0.5 * hard_share, HARD_NEGATIVE, OTHER_TEXT),
                )
                mlm_inputs, mlm_labels = mask_tokens(batch, tokenizer, params, generator)
                with autocast(params.precision):
                    mlm_loss, itm_loss, accuracy = model(batch, kinds, mlm_inputs, mlm_labels)
                    loss = mlm_loss + itm_loss
                    itc_loss = torch.zeros(())
                    if contrast:
                        itc_loss = model.contrast(batch, empty_ids, empty_mask)
                        loss = loss + params.itc_weight * itc_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                state.step_in_epoch += 1
                state.global_step += 1
                for key, value in zip(_SUMS, (mlm_loss, itm_loss, itc_loss, accuracy), strict=True):
                    state.sums[key] += value.item()
                progress.update(1, mlm=mlm_loss.item(), itm=itm_loss.item(), itc=itc_loss.item())
                if state.global_step % params.checkpoint_every == 0 and state.step_in_epoch < steps_per_epoch:
                    checkpoint()
            _end_epoch(generator, len(dataset))
            record = {"epoch": epoch + 1, **{k: round(state.sums[k] / steps_per_epoch, 4) for k in _SUMS}}
            if params.corpus == "captions":
                del record["itc_loss"]  # never computed: no single-modality inputs
            if heldout is not None:
                last = epoch == params.epochs - 1  # retrieval (100 candidates per query) only at the end
                with autocast(params.precision):
                    record.update(matching_metrics(model, heldout, candidates=100 if last else None))
            record["seconds"] = round(time.perf_counter() - started, 1)
            state.history.append(record)
            state.epoch, state.step_in_epoch, state.order, state.sums = epoch + 1, 0, None, {}
            logger.info("pretrain epoch %d: %s", epoch + 1, record)
            checkpoint()

    out_dir = Path(out_dir)
    staged = out_dir.with_name(f".{out_dir.name}.staged")
    shutil.rmtree(staged, ignore_errors=True)
    model.vilt.save_pretrained(staged)  # safetensors
    save_heads(model, staged)
    # vocab.txt beside the weights, as in a real checkpoint (one token per line, in id order).
    (staged / "vocab.txt").write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
    summary = {
        "params": params.model_dump(mode="json"),
        "parameters": sum(p.numel() for p in model.vilt.parameters()),
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "vocab_size": model.vilt.config.vocab_size,
        "corpus": corpus,
        "init": init,
        "pairs": len(dataset),
        "steps": total_steps,
        "seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "resumed_from_step": resumed_from,
        "heldout": state.history[-1] if heldout is not None else None,
        "history": state.history,
    }
    summary["warnings"] = _warnings(summary)
    for warning in summary["warnings"]:
        logger.warning("pretrain: %s", warning)
    atomic_write_json(staged / "pretrain_summary.json", summary)
    replace_dir(staged, out_dir)
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the backbone is the product; scratch goes
    return summary


def _warnings(summary: dict) -> list[str]:
    if summary["heldout"] is None:
        split = summary["corpus"].get("heldout_split", "validation")
        return [f"no held-out pairs (the {split} split has no complete pairs): matching was not measured"]
    warning = chance_warning(summary["heldout"])
    if warning is None:
        return []
    if summary["init"] is None and summary["corpus"]["kind"] != "captions":  # captions: from scratch only
        return [f"{warning}; more pairs, more epochs, or continue from a pretrained backbone (--init DIR)"]
    return [f"{warning}; more epochs, or more pairs"]
