"""Missing-modality scenarios: exact counts, 50/50 'both', determinism, order independence, nesting,
natural missing, saved tables and the reference `.pt` import."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mmp_core.data import load_prepared
from mmp_core.data.convert import prepare
from mmp_core.data.missing import (
    import_reference_tables,
    load_reference_table,
    missing_table,
    parse_reference_name,
    save_tables,
    scenario_table,
)
from mmp_core.scenarios import MissingScenario
from tests.data_fixtures import make_mmimdb

FP = "f" * 64
N = 1000


def _counts(table):
    return np.bincount(table, minlength=3).tolist()


@pytest.mark.parametrize(
    ("missing_type", "rate", "expected"),
    [
        ("text", 0.0, [1000, 0, 0]),
        ("text", 0.3, [700, 300, 0]),
        ("text", 0.7, [300, 700, 0]),
        ("text", 1.0, [0, 1000, 0]),
        ("image", 0.0, [1000, 0, 0]),
        ("image", 0.3, [700, 0, 300]),
        ("image", 0.7, [300, 0, 700]),
        ("image", 1.0, [0, 0, 1000]),
        ("both", 0.0, [1000, 0, 0]),
        ("both", 0.3, [700, 150, 150]),
        ("both", 0.7, [300, 350, 350]),
        ("both", 1.0, [0, 500, 500]),
    ],
)
def test_exact_counts(missing_type, rate, expected):
    table = scenario_table(FP, "train", MissingScenario(missing_type, rate), seed=0, n=N)
    assert table.dtype == np.int8 and table.shape == (N,)
    assert _counts(table) == expected


def test_both_with_odd_count_gives_the_extra_row_to_text():
    assert _counts(scenario_table(FP, "dev", MissingScenario("both", 0.7), 0, 7)) == [2, 3, 2]  # k = round(4.9) = 5


def test_deterministic_and_keyed_by_every_input():
    scenario = MissingScenario("both", 0.7)
    base = scenario_table(FP, "train", scenario, 0, N)
    assert np.array_equal(base, scenario_table(FP, "train", scenario, 0, N))
    for other in (
        scenario_table(FP, "train", scenario, 1, N),
        scenario_table(FP, "test", scenario, 0, N),
        scenario_table("e" * 64, "train", scenario, 0, N),
    ):
        assert _counts(other) == _counts(base) and not np.array_equal(other, base)


def test_order_independent():
    """A table does not depend on which tables were computed or saved before it."""
    scenarios = [MissingScenario(t, r) for t in ("text", "image", "both") for r in (0.3, 0.7)]
    forward = {s: scenario_table(FP, "train", s, 0, N) for s in scenarios}
    backward = {s: scenario_table(FP, "train", s, 0, N) for s in reversed(scenarios)}
    assert all(np.array_equal(forward[s], backward[s]) for s in scenarios)
    # and the random state of numpy/torch does not matter
    np.random.seed(123)
    torch.manual_seed(123)
    assert np.array_equal(scenario_table(FP, "train", scenarios[0], 0, N), forward[scenarios[0]])


def test_saved_tables_do_not_depend_on_save_order(tmp_path):
    natural = {"train": np.zeros(50, np.int8), "test": np.zeros(20, np.int8)}
    scenarios = [MissingScenario(t, r) for t in ("both", "text") for r in (0.1, 0.7)]
    a = save_tables(tmp_path / "a", FP, natural, scenarios, seed=3)
    b = save_tables(tmp_path / "b", FP, dict(reversed(natural.items())), list(reversed(scenarios)), seed=3)
    assert {k: v["sha256"] for k, v in a["tables"].items()} == {k: v["sha256"] for k, v in b["tables"].items()}


@pytest.mark.parametrize("missing_type", ["text", "image", "both"])
def test_nested_across_rates(missing_type):
    rates = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    tables = [scenario_table(FP, "test", MissingScenario(missing_type, r), 0, 333) for r in rates]
    for smaller, larger in itertools.pairwise(tables):
        missing = smaller != 0
        assert np.all(larger[missing] != 0)  # the missing set only grows
        assert np.array_equal(larger[missing], smaller[missing])  # and a row keeps its missing type


def test_natural_missing_is_forced_and_counts_towards_the_rate():
    natural = np.zeros(100, np.int8)
    natural[:5] = 1  # no text
    natural[5:8] = 2  # no image
    text = scenario_table(FP, "train", MissingScenario("text", 0.3), 0, 100, natural)
    assert _counts(text) == [67, 30, 3] and np.all(text[:5] == 1) and np.all(text[5:8] == 2)
    zero = scenario_table(FP, "train", MissingScenario("image", 0.0), 0, 100, natural)
    assert np.array_equal(zero, natural)
    both = scenario_table(FP, "train", MissingScenario("both", 0.3), 0, 100, natural)
    assert _counts(both) == [70, 15, 15] and np.all(both[:5] == 1) and np.all(both[5:8] == 2)
    full = scenario_table(FP, "train", MissingScenario("text", 1.0), 0, 100, natural)
    assert _counts(full) == [0, 97, 3]  # an image-less row never loses its text too


@pytest.mark.parametrize(
    "bad", [("none", 0.5), ("text", -0.1), ("text", 1.5), ("both", float("nan")), ("both", True), ("image", "0.5")]
)
def test_scenario_validation(bad):
    with pytest.raises(ValueError):
        MissingScenario(*bad)


def test_scenario_parse_and_name():
    scenario = MissingScenario.parse("both:0.7")
    assert scenario == MissingScenario("both", 0.7) and scenario.name == "both_0.70"
    assert MissingScenario.parse("text_0.30") == MissingScenario("text", 0.3)
    with pytest.raises(ValueError, match="cannot parse"):
        MissingScenario.parse("both")
    with pytest.raises(AttributeError):
        scenario.rate = 0.1  # frozen


@pytest.fixture
def prepared(tmp_path):
    make_mmimdb(tmp_path / "raw", sizes={"train": 20, "dev": 10, "test": 10})
    scenarios = [MissingScenario("both", 0.7), MissingScenario("text", 0.3)]
    prepare("mmimdb", tmp_path / "out", raw_dir=tmp_path / "raw", missing_scenarios=scenarios, missing_seed=5)
    return load_prepared(tmp_path / "out")


def test_missing_table_loads_saved_or_computes(prepared):
    scenario = MissingScenario("both", 0.7)
    saved = missing_table(prepared, "train", scenario, seed=5)
    assert np.array_equal(saved, np.load(prepared.root / "missing" / "train_both_0.70.npy"))
    assert np.array_equal(saved, scenario_table(prepared.fingerprint, "train", scenario, 5, 20))
    other = missing_table(prepared, "train", MissingScenario("image", 0.4), seed=0)  # not saved: computed
    assert _counts(other) == [12, 0, 8]
    # a modified saved table is detected
    path = prepared.root / "missing" / "train_both_0.70.npy"
    np.save(path, np.zeros(20, np.int8))
    with pytest.raises(ValueError, match=r"train_both_0\.70\.npy: checksum"):
        missing_table(prepared, "train", scenario, seed=5)


def test_runs_use_the_seed_the_data_was_prepared_with(prepared):
    from mmp_core.config import TrainParams
    from mmp_core.model.loading import missing_seed

    assert missing_seed(prepared, TrainParams()) == 5, "one setting: prepare.missing_seed"
    assert missing_seed(prepared, TrainParams(missing_seed=2)) == 2, "unless a run asks for another"


def test_reference_name_parsing():
    assert parse_reference_name("mmimdb_train_missing_both_07.pt") == ("mmimdb", "train", MissingScenario("both", 0.7))
    assert parse_reference_name("food101_val_missing_text_1.pt")[2] == MissingScenario("text", 1.0)
    assert parse_reference_name("hatememes_test_missing_image_0.pt")[2] == MissingScenario("image", 0.0)
    assert parse_reference_name("mmimdb_dev_missing_image_0.3.pt")[2] == MissingScenario("image", 0.3)
    with pytest.raises(ValueError, match="not a reference missing-table name"):
        parse_reference_name("mmimdb_train_both.pt")


def test_reference_import(prepared, tmp_path):
    reference = torch.tensor([0.0, 1.0, 2.0, 1.0] * 5)
    torch.save(reference, tmp_path / "mmimdb_train_missing_both_07.pt")
    torch.save(torch.zeros(10), tmp_path / "mmimdb_test_missing_text_03.pt")
    names = import_reference_tables(prepared, [tmp_path])
    assert names == ["test_text_0.30", "train_both_0.70"]
    table = missing_table(prepared, "train", MissingScenario("both", 0.7), reference=True)
    assert table.dtype == np.int8 and table.tolist() == [0, 1, 2, 1] * 5
    # the generated table of the same scenario is still there, separately
    assert not np.array_equal(missing_table(prepared, "train", MissingScenario("both", 0.7), seed=5), table)
    with pytest.raises(FileNotFoundError, match=r"no reference table for dev_both_0\.70"):
        missing_table(prepared, "dev", MissingScenario("both", 0.7), reference=True)

    # Training and evaluation select it with `source: reference` in their scenario.
    from mmp_core.config import ScenarioParams, TrainParams
    from mmp_core.data import build_tokenizer
    from mmp_core.model.loading import split_dataset

    params = TrainParams(train_missing={"type": "both", "rate": 0.7, "source": "reference"})
    from mmp_core.data.vocab import build_vocab, write_vocab

    tokenizer = build_tokenizer(write_vocab(tmp_path / "vocab.txt", build_vocab(["plot about love"])))
    dataset = split_dataset(prepared, "train", tokenizer, params, params.train_missing)
    assert dataset.missing_types.tolist() == [0, 1, 2, 1] * 5
    generated = split_dataset(prepared, "train", tokenizer, params, ScenarioParams(type="both", rate=0.7))
    assert generated.missing_types.tolist() != [0, 1, 2, 1] * 5


def test_reference_import_rejects_bad_tables(prepared, tmp_path):
    wrong_length = tmp_path / "mmimdb_train_missing_text_07.pt"
    torch.save(torch.zeros(7), wrong_length)
    with pytest.raises(ValueError, match=r"mmimdb_train_missing_text_07\.pt: table has 7 rows, but the split has 20"):
        import_reference_tables(prepared, [wrong_length])
    bad_value = tmp_path / "mmimdb_train_missing_image_07.pt"
    torch.save(torch.tensor([0.0] * 19 + [3.0]), bad_value)
    with pytest.raises(ValueError, match=r"row 19 has value 3\.0"):
        load_reference_table(bad_value)
    # weights_only=True: a pickled object that is not plain tensor data is refused, never executed
    pickled = tmp_path / "mmimdb_train_missing_both_05.pt"
    torch.save({"table": torch.zeros(20), "loader": _NotAllowed()}, pickled)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_reference_table(pickled)


class _NotAllowed:
    pass


def test_the_old_import_path_still_gives_the_same_names():
    """`from mmp_core.missing import MissingScenario, missing_table` (docs/data.md before the tables moved into
    data/) keeps working: the old module re-exports the vocabulary and the tables, the very same objects."""
    import mmp_core.data.missing as tables
    import mmp_core.missing as old
    import mmp_core.scenarios as scenarios

    assert old.MissingScenario is scenarios.MissingScenario and old.missing_table is tables.missing_table
    for name in old.__all__:
        assert getattr(old, name) is getattr(scenarios, name, None) or getattr(old, name) is getattr(tables, name)
