"""Untrusted input never escapes its data root nor passes silently; bad run settings fail before any work.

Each test builds the hostile input itself: ids and file fields that point outside the root, absent files whose
sibling with another extension exists, absent modalities that must be explained, a misspelt params section,
store URLs that are not stores, run ids that cannot be stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mmp_core.config import PipelineParams, TrainParams
from mmp_core.data import BadSampleError
from mmp_core.data.convert import prepare
from mmp_core.params_file import load_params
from mmp_core.s3 import validate_store_location
from mmp_core.storage import open_store
from tests.data_fixtures import image_bytes, make_food101, make_hatememes, make_mmimdb, write_jsonl
from tests.model_fixtures import REPO


def _prepare_fails(dataset, raw, tmp_path, kind, *parts):
    with pytest.raises(BadSampleError) as info:
        prepare(dataset, tmp_path / "out", raw_dir=raw)
    assert info.value.kind == kind, str(info.value)
    for part in parts:
        assert part in str(info.value), f"{part!r} not in {info.value}"
    assert not (tmp_path / "out").exists()
    return str(info.value)


# ---------------------------------------------------------------------------------------------- a data root is a jail
@pytest.mark.parametrize("bad_id", ["../../secret", "168/5266", "/etc/passwd", "..", ".hidden"])
def test_mmimdb_ids_that_are_not_file_names_are_refused(tmp_path, bad_id):
    raw = tmp_path / "data" / "raw"
    ids = make_mmimdb(raw)
    # The file the traversal would reach exists: it must not be read.
    (tmp_path / "secret.json").write_text(json.dumps({"plot": ["stolen"], "genres": ["Drama"]}))
    (tmp_path / "secret.jpeg").write_bytes(image_bytes())
    ids["train"][1] = bad_id
    (raw / "split.json").write_text(json.dumps(ids))
    _prepare_fails("mmimdb", raw, tmp_path, "unsafe_path", f"id {bad_id!r} is not a plain file name", "split.json")
    # With the skip policy it is skipped and counted, never read.
    manifest = prepare("mmimdb", tmp_path / "out", raw_dir=raw, on_bad_sample="skip")
    assert manifest["files"]["train"]["skipped"] == {"unsafe_path": 1}
    assert manifest["files"]["train"]["rows"] == len(ids["train"]) - 1


@pytest.mark.parametrize("img", ["../../x.png", "/tmp/x.png", "img/../../x.png"])
def test_hatememes_img_fields_outside_the_root_are_refused(tmp_path, img):
    raw = tmp_path / "data" / "raw"
    records = make_hatememes(raw)
    (tmp_path / "x.png").write_bytes(image_bytes(fmt="PNG"))
    records["train"][0]["img"] = img
    write_jsonl(raw / "train.jsonl", records["train"])
    _prepare_fails("hatememes", raw, tmp_path, "unsafe_path", "points outside the dataset directory", "line 1")


def test_a_symlink_out_of_the_root_is_refused(tmp_path):
    raw = tmp_path / "raw"
    records = make_hatememes(raw)
    (tmp_path / "outside.png").write_bytes(image_bytes(fmt="PNG"))
    (raw / "img" / "link.png").symlink_to(tmp_path / "outside.png")
    records["dev"][0]["img"] = "img/link.png"
    write_jsonl(raw / "dev.jsonl", records["dev"])
    _prepare_fails("hatememes", raw, tmp_path, "unsafe_path", "'img/link.png'")


def test_food101_class_names_cannot_climb_out(tmp_path):
    raw = tmp_path / "raw"
    entries = make_food101(raw)
    entries["train"][0] = "../../pizza_1.jpg"
    (raw / "split.json").write_text(json.dumps(entries))
    _prepare_fails("food101", raw, tmp_path, "unsafe_path", "is not a plain file name")


# ---------------------------------------------------------------------------------------------- nothing passes silently
def test_mmimdb_plot_must_be_a_list(tmp_path):
    raw = tmp_path / "raw"
    ids = make_mmimdb(raw)
    path = raw / "labels" / f"{ids['dev'][1]}.json"
    record = json.loads(path.read_text())
    record["plot"] = "one string, not a list"
    path.write_text(json.dumps(record))
    _prepare_fails("mmimdb", raw, tmp_path, "malformed_json", "field 'plot' must be a list of strings, got a string")


def test_an_image_with_another_extension_is_an_error_not_natural_missing(tmp_path):
    raw = tmp_path / "raw"
    ids = make_mmimdb(raw)
    sample = ids["test"][0]
    (raw / "images" / f"{sample}.jpeg").rename(raw / "images" / f"{sample}.jpg")
    _prepare_fails("mmimdb", raw, tmp_path, "missing_image", f"images/{sample}.jpg does", f"images/{sample}.jpeg")


def test_a_hatememes_line_without_img_whose_image_exists_is_an_error(tmp_path):
    raw = tmp_path / "raw"
    records = make_hatememes(raw)
    del records["test"][1]["img"]
    write_jsonl(raw / "test_seen.jsonl", records["test"])
    _prepare_fails("hatememes", raw, tmp_path, "missing_image", "no 'img' field", f"img/{records['test'][1]['id']}.png")


def test_natural_missing_is_recorded_per_id_with_its_reason(tmp_path, capsys):
    raw = tmp_path / "raw"
    ids = make_mmimdb(raw)
    no_image, empty_plot = ids["train"][0], ids["train"][1]
    (raw / "images" / f"{no_image}.jpeg").unlink()
    path = raw / "labels" / f"{empty_plot}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "plot": []}))
    manifest = prepare("mmimdb", tmp_path / "out", raw_dir=raw)
    reasons = manifest["files"]["train"]["natural_missing_reasons"]
    assert reasons == {no_image: f"image: no images/{no_image}.jpeg", empty_plot: "text: empty plot"}
    assert manifest["files"]["train"]["natural_missing"] == {"text": 1, "image": 1}

    from mmp_core.cli import main

    assert main(["data-info", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "why: {" in out and f"{no_image} (image: no images/{no_image}.jpeg)" in out

    # Food-101: a sample without a text.json entry is natural missing text, and says so.
    food = tmp_path / "food"
    entries = make_food101(food)
    titles = json.loads((food / "text.json").read_text())
    del titles[entries["val"][0]]
    (food / "text.json").write_text(json.dumps(titles))
    manifest = prepare("food101", tmp_path / "food-out", raw_dir=food)
    assert manifest["files"]["val"]["natural_missing_reasons"] == {entries["val"][0]: "text: no text.json entry"}

    # Hateful Memes: a line with no img field and no image on disk.
    memes = tmp_path / "memes"
    records = make_hatememes(memes)
    (memes / records["dev"][2]["img"]).unlink()
    del records["dev"][2]["img"]
    write_jsonl(memes / "dev.jsonl", records["dev"])
    manifest = prepare("hatememes", tmp_path / "memes-out", raw_dir=memes)
    assert manifest["files"]["dev"]["natural_missing_reasons"] == {str(records["dev"][2]["id"]): "image: no img field"}


# ---------------------------------------------------------------------------------------------- bad settings fail early
def test_a_misspelt_section_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("trian:\n  epochs: 20\n")
    with pytest.raises(ValueError, match=r"unknown top-level key\(s\) 'trian' \(did you mean 'train'\?\)"):
        load_params(tmp_path / "params.yaml", {"train": TrainParams})


@pytest.mark.parametrize("store", ["http://example.com/x", "S3://bucket/x", "gs://bucket/x", "s3://"])
def test_store_urls_that_are_not_stores_are_refused(tmp_path, store):
    with pytest.raises(ValueError):
        validate_store_location(store)
    with pytest.raises(ValueError, match="store"):
        PipelineParams(store=store, repo=str(tmp_path))
    with pytest.raises(ValueError):
        open_store(store)
    assert not list(tmp_path.iterdir())


def test_local_and_s3_stores_pass(tmp_path):
    assert validate_store_location(str(tmp_path / "store")) == str(tmp_path / "store")
    assert validate_store_location("s3://bucket/prefix") == "s3://bucket/prefix"
    assert validate_store_location("relative/store") == "relative/store"


def test_run_ids_too_long_for_a_store_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="longer than 128 characters"):
        PipelineParams(run_id="r" * 200)
    result = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--repo", str(tmp_path), "--run-id", "r" * 200, "--store", "gs://x/y"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "longer than 128 characters" in result.stderr and "unsupported store location 'gs://x/y'" in result.stderr
    assert not (tmp_path / "store").exists()


# ---------------------------------------------------------------------------------------------- nothing left behind
def test_staging_folders_of_killed_runs_are_cleaned_by_the_next_run(tmp_path):
    raw = tmp_path / "raw"
    make_mmimdb(raw)
    dead = tmp_path / ".out.tmp-999999999-abc"  # no such process
    dead.mkdir()
    (dead / "half.arrow").write_bytes(b"x")
    legacy = tmp_path / ".out.tmp-xyz"  # an older mmp's staging folder, no pid
    legacy.mkdir()
    live = tmp_path / f".out.tmp-{os.getpid()}-def"  # a running process's: left alone
    live.mkdir()
    prepare("mmimdb", tmp_path / "out", raw_dir=raw)
    assert not dead.exists() and not legacy.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == [live.name]


def test_partial_uploads_never_stay_in_a_published_run(tmp_path):
    store = open_store(str(tmp_path / "store"))
    source = tmp_path / "a.json"
    source.write_text("{}")
    partial = tmp_path / "store" / "runs" / "r1" / "results" / ".a.json.xyz.part"  # a killed earlier attempt
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half")
    store.publish_run("r1", {"results/a.json": source}, {})
    assert not partial.exists()
    files = {p.name for p in (tmp_path / "store" / "runs" / "r1").rglob("*") if p.is_file()}
    assert files == {"a.json", "manifest.json"}


def test_an_unreachable_s3_backbone_is_one_line(tmp_path):
    from tests.conftest import free_port

    env = {**os.environ, "MMP_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "MMP_CACHE_DIR": str(tmp_path)}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "mmp_core.cli", "demo", "--backbone", "s3://no-such-bucket/vilt"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("mmp demo: error: S3: Could not connect to the endpoint URL"), result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_s3_bucket_is_one_line(tmp_path, moto_server):
    env = {**os.environ, "MMP_S3_ENDPOINT_URL": moto_server, "MMP_CACHE_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "mmp_core.cli", "demo", "--backbone", "s3://no-such-bucket/vilt"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "mmp demo: error: S3: NoSuchBucket" in result.stderr
