"""Synthetic datasets in the three raw layouts: data mmp was not tuned for, to judge a training recipe on.

The embedded benchmark (`generate.py`) is one fixed world: eight genres with hand-picked cues that the shipped
backbone was pretrained around. A recipe tuned on it may fail elsewhere. This module draws a *new world per
seed* and writes it in a real raw layout, so `mmp prepare` reads it exactly as it reads downloaded data:

| layout | task | labels | what carries a label |
|---|---|---|---|
| `mmimdb` | multi-label | the 23 MM-IMDb genres, priors from 0.30 down to 0.03 | per genre: the image, the text, or either |
| `food101` | multi-class | `classes` Food-101 class names | per class: the image, the title, or either |
| `hatememes` | binary | not-hateful / hateful | an image concept and a text concept *together* (interaction) |

A world maps every label to an **image cue** (a small shape in a colour, drawn two or three times among distractor
shapes) and to **text cue words**. Which modality carries which label, the cue shapes and the cue words all come
from the seed. Half of the cue words (`novel_words`) are made-up words that no shipped vocabulary holds, as a real
dataset's words are unknown to a small backbone's vocabulary. Cues drop out (`cue_dropout`) and appear without
their label (`false_cue`), so no model reaches 100%.

Every sample is a pure function of (seed, split, index), so changing a split's size never changes other samples.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmp_core.data import drawing
from mmp_core.data.datasets import FOOD101_CLASSES, MMIMDB_GENRES
from mmp_core.fileio import replace_dir, staging_dir

LAYOUTS = ("mmimdb", "food101", "hatememes")
SPLITS = {
    "mmimdb": ("train", "dev", "test"),
    "food101": ("train", "val", "test"),
    "hatememes": ("train", "dev", "test"),
}
SPLIT_CODES = {"train": 1, "dev": 2, "val": 2, "test": 3}
SHAPES = ("square", "circle", "diamond", "cross", "star", "heart", "ring")
COLOURS = tuple(c for c in drawing.COLOURS if c != "black")
LEXICON = json.loads((Path(__file__).with_name("lexicon.json")).read_text(encoding="utf-8"))
KNOWN_WORDS = tuple(sorted({*LEXICON["nouns"], *LEXICON["adjectives"], *LEXICON["verbs"], *LEXICON["places"]}))
SYLLABLES = ("ka", "lo", "mi", "ren", "tu", "vo", "sa", "dri", "ne", "po", "zel", "qua", "bri", "mon", "fa", "gu")
HATEMEMES_CONCEPTS = 6  # image concepts and text concepts each


@dataclass(frozen=True)
class SyntheticConfig:
    """One synthetic dataset: its layout, world seed, split sizes and noise."""

    layout: str = "food101"
    seed: int = 0
    train: int = 800
    dev: int = 200  # the validation split (`val` in the Food-101 layout)
    test: int = 400
    classes: int = 8  # food101 only
    cue_dropout: float = 0.1
    false_cue: float = 0.05
    novel_words: float = 0.5
    label_noise: float = 0.02

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"synthetic layout must be one of {LAYOUTS}, got {self.layout!r}")
        for name in ("train", "dev", "test"):
            if getattr(self, name) < 1:
                raise ValueError(f"synthetic: split size {name} must be at least 1, got {getattr(self, name)}")
        if not 2 <= self.classes <= len(FOOD101_CLASSES):
            raise ValueError(f"synthetic: classes must be in [2, {len(FOOD101_CLASSES)}], got {self.classes}")
        for name in ("cue_dropout", "false_cue", "novel_words", "label_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"synthetic: {name} must be in [0, 1], got {getattr(self, name)}")

    def sizes(self) -> dict[str, int]:
        train, val, test = SPLITS[self.layout]
        return {train: self.train, val: self.dev, test: self.test}


@dataclass(frozen=True)
class Concept:
    """What stands for one label: a shape in a colour, cue words, and the modality that shows it."""

    shape: str
    colour: str
    words: tuple[str, ...]
    modality: str  # image, text or either


def _novel_word(rng: np.random.Generator) -> str:
    return "".join(SYLLABLES[int(i)] for i in rng.integers(len(SYLLABLES), size=int(rng.integers(2, 4))))


def world(cfg: SyntheticConfig, count: int) -> list[Concept]:
    """`count` concepts with distinct image cues and disjoint cue words, a pure function of the seed."""
    rng = np.random.default_rng([cfg.seed, 7])
    pairs = [(shape, colour) for shape in SHAPES for colour in COLOURS]
    order = rng.permutation(len(pairs))[:count]
    novel = sorted({_novel_word(rng) for _ in range(8 * count)})
    known = [str(w) for w in rng.permutation(KNOWN_WORDS)]
    novel = [str(w) for w in rng.permutation(novel)]
    modalities = [("image", "text", "either")[i % 3] for i in rng.permutation(count)]
    concepts = []
    for k in range(count):
        words = tuple(novel.pop() if rng.random() < cfg.novel_words else known.pop() for _ in range(2))
        concepts.append(Concept(*pairs[order[k]], words, modalities[k]))
    return concepts


def _pick(rng: np.random.Generator, items) -> str:
    return items[int(rng.integers(len(items)))]


def _filler(rng: np.random.Generator, words: int) -> list[str]:
    return [_pick(rng, KNOWN_WORDS) for _ in range(words)]


def _shown(rng: np.random.Generator, concept: Concept, present: bool, cfg: SyntheticConfig) -> tuple[bool, bool]:
    """(image shows the cue, text shows the cue) for a concept whose label is `present`."""
    if not present:
        return rng.random() < cfg.false_cue, rng.random() < cfg.false_cue
    keep = [rng.random() >= cfg.cue_dropout for _ in range(2)]
    if concept.modality == "image":
        return keep[0], False
    if concept.modality == "text":
        return False, keep[1]
    source = rng.choice(3)  # either: image only, text only, or both
    return source != 1 and keep[0], source != 0 and keep[1]


def _picture(rng: np.random.Generator, shown: list[Concept], all_concepts: list[Concept], fmt: str) -> bytes:
    image, _, _ = drawing.canvas(rng, dark=rng.random() < 0.3)
    cues = {(c.shape, c.colour) for c in all_concepts}
    for _ in range(int(rng.integers(1, 4))):  # distractors: shapes no concept uses
        while (pair := (_pick(rng, SHAPES), _pick(rng, COLOURS))) in cues:
            pass
        drawing.shape(rng, image, pair[0], drawing.COLOURS[pair[1]], int(rng.integers(10, 20)))
    for concept in shown:
        for _ in range(int(rng.integers(2, 4))):
            drawing.shape(rng, image, concept.shape, drawing.COLOURS[concept.colour], int(rng.integers(18, 30)))
    if fmt == "JPEG":
        return drawing.to_jpeg(rng, image, 85)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _sentence(rng: np.random.Generator, concept: Concept | None) -> str:
    words = _filler(rng, int(rng.integers(3, 6)))
    if concept is not None:
        words.insert(int(rng.integers(len(words) + 1)), _pick(rng, concept.words))
    return " ".join(words) + " ."


def _rng(cfg: SyntheticConfig, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, SPLIT_CODES[split], index])


def _mmimdb_sample(cfg: SyntheticConfig, concepts: list[Concept], split: str, index: int) -> tuple[dict, bytes]:
    rng = _rng(cfg, split, index)
    priors = np.linspace(0.30, 0.03, len(MMIMDB_GENRES))
    labels = rng.random(len(MMIMDB_GENRES)) < priors
    if not labels.any():
        labels[int(rng.integers(len(labels)))] = True
    in_image, in_text = [], []
    for concept, present in zip(concepts, labels, strict=True):
        image_cue, text_cue = _shown(rng, concept, bool(present), cfg)
        in_image += [concept] if image_cue else []
        in_text += [concept] if text_cue else []
    sentences = [_sentence(rng, c) for c in in_text[:5]] + [
        _sentence(rng, None) for _ in range(int(rng.integers(1, 3)))
    ]
    sentences = [sentences[i] for i in rng.permutation(len(sentences))]
    image = _picture(rng, in_image, concepts, "JPEG")
    noisy = labels ^ (rng.random(len(labels)) < cfg.label_noise)
    genres = [g for g, on in zip(MMIMDB_GENRES, noisy, strict=True) if on] or [MMIMDB_GENRES[int(labels.argmax())]]
    sample_id = f"{SPLIT_CODES[split]}{index:06d}"
    return {"id": sample_id, "title": f"Synthetic {sample_id}", "plot": [" ".join(sentences)], "genres": genres}, image


def _food_sample(cfg: SyntheticConfig, concepts: list[Concept], split: str, index: int) -> tuple[int, str, bytes]:
    rng = _rng(cfg, split, index)
    label = int(rng.integers(len(concepts)))
    image_cue, text_cue = _shown(rng, concepts[label], True, cfg)
    decoy = concepts[int(rng.integers(len(concepts)))]
    in_image = [concepts[label]] if image_cue else []
    in_image += [decoy] if rng.random() < cfg.false_cue else []
    title_concept = concepts[label] if text_cue else (decoy if rng.random() < cfg.false_cue else None)
    title = _sentence(rng, title_concept).rstrip(" .")
    image = _picture(rng, in_image, concepts, "JPEG")
    if rng.random() < cfg.label_noise:
        label = int(rng.integers(len(concepts)))
    return label, title, image


def _hatememes_table(cfg: SyntheticConfig) -> np.ndarray:
    """(image concept, text concept) -> hateful: each modality's concept shifts the odds a little, the pair
    decides (about 36% hateful, as in Hateful Memes)."""
    rng = np.random.default_rng([cfg.seed, 8])
    score = (
        0.6 * rng.normal(size=(HATEMEMES_CONCEPTS, 1))
        + 0.6 * rng.normal(size=(1, HATEMEMES_CONCEPTS))
        + rng.normal(size=(HATEMEMES_CONCEPTS, HATEMEMES_CONCEPTS))
    )
    return score > np.quantile(score, 0.64)


def _meme_sample(cfg: SyntheticConfig, concepts: list[Concept], split: str, index: int) -> tuple[int, str, bytes]:
    rng = _rng(cfg, split, index)
    image_concept, text_concept = (int(c) for c in rng.integers(HATEMEMES_CONCEPTS, size=2))
    label = int(_hatememes_table(cfg)[image_concept, text_concept])
    image_part, text_part = concepts[:HATEMEMES_CONCEPTS], concepts[HATEMEMES_CONCEPTS:]
    shown = [image_part[image_concept]] if rng.random() >= cfg.cue_dropout else []
    text = _sentence(rng, text_part[text_concept] if rng.random() >= cfg.cue_dropout else None).rstrip(" .")
    image = _picture(rng, shown, concepts, "PNG")
    if rng.random() < cfg.label_noise:
        label = 1 - label
    return label, text, image


def generate_synthetic(out_dir: str | Path, cfg: SyntheticConfig) -> dict[str, int]:
    """Write a synthetic dataset in `cfg.layout`'s raw layout to `out_dir` (replaced atomically)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out_dir)
    try:
        _WRITERS[cfg.layout](tmp, cfg)
        about = {"generator": "mmp synthetic", **asdict(cfg)}
        (tmp / "generator.json").write_text(json.dumps(about, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cfg.sizes()


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")


def _write_mmimdb(root: Path, cfg: SyntheticConfig) -> None:
    concepts = world(cfg, len(MMIMDB_GENRES))
    (root / "images").mkdir()
    ids = {}
    for split, size in cfg.sizes().items():
        ids[split] = []
        for index in range(size):
            record, image = _mmimdb_sample(cfg, concepts, split, index)
            _write_json(root / "labels" / f"{record['id']}.json", record)
            (root / "images" / f"{record['id']}.jpeg").write_bytes(image)
            ids[split].append(record["id"])
    _write_json(root / "split.json", ids)


def _write_food101(root: Path, cfg: SyntheticConfig) -> None:
    rng = np.random.default_rng([cfg.seed, 9])
    classes = sorted(FOOD101_CLASSES[int(i)] for i in rng.permutation(len(FOOD101_CLASSES))[: cfg.classes])
    concepts = world(cfg, cfg.classes)
    _write_json(root / "class_idx.json", {name: i for i, name in enumerate(classes)})
    titles, entries = {}, {}
    for split, size in cfg.sizes().items():
        entries[split] = []
        folder = "test" if split == "test" else "train"
        for index in range(size):
            label, title, image = _food_sample(cfg, concepts, split, index)
            name = f"{classes[label]}_{SPLIT_CODES[split]}{index:06d}.jpg"
            path = root / "images" / folder / classes[label] / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image)
            titles[name] = title
            entries[split].append(name)
    _write_json(root / "text.json", titles)
    _write_json(root / "split.json", entries)


def _write_hatememes(root: Path, cfg: SyntheticConfig) -> None:
    concepts = world(cfg, 2 * HATEMEMES_CONCEPTS)
    (root / "img").mkdir()
    files = {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test_seen.jsonl"}
    for split, size in cfg.sizes().items():
        lines = []
        for index in range(size):
            label, text, image = _meme_sample(cfg, concepts, split, index)
            sample_id = SPLIT_CODES[split] * 100000 + index
            (root / "img" / f"{sample_id}.png").write_bytes(image)
            lines.append(json.dumps({"id": sample_id, "img": f"img/{sample_id}.png", "label": label, "text": text}))
        (root / files[split]).write_text("\n".join(lines) + "\n", encoding="utf-8")


_WRITERS = {"mmimdb": _write_mmimdb, "food101": _write_food101, "hatememes": _write_hatememes}
