"""The premise experiment's measurements on a backbone alone (docs/premise.md): missing-case separability of
the frozen features, and the shipped ViLT-faithful stand-in `backbones/generic`."""

from __future__ import annotations

import numpy as np
import pytest

from mmp_core.probe import missing_case_accuracy


def test_missing_case_accuracy_reads_how_far_apart_the_three_inputs_are():
    rng = np.random.default_rng(0)

    def inputs(spread: float) -> dict:
        centres = {"complete": 0.0, "text missing": spread, "image missing": -spread}
        return {
            name: {split: rng.normal(size=(n, 8)) + centre for split, n in (("train", 300), ("test", 150))}
            for name, centre in centres.items()
        }

    assert missing_case_accuracy(inputs(10.0), "train", "test") == 1.0  # far apart: told apart every time
    assert missing_case_accuracy(inputs(0.0), "train", "test") == pytest.approx(1 / 3, abs=0.08)  # the same: chance
