"""`mmp predict` and `Predictor`: new inputs get evaluation's scores, the missing modality picks the prompts, bad
rows are reported while the rest are predicted, and published runs (champion or named) load from the store."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mmp_core.config import TrainParams
from mmp_core.data import GenerateConfig, collate, generate_embedded, prepare
from mmp_core.model.backbone import load_backbone
from mmp_core.model.inference import predict
from mmp_core.model.loading import open_prepared, split_dataset, tokenizer_for
from mmp_core.model.prompts import MissingAwarePromptConfig, MissingAwarePromptModel
from mmp_core.predict import Predictor
from mmp_core.predict.inputs import PredictionInput, read_inputs, select_labels
from mmp_core.scenarios import CODE_NAMES
from mmp_core.storage import open_store
from mmp_core.training.train import input_settings
from tests.model_fixtures import TINY_IMAGE, make_backbone_dir, mmp_env, run_mmp


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Embedded data where a quarter of the samples have no image file and a quarter an empty plot (natural
    missing), prepared; a tiny backbone; an adapter with random prompts that records its input settings."""
    root = tmp_path_factory.mktemp("predict")
    generate_embedded(root / "raw", GenerateConfig(train=24, dev=8, test=24, natural_missing=0.5, seed=3), workers=2)
    prepare("embedded", root / "prepared", raw_dir=root / "raw", vocab_size=512, workers=2)
    make_backbone_dir(root / "backbone", root / "prepared")
    # fp32: the exact comparisons below; bf16 adapters are checked on their own.
    params = TrainParams(backbone=str(root / "backbone"), max_text_len=40, image=TINY_IMAGE, precision="fp32")
    prepared = open_prepared(root / "prepared")
    config = MissingAwarePromptConfig(
        "multilabel", prepared.spec.num_labels, prompt_type="input", prompt_length=6, prompt_layers=(0, 1, 2),
        prompt_init="normal",
    )  # fmt: skip
    import torch

    torch.manual_seed(0)
    model = MissingAwarePromptModel(load_backbone(params.backbone), config)
    standardise_head(model, prepared, params)
    extra = {"dataset": "embedded", "label_names": list(prepared.spec.label_names), "inputs": input_settings(params)}
    model.save_pretrained(root / "adapter", extra=extra)
    return root, params


def standardise_head(model, prepared, params) -> None:
    """A random tiny ViLT gives nearly the same features for every input, so a random head scores everything
    about 0.5. Rescale the last layer so each logit has mean 0 and std 1 over the test split's three variants:
    the scores then spread over (0, 1) and a wrongly fed input shows."""
    import torch

    tokenizer = tokenizer_for(params.backbone, prepared)
    features = []
    hook = model.head[-2].register_forward_hook(lambda module, args, output: features.append(output))
    for variant in (0, 1, 2):
        table = np.full(prepared.rows("test"), variant, np.int8)
        predict(model, split_dataset(prepared, "test", tokenizer, params, table), collate, batch_size=16)
    hook.remove()
    last = model.head[-1]
    with torch.no_grad():
        logits = torch.cat(features) @ last.weight.T  # (3N, C)
        mean, std = logits.mean(0), logits.std(0)
        last.weight.div_(std[:, None])
        last.bias.copy_(-mean / std)


