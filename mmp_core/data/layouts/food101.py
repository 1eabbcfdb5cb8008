"""The UPMC Food-101 raw layout.

`images/{train,test}/<class>/<class>_<n>.jpg`, `class_idx.json` (class -> index), `text.json` (file name ->
title), `split.json` (`train`/`val`/`test` file names; val images live under images/train). A title that is
absent or empty is natural missing text; a listed image that is absent is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from mmp_core.data.datasets import DatasetSpec
from mmp_core.data.errors import BadSampleError, DataError
from mmp_core.data.layouts.raw import (
    Sample,
    Task,
    _has_text,
    _split_lists,
    _string_list,
    check_id,
    inside,
    read_class_index,
    read_image,
    read_json,
)


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
            reason = (
                "text: no text.json entry"
                if name not in self.titles and entry not in self.titles
                else "text: empty title"
            )
        return Sample(name, texts, self.class_index[label_name], image, missing_reason=reason)
