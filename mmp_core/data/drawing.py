"""Drawing the generated pictures: the visual vocabulary shared by the embedded benchmark and the captioned scenes.

Every primitive takes the generator's `rng` and draws in a fixed order of random calls, so a picture is a pure
function of the seed that made it. Pictures are small RGB images with pixel noise, saved as JPEG, like the posters
of the MM-IMDb layout the benchmark mimics.
"""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image, ImageDraw

# Named colours of the small shapes (the benchmark's decoys use the first six).
COLOURS: dict[str, tuple[int, int, int]] = {
    "blue": (40, 70, 200),
    "green": (40, 160, 70),
    "purple": (130, 60, 170),
    "cyan": (40, 180, 190),
    "white": (235, 235, 235),
    "gray": (120, 120, 120),
    "pink": (240, 120, 180),
    "orange": (240, 140, 30),
    "black": (25, 25, 25),
}
DECOY_COLOURS = ("blue", "green", "purple", "cyan", "white", "gray")


def canvas(rng: np.random.Generator, dark: bool) -> tuple[Image.Image, tuple[int, int, int], float]:
    """A 96-144 x 96-128 px picture with a random pastel background, dark (value 0.08-0.22) or light.

    Returns (image, background colour, background value)."""
    width, height = int(rng.integers(96, 145)), int(rng.integers(96, 129))
    hue = rng.random()
    value = rng.uniform(0.08, 0.22) if dark else rng.uniform(0.55, 0.92)
    background = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, rng.uniform(0.1, 0.4), value))
    return Image.new("RGB", (width, height), background), background, value


def stripes(rng: np.random.Generator, image: Image.Image, background: tuple[int, int, int], value: float) -> None:
    """Horizontal bands 5-8 px high, darker than a light background or lighter than a dark one."""
    width, height = image.size
    band = int(rng.integers(5, 9))
    shade = tuple(int(c * 0.55) for c in background) if value > 0.4 else tuple(min(255, c + 60) for c in background)
    draw = ImageDraw.Draw(image)
    for top in range(int(rng.integers(band)), height, 2 * band):
        draw.rectangle([0, top, width, top + band - 1], fill=shade)


def sun(rng: np.random.Generator, image: Image.Image) -> None:
    """A big yellow disc, radius 20-30% of the shorter side."""
    width, height = image.size
    radius = int(min(width, height) * rng.uniform(0.2, 0.3))
    cx, cy = int(rng.integers(radius, width - radius)), int(rng.integers(radius, height - radius))
    colour = (int(rng.integers(225, 256)), int(rng.integers(200, 236)), int(rng.integers(0, 60)))
    ImageDraw.Draw(image).ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)


def _box(rng: np.random.Generator, image: Image.Image, size: int) -> tuple[int, int]:
    width, height = image.size
    return int(rng.integers(0, width - size)), int(rng.integers(0, height - size))


