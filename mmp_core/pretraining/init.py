"""Continued pretraining (`mmp pretrain --init DIR`): a pretrained backbone with its heads, its vocabulary
extended with the corpus's words.

The vocabulary is the init backbone's `vocab.txt` in its order (every existing token keeps its id and row), then
the corpus's words it lacks: the prepared dataset's `vocab.txt`, or words built from its training texts
(`build_vocab`), or the scene lexicon. A new word's embedding row (which is also its MLM decoder row: ViLT ties
them) starts as the mean of the rows of its WordPiece pieces under the old vocabulary when it splits into known
pieces, otherwise as the mean of the existing (non-special) rows plus Gaussian noise of `NOISE_SCALE` times their
per-dimension standard deviation; its MLM decoder bias likewise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from mmp_core.config import PretrainParams
from mmp_core.data.vocab import VOCAB_NAME, build_vocab
from mmp_core.pretraining.model import HEADS_NAME, PretrainingModel, load_backbone_and_heads, tie_decoder

logger = logging.getLogger(__name__)

NOISE_SCALE = 0.1
BUILT_VOCAB_SIZE = 4096  # words taken from the training texts when the prepared dataset has no vocab.txt


def read_vocab(path: str | Path) -> list[str]:
    """A vocab.txt's tokens in id order (as BertTokenizer reads it: one per line)."""
    return [line.rstrip("\n") for line in Path(path).read_text(encoding="utf-8").splitlines()]


def corpus_words(params: PretrainParams, prepared_dir: str | Path | None) -> tuple[list[str], str]:
    """The corpus's words and where they came from."""
    if params.corpus == "scenes":
        from mmp_core.data.scenes import vocabulary

        return list(vocabulary()), "the scene lexicon"
    from mmp_core.data import load_prepared

    prepared = load_prepared(prepared_dir)
    if prepared.vocab_path is not None:
        return read_vocab(prepared.vocab_path), f"{prepared.vocab_path}"
    split = prepared.spec.train_split
    texts = prepared.open_split(split).texts()
    return build_vocab(texts, max_size=BUILT_VOCAB_SIZE), f"the {split} split's texts (build_vocab, {BUILT_VOCAB_SIZE})"


def merged_vocabulary(init_vocab: list[str], words: list[str]) -> list[str]:
    """`init_vocab` in its order, then the words of `words` it lacks, in their order."""
    seen, merged = set(init_vocab), list(init_vocab)
    for word in words:
        if word not in seen:
            seen.add(word)
            merged.append(word)
    return merged


def tokenizer_from_vocab(vocab: list[str]):
    from transformers import BertTokenizer

    return BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)


@torch.no_grad()
def extend_word_rows(model: PretrainingModel, old_tokenizer, new_words: list[str], seed: int) -> dict:
    """Append a row per new word to the word embeddings (tied to the MLM decoder) and the decoder bias.

    Returns how each row was initialised: {"from_pieces": {word: pieces}, "from_mean": [words], ...}."""
    embeddings = model.vilt.embeddings.text_embeddings.word_embeddings
    decoder = model.mlm.mlm_score.decoder
    old, bias = embeddings.weight.data, decoder.bias.data
    special = set(old_tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(len(old)) if i not in special])
    mean_row, mean_bias = old[ordinary].mean(0), bias[ordinary].mean()
    noise_std = NOISE_SCALE * old[ordinary].std(0)
    generator = torch.Generator().manual_seed(seed)
    rows, biases, from_pieces, from_mean = [], [], {}, []
    for word in new_words:
        pieces = old_tokenizer.tokenize(word)
        if pieces and old_tokenizer.unk_token not in pieces:
            ids = old_tokenizer.convert_tokens_to_ids(pieces)
            rows.append(old[ids].mean(0))
            biases.append(bias[ids].mean())
            from_pieces[word] = pieces
        else:
            rows.append(mean_row + noise_std * torch.randn(old.shape[1], generator=generator))
            biases.append(mean_bias)
            from_mean.append(word)
    size = len(old) + len(new_words)
    if new_words:
        model.vilt.embeddings.text_embeddings.word_embeddings = nn.Embedding.from_pretrained(
            torch.cat([old, torch.stack(rows)]), freeze=False, padding_idx=embeddings.padding_idx
        )
        head = nn.Linear(old.shape[1], size, device="meta")  # both tensors replaced below: no random draws
        head.bias = nn.Parameter(torch.cat([bias, torch.stack(biases)]))
        model.mlm.mlm_score.decoder = head
        tie_decoder(model)
        for config in {id(c): c for c in (model.mlm.config, model.vilt.config)}.values():
            config.vocab_size = size
    return {
        "vocab_before": len(old),
        "vocab_after": size,
        "rows_added": len(new_words),
        "rows_from_pieces": len(from_pieces),
        "rows_from_mean": len(from_mean),
        "noise": f"{NOISE_SCALE} x the per-dimension sd of the existing rows",
        "from_pieces": from_pieces,
        "from_mean": from_mean,
    }


