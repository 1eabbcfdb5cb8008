"""The best F1-Macro any model can reach on the embedded test split, per missing scenario.

The embedded generator decides, for every sample, which genre cues its image and its text show (see
mmp_core/data/generate.py). A *perfect perceiver* sees exactly those cues in the modalities that are present and
nothing else; its best prediction for a genre is the most likely label given the cue states it sees. This script
estimates those probabilities on the training split (P(genre | image cue present/absent/unseen, text cue
present/absent/unseen)), predicts "genre" where the probability is above 0.5 (what a model trained with the
binary cross-entropy and read at sigmoid > 0.5 approximates), and scores it on the test split under the pipeline's
own missing tables. A trained model can only approach these numbers: whatever a method gains over another is
bounded by the distance of the better one to this ceiling.

Also printed: the ceiling with the per-genre decision threshold tuned for F1 on the training split (a model read
at 0.5 cannot do that), and per genre, the ceiling on complete data. With `--adapters`, trained adapters are
scored the same way beside it (F1-Macro per scenario, F1 per genre on complete data), which shows where a
method falls short of what the data allows.

Usage:
    python bench/embedded_ceiling.py                                    # data/raw/embedded + data/prepared
    python bench/embedded_ceiling.py --raw data/raw/embedded --prepared data/prepared --json ceiling.json
    python bench/embedded_ceiling.py --adapters models/*/seeds/0/adapter     # the pipeline's adapters beside it
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from mmp_core.data import load_prepared
from mmp_core.data.generate import SPLIT_CODES, GenerateConfig, draw_sample
from mmp_core.scenarios import MissingScenario

ABSENT, PRESENT, UNSEEN = 0, 1, 2
SPLIT_OF_CODE = {str(code): split for split, code in SPLIT_CODES.items()}


def generator_config(raw: Path) -> GenerateConfig:
    """The GenerateConfig that wrote `raw` (its generator.json)."""
    path = raw / "generator.json"
    if not path.is_file():
        sys.exit(f"{path}: not found; this script needs the embedded dataset as `mmp generate` wrote it")
    written = json.loads(path.read_text(encoding="utf-8"))
    fields = {f.name for f in dataclasses.fields(GenerateConfig)}
    return GenerateConfig(**{k: v for k, v in written.items() if k in fields})


def latent_cues(cfg: GenerateConfig, ids: list[str], labels: np.ndarray, genres: tuple[str, ...]) -> np.ndarray:
    """bool (rows, 2, genres): [:, 0] the image shows the genre's cue, [:, 1] the text does. Each sample is drawn
    again from `cfg`; its genres must be the prepared row's labels, else `cfg` is not what wrote the data."""
    cues = np.zeros((len(ids), 2, len(genres)), dtype=bool)
    for row, sample_id in enumerate(ids):
        sample = draw_sample(cfg, SPLIT_OF_CODE[sample_id[0]], int(sample_id[1:]))
        drawn = [g in sample.record["genres"] for g in genres]
        if sample.record["id"] != sample_id or drawn != labels[row].tolist():
            raise RuntimeError(
                f"sample {sample_id}: generator.json does not match the prepared data (its genres differ); "
                "was the data generated with other parameters?"
            )
        cues[row, 0] = [g in sample.image_cues for g in genres]
        cues[row, 1] = [g in sample.text_cues for g in genres]
    return cues


def visible_states(cues: np.ndarray, missing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image state, text state), each int (rows, genres) in {ABSENT, PRESENT, UNSEEN}; missing 1 = no text, 2 = no image."""
    image = np.where((missing == 2)[:, None], UNSEEN, cues[:, 0].astype(int))
    text = np.where((missing == 1)[:, None], UNSEEN, cues[:, 1].astype(int))
    return image, text


def posterior_table(cues: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """float (genres, 3, 3): P(label | image state, text state), estimated on training samples, where an UNSEEN
    state marginalises over that modality's cue."""
    genres = labels.shape[1]
    table = np.zeros((genres, 3, 3))
    for j in range(genres):
        image, text = cues[:, 0, j], cues[:, 1, j]
        for a in (ABSENT, PRESENT, UNSEEN):
            for b in (ABSENT, PRESENT, UNSEEN):
                keep = np.ones(len(labels), dtype=bool)
                if a != UNSEEN:
                    keep &= image == bool(a)
                if b != UNSEEN:
                    keep &= text == bool(b)
                table[j, a, b] = labels[keep, j].mean() if keep.any() else 0.0
    return table


def probabilities(table: np.ndarray, image: np.ndarray, text: np.ndarray) -> np.ndarray:
    genres = np.arange(table.shape[0])[None, :]
    return table[genres, image, text]


