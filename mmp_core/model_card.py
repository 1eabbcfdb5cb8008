"""The model card of a pretrained backbone: how it was made and what it does, beside its weights.

`MODEL_CARD.md` is rendered from `pretrain_summary.json` (written by `mmp pretrain`) and, once `mmp probe` has
measured it, `probe.json`; its weights' SHA-256 is recorded in both the card and `card.json`, so a changed file
is caught (`verify_card`).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from mmp_core.fileio import atomic_write_json, atomic_write_text, sha256_file

CARD_NAME = "MODEL_CARD.md"
CARD_DATA_NAME = "card.json"
SUMMARY_NAME = "pretrain_summary.json"
PROBE_NAME = "probe.json"
WEIGHTS_NAME = "model.safetensors"


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def write_card(backbone_dir: str | Path, command: str | None = None) -> Path:
    """Render MODEL_CARD.md and card.json of `backbone_dir` from what lies beside the weights."""
    directory = Path(backbone_dir)
    summary = _read_json(directory / SUMMARY_NAME)
    if summary is None:
        raise FileNotFoundError(f"{directory / SUMMARY_NAME}: no pretraining summary; was it made by `mmp pretrain`?")
    probe = _read_json(directory / PROBE_NAME)
    previous = _read_json(directory / CARD_DATA_NAME) or {}
    data = {
        "weights_sha256": sha256_file(directory / WEIGHTS_NAME),
        "command": command or previous.get("command") or summary.get("command"),
        "machine": previous.get("machine") or f"{platform.machine()}, {summary.get('threads')} threads",
    }
    atomic_write_json(directory / CARD_DATA_NAME, data)
    return atomic_write_text(directory / CARD_NAME, render_card(summary, probe, data))


def verify_card(backbone_dir: str | Path) -> str:
    """The weights' SHA-256, checked against card.json; a mismatch names both values."""
    directory = Path(backbone_dir)
    data = _read_json(directory / CARD_DATA_NAME)
    if data is None:
        raise FileNotFoundError(f"{directory / CARD_DATA_NAME}: no model card data")
    actual = sha256_file(directory / WEIGHTS_NAME)
    if actual != data["weights_sha256"]:
        raise ValueError(
            f"{directory / WEIGHTS_NAME}: SHA-256 {actual} differs from the model card's {data['weights_sha256']}"
        )
    return actual


def render_card(summary: dict, probe: dict | None, data: dict) -> str:
    params = summary["params"]
    heldout = summary.get("heldout") or {}
    minutes = summary["seconds"] / 60
    lines = [
        "# Embedded backbone: a small ViLT pretrained on captioned scenes",
        "",
        f"A {summary['parameters']:,d}-parameter ViLT ({summary['num_hidden_layers']} layers, hidden "
        f"{summary['hidden_size']}, {params['image']['patch_size']} px patches, {params['text_positions']} text "
        f"positions, {summary['vocab_size']} tokens) that stands in for `dandelin/vilt-b32-mlm` on the embedded "
        "data. It is made by mmp's own `mmp pretrain` and loaded like any downloaded checkpoint "
        "(`model.safetensors`, `config.json`, `vocab.txt`).",
        "",
        "## How it was made",
        "",
        f"- Command: `{data['command']}`" if data.get("command") else "- Command: not recorded",
        f"- Corpus: {summary['pairs']:,d} generated captioned scenes (`corpus: {params['corpus']}`, seed "
        f"{params['seed']}), plus {heldout.get('heldout_pairs', 0):,d} held-out scenes it never trained on.",
        f"- {summary['steps']:,d} steps of {params['batch_size']} pairs ({params['epochs']} epochs), lr "
        f"{params['lr']}, {params['precision']}; {minutes:.1f} minutes on {data['machine']}.",
        "- Parameters:",
        "",
        "```yaml",
        *[f"{key}: {json.dumps(value)}" for key, value in params.items()],
        "```",
        "",
        "## Held-out image-text matching",
        "",
        f"On {heldout.get('heldout_pairs', 0):,d} scenes it never trained on: matching accuracy (half matched pairs, "
        "a quarter hard negatives, a quarter another scene's text), accuracy against hard negatives alone, and "
        "image-to-text retrieval recall@1 among 100 candidate texts.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in heldout.items() if key.startswith(("itm_accuracy", "retrieval"))],
        "",
        "Last epoch's training losses: "
        + ", ".join(f"{key} {value}" for key, value in heldout.items() if key.endswith("_loss"))
        + ".",
        "",
    ]
    if probe:
        metric = probe["metric"]
        lines += [
            "## Linear probes on the embedded benchmark",
            "",
            f"Logistic regression on the frozen pooled [CLS] (train split {probe['train_samples']}, test split "
            f"{probe['test_samples']}), test {metric}:",
            "",
            "| input | " + metric + " |",
            "|---|---|",
            *[f"| {name} | {probe[name][metric]:.4f} |" for name in ("complete", "text missing", "image missing")],
            "",
        ]
        if probe.get("reference"):
            lines += [f"Reference: {probe['reference']}", ""]
    lines += ["## Weights", "", f"`model.safetensors` SHA-256: `{data['weights_sha256']}`", ""]
    return "\n".join(lines)
