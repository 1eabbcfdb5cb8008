"""Pretraining on a dataset's own pairs: continued from a pretrained backbone with its vocabulary extended, the
held-out split's matching metrics and the warning near chance, a model card of what was done, and checkpoints
that resume an interrupted run to the same weights."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmp_core.config import PretrainParams
from mmp_core.model.backbone import small_config
from mmp_core.pretraining.checkpoints import LATEST, claim_checkpoint_dir
from mmp_core.pretraining.checks import chance_bound, chance_warning, own_data_verdict
from mmp_core.pretraining.init import extend_word_rows, merged_vocabulary, read_vocab, tokenizer_from_vocab
from mmp_core.pretraining.model import HEADS_NAME, PretrainingModel, save_heads
from mmp_core.pretraining.model_card import CARD_DATA_NAME, CARD_NAME, PROBE_NAME, SUMMARY_NAME, render_card, write_card
from tests.model_fixtures import REPO, TINY_IMAGE, make_prepared, mmp_env, run_mmp

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise-reproducible reductions
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- vocabulary
def test_new_words_get_rows_from_their_pieces_or_the_mean():
    old_vocab = [*SPECIAL, "play", "##ing", "red", "blue"]
    assert merged_vocabulary(old_vocab, [*SPECIAL, "red", "playing", "zebra", "playing"]) == [
        *old_vocab, "playing", "zebra"
    ]  # fmt: skip
    torch.manual_seed(0)
    model = PretrainingModel(small_config("tiny", vocab_size=len(old_vocab)))
    embeddings = model.vilt.embeddings.text_embeddings.word_embeddings
    before, bias = embeddings.weight.detach().clone(), model.mlm.mlm_score.decoder.bias.detach().clone()
    report = extend_word_rows(model, tokenizer_from_vocab(old_vocab), ["playing", "zebra"], seed=0)

    assert report["rows_added"] == 2 and report["from_pieces"] == {"playing": ["play", "##ing"]}
    assert report["from_mean"] == ["zebra"] and report["vocab_after"] == len(old_vocab) + 2
    table = model.vilt.embeddings.text_embeddings.word_embeddings.weight
    assert torch.equal(table[: len(old_vocab)], before)  # every existing token keeps its row
    assert torch.allclose(table[len(old_vocab)], before[[5, 6]].mean(0))
    mean = before[5:].mean(0)
    assert (table[-1] - mean).norm() < 0.5 * (before[5:] - mean).norm(dim=1).mean()  # near the mean, not on it
    assert not torch.equal(table[-1], mean)
    assert model.mlm.mlm_score.decoder.weight is table  # still tied to the MLM decoder
    assert model.mlm.mlm_score.decoder.bias.shape == (len(old_vocab) + 2,)
    assert torch.equal(model.mlm.mlm_score.decoder.bias[: len(old_vocab)], bias)
    assert model.vilt.config.vocab_size == model.mlm.config.vocab_size == len(old_vocab) + 2


# ---------------------------------------------------------------------------------------------- checks
def test_chance_warning_and_the_own_data_rule():
    assert chance_bound(100) == pytest.approx(0.6) and chance_bound(400) == pytest.approx(0.55)
    assert "within noise of chance" in chance_warning({"itm_accuracy": 0.53, "heldout_pairs": 100})
    assert chance_warning({"itm_accuracy": 0.61, "heldout_pairs": 100}) is None
    probe = {
        "metric": "f1_macro",
        "complete": {"f1_macro": 0.55},
        "text missing": {"f1_macro": 0.52},
        "image missing": {"f1_macro": 0.30},
    }
    verdict = own_data_verdict({"heldout": {"itm_accuracy": 0.8}}, probe)
    assert verdict.startswith("TROUBLE") and "1.06 x" in verdict
    probe["complete"]["f1_macro"] = 0.6
    assert own_data_verdict({"heldout": {"itm_accuracy": 0.8}}, probe).startswith("OK")
    assert own_data_verdict({"heldout": {"itm_accuracy": 0.65}}, None).startswith("TROUBLE")
    assert own_data_verdict({"heldout": None}, None) is None


def test_checkpoints_of_another_run_are_removed(tmp_path):
    claim_checkpoint_dir(tmp_path / "ck", "run-a")
    (tmp_path / "ck" / "step00000004").mkdir()
    claim_checkpoint_dir(tmp_path / "ck", "run-a")
    assert (tmp_path / "ck" / "step00000004").is_dir()
    claim_checkpoint_dir(tmp_path / "ck", "run-b")
    assert not (tmp_path / "ck" / "step00000004").exists()


def test_the_shipped_card_renders_unchanged_from_its_summary():
    shipped = REPO / "backbones" / "embedded"
    documents = [json.loads((shipped / name).read_text()) for name in (SUMMARY_NAME, PROBE_NAME, CARD_DATA_NAME)]
    assert render_card(*documents) == (shipped / CARD_NAME).read_text()


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """Tiny prepared data and a tiny 'pretrained' backbone that knows only some of its words (and `##s`)."""
    root = tmp_path_factory.mktemp("own")
    prepared = make_prepared(root, train=64, dev=24, test=8)
    words = read_vocab(prepared / "vocab.txt")
    init_vocab = [*words[:60], "##s"]
    torch.manual_seed(1)
    config = small_config("tiny", vocab_size=len(init_vocab), image_size=64, patch_size=16, max_position_embeddings=40)
    model = PretrainingModel(config)
    backbone = root / "init"
    model.vilt.save_pretrained(backbone)
    save_heads(model, backbone)
    (backbone / "vocab.txt").write_text("".join(f"{w}\n" for w in init_vocab))
    return prepared, backbone, init_vocab, words


def _params(backbone) -> PretrainParams:
    return PretrainParams(
        corpus="prepared", init=str(backbone), image=TINY_IMAGE, epochs=2, batch_size=16, checkpoint_every=3
    )


def _tensors(directory) -> dict:
    return {**load_file(str(directory / "model.safetensors")), **load_file(str(directory / HEADS_NAME))}


def test_continued_pretraining_resumes_to_the_same_weights(own_data, tmp_path, monkeypatch, one_thread):
    import mmp_core.pretraining.pretrain as pretrain_module
    from mmp_core.progress import Progress

    prepared, backbone, init_vocab, words = own_data
    params = _params(backbone)
    whole = pretrain_module.pretrain(
        params, None, tmp_path / "whole", prepared_dir=prepared, checkpoint_dir=tmp_path / "a"
    )
    assert not (tmp_path / "a").exists()  # removed after success

    # What was done: the vocabulary extended in order, the validation split held out, no hard negatives.
    out_vocab = read_vocab(tmp_path / "whole" / "vocab.txt")
    assert out_vocab == merged_vocabulary(init_vocab, words) and len(out_vocab) == whole["vocab_size"]
    init = whole["init"]
    assert init["rows_added"] == len(out_vocab) - len(init_vocab) == len(words) - 60
    assert init["rows_from_pieces"] + init["rows_from_mean"] == init["rows_added"]
    assert init["heads"]["matching"] == "loaded" and init["heads"]["mlm"] == "loaded"
    assert whole["corpus"]["heldout_split"] == "dev" and whole["corpus"]["train_pairs"] == whole["pairs"]
    heldout = whole["heldout"]
    assert heldout["heldout_pairs"] == whole["corpus"]["heldout_pairs"] > 0
    assert "itm_accuracy_hard_negatives" not in heldout and f"retrieval_r1_at_{heldout['heldout_pairs']}" in heldout
    assert whole["params"]["init"] == str(backbone) and whole["resumed_from_step"] is None

    class Killed(Exception):
        pass

    class DiesAtStep7(Progress):  # killed mid-epoch 2 (4 steps an epoch): the last checkpoint is step 6
        def update(self, n=1, **metrics):
            super().update(n, **metrics)
            if self.n == 7:
                raise Killed

    monkeypatch.setattr(pretrain_module, "Progress", DiesAtStep7)
    with pytest.raises(Killed):
        pretrain_module.pretrain(params, None, tmp_path / "again", prepared_dir=prepared, checkpoint_dir=tmp_path / "b")
    assert (tmp_path / "b" / LATEST).read_text() == "step00000006" and not (tmp_path / "again").exists()
    monkeypatch.setattr(pretrain_module, "Progress", Progress)
    again = pretrain_module.pretrain(
        params, None, tmp_path / "again", prepared_dir=prepared, checkpoint_dir=tmp_path / "b"
    )

    assert again["resumed_from_step"] == 6 and not (tmp_path / "b").exists()
    expected, actual = _tensors(tmp_path / "whole"), _tensors(tmp_path / "again")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)

    def strip(history):
        return [{k: v for k, v in record.items() if k != "seconds"} for record in history]

    assert strip(again["history"]) == strip(whole["history"])


def test_mmp_pretrain_init_writes_a_card_of_what_was_done(own_data, tmp_path):
    prepared, backbone, _, _ = own_data
    params = {"pretrain": {**_params("unused").model_dump(mode="json", exclude={"init"}), "epochs": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**mmp_env(tmp_path), "MMP_PROGRESS": "log"}
    result = run_mmp(
        ["pretrain", "--init", str(backbone), "--prepared", str(prepared), "--out", "bb"], cwd=tmp_path, env=env
    )
    assert f"continued from {backbone}: vocabulary 61 ->" in result.stdout and "held-out (" in result.stdout
    summary = json.loads((tmp_path / "bb" / SUMMARY_NAME).read_text())
    assert ("WARNING: held-out image-text matching" in result.stdout) == bool(summary["warnings"])
    assert not any(p.name.startswith("pretrain-") for p in (tmp_path / ".checkpoints").glob("*"))

    card = (tmp_path / "bb" / CARD_NAME).read_text()
    assert card.startswith(f"# Backbone continued from `{backbone}` on `embedded`'s own image-text pairs")
    corpus = summary["corpus"]
    assert f"{corpus['train_pairs']:,d} complete pairs of the `train` split" in card
    assert f"{corpus['heldout_pairs']:,d} complete pairs of its `dev` split held out" in card
    assert f"{summary['init']['rows_added']:,d} new embedding rows" in card
    assert "captioned scenes" not in card and "| itm_accuracy |" in card
    for absent in ("\npairs:", "\nheldout:", "\nconcept_mlm_probability:", "\nhard_negatives:", "\nconfig:"):
        assert absent not in card
    losses = summary["history"][-1]
    assert f"Last epoch's training losses: itc_loss {losses['itc_loss']}, itm_loss {losses['itm_loss']}" in card
    assert "## The own-data rule" in card

    # A probe measured later joins the card, with the rule's verdict.
    probe = {"metric": "f1_macro", "dataset": "embedded", "train_samples": 64, "test_samples": 8}
    probe.update({name: {"f1_macro": 0.5} for name in ("complete", "text missing", "image missing")})
    (tmp_path / "bb" / PROBE_NAME).write_text(json.dumps(probe))
    card = write_card(tmp_path / "bb").read_text()
    assert "## Linear probes on `embedded`" in card and "TROUBLE" in card and "1.00 x" in card
