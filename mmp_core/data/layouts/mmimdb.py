"""The MM-IMDb raw layout (also the embedded dataset's).

`images/<id>.jpeg`, `labels/<id>.json` (`plot`: list of strings, `genres`: list of strings), `split.json`
(`train`/`dev`/`test` id lists). An id whose image file is absent is a sample without image (natural
missing); an id without `labels/<id>.json` is an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from mmp_core.data.datasets import DatasetSpec
from mmp_core.data.errors import BadSampleError
from mmp_core.data.layouts.raw import (
    Sample,
    Task,
    _has_text,
    _require_content,
    _split_lists,
    _string_list,
    check_id,
    read_image,
    read_json,
    sibling_image,
)


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
