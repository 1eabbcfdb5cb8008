"""`mmp prepare`: raw dataset layouts (or the reference's arrow files) -> a prepared directory.

Raw layouts (docs/data.md):
  * MM-IMDb (and the embedded dataset): `images/<id>.jpeg`, `labels/<id>.json` (`plot`: list of strings,
    `genres`: list of strings), `split.json` (`train`/`dev`/`test` id lists). An id whose image file is absent
    is a sample without image (natural missing); an id without `labels/<id>.json` is an error.
  * UPMC Food-101: `images/{train,test}/<class>/<class>_<n>.jpg`, `class_idx.json` (class -> index),
    `text.json` (file name -> title), `split.json` (`train`/`val`/`test` file names; val images live under
    images/train). A title that is absent or empty is natural missing text; a listed image that is absent is
    an error.
  * Hateful Memes: `img/<id>.png`, `train.jsonl`, `dev.jsonl` (or `dev_seen.jsonl`), `test_seen.jsonl` (or
    `test.jsonl`, which must then be labelled); each line `id`, `img`, `label`, `text`. A null/empty `img` is
    natural missing image; an `img` that names an absent file is an error.

Conversion streams: samples are read, their images fully decoded (checked) by a thread pool in bounded
windows, and written in record batches, so memory stays bounded on the full datasets. The output directory
is built under a temporary name and renamed into place; its `manifest.json` records row counts, SHA-256
checksums, label names, task, natural-missing and skipped-sample counts and the dataset fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import ClassVar

import numpy as np

from mmp_core.data.arrow import ArrowSplit, ArrowSplitWriter, arrow_schema, check_label, natural_missing_codes, open_ipc
from mmp_core.data.datasets import DatasetSpec, get_spec
from mmp_core.data.errors import BAD_SAMPLE_KINDS, BadSampleError, DataError
from mmp_core.data.images import check_image
from mmp_core.data.prepared import MANIFEST_FORMAT, MANIFEST_NAME
from mmp_core.data.vocab import VOCAB_NAME, build_vocab, write_vocab
from mmp_core.fileio import atomic_write_json, replace_dir, staging_dir

ON_BAD_SAMPLE = ("fail", "skip")
MAX_SKIPPED_EXAMPLES = 20


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
        raise BadSampleError("unsafe_path", f"{what} {relative!r} points outside the dataset directory", path=path, row=row)
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


# ---------------------------------------------------------------------------------------------- layouts
class MMIMDbLayout:
    """MM-IMDb raw layout (also the embedded dataset's)."""

    def __init__(self, root: Path, spec: DatasetSpec, ignore_labels: Iterable[str] = ()):
        self.root, self.spec = root, spec
        self.split_path = root / "split.json"
        self.splits = _split_lists(self.split_path, spec)
        self.label_index = {name: i for i, name in enumerate(spec.label_names)}
        self.ignored = set(spec.ignored_labels) | set(ignore_labels)

    def tasks(self, split: str) -> Iterator[Task | BadSampleError]:
        for position, sample_id in enumerate(self.splits[split]):
            where = (self.split_path, f"{split}[{position}], id {sample_id}")
            try:
                check_id(sample_id, *where)  # before any path is built from it
            except BadSampleError as error:
                yield error
                continue
            yield Task(sample_id, where, lambda i=sample_id, w=where: self.load(split, i, w))

    def load(self, split: str, sample_id: str, where: tuple) -> Sample:
        label_path = self.root / "labels" / f"{sample_id}.json"
        row = f"id {sample_id}"
        if not label_path.is_file():
            raise BadSampleError(
                "no_sample",
                f"split {split!r} lists id {sample_id!r}, but there is no labels/{sample_id}.json",
                path=where[0],
                row=where[1],
            )
        record = read_json(label_path, row)
        if not isinstance(record, dict):
            raise BadSampleError("malformed_json", "expected a JSON object", path=label_path, row=row)
        genres = record.get("genres")
        if not isinstance(genres, list) or not all(isinstance(g, str) for g in genres):
            raise BadSampleError("malformed_json", "field 'genres' must be a list of strings", path=label_path, row=row)
        texts = _string_list(record.get("plot"), "plot", label_path, row, allow_string=False)
        label = [0] * self.spec.num_labels
        kept, dropped = [], []
        for genre in genres:
            if genre in self.label_index:
                label[self.label_index[genre]] = 1
                kept.append(genre)
            elif genre in self.ignored:
                dropped.append(genre)
            else:
                raise BadSampleError(
                    "unknown_label",
                    f"unknown genre {genre!r} (known: {', '.join(self.spec.label_names)}; "
                    "add --ignore-label to drop it)",
                    path=label_path,
                    row=row,
                )
        image_path = self.root / "images" / f"{sample_id}.jpeg"
        reasons = []
        if image_path.is_file():
            image = read_image(image_path, row)
        else:
            other = sibling_image(image_path)
            if other is not None:
                raise BadSampleError(
                    "missing_image",
                    f"images/{sample_id}.jpeg does not exist, but images/{other.name} does: MM-IMDb images are "
                    "<id>.jpeg (rename or convert it)",
                    path=label_path,
                    row=row,
                )
            image = None
            reasons.append(f"image: no images/{sample_id}.jpeg")
        if not _has_text(texts):
            reasons.append("text: no plot" if record.get("plot") is None else "text: empty plot")
        sample = Sample(sample_id, texts, label, image, kept, tuple(dropped), "; ".join(reasons) or None)
        return _require_content(sample, label_path, row)


class Food101Layout:
    """UPMC Food-101 raw layout."""

    def __init__(self, root: Path, spec: DatasetSpec, ignore_labels: Iterable[str] = ()):
        self.root = root
        self.class_index = read_class_index(root / "class_idx.json")
        self.spec = spec.with_labels(tuple(sorted(self.class_index, key=self.class_index.get)))
        self.text_path = root / "text.json"
        titles = read_json(self.text_path, fatal=True)
        if not isinstance(titles, dict):
            raise DataError("expected an object mapping image file name -> title", path=self.text_path)
        self.titles = titles
        self.split_path = root / "split.json"
        self.splits = _split_lists(self.split_path, self.spec)

    def tasks(self, split: str) -> Iterator[Task | BadSampleError]:
        for position, entry in enumerate(self.splits[split]):
            where = (self.split_path, f"{split}[{position}], {entry}")
            name = PurePosixPath(entry).name
            yield Task(name, where, lambda e=entry, w=where: self.load(split, e, w))

    def load(self, split: str, entry: str, where: tuple) -> Sample:
        path = PurePosixPath(entry)
        name = path.name
        label_name = path.parent.name if path.parent.name else name.rsplit("_", 1)[0]
        for part in (name, label_name):
            check_id(part, *where)
        if label_name not in self.class_index:
            raise BadSampleError(
                "unknown_label", f"unknown class {label_name!r} (not in class_idx.json)", path=where[0], row=where[1]
            )
        folder = "test" if split == self.spec.test_split else "train"
        image_path = inside(self.root, f"images/{folder}/{label_name}/{name}", "image", *where)
        if not image_path.is_file():
            raise BadSampleError(
                "missing_image",
                f"listed image images/{folder}/{label_name}/{name} does not exist",
                path=where[0],
                row=where[1],
            )
        image = read_image(image_path, f"{split} {name}")
        title = self.titles.get(name, self.titles.get(entry))
        texts = _string_list(title, f"text.json[{name!r}]", self.text_path, name)
        reason = None
        if not _has_text(texts):
            reason = "text: no text.json entry" if name not in self.titles and entry not in self.titles else "text: empty title"
        return Sample(name, texts, self.class_index[label_name], image, missing_reason=reason)


class HateMemesLayout:
    """Hateful Memes raw layout (JSONL per split)."""

    FILES: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("train.jsonl",),
        "dev": ("dev.jsonl", "dev_seen.jsonl"),
        "test": ("test_seen.jsonl", "test.jsonl"),
    }

    def __init__(self, root: Path, spec: DatasetSpec, ignore_labels: Iterable[str] = ()):
        self.root, self.spec = root, spec
        self.files = {}
        for split in spec.splits:
            candidates = [root / name for name in self.FILES[split]]
            found = next((p for p in candidates if p.is_file()), None)
            if found is None:
                raise FileNotFoundError(
                    f"{candidates[0]}: file not found (also tried {[str(p) for p in candidates[1:]]})"
                )
            self.files[split] = found
        for split, path in self.files.items():
            with open(path, "rb") as handle:
                if not any(line.strip() for line in handle):
                    raise DataError(f"split {split!r} is empty", path=path)

    def tasks(self, split: str) -> Iterator[Task | BadSampleError]:
        path = self.files[split]
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                row = f"line {number}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    yield BadSampleError(
                        "non_utf8",
                        f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})",
                        path=path,
                        row=row,
                    )
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    yield BadSampleError(
                        "malformed_json",
                        f"malformed JSON line: {error.msg} at column {error.colno}",
                        path=path,
                        row=row,
                    )
                    continue
                try:
                    yield self._task(record, path, row)
                except BadSampleError as error:
                    yield error

    def _task(self, record: object, path: Path, row: str) -> Task:
        if not isinstance(record, dict):
            raise BadSampleError("malformed_json", "expected a JSON object", path=path, row=row)
        for key in ("id", "label"):
            if key not in record:
                hint = " (unlabelled test file? use the labelled test_seen.jsonl)" if key == "label" else ""
                raise BadSampleError("malformed_json", f"no {key!r} field{hint}", path=path, row=row)
        sample_id = record["id"]
        if isinstance(sample_id, bool) or not isinstance(sample_id, str | int):
            raise BadSampleError("malformed_json", "field 'id' must be a string or an integer", path=path, row=row)
        sample_id = str(sample_id)
        row = f"{row}, id {sample_id}"
        check_id(sample_id, path, row)
        check_label(record["label"], self.spec, path, row)
        text = record.get("text")
        if text is not None and not isinstance(text, str):
            raise BadSampleError("malformed_json", "field 'text' must be a string", path=path, row=row)
        image = record.get("img")
        if image is not None and not isinstance(image, str):
            raise BadSampleError(
                "malformed_json", "field 'img' must be a string (a path under the dataset)", path=path, row=row
            )
        texts = [text] if text else []
        label = record["label"]
        image_path = inside(self.root, image, "field 'img'", path, row) if image else None

        def load() -> Sample:
            data, reasons = None, []
            if image_path is not None:
                if not image_path.is_file():
                    raise BadSampleError("missing_image", f"listed image {image} does not exist", path=path, row=row)
                data = read_image(image_path, row)
            else:
                usual = sibling_image(self.root / "img" / f"{sample_id}.png") or self.root / "img" / f"{sample_id}.png"
                if usual.is_file():
                    raise BadSampleError(
                        "missing_image",
                        f"no 'img' field (natural missing?) but img/{usual.name} exists: name it in the line",
                        path=path,
                        row=row,
                    )
                reasons.append("image: no img field" if "img" not in record else "image: empty img field")
            if not texts:
                reasons.append("text: no text field" if "text" not in record else "text: empty text")
            sample = Sample(sample_id, texts, label, data, missing_reason="; ".join(reasons) or None)
            return _require_content(sample, path, row)

        return Task(sample_id, (path, row), load)


