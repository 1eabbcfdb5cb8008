"""Does it learn? The shipped backbone (its card, its held-out matching), the check that flags a model which
predicts one answer everywhere, and the seed sweep's mean ± sd."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mmp_core.config import PretrainParams
from mmp_core.evaluation.metrics import prior_baseline, sanity_check
from mmp_core.evaluation.seeds import aggregate_documents, aggregate_method
from mmp_core.model.backbone import load_backbone
from mmp_core.model.inference import predict
from mmp_core.params_file import load_section, read_seeds
from mmp_core.pretraining.data import ScenePairs
from mmp_core.pretraining.model_card import CARD_DATA_NAME, CARD_NAME, verify_card
from mmp_core.pretraining.pretrain import HEADS_NAME, load_pretraining_model, matching_metrics
from tests.model_fixtures import REPO, make_backbone_dir, make_prepared, run_mmp
from tests.results_fixtures import metrics_document

# The task-aligned stand-in; the ViLT-faithful one (backbones/generic) is tested in tests/pretraining/test_premise.py.
SHIPPED = REPO / "backbones" / "embedded"


# ---------------------------------------------------------------------------------------------- shipped backbone
def test_shipped_backbone_is_the_one_its_card_describes():
    assert verify_card(SHIPPED) == json.loads((SHIPPED / CARD_DATA_NAME).read_text())["weights_sha256"]
    card = (SHIPPED / CARD_NAME).read_text()
    assert verify_card(SHIPPED) in card
    assert "mmp pretrain" in card  # the command that made it
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size <= 10 * 2**20, f"{SHIPPED} is {size / 2**20:.1f} MB, over the 10 MB budget"
    summary = json.loads((SHIPPED / "pretrain_summary.json").read_text())
    assert summary["heldout"]["itm_accuracy"] >= 0.85 and summary["heldout"]["retrieval_r1_at_100"] >= 0.2
    probe = json.loads((SHIPPED / "probe.json").read_text())
    assert probe["complete"]["f1_macro"] >= 0.72  # 90% of the hand-feature probe (0.80)
    assert (
        max(probe["text missing"]["f1_macro"], probe["image missing"]["f1_macro"]) < probe["complete"]["f1_macro"] - 0.1
    )
    # Parameters added to the schema since it was made count only when params.yaml moves them off their default.
    params = load_section(REPO / "params.yaml", "pretrain", PretrainParams).model_dump(mode="json")
    defaults = PretrainParams().model_dump(mode="json")
    assert summary["params"] == {k: v for k, v in params.items() if k in summary["params"] or v != defaults[k]}


def test_shipped_backbone_matches_pairs_it_never_saw():
    """Image-text matching on freshly generated scenes (corpus part 2: neither pretraining's 0 nor the held-out 1)."""
    from mmp_core.data import build_tokenizer

    model = load_pretraining_model(SHIPPED)
    params = load_section(REPO / "params.yaml", "pretrain", PretrainParams)
    pairs = ScenePairs(params, build_tokenizer(SHIPPED / "vocab.txt"), part=2, size=160)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        metrics = matching_metrics(model, pairs, candidates=None)
    assert metrics["itm_accuracy"] >= 0.85, metrics


def test_pretraining_heads_round_trip(tmp_path):
    """A tiny pretraining run writes heads that load back into the same held-out numbers it reported."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        yaml.safe_dump({"pretrain": {"config": "tiny", "pairs": 64, "heldout": 100, "epochs": 1, "batch_size": 16}})
    )
    run_mmp(["pretrain", "--out", str(tmp_path / "bb"), "--params", str(params_file)], cwd=tmp_path)
    assert (tmp_path / "bb" / HEADS_NAME).is_file()
    summary = json.loads((tmp_path / "bb" / "pretrain_summary.json").read_text())
    verify_card(tmp_path / "bb")
    from mmp_core.data import build_tokenizer

    params = load_section(params_file, "pretrain", PretrainParams)
    heldout = ScenePairs(params, build_tokenizer(tmp_path / "bb" / "vocab.txt"), part=1, size=100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = matching_metrics(load_pretraining_model(tmp_path / "bb"), heldout, candidates=100)
    for key in ("itm_accuracy", "itm_accuracy_hard_negatives"):
        assert again[key] == pytest.approx(summary["heldout"][key], abs=0.02)
    # An untrained model ties every candidate: recall@1 must be near chance, not 1 (ties are misses).
    assert again["retrieval_r1_at_100"] <= 0.2


# ---------------------------------------------------------------------------------------------- degenerate models
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    prepared = make_prepared(root)
    return prepared, make_backbone_dir(root / "backbone", prepared)


def test_a_constant_head_is_flagged(tiny_data):
    from mmp_core.data import ImageConfig, MultimodalDataset, build_tokenizer, collate, load_prepared
    from mmp_core.model.prompts import MissingAwarePromptConfig, MissingAwarePromptModel

    prepared_dir, backbone_dir = tiny_data
    prepared = load_prepared(prepared_dir)
    spec = prepared.spec
    config = MissingAwarePromptConfig(task=spec.task, num_labels=spec.num_labels, prompt_type="none")
    model = MissingAwarePromptModel(load_backbone(str(backbone_dir)), config).eval()
    last = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # one answer whatever the input: the first genre only
        last.weight.zero_()
        last.bias.fill_(-5.0)
        last.bias[0] = 5.0
    tokenizer = build_tokenizer(backbone_dir / "vocab.txt")
    test = MultimodalDataset(
        prepared, spec.test_split, tokenizer, image_config=ImageConfig(64, 96, 16), max_text_len=40
    )
    scores, labels = predict(model, test, collate, batch_size=16)
    train_labels = prepared.open_split(spec.train_split).labels()
    verdict = sanity_check(spec.task, scores, labels, prior_baseline(spec.task, train_labels, labels))
    assert verdict["degenerate"] and verdict["most_common_answer_share"] == 1.0 and verdict["distinct_answers"] == 1
    assert not verdict["beats_prior"]
    assert any("near-constant answers: 100% of the samples get the same answer" in w for w in verdict["warnings"])

    # Perfect scores pass both checks.
    good = sanity_check(spec.task, labels.astype(float), labels, prior_baseline(spec.task, train_labels, labels))
    assert not good["degenerate"] and good["beats_prior"] and good["warnings"] == []


def test_prior_baseline_values():
    train = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 0]])
    test = np.array([[1, 0, 0], [0, 1, 0]])
    # Predicting labels 0 and 1 (present in train) for everyone: F1 2/3 on each, 0 on the absent label 2.
    assert prior_baseline("multilabel", train, test) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert prior_baseline("multiclass", np.array([2, 2, 1]), np.array([2, 1, 1, 2])) == 0.5
    assert prior_baseline("binary", np.array([0, 1]), np.array([0, 1])) == 0.5


# ---------------------------------------------------------------------------------------------- seeds
def _document(method: str, shift: float, seed: int) -> dict:
    document = metrics_document(method, lambda t, r: 0.5 - 0.2 * r + shift)
    document["sanity"] = {"warnings": [], "degenerate": False}
    return document


def test_seeds_fold_into_mean_and_sd():
    documents = {seed: _document("input", shift, seed) for seed, shift in ((0, 0.00), (1, 0.02), (2, 0.04))}
    summaries = {0: {"best_val_f1_macro": 0.4}, 1: {"best_val_f1_macro": 0.6}, 2: {"best_val_f1_macro": 0.5}}
    folded = aggregate_documents(documents, summaries)
    metric = folded["primary_metric"]
    head = [documents[s]["headline"][metric] for s in (0, 1, 2)]
    assert folded["headline"][metric] == pytest.approx(np.mean(head))
    assert folded["headline_sd"][metric] == pytest.approx(np.std(head, ddof=1)) == pytest.approx(0.02)
    assert len(folded["grid"]) == len(folded["grid_sd"]) == len(documents[0]["grid"])
    for mean, sd in zip(folded["grid"], folded["grid_sd"], strict=True):
        assert (mean["missing_type"], mean["missing_rate"]) == (sd["missing_type"], sd["missing_rate"])
        assert sd[metric] == pytest.approx(0.02)
    assert folded["seeds"] == [0, 1, 2]
    assert folded["adapter_seed"] == 1  # best validation score, never the test split
    assert folded["per_seed"]["2"]["headline"] == pytest.approx(head[2])


def test_one_seed_has_zero_sd_and_failing_seeds_are_named():
    document = _document("baseline", 0.0, 0)
    folded = aggregate_documents({0: document}, {0: {"best_val_f1_macro": 0.3}})
    assert folded["headline_sd"]["f1_macro"] == 0.0 and folded["headline"] == document["headline"]
    bad = _document("baseline", 0.0, 1)
    bad["sanity"] = {"warnings": ["degenerate model: 99% of the samples get the same answer (2 distinct answers)"]}
    folded = aggregate_documents({0: document, 1: bad}, {0: {"best_val_f1_macro": 0.3}, 1: {"best_val_f1_macro": 0.1}})
    assert folded["sanity"]["warnings"] == [f"seed 1: {bad['sanity']['warnings'][0]}"]


def test_seeds_that_disagree_on_the_grid_are_refused():
    one, other = _document("input", 0, 0), _document("input", 0, 1)
    other["grid"] = other["grid"][:-1]
    with pytest.raises(ValueError, match="seed 1: its scenario grid differs"):
        aggregate_documents({0: one, 1: other}, {0: {"best_val_f1_macro": 0}, 1: {"best_val_f1_macro": 0}})
    other = _document("attention", 0, 1)
    with pytest.raises(ValueError, match="seed 1: method 'attention' differs"):
        aggregate_documents({0: one, 1: other}, {0: {"best_val_f1_macro": 0}, 1: {"best_val_f1_macro": 0}})


def _lay_out_seeds(root: Path, seeds) -> tuple[Path, Path]:
    results, models = root / "results" / "input", root / "models" / "input"
    for seed in seeds:
        (results / "seeds" / str(seed)).mkdir(parents=True)
        (results / "seeds" / str(seed) / "metrics.json").write_text(json.dumps(_document("input", 0.01 * seed, seed)))
        (models / "seeds" / str(seed)).mkdir(parents=True)
        (models / "seeds" / str(seed) / "train_summary.json").write_text(json.dumps({"best_val_f1_macro": 0.1 * seed}))
    return results, models


def test_mmp_aggregate_reads_the_seeds_of_params_yaml(tmp_path):
    results, models = _lay_out_seeds(tmp_path, (0, 1, 2, 3))  # seed 3: a leftover of an earlier sweep
    (tmp_path / "params.yaml").write_text("seeds: [0, 1, 2]\n")
    out = run_mmp(["aggregate", "--method", "input", "--results", str(results), "--models", str(models)], cwd=tmp_path)
    folded = json.loads((results / "metrics.json").read_text())
    assert folded["seeds"] == [0, 1, 2] and folded["adapter_seed"] == 2
    assert "over seeds [0, 1, 2]" in out.stdout and "±" in out.stdout
    curve = (results / "curves" / "both.tsv").read_text().splitlines()
    assert curve[0] == "missing_rate\tscore" and len(curve) > 2
    assert (results / "grid.tsv").is_file()


def test_a_missing_seed_is_named(tmp_path):
    results, models = _lay_out_seeds(tmp_path, (0,))
    with pytest.raises(FileNotFoundError, match=r"seeds/1/metrics.json: no evaluation results"):
        aggregate_method(results, models, (0, 1))


@pytest.mark.parametrize(
    ("text", "message"),
    [("seeds: 3\n", "non-empty list"), ("seeds: []\n", "non-empty list"), ("seeds: [0, -1]\n", "non-negative"),
     ("seeds: [1, 1]\n", "twice"), ("seeds: [0, x]\n", "non-negative")],
)  # fmt: skip
def test_bad_seeds_are_refused(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_seeds(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("train: {}\n")
    assert read_seeds(tmp_path / "params.yaml") == (0,)
