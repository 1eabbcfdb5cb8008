"""Generic captioned pictures (the stand-in for COCO) and pretraining on them as ViLT was pretrained: captions
that say what is drawn and never a genre cue word, pictures without the benchmark's genre emblems, hard negatives
that change one fact, the shipped vocabulary's token ids, whole-word MLM at one rate and no single-modality input."""

from __future__ import annotations

import io
import json
import re
from argparse import Namespace
from collections import Counter
from dataclasses import fields

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from mmp_core.config import PretrainParams
from mmp_core.data import captions, drawing
from mmp_core.data.captions import CaptionsConfig, hard_negative, make_picture, render_caption
from mmp_core.pretraining.data import CaptionPairs, caption_tokenizer, collate_pairs, scene_tokenizer
from mmp_core.pretraining.model_card import CARD_NAME, SUMMARY_NAME
from tests.model_fixtures import REPO, TINY_IMAGE

CUES = {word for words in captions.LEXICON["cues"].values() for word in words}
CONFIG = CaptionsConfig()
GROUP = re.compile(r"\b(one|two|three|four) (\w+) (\w+)\b")
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}


@pytest.fixture(scope="module")
def corpus():
    return [make_picture(CONFIG, 0, index) for index in range(2000)]


def named_groups(text: str) -> set[tuple[int, str, str]]:
    """The (count, colour, kind) groups a caption names, read back from its words."""
    singular = {plural: kind for kind, plural in captions.PLURALS.items()}
    return {(NUMBERS[n], colour, singular.get(kind, kind)) for n, colour, kind in GROUP.findall(text)}


def test_captions_never_use_a_genre_cue_word(corpus):
    allowed = set(captions.caption_words())
    assert not allowed & CUES
    rng = np.random.default_rng(0)
    for picture, caption, _ in corpus:
        for text in (render_caption(caption), render_caption(hard_negative(picture, caption, rng))):
            words = text.split()
            assert set(words) <= allowed and not set(words) & CUES, text
            assert len(words) <= captions.MAX_WORDS


def test_pictures_draw_generic_content_only(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a benchmark emblem was drawn")

    shapes = []
    real_shape = drawing.shape
    monkeypatch.setattr(
        drawing, "shape", lambda rng, image, kind, *a: shapes.append(kind) or real_shape(rng, image, kind, *a)
    )
    for emblem in ("face", "checkerboard", "triangles", "decoys"):
        monkeypatch.setattr(drawing, emblem, forbidden)
    for index in range(300):
        picture, _, _ = make_picture(CONFIG, 1, index)
        assert set(picture.drawn) <= {"canvas", "stripes", "sun", *captions.KINDS}
        assert not set(picture.drawn) & {"heart", "ring", "face", "checkerboard"}
        drawn = Counter(picture.drawn)
        assert all(drawn[kind] == sum(n for n, _, k in picture.groups if k == kind) for kind in captions.KINDS)
        assert ("stripes" in drawn) == picture.stripes and ("sun" in drawn) == picture.sun
    assert shapes and not set(shapes) & {"heart", "ring"}


def test_a_caption_names_what_is_drawn(corpus):
    for picture, caption, _ in corpus[:500]:
        text = render_caption(caption)
        assert named_groups(text) == set(picture.groups), text
        assert len(set((c, k) for _, c, k in picture.groups)) == len(picture.groups)
        assert ("dark" in text.split()) == picture.dark and ("bright" in text.split()) != picture.dark
        assert ("stripes" in text) == picture.stripes and ("sun" in text) == picture.sun
        assert sum(n for n, _, _ in picture.groups) <= 12
    for picture, _, image in corpus[:100]:  # every named colour is painted
        pixels = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), dtype=np.int16)
        for _, colour, _ in picture.groups:
            near = np.abs(pixels - np.array(captions.PALETTE[colour])).max(-1) < 40
            assert near.sum() >= 10, (picture, colour)
    again = make_picture(CONFIG, 0, 7)  # a pure function of (config, part, index)
    assert again[2] == corpus[7][2] and again[1] == corpus[7][1]
    assert make_picture(CONFIG, 1, 7)[2] != corpus[7][2]  # held out: another seed namespace


def test_a_hard_negative_changes_exactly_one_content_fact(corpus):
    rng = np.random.default_rng(1)
    seen = Counter()
    for picture, caption, _ in corpus[:600]:
        negative = hard_negative(picture, caption, rng)
        changed = [f.name for f in fields(caption) if getattr(caption, f.name) != getattr(negative, f.name)]
        assert len(changed) == 1 and changed[0] in ("dark", "stripes", "sun", "groups"), changed
        if changed == ["groups"]:
            pairs = [(a, b) for a, b in zip(caption.groups, negative.groups, strict=True) if a != b]
            assert len(pairs) == 1
            (old, new), *_ = pairs
            facts = [name for name, a, b in zip(("count", "colour", "shape"), old, new, strict=True) if a != b]
            assert len(facts) == 1
            assert new not in picture.groups  # a false claim about the unchanged picture
            seen[facts[0]] += 1
        else:
            seen[changed[0]] += 1
        assert render_caption(negative) != render_caption(caption)
        assert named_groups(render_caption(negative)) == set(negative.groups)
    assert set(seen) == {"dark", "stripes", "sun", "count", "colour", "shape"}


