"""Errors for bad input data. Every message names the file and, where there is one, the row or sample id."""

from __future__ import annotations

# Kinds of per-sample problems; `--on-bad-sample skip` counts skipped samples under these names.
BAD_SAMPLE_KINDS = (
    "corrupt_image",  # image bytes that do not decode (corrupt or truncated)
    "missing_image",  # an image file the split lists does not exist
    "malformed_json",  # a sample's JSON file or JSONL line does not parse, or has wrong field types
    "non_utf8",  # a sample's text is not valid UTF-8
    "unknown_label",  # genre or class name not in the dataset's label list
    "label_out_of_range",  # label index outside [0, num_labels) (or a multi-hot with wrong length/values)
    "no_sample",  # the split lists an id that has no sample record
    "duplicate_id",  # an id seen before (in this split or another)
    "no_content",  # neither image nor text: 'both missing' cannot be represented
    "unsafe_path",  # an id or file field that would leave the data root ('../x', '/etc/x', 'a/b' for an id)
)


class DataError(ValueError):
    """Bad input data that stops a conversion whatever the policy (e.g. a malformed split file)."""

    def __init__(self, message: str, *, path: object = None, row: object = None):
        self.path = None if path is None else str(path)
        self.row = row
        where = self.path or ""
        if row is not None:
            where += f" ({row})" if where else str(row)
        super().__init__(f"{where}: {message}" if where else message)


class BadSampleError(DataError):
    """One bad sample. Fatal by default; `--on-bad-sample skip` skips it and counts it by `kind`."""

    def __init__(self, kind: str, message: str, *, path: object = None, row: object = None):
        if kind not in BAD_SAMPLE_KINDS:
            raise AssertionError(f"unknown bad-sample kind {kind!r}")
        self.kind = kind
        super().__init__(f"{message} [{kind}]", path=path, row=row)
