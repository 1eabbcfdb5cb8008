"""How long a training run lasts and when it looks at the validation split.

A run's budget is counted in optimizer steps, not epochs: `epochs` passes over the train split, raised to a floor
(`min_steps`: a dataset of a few hundred samples still gets as many updates as the head and prompts need to
converge) and lowered to a cap (`max_steps`). Validation runs a few times per epoch, but at most MAX_VALIDATIONS
times over the whole budget, and the run stops early once `patience` validations in a row brought no better
score. The best validation's adapter is the one delivered, so stopping early never loses it.

Every decision here is a pure function of the loop state and the parameters, so a resumed run takes the same
steps, validations and stopping decision as an uninterrupted one.
"""

from __future__ import annotations

import math

import numpy as np

from mmp_core.config import TrainParams

MAX_VALIDATIONS = 50  # over a whole run: validating a prompt model costs a pass over the val split


def step_budget(steps_per_epoch: int, params: TrainParams) -> int:
    """Optimizer steps of a run: `epochs` passes, raised to `min_steps` (a small dataset learns for as many
    steps as a large one) and lowered to `max_steps`."""
    steps = max(steps_per_epoch * params.epochs, params.min_steps)
    return min(steps, params.max_steps) if params.max_steps is not None else steps


def validation_interval(steps_per_epoch: int, total_steps: int, per_epoch: int) -> int:
    """Optimizer steps between validations: `per_epoch` times an epoch, but no more than MAX_VALIDATIONS in
    all (a few hundred samples make epochs of a few steps)."""
    interval = max(1, round(steps_per_epoch / per_epoch))
    return max(interval, math.ceil(total_steps / MAX_VALIDATIONS))


def validations_since_best(state) -> int:
    """Validations after the best one: what early stopping counts."""
    return sum(1 for entry in state.history if entry["step"] > state.best_step)


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled sample order of an epoch: a pure function of (seed, epoch), the same on every rank."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def finished(state, total_steps: int, patience: int) -> bool:
    """The budget is spent, or `patience` validations in a row brought nothing better (a pure function of the
    loop state: a resumed run decides as the interrupted one would have)."""
    return state.global_step >= total_steps or bool(patience and validations_since_best(state) >= patience)


def still_improving(state, total_steps: int, patience: int) -> bool:
    """The run spent its whole budget while validation was still getting better: its best validation is one of
    the last few (fewer than a quarter of `patience`, and at least the last two). More steps would likely help:
    a backbone whose features are harder to read than the shipped one's can need several times the floor."""
    recent = max(2, patience // 4)
    return state.global_step >= total_steps and bool(state.history) and validations_since_best(state) < recent
