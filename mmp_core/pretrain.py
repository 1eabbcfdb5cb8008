"""Pretraining the small ViLT that stands in for `dandelin/vilt-b32-mlm` on the embedded data.

ViLT's own objectives on complete image-text pairs of the training split: masked language modelling
(transformers' MLM masking, 80/10/10) and image-text matching (half of the pairs get another sample's
image). Downstream labels are never read. The result is a `save_pretrained` directory with the tokenizer's
vocab beside it: exactly what a user's downloaded checkpoint looks like, loaded by the same code.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import DataCollatorForLanguageModeling, ViltForMaskedLM, get_linear_schedule_with_warmup

from mmp_core.backbone import small_config
from mmp_core.config import PretrainParams, TrainParams
from mmp_core.fileio import atomic_write_json, replace_dir
from mmp_core.loading import open_prepared, split_dataset
from mmp_core.progress import Progress


def complete_pairs(prepared_dir, params: TrainParams):
    """The training split's complete image-text pairs (naturally incomplete samples are left out).

    Returns (dataset, collate, tokenizer); the tokenizer is the prepared data's own vocabulary.
    """
    from mmp_core.data import build_tokenizer, collate

    prepared = open_prepared(prepared_dir)
    tokenizer = build_tokenizer(prepared=prepared)
    split = prepared.spec.train_split
    dataset = split_dataset(prepared, split, tokenizer, params, missing=None)
    complete = np.flatnonzero(dataset.missing_types == 0)
    return torch.utils.data.Subset(dataset, complete.tolist()), collate, tokenizer


class PretrainingModel(nn.Module):
    """ViLT with its MLM head and an image-text matching head on the pooled output."""

    def __init__(self, config):
        super().__init__()
        self.mlm = ViltForMaskedLM(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)

    def forward(self, batch: dict, mlm_inputs: torch.Tensor, mlm_labels: torch.Tensor, generator: torch.Generator):
        """Returns (mlm_loss, itm_loss, itm_accuracy) for one batch of complete pairs, in one forward pass.

        A random half of the batch gets another sample's image (the batch rolled by one): the ITM head learns
        to tell matched from mismatched pairs, and the MLM loss counts only the matched ones.

        Args:
            batch: collated inputs (B, T) text, (B, 3, H, W) images with masks.
            mlm_inputs, mlm_labels: (B, T) masked token ids and MLM targets (-100 where not masked).
        """
        batch_size = batch["input_ids"].shape[0]
        mismatched = torch.rand(batch_size, generator=generator) < 0.5
        source = torch.where(mismatched, torch.roll(torch.arange(batch_size), 1), torch.arange(batch_size))
        out = self.mlm.vilt(
            input_ids=mlm_inputs,
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"][source],
            pixel_mask=batch["pixel_mask"][source],
        )
        text_len = mlm_inputs.shape[1]
        mlm_logits = self.mlm.mlm_score(out.last_hidden_state[:, :text_len])  # (B, T, V)
        mlm_labels = mlm_labels.masked_fill(mismatched[:, None], -100)
        mlm_loss = nn.functional.cross_entropy(mlm_logits.flatten(0, 1), mlm_labels.flatten(), ignore_index=-100)
        itm_logits = self.itm_head(out.pooler_output)
        itm_labels = (~mismatched).long()
        itm_loss = nn.functional.cross_entropy(itm_logits, itm_labels)
        accuracy = (itm_logits.argmax(-1) == itm_labels).float().mean()
        return mlm_loss, itm_loss, accuracy


def pretrain(
    params: PretrainParams,
    dataset: torch.utils.data.Dataset,
    collate,
    tokenizer,
    *,
    image_size: int,
    max_text_len: int,
    out_dir: str | Path,
) -> dict:
    """Pretrain on `dataset` (complete pairs) and write the backbone to `out_dir` (atomically, as a directory).

    Args:
        image_size: the side the position grid is laid out for (the images' shorter side).
        max_text_len: text positions of the backbone.
    """
    torch.manual_seed(params.seed)
    config = small_config(
        params.config,
        vocab_size=len(tokenizer),
        image_size=image_size,
        max_position_embeddings=max_text_len,
    )
    model = PretrainingModel(config)
    masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=params.mlm_probability, return_tensors="pt")
    generator = torch.Generator().manual_seed(params.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=params.batch_size, shuffle=True, drop_last=True, collate_fn=collate, generator=generator
    )
    if len(loader) == 0:
        raise ValueError(f"pretraining needs at least {params.batch_size} complete training pairs, got {len(dataset)}")
    total_steps = params.epochs * len(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(params.warmup_ratio * total_steps), total_steps)
    started = time.perf_counter()
    history = []
    model.train()
    with Progress(total_steps, "pretrain") as progress:  # a bar on a terminal, log lines elsewhere
        for epoch in range(params.epochs):
            sums = {"mlm_loss": 0.0, "itm_loss": 0.0, "itm_accuracy": 0.0}
            for batch in loader:
                special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
                special |= batch["attention_mask"] == 0
                mlm_inputs, mlm_labels = masker.torch_mask_tokens(batch["input_ids"].clone(), special)
                mlm_loss, itm_loss, accuracy = model(batch, mlm_inputs, mlm_labels, generator)
                loss = mlm_loss + itm_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                for key, value in zip(sums, (mlm_loss, itm_loss, accuracy), strict=True):
                    sums[key] += value.item()
                progress.update(1, mlm=mlm_loss.item(), itm=itm_loss.item())
            history.append({"epoch": epoch + 1, **{k: round(v / len(loader), 4) for k, v in sums.items()}})

    out_dir = Path(out_dir)
    staged = out_dir.with_name(f".{out_dir.name}.staged")
    model.mlm.vilt.save_pretrained(staged)  # safetensors
    # vocab.txt beside the weights, as in a real checkpoint (one token per line, in id order).
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    (staged / "vocab.txt").write_text("".join(token + "\n" for token, _ in vocab), encoding="utf-8")
    summary = {
        "config": params.config,
        "parameters": sum(p.numel() for p in model.mlm.vilt.parameters()),
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "image_size": image_size,
        "max_text_len": max_text_len,
        "vocab_size": config.vocab_size,
        "pairs": len(dataset),
        "steps": total_steps,
        "seconds": round(time.perf_counter() - started, 1),
        "history": history,
    }
    atomic_write_json(staged / "pretrain_summary.json", summary)
    replace_dir(staged, out_dir)
    return summary
