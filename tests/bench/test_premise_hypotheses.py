"""bench/premise.py judges the pre-registered hypotheses H1-H3 mechanically: constructed results, known answers."""

from __future__ import annotations

import importlib.util

import pytest

from tests.evaluation.test_paired import cells, seeded_document
from tests.model_fixtures import REPO


def premise_module():
    spec = importlib.util.spec_from_file_location("premise_bench", REPO / "bench" / "premise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BASE = [0.50, 0.52, 0.48]
SPREAD = (0.01, -0.01, 0.0)  # seed-to-seed noise shared by every method on a seed: the paired differences cancel it


def method(name: str, text: float, image: float, both: float, complete: float = 0.0) -> dict:
    """A method `text`, `image`, `both` above the baseline on every seed (plus SPREAD)."""
    return seeded_document(
        name,
        {s: cells(b + text + e, b + image + e, b + both + e, b + 0.2 + complete)
         for s, (b, e) in enumerate(zip(BASE, SPREAD, strict=True))},
    )  # fmt: skip


def test_hypotheses_hold_when_input_prompts_lead_everywhere_and_close_most_of_the_gap():
    premise = premise_module()
    results = {
        "baseline": method("baseline", 0, 0, 0),
        "shared": method("shared", 0.02, -0.02, 0.0),
        "attention": method("attention", 0.06, 0.05, 0.04),
        "input": method("input", 0.08, 0.06, 0.05),
        "finetune": method("finetune", 0.10, 0.10, 0.10),
    }
    judged = premise.hypotheses(results)
    assert judged["H1"]["holds"] is True and judged["H1"]["seeds"] == 3 and judged["H1"]["preliminary"] is True
    assert judged["H1"]["ahead_on"] == {"attention": ["text", "image", "both"], "input": ["text", "image", "both"]}
    assert judged["H2"]["better"] == "input"
    assert judged["H2"]["mean_gap_share"]["input"] == pytest.approx((0.8 + 0.6 + 0.5) / 3)
    assert judged["H2"]["holds"] is True
    h3 = judged["H3"]
    assert h3["holds"] is True  # attention - shared: +0.04, +0.07, +0.04 on every seed
    assert h3["attention_minus_shared"]["image"]["mean"] == pytest.approx(0.07)


def test_hypotheses_fail_when_one_missing_type_is_within_noise_or_the_gap_mostly_stays():
    premise = premise_module()
    results = {
        "baseline": method("baseline", 0, 0, 0),
        "shared": method("shared", 0.02, 0.0, 0.0),
        "attention": method("attention", 0.02, 0.0, 0.01),  # image: the t-interval straddles 0
        "input": method("input", 0.03, 0.02, 0.0),
        "finetune": method("finetune", 0.10, 0.10, 0.10),
    }
    judged = premise.hypotheses(results)
    assert judged["H1"]["holds"] is False
    assert judged["H1"]["ahead_on"]["attention"] == ["text", "both"]
    assert judged["H2"]["better"] == "input" and judged["H2"]["holds"] is False  # (0.3 + 0.2 + 0.0) / 3
    assert judged["H3"]["holds"] is False  # attention - shared on text is exactly 0 on every seed
    assert judged["H3"]["attention_minus_shared"]["text"]["verdict"] == "within"


def test_markdown_states_the_verdicts_and_how_many_seeds_judged_them():
    premise = premise_module()
    results = {
        "baseline": method("baseline", 0, 0, 0),
        "attention": method("attention", 0.06, 0.05, 0.04),
        "finetune": method("finetune", 0.10, 0.10, 0.10),
    }
    analysis = {
        "backbone": "backbones/x", "metric": "f1_macro", "seeds": [0, 1, 2], "test_samples": 3000,
        "table": {m: {c: (0.5, 0.01) for c in premise.COLUMNS} for m in results},
        "paired": premise.paired_table(results, premise.RATE),
        "hypotheses": premise.hypotheses(results),
        "bootstrap_seed": 0,
        "bootstrap": {m: {c: (0.0, -0.01, 0.01) for c in premise.COLUMNS} for m in ("attention", "finetune")},
        "train_seconds": {m: {"mean": 1.0, "steps": [1]} for m in results},
        "properties": {"heldout_itm_accuracy": 0.9, "P1": True, "probe_complete": 0.4, "finetune_complete": 0.6,
                       "P2": True, "missing_case_accuracy": 0.9},
        "backbone_lr": None,
    }  # fmt: skip
    text = premise.markdown(analysis)
    assert "Hypotheses (docs/premise.md), judged on 3 of 5 seeds (preliminary):" in text
    assert "- H1 (prompts ahead on each missing type): True; ahead on attention: text, image, both" in text
    assert "- H2 (the better recovers ≥ 50% of the gap): True; mean share attention 50%" in text
    assert "H3" not in text.split("- H2")[1].split("- H4")[0]  # no shared method: H3 is not judged


NOISE = (0.004, -0.006, 0.002)  # seed-to-seed noise of a prompt method's lead, on top of the baseline's SPREAD


def noisy(name: str, text: float, image: float, both: float) -> dict:
    """`method`, with a lead over the baseline that varies from seed to seed (NOISE): a t-interval of width > 0."""
    return seeded_document(
        name,
        {s: cells(b + text + e + n, b + image + e + n, b + both + e + n, b + 0.2)
         for s, (b, e, n) in enumerate(zip(BASE, SPREAD, NOISE, strict=True))},
    )  # fmt: skip


def backbone_analysis(premise, backbone: str, attention: tuple, inputs: tuple) -> dict:
    """The parts of a premise.json that H4 reads, from constructed per-seed results."""
    results = {
        "baseline": method("baseline", 0, 0, 0),
        "attention": noisy("attention", *attention),
        "input": noisy("input", *inputs),
        "finetune": method("finetune", 0.10, 0.10, 0.10),
    }
    return {"backbone": backbone, "paired": premise.paired_table(results, premise.RATE),
            "hypotheses": premise.hypotheses(results)}  # fmt: skip


def test_h4_holds_when_the_better_methods_lead_is_larger_on_the_premise_backbone_on_each_missing_type():
    premise = premise_module()
    generic = backbone_analysis(premise, "backbones/generic", (0.02, 0.02, 0.02), (0.06, 0.05, 0.04))
    embedded = backbone_analysis(premise, "backbones/embedded", (0.01, 0.0, 0.0), (0.0, 0.01, 0.04))
    h4 = premise.contrast(generic, embedded)
    assert h4["better"] == "input" and h4["seeds"] == 3 and h4["preliminary"] is True
    lead = h4["lead_difference"]["input"]
    assert lead["text"]["mean"] == pytest.approx(0.06) and lead["image"]["mean"] == pytest.approx(0.04)
    assert lead["text"]["low"] < 0.06 < lead["text"]["high"]  # seed noise on both sides: an interval, not a point
    assert (lead["text"]["verdict"], lead["image"]["verdict"], lead["both"]["verdict"]) == ("ahead", "ahead", "within")
    assert h4["holds"] is False  # both missing: +0.04 on both backbones
    embedded_lower = backbone_analysis(premise, "backbones/embedded", (0.01, 0.0, 0.0), (0.0, 0.01, 0.0))
    h4 = premise.contrast(generic, embedded_lower)
    assert h4["holds"] is True
    assert h4["lead_difference"]["attention"]["image"]["mean"] == pytest.approx(0.02)  # reported beside, not judged
