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
from mmp_core.pretraining.checks import MIN_COMPLETE_OVER_SINGLE, MIN_HELDOUT_ITM, chance_bound, own_data_verdict

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


# Parameters that only one corpus reads: the card lists only what applied.
SCENE_ONLY = ("pairs", "heldout", "concept_mlm_probability", "hard_negatives")
NOT_FOR_CAPTIONS = ("concept_mlm_probability", "itc_weight")  # ViLT's objectives only: one MLM rate, no ITC


def applied_params(summary: dict) -> dict:
    """The pretraining parameters that applied: no scene counts or concept masking for a prepared corpus, no
    concept masking or contrast for generic captions, no `config` (the shape) when continuing from `init`, no
    `init` when starting from random weights."""
    params = dict(summary["params"])
    dropped = {"prepared": SCENE_ONLY, "captions": NOT_FOR_CAPTIONS}.get(params.get("corpus"), ())
    for key in dropped:
        params.pop(key, None)
    if params.get("init"):
        params.pop("config", None)
    elif "init" in params:
        del params["init"]
    return params


def render_card(summary: dict, probe: dict | None, data: dict) -> str:
    params = summary["params"]
    own = params.get("corpus") == "prepared"
    heldout = summary.get("heldout") or {}
    losses = (summary.get("history") or [heldout])[-1]
    minutes = summary["seconds"] / 60
    captions = params.get("corpus") == "captions"
    head = _own_head if own else _captions_head if captions else _scenes_head
    lines = head(summary, data)
    lines += [
        f"- {summary['steps']:,d} steps of {params['batch_size']} pairs ({params['epochs']} epochs), lr "
        f"{params['lr']}, {params['precision']}; {minutes:.1f} minutes on {data['machine']}.",
        *_init_lines(summary.get("init")),
        *(
            [f"- Interrupted and resumed from its checkpoint at step {summary['resumed_from_step']:,d}."]
            if summary.get("resumed_from_step")
            else []
        ),
        "- Parameters:",
        "",
        "```yaml",
        *[f"{key}: {json.dumps(value)}" for key, value in applied_params(summary).items()],
        "```",
        "",
        "## Held-out image-text matching",
        "",
        *(_own_heldout(summary) if own else _scenes_heldout(heldout, "pictures" if captions else "scenes")),
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in heldout.items() if key.startswith(("itm_accuracy", "retrieval"))],
        "",
        *[line for warning in summary.get("warnings") or [] for line in (f"**Warning:** {warning}.", "")],
        "Last epoch's training losses: "
        + ", ".join(f"{key} {value}" for key, value in losses.items() if key.endswith("_loss"))
        + ".",
        "",
    ]
    if probe:
        metric = probe["metric"]
        where = f"`{probe.get('dataset')}`" if own else "the embedded benchmark"
        lines += [
            f"## Linear probes on {where}",
            "",
            f"Logistic regression on the frozen pooled [CLS] (train split {probe['train_samples']}, test split "
            f"{probe['test_samples']}), test {metric}:",
            "",
            "| input | " + metric + " |",
            "|---|---|",
            *[f"| {name} | {probe[name][metric]:.4f} |" for name in ("complete", "text missing", "image missing")],
            "",
        ]
        if (separable := probe.get("missing_case_accuracy")) is not None:
            lines += [
                f"Missing-case separability: a logistic regression tells complete, text-missing and image-missing "
                f"inputs apart from the same features at test accuracy {separable:.3f} (chance 0.333).",
                "",
            ]
        if probe.get("reference"):
            lines += [f"Reference: {probe['reference']}", ""]
    if own:
        verdict = own_data_verdict(summary, probe)
        lines += [
            "## The own-data rule",
            "",
            f"Held-out matching accuracy at least {MIN_HELDOUT_ITM} and a complete-input probe at least "
            f"{MIN_COMPLETE_OVER_SINGLE} x the better single-modality probe (README, *Your own data*): {verdict}.",
            "",
        ]
    lines += ["## Weights", "", f"`model.safetensors` SHA-256: `{data['weights_sha256']}`", ""]
    return "\n".join(lines)


def _shape(summary: dict) -> str:
    params = summary["params"]
    return (
        f"A {summary['parameters']:,d}-parameter ViLT ({summary['num_hidden_layers']} layers, hidden "
        f"{summary['hidden_size']}, {params['image']['patch_size']} px patches, {params['text_positions']} text "
        f"positions, {summary['vocab_size']} tokens)"
    )


def _command(data: dict) -> str:
    return f"- Command: `{data['command']}`" if data.get("command") else "- Command: not recorded"


