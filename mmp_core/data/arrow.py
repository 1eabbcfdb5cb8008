"""Arrow IPC files (the reference implementation's format, docs/data.md): schema, streaming writer, reader.

One file per split, `{dataset}_{split}.arrow`, Arrow IPC *file* format, one row per sample:
  * `image` binary: the encoded image (JPEG/PNG) as stored on disk; null when the sample has no image;
  * the text column, list<string>: `plots` (MM-IMDb layout) or `text` (Food-101, Hateful Memes);
  * `label`: list<int64> multi-hot (multilabel) or int64 class id (multiclass, binary);
  * `genres` list<string> (MM-IMDb layout only), `image_id` string, `split` string.
The reader accepts the reference's files as they are (`image_id` and `split` optional, binary/large_binary,
list/large_list, any integer label type) and names the file and column when the schema does not fit.
"""

from __future__ import annotations

import bisect
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmp_core.data.datasets import DatasetSpec
from mmp_core.data.errors import BadSampleError, DataError
from mmp_core.scenarios import IMAGE_MISSING, TEXT_MISSING


def arrow_schema(spec: DatasetSpec) -> pa.Schema:
    """The schema mmp writes for `spec` (the reference's columns, plus `image_id` everywhere)."""
    label_type = pa.list_(pa.int64()) if spec.task == "multilabel" else pa.int64()
    fields = [
        pa.field("image", pa.binary()),
        pa.field(spec.text_column, pa.list_(pa.string())),
        pa.field("label", label_type),
    ]
    if spec.layout == "mmimdb":
        fields.append(pa.field("genres", pa.list_(pa.string())))
    fields += [pa.field("image_id", pa.string()), pa.field("split", pa.string())]
    return pa.schema(fields, metadata={b"mmp.dataset": spec.name.encode(), b"mmp.task": spec.task.encode()})


def _is_text_list(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and (
        pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)
    )


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def validate_schema(schema: pa.Schema, spec: DatasetSpec, path: object) -> None:
    """Raise DataError naming `path` and the column if `schema` cannot hold `spec`'s samples."""
    expected = {
        "image": ("binary", lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)),
        spec.text_column: ("list<string>", _is_text_list),
        "label": (
            (
                "list<int>",
                lambda t: (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type),
            )
            if spec.task == "multilabel"
            else ("an integer type", pa.types.is_integer)
        ),
    }
    optional = {"image_id": ("string", _is_string), "split": ("string", _is_string)}
    if spec.layout == "mmimdb":
        optional["genres"] = ("list<string>", _is_text_list)
    names = set(schema.names)
    missing = [name for name in expected if name not in names]
    if missing:
        raise DataError(
            f"wrong schema for dataset {spec.name!r}: missing column(s) {missing}; "
            f"the file has {schema.names}, expected {sorted(expected)} (+ optional {sorted(optional)})",
            path=path,
        )
    for name, (wanted, check) in {**expected, **optional}.items():
        if name in names and not check(schema.field(name).type):
            raise DataError(
                f"wrong schema for dataset {spec.name!r}: column {name!r} has type {schema.field(name).type}, "
                f"expected {wanted}",
                path=path,
            )


