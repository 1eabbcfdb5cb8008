"""`mmp demo`, `mmp pretrain`, `mmp train`, `mmp evaluate`: the model stages of the pipeline.

Each reads its section of params.yaml (the one schema in mmp_core.config) and the files the stage before it
wrote; nothing else. They are what `dvc.yaml` runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_PARAMS = "params.yaml"


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the prompt model on a random batch and print shapes")
    parser.add_argument("--backbone", default="small:tiny", help="backbone source (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run_demo)

    parser = subparsers.add_parser(
        "pretrain", help="pretrain a small ViLT on generated captioned scenes or a prepared dataset's pairs"
    )
    parser.add_argument("--prepared", help="prepared dataset directory (pretrain.corpus: prepared)")
    parser.add_argument("--out", required=True, help="backbone directory to write (save_pretrained + vocab.txt)")
    parser.add_argument("--params", default=DEFAULT_PARAMS)
    parser.set_defaults(func=run_pretrain)

    parser = subparsers.add_parser("train", help="train one method's prompts with DeepSpeed")
    parser.add_argument("--method", required=True, choices=("baseline", "attention", "input"))
    parser.add_argument("--prepared", required=True, help="prepared dataset directory")
    parser.add_argument("--out", required=True, help="output directory (adapter/, train_summary.json, dvclive/)")
    parser.add_argument(
        "--checkpoint-dir", help="resumable checkpoints (default: .checkpoints/<method>); removed on success"
    )
    parser.add_argument("--params", default=DEFAULT_PARAMS)
    parser.set_defaults(func=run_train)

    parser = subparsers.add_parser("evaluate", help="evaluate an adapter on the missing-scenario grid")
    parser.add_argument("--method", required=True, choices=("baseline", "attention", "input"))
    parser.add_argument("--prepared", required=True, help="prepared dataset directory")
    parser.add_argument("--adapter", required=True, help="adapter directory written by mmp train")
    parser.add_argument("--out", required=True, help="output directory (metrics.json, grid.tsv, curves/)")
    parser.add_argument("--params", default=DEFAULT_PARAMS)
    parser.set_defaults(func=run_evaluate)


def run_pretrain(args: argparse.Namespace) -> int:
    from mmp_core.config import PretrainParams, load_section
    from mmp_core.pretrain import pretrain, scene_tokenizer

    params = load_section(args.params, "pretrain", PretrainParams)
    if params.corpus == "scenes":
        tokenizer = scene_tokenizer()
    else:
        from mmp_core.data import build_tokenizer, load_prepared

        if not args.prepared:
            raise ValueError("pretrain.corpus is 'prepared': pass --prepared DIR (a prepared dataset with vocab.txt)")
        tokenizer = build_tokenizer(prepared=load_prepared(args.prepared))
    summary = pretrain(params, tokenizer, args.out, prepared_dir=args.prepared)
    heldout = summary["heldout"] or summary["history"][-1]
    print(
        f"pretrained a {summary['parameters']:,d}-parameter ViLT on {summary['pairs']} pairs in {summary['seconds']} s: "
        + ", ".join(f"{key} {value}" for key, value in heldout.items() if key not in ("epoch", "seconds"))
        + f" -> {args.out}"
    )
    return 0


def run_train(args: argparse.Namespace) -> int:
    from mmp_core.config import TrainParams, load_section
    from mmp_core.train import shutdown_distributed, train, training_data

    params = load_section(args.params, "train", TrainParams)
    data = training_data(args.prepared, params)
    checkpoint_dir = args.checkpoint_dir or str(Path(".checkpoints") / args.method)
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
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from mmp_core.config import EvaluateParams, TrainParams, load_section
    from mmp_core.evaluate import evaluate_adapter

    params = load_section(args.params, "evaluate", EvaluateParams)
    train_params = load_section(args.params, "train", TrainParams)
    document = evaluate_adapter(args.prepared, args.adapter, args.method, train_params, params, args.out)
    head = document["headline"]
    metric = document["primary_metric"]
    print(
        f"[{args.method}] test {metric} {head[metric]:.4f} at {head['missing_type']} missing "
        f"{head['missing_rate']:.0%}; {len(document['grid'])} grid cells -> {Path(args.out) / 'metrics.json'}"
    )
    return 0


def run_demo(args: argparse.Namespace) -> int:
    import torch

    from mmp_core.backbone import load_backbone
    from mmp_core.prompts import MissingAwarePromptConfig, MissingAwarePromptModel

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
