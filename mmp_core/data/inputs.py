"""Model inputs: the offline tokenizer, one sample's encoding, a torch Dataset over a prepared split, collate.

`encode_sample` is the one place a text and an encoded image become model inputs: the dataset (training,
evaluation) and `mmp predict` both call it, so a new input is fed exactly as an evaluated sample is.

A batch from `collate` is exactly what the prompt model takes, plus labels and row indices (when the samples
have them; predictions on new inputs have no labels):
  input_ids (B, T) long, attention_mask (B, T) long   T = max_text_len; missing text = [CLS] [SEP] + padding
  pixel_values (B, 3, H, W) float, pixel_mask (B, H, W) long   padded to the batch's largest image, mask 0 there
  missing_type (B,) long   0 complete, 1 text missing, 2 image missing
  labels   (B, C) float multi-hot (multilabel) or (B,) long class ids (multiclass, binary)
  index    (B,) long   row index within the split
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from mmp_core.data.arrow import natural_missing_codes
from mmp_core.data.images import EMBEDDED_IMAGE_CONFIG, ImageConfig, load_pixels, missing_pixels
from mmp_core.data.prepared import PreparedDataset, load_prepared
from mmp_core.data.vocab import VOCAB_NAME
from mmp_core.scenarios import COMPLETE, IMAGE_MISSING, TEXT_MISSING

BATCH_KEYS = ("input_ids", "attention_mask", "pixel_values", "pixel_mask", "missing_type", "labels", "index")


def build_tokenizer(
    vocab: str | Path | None = None,
    *,
    backbone_dir: str | Path | None = None,
    prepared: PreparedDataset | None = None,
):
    """An offline `BertTokenizer` (lower-casing, WordPiece) from a `vocab.txt`.

    The vocabulary is `vocab` if given, else `backbone_dir/vocab.txt` (a downloaded ViLT/BERT checkpoint), else
    the prepared dataset's `vocab.txt` (built from its training text, e.g. the embedded dataset). Note that
    transformers 5 ignores `BertTokenizerFast(vocab_file=...)`; `BertTokenizer(vocab=path)` is the working form.
    """
    from transformers import BertTokenizer

    candidates = []
    if vocab is not None:
        candidates.append(Path(vocab))
    if backbone_dir is not None:
        candidates.append(Path(backbone_dir) / VOCAB_NAME)
    if prepared is not None:
        candidates.append(prepared.root / VOCAB_NAME)
    if not candidates:
        raise ValueError("build_tokenizer needs a vocab file, a backbone directory or a prepared dataset")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"no vocabulary found; looked for {', '.join(str(p) for p in candidates)}")
    tokenizer = BertTokenizer(vocab=str(path), do_lower_case=True)
    absent = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in tokenizer.get_vocab()]
    if absent:
        raise ValueError(f"{path}: vocabulary lacks the special token(s) {absent}")
    return tokenizer


def encode_sample(
    text: str,
    image: bytes | None,
    missing_type: int,
    tokenizer,
    image_config: ImageConfig,
    max_text_len: int,
) -> dict:
    """The model inputs of one sample, as the model sees it under `missing_type`.

    Args:
        text: the sample's text ('' when it has none); ignored when `missing_type` is text missing.
        image: the encoded image (JPEG/PNG bytes) or None when it has none; ignored when image missing.
        missing_type: 0 complete, 1 text missing, 2 image missing.

    Returns:
        input_ids (T,) long and attention_mask (T,) long, T = max_text_len (missing text: [CLS] [SEP] + padding);
        pixel_values (3, H, W) float (missing image: ones of the resized image's shape, or a square of the shorter
        side when there is no image at all); missing_type (int).
    """
    if missing_type == TEXT_MISSING:
        text = ""
    if missing_type == IMAGE_MISSING or image is None:
        pixels = missing_pixels(image, image_config)
    else:
        pixels = load_pixels(image, image_config)
    sample = encode_text(text, tokenizer, max_text_len)
    return {**sample, "pixel_values": torch.from_numpy(pixels), "missing_type": int(missing_type)}


def encode_text(text: str, tokenizer, max_text_len: int) -> dict:
    """input_ids (T,) and attention_mask (T,), T = max_text_len: truncated or padded."""
    encoded = tokenizer(
        text, max_length=max_text_len, padding="max_length", truncation=True, return_attention_mask=True
    )
    return {
        "input_ids": torch.tensor(encoded["input_ids"], dtype=torch.long),
        "attention_mask": torch.tensor(encoded["attention_mask"], dtype=torch.long),
    }


def default_image_config(dataset: str) -> ImageConfig:
    """ViLT-B/32 sizes (384/640/32, docs/method.md §6), or the small embedded default (96/160/16)."""
    return EMBEDDED_IMAGE_CONFIG if dataset == "embedded" else ImageConfig()


class MultimodalDataset(torch.utils.data.Dataset):
    """One split of a prepared dataset as model-input samples.

    Args:
        prepared: a `PreparedDataset` or its directory.
        split: split name (e.g. `train`, `dev`/`val`, `test`).
        tokenizer: from `build_tokenizer`.
        image_config: resize rule; default `default_image_config(dataset)`.
        max_text_len: tokens per text (truncated / padded); default the dataset's (docs/method.md §1).
        missing: per-row missing types (N,) of 0/1/2, e.g. `missing_table(...)`, or a constant array to feed
            every sample as one variant. Natural missing always wins: a row without image is image-missing and a
            row without text is text-missing, whatever the table says. None = only natural missing.

    `missing_types` holds the effective per-row types. Decoding happens per item, so it parallelises over
    DataLoader workers; the instance pickles without its memory-mapped table.
    """

    def __init__(
        self,
        prepared: PreparedDataset | str | Path,
        split: str,
        tokenizer,
        *,
        image_config: ImageConfig | None = None,
        max_text_len: int | None = None,
        missing: np.ndarray | None = None,
        cache_pixels: bool = False,
    ):
        if not isinstance(prepared, PreparedDataset):
            prepared = load_prepared(prepared)
        self.prepared, self.split, self.spec = prepared, split, prepared.spec
        self.reader = prepared.open_split(split)
        self.tokenizer = tokenizer
        self.image_config = image_config or default_image_config(self.spec.name)
        self.max_text_len = int(max_text_len or self.spec.max_text_len)
        if self.max_text_len < 2:
            raise ValueError(f"max_text_len must be at least 2 ([CLS] [SEP]), got {self.max_text_len}")
        self.texts = self.reader.texts()
        self.labels = self.reader.labels()
        self.natural = natural_missing_codes(
            self.reader.has_image(), np.array([bool(t) for t in self.texts], dtype=bool), self.reader.path
        )
        self.missing_types = self._effective_types(missing)
        self.pixel_cache = None
        if cache_pixels:
            from mmp_core.data.pixels import PixelCache

            self.pixel_cache = PixelCache.build(self.reader, self.image_config, self.checksum)
            # Every text (and the empty one) tokenised in one call: the tokenizer is the other per-item cost.
            encoded = tokenizer([*self.texts, ""], max_length=self.max_text_len, padding="max_length", truncation=True)
            self.token_ids = torch.tensor(encoded["input_ids"], dtype=torch.long)
            self.token_mask = torch.tensor(encoded["attention_mask"], dtype=torch.long)

    def _effective_types(self, missing: np.ndarray | None) -> np.ndarray:
        n = len(self.texts)
        if missing is None:
            table = np.zeros(n, dtype=np.int8)
        else:
            table = np.asarray(missing)
            if table.shape != (n,):
                raise ValueError(f"missing table has shape {table.shape}, but split {self.split!r} has {n} rows")
            if n and (table.min() < COMPLETE or table.max() > IMAGE_MISSING):
                raise ValueError("missing table values must be 0 (complete), 1 (text missing) or 2 (image missing)")
        return np.where(self.natural != COMPLETE, self.natural, table).astype(np.int8)

    def with_missing(self, missing: np.ndarray | None) -> MultimodalDataset:
        """The same split under another missing table (natural missing still wins), sharing everything else."""
        other = copy.copy(self)
        other.missing_types = self._effective_types(missing)
        return other

    @property
    def checksum(self) -> str:
        """SHA-256 of the split's arrow file (from the manifest): identifies its content."""
        return self.prepared.manifest["files"][self.split]["sha256"]

    def label(self, index: int) -> torch.Tensor:
        """A row's label as the loss reads it: multi-hot float32 (multilabel) or the class id (int64)."""
        if self.spec.task == "multilabel":
            return torch.from_numpy(self.labels[index].astype(np.float32))
        return torch.tensor(int(self.labels[index]), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for split {self.split!r} of {len(self)} rows")
        code = int(self.missing_types[index])
        if self.pixel_cache is None:
            sample = encode_sample(
                self.texts[index], self.reader.image(index), code, self.tokenizer, self.image_config, self.max_text_len
            )
        else:  # the same inputs from the decoded-image cache
            size = self.pixel_cache.size(index)
            if code == IMAGE_MISSING or size is None:
                pixels = np.ones((3, *(size or self.image_config.blank_size)), dtype=np.float32)
            else:
                pixels = self.pixel_cache.pixels(index)
            row = -1 if code == TEXT_MISSING else index  # the last row is the empty text
            sample = {
                "input_ids": self.token_ids[row],
                "attention_mask": self.token_mask[row],
                "pixel_values": torch.from_numpy(pixels),
                "missing_type": code,
            }
        sample["labels"] = self.label(index)
        sample["index"] = index
        return sample


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch, padding images (zeros) to the largest height and width, pixel_mask 0 there.

    `labels` and `index` are stacked when every sample has them (dataset samples do; new inputs have no labels).
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    height = max(s["pixel_values"].shape[1] for s in samples)
    width = max(s["pixel_values"].shape[2] for s in samples)
    pixel_values = torch.zeros(len(samples), 3, height, width, dtype=torch.float32)
    pixel_mask = torch.zeros(len(samples), height, width, dtype=torch.long)
    for i, sample in enumerate(samples):
        _, h, w = sample["pixel_values"].shape
        pixel_values[i, :, :h, :w] = sample["pixel_values"]
        pixel_mask[i, :h, :w] = 1
    batch = {
        "input_ids": torch.stack([s["input_ids"] for s in samples]),
        "attention_mask": torch.stack([s["attention_mask"] for s in samples]),
        "pixel_values": pixel_values,
        "pixel_mask": pixel_mask,
        "missing_type": torch.tensor([int(s["missing_type"]) for s in samples], dtype=torch.long),
    }
    if all("labels" in s for s in samples):
        batch["labels"] = torch.stack([s["labels"] for s in samples])
    if all("index" in s for s in samples):
        batch["index"] = torch.tensor([int(s["index"]) for s in samples], dtype=torch.long)
    return batch
