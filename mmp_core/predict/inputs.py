"""What a prediction takes and gives, without torch: `PredictionInput`, inputs files, per-input checks, labels.

`read_inputs` reads a .jsonl or .csv inputs file, `load_input` checks one input and tells the modality it
lacks, `select_labels` picks the labels to report from one input's scores, and `Prediction` is one result
(the `Predictor` of `mmp_core.predict` makes them).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmp_core.scenarios import COMPLETE, IMAGE_MISSING, TEXT_MISSING

INPUT_FIELDS = ("image", "text")
INPUT_SUFFIXES = (".jsonl", ".csv")


class InputError(ValueError):
    """One input cannot be predicted; the message says what is wrong (the batch goes on)."""


@dataclass(frozen=True)
class PredictionInput:
    """One input: an image (a path, or encoded bytes) and/or a text.

    `source` says where it came from in messages ("inputs.csv line 4"); `problem` marks an input that could not
    even be read (a malformed JSON line), reported as that row's error.
    """

    image: str | os.PathLike | bytes | None = None
    text: str | None = None
    id: str | None = None
    source: str = ""
    problem: str | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "", base_dir: Path | None = None):
        """From {"image": path, "text": str, "id": ...}; a relative image path is taken from `base_dir`."""
        image = values.get("image")
        if isinstance(image, str) and image.strip() and base_dir is not None:
            image = str(base_dir / Path(image.strip()).expanduser())
        item_id = values.get("id")
        return cls(
            image=image if image not in ("", None) else None,
            text=values.get("text"),
            id=None if item_id in (None, "") else str(item_id),
            source=source,
        )


@dataclass
class Prediction:
    """The result for one input: labels and scores, or the reason it failed (`error`)."""

    source: str
    id: str | None = None
    image: str | None = None
    text: str | None = None
    missing_type: str | None = None  # complete, text_missing or image_missing: which prompts were used
    labels: list[tuple[str, float]] = field(default_factory=list)  # chosen labels, best first
    scores: dict[str, float] | None = None  # every label's probability, in label order
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        """One line for a person: where the input came from, what it lacked, the chosen labels."""
        head = f"{self.source}" + (f" ({self.id})" if self.id else "") + f" [{self.missing_type or 'error'}]"
        if self.error is not None:
            return f"{head}: error: {self.error}"
        if self.labels:
            return f"{head}: " + ", ".join(f"{name} {score:.3f}" for name, score in self.labels)
        best = max(self.scores.items(), key=lambda item: item[1]) if self.scores else None
        return f"{head}: no label above the threshold" + (f" (highest: {best[0]} {best[1]:.3f})" if best else "")

    def to_dict(self) -> dict:
        data = {"source": self.source}
        if self.id is not None:
            data["id"] = self.id
        data.update(image=self.image, text=self.text)
        if self.error is not None:
            data["error"] = self.error
        else:
            data["missing_type"] = self.missing_type
            data["labels"] = [{"label": name, "score": score} for name, score in self.labels]
            data["scores"] = self.scores
        return data


# ---------------------------------------------------------------------------------------------- inputs files
def read_inputs(path: str | os.PathLike) -> list[PredictionInput]:
    """The inputs in a `.jsonl` (one object per line) or `.csv` (a header row) file with `image` and/or `text`
    fields (and an optional `id`). Relative image paths are resolved against the file's folder.

    A file that cannot be read as a whole raises (naming it); a bad line becomes one input with a `problem`.
    """
    path = Path(path)
    if path.suffix.lower() not in INPUT_SUFFIXES:
        raise ValueError(f"{path}: inputs must be a .jsonl or .csv file (columns image and/or text)")
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: inputs file not found") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error})") from None
    base_dir = path.parent.resolve()
    items = (
        _read_csv(path, content, base_dir) if path.suffix.lower() == ".csv" else _read_jsonl(path, content, base_dir)
    )
    if not items:
        raise ValueError(f"{path}: no inputs in the file")
    return items


def _read_jsonl(path: Path, content: str, base_dir: Path) -> list[PredictionInput]:
    items = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        source = f"{path.name} line {number}"
        try:
            values = json.loads(line)
        except json.JSONDecodeError as error:
            items.append(PredictionInput(source=source, problem=f"not valid JSON ({error})"))
            continue
        if not isinstance(values, dict):
            items.append(PredictionInput(source=source, problem="expected a JSON object with image and/or text"))
            continue
        items.append(PredictionInput.from_mapping(values, source, base_dir))
    return items


def _read_csv(path: Path, content: str, base_dir: Path) -> list[PredictionInput]:
    reader = csv.DictReader(io.StringIO(content))
    columns = reader.fieldnames or []
    if not set(INPUT_FIELDS) & set(columns):
        raise ValueError(f"{path}: needs an 'image' and/or a 'text' column in its header row; found {columns}")
    items = []
    for row in reader:
        source = f"{path.name} line {reader.line_num}"
        if None in row:  # more cells than header columns
            items.append(PredictionInput(source=source, problem=f"more cells than the {len(columns)} header columns"))
            continue
        items.append(PredictionInput.from_mapping(row, source, base_dir))
    return items


# ---------------------------------------------------------------------------------------------- one input
def load_input(item: PredictionInput) -> tuple[str, bytes | None, int]:
    """(text, encoded image or None, missing type) of an input; InputError says what is wrong with it."""
    if item.problem is not None:
        raise InputError(item.problem)
    text = item.text
    if text is not None and not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}")
    text = (text or "").strip()
    data = None
    image = item.image
    if isinstance(image, bytes | bytearray):
        data = bytes(image) or None
        where = "image"
    elif image is not None:
        if not isinstance(image, str | os.PathLike):
            raise InputError(f"image must be a file path, got {type(image).__name__}")
        path = Path(image).expanduser()
        where = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"image file not found: {path}") from None
        except IsADirectoryError:
            raise InputError(f"image path is a directory, not a file: {path}") from None
        except OSError as error:
            raise InputError(f"cannot read image file {path}: {error.strerror or error}") from None
    if not text and data is None:
        raise InputError("neither an image nor a text: at least one modality is needed")
    if data is not None:
        from mmp_core.data.images import check_image

        try:
            check_image(data)
        except ValueError as error:
            raise InputError(f"{where}: {error}") from None
    if not text:
        return text, data, TEXT_MISSING
    return text, data, COMPLETE if data is not None else IMAGE_MISSING


def select_labels(
    scores: np.ndarray, label_names: tuple[str, ...], task: str, threshold: float | None, top_k: int | None
) -> list[tuple[str, float]]:
    """The labels to report from one input's scores (C,), best first.

    Multilabel: every label whose score exceeds `threshold` (default 0.5, evaluation's rule), at most `top_k`.
    Multiclass / binary: the `top_k` best (default 1), only those above `threshold` when one is given.
    """
    if threshold is None and task == "multilabel":
        threshold = 0.5
    if top_k is None and task != "multilabel":
        top_k = 1
    order = np.argsort(-scores, kind="stable")
    chosen = [(label_names[i], float(scores[i])) for i in order if threshold is None or scores[i] > threshold]
    return chosen[:top_k] if top_k is not None else chosen
