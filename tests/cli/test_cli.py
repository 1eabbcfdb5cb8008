"""The `mmp` command line: help for every option, params.yaml found from anywhere in the project, `--set`
overrides validated by the one schema, and progress reports a person can follow off a terminal."""

from __future__ import annotations

import argparse
import logging
import re

import pytest
import yaml

from mmp_core.cli import build_parser, main
from mmp_core.config import EvaluateParams, GenerateParams, PrepareParams, PretrainParams, TrainParams, describe_fields
from mmp_core.params_file import load_params, params_path
from mmp_core.progress import Progress


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_command_has_help():
    commands = subcommands()
    assert {"generate", "prepare", "pretrain", "train", "evaluate", "predict"} <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"mmp {name} {action.option_strings}: no help"


def test_stage_help_lists_every_parameter_it_reads(capsys):
    helps = {}
    for command, sections in (
        ("train", {"train": TrainParams}),
        ("evaluate", {"evaluate": EvaluateParams, "train": TrainParams}),
        ("pretrain", {"pretrain": PretrainParams}),
    ):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for section, model in sections.items():
            for line in describe_fields(model, section):
                key = line.strip().split(" ")[0].rstrip(":")
                assert key in text, f"mmp {command} --help does not list {key}"
        helps[command] = text
    assert "train.text_positions = null" in helps["train"] and "pretrain.text_positions = 40" in helps["pretrain"]


@pytest.fixture
def project(tmp_path):
    """A DVC project root (dvc.yaml + params.yaml) with a subfolder."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": {"lr": 0.01, "image": {"shorter_side": 96}}}))
    (tmp_path / "notebooks" / "deep").mkdir(parents=True)
    return tmp_path


def test_params_are_found_at_the_project_root_or_named(project, tmp_path_factory, monkeypatch, capsys):
    monkeypatch.chdir(project / "notebooks" / "deep")
    assert params_path() == project / "params.yaml"
    assert load_params(None, {"train": TrainParams})["train"].lr == 0.01

    outside = tmp_path_factory.mktemp("outside")
    monkeypatch.chdir(outside)
    with pytest.raises(
        FileNotFoundError, match=rf"params\.yaml: parameters file not found in {re.escape(str(outside))} or any"
    ):
        params_path()
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(outside / 'mine.yaml'))}: parameters file not found"):
        params_path("mine.yaml")
    # Through the command: one line naming the file, exit code 2.
    code = main(["evaluate", "--method", "input", "--prepared", "p", "--adapter", "a", "--out", "o"])
    assert code == 2
    assert f"params.yaml: parameters file not found in {outside}" in capsys.readouterr().err

    (project / "params.yaml").unlink()
    monkeypatch.chdir(project / "notebooks")
    with pytest.raises(
        FileNotFoundError, match=rf"{re.escape(str(project / 'params.yaml'))}: parameters file not found beside"
    ):
        params_path()


def test_set_overrides_go_through_the_same_schema(project):
    params = project / "params.yaml"
    sections = load_params(
        params,
        {"train": TrainParams, "evaluate": EvaluateParams},
        ["train.lr=3e-3", "train.epochs=4", "train.image.shorter_side=64", "train.train_missing={type: text, rate: 0.5}",
         "evaluate.rates=[0.0, 0.7]"],
    )  # fmt: skip
    train = sections["train"]
    assert train.lr == 0.003 and train.epochs == 4
    assert train.image.shorter_side == 64 and train.image.longer_side == 640  # the file's other values stay
    assert train.train_missing.type == "text" and train.train_missing.rate == 0.5
    assert sections["evaluate"].rates == (0.0, 0.7)

    with pytest.raises(ValueError, match=r"with --set train\.lrr=1: invalid parameters: train\.lrr: Extra inputs"):
        load_params(params, {"train": TrainParams}, ["train.lrr=1"])
    with pytest.raises(ValueError, match=r"train\.lr: Input should be a valid number"):
        load_params(params, {"train": TrainParams}, ["train.lr=fast"])
    with pytest.raises(ValueError, match=r"invalid parameters: train: max_text_len 64 exceeds text_positions 48"):
        load_params(params, {"train": TrainParams}, ["train.max_text_len=64", "train.text_positions=48"])
    with pytest.raises(
        ValueError, match=r"--set 'evaluate\.batch_size=8': this command reads only the section\(s\) train"
    ):
        load_params(params, {"train": TrainParams}, ["evaluate.batch_size=8"])
    with pytest.raises(ValueError, match=r"expected SECTION\.KEY=VALUE"):
        load_params(params, {"train": TrainParams}, ["train.lr"])
    with pytest.raises(ValueError, match=r"train\.lr is not a mapping"):
        load_params(params, {"train": TrainParams}, ["train.lr.x=1"])
    assert yaml.safe_load(params.read_text())["train"]["lr"] == 0.01, "overrides never write the file"


def test_progress_logs_step_metrics_rate_and_eta_off_a_terminal(caplog):
    caplog.set_level(logging.INFO, logger="mmp_core.progress")
    with Progress(8, "train input", mode="log", interval=0) as progress:
        for step in range(4):
            progress.update(1, loss=1.0 / (step + 1), lr=1e-3)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 5  # every update at interval 0, and the final position on close
    assert lines[1].startswith("train input: step 2/8 (25%) loss=0.5000 lr=1.00e-03 | ")
    assert re.search(r"\| [\d.]+ step/s, elapsed 0:00:00, ETA 0:00:\d\d$", lines[1])
    assert lines[-1].startswith("train input: step 4/8 (50%) loss=0.2500")

    caplog.clear()
    with Progress(100, "quiet", mode="log", interval=3600) as progress:
        progress.update(10)
    assert [r.getMessage().split(" |")[0] for r in caplog.records] == ["quiet: step 10/100 (10%)"]  # only at the end
    with Progress(5, "other rank", mode="log", interval=0, enabled=False) as progress:
        progress.update(5)
    assert len(caplog.records) == 1
    with pytest.raises(ValueError, match="MMP_PROGRESS"):
        Progress(5, "x", mode="fancy")


def test_generate_and_prepare_read_their_sections_as_train_does(tmp_path, monkeypatch):
    """The data stages read params.yaml like the model stages: the section, then --set, then flags given."""
    from mmp_core.cli.data import read_section

    (tmp_path / "params.yaml").write_text(
        "generate: {seed: 3, train: 40, dev: 8, test: 8}\nprepare: {dataset: embedded, raw: data/raw/embedded}\n"
    )
    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    args = parser.parse_args(["generate", "--set", "generate.dev=12", "--test", "16"])
    generate = read_section(args, "generate", GenerateParams)
    assert (generate.seed, generate.train, generate.dev, generate.test) == (3, 40, 12, 16)
    assert generate.label_noise == GenerateParams().label_noise, "the rest from the schema's defaults"
    args = parser.parse_args(["prepare", "--out", "x", "--from-arrow", "arrows", "--missing-rates", "0.5", "0.7"])
    prepare = read_section(args, "prepare", PrepareParams)
    assert (prepare.raw, prepare.from_arrow, prepare.missing_rates) == (None, "arrows", (0.5, 0.7))
    with pytest.raises(ValueError, match=r"generate\.train: Input should be greater than 0"):
        read_section(parser.parse_args(["generate", "--train", "0"]), "generate", GenerateParams)
    (tmp_path / "params.yaml").write_text("prepare: {dataset: embedded}\n")
    with pytest.raises(ValueError, match="give exactly one source"):
        read_section(parser.parse_args(["prepare", "--out", "x"]), "prepare", PrepareParams)
