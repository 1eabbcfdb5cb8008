"""Generic captioned pictures: the stand-in for COCO that pretrains a backbone faithful to ViLT's premise.

ViLT was pretrained on generic captions of everyday pictures (COCO, Visual Genome), complete pairs only, with image-
text matching and whole-word masked language modelling; its downstream tasks' words (a genre's cue words) are in
its vocabulary but hardly ever in its corpus. This corpus plays that part for the embedded benchmark: its pictures
are compositions of *generic* content drawn with the benchmark's primitives (`drawing.py`), and its caption says
what is drawn, as a COCO caption does:

| content | drawn as | said as |
|---|---|---|
| background | dark or light pastel (`drawing.canvas`) | "a dark / bright picture of ..." |
| stripes | horizontal bands (`drawing.stripes`) | "with stripes" |
| sun | a big yellow disc (`drawing.sun`) | "with a big yellow sun" |
| groups | 1-3 groups of 1-4 small squares, circles, diamonds, crosses, stars or triangles in 9 colours | "two blue squares , one red triangle and four white stars" |
| place, action | nothing (words a picture cannot show, as in real captions) | "near the river", "a child paints ..." |

A caption never uses a word of lexicon.json's `cues` (the benchmark's genre text cues), and a picture never shows
the benchmark's genre emblems that are not generic content (hearts, a smiling face, a ringed planet, a
checkerboard). Generic content that the benchmark's genres also use (a dark background, stripes, the sun,
triangles, here in every colour) stays: real captioned pictures show things that correlate with genres too.

Each caption has *hard negatives* for image-text matching: the caption with one content fact changed (the
background, stripes or the sun there or not, a group's count, colour or shape). Seeds live in their own namespace
(`[seed, 200 + part, index]`; the scenes use 100 + part, the benchmark 1-3).

The tokenizer vocabulary (`vocabulary`) is the shipped backbone's (`backbones/embedded/vocab.txt`, every benchmark
word keeps its id), then the few caption words it lacks (number words and plurals): the cue words are in it but
never in this corpus's text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmp_core.data import drawing

LEXICON = json.loads((Path(__file__).with_name("lexicon.json")).read_text(encoding="utf-8"))
KINDS = ("square", "circle", "diamond", "cross", "star", "triangle")
PLURALS = {kind: kind + ("es" if kind == "cross" else "s") for kind in KINDS}
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
# The small shapes' colours: the drawing palette without black (unseen on a dark background), plus red.
PALETTE = {**{name: rgb for name, rgb in drawing.COLOURS.items() if name != "black"}, "red": (215, 30, 30)}
COLOURS = tuple(PALETTE)
BACKGROUND_WORDS = {True: "dark", False: "bright"}
OPENINGS = ("a {bg} picture of {items}", "a {bg} image of {items}", "this {bg} poster shows {items}")
# Lexicon verbs that can take a picture as object ("a child paints a bright picture of ...").
ACTION_VERBS = ("finds", "paints", "watches", "buys", "sells", "carries", "remembers", "discovers", "loses", "repairs")
# Lexicon nouns that are people, the subjects of an action ("a child", "the old farmer", or a name).
PEOPLE = ("friend", "brother", "sister", "father", "mother", "doctor", "teacher", "farmer", "child", "student")
PEOPLE += ("neighbor", "captain", "king", "queen")
SUBJECTS = ("a {noun}", "the {adj} {noun}", "{name}")
CELL = 24  # shapes sit in distinct cells of this many px, so that every drawn shape can be counted
MAX_WORDS = 38  # 40 text positions minus [CLS] and [SEP]; every caption word is one token
CHANGES = ("background", "stripes", "sun", "count", "colour", "shape")
# Words the captions use that the shipped backbone's vocabulary (scenes.vocabulary) lacks, appended after it.
NEW_WORDS = ("two", "three", "four", "squares", "circles", "diamonds", "stars", "triangle", "sun")

Group = tuple[int, str, str]  # (count, colour, kind)


@dataclass(frozen=True)
class Picture:
    """What a picture shows. `drawn` lists the primitives its drawing called, in order (one name per shape)."""

    dark: bool
    stripes: bool
    sun: bool
    groups: tuple[Group, ...]  # no two groups share colour and kind
    drawn: tuple[str, ...] = ()


@dataclass(frozen=True)
class Caption:
    """What a caption says; rendering it is deterministic given `style_seed`."""

    dark: bool
    stripes: bool
    sun: bool
    groups: tuple[Group, ...]
    place: str | None  # "near the river", "in the old town"
    actor: str | None  # "a child paints"
    style_seed: tuple[int, ...] = ()


@dataclass(frozen=True)
class CaptionsConfig:
    """Probabilities of the generic picture world."""

    seed: int = 0
    dark: float = 0.3
    stripes: float = 0.3
    sun: float = 0.3
    place: float = 0.5
    actor: float = 0.3
    jpeg_quality: int = 85


def _pick(rng: np.random.Generator, words) -> str:
    return words[int(rng.integers(len(words)))]


def make_picture(cfg: CaptionsConfig, part: int, index: int) -> tuple[Picture, Caption, bytes]:
    """Picture `index` of corpus part `part` (0 pretraining, 1 held out): what it shows, its caption and the JPEG.
    A pure function of (cfg, part, index)."""
    rng = np.random.default_rng([cfg.seed, 200 + part, index])
    groups: list[Group] = []
    for _ in range(int(rng.integers(1, 4))):
        count, colour, kind = int(rng.integers(1, 5)), _pick(rng, COLOURS), _pick(rng, KINDS)
        if all((colour, kind) != (c, k) for _, c, k in groups):
            groups.append((count, colour, kind))
    picture = Picture(
        dark=bool(rng.random() < cfg.dark),
        stripes=bool(rng.random() < cfg.stripes),
        sun=bool(rng.random() < cfg.sun),
        groups=tuple(groups),
    )
    image, drawn = _draw(rng, picture, cfg.jpeg_quality)
    place = None
    if rng.random() < cfg.place:
        near = rng.random() < 0.5
        place = f"near the {_pick(rng, LEXICON['nouns'])}" if near else f"in {_pick(rng, LEXICON['places'])}"
    actor = None
    if rng.random() < cfg.actor:
        subject = _pick(rng, SUBJECTS).format(
            noun=_pick(rng, PEOPLE), adj=_pick(rng, LEXICON["adjectives"]), name=_pick(rng, LEXICON["names"])
        )
        actor = f"{subject} {_pick(rng, ACTION_VERBS)}"
    caption = Caption(
        dark=picture.dark,
        stripes=picture.stripes,
        sun=picture.sun,
        groups=picture.groups,
        place=place,
        actor=actor,
        style_seed=(cfg.seed, 200 + part, index, 1),
    )
    return replace(picture, drawn=drawn), caption, image


def _draw(rng: np.random.Generator, picture: Picture, quality: int) -> tuple[bytes, tuple[str, ...]]:
    image, background, value = drawing.canvas(rng, dark=picture.dark)
    drawn = ["canvas"]
    if picture.stripes:
        drawing.stripes(rng, image, background, value)
        drawn.append("stripes")
    if picture.sun:
        drawing.sun(rng, image)
        drawn.append("sun")
    width, height = image.size
    cells = rng.permutation((width // CELL) * (height // CELL))  # at least 16 cells; at most 12 shapes
    shapes = [(colour, kind) for count, colour, kind in picture.groups for _ in range(count)]
    for (colour, kind), cell in zip(shapes, cells, strict=False):
        size = int(rng.integers(12, 19))
        x = int(cell % (width // CELL)) * CELL + int(rng.integers(0, CELL - size))
        y = int(cell // (width // CELL)) * CELL + int(rng.integers(0, CELL - size))
        _shape_at(rng, image, kind, PALETTE[colour], size, x, y)
        drawn.append(kind)
    return drawing.to_jpeg(rng, image, quality), tuple(drawn)


def _shape_at(rng, image: Image.Image, kind: str, colour: tuple[int, int, int], size: int, x: int, y: int) -> None:
    """One small shape with its top-left corner at (x, y): `drawing.shape` on a mask the shape's size (so that
    it lands at the mask's origin), pasted in `colour`; a triangle as `drawing.triangles` draws one."""
    if kind == "triangle":
        ImageDraw.Draw(image).polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=colour)
        return
    mask = Image.new("L", (size + 1, size + 1), 0)
    drawing.shape(rng, mask, kind, 255, size)
    image.paste(colour, (x, y, x + size + 1, y + size + 1), mask)


