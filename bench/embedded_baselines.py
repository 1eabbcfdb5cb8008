"""Simple baselines on the embedded dataset: does it need both modalities?

Trains one-vs-rest logistic regressions on the training split and reports F1-Macro (and per-genre F1) on the
test split with three inputs:
  * image only: an RGB colour histogram (4x4x4 bins) + a magnitude-weighted gradient-orientation histogram
    (8 bins) + mean gradient magnitude, computed on the image resized to 64x64;
  * text only: binary bag of words;
  * complete: both feature sets concatenated.

Usage:
    python bench/embedded_baselines.py                        # generates + prepares the default data in a temp dir
    python bench/embedded_baselines.py --prepared data/prepared --json results.json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from mmp_core.data import load_prepared


def image_features(data: bytes | None) -> np.ndarray:
    if data is None:
        return np.zeros(64 + 8 + 1, dtype=np.float32)
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((64, 64), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    bins = (pixels // 64).astype(np.int64)  # 4 levels per channel
    hist = np.bincount((bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]).ravel(), minlength=64) / (64 * 64)
    gray = pixels.mean(axis=2)
    dy, dx = np.gradient(gray)
    magnitude = np.hypot(dx, dy)
    angle = (np.arctan2(dy, dx) % np.pi) / np.pi * 8
    orientation = np.bincount(np.minimum(angle.astype(np.int64), 7).ravel(), weights=magnitude.ravel(), minlength=8)
    orientation /= magnitude.sum() + 1e-6
    return np.concatenate([hist, orientation, [magnitude.mean() / 255.0]]).astype(np.float32)


def load_split(prepared, split: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    reader = prepared.open_split(split)
    images = np.stack([image_features(reader.image(i)) for i in range(len(reader))])
    return images, reader.texts(), reader.labels()


def fit_eval(train_x, train_y, test_x, test_y, seed: int) -> tuple[float, np.ndarray]:
    model = OneVsRestClassifier(LogisticRegression(C=1.0, solver="liblinear", max_iter=1000, random_state=seed))
    model.fit(train_x, train_y)
    predicted = model.predict(test_x)
    return (
        float(f1_score(test_y, predicted, average="macro", zero_division=0)),
        f1_score(test_y, predicted, average=None, zero_division=0),
    )


def run(prepared_dir: Path, seed: int = 0) -> dict:
    prepared = load_prepared(prepared_dir)
    spec = prepared.spec
    train_img, train_txt, train_y = load_split(prepared, spec.train_split)
    test_img, test_txt, test_y = load_split(prepared, spec.test_split)
    scaler = StandardScaler().fit(train_img)
    train_img, test_img = scaler.transform(train_img), scaler.transform(test_img)
    vectorizer = CountVectorizer(binary=True, token_pattern=r"(?u)\b\w+\b").fit(train_txt)
    train_bow, test_bow = vectorizer.transform(train_txt).toarray(), vectorizer.transform(test_txt).toarray()
    inputs = {
        "image only": (train_img, test_img),
        "text only": (train_bow, test_bow),
        "complete": (np.hstack([train_img, train_bow]), np.hstack([test_img, test_bow])),
    }
    results = {"labels": list(spec.label_names), "train": len(train_y), "test": len(test_y), "rows": {}}
    for name, (train_x, test_x) in inputs.items():
        macro, per_label = fit_eval(train_x, train_y, test_x, test_y, seed)
        results["rows"][name] = {"f1_macro": macro, "per_label": [float(v) for v in per_label]}
    return results


def markdown(results: dict) -> str:
    labels = results["labels"]
    lines = [
        "| input | F1-Macro | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for name, row in results["rows"].items():
        cells = " | ".join(f"{100 * v:.1f}" for v in row["per_label"])
        lines.append(f"| {name} | **{100 * row['f1_macro']:.1f}** | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, help="prepared embedded dataset (default: generate one in a temp dir)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed when generating (and model seed)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        prepared = args.prepared
        if prepared is None:
            from mmp_core.data.convert import prepare
            from mmp_core.data.generate import GenerateConfig, generate_embedded

            generate_embedded(Path(tmp) / "raw", GenerateConfig(seed=args.seed))
            prepare("embedded", Path(tmp) / "prepared", raw_dir=Path(tmp) / "raw", vocab_size=1024)
            prepared = Path(tmp) / "prepared"
        results = run(prepared, args.seed)
    results["seconds"] = round(time.perf_counter() - start, 1)
    print(markdown(results))
    print(f"\n(train {results['train']}, test {results['test']}; {results['seconds']}s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