def open_ipc(path: str | os.PathLike) -> pa.ipc.RecordBatchFileReader:
    """Open an Arrow IPC file memory-mapped; a clear error if it is absent or not an IPC file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: arrow file not found")
    try:
        return pa.ipc.open_file(pa.memory_map(str(path), "r"))
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"not an Arrow IPC file ({error})", path=path) from None


class ArrowSplitWriter:
    """Streams record batches into `{path}` through a temporary file renamed into place by `close()`.

    `sha256` and `num_rows` are set after closing. Use as a context manager: on an exception the
    temporary file is removed and `path` is left untouched.
    """

    def __init__(self, path: str | os.PathLike, schema: pa.Schema):
        self.path = Path(path)
        self.schema = schema
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        self._sink = pa.OSFile(self._tmp, "wb")
        self._writer = pa.ipc.new_file(self._sink, schema)
        self.num_rows = 0
        self.sha256: str | None = None

    def write_rows(self, rows: list[dict]) -> None:
        if rows:
            self._writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=self.schema))
            self.num_rows += len(rows)

    def close(self) -> None:
        from mmp_core.fileio import sha256_file

        self._writer.close()
        self._sink.close()
        self.sha256 = sha256_file(Path(self._tmp))
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
            self._sink.close()
        finally:
            Path(self._tmp).unlink(missing_ok=True)

    def __enter__(self) -> ArrowSplitWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class ArrowSplit:
    """Read access to one split's arrow file (ours or the reference's), memory-mapped.

    Row-level accessors return plain Python/numpy values. The table is opened lazily and dropped on pickling,
    so an instance can be handed to DataLoader worker processes.
    """

    def __init__(self, path: str | os.PathLike, spec: DatasetSpec):
        self.path = Path(path)
        self.spec = spec
        reader = open_ipc(self.path)
        validate_schema(reader.schema, spec, self.path)
        self.num_rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        self._table: pa.Table | None = None

    def __len__(self) -> int:
        return self.num_rows

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("_image_chunks", "_chunk_starts")}
        return {**state, "_table": None}

    @property
    def table(self) -> pa.Table:
        """The whole split, memory-mapped (opened on first use)."""
        if self._table is None:
            table = open_ipc(self.path).read_all()
            self._image_chunks = table.column("image").chunks
            self._chunk_starts = np.cumsum([0] + [len(c) for c in self._image_chunks])[:-1].tolist()
            self._table = table
        return self._table

    def image(self, row: int) -> bytes | None:
        """The encoded image of `row`, or None when the sample has no image."""
        if self._table is None:
            _ = self.table
        chunk = bisect.bisect_right(self._chunk_starts, row) - 1
        value = self._image_chunks[chunk][row - self._chunk_starts[chunk]].as_py()
        return value or None

    def ids(self) -> list[str]:
        if "image_id" in self.table.column_names:
            return [str(v) for v in self.table.column("image_id").to_pylist()]
        return [f"{self.path.stem}:{i}" for i in range(self.num_rows)]

    def texts(self) -> list[str]:
        """One string per row: the text list joined with spaces ('' when there is no text)."""
        column = self.spec.text_column
        try:
            values = self.table.column(column).to_pylist()
        except UnicodeDecodeError as error:
            raise DataError(f"column {column!r} holds text that is not valid UTF-8 ({error})", path=self.path) from None
        return [" ".join(s for s in (v or []) if s).strip() for v in values]

    def labels(self) -> np.ndarray:
        """(N, C) uint8 multi-hot for multilabel, (N,) int64 class ids otherwise; range-checked per row."""
        values = self.table.column("label").to_pylist()
        return labels_to_array(values, self.spec, self.path)

    def has_image(self) -> np.ndarray:
        """Bool (N,): the row has a non-empty image."""
        import pyarrow.compute as pc

        lengths = pc.binary_length(self.table.column("image")).to_numpy(zero_copy_only=False)
        return np.nan_to_num(lengths.astype(np.float64), nan=0.0) > 0

    def natural_missing(self) -> np.ndarray:
        """int8 (N,): 1 where a row has no text, 2 where it has no image, 0 otherwise."""
        return natural_missing_codes(self.has_image(), np.array([bool(t) for t in self.texts()]), self.path)


def natural_missing_codes(has_image: np.ndarray, has_text: np.ndarray, path: object = None) -> np.ndarray:
    both = np.flatnonzero(~has_image & ~has_text)
    if len(both):
        raise DataError(
            f"{len(both)} row(s) have neither image nor text (first: row {both[0]}); 'both missing' cannot be "
            "represented (prepare the data with --on-bad-sample skip to drop them)",
            path=path,
        )
    codes = np.zeros(len(has_image), dtype=np.int8)
    codes[~has_text] = TEXT_MISSING
    codes[~has_image] = IMAGE_MISSING
    return codes


def check_label(value: object, spec: DatasetSpec, path: object, row: object) -> None:
    """Raise BadSampleError(label_out_of_range) unless `value` is a valid label of `spec`."""
    if spec.task == "multilabel":
        if not isinstance(value, list) or len(value) != spec.num_labels or any(v not in (0, 1) for v in value):
            shown = value if not isinstance(value, list) or len(value) <= 8 else f"list of {len(value)}"
            raise BadSampleError(
                "label_out_of_range",
                f"label {shown} is not a multi-hot list of {spec.num_labels} zeros/ones",
                path=path,
                row=row,
            )
    elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < spec.num_labels:
        raise BadSampleError(
            "label_out_of_range",
            f"label {value!r} is out of range: expected an integer in [0, {spec.num_labels - 1}]",
            path=path,
            row=row,
        )


def labels_to_array(values: list, spec: DatasetSpec, path: object) -> np.ndarray:
    for row, value in enumerate(values):
        check_label(value, spec, path, f"row {row}")
    if spec.task == "multilabel":
        return np.asarray(values, dtype=np.uint8).reshape(len(values), spec.num_labels)
    return np.asarray(values, dtype=np.int64)
