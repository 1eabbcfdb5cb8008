"""A prepared dataset directory: `manifest.json`, one arrow file per split, `missing/` tables, optional
`vocab.txt`. Written by `mmp prepare`, read by training and evaluation through `load_prepared`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmp_core.data.arrow import ArrowSplit
from mmp_core.data.datasets import DatasetSpec, get_spec
from mmp_core.data.errors import DataError
from mmp_core.data.vocab import VOCAB_NAME

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "mmp-prepared/1"


@dataclass(frozen=True)
class PreparedDataset:
    """A prepared directory. `spec` carries the label names of this data (e.g. a Food-101 class_idx.json)."""

    root: Path
    spec: DatasetSpec
    manifest: dict = field(repr=False, compare=False)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.manifest["splits"])

    @property
    def fingerprint(self) -> str:
        """Identifies the samples (ids, in order, per split); seeds the missing tables."""
        return self.manifest["fingerprint"]

    @property
    def vocab_path(self) -> Path | None:
        """`vocab.txt` built from the training text, if `prepare` built one."""
        path = self.root / VOCAB_NAME
        return path if path.is_file() else None

    def _entry(self, split: str) -> dict:
        try:
            return self.manifest["files"][split]
        except KeyError:
            raise ValueError(f"unknown split {split!r} for {self.root}; splits are {list(self.splits)}") from None

    def arrow_path(self, split: str) -> Path:
        return self.root / self._entry(split)["file"]

    def rows(self, split: str) -> int:
        return int(self._entry(split)["rows"])

    def open_split(self, split: str) -> ArrowSplit:
        reader = ArrowSplit(self.arrow_path(split), self.spec)
        if len(reader) != self.rows(split):
            raise DataError(
                f"has {len(reader)} rows but {MANIFEST_NAME} says {self.rows(split)}", path=self.arrow_path(split)
            )
        return reader

    def natural_missing(self, split: str) -> np.ndarray:
        """int8 (rows,): 1 = the sample has no text, 2 = no image, 0 = both present."""
        return self.open_split(split).natural_missing()

    def missing_table(self, split: str, scenario, seed: int = 0, *, reference: bool = False) -> np.ndarray:
        from mmp_core.data.missing import missing_table

        return missing_table(self, split, scenario, seed, reference=reference)

    def verify(self) -> None:
        """Recompute every arrow file's SHA-256 and compare it with the manifest."""
        from mmp_core.fileio import sha256_file

        for split in self.splits:
            path = self.arrow_path(split)
            if sha256_file(path) != self._entry(split)["sha256"]:
                raise DataError(f"checksum does not match {MANIFEST_NAME} (modified or corrupt)", path=path)


def load_prepared(path: str | Path, *, verify: bool = False) -> PreparedDataset:
    """Open a directory written by `mmp prepare`. Checks the manifest, that every split's arrow file exists
    with the recorded size (all checksums too with `verify=True`)."""
    root = Path(path)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path}: no manifest; prepare the data first (`mmp prepare --dataset NAME --raw DIR --out {root}`)"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"malformed manifest ({error})", path=manifest_path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"not an mmp manifest (format {MANIFEST_FORMAT!r} expected)", path=manifest_path)
    spec = get_spec(manifest["dataset"]).with_labels(tuple(manifest["label_names"]))
    if spec.task != manifest["task"]:
        raise DataError(f"task {manifest['task']!r} does not match dataset {spec.name!r}", path=manifest_path)
    prepared = PreparedDataset(root=root, spec=spec, manifest=manifest)
    for split in prepared.splits:
        arrow = prepared.arrow_path(split)
        if not arrow.is_file():
            raise FileNotFoundError(f"{arrow}: arrow file of split {split!r} listed in {manifest_path} is missing")
        if arrow.stat().st_size != manifest["files"][split]["bytes"]:
            raise DataError(f"size differs from {MANIFEST_NAME} (modified or truncated)", path=arrow)
    if verify:
        prepared.verify()
    return prepared
