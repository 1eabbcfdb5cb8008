"""The embedded dataset: a synthetic image + text multi-label dataset in the MM-IMDb raw layout.

Eight genres; which modality carries each one (so that complete samples beat either modality alone):

| genre | image cue | text cue |
|---|---|---|
| Horror | dark background | - |
| Western | horizontal stripes | - |
| Animation | a big yellow circle | - |
| Romance | - | love words |
| Comedy | - | comedy words |
| Sci-Fi | - | science-fiction words |
| Action | red triangles | action words: each sample shows one or both cues (either modality suffices, each misses some) |
| Mystery | checkerboard patch | secret words: both cues together; each also appears alone as a decoy (needs both) |

Noise keeps every model below 100%: a cue is absent for some samples with the genre and present for some
without it, and 2% of the genre labels are flipped. Images are 96-144 x 96-128 px JPEGs with random pastel
backgrounds, decoy shapes and pixel noise; plots are one or two strings of short sentences from a ~300-word
vocabulary (at most ~40 BERT tokens).

Every sample is a pure function of (seed, split, index): changing a split's size never changes other samples.
Ids are 7 digits, the first one the split (1 train, 2 dev, 3 test).
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mmp_core.data import drawing
from mmp_core.data.datasets import EMBEDDED_GENRES
from mmp_core.fileio import replace_dir, staging_dir

SPLIT_CODES = {"train": 1, "dev": 2, "test": 3}

# The word lists live in lexicon.json (shared with the captioned scenes that pretrain the embedded backbone).
LEXICON = json.loads((Path(__file__).with_name("lexicon.json")).read_text(encoding="utf-8"))
NAMES, VERBS, ADJECTIVES, NOUNS, PLACES = (LEXICON[k] for k in ("names", "verbs", "adjectives", "nouns", "places"))
CUES: dict[str, list[str]] = LEXICON["cues"]
CUE_TEMPLATES: tuple[str, ...] = tuple(LEXICON["cue_templates"])
NEUTRAL_TEMPLATES: tuple[str, ...] = tuple(LEXICON["neutral_templates"])

IMAGE_ONLY = ("Horror", "Western", "Animation")
TEXT_ONLY = ("Romance", "Comedy", "Sci-Fi")


@dataclass(frozen=True)
class GenerateConfig:
    """Sizes and noise of the embedded dataset."""

    train: int = 1500
    dev: int = 300
    test: int = 600
    seed: int = 0
    label_prior: float = 0.3  # probability of each genre
    cue_dropout: float = 0.08  # a genre's cue is absent
    false_cue: float = 0.04  # a cue appears without its genre
    mystery_decoy: float = 0.4  # one Mystery cue alone (per modality), without the genre
    label_noise: float = 0.02  # each genre label flipped
    natural_missing: float = 0.0  # samples without image file (half) or with an empty plot (half)
    jpeg_quality: int = 85

    def __post_init__(self) -> None:
        for name in ("train", "dev", "test"):
            if getattr(self, name) < 1:
                raise ValueError(f"generate: split size {name} must be at least 1, got {getattr(self, name)}")
        for name in ("label_prior", "cue_dropout", "false_cue", "mystery_decoy", "label_noise", "natural_missing"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"generate: {name} must be in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"generate: jpeg_quality must be in [1, 100], got {self.jpeg_quality}")

    def sizes(self) -> dict[str, int]:
        return {"train": self.train, "dev": self.dev, "test": self.test}


def sample_id(split: str, index: int) -> str:
    return f"{SPLIT_CODES[split]}{index:06d}"


def _cues(rng: np.random.Generator, labels: dict[str, bool], cfg: GenerateConfig) -> tuple[set[str], set[str]]:
    """Which genre cues the image and the text show."""
    image, text = set(), set()

    def noisy(present: bool) -> bool:
        return rng.random() >= cfg.cue_dropout if present else rng.random() < cfg.false_cue

    for genre in IMAGE_ONLY:
        if noisy(labels[genre]):
            image.add(genre)
    for genre in TEXT_ONLY:
        if noisy(labels[genre]):
            text.add(genre)
    if labels["Action"]:
        source = rng.choice(3, p=[0.35, 0.35, 0.30])  # image only, text only, both
        if source in (0, 2):
            image.add("Action")
        if source in (1, 2):
            text.add("Action")
    else:
        if rng.random() < cfg.false_cue:
            image.add("Action")
        if rng.random() < cfg.false_cue:
            text.add("Action")
    if labels["Mystery"]:
        if rng.random() >= cfg.cue_dropout / 2:
            image.add("Mystery")
        if rng.random() >= cfg.cue_dropout / 2:
            text.add("Mystery")
    else:
        decoy = rng.choice(3, p=[1 - 2 * cfg.mystery_decoy, cfg.mystery_decoy, cfg.mystery_decoy])
        if decoy == 1:
            image.add("Mystery")
        elif decoy == 2:
            text.add("Mystery")
    return image, text


def _pick(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _plot(rng: np.random.Generator, cues: set[str]) -> list[str]:
    def fill(template: str, cue_words: list[str] | None = None) -> str:
        values = {
            "name": _pick(rng, NAMES),
            "name2": _pick(rng, NAMES),
            "verb": _pick(rng, VERBS),
            "adj": _pick(rng, ADJECTIVES),
            "noun": _pick(rng, NOUNS),
            "noun2": _pick(rng, NOUNS),
            "place": _pick(rng, PLACES),
        }
        if cue_words:
            values["cue"] = _pick(rng, cue_words)
            values["cue2"] = _pick(rng, cue_words)
        return template.format(**values)

    neutral = int(rng.integers(1, 3)) if len(cues) < 2 else 1  # keeps plots within ~40 tokens
    sentences = [fill(_pick(rng, list(NEUTRAL_TEMPLATES))) for _ in range(neutral)]
    for genre in sorted(cues):
        sentences.append(fill(_pick(rng, list(CUE_TEMPLATES)), CUES[genre]))
    order = rng.permutation(len(sentences))
    sentences = [sentences[i] for i in order]
    if len(sentences) > 2 and rng.random() < 0.5:  # MM-IMDb plots are lists: sometimes two strings
        cut = int(rng.integers(1, len(sentences)))
        return [" ".join(sentences[:cut]), " ".join(sentences[cut:])]
    return [" ".join(sentences)]


def _image(rng: np.random.Generator, cues: set[str], quality: int) -> bytes:
    image, background, value = drawing.canvas(rng, dark="Horror" in cues)
    if "Western" in cues:
        drawing.stripes(rng, image, background, value)
    if "Animation" in cues:
        drawing.sun(rng, image)
    drawing.decoys(rng, image)
    if "Action" in cues:
        drawing.triangles(rng, image)
    if "Mystery" in cues:
        drawing.checkerboard(rng, image)
    return drawing.to_jpeg(rng, image, quality)


@dataclass(frozen=True)
class Sample:
    """One generated sample and the latent cues behind it (which genres its image and its text show)."""

    record: dict  # labels/<id>.json content
    image: bytes | None
    image_cues: frozenset[str]
    text_cues: frozenset[str]


def make_sample(cfg: GenerateConfig, split: str, index: int) -> tuple[dict, bytes | None]:
    """(labels/<id>.json content, image bytes or None) of one sample."""
    sample = draw_sample(cfg, split, index)
    return sample.record, sample.image


def draw_sample(cfg: GenerateConfig, split: str, index: int) -> Sample:
    """One sample with its latent cues; every value is drawn from one generator seeded by (seed, split, index)."""
    rng = np.random.default_rng([cfg.seed, SPLIT_CODES[split], index])
    labels = {genre: bool(rng.random() < cfg.label_prior) for genre in EMBEDDED_GENRES}
    if not any(labels.values()):
        labels[EMBEDDED_GENRES[int(rng.integers(len(EMBEDDED_GENRES)))]] = True
    image_cues, text_cues = _cues(rng, labels, cfg)
    plot = _plot(rng, text_cues)
    image = _image(rng, image_cues, cfg.jpeg_quality)
    observed = [g for g in EMBEDDED_GENRES if labels[g] != (rng.random() < cfg.label_noise)]
    if rng.random() < cfg.natural_missing:
        if rng.random() < 0.5:
            image = None
        else:
            plot = []
    record = {
        "id": sample_id(split, index),
        "title": f"Synthetic film {sample_id(split, index)}",
        "plot": plot,
        "genres": observed,
    }
    return Sample(record, image, frozenset(image_cues), frozenset(text_cues))


def generate_embedded(out_dir: str | Path, cfg: GenerateConfig = GenerateConfig(), workers: int = 4) -> dict:
    """Write the embedded dataset to `out_dir` (replaced atomically). Returns {split: count}."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out_dir)
    try:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        jobs = [(split, i) for split, n in cfg.sizes().items() for i in range(n)]

        def write(job: tuple[str, int]) -> None:
            record, image = make_sample(cfg, *job)
            (tmp / "labels" / f"{record['id']}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
            if image is not None:
                (tmp / "images" / f"{record['id']}.jpeg").write_bytes(image)

        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(write, jobs))
        else:
            for job in jobs:
                write(job)
        split = {name: [sample_id(name, i) for i in range(n)] for name, n in cfg.sizes().items()}
        (tmp / "split.json").write_text(json.dumps(split) + "\n", encoding="utf-8")
        (tmp / "generator.json").write_text(
            json.dumps({"generator": "mmp embedded", "genres": list(EMBEDDED_GENRES), **asdict(cfg)}, indent=2) + "\n",
            encoding="utf-8",
        )
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cfg.sizes()
