"""The Hateful Memes raw layout (JSONL per split).

`img/<id>.png`, `train.jsonl`, `dev.jsonl` (or `dev_seen.jsonl`), `test_seen.jsonl` (or `test.jsonl`, which
must then be labelled); each line `id`, `img`, `label`, `text`. A null/empty `img` is natural missing image;
an `img` that names an absent file is an error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar

from mmp_core.data.arrow import check_label
from mmp_core.data.datasets import DatasetSpec
from mmp_core.data.errors import BadSampleError, DataError
from mmp_core.data.layouts.raw import Sample, Task, _require_content, check_id, inside, read_image, sibling_image


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
