"""Captioned scenes: the generated image-text corpus that pretrains the embedded backbone.

The embedded benchmark (`generate.py`) ties *genres* to cues, and most cues live in one modality only, so its image
and its plot are nearly independent: no model can learn image-text matching from it. This corpus is the stand-in
for the web's captioned images instead: every picture is a composition of visual concepts, and its text *names what
is drawn*, as a caption and as short story sentences about the emblems in it:

| concept | drawn as | said as |
|---|---|---|
| background | dark or light pastel | "a dark / bright picture" |
| stripes | horizontal bands | "stripes" |
| sun | a big yellow disc | "a big yellow circle" |
| small shapes | square, circle, diamond, cross, star in 9 colours | "a small blue square", ... |
| romance | pink or red hearts | "hearts" and a sentence with a love word |
| comedy | a smiling face | "a smiling face" and a sentence with a comedy word |
| sci-fi | a ringed planet | "a ringed planet" and a sentence with a science-fiction word |
| action | red triangles | "red triangles" and a sentence with an action word |
| mystery | a checkerboard patch | "a checkerboard" and a sentence with a mystery word |

Pictures use the benchmark's drawing primitives and word lists (`drawing.py`, `lexicon.json`), as a real backbone's
pretraining data shares the visual and verbal vocabulary of its downstream tasks; it never uses a benchmark sample
or label. Seeds live in their own namespace (`[seed, 100 + part, index]`; the benchmark uses `[seed, 1-3, index]`).

Each scene also has *hard negative* texts for image-text matching: the caption with one fact changed (a colour, a
shape, the background, a topic that is not drawn), so that matching needs the content, not the style.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from mmp_core.data import drawing

LEXICON = json.loads((Path(__file__).with_name("lexicon.json")).read_text(encoding="utf-8"))
TOPICS = ("Romance", "Comedy", "Sci-Fi", "Action", "Mystery")
EMBLEM_PHRASES = {
    "Romance": "pink hearts",
    "Comedy": "a smiling face",
    "Sci-Fi": "a ringed planet",
    "Action": "red triangles",
    "Mystery": "a checkerboard",
}
SMALL_SHAPES = ("square", "circle", "diamond", "cross", "star")
SMALL_COLOURS = tuple(c for c in drawing.COLOURS if c != "black")
CAPTION_OPENINGS = ("a {bg} picture with {items} .", "this {bg} poster shows {items} .", "a {bg} image of {items} .")
BACKGROUND_WORDS = {True: "dark", False: "bright"}
MAX_WORDS = 38  # 40 text positions minus [CLS] and [SEP]; every lexicon word is one token
# A scene's own text keeps room for what a hard negative adds (at most one story sentence or caption item).
NEGATIVE_ROOM = 8
# The words a caption uses beyond the lexicon's plots: they name what is drawn (whole-word masking targets).
CAPTION_WORDS = (
    "a",
    "picture",
    "poster",
    "image",
    "this",
    "shows",
    "of",
    "with",
    "and",
    "dark",
    "bright",
    "stripes",
    "big",
    "yellow",
    "circle",
    "small",
    "pink",
    "hearts",
    "smiling",
    "face",
    "ringed",
    "planet",
    "red",
    "triangles",
    "checkerboard",
    "nothing",
    "else",
    ",",
    *drawing.COLOURS,
    *SMALL_SHAPES,
)
CONCEPT_WORDS = frozenset(
    {"dark", "bright", "stripes", "yellow", "circle", "hearts", "smiling", "face", "ringed", "planet"}
    | {"red", "triangles", "checkerboard", "pink", *drawing.COLOURS, *SMALL_SHAPES}
    | {word for topic in TOPICS for word in LEXICON["cues"][topic]}
)


@dataclass(frozen=True)
class Scene:
    """What a picture shows. `objects` are the small shapes as (colour, shape)."""

    dark: bool
    stripes: bool
    sun: bool
    topics: tuple[str, ...]
    objects: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Mentions:
    """What a text says about a scene; rendering it is deterministic given `style_seed`."""

    dark: bool
    stripes: bool
    sun: bool
    topics: tuple[str, ...]  # emblems named in the caption
    topic_sentences: tuple[str, ...]  # topics that get a story sentence
    objects: tuple[tuple[str, str], ...]
    neutral: bool
    style_seed: tuple[int, ...] = field(default=())


@dataclass(frozen=True)
class ScenesConfig:
    """Probabilities of the scene world."""

    seed: int = 0
    dark: float = 0.3
    stripes: float = 0.3
    sun: float = 0.3
    topic: float = 0.25  # each topic's emblem, independently
    mention: float = 0.85  # a drawn concept is named in the text
    neutral: float = 0.5  # a plot sentence with no concept
    jpeg_quality: int = 85


def _rng(cfg: ScenesConfig, part: int, index: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, 100 + part, index])


def make_scene(cfg: ScenesConfig, part: int, index: int) -> tuple[Scene, Mentions, bytes]:
    """Scene `index` of corpus part `part` (0 pretraining, 1 held out): what it shows, what its text says, and
    the JPEG. A pure function of (cfg, part, index)."""
    rng = _rng(cfg, part, index)
    topics = tuple(t for t in TOPICS if rng.random() < cfg.topic)
    objects = tuple(
        (SMALL_COLOURS[int(rng.integers(len(SMALL_COLOURS)))], SMALL_SHAPES[int(rng.integers(len(SMALL_SHAPES)))])
        for _ in range(int(rng.integers(1, 4)))
    )
    scene = Scene(
        dark=bool(rng.random() < cfg.dark),
        stripes=bool(rng.random() < cfg.stripes),
        sun=bool(rng.random() < cfg.sun),
        topics=topics,
        objects=objects,
    )
    image = _draw(rng, scene, cfg.jpeg_quality)
    said = lambda present: present and rng.random() < cfg.mention  # noqa: E731
    mentions = fit(
        Mentions(
            dark=scene.dark,
            stripes=said(scene.stripes),
            sun=said(scene.sun),
            topics=tuple(t for t in topics if said(True)),
            topic_sentences=tuple(t for t in topics if said(True)),
            objects=tuple(o for o in objects if said(True)),
            neutral=bool(rng.random() < cfg.neutral),
            style_seed=(cfg.seed, 100 + part, index, 1),
        ),
        MAX_WORDS - NEGATIVE_ROOM,
    )
    return scene, mentions, image


def _draw(rng: np.random.Generator, scene: Scene, quality: int) -> bytes:
    image, background, value = drawing.canvas(rng, dark=scene.dark)
    if scene.stripes:
        drawing.stripes(rng, image, background, value)
    if scene.sun:
        drawing.sun(rng, image)
    if "Romance" in scene.topics:
        for _ in range(int(rng.integers(1, 3))):
            drawing.shape(rng, image, "heart", drawing.COLOURS["pink"], int(rng.integers(16, 25)))
    if "Comedy" in scene.topics:
        drawing.face(rng, image)
    if "Sci-Fi" in scene.topics:
        drawing.shape(rng, image, "ring", drawing.COLOURS[("cyan", "purple", "white")[int(rng.integers(3))]], 30)
    if "Action" in scene.topics:
        drawing.triangles(rng, image)
    if "Mystery" in scene.topics:
        drawing.checkerboard(rng, image)
    for colour, kind in scene.objects:  # last, so that nothing the caption names is hidden
        drawing.shape(rng, image, kind, drawing.COLOURS[colour], int(rng.integers(12, 21)))
    return drawing.to_jpeg(rng, image, quality)


def render_text(mentions: Mentions) -> str:
    """The text of a scene: a caption, story sentences about its emblems, maybe a plot sentence, in an order
    drawn from `style_seed`. Changing one mention changes only its own words."""
    rng = np.random.default_rng(list(mentions.style_seed))
    # Every random choice is drawn up front, in a fixed order, whatever the mentions are.
    opening = CAPTION_OPENINGS[int(rng.integers(len(CAPTION_OPENINGS)))]
    story = {topic: _cue_sentence(rng, LEXICON["cues"][topic]) for topic in TOPICS}
    neutral = _neutral_sentence(rng)
    rank = rng.permutation(len(TOPICS) + 2)  # caption, one story sentence per topic, plot sentence
    items = (
        (["stripes"] if mentions.stripes else [])
        + (["a big yellow circle"] if mentions.sun else [])
        + [EMBLEM_PHRASES[t] for t in mentions.topics]
        + [f"a small {colour} {kind}" for colour, kind in mentions.objects]
    )
    caption = opening.format(bg=BACKGROUND_WORDS[mentions.dark], items=_join(items) if items else "nothing else")
    sentences = {0: caption, **{1 + TOPICS.index(t): story[t] for t in mentions.topic_sentences}}
    if mentions.neutral:
        sentences[len(TOPICS) + 1] = neutral
    return " ".join(sentences[key] for key in sorted(sentences, key=lambda key: rank[key]))


def fit(mentions: Mentions, max_words: int) -> Mentions:
    """Drop the plot sentence, then named small shapes, then story sentences, until the text has at most
    `max_words` words."""
    while len(render_text(mentions).split()) > max_words:
        if mentions.neutral:
            mentions = replace(mentions, neutral=False)
        elif mentions.objects:
            mentions = replace(mentions, objects=mentions.objects[:-1])
        elif mentions.topic_sentences:
            mentions = replace(mentions, topic_sentences=mentions.topic_sentences[:-1])
        else:
            mentions = replace(mentions, topics=mentions.topics[:-1])
    return mentions


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else " , ".join(items[:-1]) + " and " + items[-1]


def _pick(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _cue_sentence(rng: np.random.Generator, cue_words: list[str]) -> str:
    template = LEXICON["cue_templates"][int(rng.integers(len(LEXICON["cue_templates"])))]
    return template.format(
        name=_pick(rng, LEXICON["names"]),
        verb=_pick(rng, LEXICON["verbs"]),
        noun=_pick(rng, LEXICON["nouns"]),
        place=_pick(rng, LEXICON["places"]),
        cue=_pick(rng, cue_words),
        cue2=_pick(rng, cue_words),
    )


def _neutral_sentence(rng: np.random.Generator) -> str:
    template = LEXICON["neutral_templates"][int(rng.integers(len(LEXICON["neutral_templates"])))]
    return template.format(
        name=_pick(rng, LEXICON["names"]),
        name2=_pick(rng, LEXICON["names"]),
        verb=_pick(rng, LEXICON["verbs"]),
        adj=_pick(rng, LEXICON["adjectives"]),
        noun=_pick(rng, LEXICON["nouns"]),
        noun2=_pick(rng, LEXICON["nouns"]),
        place=_pick(rng, LEXICON["places"]),
    )


def hard_negative(scene: Scene, mentions: Mentions, rng: np.random.Generator) -> Mentions:
    """The mentions with one fact made false for `scene`: the background flipped, a thing that is not drawn
    claimed (stripes, the sun, a topic's emblem or story), or a named small shape given another colour or shape."""
    absent_topics = [t for t in TOPICS if t not in scene.topics]
    changes = ["background"]
    if not scene.stripes:
        changes.append("stripes")
    if not scene.sun:
        changes.append("sun")
    if absent_topics:
        changes += ["topic", "story"]
    if mentions.objects:
        changes += ["colour", "shape"]
    change = changes[int(rng.integers(len(changes)))]
    if change == "background":
        return replace(mentions, dark=not mentions.dark)
    if change == "stripes":
        return replace(mentions, stripes=True)
    if change == "sun":
        return replace(mentions, sun=True)
    if change in ("topic", "story"):
        topic = absent_topics[int(rng.integers(len(absent_topics)))]
        key = "topics" if change == "topic" else "topic_sentences"
        named = list(getattr(mentions, key))
        if named and rng.random() < 0.5:  # swap a named topic for the absent one, else add it
            named[int(rng.integers(len(named)))] = topic
        else:
            named.append(topic)
        return replace(mentions, **{key: tuple(named)})
    objects = list(mentions.objects)
    slot = int(rng.integers(len(objects)))
    colour, kind = objects[slot]
    drawn = set(scene.objects)
    if change == "colour":
        options = [c for c in SMALL_COLOURS if (c, kind) not in drawn]
        objects[slot] = (options[int(rng.integers(len(options)))], kind)
    else:
        options = [s for s in SMALL_SHAPES if (colour, s) not in drawn]
        objects[slot] = (colour, options[int(rng.integers(len(options)))])
    return replace(mentions, objects=tuple(objects))


def vocabulary() -> list[str]:
    """Every word the generated texts use (benchmark plots and scene captions), sorted: the shipped backbone's
    vocabulary after the special tokens."""
    words = set(CAPTION_WORDS) | {"."}
    for key in ("names", "verbs", "adjectives", "nouns"):
        words.update(LEXICON[key])
    for place in LEXICON["places"]:
        words.update(place.split())
    for cue_words in LEXICON["cues"].values():
        words.update(cue_words)
    for template in (*LEXICON["cue_templates"], *LEXICON["neutral_templates"]):
        words.update(w for w in template.split() if not w.startswith("{"))
    return sorted(words)
