"""The pairs pretraining reads: generated captioned scenes (with their hard negatives and concept words), generic
captioned pictures (hard negatives, no concept words) or a prepared dataset's complete training pairs, tokenised
and collated."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from mmp_core.config import PretrainParams

MATCHED, HARD_NEGATIVE, OTHER_TEXT = 0, 1, 2


def scene_tokenizer():
    """A word-level BERT tokenizer over every word of the generated texts (special tokens first, [PAD] = 0)."""
    from transformers import BertTokenizer

    from mmp_core.data.scenes import vocabulary
    from mmp_core.data.vocab import SPECIAL_TOKENS

    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *vocabulary()])}
    return BertTokenizer(vocab=vocab, do_lower_case=True)


def caption_tokenizer():
    """The scene tokenizer's vocabulary (the shipped backbone's: every benchmark word keeps its id), then the
    generic captions' words it lacks (`mmp_core.data.captions.vocabulary`)."""
    from transformers import BertTokenizer

    from mmp_core.data.captions import vocabulary
    from mmp_core.data.vocab import SPECIAL_TOKENS

    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *vocabulary()])}
    return BertTokenizer(vocab=vocab, do_lower_case=True)


class ScenePairs(torch.utils.data.Dataset):
    """`size` captioned scenes of one corpus part (0 pretraining, 1 held out), rendered once into memory.

    Items: pixel_values (3, H, W), input_ids / attention_mask (T,) of the scene's text, negative_ids /
    negative_mask (T,) of a hard negative drawn afresh each epoch (`set_epoch`), concept (T,) bool: tokens that
    name what is drawn.
    """

    has_hard_negatives = True

    def __init__(self, params: PretrainParams, tokenizer, part: int, size: int, workers: int = 2):
        from mmp_core.data.scenes import CONCEPT_WORDS, ScenesConfig, make_scene

        config = ScenesConfig(seed=params.seed)
        self._render(params, tokenizer, part, size, workers, lambda index: make_scene(config, part, index))
        vocab = tokenizer.get_vocab()
        self.concept_ids = torch.tensor(sorted(vocab[w] for w in CONCEPT_WORDS if w in vocab))

    def _render(self, params: PretrainParams, tokenizer, part: int, size: int, workers: int, make) -> None:
        """Render `size` pairs of corpus part `part` once into memory, `make(index)` each."""
        from mmp_core.data import ImageConfig

        self.params, self.tokenizer, self.part = params, tokenizer, part
        self.image_config = ImageConfig.from_params(params.image)
        with ThreadPoolExecutor(workers) as pool:
            self.scenes = list(pool.map(make, range(size)))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.scenes)

    def encode(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.tokenizer(text, max_length=self.params.text_positions, padding="max_length", truncation=True)
        return torch.tensor(encoded["input_ids"]), torch.tensor(encoded["attention_mask"])

    def __getitem__(self, index: int) -> dict:
        from mmp_core.data.scenes import hard_negative, render_text

        scene, mentions, image = self.scenes[index]
        rng = np.random.default_rng([self.params.seed, self.part, index, self.epoch])
        negative = render_text(hard_negative(scene, mentions, rng))
        ids, item = self._pair(image, render_text(mentions), negative)
        return {**item, "concept": torch.isin(ids, self.concept_ids)}

    def _pair(self, image: bytes, text: str, negative: str) -> tuple[torch.Tensor, dict]:
        """The text's ids, and the item's tensors but `concept`: pixels, text and its hard negative encoded."""
        from mmp_core.data.images import load_pixels

        ids, mask = self.encode(text)
        negative_ids, negative_mask = self.encode(negative)
        return ids, {
            "pixel_values": torch.from_numpy(load_pixels(image, self.image_config)),
            "input_ids": ids,
            "attention_mask": mask,
            "negative_ids": negative_ids,
            "negative_mask": negative_mask,
        }


class CaptionPairs(ScenePairs):
    """`size` generic captioned pictures of one corpus part (0 pretraining, 1 held out), rendered once into
    memory: the items of `ScenePairs`, with a content-changing hard negative drawn afresh each epoch and no concept
    words (`concept` all False: every word is masked with `mlm_probability`)."""

    def __init__(self, params: PretrainParams, tokenizer, part: int, size: int, workers: int = 2):
        from mmp_core.data.captions import CaptionsConfig, make_picture

        config = CaptionsConfig(seed=params.seed)
        self._render(params, tokenizer, part, size, workers, lambda index: make_picture(config, part, index))

    def __getitem__(self, index: int) -> dict:
        from mmp_core.data.captions import hard_negative, render_caption

        picture, caption, image = self.scenes[index]
        rng = np.random.default_rng([self.params.seed, 200 + self.part, index, self.epoch])
        negative = render_caption(hard_negative(picture, caption, rng))
        ids, item = self._pair(image, render_caption(caption), negative)
        return {**item, "concept": torch.zeros_like(ids, dtype=torch.bool)}


def collate_pairs(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack pairs; images padded to the batch's largest (pixel_mask 0 there), as `mmp_core.data.collate` does."""
    from mmp_core.data import collate

    images = collate(
        [
            {
                "input_ids": s["input_ids"],
                "attention_mask": s["attention_mask"],
                "pixel_values": s["pixel_values"],
                "missing_type": 0,
                "labels": torch.zeros(()),
                "index": 0,
            }
            for s in samples
        ]
    )
    batch = {key: torch.stack([s[key] for s in samples]) for key in samples[0] if key != "pixel_values"}
    # Text padded to the batch's longest (positives and negatives alike), not to max_text_len: a third fewer tokens.
    length = int(torch.cat([batch["attention_mask"], batch["negative_mask"]]).sum(1).max())
    batch = {key: value[:, :length] for key, value in batch.items()}
    batch.update(pixel_values=images["pixel_values"], pixel_mask=images["pixel_mask"])
    return batch


def prepared_pairs(
    prepared_dir: str | Path, params: PretrainParams, tokenizer, split: str | None = None
) -> torch.utils.data.Dataset:
    """A prepared dataset's complete pairs of `split` (default: its training split) as pretraining items (no hard
    negatives, no concept words).

    Naturally incomplete samples are left out; labels are never read."""
    from mmp_core.data import ImageConfig, MultimodalDataset, load_prepared

    prepared = load_prepared(prepared_dir)
    dataset = MultimodalDataset(
        prepared,
        split or prepared.spec.train_split,
        tokenizer,
        image_config=ImageConfig.from_params(params.image),
        max_text_len=params.text_positions,
    )
    complete = np.flatnonzero(dataset.missing_types == 0).tolist()

    class _Pairs(torch.utils.data.Dataset):
        has_hard_negatives = False

        def __len__(self) -> int:
            return len(complete)

        def __getitem__(self, index: int) -> dict:
            item = dataset[complete[index]]
            return {
                "pixel_values": item["pixel_values"],
                "input_ids": item["input_ids"],
                "attention_mask": item["attention_mask"],
                "negative_ids": item["input_ids"],  # no hard negatives: never selected (hard_negatives is 0)
                "negative_mask": item["attention_mask"],
                "concept": torch.zeros_like(item["input_ids"], dtype=torch.bool),
            }

    return _Pairs()
