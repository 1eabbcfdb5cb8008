"""Per-sample missing tables of a prepared dataset (docs/method.md §2, §4): a scenario of `mmp_core.scenarios`
turned into one missing-type code per row of a split (0 complete, 1 text missing, 2 image missing).

`scenario_table` is a pure function of (dataset fingerprint, split, scenario, seed, n, natural missing):
  * one fixed random ranking of the rows per (fingerprint, split, seed, missing type), seeded from a hash of
    those values, so a table never depends on which tables were made before it;
  * the first round(rate * n) rows of the ranking lose their modality, so the missing set at rate r is contained
    in the one at every r' > r and robustness curves are monotone by construction;
  * `both` walks its own ranking and gives text and image in turn (r/2 each; the odd one out is text), so a row
    keeps its missing type across rates;
  * natural missing (a sample without image or text) is forced: such rows come first in the ranking and count
    towards the rate; a row without image is never made text-missing and vice versa.

`prepare` saves the tables of a rate x type grid beside the arrow files (`missing/{split}_{type}_{rate}.npy`
with an `index.json` of checksums); `missing_table` loads them, or computes any other scenario on the fly.
The reference implementation's `{dataset}_{split}_missing_{type}_{rate}.pt` tables can be imported
(`torch.load(weights_only=True)`) and are kept apart, under `missing/reference/`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmp_core.fileio import atomic_write, atomic_write_json
from mmp_core.scenarios import CODE_NAMES, COMPLETE, IMAGE_MISSING, TEXT_MISSING, TYPE_CODES, MissingScenario

if TYPE_CHECKING:  # for annotations only: prepared.py imports this module (PreparedDataset.missing_table)
    from mmp_core.data.prepared import PreparedDataset

MISSING_DIR = "missing"
INDEX_NAME = "index.json"
INDEX_FORMAT = "mmp-missing/1"


def missing_count(rate: float, n: int) -> int:
    """round(rate * n), halves rounded up."""
    return min(n, math.floor(rate * n + 0.5 + 1e-9))


def _check_natural(natural: np.ndarray | None, n: int) -> np.ndarray:
    if natural is None:
        return np.zeros(n, dtype=np.int8)
    natural = np.asarray(natural)
    if natural.shape != (n,):
        raise ValueError(f"natural missing table has shape {natural.shape}, expected ({n},)")
    if natural.size and (natural.min() < 0 or natural.max() > IMAGE_MISSING):
        raise ValueError("natural missing table values must be 0, 1 or 2")
    return natural.astype(np.int8)


def ranking(fingerprint: str, split: str, seed: int, missing_type: str, n: int) -> np.ndarray:
    """The fixed random order of rows 0..n-1 for (fingerprint, split, seed, missing type)."""
    key = f"mmp-missing/1|{fingerprint}|{split}|{int(seed)}|{missing_type}".encode()
    state = int.from_bytes(hashlib.sha256(key).digest()[:16], "little")
    return np.random.Generator(np.random.PCG64(state)).permutation(n)


def scenario_table(
    fingerprint: str,
    split: str,
    scenario: MissingScenario,
    seed: int,
    n: int,
    natural: np.ndarray | None = None,
) -> np.ndarray:
    """The per-row missing types (int8, 0/1/2) of `split` under `scenario`. Pure; see the module doc."""
    if not isinstance(scenario, MissingScenario):
        raise TypeError(f"scenario must be a MissingScenario, got {type(scenario).__name__}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    natural = _check_natural(natural, n)
    table = natural.copy()
    order = ranking(fingerprint, split, seed, scenario.missing_type, n)
    k = missing_count(scenario.rate, n)
    in_order = natural[order]
    free = order[in_order == COMPLETE]
    if scenario.missing_type in TYPE_CODES:
        code = TYPE_CODES[scenario.missing_type]
        already = int((natural == code).sum())
        table[free[: max(0, k - already)]] = code
        return table
    # both: naturally missing rows first, then the free rows in ranking order, each given the type that is
    # behind (text on ties), i.e. first the lagging type until balanced, then text, image, text, ...
    text, image = int((natural == TEXT_MISSING).sum()), int((natural == IMAGE_MISSING).sum())
    take = free[: max(0, k - text - image)]
    lag = min(len(take), abs(text - image))
    codes = np.empty(len(take), dtype=np.int8)
    codes[:lag] = TEXT_MISSING if text < image else IMAGE_MISSING
    codes[lag:] = np.where(np.arange(len(take) - lag) % 2 == 0, TEXT_MISSING, IMAGE_MISSING)
    table[take] = codes
    return table


def force_natural(table: np.ndarray, natural: np.ndarray) -> np.ndarray:
    """`table` with every naturally missing row set to its natural type (used for imported tables)."""
    table = np.asarray(table, dtype=np.int8).copy()
    natural = _check_natural(natural, len(table))
    table[natural != COMPLETE] = natural[natural != COMPLETE]
    return table


def counts(table: np.ndarray) -> dict[str, int]:
    """{'complete': n0, 'text_missing': n1, 'image_missing': n2}."""
    values = np.bincount(np.asarray(table, dtype=np.int64), minlength=3)
    return {CODE_NAMES[code]: int(values[code]) for code in (COMPLETE, TEXT_MISSING, IMAGE_MISSING)}


# ---------------------------------------------------------------------------------------------- saved tables
def table_name(split: str, scenario: MissingScenario) -> str:
    return f"{split}_{scenario.name}"


def _save_npy(path: Path, table: np.ndarray) -> str:
    from mmp_core.fileio import sha256_file

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, np.asarray(table, dtype=np.int8), allow_pickle=False)

    atomic_write(path, write)
    return sha256_file(path)


def _read_index(root: Path) -> dict:
    path = root / MISSING_DIR / INDEX_NAME
    if not path.is_file():
        return {"format": INDEX_FORMAT, "fingerprint": None, "seed": None, "tables": {}, "reference": {}}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: malformed missing-table index ({error})") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: not an mmp missing-table index (format {INDEX_FORMAT!r} expected)")
    return index


def save_tables(
    root: str | Path,
    fingerprint: str,
    natural: Mapping[str, np.ndarray],
    scenarios: Iterable[MissingScenario],
    seed: int,
) -> dict:
    """Compute and save the tables of every split in `natural` (split -> natural missing codes) under every
    scenario, plus the index. Returns the index."""
    root = Path(root)
    index = _read_index(root)
    index.update(fingerprint=fingerprint, seed=int(seed), tables={})
    for split, codes in natural.items():
        for scenario in scenarios:
            table = scenario_table(fingerprint, split, scenario, seed, len(codes), codes)
            name = table_name(split, scenario)
            file = f"{name}.npy"
            index["tables"][name] = {
                "file": file,
                "split": split,
                "missing_type": scenario.missing_type,
                "rate": scenario.rate,
                "rows": len(table),
                "sha256": _save_npy(root / MISSING_DIR / file, table),
                "counts": counts(table),
            }
    atomic_write_json(root / MISSING_DIR / INDEX_NAME, index)
    return index


def _load_npy(path: Path, entry: dict, rows: int) -> np.ndarray:
    from mmp_core.fileio import sha256_file

    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing table listed in {INDEX_NAME} is absent")
    if sha256_file(path) != entry["sha256"]:
        raise ValueError(f"{path}: checksum does not match {INDEX_NAME} (modified or corrupt)")
    table = np.load(path, allow_pickle=False)
    if table.shape != (rows,):
        raise ValueError(f"{path}: table has shape {table.shape}, but the split has {rows} rows")
    return table.astype(np.int8)


def missing_table(
    prepared: PreparedDataset,
    split: str,
    scenario: MissingScenario,
    seed: int = 0,
    *,
    reference: bool = False,
) -> np.ndarray:
    """The per-row missing types (int8 0/1/2) of `split` of a prepared dataset under `scenario`.

    The saved table when `prepare` made one with this seed (checksum-verified), else computed on the fly (the
    same values: tables are pure functions). `reference=True` returns the imported reference table instead
    (natural missing forced into it); it is an error if none was imported.
    """
    if split not in prepared.splits:
        raise ValueError(f"unknown split {split!r} for {prepared.root}; splits are {list(prepared.splits)}")
    rows = prepared.rows(split)
    index = _read_index(prepared.root)
    name = table_name(split, scenario)
    if reference:
        entry = index.get("reference", {}).get(name)
        if entry is None:
            raise FileNotFoundError(
                f"{prepared.root / MISSING_DIR / 'reference'}: no reference table for {name} "
                "(import one with `mmp import-missing`)"
            )
        table = _load_npy(prepared.root / MISSING_DIR / "reference" / entry["file"], entry, rows)
        return force_natural(table, prepared.natural_missing(split))
    entry = index.get("tables", {}).get(name)
    if entry is not None and index.get("seed") == int(seed) and index.get("fingerprint") == prepared.fingerprint:
        return _load_npy(prepared.root / MISSING_DIR / entry["file"], entry, rows)
    return scenario_table(prepared.fingerprint, split, scenario, seed, rows, prepared.natural_missing(split))


# ---------------------------------------------------------------------------------------------- reference
_REFERENCE_NAME = re.compile(
    r"^(?P<dataset>[A-Za-z0-9]+)_(?P<split>[A-Za-z]+)_missing_(?P<type>text|image|both)_(?P<rate>[0-9.]+)\.pt$"
)


def parse_reference_name(name: str) -> tuple[str, str, MissingScenario]:
    """'mmimdb_train_missing_both_07.pt' -> ('mmimdb', 'train', MissingScenario('both', 0.7)).

    The rate is written without its dot ('07' = 0.7, '1' = 1.0, '0' = 0.0); '0.7' is accepted too."""
    match = _REFERENCE_NAME.match(name)
    if not match:
        raise ValueError(
            f"{name}: not a reference missing-table name ({{dataset}}_{{split}}_missing_{{type}}_{{rate}}.pt, "
            "e.g. mmimdb_train_missing_both_07.pt)"
        )
    text = match.group("rate")
    if "." in text:
        rate = float(text)
    elif len(text) > 1 and text.startswith("0"):
        rate = float(f"0.{text[1:]}")
    else:
        rate = float(text)
    return match.group("dataset"), match.group("split"), MissingScenario(match.group("type"), rate)


def load_reference_table(path: str | Path, rows: int | None = None) -> np.ndarray:
    """Read a reference `.pt` table safely (`weights_only=True`): a 1-D tensor of 0/1/2, one per row."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: reference missing table not found")
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: cannot be loaded as a tensor with weights_only=True ({error})") from None
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{path}: holds a {type(value).__name__}, expected a 1-D tensor of 0/1/2")
    if value.dim() != 1:
        raise ValueError(f"{path}: tensor has shape {tuple(value.shape)}, expected one value per row (1-D)")
    array = value.double().numpy()
    bad = np.flatnonzero(~np.isin(array, (0.0, 1.0, 2.0)))
    if len(bad):
        raise ValueError(f"{path}: row {bad[0]} has value {float(array[bad[0]])!r}; missing types are 0, 1 or 2")
    if rows is not None and len(array) != rows:
        raise ValueError(f"{path}: table has {len(array)} rows, but the split has {rows}")
    return array.astype(np.int8)


