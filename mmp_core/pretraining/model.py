"""The model `mmp pretrain` trains: ViLT with its MLM head, an image-text matching head and image-text contrast
projections, and the heads file written beside a pretrained backbone so that it can be measured again (and
pretrained further) from its files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import ViltForMaskedLM

from mmp_core.pretraining.data import HARD_NEGATIVE, MATCHED, OTHER_TEXT


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
_MLM = "mlm_score."  # the MLM head's transform and decoder bias (its decoder weight is the word embeddings)


def save_heads(model: PretrainingModel, directory: Path) -> None:
    """The matching head, contrast projections and MLM head beside the backbone (prompt training never loads
    them), so that the held-out matching metrics of a shipped checkpoint can be measured again from its files
    and `mmp pretrain --init` continues with every head it had."""
    from safetensors.torch import save_file

    tensors = {f"{name}.{key}": value for name in _HEADS for key, value in getattr(model, name).state_dict().items()}
    tensors["log_temperature"] = model.log_temperature.detach()
    tensors.update(
        {_MLM + key: value for key, value in model.mlm.mlm_score.named_parameters() if key != "decoder.weight"}
    )
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(directory / HEADS_NAME))


def tie_decoder(model: PretrainingModel) -> None:
    """The MLM decoder's weight is the word embedding table (ViltForMaskedLM ties them; replacing `mlm.vilt`
    cuts the tie)."""
    model.mlm.mlm_score.decoder.weight = model.vilt.embeddings.text_embeddings.word_embeddings.weight


def load_backbone_and_heads(model: PretrainingModel, directory: Path, *, require_heads: bool = True) -> dict:
    """Put a pretrained backbone directory's weights (and heads file, when there is one) into `model`, built with
    the directory's config. Returns which heads were loaded: {"matching": bool, "mlm": bool}."""
    from safetensors.torch import load_file
    from transformers import ViltModel

    if require_heads and not (directory / HEADS_NAME).is_file():
        raise FileNotFoundError(f"{directory / HEADS_NAME}: no pretraining heads (not written by this mmp pretrain)")
    model.mlm.vilt = ViltModel.from_pretrained(directory, use_safetensors=True)
    tie_decoder(model)
    if not (directory / HEADS_NAME).is_file():
        return {"matching": False, "mlm": False}
    heads = load_file(str(directory / HEADS_NAME))
    for name in _HEADS:
        getattr(model, name).load_state_dict(
            {k.split(".", 1)[1]: v for k, v in heads.items() if k.startswith(name + ".")}
        )
    model.log_temperature.data.copy_(heads["log_temperature"])
    mlm = {k.removeprefix(_MLM): v for k, v in heads.items() if k.startswith(_MLM)}
    if mlm:
        model.mlm.mlm_score.load_state_dict(mlm, strict=False)  # all but the decoder weight (the embeddings)
    return {"matching": True, "mlm": bool(mlm)}


def load_pretraining_model(directory: str | Path) -> PretrainingModel:
    """A pretrained backbone directory (`mmp pretrain`'s output) with its heads, in eval mode."""
    from transformers import ViltConfig

    directory = Path(directory)
    model = PretrainingModel(ViltConfig.from_pretrained(directory))
    load_backbone_and_heads(model, directory)
    return model.eval()
