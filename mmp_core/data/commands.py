"""`mmp generate`, `mmp prepare`, `mmp import-missing`, `mmp data-info`."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    from mmp_core.data.datasets import DATASETS
    from mmp_core.missing import DEFAULT_RATES, MISSING_TYPES

    workers = min(4, os.cpu_count() or 1)

    p = subparsers.add_parser(
        "generate", help="write the embedded synthetic dataset in the MM-IMDb raw layout", description=generate_doc()
    )
    p.add_argument("--out", default="data/raw/embedded", help="output directory (replaced; default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the whole dataset (default: %(default)s)")
    p.add_argument("--train", type=int, default=1500, help="training samples (default: %(default)s)")
    p.add_argument("--dev", type=int, default=300, help="validation samples (default: %(default)s)")
    p.add_argument("--test", type=int, default=600, help="test samples (default: %(default)s)")
    p.add_argument(
        "--label-noise", "--label_noise", type=float, default=0.02, help="probability of flipping each genre label"
    )
    p.add_argument(
        "--natural-missing",
        "--natural_missing",
        type=float,
        default=0.0,
        help="fraction of samples written without image file or with an empty plot (half each)",
    )
    p.add_argument("--workers", type=int, default=workers, help="threads (default: %(default)s)")
    p.set_defaults(func=run_generate)

    p = subparsers.add_parser(
        "prepare",
        help="convert a raw dataset (or reference arrow files) to arrow + manifest + missing tables",
        description="Convert a raw dataset layout, or the reference implementation's arrow files, into a prepared "
        "directory: {dataset}_{split}.arrow, manifest.json, missing/ tables (and vocab.txt).",
    )
    p.add_argument(
        "--dataset", required=True, choices=sorted(DATASETS), help="which dataset (its labels, splits and layout)"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--raw", help="raw dataset directory (layout of the dataset, see docs/data.md)")
    source.add_argument(
        "--from-arrow", "--from_arrow", help="directory with the reference's {dataset}_{split}.arrow files"
    )
    p.add_argument("--out", required=True, help="prepared directory (replaced atomically)")
    p.add_argument(
        "--on-bad-sample",
        "--on_bad_sample",
        choices=("fail", "skip"),
        default="fail",
        help="fail on the first bad sample (default) or skip bad samples and count them in the manifest",
    )
    p.add_argument("--workers", type=int, default=workers, help="image-checking threads (default: %(default)s)")
    p.add_argument(
        "--batch-rows", "--batch_rows", type=int, default=256, help="rows per arrow record batch (default: %(default)s)"
    )
    p.add_argument(
        "--vocab-size",
        "--vocab_size",
        type=int,
        default=None,
        help="build vocab.txt from the training text with at most this many tokens (0: none; default: 1024 for "
        "the embedded dataset, 0 otherwise: real datasets use the backbone's vocab)",
    )
    p.add_argument("--missing-seed", "--missing_seed", type=int, default=0, help="seed of the saved missing tables")
    p.add_argument(
        "--missing-rates",
        "--missing_rates",
        type=float,
        nargs="+",
        default=list(DEFAULT_RATES),
        help="rates of the saved tables",
    )
    p.add_argument(
        "--missing-types",
        "--missing_types",
        nargs="+",
        choices=MISSING_TYPES,
        default=list(MISSING_TYPES),
        help="types of the saved tables",
    )
    p.add_argument(
        "--ignore-label",
        "--ignore_label",
        action="append",
        default=[],
        metavar="NAME",
        help="a raw genre to drop instead of rejecting (repeatable; MM-IMDb's non-class genres are dropped already)",
    )
    p.add_argument(
        "--reference-missing",
        "--reference_missing",
        nargs="+",
        default=[],
        metavar="PATH",
        help="reference *_missing_*.pt tables (files or directories) to import into missing/reference/",
    )
    p.set_defaults(func=run_prepare)

    p = subparsers.add_parser(
        "import-missing", help="import the reference implementation's *_missing_*.pt tables into a prepared dataset"
    )
    p.add_argument("--prepared", required=True, help="prepared directory")
    p.add_argument("paths", nargs="+", help="{dataset}_{split}_missing_{type}_{rate}.pt files or directories")
    p.set_defaults(func=run_import_missing)

    p = subparsers.add_parser("data-info", help="summarise a prepared dataset (rows, missing, skipped)")
    p.add_argument("prepared", help="prepared directory")
    p.add_argument("--verify", action="store_true", help="recompute the arrow checksums")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=run_data_info)


def generate_doc() -> str:
    from mmp_core.data import generate

    return generate.__doc__.split("\n\n")[0]


def run_generate(args: argparse.Namespace) -> int:
    from mmp_core.data.generate import GenerateConfig, generate_embedded

    cfg = GenerateConfig(
        train=args.train,
        dev=args.dev,
        test=args.test,
        seed=args.seed,
        label_noise=args.label_noise,
        natural_missing=args.natural_missing,
    )
    start = time.perf_counter()
    sizes = generate_embedded(args.out, cfg, workers=args.workers)
    print(f"wrote the embedded dataset to {args.out}: {sizes} in {time.perf_counter() - start:.1f}s")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from mmp_core.data.convert import prepare
    from mmp_core.missing import MissingScenario

    scenarios = [MissingScenario(t, r) for t in args.missing_types for r in sorted(set(args.missing_rates))]
    vocab_size = args.vocab_size if args.vocab_size is not None else (1024 if args.dataset == "embedded" else 0)
    start = time.perf_counter()
    manifest = prepare(
        args.dataset,
        args.out,
        raw_dir=args.raw,
        arrow_dir=args.from_arrow,
        on_bad_sample=args.on_bad_sample,
        workers=args.workers,
        batch_rows=args.batch_rows,
        vocab_size=vocab_size,
        missing_seed=args.missing_seed,
        missing_scenarios=scenarios,
        ignore_labels=args.ignore_label,
        reference_missing=args.reference_missing,
    )
    print(f"prepared {args.dataset} in {args.out} ({time.perf_counter() - start:.1f}s)")
    _print_summary(manifest)
    return 0


def run_import_missing(args: argparse.Namespace) -> int:
    from mmp_core.data.prepared import load_prepared
    from mmp_core.missing import import_reference_tables

    names = import_reference_tables(load_prepared(args.prepared), args.paths)
    print(f"imported {len(names)} reference table(s) into {args.prepared}/missing/reference: {', '.join(names)}")
    return 0


def run_data_info(args: argparse.Namespace) -> int:
    from mmp_core.data.prepared import load_prepared

    prepared = load_prepared(args.prepared, verify=args.verify)
    if args.json:
        print(json.dumps(prepared.manifest, indent=2))
    else:
        _print_summary(prepared.manifest)
        if args.verify:
            print("checksums: OK")
    return 0


def _print_summary(manifest: dict) -> None:
    print(
        f"dataset {manifest['dataset']} ({manifest['task']}, {manifest['num_labels']} labels, "
        f"metric {manifest['primary_metric']}), fingerprint {manifest['fingerprint'][:12]}"
    )
    for split, entry in manifest["files"].items():
        natural = entry["natural_missing"]
        skipped = entry["skipped"]
        line = f"  {split:<6} {entry['rows']:>7} rows  {entry['file']}  natural missing: text {natural['text']}, image {natural['image']}"
        if skipped:
            line += f"  skipped: {skipped}"
        if entry.get("dropped_labels"):
            line += f"  dropped labels: {entry['dropped_labels']}"
        print(line)
        reasons = entry.get("natural_missing_reasons") or {}
        if reasons:
            counts = Counter(part for reason in reasons.values() for part in reason.split("; "))
            examples = ", ".join(f"{i} ({r})" for i, r in list(reasons.items())[:3])
            print(f"           why: {dict(counts.most_common())}; e.g. {examples}")
    missing = manifest["missing"]
    print(
        f"  missing tables: seed {missing['seed']}, {len(missing['scenarios'])} scenarios per split in {missing['dir']}/"
    )