@pytest.fixture(scope="module")
def tokenizer():
    return caption_tokenizer()


def test_the_tokenizer_keeps_the_shipped_ids_and_reads_every_caption_word(tokenizer):
    from mmp_core.data.generate import GenerateConfig, make_sample

    shipped = (REPO / "backbones" / "embedded" / "vocab.txt").read_text().splitlines()
    vocab = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    assert vocab[: len(shipped)] == shipped and set(vocab[len(shipped) :]) == set(captions.NEW_WORDS)
    for word in captions.caption_words():  # one known token each: masking a token masks a whole word
        assert tokenizer.tokenize(word) == [word]
    scenes = scene_tokenizer()
    for index in range(20):  # the benchmark's texts keep their ids
        for text in make_sample(GenerateConfig(), "train", index)[0]["plot"]:
            assert tokenizer(text)["input_ids"] == scenes(text)["input_ids"]
    assert all(word in vocab for word in CUES)  # in the vocabulary, never in the corpus


def _params(**update) -> PretrainParams:
    return PretrainParams(
        corpus="captions", config="tiny", image=TINY_IMAGE, pairs=48, heldout=100, epochs=1, batch_size=16, **update
    )


def test_mlm_masks_whole_words_at_one_rate(tokenizer):
    from mmp_core.pretraining.pretrain import mask_tokens

    params = _params(concept_mlm_probability=0.95)
    pairs = CaptionPairs(params, tokenizer, part=1, size=200)
    batch = collate_pairs([pairs[i] for i in range(len(pairs))])
    assert not batch["concept"].any()  # no concept words: concept_mlm_probability never applies
    content = torch.tensor(
        [tokenizer.vocab[w] for w in (*captions.COLOURS, *captions.KINDS, *captions.PLURALS.values())]
    )
    ids = batch["input_ids"]
    special = torch.isin(ids, torch.tensor(tokenizer.all_special_ids)) | (batch["attention_mask"] == 0)
    is_content, is_other = torch.isin(ids, content), ~torch.isin(ids, content) & ~special
    rates = []
    for seed in range(5):
        _, labels = mask_tokens(batch, tokenizer, params, torch.Generator().manual_seed(seed))
        chosen = labels != -100
        assert (labels[chosen] == ids[chosen]).all() and not chosen[special].any()
        rates.append((chosen[is_content].float().mean().item(), chosen[is_other].float().mean().item()))
    content_rate, other_rate = np.mean(rates, axis=0)
    assert abs(content_rate - 0.15) < 0.03 and abs(other_rate - 0.15) < 0.03  # no boost for what is drawn


def test_pretraining_on_captions_uses_complete_pairs_only(tmp_path, monkeypatch):
    import mmp_core.pretraining.pretrain as pretrain_module
    from mmp_core.cli.stages import run_pretrain
    from mmp_core.pretraining.model import PretrainingModel

    def no_contrast(*args, **kwargs):
        raise AssertionError("image-text contrast ran")

    inputs = []
    real_pooled = PretrainingModel.pooled

    def pooled(self, input_ids, attention_mask, pixel_values, pixel_mask):
        inputs.append((attention_mask.sum(1).min().item(), (pixel_values == 1).all(dim=(1, 2, 3)).any().item()))
        return real_pooled(self, input_ids, attention_mask, pixel_values, pixel_mask)

    real_metrics = pretrain_module.matching_metrics
    monkeypatch.setattr(PretrainingModel, "contrast", no_contrast)
    monkeypatch.setattr(PretrainingModel, "pooled", pooled)
    monkeypatch.setattr(  # no retrieval (a forward pass per held-out picture): seconds
        pretrain_module, "matching_metrics", lambda *a, candidates=None: real_metrics(*a, candidates=None)
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"pretrain": _params().model_dump(mode="json")}))
    args = {"params": "params.yaml", "set": ["pretrain.itc_weight=1.0"], "out": "generic"}  # asked for, never run
    assert run_pretrain(Namespace(**args, init=None, prepared=None, checkpoint_dir=None)) == 0

    summary = json.loads((tmp_path / "generic" / SUMMARY_NAME).read_text())
    assert summary["corpus"] == {"kind": "captions", "train_pairs": 48, "heldout_pairs": 100}
    assert summary["steps"] == 3 and summary["vocab_size"] == 221 + len(captions.NEW_WORDS)
    heldout = summary["heldout"]
    assert {"itm_accuracy", "itm_accuracy_hard_negatives"} <= set(heldout) and heldout["heldout_pairs"] == 100
    assert all("itc_loss" not in record for record in summary["history"])
    assert inputs and all(length > 2 and not blank for length, blank in inputs)  # text and image, always
    card = (tmp_path / "generic" / CARD_NAME).read_text()
    assert card.startswith("# Generic backbone: a small ViLT pretrained on generic captioned pictures")
    assert "48 generated generic captioned pictures (`corpus: captions`" in card and "100 pictures it never" in card
    assert "\nitc_weight:" not in card and "\nconcept_mlm_probability:" not in card and "itc_loss" not in card
    assert "captioned scenes" not in card


def test_captions_cannot_continue_a_backbone(tmp_path):
    from mmp_core.pretraining.pretrain import pretrain

    with pytest.raises(ValueError, match="corpus 'captions' is not supported"):
        pretrain(_params(init=str(REPO / "backbones" / "embedded")), None, tmp_path / "out")
