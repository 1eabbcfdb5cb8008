"""Checks before any work (mmp_core.publishing.preflight): a wrong store or params.yaml ends a run in one line before any
DVC stage runs; one grammar for store locations; `mmp doctor`'s table; DVC's git and push hints out of the log."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from mmp_core.config import PipelineParams
from mmp_core.publishing.preflight import (
    FAILED,
    OK,
    SKIPPED,
    PreflightFailed,
    check_backbone,
    check_s3_store,
    run_preflight,
)
from mmp_core.s3 import parse_store_location
from mmp_core.storage import open_store
from tests.conftest import flow_env
from tests.model_fixtures import REPO

UNREACHABLE = "http://127.0.0.1:9"  # nobody answers there
STAGE_OUTPUTS = ("data", "models", "results", "dvc.lock", "store")


@pytest.fixture
def project(tmp_path) -> Path:
    """The project's params.yaml and dvc.yaml in a DVC project without git (the shipped backbone by path)."""
    root = tmp_path / "project"
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc" / "config").write_text("[core]\n    no_scm = True\n")
    (root / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["backbone"] = str(REPO / "backbones" / "embedded")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def misspell_train(project: Path) -> None:
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("\ntrain:", "\ntrian:"))


def no_stage_ran(project: Path) -> bool:
    return not any((project / name).exists() for name in STAGE_OUTPUTS)


# ---------------------------------------------------------------------------------------- one grammar for stores
BAD_STORES = ["s3:/bucket/x", "s3:bucket/x", "http:", "http://host/x", "file:/data/x", "gs://bucket/x",
              "S3://bucket/x", "file://host/x", "file:relative"]  # fmt: skip


