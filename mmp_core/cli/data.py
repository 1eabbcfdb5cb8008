"""`mmp generate`, `mmp prepare`, `mmp import-missing`, `mmp data-info`."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    from mmp_core.config import GenerateParams, PrepareParams
    from mmp_core.data.datasets import DATASETS

    workers = min(4, os.cpu_count() or 1)

    p = subparsers.add_parser(
        "generate", help="write the embedded synthetic dataset in the MM-IMDb raw layout", description=generate_doc()
    )
    p.add_argument("--out", default="data/raw/embedded", help="output directory (replaced; default: %(default)s)")
    _section_flags(p, GenerateParams, "generate")
    p.add_argument("--workers", type=int, default=workers, help="threads (default: %(default)s)")
    p.set_defaults(func=run_generate)

    p = subparsers.add_parser(
        "prepare",
        help="convert a raw dataset (or reference arrow files) to arrow + manifest + missing tables",
        description="Convert a raw dataset layout, or the reference implementation's arrow files, into a prepared "
        "directory: {dataset}_{split}.arrow, manifest.json, missing/ tables (and vocab.txt).",
    )
    p.add_argument("--out", required=True, help="prepared directory (replaced atomically)")
    _section_flags(p, PrepareParams, "prepare", choices={"dataset": sorted(DATASETS)})
    p.add_argument("--workers", type=int, default=workers, help="image-checking threads (default: %(default)s)")
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


def _section_flags(parser: argparse.ArgumentParser, model, section: str, choices: dict | None = None) -> None:
    """--params / --set, and one flag per field of the section's schema (no defaults of its own: a flag given
    overrides the section, which fills in the rest)."""
    from mmp_core.params_file import PARAMS_HELP, SET_HELP

    parser.add_argument("--params", metavar="PATH", help=PARAMS_HELP + " (none: the schema's defaults)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP.format(example=f"{section}.seed=1")
    )
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kwargs = {"default": None, "dest": name, "help": f"{field.description} ({section}.{name})"}
        annotation = str(field.annotation)
        if "tuple" in annotation:
            kwargs.update(nargs="+", type=float if "float" in annotation else str)
        elif "int" in annotation and "float" not in annotation:
            kwargs["type"] = int
        elif "float" in annotation:
            kwargs["type"] = float
        if name in (choices or {}):
            kwargs["choices"] = choices[name]
        parser.add_argument(flag, *([f"--{name}"] if "_" in name else []), **kwargs)


def read_section(args: argparse.Namespace, section: str, model):
    """The stage's parameters: its section of --params (else of the project's params.yaml, if there is one; else
    the schema's defaults), --set overrides, then the flags given, all validated by the one schema."""
    from mmp_core.params_file import PARAMS_NAME, apply_overrides, find_project_root, load_params, validate_section

    path = args.params
    if path is None and (root := find_project_root()) is not None and (root / PARAMS_NAME).is_file():
        path = root / PARAMS_NAME
    if path is None:
        values = apply_overrides({}, args.set, [section]).get(section, {})
    else:
        values = load_params(path, {section: model}, args.set)[section].model_dump()
    flags = {name: getattr(args, name) for name in model.model_fields if getattr(args, name, None) is not None}
    if section == "prepare" and {"raw", "from_arrow"} & set(flags):  # a source on the command line replaces both
        values = {**values, "raw": None, "from_arrow": None}
    source = "the command line" if path is None else f"{path} and the command line"
    return validate_section({section: {**values, **flags}}, section, model, source)