class ArrowLayout:
    """The reference implementation's arrow files (`{dataset}_{split}.arrow`), re-validated row by row."""

    def __init__(self, root: Path, spec: DatasetSpec, ignore_labels: Iterable[str] = (), batch_rows: int = 256):
        self.root, self.spec, self.batch_rows = root, spec, batch_rows
        if spec.task == "multiclass":  # the arrow files hold class indices only: name them right or refuse
            self.spec = spec = self._class_names(root, spec)
        self.paths = {}
        for split in spec.splits:
            path = root / spec.arrow_name(split)
            reader = ArrowSplit(path, spec)  # schema check, clear error
            if len(reader) == 0:
                raise DataError(f"split {split!r} is empty (0 rows)", path=path)
            self.paths[split] = path

    @staticmethod
    def _class_names(root: Path, spec: DatasetSpec) -> DatasetSpec:
        """Class names from `class_idx.json` beside the arrow files; without it the built-in list is used only
        if the files have exactly as many classes (fewer would get the first names of the list: wrong labels)."""
        class_path = root / "class_idx.json"
        if class_path.is_file():
            classes = read_class_index(class_path)
            return spec.with_labels(tuple(sorted(classes, key=classes.get)))
        import pyarrow.compute as pc

        highest = -1
        for split in spec.splits:
            path = root / spec.arrow_name(split)
            if path.is_file():
                table = open_ipc(path).read_all()
                if table.num_rows and "label" in table.column_names:
                    highest = max(highest, int(pc.max(table.column("label")).as_py()))
        if highest + 1 != spec.num_labels:
            raise DataError(
                f"the arrow files use {highest + 1} classes (labels 0..{highest}) but there is no class_idx.json "
                f"beside them, and the built-in list names {spec.num_labels}: put a class_idx.json (class name -> "
                "index) in this folder so the labels are named right",
                path=root,
            )
        return spec

    def tasks(self, split: str) -> Iterator[Task | BadSampleError]:
        path = self.paths[split]
        reader = open_ipc(path)
        row = 0
        for number in range(reader.num_record_batches):
            batch = reader.get_batch(number)
            for offset in range(0, batch.num_rows, self.batch_rows):
                chunk = batch.slice(offset, self.batch_rows)
                try:
                    records = chunk.to_pylist()
                except UnicodeDecodeError:
                    records = []
                    for i in range(chunk.num_rows):
                        try:
                            records.append(chunk.slice(i, 1).to_pylist()[0])
                        except UnicodeDecodeError as error:
                            records.append(
                                BadSampleError(
                                    "non_utf8",
                                    f"text is not valid UTF-8 ({error.reason})",
                                    path=path,
                                    row=f"row {row + i}",
                                )
                            )
                for record in records:
                    if isinstance(record, BadSampleError):
                        yield record
                    else:
                        try:
                            yield self._task(record, path, row, split)
                        except BadSampleError as error:
                            yield error
                    row += 1

    def _task(self, record: dict, path: Path, index: int, split: str) -> Task:
        sample_id = record.get("image_id") or f"{split}-{index}"
        row = f"row {index}, id {sample_id}" if record.get("image_id") else f"row {index}"
        check_label(record["label"], self.spec, path, row)
        texts = [t for t in (record.get(self.spec.text_column) or []) if t is not None]
        genres = record.get("genres")
        if self.spec.layout == "mmimdb" and genres is None:
            genres = [n for n, v in zip(self.spec.label_names, record["label"], strict=True) if v]
        image = record.get("image") or None

        def load() -> Sample:
            if image is not None:
                try:
                    check_image(image)
                except ValueError as error:
                    raise BadSampleError("corrupt_image", str(error), path=path, row=row) from None
            return _require_content(Sample(str(sample_id), texts, record["label"], image, genres), path, row)

        return Task(str(sample_id), (path, row), load)