@pytest.mark.parametrize("store", BAD_STORES)
def test_store_locations_that_look_like_urls_are_refused_in_one_line(tmp_path, store, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as refused:
        parse_store_location(store)
    message = str(refused.value)
    assert "\n" not in message and repr(store) in message and "s3://bucket[/prefix]" in message
    assert "file:///" in message  # the accepted forms are named
    with pytest.raises(ValueError, match="unsupported store location"):
        PipelineParams(store=store, repo=str(tmp_path))
    with pytest.raises(ValueError, match="unsupported store location"):
        open_store(store)
    assert not list(tmp_path.iterdir())  # no folder named `s3:` or `http:`


@pytest.mark.parametrize(("store", "hint"), [("s3:/bucket/x", "s3://bucket/x"), ("s3:bucket/x", "s3://bucket/x"),
                                             ("file:/data/x", "file:///data/x")])  # fmt: skip
def test_a_near_miss_says_what_was_meant(store, hint):
    with pytest.raises(ValueError, match=f"did you mean '{hint}'"):
        parse_store_location(store)


def test_a_file_url_is_the_directory_it_names(tmp_path):
    assert parse_store_location("file:///x").kind == "directory"
    assert parse_store_location("file:///x").path == "/x"
    assert parse_store_location("file://localhost/a%20b").path == "/a b"
    store = open_store(f"file://{tmp_path}/st")
    assert store.root == (tmp_path / "st").resolve()
    from flows.tasks import open_artifact_store

    assert open_artifact_store(PipelineParams(repo=str(tmp_path), store=f"file://{tmp_path}/st")).root == store.root
    assert open_artifact_store(PipelineParams(repo=str(tmp_path), store="st")).root == store.root  # under the repo
    assert parse_store_location("s3://bucket/x/").path == "s3://bucket/x"


def test_the_flow_refuses_a_bad_store_in_one_line_from_the_flag_or_mmp_store(project, monkeypatch, capsys):
    from flows.pipeline import main

    monkeypatch.chdir(project)
    assert main(["--repo", str(project), "--store", "http://host/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("invalid parameters: store: unsupported store location 'http://host/x'")
    monkeypatch.setenv("MMP_STORE", "s3:/bucket/x")
    assert main(["--repo", str(project)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "preflight: store location: unsupported store location 's3:/bucket/x'" in err
    assert "(from $MMP_STORE)" in err and "did you mean 's3://bucket/x'" in err
    assert not (project / "s3:").exists() and no_stage_ran(project)


# ---------------------------------------------------------------------------------- before any stage, in one line
def test_an_unreachable_s3_store_fails_the_flow_before_any_stage(project):
    result = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--repo", str(project), "--store", "s3://nobucket/x",
         "--s3-endpoint-url", UNREACHABLE],
        cwd=project, env=flow_env(project.parent), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mmp-pipeline: failed: preflight: store access: s3://nobucket/x: S3 endpoint")
    assert "127.0.0.1:9" in lines[0] and "more failed" not in lines[0]
    assert "Starting temporary server" not in result.stdout + result.stderr  # Prefect never started
    assert no_stage_ran(project)


def test_a_misspelt_section_fails_in_one_line_naming_the_file_key_and_fix(project, monkeypatch, capsys):
    from flows.pipeline import main

    misspell_train(project)
    monkeypatch.chdir(project)
    assert main(["--repo", str(project), "--store", str(project / "store")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("mmp-pipeline: failed: preflight: params:")
    assert f"{project / 'params.yaml'}: unknown top-level key(s) 'trian' (did you mean 'train'?)" in err
    assert "ResolveError" not in err and "more failed" not in err  # DVC's checks skipped, not its traceback
    assert no_stage_ran(project)


def test_the_flows_check_before_any_stage_when_a_deployment_starts_them(project, aws_test_env):
    """Deployments call the flow itself: it runs the checks before its first task."""
    from flows.pipeline import pipeline
    from flows.retrain import retrain

    params = PipelineParams(repo=str(project), store="s3://nobucket/x", s3_endpoint_url=UNREACHABLE)
    for flow_function in (pipeline, retrain):
        with pytest.raises(PreflightFailed, match=r"^preflight: store access: s3://nobucket/x: S3 endpoint"):
            flow_function.fn(params)
    assert no_stage_ran(project)


def test_every_check_passes_on_a_good_project(project):
    rows = run_preflight(project, "store")
    assert [(row.name, row.status) for row in rows] == [
        ("params", OK), ("store location", OK), ("store access", OK), ("backbone", OK), ("dvc project", OK)
    ]  # fmt: skip
    assert not (project / "store").exists()  # checked, not created


def test_an_s3_store_is_reached_its_bucket_found_and_written(moto_server, s3_bucket):
    row = check_s3_store(f"s3://{s3_bucket}/team", moto_server)
    assert row.status == OK, row
    client = boto3.client("s3", endpoint_url=moto_server)
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0  # the test object is gone
    row = check_s3_store("s3://no-such-bucket/team", moto_server)
    assert row.status == FAILED and "bucket 'no-such-bucket' does not exist" in row.detail


def test_an_uncached_hub_backbone_fails_offline_and_a_cached_one_passes(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    document = {"train": {"backbone": "someorg/vilt-tiny"}}
    row = check_backbone(document, tmp_path)
    assert row.status == FAILED and "hf download someorg/vilt-tiny" in row.detail
    snapshot = tmp_path / "hf" / "models--someorg--vilt-tiny"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("abc123")
    (snapshot / "snapshots" / "abc123").mkdir(parents=True)
    for name in ("config.json", "vocab.txt"):
        (snapshot / "snapshots" / "abc123" / name).write_text("{}")
    assert check_backbone(document, tmp_path).status == OK
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert check_backbone({"train": {"backbone": "someorg/other"}}, tmp_path).status == SKIPPED  # fetched on use


# ------------------------------------------------------------------------------------------------------ mmp doctor
def test_mmp_doctor_prints_a_table_and_fails_when_a_check_fails(project, aws_test_env, capsys):
    from mmp_core.cli import main

    assert main(["doctor", "--repo", str(project), "--store", "s3://nobucket/x", "--s3-endpoint-url", UNREACHABLE]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["check", "result", "detail"]
    rows = {line.split("  ")[0]: line for line in out[1:6]}
    assert set(rows) == {"params", "store location", "store access", "backbone", "dvc project"}
    assert " failed " in rows["store access"] and "127.0.0.1:9" in rows["store access"]
    assert " ok " in rows["params"] and " ok " in rows["dvc project"]
    assert out[-1] == "1 check(s) failed: store access"

    misspell_train(project)
    assert main(["doctor", "--repo", str(project), "--store", str(project / "store")]) == 1
    out = capsys.readouterr().out
    assert "'trian' (did you mean 'train'?)" in out and "skipped  params.yaml is not valid" in out
    assert no_stage_ran(project)


def test_mmp_doctor_passes_on_a_good_project(project, capsys, monkeypatch):
    from mmp_core.cli import main

    monkeypatch.chdir(project)
    monkeypatch.delenv("MMP_STORE", raising=False)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert f"directory {project / 'store'}" in out and out.rstrip().endswith("all checks passed")


# --------------------------------------------------------------------------------------------------- quiet logs
def test_dvc_git_and_push_hints_are_dropped_from_the_log_and_warnings_kept(tmp_path, caplog):
    from flows.tasks import is_dvc_hint, run_dvc

    for kept in ("Running stage 'hello':", "> echo hi > out.txt", "Updating lock file 'dvc.lock'",
                 "WARNING: Some of the cache files do not exist", "ERROR: failed to reproduce 'hello'"):  # fmt: skip
        assert not is_dvc_hint(kept), kept
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, env=env, check=True)
    (tmp_path / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: echo hi > out.txt\n    outs:\n      - out.txt\n")
    caplog.set_level(logging.INFO, logger="flows.tasks")
    lines = run_dvc(str(tmp_path), "repro", "--single-item", "hello")
    log = [record.getMessage() for record in caplog.records if record.name == "flows.tasks"]
    assert "Running stage 'hello':" in log and "Running stage 'hello':" in lines
    for hint in ("To track the changes with git", "git add", "autostage", "dvc push"):
        assert not any(hint in line for line in log), log