def test_inputs_from_raw_files_get_evaluation_scores(workspace):
    root, params = workspace
    prepared = open_prepared(root / "prepared")
    tokenizer = tokenizer_for(params.backbone, prepared)
    model = MissingAwarePromptModel.from_pretrained(load_backbone(params.backbone), root / "adapter")
    dataset = split_dataset(prepared, "test", tokenizer, params, None)  # natural missing only
    expected, _ = predict(model, dataset, collate, batch_size=16)
    natural = dataset.missing_types
    assert set(natural.tolist()) == {0, 1, 2}, "the test split must hold complete, text-missing and image-missing"
    assert expected.std(axis=0).mean() > 0.05, "scores must differ across samples for the comparison to mean much"

    # What a user has: the raw files. Image paths relative to the inputs file; no image / empty text left out.
    raw = root / "raw"
    ids = json.loads((raw / "split.json").read_text())["test"]
    lines = []
    for sample_id in ids:
        record = {"id": sample_id}
        if (raw / "images" / f"{sample_id}.jpeg").is_file():
            record["image"] = f"images/{sample_id}.jpeg"
        plot = " ".join(json.loads((raw / "labels" / f"{sample_id}.json").read_text())["plot"]).strip()
        if plot:
            record["text"] = plot
        lines.append(json.dumps(record))
    (raw / "inputs.jsonl").write_text("\n".join(lines) + "\n")

    out = root / "predictions.jsonl"
    result = run_mmp(
        ["predict", "--adapter", str(root / "adapter"), "--inputs", str(raw / "inputs.jsonl"), "--json",
         "--out", str(out), "--batch-size", "16"],
        root,
    )  # fmt: skip
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == ids
    assert [row["missing_type"] for row in rows] == [CODE_NAMES[int(code)] for code in natural]
    names = prepared.spec.label_names
    scores = np.array([[row["scores"][name] for name in names] for row in rows])
    # Batched as evaluation batches (16): the same numbers. Other batchings pad images differently (float noise).
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    for row, score in zip(rows, expected, strict=True):  # labels: above 0.5, best first
        assert [label["label"] for label in row["labels"]] == [names[i] for i in np.argsort(-score) if score[i] > 0.5]

    # The Python API gives the same, and routing matters: the same image fed as complete scores differently.
    predictor = Predictor.from_adapter(root / "adapter")
    first_image = next(i for i, code in enumerate(natural) if code == 1)
    api = predictor.predict([{"image": str(raw / "images" / f"{ids[first_image]}.jpeg")}])[0]
    np.testing.assert_allclose([api.scores[n] for n in names], expected[first_image], rtol=0, atol=1e-4)
    assert api.missing_type == "text_missing"
    with_text = predictor.predict([{"image": str(raw / "images" / f"{ids[first_image]}.jpeg"), "text": "a story"}])
    assert with_text[0].missing_type == "complete"
    assert max(abs(with_text[0].scores[n] - api.scores[n]) for n in names) > 1e-2


def test_bad_rows_are_reported_and_the_batch_goes_on(workspace, tmp_path):
    root, _ = workspace
    image = next((root / "raw" / "images").glob("*.jpeg"))
    (tmp_path / "broken.jpg").write_bytes(image.read_bytes()[:200])  # truncated JPEG
    (tmp_path / "not-an-image.png").write_text("hello")
    (tmp_path / "good.jpeg").write_bytes(image.read_bytes())
    (tmp_path / "inputs.csv").write_text(
        "id,image,text\n"
        "a,good.jpeg,a detective story\n"
        "b,missing.jpg,some text\n"
        "c,broken.jpg,\n"
        "d,not-an-image.png,\n"
        "e,,\n"
        "f,,only a text\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mmp_core.cli", "predict", "--adapter", str(root / "adapter"),
         "--inputs", str(tmp_path / "inputs.csv"), "--json"],
        cwd=tmp_path, env=mmp_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    rows = {row["id"]: row for row in map(json.loads, result.stdout.splitlines())}
    assert list(rows) == ["a", "b", "c", "d", "e", "f"]
    assert rows["a"]["missing_type"] == "complete" and rows["f"]["missing_type"] == "image_missing"
    assert rows["b"]["error"] == f"image file not found: {tmp_path / 'missing.jpg'}"
    assert rows["c"]["error"].startswith(f"{tmp_path / 'broken.jpg'}: corrupt or truncated image")
    assert rows["d"]["error"].startswith(f"{tmp_path / 'not-an-image.png'}: corrupt or truncated image")
    assert rows["e"]["error"] == "neither an image nor a text: at least one modality is needed"
    assert "inputs.csv line 3: image file not found" in result.stderr
    assert "4 of 6 input(s) failed" in result.stderr

    (tmp_path / "inputs.jsonl").write_text('{"text": "fine"}\n{"text": \n[1, 2]\n\n{"text": 5}\n')
    predictions = Predictor.from_adapter(root / "adapter").predict(
        [PredictionInput(image=b"", text="bytes in, no image"), *read_inputs(tmp_path / "inputs.jsonl")]
    )
    assert [p.ok for p in predictions] == [True, True, False, False, False]
    assert predictions[2].source == "inputs.jsonl line 2" and predictions[2].error.startswith("not valid JSON")
    assert predictions[3].error == "expected a JSON object with image and/or text"
    assert predictions[4].source == "inputs.jsonl line 5" and predictions[4].error == "text must be a string, got int"