LAYOUTS = {"mmimdb": MMIMDbLayout, "food101": Food101Layout, "hatememes": HateMemesLayout}


# ---------------------------------------------------------------------------------------------- conversion
def _run(task: Task) -> Sample | BadSampleError:
    try:
        return task.load()
    except BadSampleError as error:
        return error
    except OSError as error:  # unreadable file, permissions: name it, keep the policy's choice
        return BadSampleError(
            "corrupt_image", f"cannot read: {error}", path=getattr(error, "filename", None), row=task.id
        )


def _resolve(
    tasks: Iterable[Task | BadSampleError], seen: dict[str, str], workers: int, window: int
) -> Iterator[Sample | BadSampleError]:
    """Run the tasks' loaders (in a thread pool when workers > 1), yielding results in input order."""

    def check_duplicate(task: Task) -> BadSampleError | None:
        first = seen.get(task.id)
        if first is not None:
            return BadSampleError(
                "duplicate_id",
                f"duplicate id {task.id!r} (first listed at {first})",
                path=task.where[0],
                row=task.where[1],
            )
        seen[task.id] = f"{task.where[0]} ({task.where[1]})"
        return None

    if workers <= 1:
        for task in tasks:
            if isinstance(task, BadSampleError):
                yield task
            else:
                yield check_duplicate(task) or _run(task)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmp-prepare")
    pending: deque[Future | BadSampleError] = deque()
    try:
        for task in tasks:
            if isinstance(task, BadSampleError):
                pending.append(task)
            else:
                duplicate = check_duplicate(task)
                pending.append(duplicate or pool.submit(_run, task))
            while len(pending) >= window:
                item = pending.popleft()
                yield item.result() if isinstance(item, Future) else item
        while pending:
            item = pending.popleft()
            yield item.result() if isinstance(item, Future) else item
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class SplitReport:
    rows: int = 0
    skipped: Counter = field(default_factory=Counter)
    dropped_labels: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)
    missing_reasons: dict = field(default_factory=dict)  # id -> why a modality is absent


