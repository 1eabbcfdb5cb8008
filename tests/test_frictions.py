"""Small frictions, fixed: the [UNK] rate of a dataset under the backbone's vocabulary, `--help` showing the values
of params.yaml, no ± for one seed, the probe naming absent labels once, the near-constant-answer rule, and
`dvc repro` from a plain shell."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmp_core.cli import main
from mmp_core.config import TrainParams
from mmp_core.data import build_tokenizer, load_prepared, prepare
from mmp_core.data.vocab import UNK_WARN_RATE, build_vocab, report_unk_rate, unk_rate, write_vocab
from mmp_core.evaluation.metrics import sanity_check
from mmp_core.evaluation.seeds import format_cell, has_spread
from mmp_core.model.backbone import WEIGHTS_NAME, load_backbone
from mmp_core.pretraining.probe import absent_labels, fit_probe
from mmp_core.scenarios import MissingScenario
from tests.data_fixtures import make_hatememes, make_mmimdb
from tests.results_fixtures import metrics_document

REPO = Path(__file__).resolve().parents[1]
EMBEDDED_VOCAB = REPO / "backbones" / "embedded" / "vocab.txt"


# ---------------------------------------------------------------------------------------------- [UNK] rate
def test_unk_rate_counts_the_tokens_a_vocabulary_cannot_read(tmp_path):
    tokenizer = build_tokenizer(write_vocab(tmp_path / "vocab.txt", build_vocab(["a big boat"], max_size=64)))
    rate, top = unk_rate(tokenizer, ["A big boat!", "big memes, big memes", ""])
    # 9 tokens: a big boat ! | big memes , big memes; unknown: ! , and memes twice.
    assert rate == pytest.approx(4 / 9)
    assert top == [("memes", 2), ("!", 1), (",", 1)]
    assert unk_rate(tokenizer, []) == (0.0, [])


def test_a_high_unk_rate_is_one_warning_with_the_remedies(tmp_path, caplog):
    tokenizer = build_tokenizer(EMBEDDED_VOCAB)
    logger = logging.getLogger("mmp_core.test_frictions")
    with caplog.at_level(logging.INFO, logger="mmp_core"):
        rate = report_unk_rate(
            tokenizer, ["a big boat", "a big boat"], logger, vocabulary="V", backbone="B", prepared="P"
        )
    assert rate == 0.0 and [r.levelname for r in caplog.records] == ["INFO"]
    assert "[UNK] rate of the train split's text under V: 0.0% of its tokens" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmp_core"):
        rate = report_unk_rate(
            tokenizer, ["a hateful meme", "meme"], logger, vocabulary="V", backbone="B", prepared="P"
        )
    assert rate == pytest.approx(3 / 4) and rate > UNK_WARN_RATE
    assert [r.levelname for r in caplog.records] == ["INFO", "WARNING"]
    warning = caplog.records[1].getMessage()
    assert warning.startswith("75% of the train split's tokens are [UNK] under V (above 20%")
    assert "most common unknown words: 'meme' (2), 'hateful' (1)" in warning
    assert "`mmp pretrain --init B --prepared P`" in warning and "a backbone whose vocabulary fits" in warning


PREPARE = {"dataset": "hatememes", "raw": "raw", "missing_rates": [0.0, 0.7]}


@pytest.fixture
def hateful_project(tmp_path, monkeypatch):
    """A project whose params.yaml trains on a backbone with the embedded 221-word vocabulary, and a tiny
    Hateful Memes raw layout (texts `meme 0` ... : every token unknown to that vocabulary)."""
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    (backbone / "config.json").write_text("{}")
    (backbone / WEIGHTS_NAME).write_bytes(b"")  # never loaded: only its vocab.txt is read
    shutil.copy(EMBEDDED_VOCAB, backbone / "vocab.txt")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"prepare": PREPARE, "train": {"backbone": str(backbone)}}))
    make_hatememes(tmp_path / "raw")
    monkeypatch.chdir(tmp_path)
    return tmp_path, backbone


def test_prepare_and_training_data_report_the_unk_rate_of_the_backbone_vocabulary(hateful_project, caplog, capsys):
    from mmp_core.training.train import training_data

    root, backbone = hateful_project
    out = root / "prepared"
    with caplog.at_level(logging.INFO, logger="mmp_core"):
        assert main(["prepare", "--dataset", "hatememes", "--raw", "raw", "--out", str(out), "--workers", "1"]) == 0
    capsys.readouterr()
    lines = [r for r in caplog.records if "[UNK]" in r.getMessage()]
    assert [r.levelname for r in lines] == ["INFO", "WARNING"]
    vocabulary = f"the vocab.txt of backbone {str(backbone)!r} (221 tokens)"
    assert lines[0].getMessage() == f"[UNK] rate of the train split's text under {vocabulary}: 100.0% of its tokens"
    assert lines[1].getMessage().startswith(f"100% of the train split's tokens are [UNK] under {vocabulary}")
    assert "'meme' (6)" in lines[1].getMessage()
    assert f"mmp pretrain --init {backbone} --prepared {out}" in lines[1].getMessage()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmp_core"):
        data = training_data(out, TrainParams(backbone=str(backbone)))
    assert data.unk_rate == 1.0
    lines = [r for r in caplog.records if r.name == "mmp_core.training.train" and "[UNK]" in r.getMessage()]
    assert [r.levelname for r in lines] == ["INFO", "WARNING"]


def test_a_vocabulary_that_fits_is_reported_without_a_warning(hateful_project, caplog, capsys):
    from mmp_core.training.train import training_data

    root, _ = hateful_project
    (root / "params.yaml").write_text(yaml.safe_dump({"prepare": PREPARE}))  # no backbone
    out = root / "prepared"
    args = ["prepare", "--dataset", "hatememes", "--raw", "raw", "--out", str(out), "--workers", "1"]
    with caplog.at_level(logging.INFO, logger="mmp_core"):
        assert main([*args, "--vocab-size", "64"]) == 0
    capsys.readouterr()
    lines = [r for r in caplog.records if "[UNK]" in r.getMessage()]
    size = len(load_prepared(out).vocab_path.read_text().split())  # the special tokens, meme, 0 ... 5
    assert [(r.levelname, r.getMessage()) for r in lines] == [
        (
            "INFO",
            f"[UNK] rate of the train split's text under the prepared vocab.txt ({size} tokens): 0.0% of its tokens",
        )
    ]
    assert training_data(out, TrainParams(backbone="small:tiny")).unk_rate == 0.0

    caplog.clear()  # a backbone this machine cannot read: not checked, and prepare still succeeds
    (root / "params.yaml").write_text(yaml.safe_dump({"prepare": PREPARE, "train": {"backbone": "./no-such-dir"}}))
    with caplog.at_level(logging.INFO, logger="mmp_core"):
        assert main(args) == 0
    assert [r.getMessage().split(" (")[0] for r in caplog.records if "[UNK]" in r.getMessage()] == [
        "[UNK] rate not checked: no vocabulary of train.backbone './no-such-dir' here"
    ]


# ---------------------------------------------------------------------------------------------- --help values
def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_stage_help_shows_the_values_params_yaml_holds(tmp_path, monkeypatch, capsys):
    defaults = TrainParams()
    assert defaults.epochs != 4 and defaults.image.shorter_side != 96
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"epochs": 4, "image": {"shorter_side": 96}}}))
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    text = _help("train", capsys)
    assert f"parameters read from {tmp_path / 'params.yaml'}" in text
    assert f"train.epochs = 4 (default {defaults.epochs})" in text
    assert f"train.image.shorter_side = 96 (default {defaults.image.shorter_side}):" in text
    assert f"train.image.longer_side = {defaults.image.longer_side} (default):" in text
    assert f"train.seed = {defaults.seed} (default):" in text

    # Invalid: help still works, says so, and lists the schema's defaults unmarked.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"epochs": -1}}))
    text = _help("train", capsys)
    assert "it cannot be read, so the schema's defaults:" in text and "train.epochs: Input should be" in text
    assert re.search(rf"^  train\.epochs = {defaults.epochs}(:|$)", text, re.MULTILINE)  # no marker
    (tmp_path / "params.yaml").write_text("train: [unclosed\n")
    assert "not valid YAML" in _help("train", capsys)

    # Absent: the schema's defaults, said so.
    (tmp_path / "params.yaml").unlink()
    text = _help("train", capsys)
    assert "none in this project, so the schema's defaults:" in text
    assert re.search(rf"^  train\.epochs = {defaults.epochs}(:|$)", text, re.MULTILINE)  # no marker


def test_the_project_help_shows_its_own_params_yaml(monkeypatch, capsys):
    monkeypatch.chdir(REPO / "mmp_core")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    text = _help("train", capsys)
    assert f"train.epochs = {params['train']['epochs']}" in text
    assert f"train.image.shorter_side = {params['train']['image']['shorter_side']}" in text


# ---------------------------------------------------------------------------------------------- one seed
def test_one_seed_has_no_plus_minus(tmp_path, monkeypatch, capsys):
    assert format_cell(0.5, 0.0, 4, [0]) == "0.5000" and not has_spread([0])
    assert format_cell(0.5, 0.01, 4, [0, 1]) == "0.5000 ± 0.0100" and has_spread([0, 1])
    for seed in (0, 1):
        document = metrics_document("input", lambda t, r, s=seed: 0.5 - 0.2 * r + 0.02 * s)
        document["sanity"] = {"warnings": []}
        (tmp_path / "results" / "seeds" / str(seed)).mkdir(parents=True)
        (tmp_path / "results" / "seeds" / str(seed) / "metrics.json").write_text(json.dumps(document))
        (tmp_path / "models" / "seeds" / str(seed)).mkdir(parents=True)
        (tmp_path / "models" / "seeds" / str(seed) / "train_summary.json").write_text('{"best_val_f1_macro": 0.4}')
    monkeypatch.chdir(tmp_path)
    args = ["aggregate", "--method", "input", "--results", "results", "--models", "models"]
    (tmp_path / "params.yaml").write_text("seeds: [0]\n")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[input] test f1_macro 0.3600 (seed 0) at both missing 70%" in out and "±" not in out
    (tmp_path / "params.yaml").write_text("seeds: [0, 1]\n")
    assert main(args) == 0
    assert "[input] test f1_macro 0.3700 ± 0.0141 over seeds [0, 1] at" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- probe
def test_probe_fit_is_silent_about_absent_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 4))
    y = np.zeros((12, 3), dtype=int)
    y[::2, 0] = 1
    y[1::3, 1] = 1  # label 2 never occurs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_probe("multilabel", x, y)
    assert not [w for w in caught if "present in all training examples" in str(w.message)]
    assert absent_labels("multilabel", y, ("a", "b", "c")) == ["c"]
    assert absent_labels("multiclass", np.array([0, 2, 2]), ("a", "b", "c")) == ["b"]


def test_mmp_probe_names_absent_labels_once(tmp_path, capsys):
    make_mmimdb(tmp_path / "raw")  # 6 train samples: 9 of the 23 genres
    prepared_dir = tmp_path / "prepared"
    prepare(
        "mmimdb", prepared_dir, raw_dir=tmp_path / "raw", workers=1, missing_scenarios=[MissingScenario("both", 0.7)]
    )
    prepared = load_prepared(prepared_dir)
    names = prepared.spec.label_names
    expected = {
        role: [n for n, count in zip(names, prepared.open_split(split).labels().sum(axis=0), strict=True) if not count]
        for role, split in (("train", "train"), ("test", "test"))
    }
    assert expected["train"] and expected["test"]
    backbone = tmp_path / "backbone"
    tokenizer = build_tokenizer(EMBEDDED_VOCAB)
    load_backbone(
        "small:tiny", seed=0, vocab_size=len(tokenizer), max_position_embeddings=40, image_size=64
    ).save_pretrained(backbone)
    shutil.copy(EMBEDDED_VOCAB, backbone / "vocab.txt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(
            ["probe", "--backbone", str(backbone), "--prepared", str(prepared_dir), "--image", "64", "96", "16"]
        )
    assert code == 0
    assert not [w for w in caught if "present in all training examples" in str(w.message)]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("labels never present")]
    assert lines == [
        f"labels never present: train split: {', '.join(expected['train'])}; test split: "
        f"{', '.join(expected['test'])} (a label the train split lacks is never predicted; F1-macro counts each "
        "of them as 0)"
    ]


# ---------------------------------------------------------------------------------------------- degenerate rule
def test_near_constant_answers_are_flagged_without_contradicting_the_prior():
    # Hateful Memes-like labels (63% not hateful); the model says "not hateful" for 97 of 100 samples, but its
    # scores still rank the samples a little better than chance: it beats the prior (AUROC 0.5) and is flagged.
    labels = np.array([0] * 63 + [1] * 37)
    positive = np.where(labels == 1, 0.3, 0.2)  # below 0.5: "not hateful", but hateful memes rank higher
    positive[[63, 64, 65]] = 0.6  # three hateful memes answered "hateful"
    verdict = sanity_check("binary", np.stack([1 - positive, positive], axis=1), labels, 0.5)
    assert verdict["degenerate"] and verdict["beats_prior"]
    assert verdict["most_common_answer_share"] == 0.97 and verdict["label_most_common_share"] == 0.63
    assert len(verdict["warnings"]) == 1
    warning = verdict["warnings"][0]
    assert warning.startswith(
        "near-constant answers: 97% of the samples get the same answer (2 distinct answers; the labels' most "
        "common answer covers 63%); auroc"
    )
    assert f"still beats the label prior 0.5000 (by {verdict['score'] - 0.5:.4f})" in warning

    # Balanced labels, 85% one answer (35 points above the labels' most common share, 50%): flagged, though its
    # accuracy (51%) beats the prior by a point.
    labels = np.array([0, 1] * 50)
    verdict = sanity_check("multiclass", np.eye(2)[(np.arange(100) >= 85).astype(int)], labels, 0.5)
    assert verdict["degenerate"] and verdict["most_common_answer_share"] == 0.85 and verdict["score"] == 0.51
    assert verdict["warnings"] == [
        "near-constant answers: 85% of the samples get the same answer (2 distinct answers; the labels' most common "
        "answer covers 50%); accuracy 0.5100 still beats the label prior 0.5000 (by 0.0100)"
    ]
    # And one that does not beat it: one warning, saying so.
    verdict = sanity_check("multiclass", np.eye(2)[np.zeros(100, dtype=int)], labels, 0.5)
    assert verdict["degenerate"] and not verdict["beats_prior"] and len(verdict["warnings"]) == 1
    assert verdict["warnings"][0].endswith("; accuracy 0.5000 does not beat the label-prior baseline 0.5000")

    # Labels that are themselves 99% one class, answered perfectly: not near-constant (the old 98% rule flagged it).
    labels = np.array([0] * 99 + [1])
    verdict = sanity_check("multiclass", np.eye(2)[labels], labels, 0.99)
    assert not verdict["degenerate"] and verdict["most_common_answer_share"] == 0.99 and verdict["beats_prior"]
    assert verdict["warnings"] == []

    # Multi-label: the empty answer for 40% of the samples (labels' most common set: 10%) is below half: not flagged.
    labels = np.eye(10, dtype=int)[np.arange(100) % 10]
    predicted = labels.astype(float)
    predicted[:40] = 0.0
    verdict = sanity_check("multilabel", predicted, labels, 0.1)
    assert not verdict["degenerate"] and verdict["most_common_answer_share"] == 0.4 and verdict["beats_prior"]


# ---------------------------------------------------------------------------------------------- dvc repro
PREFIX = 'PATH="$PWD/.venv/bin:$PATH" mmp '


def test_every_stage_command_puts_the_project_venv_first_and_the_readme_says_so():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = stage.get("do", stage)["cmd"]
        assert cmd.startswith(PREFIX), f"dvc.yaml stage {name}: {cmd!r}"
    readme = (REPO / "README.md").read_text()
    assert "`.venv/bin/dvc\n   repro` (or `. .venv/bin/activate` first, then `dvc repro`)" in readme
    assert f"`{PREFIX.strip()}`" in readme


def test_dvc_repro_runs_the_project_mmp_from_a_plain_shell(tmp_path):
    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.exists():
        pytest.skip("dvc is not installed beside this interpreter")
    project = tmp_path / "project"
    (project / ".venv" / "bin").mkdir(parents=True)
    fake = '#!/bin/sh\necho "$0 $*" > out.txt\n'
    (project / ".venv" / "bin" / "mmp").write_text(fake)
    (project / ".venv" / "bin" / "mmp").chmod(0o755)
    (project / "dvc.yaml").write_text(
        yaml.safe_dump({"stages": {"generate": {"cmd": PREFIX + "generate --out x", "outs": ["out.txt"]}}})
    )
    plain = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "DVC_NO_ANALYTICS": "1", "SHELL": "/bin/sh"}
    run = {"cwd": project, "env": plain, "capture_output": True, "text": True, "timeout": 120}
    assert subprocess.run([str(dvc), "init", "-q", "--no-scm"], **run).returncode == 0
    result = subprocess.run([str(dvc), "repro"], **run)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "out.txt").read_text() == f"{project / '.venv' / 'bin' / 'mmp'} generate --out x\n"

    # Without a .venv: the `mmp` on PATH (an install elsewhere).
    shutil.rmtree(project / ".venv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mmp").write_text(fake)
    (elsewhere / "mmp").chmod(0o755)
    result = subprocess.run(
        [str(dvc), "repro", "-f"], **{**run, "env": {**plain, "PATH": f"{elsewhere}:/usr/bin:/bin"}}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (project / "out.txt").read_text() == f"{elsewhere / 'mmp'} generate --out x\n"