def test_threshold_and_top_k():
    names = ("a", "b", "c", "d")
    scores = np.array([0.2, 0.9, 0.6, 0.55])
    assert select_labels(scores, names, "multilabel", None, None) == [("b", 0.9), ("c", 0.6), ("d", 0.55)]
    assert select_labels(scores, names, "multilabel", 0.58, None) == [("b", 0.9), ("c", 0.6)]
    assert select_labels(scores, names, "multilabel", None, 1) == [("b", 0.9)]
    assert select_labels(scores, names, "multiclass", None, None) == [("b", 0.9)]
    assert select_labels(scores, names, "multiclass", None, 3) == [("b", 0.9), ("c", 0.6), ("d", 0.55)]
    assert select_labels(scores, names, "multiclass", 0.95, 2) == []


def test_champion_or_named_run_from_the_store(workspace, tmp_path):
    root, params = workspace
    store = open_store(tmp_path / "store")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"train": params.model_dump(mode="json")}))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"dataset": "embedded", "method": "input"}))
    for run_id in ("run-1", "run-2"):
        store.publish_run(
            run_id,
            {
                "params.yaml": params_file,
                "models/input/adapter": root / "adapter",
                "results/input/metrics.json": metrics,
            },
            {"promote_method": "input", "methods": ["input"]},
        )
    with pytest.raises(FileNotFoundError, match=r"no champion yet; pass a run id \(run-1, run-2\)"):
        Predictor.from_store(store)
    store.set_champion("run-2", {"method": "input", "value": 0.5})

    text = "a secret plot in the dark"
    champion = Predictor.from_store(tmp_path / "store", cache_dir=tmp_path / "cache").predict([{"text": text}])[0]
    named = Predictor.from_store(store, "run-1", method="input", cache_dir=tmp_path / "cache").predict([{"text": text}])
    local = Predictor.from_adapter(root / "adapter").predict([{"text": text}])[0]
    assert champion.scores == named[0].scores == local.scores and champion.missing_type == "image_missing"
    assert (tmp_path / "cache").is_dir()

    result = run_mmp(
        ["predict", "--store", str(tmp_path / "store"), "--text", text, "--top-k", "2", "--threshold", "0"], tmp_path
    )
    line = result.stdout.strip()
    assert line.startswith("--image/--text [image_missing]: ") and line.count(",") == 1
    best = sorted(local.scores.items(), key=lambda item: -item[1])[:2]
    assert line.endswith(", ".join(f"{name} {score:.3f}" for name, score in best))
    assert "model: run run-2 (input) from" in result.stderr


def test_adapters_that_record_no_input_settings_take_params(workspace, tmp_path, caplog):
    root, params = workspace
    model = MissingAwarePromptModel.from_pretrained(load_backbone(params.backbone), root / "adapter")
    model.save_pretrained(tmp_path / "old-adapter")  # as mmp train wrote adapters before they recorded inputs
    with pytest.raises(ValueError, match=r"records no input settings.*--params PATH"):
        Predictor.from_adapter(tmp_path / "old-adapter")
    predictor = Predictor.from_adapter(tmp_path / "old-adapter", params=params)
    assert predictor.label_names == tuple(f"label_{i}" for i in range(8))
    assert "records no label names" in caplog.text
    text = "a robot from another galaxy"
    expected = Predictor.from_adapter(root / "adapter").predict([{"text": text}])[0].scores
    assert list(predictor.predict([{"text": text}])[0].scores.values()) == list(expected.values())


def test_an_adapter_trained_in_bf16_predicts_in_bf16(workspace, tmp_path):
    import shutil

    import torch

    root, _ = workspace
    shutil.copytree(root / "adapter", tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["training"]["inputs"]["precision"] = "bf16"
    config_path.write_text(json.dumps(config))
    text = "A detective in a haunted house."
    bf16 = Predictor.from_adapter(tmp_path / "adapter")
    fp32 = Predictor.from_adapter(root / "adapter")
    assert bf16.dtype == torch.bfloat16 and next(bf16.model.parameters()).dtype == torch.bfloat16
    assert fp32.dtype == torch.float32
    # This adapter's head is rescaled to spread a random backbone's near-constant features (standardise_head),
    # which magnifies bf16 rounding: only the ranges are compared here; bench/ compares trained metrics.
    [low], [high] = bf16.predict([{"text": text}]), fp32.predict([{"text": text}])
    assert low.scores.keys() == high.scores.keys()
    assert all(0.0 <= score <= 1.0 for score in low.scores.values())