def _convert_split(
    layout, spec, split, out_dir, *, on_bad_sample, workers, batch_rows, seen
) -> tuple[SplitReport, dict]:
    report = SplitReport()
    has_image: list[bool] = []
    texts: list[str] = []
    ids: list[str] = []
    path = out_dir / spec.arrow_name(split)
    with ArrowSplitWriter(path, arrow_schema(spec)) as writer:
        rows = []
        for item in _resolve(layout.tasks(split), seen, workers, window=max(4 * workers, batch_rows)):
            if isinstance(item, BadSampleError):
                if on_bad_sample == "fail":
                    raise item
                report.skipped[item.kind] += 1
                if len(report.examples) < MAX_SKIPPED_EXAMPLES:
                    report.examples.append({"split": split, "kind": item.kind, "message": str(item)})
                continue
            rows.append(item.row(spec, split))
            report.dropped_labels.update(item.dropped_labels)
            has_image.append(item.image is not None)
            texts.append(" ".join(item.texts).strip())
            ids.append(item.id)
            if item.missing_reason:
                report.missing_reasons[item.id] = item.missing_reason
            if len(rows) >= batch_rows:
                writer.write_rows(rows)
                rows = []
        writer.write_rows(rows)
        if writer.num_rows == 0:
            raise DataError(
                f"split {split!r} has no usable samples ({sum(report.skipped.values())} skipped: {dict(report.skipped)})",
                path=getattr(layout, "split_path", None) or getattr(layout, "files", {}).get(split) or layout.root,
            )
    report.rows = writer.num_rows
    natural = natural_missing_codes(np.array(has_image, dtype=bool), np.array([bool(t) for t in texts]), path)
    entry = {
        "file": path.name,
        "rows": report.rows,
        "bytes": path.stat().st_size,
        "sha256": writer.sha256,
        "natural_missing": {"text": int((natural == 1).sum()), "image": int((natural == 2).sum())},
        "natural_missing_reasons": dict(report.missing_reasons),
        "skipped": {kind: report.skipped[kind] for kind in BAD_SAMPLE_KINDS if report.skipped[kind]},
        "dropped_labels": dict(sorted(report.dropped_labels.items())),
    }
    return report, {"entry": entry, "natural": natural, "texts": texts, "ids": ids}