def _scenes_head(summary: dict, data: dict) -> list[str]:
    params, heldout = summary["params"], summary.get("heldout") or {}
    return [
        "# Embedded backbone: a small ViLT pretrained on captioned scenes",
        "",
        f"{_shape(summary)} that stands in for `dandelin/vilt-b32-mlm` on the embedded "
        "data. It is made by mmp's own `mmp pretrain` and loaded like any downloaded checkpoint "
        "(`model.safetensors`, `config.json`, `vocab.txt`).",
        "",
        "## How it was made",
        "",
        _command(data),
        f"- Corpus: {summary['pairs']:,d} generated captioned scenes (`corpus: {params['corpus']}`, seed "
        f"{params['seed']}), plus {heldout.get('heldout_pairs', 0):,d} held-out scenes it never trained on.",
    ]


def _captions_head(summary: dict, data: dict) -> list[str]:
    params, heldout = summary["params"], summary.get("heldout") or {}
    return [
        "# Generic backbone: a small ViLT pretrained on generic captioned pictures",
        "",
        f"{_shape(summary)} that stands in for `dandelin/vilt-b32-mlm` as ViLT was made: pretrained on generic "
        "captions of generic pictures (the stand-in for COCO and Visual Genome: small shapes in named colours and "
        "counts, a dark or bright background, stripes, a sun, a few place and action words), complete pairs only, "
        "with image-text matching (hard negatives: one content fact changed) and whole-word masked language "
        "modelling at one rate for every word; no image-text contrast and no single-modality inputs. Its captions "
        "never use the embedded benchmark's genre cue words (they are in its vocabulary, never in its corpus) and "
        "its pictures never show the benchmark's hearts, smiling face, ringed planet or checkerboard. It loads like "
        "any downloaded checkpoint (`model.safetensors`, `config.json`, `vocab.txt`).",
        "",
        "## How it was made",
        "",
        _command(data),
        f"- Corpus: {summary['pairs']:,d} generated generic captioned pictures (`corpus: {params['corpus']}`, seed "
        f"{params['seed']}), plus {heldout.get('heldout_pairs', 0):,d} held-out pictures it never trained on.",
    ]


def _own_head(summary: dict, data: dict) -> list[str]:
    corpus, init = summary.get("corpus") or {}, summary.get("init")
    dataset = corpus.get("dataset", "?")
    title = f"continued from `{init['backbone']}` on" if init else "pretrained on"
    return [
        f"# Backbone {title} `{dataset}`'s own image-text pairs",
        "",
        f"{_shape(summary)} pretrained by mmp's `mmp pretrain` on the complete image-text pairs of a prepared "
        "dataset (its labels never read). It loads like any downloaded checkpoint (`model.safetensors`, "
        "`config.json`, `vocab.txt`): set `train.backbone` to its directory.",
        "",
        "## How it was made",
        "",
        _command(data),
        f"- Corpus: {corpus.get('train_pairs', summary['pairs']):,d} complete pairs of the "
        f"`{corpus.get('train_split')}` split of the prepared dataset `{dataset}` (`corpus: prepared`, data checksum "
        f"`{corpus.get('data_checksum')}`), plus {corpus.get('heldout_pairs', 0):,d} complete pairs of its "
        f"`{corpus.get('heldout_split')}` split held out (never trained on).",
    ]


def _init_lines(init: dict | None) -> list[str]:
    if not init:
        return []
    return [
        f"- Initialised from `{init['backbone']}` (weights SHA-256 `{init['weights_sha256']}`): matching heads "
        f"{init['heads']['matching']}, MLM head {init['heads']['mlm']}.",
        f"- Vocabulary: {init['vocab_before']:,d} -> {init['vocab_after']:,d} tokens, the init backbone's in its "
        f"order, then the words of {init['words_from']} it lacked: {init['rows_added']:,d} new embedding rows, "
        f"{init['rows_from_pieces']:,d} from the mean of their WordPiece pieces' rows, {init['rows_from_mean']:,d} "
        f"from the mean of the existing rows plus noise ({init['noise']}).",
    ]


def _scenes_heldout(heldout: dict, what: str = "scenes") -> list[str]:
    return [
        f"On {heldout.get('heldout_pairs', 0):,d} {what} it never trained on: matching accuracy (half matched pairs, "
        f"a quarter hard negatives, a quarter another {what[:-1]}'s text), accuracy against hard negatives alone, and "
        "image-to-text retrieval recall@1 among 100 candidate texts."
    ]


def _own_heldout(summary: dict) -> list[str]:
    heldout, corpus = summary.get("heldout") or {}, summary.get("corpus") or {}
    if not heldout:
        return [f"Not measured: the `{corpus.get('heldout_split')}` split has no complete pairs."]
    candidates = next((int(k.rsplit("_", 1)[1]) for k in heldout if k.startswith("retrieval_r1_at_")), None)
    retrieval = (
        f" and image-to-text retrieval recall@1 among {candidates} candidate texts (chance {1 / candidates:.3f})"
        if candidates
        else ""
    )
    return [
        f"On {heldout['heldout_pairs']:,d} pairs of the `{corpus.get('heldout_split')}` split it never trained on: "
        f"matching accuracy (half matched pairs, half another pair's text; chance 0.5, noise bound "
        f"{chance_bound(heldout['heldout_pairs']):.3f}){retrieval}."
    ]
