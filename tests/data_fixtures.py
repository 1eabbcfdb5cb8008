"""Tiny raw datasets in the three layouts (and reference arrow files), written by the tests themselves."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from mmp_core.data.datasets import MMIMDB_GENRES

SIZES = {"train": 6, "dev": 3, "test": 3}
FOOD_SIZES = {"train": 6, "val": 3, "test": 3}
FOOD_CLASSES = ("apple_pie", "pizza", "sushi")
# (width, height) cycled over samples: landscape, portrait, square, so batches need padding.
IMAGE_SIZES = ((48, 32), (32, 48), (40, 40))


def image_bytes(width: int = 40, height: int = 30, colour=(200, 30, 30), fmt: str = "JPEG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour, dtype=np.float32) + rng.normal(0, 10, (height, width, 3)), 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def _write_json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def mmimdb_genres(index: int, genres=MMIMDB_GENRES) -> list[str]:
    return [genres[index % len(genres)], genres[(index + 3) % len(genres)]]


def make_mmimdb(root: Path, sizes=SIZES, genres=MMIMDB_GENRES) -> dict[str, list[str]]:
    """MM-IMDb layout: images/<id>.jpeg, labels/<id>.json, split.json. Returns the ids per split."""
    ids, n = {}, 0
    for split, size in sizes.items():
        ids[split] = []
        for _ in range(size):
            sample_id = f"{n:07d}"
            width, height = IMAGE_SIZES[n % len(IMAGE_SIZES)]
            _write_json(
                root / "labels" / f"{sample_id}.json",
                {
                    "plot": [f"plot {n} about love", f"and a chase {n}"],
                    "genres": mmimdb_genres(n, genres),
                    "title": "x",
                },
            )
            (root / "images").mkdir(parents=True, exist_ok=True)
            (root / "images" / f"{sample_id}.jpeg").write_bytes(image_bytes(width, height, seed=n))
            ids[split].append(sample_id)
            n += 1
    _write_json(root / "split.json", ids)
    return ids


def make_food101(root: Path, sizes=FOOD_SIZES, classes=FOOD_CLASSES) -> dict[str, list[str]]:
    """UPMC Food-101 layout: images/{train,test}/<class>/<class>_<n>.jpg, class_idx.json, text.json, split.json."""
    _write_json(root / "class_idx.json", {name: i for i, name in enumerate(classes)})
    titles, entries, n = {}, {}, 0
    for split, size in sizes.items():
        entries[split] = []
        folder = "test" if split == "test" else "train"
        for _ in range(size):
            cls = classes[n % len(classes)]
            name = f"{cls}_{n}.jpg"
            path = root / "images" / folder / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            width, height = IMAGE_SIZES[n % len(IMAGE_SIZES)]
            path.write_bytes(image_bytes(width, height, colour=(30, 200, 30), seed=n))
            titles[name] = f"best {cls.replace('_', ' ')} recipe {n}"
            entries[split].append(name)
            n += 1
    _write_json(root / "text.json", titles)
    _write_json(root / "split.json", entries)
    return entries


def hatememes_records(sizes=SIZES) -> dict[str, list[dict]]:
    records, n = {}, 0
    for split, size in sizes.items():
        records[split] = []
        for _ in range(size):
            records[split].append({"id": 10000 + n, "img": f"img/{10000 + n}.png", "label": n % 2, "text": f"meme {n}"})
            n += 1
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def make_hatememes(root: Path, sizes=SIZES) -> dict[str, list[dict]]:
    """Hateful Memes layout: img/<id>.png, train.jsonl, dev.jsonl, test_seen.jsonl."""
    records = hatememes_records(sizes)
    (root / "img").mkdir(parents=True, exist_ok=True)
    files = {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test_seen.jsonl"}
    for split, rows in records.items():
        for i, record in enumerate(rows):
            width, height = IMAGE_SIZES[i % len(IMAGE_SIZES)]
            (root / record["img"]).write_bytes(image_bytes(width, height, colour=(30, 30, 200), fmt="PNG", seed=i))
        write_jsonl(root / files[split], rows)
    return records


def write_reference_arrow(path: Path, columns: dict[str, pa.Array]) -> Path:
    """An Arrow IPC file as the reference implementation writes it (one table, its own column set)."""
    table = pa.table(columns)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def make_reference_mmimdb(directory: Path, sizes=SIZES) -> dict[str, list[str]]:
    directory.mkdir(parents=True, exist_ok=True)
    ids, n = {}, 0
    for split, size in sizes.items():
        rows = []
        for _ in range(size):
            genres = mmimdb_genres(n)
            label = [1 if g in genres else 0 for g in MMIMDB_GENRES]
            width, height = IMAGE_SIZES[n % len(IMAGE_SIZES)]
            rows.append((image_bytes(width, height, seed=n), [f"plot {n}"], label, genres, f"{n:07d}", split))
            n += 1
        image, plots, label, genres, image_id, split_col = map(list, zip(*rows, strict=True))
        write_reference_arrow(
            directory / f"mmimdb_{split}.arrow",
            {
                "image": pa.array(image, pa.binary()),
                "plots": pa.array(plots, pa.list_(pa.string())),
                "label": pa.array(label, pa.list_(pa.int64())),
                "genres": pa.array(genres, pa.list_(pa.string())),
                "image_id": pa.array(image_id, pa.string()),
                "split": pa.array(split_col, pa.string()),
            },
        )
        ids[split] = image_id
    return ids


def make_reference_hatememes(directory: Path, sizes=SIZES) -> None:
    """The reference's Hateful Memes files have no image_id column."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, records in hatememes_records(sizes).items():
        write_reference_arrow(
            directory / f"hatememes_{split}.arrow",
            {
                "image": pa.array([image_bytes(32, 32, fmt="PNG", seed=i) for i in range(len(records))], pa.binary()),
                "text": pa.array([[r["text"]] for r in records], pa.list_(pa.string())),
                "label": pa.array([r["label"] for r in records], pa.int64()),
                "split": pa.array([split] * len(records), pa.string()),
            },
        )


def make_reference_food101(directory: Path, sizes=FOOD_SIZES) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    for split, size in sizes.items():
        labels = [(n + i) % 101 for i in range(size)]
        write_reference_arrow(
            directory / f"food101_{split}.arrow",
            {
                "image": pa.array([image_bytes(32, 40, seed=n + i) for i in range(size)], pa.binary()),
                "text": pa.array([[f"title {n + i}"] for i in range(size)], pa.list_(pa.string())),
                "label": pa.array(labels, pa.int64()),
                "image_id": pa.array([f"food_{n + i}.jpg" for i in range(size)], pa.string()),
                "split": pa.array([split] * size, pa.string()),
            },
        )
        n += size
