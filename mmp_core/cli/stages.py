"""`mmp demo`, `mmp pretrain`, `mmp train`, `mmp evaluate`, `mmp aggregate`, `mmp probe` (the model stages).

Each reads its section of params.yaml (the one schema in mmp_core.config) and the files the stage before it
wrote; nothing else. They are what `dvc.yaml` runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mmp_core.config import METHODS
from mmp_core.params_file import PARAMS_HELP, SET_HELP

METHOD_CHOICES = tuple(METHODS)


def _stage_parser(subparsers, name: str, help: str, description: str, sections: dict) -> argparse.ArgumentParser:
    """A stage's parser whose help ends with every parameter it reads, from the schema (mmp_core.config), with
    the values of the project's params.yaml when there is one (the schema's defaults otherwise, or when it cannot
    be read: help never fails on it)."""
    import textwrap

    from mmp_core.config import describe_fields
    from mmp_core.params_file import PARAMS_NAME, find_project_root, read_params, validate_section

    change = "change with --set, or `dvc exp run -S` in the pipeline"
    lines = [f"parameters read from params.yaml ({change}); none in this project, so the schema's defaults:"]
    path = None
    try:
        root = find_project_root()
        path = None if root is None or not (root / PARAMS_NAME).is_file() else root / PARAMS_NAME
        document = None if path is None else read_params(path)
        for section, model in sections.items():
            if document is not None:
                validate_section(document, section, model, str(path))
            given = None if document is None else (document.get(section) or {})
            lines += ["  " + line for line in describe_fields(model, section, given)]
        if document is not None:
            lines[0] = (
                f"parameters read from {path} ({change}); its values, `(default)` where it sets none, "
                "`(default X)` after a value that differs from the schema's default X:"
            )
    except (OSError, ValueError) as error:
        lines = [
            f"parameters read from {path or PARAMS_NAME} ({change}); it cannot be read, so the schema's defaults:",
            f"  {str(error).splitlines()[0]}",
        ]
        for section, model in sections.items():
            lines += ["  " + line for line in describe_fields(model, section)]
    return subparsers.add_parser(
        name,
        help=help,
        description=textwrap.fill(description, 100),
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_params_options(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("--params", metavar="PATH", help=PARAMS_HELP)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP.format(example=example)
    )


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    from mmp_core.config import EvaluateParams, PretrainParams, TrainParams

    parser = subparsers.add_parser("demo", help="run the prompt model on a random batch and print shapes")
    parser.add_argument("--backbone", default="small:tiny", help="backbone source (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=6, help="samples in the random batch (default: %(default)s)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random weights and inputs (default: %(default)s)"
    )
    parser.set_defaults(func=run_demo)

    parser = _stage_parser(
        subparsers,
        "pretrain",
        "pretrain a small ViLT on generated captioned scenes or a prepared dataset's pairs",
        "Pretrain a small ViLT (image-text matching with hard negatives, masked language modelling, image-text "
        "contrast) on generated captioned scenes (pretrain.corpus: scenes; the embedded backbone) or on a prepared "
        "dataset's complete training pairs (pretrain.corpus: prepared), its validation split's complete pairs held "
        "out for the matching metrics. From scratch (pretrain.config) a prepared dataset needs its vocab.txt "
        "(prepare with --vocab-size N); with --init DIR it continues from a pretrained backbone, its vocabulary "
        "extended with the dataset's words. Texts fill pretrain.text_positions; images use pretrain.image. An "
        "interrupted run resumes from its latest checkpoint when run again.",
        {"pretrain": PretrainParams},
    )
    parser.add_argument("--prepared", help="prepared dataset directory (pretrain.corpus: prepared)")
    parser.add_argument("--out", required=True, help="backbone directory to write (save_pretrained + vocab.txt)")
    parser.add_argument(
        "--init",
        metavar="DIR",
        help="continue pretraining from this backbone directory, e.g. backbones/embedded (overrides pretrain.init)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        help="resumable checkpoints (default: a folder under .checkpoints/ named after --out); removed on success",
    )
    _add_params_options(parser, "pretrain.epochs=2")
    parser.set_defaults(func=run_pretrain)

    parser = _stage_parser(
        subparsers,
        "train",
        "train one method's prompts with DeepSpeed",
        "Train one method's prompts over the frozen backbone; reads the train section of params.yaml. In the DVC "
        "pipeline prefer `dvc exp run -S train.lr=0.003` (tracked, compared with `dvc exp show`); --set is for "
        "one-off runs outside it.",
        {"train": TrainParams},
    )
    parser.add_argument("--method", required=True, choices=METHOD_CHOICES, help="which prompts to train")
    parser.add_argument("--prepared", required=True, help="prepared dataset directory (written by mmp prepare)")
    parser.add_argument("--out", required=True, help="output directory (adapter/, train_summary.json, dvclive/)")
    parser.add_argument(
        "--checkpoint-dir",
        help="resumable checkpoints (default: a folder under .checkpoints/ named after --out); removed on success",
    )
    _add_params_options(parser, "train.lr=3e-3 or train.image.shorter_side=64")
    parser.set_defaults(func=run_train)

    parser = _stage_parser(
        subparsers,
        "evaluate",
        "evaluate an adapter on the missing-scenario grid",
        "Evaluate an adapter on the test split's missing-scenario grid; reads the evaluate and train sections of "
        "params.yaml (train: the backbone and input settings the adapter was trained with).",
        {"evaluate": EvaluateParams, "train": TrainParams},
    )
    parser.add_argument("--method", required=True, choices=METHOD_CHOICES, help="the method the adapter was trained as")
    parser.add_argument("--prepared", required=True, help="prepared dataset directory (written by mmp prepare)")
    parser.add_argument("--adapter", required=True, help="adapter directory written by mmp train")
    parser.add_argument("--out", required=True, help="output directory (metrics.json, grid.tsv, curves/)")
    _add_params_options(parser, "evaluate.batch_size=16")
    parser.set_defaults(func=run_evaluate)

    parser = subparsers.add_parser(
        "aggregate",
        help="fold one method's per-seed evaluations into mean ± sd",
        description="Read results/<method>/seeds/<seed>/metrics.json and models/<method>/seeds/<seed>/"
        "train_summary.json for every seed of params.yaml's `seeds`, and write the method's metrics.json, grid.tsv "
        "and curves/ (each metric the mean over seeds, with its standard deviation; the published adapter is the "
        "seed with the best validation score).",
    )
    parser.add_argument("--method", required=True, choices=METHOD_CHOICES, help="the method whose seeds to fold")
    parser.add_argument("--results", required=True, help="the method's results directory (holds seeds/<seed>/)")
    parser.add_argument("--models", required=True, help="the method's models directory (holds seeds/<seed>/)")
    parser.add_argument("--params", metavar="PATH", help=PARAMS_HELP)
    parser.set_defaults(func=run_aggregate)

    parser = subparsers.add_parser(
        "probe",
        help="linear probes of a frozen backbone's pooled [CLS] on a prepared dataset, per modality",
        description="Fit a logistic regression on the frozen backbone's pooled [CLS] of the train split and score "
        "it on the test split, fed complete, with every text missing and with every image missing. With --card, "
        "the result is saved as probe.json beside the backbone and its MODEL_CARD.md is rendered again.",
    )
    parser.add_argument("--backbone", required=True, help="backbone directory (with vocab.txt), s3:// URI or hub id")
    parser.add_argument("--prepared", required=True, help="prepared dataset directory (written by mmp prepare)")
    parser.add_argument("--max-text-len", type=int, default=40, help="tokens per text (default: %(default)s)")
    parser.add_argument(
        "--image",
        nargs=3,
        type=int,
        default=(96, 160, 16),
        metavar=("SHORTER", "LONGER", "PATCH"),
        help="image resize rule (default: %(default)s, the embedded data's)",
    )
    parser.add_argument("--card", action="store_true", help="save probe.json beside the backbone, update its card")
    parser.set_defaults(func=run_probe)


def run_pretrain(args: argparse.Namespace) -> int:
    import sys

    from mmp_core.config import PretrainParams
    from mmp_core.params_file import load_params
    from mmp_core.pretraining.data import caption_tokenizer, scene_tokenizer
    from mmp_core.pretraining.model_card import write_card
    from mmp_core.pretraining.pretrain import pretrain

    params = load_params(args.params, {"pretrain": PretrainParams}, args.set)["pretrain"]
    if args.init:
        params = params.model_copy(update={"init": args.init})
    if params.corpus == "prepared" and not args.prepared:
        raise ValueError("pretrain.corpus is 'prepared': pass --prepared DIR (a prepared dataset)")
    if params.init:
        tokenizer = None  # the init backbone's vocabulary, extended with the corpus's words
    elif params.corpus == "scenes":
        tokenizer = scene_tokenizer()
    elif params.corpus == "captions":
        tokenizer = caption_tokenizer()  # the shipped vocabulary, then the captions' number words and plurals
    else:
        from mmp_core.data import build_tokenizer, load_prepared

        prepared = load_prepared(args.prepared)
        if prepared.vocab_path is None:
            raise ValueError(
                f"{args.prepared} has no vocab.txt: prepare it with --vocab-size N to pretrain from scratch, or "
                "continue from a pretrained backbone with --init DIR (its vocabulary extended with the data's words)"
            )
        tokenizer = build_tokenizer(prepared=prepared)
    # Default scratch: one folder per output folder, as `mmp train` does.
    checkpoint_dir = args.checkpoint_dir or str(
        Path(".checkpoints") / ("pretrain-" + Path(args.out).resolve().as_posix().strip("/").replace("/", "_"))
    )
    summary = pretrain(params, tokenizer, args.out, prepared_dir=args.prepared, checkpoint_dir=checkpoint_dir)
    write_card(args.out, command="mmp " + " ".join(sys.argv[1:]))
    heldout, last = summary["heldout"], summary["history"][-1]
    measured = "no held-out pairs"
    if heldout:
        measured = f"held-out ({heldout['heldout_pairs']} pairs) " + ", ".join(
            f"{key} {value}" for key, value in heldout.items() if key.startswith(("itm_accuracy", "retrieval"))
        )
    print(
        f"pretrained a {summary['parameters']:,d}-parameter ViLT on {summary['pairs']} pairs in {summary['seconds']} s: "
        f"{measured}; last epoch's training "
        + ", ".join(
            f"{key} {value}" for key, value in last.items() if key.endswith("_loss") or key.startswith("train_")
        )
        + f" -> {args.out}"
    )
    if summary["init"]:
        init = summary["init"]
        print(
            f"continued from {init['backbone']}: vocabulary {init['vocab_before']} -> {init['vocab_after']} tokens "
            f"({init['rows_from_pieces']} new rows from their WordPiece pieces, {init['rows_from_mean']} from the "
            "mean of the existing rows plus noise)"
        )
    for warning in summary["warnings"]:
        print(f"WARNING: {warning}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from mmp_core.config import TrainParams
    from mmp_core.params_file import load_params
    from mmp_core.training.deepspeed_setup import shutdown_distributed
    from mmp_core.training.train import train, training_data

    params = load_params(args.params, {"train": TrainParams}, args.set)["train"]
    data = training_data(args.prepared, params)
    # Default scratch: one folder per output folder, so that two runs with different --out never share (or
    # delete) each other's checkpoints.
    checkpoint_dir = args.checkpoint_dir or str(
        Path(".checkpoints") / Path(args.out).resolve().as_posix().strip("/").replace("/", "_")
    )
    try:
        summary = train(params, args.method, data, args.out, checkpoint_dir)
    finally:
        shutdown_distributed()
    if os.environ.get("RANK", "0") != "0":  # one report per run, from the main rank
        return 0
    metric = summary["metric"]
    print(
        f"[{args.method}] best val {metric} {summary[f'best_val_{metric}']:.4f} at step {summary['best_step']} "
        f"of {summary['steps']} ({summary['seconds']} s) -> {Path(args.out) / 'adapter'}"
    )
    for warning in summary["sanity"].get("warnings", []):
        print(f"[{args.method}] WARNING: {warning} (validation split)")
    if summary.get("still_improving"):
        print(
            f"[{args.method}] NOTE: still improving when its budget of {summary['budget_steps']} steps ended (best "
            f"at step {summary['best_step']}): more steps would likely help, e.g. --set train.min_steps="
            f"{3 * summary['budget_steps']} (early stopping still ends it once validation stops improving)"
        )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from mmp_core.config import EvaluateParams, TrainParams
    from mmp_core.evaluation.evaluate import evaluate_adapter
    from mmp_core.params_file import load_params

    sections = load_params(args.params, {"evaluate": EvaluateParams, "train": TrainParams}, args.set)
    params, train_params = sections["evaluate"], sections["train"]
    document = evaluate_adapter(args.prepared, args.adapter, args.method, train_params, params, args.out)
    head = document["headline"]
    metric = document["primary_metric"]
    print(
        f"[{args.method}] test {metric} {head[metric]:.4f} at {head['missing_type']} missing "
        f"{head['missing_rate']:.0%}; {len(document['grid'])} grid cells -> {Path(args.out) / 'metrics.json'}"
    )
    for warning in document["sanity"].get("warnings", []):
        print(f"[{args.method}] WARNING: {warning} (test split, headline setting)")
    return 0


def run_aggregate(args: argparse.Namespace) -> int:
    from mmp_core.evaluation.seeds import aggregate_method, format_cell, has_spread
    from mmp_core.params_file import read_seeds

    seeds = read_seeds(args.params)
    document = aggregate_method(args.results, args.models, seeds)
    metric, head, sd = document["primary_metric"], document["headline"], document["headline_sd"]
    over = f"over seeds {list(seeds)}" if has_spread(seeds) else f"(seed {seeds[0]})"
    print(
        f"[{args.method}] test {metric} {format_cell(head[metric], sd[metric], 4, seeds)} {over} at "
        f"{head['missing_type']} missing {head['missing_rate']:.0%}; published adapter: seed {document['adapter_seed']}"
        f" -> {Path(args.results) / 'metrics.json'}"
    )
    for warning in document["sanity"].get("warnings", []):
        print(f"[{args.method}] WARNING: {warning}")
    return 0


def run_probe(args: argparse.Namespace) -> int:
    import json

    from mmp_core.data import ImageConfig, build_tokenizer, load_prepared
    from mmp_core.fileio import atomic_write_json
    from mmp_core.model.backbone import load_backbone, resolve_backbone_dir
    from mmp_core.pretraining.model_card import PROBE_NAME, write_card
    from mmp_core.pretraining.probe import PROBE_INPUTS, linear_probe

    directory = resolve_backbone_dir(args.backbone)
    results = linear_probe(
        load_backbone(args.backbone),
        load_prepared(args.prepared),
        build_tokenizer(backbone_dir=directory),
        ImageConfig(*args.image),
        args.max_text_len,
    )
    metric = results["metric"]
    absent = {role: names for role, names in results["absent_labels"].items() if names}
    if absent:  # once, not a scikit-learn warning per label and input
        print(
            "labels never present: "
            + "; ".join(f"{role} split: {', '.join(names)}" for role, names in absent.items())
            + " (a label the train split lacks is never predicted"
            + ("; F1-macro counts each of them as 0)" if metric == "f1_macro" else ")")
        )
    for name in PROBE_INPUTS:
        print(f"{name:<14} {metric} {results[name][metric]:.4f}")
    print(
        f"missing case   accuracy {results['missing_case_accuracy']:.4f} (complete / text / image missing told apart)"
    )
    if args.card:
        atomic_write_json(directory / PROBE_NAME, results)
        print(f"-> {write_card(directory)}")
    else:
        print(json.dumps(results, indent=2))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from mmp_core.model.backbone import load_backbone
    from mmp_core.model.prompts import MissingAwarePromptConfig, MissingAwarePromptModel

    torch.manual_seed(args.seed)
    backbone = load_backbone(args.backbone, seed=args.seed)
    cfg = backbone.config
    size, batch = cfg.image_size, args.batch_size
    inputs = {
        "input_ids": torch.randint(1, cfg.vocab_size, (batch, cfg.max_position_embeddings)),
        "attention_mask": torch.ones(batch, cfg.max_position_embeddings, dtype=torch.long),
        "pixel_values": torch.randn(batch, 3, size, size),
        "pixel_mask": torch.ones(batch, size, size, dtype=torch.long),
        "missing_type": torch.arange(batch) % 3,
    }
    print(f"backbone {args.backbone}: hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, image {size}px")
    print(f"batch: missing_type {inputs['missing_type'].tolist()} (0 complete, 1 text missing, 2 image missing)")
    for prompt_type in ("none", "attention", "input"):
        config = MissingAwarePromptConfig(task="multilabel", num_labels=23, prompt_type=prompt_type)
        model = MissingAwarePromptModel(backbone, config).eval()
        with torch.no_grad():
            embeddings, mask = backbone.embeddings(
                inputs["input_ids"],
                inputs["attention_mask"],
                None,
                inputs["pixel_values"],
                inputs["pixel_mask"],
                None,
                None,
            )
            hidden, num_prompt_tokens = model.encode(embeddings, mask, inputs["missing_type"])
            logits = model(**inputs)
        print(
            f"\n[{prompt_type}] sequence {tuple(embeddings.shape)} -> {tuple(hidden.shape)} "
            f"({num_prompt_tokens} prompt tokens in front); logits {tuple(logits.shape)}; "
            f"prompt params {model.num_prompt_parameters():,d}"
        )
        model.print_trainable_parameters()
    return 0
