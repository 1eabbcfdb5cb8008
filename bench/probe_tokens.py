"""What does the frozen backbone know beyond its pooled [CLS]? Per-genre linear probes on richer frozen features.

`mmp probe` fits a logistic regression on the pooled [CLS], the only vector the baseline's pooler and head see.
This script fits the same regression, per input (complete, every text missing, every image missing), on:
  * cls: the pooled [CLS] (as `mmp probe`);
  * cls+tokens: the pooled [CLS] with the mean of the last layer's text tokens and of its image tokens.
Where `cls+tokens` is clearly above `cls` for a label, the backbone has read that label's cue but does not carry it
to the [CLS]: room that prompts, which change what every layer attends to, can use and a new head cannot.

Last, a multinomial regression on the pooled [CLS] tells the three inputs apart (test accuracy; chance 1/3): if it
is near 1, a missing modality is plain to see for the baseline's own trainable pooler and head, which then need no
missing-aware prompts to treat the missing cases differently.

Usage:
    python bench/probe_tokens.py --backbone backbones/embedded --prepared data/prepared
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import f1_score

from mmp_core.data import ImageConfig, MultimodalDataset, build_tokenizer, load_prepared
from mmp_core.model.backbone import load_backbone, resolve_backbone_dir
from mmp_core.pretraining.probe import PROBE_INPUTS, fit_probe, frozen_outputs


def cls_and_tokens(batch: dict, out) -> torch.Tensor:
    """(B, 3H): pooled [CLS] ‖ mean of the unpadded text tokens ‖ mean of the image tokens (last layer)."""
    text_len = batch["input_ids"].shape[1]
    hidden = out.last_hidden_state
    text_mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    text = (hidden[:, :text_len] * text_mask).sum(1) / text_mask.sum(1).clamp(min=1)
    return torch.cat([out.pooler_output, text, hidden[:, text_len:].mean(1)], -1)


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
    pooled = {"train": [], "test": []}  # the [CLS] of each input, for the missing-case probe
    for name, code in PROBE_INPUTS.items():
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
            features[split], targets[split] = frozen_outputs(backbone, dataset, cls_and_tokens), dataset.labels
        hidden = backbone.config.hidden_size
        for split in pooled:
            pooled[split].append(features[split][:, :hidden])
        for label, width in (("cls", hidden), ("cls+tokens", 3 * hidden)):
            train_x, test_x = features["train"][:, :width], features["test"][:, :width]
            model = fit_probe("multilabel", train_x, targets["train"])
            predicted = model.predict_proba(test_x) > 0.5
            per_label = f1_score(targets["test"], predicted, average=None, zero_division=0)
            cells = " | ".join(f"{v:.2f}" for v in per_label)
            print(f"| {name} | {label} | **{per_label.mean():.3f}** | {cells} |")
    cases = {split: np.repeat(np.arange(len(PROBE_INPUTS)), [len(x) for x in pooled[split]]) for split in pooled}
    which = fit_probe("multiclass", np.concatenate(pooled["train"]), cases["train"])
    accuracy = (which.predict(np.concatenate(pooled["test"])) == cases["test"]).mean()
    print(f"\nWhich input ({' / '.join(PROBE_INPUTS)}) from the pooled [CLS]: test accuracy {accuracy:.3f}")
    print(f"\n(train {prepared.rows('train')}, test {prepared.rows('test')}; {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