def run_generate(args: argparse.Namespace) -> int:
    from mmp_core.config import GenerateParams
    from mmp_core.data.generate import GenerateConfig, generate_embedded

    params = read_section(args, "generate", GenerateParams)
    start = time.perf_counter()
    if params.layout == "embedded":
        cfg = GenerateConfig(**params.model_dump(exclude={"layout", "classes"}))
        sizes = generate_embedded(args.out, cfg, workers=args.workers)
        print(f"wrote the embedded dataset to {args.out}: {sizes} in {time.perf_counter() - start:.1f}s")
        return 0
    from mmp_core.data.synthetic import SyntheticConfig, generate_synthetic

    if params.natural_missing:
        raise ValueError(f"generate.natural_missing applies to the embedded layout only, not to {params.layout!r}")
    cfg = SyntheticConfig(
        layout=params.layout, seed=params.seed, train=params.train, dev=params.dev, test=params.test,
        classes=params.classes, label_noise=params.label_noise,
    )  # fmt: skip
    sizes = generate_synthetic(args.out, cfg)
    print(
        f"wrote a synthetic {params.layout}-layout dataset (world seed {params.seed}) to {args.out}: {sizes} in "
        f"{time.perf_counter() - start:.1f}s; prepare it with `mmp prepare --dataset {params.layout} --raw {args.out}`"
    )
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from mmp_core.config import PrepareParams
    from mmp_core.data.convert import prepare
    from mmp_core.scenarios import MissingScenario

    params = read_section(args, "prepare", PrepareParams)
    scenarios = [MissingScenario(t, r) for t in params.missing_types for r in sorted(set(params.missing_rates))]
    vocab_size = params.vocab_size if params.vocab_size is not None else (1024 if params.dataset == "embedded" else 0)
    start = time.perf_counter()
    manifest = prepare(
        params.dataset,
        args.out,
        raw_dir=params.raw,
        arrow_dir=params.from_arrow,
        on_bad_sample=params.on_bad_sample,
        workers=args.workers,
        batch_rows=params.batch_rows,
        vocab_size=vocab_size,
        missing_seed=params.missing_seed,
        missing_scenarios=scenarios,
        ignore_labels=list(params.ignore_label),
        reference_missing=list(params.reference_missing),
    )
    print(f"prepared {params.dataset} in {args.out} ({time.perf_counter() - start:.1f}s)")
    _print_summary(manifest)
    _report_vocabulary(args, args.out)
    return 0


def _report_vocabulary(args: argparse.Namespace, out: str) -> float | None:
    """Log the [UNK] rate of the prepared train split's text under the vocabulary training will use (that of
    the parameters file's `train.backbone`; a `small:*` backbone's, or without a backbone: the prepared
    vocab.txt). A backbone that cannot be read here (an s3:// one, a hub id not cached offline, a missing
    directory) is named in one INFO line and not checked: preparing never fails on it."""
    import logging

    from mmp_core.data.inputs import build_tokenizer
    from mmp_core.data.prepared import load_prepared
    from mmp_core.data.vocab import VOCAB_NAME, report_unk_rate
    from mmp_core.model.loading import tokenizer_for
    from mmp_core.params_file import PARAMS_NAME, find_project_root, read_params

    logger = logging.getLogger(__name__)
    path = args.params
    if path is None and (root := find_project_root()) is not None and (root / PARAMS_NAME).is_file():
        path = root / PARAMS_NAME
    backbone = None
    if path is not None:
        train = read_params(path).get("train") or {}
        backbone = train.get("backbone") if isinstance(train, dict) else None
    prepared = load_prepared(out)
    if backbone is not None and not str(backbone).startswith("s3://"):
        backbone = str(backbone)
        try:
            tokenizer = tokenizer_for(backbone, prepared)
        except (OSError, ValueError) as error:
            logger.info("[UNK] rate not checked: no vocabulary of train.backbone %r here (%s)", backbone, error)
            return None
        own = backbone.startswith("small:")
        vocabulary = f"the prepared {VOCAB_NAME}" if own else f"the {VOCAB_NAME} of backbone {backbone!r}"
    elif backbone is None and prepared.vocab_path is not None:
        tokenizer, vocabulary, backbone = build_tokenizer(prepared.vocab_path), f"the prepared {VOCAB_NAME}", "BACKBONE"
    else:
        logger.info("[UNK] rate not checked: train.backbone %s", "is on S3" if backbone else "is not set")
        return None
    texts = prepared.open_split(prepared.spec.train_split).texts()
    vocabulary += f" ({len(tokenizer)} tokens)"
    return report_unk_rate(tokenizer, texts, logger, vocabulary=vocabulary, backbone=backbone, prepared=out)


def run_import_missing(args: argparse.Namespace) -> int:
    from mmp_core.data.missing import import_reference_tables
    from mmp_core.data.prepared import load_prepared

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
