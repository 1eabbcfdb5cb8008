"""Compare two output directories of bench/tiny_run.py file by file and print a table.

    python bench/compare_outputs.py /tmp/before /tmp/after

- `.safetensors`: the same tensor names, dtypes, shapes and bytes (bitwise), and the same metadata;
- `.json` / `.jsonl`: equal after dropping wall-clock fields (VOLATILE_KEYS) and writing each directory's own
  path as `<OUT>`;
- `.tsv`: equal after dropping a `timestamp` column (dvclive's) and the paths as above;
- any other file: equal bytes (after the paths as above, for text files that name them).

Scratch that is not an output (logs/, cache/, checkpoints/) is skipped. Exit status 1 if any file differs or is
on one side only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SKIP_DIRS = ("logs", "cache", "checkpoints")
# Wall-clock and host fields: they differ between two runs of the same code.
VOLATILE_KEYS = {"seconds", "time", "timestamp", "created", "created_at", "wall_s", "elapsed", "duration"}


def _volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or key.endswith(("_seconds", "_time", "_at")) or "per_second" in key


def _clean(value, dropped: set[str]):
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            if _volatile(key):
                dropped.add(key)
            else:
                kept[key] = _clean(item, dropped)
        return kept
    if isinstance(value, list):
        return [_clean(item, dropped) for item in value]
    return value


def _text(path: Path, root: Path) -> str:
    return path.read_text(encoding="utf-8").replace(str(root), "<OUT>")


def compare_json(a: Path, b: Path, root_a: Path, root_b: Path) -> tuple[bool, str]:
    dropped: set[str] = set()
    if a.suffix == ".jsonl":
        left = [_clean(json.loads(line), dropped) for line in _text(a, root_a).splitlines() if line.strip()]
        right = [_clean(json.loads(line), dropped) for line in _text(b, root_b).splitlines() if line.strip()]
    else:
        left, right = (_clean(json.loads(_text(a, root_a)), dropped), _clean(json.loads(_text(b, root_b)), dropped))
    note = f"dropped {', '.join(sorted(dropped))}" if dropped else ""
    if left == right:
        return True, note
    return False, (note + "; " if note else "") + _first_difference(left, right)


def _first_difference(left, right, where: str = "") -> str:
    if isinstance(left, dict) and isinstance(right, dict):
        for key in sorted(set(left) | set(right)):
            if key not in left or key not in right:
                return f"key {where}/{key} on one side only"
            if left[key] != right[key]:
                return _first_difference(left[key], right[key], f"{where}/{key}")
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        for i, (x, y) in enumerate(zip(left, right, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    return f"{where or '/'}: {str(left)[:80]} != {str(right)[:80]}"


def compare_tsv(a: Path, b: Path, root_a: Path, root_b: Path) -> tuple[bool, str]:
    def rows(path: Path, root: Path) -> tuple[list[list[str]], bool]:
        lines = [line.split("\t") for line in _text(path, root).splitlines()]
        if lines and "timestamp" in lines[0]:
            column = lines[0].index("timestamp")
            return [row[:column] + row[column + 1 :] for row in lines], True
        return lines, False

    (left, dropped), (right, _) = rows(a, root_a), rows(b, root_b)
    note = "dropped timestamp" if dropped else ""
    return left == right, note if left == right else f"{note} first differing row: " + next(
        (f"{i}: {x} != {y}" for i, (x, y) in enumerate(zip(left, right, strict=False)) if x != y),
        f"{len(left)} vs {len(right)} rows",
    )


def compare_safetensors(a: Path, b: Path) -> tuple[bool, str]:
    from safetensors import safe_open

    def tensors(path: Path) -> tuple[dict, dict]:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}, handle.metadata() or {}  # noqa: SIM118

    (left, meta_a), (right, meta_b) = tensors(a), tensors(b)
    if sorted(left) != sorted(right):
        return False, f"tensor names differ: {sorted(set(left) ^ set(right))[:5]}"
    for name in sorted(left):
        x, y = left[name], right[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            return False, f"{name}: {x.dtype}{tuple(x.shape)} != {y.dtype}{tuple(y.shape)}"
        if x.contiguous().view(-1).view(_int_dtype(x)).tolist() != y.contiguous().view(-1).view(_int_dtype(y)).tolist():
            return False, f"{name}: values differ (max |diff| {(x.double() - y.double()).abs().max().item():.3g})"
    if meta_a != meta_b:
        return False, "metadata differs"
    return True, f"{len(left)} tensors bitwise equal"


def _int_dtype(tensor):
    import torch

    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]


def compare_bytes(a: Path, b: Path, root_a: Path, root_b: Path) -> tuple[bool, str]:
    left, right = a.read_bytes(), b.read_bytes()
    if left == right:
        return True, ""
    try:
        if _text(a, root_a) == _text(b, root_b):
            return True, "equal with paths as <OUT>"
    except UnicodeDecodeError:
        pass
    return False, f"{len(left)} vs {len(right)} bytes"


def files(root: Path) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() and path.relative_to(root).parts[0] not in SKIP_DIRS
    }


def kind(name: str) -> str:
    if name.endswith(".safetensors"):
        return "tensors"
    if name.endswith((".json", ".jsonl")):
        return "json"
    if name.endswith(".tsv"):
        return "tsv"
    return "bytes"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--all", action="store_true", help="list every file, not only the differing ones")
    args = parser.parse_args()
    root_a, root_b = args.before.resolve(), args.after.resolve()
    left, right = files(root_a), files(root_b)
    rows, per_area = [], {}
    for name in sorted(left | right):
        if name not in left or name not in right:
            ok, note = False, f"only in {'before' if name in left else 'after'}"
        elif kind(name) == "tensors":
            ok, note = compare_safetensors(root_a / name, root_b / name)
        elif kind(name) == "json":
            ok, note = compare_json(root_a / name, root_b / name, root_a, root_b)
        elif kind(name) == "tsv":
            ok, note = compare_tsv(root_a / name, root_b / name, root_a, root_b)
        else:
            ok, note = compare_bytes(root_a / name, root_b / name, root_a, root_b)
        rows.append((name, kind(name), ok, note))
        area = name.split("/")[0] if "/" in name else "."
        count = per_area.setdefault(area, [0, 0])
        count[0] += 1
        count[1] += ok
    shown = rows if args.all else [row for row in rows if not row[2]]
    if shown:
        width = max(len(row[0]) for row in shown)
        print(f"{'file':<{width}}  {'kind':<7}  {'result':<9}  note")
        for name, how, ok, note in shown:
            print(f"{name:<{width}}  {how:<7}  {'identical' if ok else 'DIFFERS':<9}  {note}")
        print()
    print(f"{'area':<12} {'files':>6} {'identical':>10}")
    for area, (n, same) in sorted(per_area.items()):
        print(f"{area:<12} {n:>6} {same:>10}")
    identical = sum(ok for _, _, ok, _ in rows)
    by_kind = {}
    for _, how, ok, _ in rows:
        count = by_kind.setdefault(how, [0, 0])
        count[0] += 1
        count[1] += ok
    print(f"{'total':<12} {len(rows):>6} {identical:>10}")
    print("by kind: " + ", ".join(f"{how} {same}/{n}" for how, (n, same) in sorted(by_kind.items())))
    return 0 if identical == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
