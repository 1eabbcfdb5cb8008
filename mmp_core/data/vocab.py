"""A word-level BERT vocabulary built from training text (for backbones without a vocab, e.g. the embedded
dataset's small ViLT). Tokenisation is BERT's (lower-casing, punctuation split); every word in the vocabulary
is one WordPiece token, anything else becomes [UNK].

Also how well a vocabulary reads a dataset: `unk_rate` (the share of the text's tokens that become [UNK]), which
`mmp prepare` and `mmp train` report (`report_unk_rate`), warning above `UNK_WARN_RATE`."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
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


# Above this share of [UNK] tokens in the training text, prepare and train warn: the backbone cannot read the text.
UNK_WARN_RATE = 0.2
UNK_EXAMPLES = 8  # unknown words named in the warning


def unk_rate(tokenizer, texts: Iterable[str]) -> tuple[float, list[tuple[str, int]]]:
    """How much of `texts` the tokenizer's vocabulary cannot read.

    Every text is split into words as BERT's basic tokenizer does (`basic_tokens`) and each distinct word is
    tokenised once (no special tokens). Returns (rate, top unknown words): rate is the share of all the texts'
    tokens that are [UNK] (0.0 for no tokens); top unknown words are (word, occurrences) of the words that
    become [UNK], most common first (at most `UNK_EXAMPLES`).
    """
    counts = Counter(token for text in texts for token in basic_tokens(text))
    if not counts:
        return 0.0, []
    words = list(counts)
    unk_id = tokenizer.unk_token_id
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    total = unknown = 0
    unknown_words: Counter = Counter()
    for word, word_ids in zip(words, ids, strict=True):
        n, unk = counts[word], word_ids.count(unk_id)
        total += n * len(word_ids)
        if unk:
            unknown += n * unk
            unknown_words[word] = n
    return (unknown / total if total else 0.0), unknown_words.most_common(UNK_EXAMPLES)


def report_unk_rate(tokenizer, texts: Sequence[str], logger, *, vocabulary: str, backbone: str, prepared: str) -> float:
    """Log the [UNK] rate of `texts` (a train split) under `vocabulary` (what the log names, e.g. the backbone's
    vocab.txt): one INFO line, and above `UNK_WARN_RATE` one WARNING line with the most common unknown words and
    the remedies (continued pretraining of `backbone` on the `prepared` data, or a backbone whose vocabulary
    fits). `logger` None: nothing is logged. Returns the rate."""
    rate, top = unk_rate(tokenizer, texts)
    if logger is None:
        return rate
    logger.info("[UNK] rate of the train split's text under %s: %.1f%% of its tokens", vocabulary, 100 * rate)
    if rate > UNK_WARN_RATE:
        words = ", ".join(f"{word!r} ({count})" for word, count in top)
        logger.warning(
            "%.0f%% of the train split's tokens are [UNK] under %s (above %.0f%%; most common unknown words: %s): "
            "the model cannot read most of this text. Continue pretraining the backbone on this data "
            "(`mmp pretrain --init %s --prepared %s`) or use a backbone whose vocabulary fits it",
            100 * rate,
            vocabulary,
            100 * UNK_WARN_RATE,
            words,
            backbone,
            prepared,
        )
    return rate
