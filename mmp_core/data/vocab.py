"""A word-level BERT vocabulary built from training text (for backbones without a vocab, e.g. the embedded
dataset's small ViLT). Tokenisation is BERT's (lower-casing, punctuation split); every word in the vocabulary
is one WordPiece token, anything else becomes [UNK]."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from mmp_core.fileio import atomic_write_text

# [PAD] must be id 0 (ViLT's pad_token_id).
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB_NAME = "vocab.txt"

# BERT's basic tokenizer: lower-case, split on whitespace and punctuation (each punctuation char a token).
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def basic_tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def build_vocab(texts: Iterable[str], max_size: int = 1024, min_count: int = 1) -> list[str]:
    """Special tokens, then words by decreasing count (ties alphabetical), at most `max_size` entries."""
    if max_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab max_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {max_size}")
    counts = Counter(token for text in texts for token in basic_tokens(text))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [*SPECIAL_TOKENS, *words[: max_size - len(SPECIAL_TOKENS)]]


def write_vocab(path: str | Path, vocab: list[str]) -> Path:
    return atomic_write_text(path, "".join(f"{token}\n" for token in vocab))