def shape(rng: np.random.Generator, image: Image.Image, kind: str, colour: tuple[int, int, int], size: int) -> None:
    """One small shape of side `size` at a random place: square, circle, diamond, cross, heart, star or ring."""
    x, y = _box(rng, image, size)
    draw = ImageDraw.Draw(image)
    if kind == "square":
        draw.rectangle([x, y, x + size, y + size], fill=colour)
    elif kind == "circle":
        draw.ellipse([x, y, x + size, y + size], fill=colour)
    elif kind == "diamond":
        half = size // 2
        draw.polygon([(x + half, y), (x + size, y + half), (x + half, y + size), (x, y + half)], fill=colour)
    elif kind == "cross":
        third = max(1, size // 3)
        draw.rectangle([x + third, y, x + 2 * third, y + size], fill=colour)
        draw.rectangle([x, y + third, x + size, y + 2 * third], fill=colour)
    elif kind == "heart":
        half = size // 2
        draw.ellipse([x, y, x + half + 1, y + half + 1], fill=colour)
        draw.ellipse([x + half - 1, y, x + size, y + half + 1], fill=colour)
        draw.polygon([(x, y + half // 2 + 1), (x + size, y + half // 2 + 1), (x + half, y + size)], fill=colour)
    elif kind == "star":
        cx, cy, outer = x + size / 2, y + size / 2, size / 2
        points = [
            (cx + r * np.sin(k * np.pi / 5), cy - r * np.cos(k * np.pi / 5))
            for k, r in zip(range(10), [outer, outer * 0.45] * 5, strict=True)
        ]
        draw.polygon(points, fill=colour)
    elif kind == "ring":  # a ringed planet: a disc crossed by a wide ellipse outline
        quarter = size // 4
        draw.ellipse([x + quarter, y + quarter, x + size - quarter, y + size - quarter], fill=colour)
        draw.ellipse([x, y + size // 2 - quarter // 2 - 1, x + size, y + size // 2 + quarter // 2 + 1], outline=colour)
    else:
        raise ValueError(f"unknown shape {kind!r}")


def face(rng: np.random.Generator, image: Image.Image) -> None:
    """A smiling face: an orange disc of 22-29 px with two black eyes and a black smile."""
    size = int(rng.integers(22, 30))
    x, y = _box(rng, image, size)
    draw = ImageDraw.Draw(image)
    draw.ellipse([x, y, x + size, y + size], fill=COLOURS["orange"])
    eye = max(2, size // 8)
    for cx in (x + size // 3, x + 2 * size // 3):
        draw.ellipse([cx - eye, y + size // 3 - eye, cx + eye, y + size // 3 + eye], fill=COLOURS["black"])
    draw.arc(
        [x + size // 4, y + size // 3, x + 3 * size // 4, y + 3 * size // 4], 20, 160, fill=COLOURS["black"], width=2
    )


def decoys(rng: np.random.Generator, image: Image.Image) -> list[tuple[str, str]]:
    """1-3 squares or circles of 10-29 px in the decoy colours. Returns [(colour name, shape)]."""
    drawn = []
    for _ in range(int(rng.integers(1, 4))):
        size = int(rng.integers(10, 30))
        x, y = _box(rng, image, size)
        colour = DECOY_COLOURS[int(rng.integers(len(DECOY_COLOURS)))]
        kind = "square" if rng.random() < 0.5 else "circle"
        box = [x, y, x + size, y + size]
        draw = ImageDraw.Draw(image)
        draw.rectangle(box, fill=COLOURS[colour]) if kind == "square" else draw.ellipse(box, fill=COLOURS[colour])
        drawn.append((colour, kind))
    return drawn


def triangles(rng: np.random.Generator, image: Image.Image) -> int:
    """2-4 red triangles of 14-24 px. Returns how many."""
    count = int(rng.integers(2, 5))
    draw = ImageDraw.Draw(image)
    for _ in range(count):
        size = int(rng.integers(14, 25))
        x, y = _box(rng, image, size)
        red = (int(rng.integers(200, 256)), int(rng.integers(0, 40)), int(rng.integers(0, 40)))
        draw.polygon([(x, y + size), (x + size, y + size), (x + size // 2, y)], fill=red)
    return count


def checkerboard(rng: np.random.Generator, image: Image.Image) -> None:
    """A black-and-white checkerboard patch of 28-40 px in 4 px cells."""
    side, cell = int(rng.integers(28, 41)) // 4 * 4, 4
    x, y = _box(rng, image, side)
    draw = ImageDraw.Draw(image)
    for i in range(side // cell):
        for j in range(side // cell):
            shade = (20, 20, 20) if (i + j) % 2 else (235, 235, 235)
            draw.rectangle([x + i * cell, y + j * cell, x + (i + 1) * cell - 1, y + (j + 1) * cell - 1], fill=shade)


def to_jpeg(rng: np.random.Generator, image: Image.Image, quality: int) -> bytes:
    """Add Gaussian pixel noise (sd 8) and encode as JPEG."""
    width, height = image.size
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
