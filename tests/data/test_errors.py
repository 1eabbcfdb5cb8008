"""Bad input: each kind fails with a message naming the file and the row or id (and what is wrong);
`on_bad_sample="skip"` skips per-sample problems and counts them in the manifest."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from mmp_core.data import ArrowSplit, BadSampleError, DataError, load_prepared
from mmp_core.data.convert import prepare
from mmp_core.data.datasets import get_spec
from tests.data_fixtures import (
    image_bytes,
    make_food101,
    make_hatememes,
    make_mmimdb,
    make_reference_mmimdb,
    write_jsonl,
    write_reference_arrow,
)


def _fails(dataset, raw, tmp_path, *parts, kind=None, **kwargs):
    """prepare() raises a ValueError whose message contains every part; returns it."""
    with pytest.raises(ValueError) as info:
        prepare(dataset, tmp_path / "out", raw_dir=raw, **kwargs)
    message = str(info.value)
    for part in parts:
        assert str(part) in message, f"{part!r} not in {message!r}"
    if kind is not None:
        assert isinstance(info.value, BadSampleError) and info.value.kind == kind
    assert not (tmp_path / "out").exists()
    return message


@pytest.fixture
def mmimdb(tmp_path):
    raw = tmp_path / "raw"
    return raw, make_mmimdb(raw)


def test_corrupt_image(tmp_path, mmimdb):
    raw, ids = mmimdb
    bad = raw / "images" / f"{ids['train'][2]}.jpeg"
    bad.write_bytes(b"this is not an image at all")
    _fails("mmimdb", raw, tmp_path, bad, f"id {ids['train'][2]}", "corrupt or truncated image", kind="corrupt_image")


def test_truncated_image(tmp_path, mmimdb):
    raw, ids = mmimdb
    bad = raw / "images" / f"{ids['dev'][0]}.jpeg"
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    _fails("mmimdb", raw, tmp_path, bad, f"id {ids['dev'][0]}", "truncated", kind="corrupt_image")


def test_listed_image_missing_food101(tmp_path):
    raw = tmp_path / "raw"
    make_food101(raw)
    (raw / "images" / "train" / "pizza" / "pizza_1.jpg").unlink()
    _fails(
        "food101",
        raw,
        tmp_path,
        raw / "split.json",
        "train[1], pizza_1.jpg",
        "images/train/pizza/pizza_1.jpg does not exist",
        kind="missing_image",
    )


def test_listed_image_missing_hatememes(tmp_path):
    raw = tmp_path / "raw"
    records = make_hatememes(raw)
    (raw / records["dev"][1]["img"]).unlink()
    _fails(
        "hatememes",
        raw,
        tmp_path,
        raw / "dev.jsonl",
        "line 2",
        f"listed image {records['dev'][1]['img']}",
        kind="missing_image",
    )


def test_malformed_json_file(tmp_path, mmimdb):
    raw, ids = mmimdb
    bad = raw / "labels" / f"{ids['test'][1]}.json"
    bad.write_text('{"plot": ["x"], "genres": ["Drama"]')
    _fails("mmimdb", raw, tmp_path, bad, f"id {ids['test'][1]}", "malformed JSON at line 1", kind="malformed_json")


def test_malformed_jsonl_line(tmp_path):
    raw = tmp_path / "raw"
    make_hatememes(raw)
    lines = (raw / "train.jsonl").read_text().splitlines()
    lines[3] = lines[3][:-5]
    (raw / "train.jsonl").write_text("\n".join(lines) + "\n")
    _fails("hatememes", raw, tmp_path, raw / "train.jsonl", "line 4", "malformed JSON line", kind="malformed_json")


def test_malformed_split_file_is_fatal(tmp_path, mmimdb):
    raw, _ = mmimdb
    (raw / "split.json").write_text("[1, 2")
    _fails("mmimdb", raw, tmp_path, raw / "split.json", "malformed JSON at line 1", on_bad_sample="skip")


def test_unknown_genre(tmp_path, mmimdb):
    raw, ids = mmimdb
    bad = raw / "labels" / f"{ids['train'][4]}.json"
    bad.write_text(json.dumps({"plot": ["p"], "genres": ["Drama", "Cooking"]}))
    _fails("mmimdb", raw, tmp_path, bad, f"id {ids['train'][4]}", "unknown genre 'Cooking'", kind="unknown_label")
    # genres that are not among the 23 classes are dropped and counted, as are --ignore-label ones
    bad.write_text(json.dumps({"plot": ["p"], "genres": ["Drama", "News", "Cooking"]}))
    manifest = prepare("mmimdb", tmp_path / "out", raw_dir=raw, ignore_labels=["Cooking"])
    assert manifest["files"]["train"]["dropped_labels"] == {"Cooking": 1, "News": 1}


def test_unknown_class(tmp_path):
    raw = tmp_path / "raw"
    entries = make_food101(raw)
    split = json.loads((raw / "split.json").read_text())
    split["test"][2] = "ramen_99.jpg"
    (raw / "split.json").write_text(json.dumps(split))
    _fails(
        "food101",
        raw,
        tmp_path,
        raw / "split.json",
        "test[2], ramen_99.jpg",
        "unknown class 'ramen'",
        kind="unknown_label",
    )
    assert entries


def test_label_out_of_range_jsonl(tmp_path):
    raw = tmp_path / "raw"
    records = make_hatememes(raw)
    records["test"][0]["label"] = 2
    write_jsonl(raw / "test_seen.jsonl", records["test"])
    _fails(
        "hatememes",
        raw,
        tmp_path,
        raw / "test_seen.jsonl",
        f"line 1, id {records['test'][0]['id']}",
        "label 2 is out of range",
        kind="label_out_of_range",
    )


def test_label_out_of_range_class_index(tmp_path):
    raw = tmp_path / "raw"
    make_food101(raw)
    (raw / "class_idx.json").write_text(json.dumps({"apple_pie": 0, "pizza": 1, "sushi": 7}))
    _fails("food101", raw, tmp_path, raw / "class_idx.json", "'sushi' has index 7: label out of range")


def test_label_out_of_range_arrow(tmp_path):
    make_reference_mmimdb(tmp_path / "ref")
    path = tmp_path / "ref" / "mmimdb_dev.arrow"
    table = pa.ipc.open_file(str(path)).read_all()
    labels = table.column("label").to_pylist()
    labels[1] = labels[1][:-1]  # 22 values instead of 23
    write_reference_arrow(path, {**{n: table.column(n) for n in table.column_names}, "label": pa.array(labels)})
    with pytest.raises(
        BadSampleError, match=r"mmimdb_dev\.arrow \(row 1, id 0000007\): label .* is not a multi-hot list of 23"
    ):
        prepare("mmimdb", tmp_path / "out", arrow_dir=tmp_path / "ref")


def test_split_id_with_no_sample(tmp_path, mmimdb):
    raw, ids = mmimdb
    (raw / "labels" / f"{ids['dev'][2]}.json").unlink()
    _fails(
        "mmimdb",
        raw,
        tmp_path,
        raw / "split.json",
        f"dev[2], id {ids['dev'][2]}",
        f"no labels/{ids['dev'][2]}.json",
        kind="no_sample",
    )


def test_duplicate_id(tmp_path, mmimdb):
    raw, ids = mmimdb
    split = json.loads((raw / "split.json").read_text())
    split["test"][1] = ids["train"][0]  # listed in train and in test
    (raw / "split.json").write_text(json.dumps(split))
    _fails(
        "mmimdb",
        raw,
        tmp_path,
        raw / "split.json",
        f"test[1], id {ids['train'][0]}",
        f"duplicate id '{ids['train'][0]}'",
        "train[0]",
        kind="duplicate_id",
    )


def test_duplicate_id_jsonl(tmp_path):
    raw = tmp_path / "raw"
    records = make_hatememes(raw)
    records["train"][5]["id"] = records["train"][0]["id"]
    write_jsonl(raw / "train.jsonl", records["train"])
    _fails("hatememes", raw, tmp_path, raw / "train.jsonl", "line 6", "duplicate id", kind="duplicate_id")


def test_empty_split(tmp_path, mmimdb):
    raw, _ = mmimdb
    split = json.loads((raw / "split.json").read_text())
    split["dev"] = []
    (raw / "split.json").write_text(json.dumps(split))
    _fails("mmimdb", raw, tmp_path, raw / "split.json", "split 'dev' is empty", on_bad_sample="skip")


def test_empty_split_jsonl(tmp_path):
    raw = tmp_path / "raw"
    make_hatememes(raw)
    (raw / "dev.jsonl").write_text("\n")
    _fails("hatememes", raw, tmp_path, raw / "dev.jsonl", "split 'dev' is empty")


def test_split_empty_after_skipping(tmp_path, mmimdb):
    raw, ids = mmimdb
    for sample_id in ids["dev"]:
        (raw / "labels" / f"{sample_id}.json").unlink()
    _fails("mmimdb", raw, tmp_path, "split 'dev' has no usable samples (3 skipped", on_bad_sample="skip")


def test_arrow_wrong_schema(tmp_path):
    spec = get_spec("food101")
    missing = write_reference_arrow(
        tmp_path / "food101_train.arrow", {"image": pa.array([b"x"]), "label": pa.array([1])}
    )
    with pytest.raises(DataError, match=r"food101_train\.arrow: wrong schema .*missing column\(s\) \['text'\]"):
        ArrowSplit(missing, spec)
    wrong = write_reference_arrow(
        tmp_path / "food101_val.arrow",
        {"image": pa.array([b"x"]), "text": pa.array([["t"]]), "label": pa.array(["pizza"])},
    )
    with pytest.raises(DataError, match=r"food101_val\.arrow: .*column 'label' has type string, expected an integer"):
        ArrowSplit(wrong, spec)
    garbage = tmp_path / "food101_test.arrow"
    garbage.write_bytes(b"not arrow")
    with pytest.raises(DataError, match=r"food101_test\.arrow: not an Arrow IPC file"):
        ArrowSplit(garbage, spec)


def test_non_utf8_text_file(tmp_path, mmimdb):
    raw, ids = mmimdb
    bad = raw / "labels" / f"{ids['train'][3]}.json"
    bad.write_bytes('{"plot": ["caf\xe9"], "genres": ["Drama"]}'.encode("latin-1"))
    _fails("mmimdb", raw, tmp_path, bad, f"id {ids['train'][3]}", "not valid UTF-8 (byte 0xe9", kind="non_utf8")


def test_non_utf8_jsonl_line(tmp_path):
    raw = tmp_path / "raw"
    make_hatememes(raw)
    with open(raw / "dev.jsonl", "ab") as handle:
        handle.write(b'{"id": 1, "img": null, "label": 0, "text": "caf\xe9"}\n')
    _fails("hatememes", raw, tmp_path, raw / "dev.jsonl", "line 4", "not valid UTF-8", kind="non_utf8")


def test_skip_policy_counts_bad_samples(tmp_path, mmimdb):
    raw, ids = mmimdb
    (raw / "images" / f"{ids['train'][0]}.jpeg").write_bytes(b"junk")  # corrupt_image
    (raw / "labels" / f"{ids['train'][1]}.json").write_text("{")  # malformed_json
    (raw / "labels" / f"{ids['train'][2]}.json").write_text(json.dumps({"plot": ["p"], "genres": ["Cooking"]}))
    (raw / "labels" / f"{ids['dev'][0]}.json").unlink()  # no_sample
    split = json.loads((raw / "split.json").read_text())
    split["test"].append(ids["test"][0])  # duplicate_id
    (raw / "split.json").write_text(json.dumps(split))
    manifest = prepare("mmimdb", tmp_path / "out", raw_dir=raw, on_bad_sample="skip")
    files = manifest["files"]
    assert files["train"]["skipped"] == {"corrupt_image": 1, "malformed_json": 1, "unknown_label": 1}
    assert files["dev"]["skipped"] == {"no_sample": 1} and files["test"]["skipped"] == {"duplicate_id": 1}
    assert [files[s]["rows"] for s in ("train", "dev", "test")] == [3, 2, 3]
    assert manifest["skipped_total"] == 5 and manifest["on_bad_sample"] == "skip"
    assert str(raw / "images" / f"{ids['train'][0]}.jpeg") in manifest["skipped_examples"][0]["message"]
    reader = load_prepared(tmp_path / "out").open_split("train")
    assert reader.ids() == ids["train"][3:]


def test_cli_reports_bad_input_in_one_line(tmp_path, mmimdb, capsys):
    from mmp_core.cli import main

    raw, ids = mmimdb
    bad = raw / "images" / f"{ids['test'][2]}.jpeg"
    bad.write_bytes(image_bytes()[:100])
    code = main(["prepare", "--dataset", "mmimdb", "--raw", str(raw), "--out", str(tmp_path / "out"), "--workers", "1"])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("mmp prepare: error: ") and error.count("\n") == 1
    assert str(bad) in error and f"id {ids['test'][2]}" in error
    code = main(
        ["prepare", "--dataset", "mmimdb", "--raw", str(raw), "--out", str(tmp_path / "out"), "--on-bad-sample", "skip"]
    )
    assert code == 0 and json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped_total"] == 1
