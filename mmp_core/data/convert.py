"""`mmp prepare`: raw dataset layouts (or the reference's arrow files) -> a prepared directory.

Raw layouts (docs/data.md), one reader each in `mmp_core.data.layouts`: MM-IMDb (and the embedded dataset,
`layouts.mmimdb`), UPMC Food-101 (`layouts.food101`), Hateful Memes (`layouts.hateful_memes`); the reference's
arrow files are read by `layouts.reference_arrow`.

Conversion streams: samples are read, their images fully decoded (checked) by a thread pool in bounded
windows, and written in record batches, so memory stays bounded on the full datasets. The output directory
is built under a temporary name and renamed into place; its `manifest.json` records row counts, SHA-256
checksums, label names, task, natural-missing and skipped-sample counts and the dataset fingerprint.
"""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmp_core.data.arrow import ArrowSplitWriter, arrow_schema, natural_missing_codes
from mmp_core.data.datasets import get_spec
from mmp_core.data.errors import BAD_SAMPLE_KINDS, BadSampleError, DataError
from mmp_core.data.layouts.food101 import Food101Layout
from mmp_core.data.layouts.hateful_memes import HateMemesLayout
from mmp_core.data.layouts.mmimdb import MMIMDbLayout
from mmp_core.data.layouts.raw import Sample, Task
from mmp_core.data.layouts.reference_arrow import ArrowLayout
from mmp_core.data.prepared import MANIFEST_FORMAT, MANIFEST_NAME
from mmp_core.data.vocab import VOCAB_NAME, build_vocab, write_vocab
from mmp_core.fileio import atomic_write_json, replace_dir, staging_dir

ON_BAD_SAMPLE = ("fail", "skip")
MAX_SKIPPED_EXAMPLES = 20


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
    from mmp_core.data.missing import import_reference_tables, save_tables

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