def import_reference_tables(prepared: PreparedDataset, paths: Iterable[str | Path]) -> list[str]:
    """Copy reference `.pt` tables (files, or directories searched for `*_missing_*.pt`) into
    `missing/reference/` of a prepared dataset, as `.npy` with checksums in the index. Returns the table names."""
    files: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            files += sorted(item.glob(f"{prepared.spec.name}_*_missing_*.pt"))
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or directory")
    if not files:
        raise FileNotFoundError(f"no {prepared.spec.name}_*_missing_*.pt tables found in {[str(p) for p in paths]}")
    index = _read_index(prepared.root)
    index.setdefault("reference", {})
    names = []
    for file in files:
        dataset, split, scenario = parse_reference_name(file.name)
        if dataset != prepared.spec.name:
            raise ValueError(f"{file}: table of dataset {dataset!r}, but {prepared.root} holds {prepared.spec.name!r}")
        if split not in prepared.splits:
            raise ValueError(f"{file}: unknown split {split!r}; {prepared.root} has {list(prepared.splits)}")
        table = load_reference_table(file, prepared.rows(split))
        name = table_name(split, scenario)
        index["reference"][name] = {
            "file": f"{name}.npy",
            "split": split,
            "missing_type": scenario.missing_type,
            "rate": scenario.rate,
            "rows": len(table),
            "sha256": _save_npy(prepared.root / MISSING_DIR / "reference" / f"{name}.npy", table),
            "counts": counts(table),
            "source": file.name,
        }
        names.append(name)
    atomic_write_json(prepared.root / MISSING_DIR / INDEX_NAME, index)
    return names
