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

Pairs come from the generated scene corpus (`mmp_core.data.scenes`, hard negatives and concept words known) or
from a prepared dataset's complete training pairs (`corpus: prepared`; in-batch negatives and plain MLM only).
The result is a `save_pretrained` directory with `vocab.txt` and `pretrain_summary.json` (held-out metrics)
beside it: exactly what a downloaded checkpoint looks like, loaded by the same code.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import ViltForMaskedLM, get_linear_schedule_with_warmup

from mmp_core.backbone import small_config
from mmp_core.config import PretrainParams
from mmp_core.fileio import atomic_write_json, replace_dir
from mmp_core.pretrain_data import (
    HARD_NEGATIVE,
    MATCHED,
    OTHER_TEXT,
    ScenePairs,
    collate_pairs,
    prepared_pairs,
)
from mmp_core.progress import Progress

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- model
class PretrainingModel(nn.Module):
    """ViLT with its MLM head, an image-text matching head and image-text contrast projections on the pooled
    [CLS]. Only `self.mlm.vilt` is kept as the backbone."""

    def __init__(self, config, itc_dim: int = 64):
        super().__init__()
        self.mlm = ViltForMaskedLM(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.text_projection = nn.Linear(config.hidden_size, itc_dim)
        self.image_projection = nn.Linear(config.hidden_size, itc_dim)
        self.log_temperature = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    @property
    def vilt(self):
        return self.mlm.vilt

    def pooled(self, input_ids, attention_mask, pixel_values, pixel_mask) -> torch.Tensor:
        return self.vilt(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, pixel_mask=pixel_mask
        ).pooler_output

    def itm_logits(self, batch: dict, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.itm_head(self.pooled(input_ids, attention_mask, batch["pixel_values"], batch["pixel_mask"]))

    def contrast(self, batch: dict, empty_ids: torch.Tensor, empty_mask: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE between text-alone and image-alone pooled [CLS] (the other modality fed as missing)."""
        text_alone = self.pooled(
            batch["input_ids"], batch["attention_mask"], torch.ones_like(batch["pixel_values"]), batch["pixel_mask"]
        )
        image_alone = self.pooled(empty_ids, empty_mask, batch["pixel_values"], batch["pixel_mask"])
        text = nn.functional.normalize(self.text_projection(text_alone), dim=-1)
        image = nn.functional.normalize(self.image_projection(image_alone), dim=-1)
        logits = self.log_temperature.exp().clamp(max=100) * text @ image.T
        targets = torch.arange(len(logits))
        return (nn.functional.cross_entropy(logits, targets) + nn.functional.cross_entropy(logits.T, targets)) / 2

    def forward(self, batch: dict, kinds: torch.Tensor, mlm_inputs: torch.Tensor, mlm_labels: torch.Tensor):
        """(mlm_loss, itm_loss, itm_accuracy) for one batch.

        Matching and masked language modelling run as two passes, as in ViLT: a matching pass on masked text
        would let [MASK] tokens tell matched pairs (the only ones masked) from the others.

        Args:
            batch: collated pairs (B, T) text, (B, 3, H, W) images, negative_ids / negative_mask (B, T).
            kinds: (B,) MATCHED, HARD_NEGATIVE or OTHER_TEXT (the text of the next pair in the batch).
            mlm_inputs, mlm_labels: (B, T) masked ids and targets (-100 where not masked).
        """
        other = torch.roll(torch.arange(len(kinds)), 1)
        hard, another = (kinds == HARD_NEGATIVE)[:, None], (kinds == OTHER_TEXT)[:, None]
        ids = torch.where(
            hard, batch["negative_ids"], torch.where(another, batch["input_ids"][other], batch["input_ids"])
        )
        mask = torch.where(
            hard, batch["negative_mask"], torch.where(another, batch["attention_mask"][other], batch["attention_mask"])
        )
        itm_logits = self.itm_logits(batch, ids, mask)
        itm_labels = (kinds == MATCHED).long()
        itm_loss = nn.functional.cross_entropy(itm_logits, itm_labels)
        hidden = self.vilt(
            input_ids=mlm_inputs,
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            pixel_mask=batch["pixel_mask"],
        ).last_hidden_state
        mlm_logits = self.mlm.mlm_score(hidden[:, : mlm_inputs.shape[1]])  # (B, T, V)
        mlm_loss = nn.functional.cross_entropy(mlm_logits.flatten(0, 1), mlm_labels.flatten(), ignore_index=-100)
        return mlm_loss, itm_loss, (itm_logits.argmax(-1) == itm_labels).float().mean()


HEADS_NAME = "pretraining_heads.safetensors"
_HEADS = ("itm_head", "text_projection", "image_projection")


def save_heads(model: PretrainingModel, directory: Path) -> None:
    """The matching head and contrast projections beside the backbone (prompt training never loads them), so
    that the held-out matching metrics of a shipped checkpoint can be measured again from its files."""
    from safetensors.torch import save_file

    tensors = {f"{name}.{key}": value for name in _HEADS for key, value in getattr(model, name).state_dict().items()}
    tensors["log_temperature"] = model.log_temperature.detach()
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(directory / HEADS_NAME))


def load_pretraining_model(directory: str | Path) -> PretrainingModel:
    """A pretrained backbone directory (`mmp pretrain`'s output) with its heads, in eval mode."""
    from safetensors.torch import load_file
    from transformers import ViltConfig, ViltModel

    directory = Path(directory)
    if not (directory / HEADS_NAME).is_file():
        raise FileNotFoundError(f"{directory / HEADS_NAME}: no pretraining heads (not written by this mmp pretrain)")
    config = ViltConfig.from_pretrained(directory)
    model = PretrainingModel(config)
    model.mlm.vilt = ViltModel.from_pretrained(directory, use_safetensors=True)
    heads = load_file(str(directory / HEADS_NAME))
    for name in _HEADS:
        getattr(model, name).load_state_dict(
            {k.split(".", 1)[1]: v for k, v in heads.items() if k.startswith(name + ".")}
        )
    model.log_temperature.data.copy_(heads["log_temperature"])
    return model.eval()


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
    quarter each of the two negatives), accuracy on matched vs hard negative alone, and image->text retrieval
    recall@1 among `candidates` texts (the true one and the next candidates-1 scenes' texts; None: skipped)."""
    model.eval()
    loader = torch.utils.data.DataLoader(pairs, batch_size=batch_size, shuffle=False, collate_fn=collate_pairs)
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
                scores.append(torch.log_softmax(model.itm_logits(batch, ids, mask), -1)[:, 1])
        matched, hard, other = torch.cat(matched), torch.cat(hard), torch.cat(other)
        half = len(matched) // 2  # the mix of training: first half matched, then hard and other negatives
        quarter = (len(matched) - half) // 2
        decisions = torch.cat([matched[:half] > np.log(0.5), hard[half : half + quarter] <= np.log(0.5)])
        decisions = torch.cat([decisions, other[half + quarter :] <= np.log(0.5)])
        hard_decisions = torch.cat([matched[:half] > np.log(0.5), hard[half:] <= np.log(0.5)])
        metrics = {
            "itm_accuracy": round(decisions.float().mean().item(), 4),
            "itm_accuracy_hard_negatives": round(hard_decisions.float().mean().item(), 4),
            "heldout_pairs": len(pairs),
        }
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


def pretrain(params: PretrainParams, tokenizer, out_dir: str | Path, *, prepared_dir: str | Path | None = None) -> dict:
    """Pretrain on the scene corpus (or `prepared_dir`'s pairs when `params.corpus == 'prepared'`) and write
    the backbone to `out_dir` atomically: weights, config, vocab.txt and pretrain_summary.json."""
    torch.manual_seed(params.seed)
    if params.corpus == "scenes":
        dataset = ScenePairs(params, tokenizer, part=0, size=params.pairs)
        heldout = ScenePairs(params, tokenizer, part=1, size=params.heldout)
    else:
        if prepared_dir is None:
            raise ValueError("pretrain.corpus 'prepared' needs a prepared dataset (--prepared)")
        dataset, heldout = prepared_pairs(prepared_dir, params, tokenizer), None
    config = small_config(
        params.config,
        vocab_size=len(tokenizer),
        image_size=params.image.shorter_side,
        patch_size=params.image.patch_size,
        max_position_embeddings=params.text_positions,
    )
    model = PretrainingModel(config)
    generator = torch.Generator().manual_seed(params.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=params.batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=collate_pairs,
        generator=generator,
        num_workers=params.num_workers,
        persistent_workers=params.num_workers > 0,
    )
    if len(loader) == 0:
        raise ValueError(f"pretraining needs at least {params.batch_size} pairs, got {len(dataset)}")
    total_steps = params.epochs * len(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(params.warmup_ratio * total_steps), total_steps)
    hard_share = params.hard_negatives if params.corpus == "scenes" else 0.0
    empty_ids, empty_mask = empty_text(tokenizer, params.batch_size, 2)  # [CLS] [SEP]
    started = time.perf_counter()
    history = []
    model.train()
    with Progress(total_steps, "pretrain") as progress:  # a bar on a terminal, log lines elsewhere
        for epoch in range(params.epochs):
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            sums = dict.fromkeys(("mlm_loss", "itm_loss", "itc_loss", "itm_accuracy"), 0.0)
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
                    if params.itc_weight:
                        itc_loss = model.contrast(batch, empty_ids, empty_mask)
                        loss = loss + params.itc_weight * itc_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                for key, value in zip(sums, (mlm_loss, itm_loss, itc_loss, accuracy), strict=True):
                    sums[key] += value.item()
                progress.update(1, mlm=mlm_loss.item(), itm=itm_loss.item(), itc=itc_loss.item())
            record = {"epoch": epoch + 1, **{k: round(v / len(loader), 4) for k, v in sums.items()}}
            if heldout is not None:
                last = epoch == params.epochs - 1  # retrieval (100 candidates per query) only at the end
                with autocast(params.precision):
                    record.update(matching_metrics(model, heldout, candidates=100 if last else None))
            record["seconds"] = round(time.perf_counter() - started, 1)
            history.append(record)
            logger.info("pretrain epoch %d: %s", epoch + 1, record)

    out_dir = Path(out_dir)
    staged = out_dir.with_name(f".{out_dir.name}.staged")
    model.vilt.save_pretrained(staged)  # safetensors
    save_heads(model, staged)
    # vocab.txt beside the weights, as in a real checkpoint (one token per line, in id order).
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (staged / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
    summary = {
        "params": params.model_dump(mode="json"),
        "parameters": sum(p.numel() for p in model.vilt.parameters()),
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "vocab_size": config.vocab_size,
        "pairs": len(dataset),
        "steps": total_steps,
        "seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "heldout": history[-1] if heldout is not None else None,
        "history": history,
    }
    atomic_write_json(staged / "pretrain_summary.json", summary)
    replace_dir(staged, out_dir)
    return summary