def group_phrase(group: Group) -> str:
    count, colour, kind = group
    return f"{COUNT_WORDS[count]} {colour} {kind if count == 1 else PLURALS[kind]}"


def render_caption(caption: Caption) -> str:
    """The caption's text, its wording drawn from `style_seed`: changing one fact changes only its own words."""
    rng = np.random.default_rng(list(caption.style_seed))
    # Every random choice is drawn up front, in a fixed order, whatever the caption says.
    opening = OPENINGS[int(rng.integers(len(OPENINGS)))]
    order = rng.permutation(len(caption.groups))
    sun_first = bool(rng.random() < 0.5)
    items = [group_phrase(caption.groups[i]) for i in order]
    items = items[0] if len(items) == 1 else " , ".join(items[:-1]) + " and " + items[-1]
    if caption.actor:
        opening = caption.actor + " a {bg} picture of {items}"
    extras = (["stripes"] if caption.stripes else []) + (["a big yellow sun"] if caption.sun else [])
    words = [opening.format(bg=BACKGROUND_WORDS[caption.dark], items=items)]
    if extras:
        words.append("with " + " and ".join(extras[::-1] if sun_first else extras))
    if caption.place:
        words.append(caption.place)
    return " ".join([*words, "."])


def hard_negative(picture: Picture, caption: Caption, rng: np.random.Generator) -> Caption:
    """The caption with one content fact made false for `picture`: the background flipped, stripes or the sun
    claimed or denied, or one group given another count, colour or shape (one that no other group has)."""
    change = _pick(rng, CHANGES)
    if change in ("background", "stripes", "sun"):
        key = "dark" if change == "background" else change
        return replace(caption, **{key: not getattr(caption, key)})
    groups = list(caption.groups)
    slot = int(rng.integers(len(groups)))
    count, colour, kind = groups[slot]
    taken = {(c, k) for _, c, k in picture.groups}
    if change == "count":
        groups[slot] = (_pick(rng, [n for n in COUNT_WORDS if n != count]), colour, kind)
    elif change == "colour":
        groups[slot] = (count, _pick(rng, [c for c in COLOURS if (c, kind) not in taken]), kind)
    else:
        groups[slot] = (count, colour, _pick(rng, [k for k in KINDS if (colour, k) not in taken]))
    return replace(caption, groups=tuple(groups))


def caption_words() -> list[str]:
    """Every word a caption can use, sorted."""
    words = {"a", "this", "picture", "image", "poster", "shows", "of", "with", "and", "big", "yellow", ",", "."}
    words |= {"near", "the", "in", *BACKGROUND_WORDS.values(), *COUNT_WORDS.values(), *COLOURS, *KINDS}
    words |= set(PLURALS.values()) | {"sun", "stripes", *ACTION_VERBS}
    words |= {*LEXICON["nouns"], *LEXICON["adjectives"], *LEXICON["names"]}
    words |= {word for place in LEXICON["places"] for word in place.split()}
    return sorted(words)


def vocabulary() -> list[str]:
    """The tokenizer's words after the special tokens: the shipped backbone's (scenes.vocabulary, so that every
    benchmark word keeps its token id), then the caption words it lacks (`NEW_WORDS`)."""
    from mmp_core.data.scenes import vocabulary as shipped

    words = shipped()
    return [*words, *(word for word in NEW_WORDS if word not in words)]