def check_init_fits(config, params: PretrainParams, directory: Path) -> None:
    """The init backbone fixes the text positions and patch size: the parameters must say the same."""
    if config.max_position_embeddings != params.text_positions:
        raise ValueError(
            f"{directory} has {config.max_position_embeddings} text positions but pretrain.text_positions is "
            f"{params.text_positions}: set pretrain.text_positions={config.max_position_embeddings}"
        )
    if config.patch_size != params.image.patch_size:
        raise ValueError(
            f"{directory} has {config.patch_size} px patches but pretrain.image.patch_size is "
            f"{params.image.patch_size}: set pretrain.image.patch_size={config.patch_size}"
        )


def init_model(params: PretrainParams, prepared_dir: str | Path | None) -> tuple[PretrainingModel, object, dict]:
    """(model, tokenizer of the extended vocabulary, report) for continued pretraining from `params.init`."""
    from transformers import ViltConfig

    from mmp_core.data import build_tokenizer
    from mmp_core.fileio import sha256_file
    from mmp_core.model.backbone import resolve_backbone_dir

    directory = resolve_backbone_dir(params.init)
    if not (directory / VOCAB_NAME).is_file():
        raise FileNotFoundError(f"{directory / VOCAB_NAME}: pretrain.init needs the backbone's vocabulary beside it")
    config = ViltConfig.from_pretrained(directory)
    check_init_fits(config, params, directory)
    old_vocab = read_vocab(directory / VOCAB_NAME)
    old_tokenizer = build_tokenizer(directory / VOCAB_NAME)
    if len(old_vocab) != config.vocab_size or len(old_tokenizer) != config.vocab_size:
        raise ValueError(
            f"{directory / VOCAB_NAME} has {len(old_vocab)} tokens but the backbone's table {config.vocab_size} rows"
        )
    model = PretrainingModel(config)
    loaded = load_backbone_and_heads(model, directory, require_heads=False)
    words, source = corpus_words(params, prepared_dir)
    vocab = merged_vocabulary(old_vocab, words)
    report = extend_word_rows(model, old_tokenizer, vocab[len(old_vocab) :], params.seed)
    report = {
        "backbone": str(params.init),
        "weights_sha256": sha256_file(directory / "model.safetensors"),
        "heads_sha256": sha256_file(directory / HEADS_NAME) if (directory / HEADS_NAME).is_file() else None,
        "heads": {
            "matching": "loaded" if loaded["matching"] else "fresh (no pretraining heads beside the backbone)",
            "mlm": "loaded" if loaded["mlm"] else "fresh transform, decoder tied to the word embeddings",
        },
        "words_from": source,
        **report,
    }
    logger.info(
        "continuing from %s: vocabulary %d -> %d tokens, %d rows added (%d from their WordPiece pieces, %d from the "
        "mean of the existing rows plus noise); matching heads %s, MLM head %s",
        params.init,
        report["vocab_before"],
        report["vocab_after"],
        report["rows_added"],
        report["rows_from_pieces"],
        report["rows_from_mean"],
        report["heads"]["matching"],
        report["heads"]["mlm"],
    )
    return model, tokenizer_from_vocab(vocab), report
