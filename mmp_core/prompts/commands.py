"""`mmp demo`: the three prompt types on a small random backbone and a batch with mixed missing types."""

from __future__ import annotations

import argparse


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the prompt model on a random batch and print shapes")
    parser.add_argument("--backbone", default="small:tiny", help="backbone source (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run_demo)


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
