"""Reading raw dataset files safely: the `Sample` and `Task` every layout yields, UTF-8 / JSON / image readers,
id and path checks (a data root is a jail), split lists and the Food-101 class index.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mmp_core.data.datasets import DatasetSpec
from mmp_core.data.errors import BadSampleError, DataError
from mmp_core.data.images import check_image


@dataclass
class Sample:
    id: str
    texts: list[str]
    label: int | list[int]
    image: bytes | None
    genres: list[str] | None = None
    dropped_labels: tuple[str, ...] = ()
    # Why a modality is absent (natural missing), e.g. "image: no images/0001.jpeg", recorded per id in the
    # manifest so that a broken download can be told from real missingness.
    missing_reason: str | None = None

    def row(self, spec: DatasetSpec, split: str) -> dict:
        row = {
            "image": self.image,
            spec.text_column: self.texts,
            "label": self.label,
            "image_id": self.id,
            "split": split,
        }
        if spec.layout == "mmimdb":
            row["genres"] = self.genres or []
        return row


# A task: the sample id, a description of where it is listed, and a loader run in a worker thread.
@dataclass
class Task:
    id: str
    where: tuple[object, object]  # (path, row) of the listing, for duplicate-id messages
    load: Callable[[], Sample]


# ---------------------------------------------------------------------------------------------- raw helpers
def read_utf8(path: Path, row: object = None, *, fatal: bool = False) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        message = f"not valid UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start})"
        if fatal:
            raise DataError(message, path=path, row=row) from None
        raise BadSampleError("non_utf8", message, path=path, row=row) from None


def read_json(path: Path, row: object = None, *, fatal: bool = False) -> object:
    """Parse a JSON file; a sample's file raises BadSampleError, a dataset-level file (fatal) DataError."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    text = read_utf8(path, row, fatal=fatal)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        message = f"malformed JSON at line {error.lineno} column {error.colno}: {error.msg}"
        if fatal:
            raise DataError(message, path=path, row=row) from None
        raise BadSampleError("malformed_json", message, path=path, row=row) from None


def _string_list(value: object, what: str, path: Path, row: object, *, allow_string: bool = True) -> list[str]:
    """A list of strings from a string (if `allow_string`), a list of strings or null (natural missing text)."""
    if value is None:
        return []
    if isinstance(value, str):
        if not allow_string:
            raise BadSampleError(
                "malformed_json", f"field {what!r} must be a list of strings, got a string", path=path, row=row
            )
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise BadSampleError("malformed_json", f"field {what!r} must be a string or a list of strings", path=path, row=row)


def read_image(path: Path, row: object) -> bytes:
    data = path.read_bytes()
    try:
        check_image(data)
    except ValueError as error:
        raise BadSampleError("corrupt_image", str(error), path=path, row=row) from None
    return data


# An id becomes a file name: one path component of letters, digits, '_', '-' and inner dots (MM-IMDb's
# '0374343', the embedded 'a000012', Hateful Memes' '42953'); never '..', a slash or an absolute path.
_ID_GRAMMAR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_-])?$")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".webp", ".gif", ".bmp", ".JPEG", ".JPG", ".PNG")


def check_id(sample_id: str, path: object, row: object) -> str:
    if not _ID_GRAMMAR.match(sample_id) or ".." in sample_id:
        raise BadSampleError(
            "unsafe_path",
            f"id {sample_id!r} is not a plain file name (letters, digits, '_', '-', '.'; no '/' or '..')",
            path=path,
            row=row,
        )
    return sample_id


def inside(root: Path, relative: str, what: str, path: object, row: object) -> Path:
    """`root / relative`, refused unless it stays inside `root` once resolved (symlinks included): a data
    root is a jail for every path built from the data."""
    candidate = PurePosixPath(relative)
    resolved = (root / relative).resolve()
    if candidate.is_absolute() or ".." in candidate.parts or not resolved.is_relative_to(root.resolve()):
        raise BadSampleError(
            "unsafe_path", f"{what} {relative!r} points outside the dataset directory", path=path, row=row
        )
    return root / relative


def sibling_image(image_path: Path) -> Path | None:
    """Another file with the same stem and an image suffix beside an expected but absent image."""
    for suffix in IMAGE_SUFFIXES:
        other = image_path.with_suffix(suffix)
        if other != image_path and other.is_file():
            return other
    return None


def _has_text(texts: list[str]) -> bool:
    return any(t.strip() for t in texts)


def _require_content(sample: Sample, path: object, row: object) -> Sample:
    if sample.image is None and not _has_text(sample.texts):
        raise BadSampleError("no_content", "sample has neither image nor text", path=path, row=row)
    return sample


def _split_lists(path: Path, spec: DatasetSpec) -> dict[str, list[str]]:
    document = read_json(path, fatal=True)
    if not isinstance(document, dict):
        raise DataError("expected an object with one id list per split", path=path)
    lists = {}
    for split in spec.splits:
        ids = document.get(split)
        if ids is None:
            raise DataError(f"no {split!r} list (splits expected: {list(spec.splits)})", path=path)
        if not isinstance(ids, list) or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
            raise DataError(f"{split!r} must be a list of ids (strings)", path=path)
        if not ids:
            raise DataError(f"split {split!r} is empty", path=path)
        lists[split] = [str(i) for i in ids]
    return lists


def read_class_index(class_path: Path) -> dict[str, int]:
    """A Food-101 `class_idx.json` (class name -> index 0..n-1), validated."""
    classes = read_json(class_path, fatal=True)
    if not isinstance(classes, dict) or not classes:
        raise DataError("expected a non-empty object mapping class name -> index", path=class_path)
    for name, index in classes.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(classes):
            raise DataError(
                f"class {name!r} has index {index!r}: label out of range, indices must be 0..{len(classes) - 1}",
                path=class_path,
            )
    if len(set(classes.values())) != len(classes):
        raise DataError("two classes share an index", path=class_path)
    return classes
