"""What does the frozen backbone know beyond its pooled [CLS]? Per-genre linear probes on richer frozen features.

`mmp probe` fits a logistic regression on the pooled [CLS], the only vector the baseline's pooler and head see.
This script fits the same regression, per input (complete, every text missing, every image missing), on:
  * cls: the pooled [CLS] (as `mmp probe`);
  * cls+tokens: the pooled [CLS] with the mean of the last layer's text tokens and of its image tokens.
Where `cls+tokens` is clearly above `cls` for a label, the backbone has read that label's cue but does not carry it
to the [CLS]: room that prompts, which change what every layer attends to, can use and a new head cannot.

Usage:
    python bench/probe_tokens.py --backbone backbones/embedded --prepared data/prepared
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import f1_score

from mmp_core.backbone import load_backbone, resolve_backbone_dir
from mmp_core.data import ImageConfig, MultimodalDataset, build_tokenizer, collate, load_prepared
from mmp_core.missing import COMPLETE, IMAGE_MISSING, TEXT_MISSING
from mmp_core.probe import fit_probe

INPUTS = {"complete": COMPLETE, "text missing": TEXT_MISSING, "image missing": IMAGE_MISSING}


@torch.no_grad()
def frozen_features(backbone, dataset, batch_size: int = 64) -> dict[str, np.ndarray]:
    """{'cls': (N, H) pooled [CLS], 'tokens': (N, 2H) mean text tokens (unpadded) ‖ mean image tokens}."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    backbone.eval()
    cls, tokens = [], []
    with torch.random.fork_rng():
        torch.manual_seed(0)  # ViLT draws its image patch order from the global RNG
        for batch in loader:
            out = backbone(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"],
                pixel_mask=batch["pixel_mask"],
            )
            text_len = batch["input_ids"].shape[1]
            hidden = out.last_hidden_state
            text_mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            text = (hidden[:, :text_len] * text_mask).sum(1) / text_mask.sum(1).clamp(min=1)
            tokens.append(torch.cat([text, hidden[:, text_len:].mean(1)], -1).float().numpy())
            cls.append(out.pooler_output.float().numpy())
    return {"cls": np.concatenate(cls), "tokens": np.concatenate(tokens)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="backbones/embedded")
    parser.add_argument("--prepared", default="data/prepared")
    parser.add_argument("--max-text-len", type=int, default=40)
    parser.add_argument("--image", type=int, nargs=3, default=[96, 160, 16], metavar=("SHORTER", "LONGER", "PATCH"))
    args = parser.parse_args(argv)

    start = time.perf_counter()
    backbone = load_backbone(args.backbone)
    tokenizer = build_tokenizer(backbone_dir=resolve_backbone_dir(args.backbone))
    prepared = load_prepared(args.prepared)
    if prepared.spec.task != "multilabel":
        raise SystemExit(f"{args.prepared}: per-label F1 needs a multi-label dataset, this one is {prepared.spec.task}")
    labels = prepared.spec.label_names
    print(f"| input | features | F1-Macro | {' | '.join(labels)} |")
    print("|---" * (len(labels) + 3) + "|")
    for name, code in INPUTS.items():
        features, targets = {}, {}
        for split in ("train", "test"):
            dataset = MultimodalDataset(
                prepared,
                split,
                tokenizer,
                image_config=ImageConfig(*args.image),
                max_text_len=args.max_text_len,
                missing=np.full(prepared.rows(split), code, dtype=np.int8),
            )
            features[split], targets[split] = frozen_features(backbone, dataset), dataset.labels
        for label, keys in (("cls", ["cls"]), ("cls+tokens", ["cls", "tokens"])):
            train_x, test_x = (np.concatenate([features[s][k] for k in keys], 1) for s in ("train", "test"))
            model = fit_probe("multilabel", train_x, targets["train"])
            predicted = model.predict_proba(test_x) > 0.5
            per_label = f1_score(targets["test"], predicted, average=None, zero_division=0)
            cells = " | ".join(f"{v:.2f}" for v in per_label)
            print(f"| {name} | {label} | **{per_label.mean():.3f}** | {cells} |")
    print(f"\n(train {prepared.rows('train')}, test {prepared.rows('test')}; {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