def tuned_thresholds(table: np.ndarray, cues: np.ndarray, labels: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Per genre, the threshold on P(label | cues) that maximises F1 on the training samples under `missing`."""
    probs = probabilities(table, *visible_states(cues, missing))
    best = np.full(labels.shape[1], 0.5)
    for j in range(labels.shape[1]):
        candidates = np.unique(np.r_[probs[:, j], 1.01])
        scores = [f1_score(labels[:, j], probs[:, j] >= t, zero_division=0) for t in candidates]
        best[j] = candidates[int(np.argmax(scores))]
    return best


def run(raw: Path, prepared_dir: Path, rates=(0.0, 0.7, 1.0), missing_seed: int = 0) -> dict:
    """{test_samples, scenarios: [{scenario, f1_macro, f1_macro_tuned_threshold}], complete_per_genre}."""
    prepared = load_prepared(prepared_dir)
    genres = prepared.spec.label_names
    cfg = generator_config(raw)
    train, test = prepared.open_split("train"), prepared.open_split("test")
    train_labels, test_labels = train.labels().astype(bool), test.labels().astype(bool)
    train_cues = latent_cues(cfg, train.ids(), train_labels, genres)
    test_cues = latent_cues(cfg, test.ids(), test_labels, genres)
    table = posterior_table(train_cues, train_labels)

    rows = []
    cells = [("both", 0.0)] + [(t, r) for t in ("text", "image", "both") for r in rates if r > 0.0]
    for missing_type, rate in cells:
        scenario = MissingScenario(missing_type, rate)
        test_missing = prepared.missing_table("test", scenario, missing_seed)
        probs = probabilities(table, *visible_states(test_cues, test_missing))
        at_half = f1_score(test_labels, probs > 0.5, average="macro", zero_division=0)
        thresholds = tuned_thresholds(
            table, train_cues, train_labels, prepared.missing_table("train", scenario, missing_seed)
        )
        tuned = f1_score(test_labels, probs >= thresholds, average="macro", zero_division=0)
        rows.append(
            {
                "scenario": "complete" if rate == 0.0 else str(scenario),
                "f1_macro": round(float(at_half), 4),
                "f1_macro_tuned_threshold": round(float(tuned), 4),
            }
        )
    complete = probabilities(table, *visible_states(test_cues, np.zeros(len(test_labels), dtype=np.int8)))
    per_genre = f1_score(test_labels, complete > 0.5, average=None, zero_division=0)
    return {
        "test_samples": len(test_labels),
        "scenarios": rows,
        "complete_per_genre": {g: round(float(f), 4) for g, f in zip(genres, per_genre, strict=True)},
    }


def adapter_scores(
    prepared_dir: Path, adapter: Path, params_path: Path, scenarios: list[str], missing_seed: int = 0
) -> dict:
    """{scenario: F1-Macro} and per-genre F1 on complete data of one trained adapter on the test split."""
    from mmp_core.config import TrainParams
    from mmp_core.data import collate
    from mmp_core.evaluation.evaluate import run_variants
    from mmp_core.model.loading import backbone_for, split_dataset, tokenizer_for
    from mmp_core.model.prompts import MissingAwarePromptModel
    from mmp_core.params_file import load_section

    train_params = load_section(params_path, "train", TrainParams)
    prepared = load_prepared(prepared_dir)
    model = MissingAwarePromptModel.from_pretrained(backbone_for(train_params), adapter)
    test_set = split_dataset(prepared, "test", tokenizer_for(train_params.backbone, prepared), train_params, None)
    outputs = run_variants(model, test_set.with_missing, collate, prepared.rows("test"), batch_size=64, seed=0)
    scores = {}
    for name in scenarios:
        table = np.zeros(len(outputs.labels), dtype=np.int8)
        if name != "complete":
            table = prepared.missing_table("test", MissingScenario.parse(name), missing_seed)
        scores[name] = round(float(f1_score(outputs.labels, outputs.assemble(table) > 0.5, average="macro")), 4)
    complete = outputs.assemble(np.zeros(len(outputs.labels), dtype=np.int8)) > 0.5
    per_genre = f1_score(outputs.labels, complete, average=None, zero_division=0)
    return {
        "scenarios": scores,
        "complete_per_genre": dict(zip(prepared.spec.label_names, per_genre.round(4).tolist(), strict=True)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=Path("data/raw/embedded"), help="the generated raw dataset")
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"), help="its prepared directory")
    parser.add_argument("--rates", type=float, nargs="+", default=[0.7, 1.0], help="missing rates (plus complete)")
    parser.add_argument("--missing-seed", type=int, default=0, help="prepare.missing_seed of the tables")
    parser.add_argument("--adapters", type=Path, nargs="*", default=[], help="trained adapters to score beside it")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the adapters' train section")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    result = run(args.raw, args.prepared, args.rates, args.missing_seed)
    names = [row["scenario"] for row in result["scenarios"]]
    result["adapters"] = {
        str(adapter): adapter_scores(args.prepared, adapter, args.params, names, args.missing_seed)
        for adapter in args.adapters
    }
    print(f"Perfect-perceiver ceiling on {args.prepared} (test split, {result['test_samples']} samples)\n")
    print(f"| {'scenario':<10} | F1-Macro (sigmoid > 0.5) | F1-Macro (tuned thresholds) |")
    print(f"|{'-' * 12}|{'-' * 26}|{'-' * 29}|")
    for row in result["scenarios"]:
        print(f"| {row['scenario']:<10} | {row['f1_macro']:>24.3f} | {row['f1_macro_tuned_threshold']:>27.3f} |")
    genres = list(result["complete_per_genre"])
    print("\nF1 per genre on complete data (sigmoid > 0.5):\n")
    print("| | " + " | ".join(genres) + " |")
    print("|---" * (len(genres) + 1) + "|")
    print("| ceiling | " + " | ".join(f"{v:.2f}" for v in result["complete_per_genre"].values()) + " |")
    for adapter, scores in result["adapters"].items():
        print(f"| {adapter} | " + " | ".join(f"{v:.2f}" for v in scores["complete_per_genre"].values()) + " |")
    if result["adapters"]:
        print("\nF1-Macro per scenario:\n")
        print("| | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        print("| ceiling | " + " | ".join(f"{row['f1_macro']:.3f}" for row in result["scenarios"]) + " |")
        for adapter, scores in result["adapters"].items():
            print(f"| {adapter} | " + " | ".join(f"{scores['scenarios'][n]:.3f}" for n in names) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