def dataset_fingerprint(name: str, ids: dict[str, list[str]]) -> str:
    """SHA-256 of the dataset name and every split's sample ids in order."""
    digest = hashlib.sha256(f"mmp-dataset/1|{name}".encode())
    for split, values in ids.items():
        digest.update(f"\n[{split}]\n".encode())
        digest.update("\n".join(values).encode())
    return digest.hexdigest()


def prepare(
    dataset: str,
    out_dir: str | Path,
    *,
    raw_dir: str | Path | None = None,
    arrow_dir: str | Path | None = None,
    on_bad_sample: str = "fail",
    workers: int = 4,
    batch_rows: int = 256,
    vocab_size: int = 0,
    missing_seed: int = 0,
    missing_scenarios: Iterable = (),
    ignore_labels: Iterable[str] = (),
    reference_missing: Iterable[str | Path] = (),
) -> dict:
    """Convert a raw layout (`raw_dir`) or reference arrow files (`arrow_dir`) into `out_dir`.

    Writes `{dataset}_{split}.arrow`, `manifest.json`, `vocab.txt` (if `vocab_size` > 0: built from the
    training text), the missing tables of `missing_scenarios` for every split with `missing_seed`, and
    imported reference tables. Returns the manifest.
    """
    from mmp_core.missing import import_reference_tables, save_tables

    if on_bad_sample not in ON_BAD_SAMPLE:
        raise ValueError(f"on_bad_sample must be one of {ON_BAD_SAMPLE}, got {on_bad_sample!r}")
    if (raw_dir is None) == (arrow_dir is None):
        raise ValueError("give exactly one of a raw directory (--raw) or a directory of arrow files (--from-arrow)")
    spec = get_spec(dataset)
    source = Path(raw_dir if raw_dir is not None else arrow_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: dataset directory not found")
    if arrow_dir is not None:
        layout = ArrowLayout(source, spec, batch_rows=batch_rows)
    else:
        layout = LAYOUTS[spec.layout](source, spec, ignore_labels)
    spec = layout.spec
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = staging_dir(out_dir)
    try:
        seen: dict[str, str] = {}
        files, natural, ids, examples = {}, {}, {}, []
        train_texts: list[str] = []
        for split in spec.splits:
            report, result = _convert_split(
                layout,
                spec,
                split,
                tmp_dir,
                on_bad_sample=on_bad_sample,
                workers=workers,
                batch_rows=batch_rows,
                seen=seen,
            )
            files[split] = result["entry"]
            natural[split] = result["natural"]
            ids[split] = result["ids"]
            examples += report.examples
            if split == spec.train_split:
                train_texts = result["texts"]
        fingerprint = dataset_fingerprint(spec.name, ids)
        if vocab_size:
            write_vocab(tmp_dir / VOCAB_NAME, build_vocab(train_texts, max_size=vocab_size))
        scenarios = list(missing_scenarios)
        save_tables(tmp_dir, fingerprint, natural, scenarios, missing_seed)
        manifest = {
            "format": MANIFEST_FORMAT,
            "dataset": spec.name,
            "task": spec.task,
            "num_labels": spec.num_labels,
            "label_names": list(spec.label_names),
            "primary_metric": spec.primary_metric,
            "splits": list(spec.splits),
            "text_column": spec.text_column,
            "max_text_len": spec.max_text_len,
            "source": {"kind": "arrow" if arrow_dir is not None else "raw", "layout": spec.layout, "path": str(source)},
            "on_bad_sample": on_bad_sample,
            "fingerprint": fingerprint,
            "files": files,
            "skipped_total": sum(sum(f["skipped"].values()) for f in files.values()),
            "skipped_examples": examples,
            "vocab": VOCAB_NAME if vocab_size else None,
            "missing": {
                "seed": int(missing_seed),
                "scenarios": [str(s) for s in scenarios],
                "dir": "missing",
            },
        }
        atomic_write_json(tmp_dir / MANIFEST_NAME, manifest)
        reference = list(reference_missing)
        if reference:
            from mmp_core.data.prepared import load_prepared

            import_reference_tables(load_prepared(tmp_dir), reference)
        replace_dir(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return manifest
