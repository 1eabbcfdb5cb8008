"""The reference implementation's arrow files as a source: `{dataset}_{split}.arrow`, re-validated row by row."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from mmp_core.data.arrow import ArrowSplit, check_label, open_ipc
from mmp_core.data.datasets import DatasetSpec
from mmp_core.data.errors import BadSampleError, DataError
from mmp_core.data.images import check_image
from mmp_core.data.layouts.raw import Sample, Task, _require_content, read_class_index


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
