"""When a run says it was still improving at the end of its budget (mmp_core/training/budget.py)."""

from __future__ import annotations

from types import SimpleNamespace

from mmp_core.training.budget import still_improving


def loop_state(best_step: int, global_step: int, interval: int = 40) -> SimpleNamespace:
    """A run that validated every `interval` steps up to `global_step`, best at `best_step`."""
    history = [{"step": step} for step in range(interval, global_step + 1, interval)]
    return SimpleNamespace(history=history, best_step=best_step, global_step=global_step)


def test_a_run_whose_best_is_among_its_last_validations_at_the_end_of_its_budget_is_still_improving():
    # The from-scratch Food-101 backbone of the README's own-data table: best at 1,840 of 2,000 (4 validations
    # before the end); with 6,000 steps it went on to 0.97 of its probe.
    assert still_improving(loop_state(1840, 2000), total_steps=2000, patience=20)
    assert still_improving(loop_state(2000, 2000), total_steps=2000, patience=20)
    # Best 8 validations before the end of the budget: it had levelled off.
    assert not still_improving(loop_state(1680, 2000), total_steps=2000, patience=20)
    # Stopped early by patience: it had stopped improving, whatever the step.
    assert not still_improving(loop_state(1000, 1800), total_steps=2000, patience=20)
    # The paper's preset (no patience): only the last two validations count.
    assert still_improving(loop_state(1960, 2000), total_steps=2000, patience=0)
    assert not still_improving(loop_state(1920, 2000), total_steps=2000, patience=0)
    # No validation at all: nothing to say.
    assert not still_improving(SimpleNamespace(history=[], best_step=0, global_step=10), total_steps=10, patience=20)
