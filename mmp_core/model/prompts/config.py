"""Configuration of the missing-aware prompts (PEFT-style frozen dataclass)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mmp_core.scenarios import COMPLETE, IMAGE_MISSING, TEXT_MISSING  # noqa: F401 (re-exported)

PROMPT_TYPES = ("input", "attention", "none")
from mmp_core.tasks import TASKS  # noqa: E402

PROMPT_INITS = ("reference", "normal")
# Missing types fed to the model per sample select its prompts; "both missing" never occurs (docs/method.md §2).
NUM_MISSING_TYPES = 3


@dataclass(frozen=True)
class MissingAwarePromptConfig:
    """What to train on top of a frozen ViLT.

    Attributes:
        prompt_type: `input` (prompt tokens prepended before each prompt layer), `attention` (key/value
            prefixes inside the prompt layers' self-attention) or `none` (frozen baseline: pooler + head only).
        prompt_length: prompt tokens per layer and missing type (L). Attention-level splits it into L/2 keys
            and L/2 values, so it must be even there.
        prompt_layers: indices of the encoder layers that get prompts, ascending.
        prompt_init: `reference` (zeros with one row of ones per missing type, docs/method.md §3) or `normal` (N(0, 0.02)).
        missing_aware: True: one prompt set per missing type, chosen by each sample's missing type (the paper's
            method); False: ONE prompt set that every sample gets whatever is missing (the `shared` method, the
            paper's ablation). Ignored by prompt_type `none`.
        train_backbone: False: the backbone is frozen (every prompt method and the baseline). True: the whole
            backbone trains with the pooler and head (the `finetune` reference row, prompt_type `none` only); its
            adapter then holds the full fine-tuned state.
        task: `multilabel` (sigmoid/BCE), `multiclass` (softmax/CE) or `binary` (softmax over 2 logits).
        num_labels: output size of the head; 2 for `binary`.
    """

    task: str
    num_labels: int
    prompt_type: str = "input"
    prompt_length: int = 16
    prompt_layers: tuple[int, ...] = field(default=(0, 1, 2, 3, 4, 5))
    prompt_init: str = "reference"
    missing_aware: bool = True
    train_backbone: bool = False

    def __post_init__(self) -> None:
        # Lists from JSON/YAML become tuples so the config stays hashable and frozen.
        object.__setattr__(self, "prompt_layers", tuple(self.prompt_layers))
        if self.prompt_type not in PROMPT_TYPES:
            raise ValueError(f"prompt_type must be one of {PROMPT_TYPES}, got {self.prompt_type!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.prompt_init not in PROMPT_INITS:
            raise ValueError(f"prompt_init must be one of {PROMPT_INITS}, got {self.prompt_init!r}")
        if not isinstance(self.num_labels, int) or self.num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {self.num_labels!r}")
        if self.task == "binary" and self.num_labels != 2:
            raise ValueError(f"task 'binary' uses 2 logits (softmax), so num_labels must be 2, got {self.num_labels}")
        if not isinstance(self.missing_aware, bool):
            raise ValueError(f"missing_aware must be true or false, got {self.missing_aware!r}")
        if not isinstance(self.train_backbone, bool):
            raise ValueError(f"train_backbone must be true or false, got {self.train_backbone!r}")
        if self.train_backbone and self.prompt_type != "none":
            raise ValueError(
                "train_backbone (full fine-tuning) takes prompt_type 'none': a trained backbone needs no prompts"
            )
        if self.task == "multiclass" and self.num_labels < 2:
            raise ValueError(f"task 'multiclass' needs num_labels >= 2, got {self.num_labels}")
        if self.prompt_type == "none":
            return
        if not isinstance(self.prompt_length, int) or self.prompt_length < 1:
            raise ValueError(f"prompt_length must be a positive integer, got {self.prompt_length!r}")
        if self.prompt_type == "attention" and self.prompt_length % 2:
            raise ValueError(
                f"attention-level prompts split prompt_length into keys and values: it must be even, "
                f"got {self.prompt_length}"
            )
        # `reference` marks row k of missing type k's set (a shared set: row 0 only), in keys and values alike.
        marked_rows = self.num_prompt_sets * (2 if self.prompt_type == "attention" else 1)
        if self.prompt_init == "reference" and self.prompt_length < marked_rows:
            raise ValueError(
                f"prompt_init 'reference' marks one row per prompt set, so prompt_length must be at least "
                f"{marked_rows} for prompt_type {self.prompt_type!r}"
                + ("" if self.missing_aware else " without missing-aware sets")
            )
        layers = self.prompt_layers
        if not layers:
            raise ValueError("prompt_layers must name at least one layer (use prompt_type 'none' for no prompts)")
        if any(not isinstance(i, int) or i < 0 for i in layers):
            raise ValueError(f"prompt_layers must be non-negative integers, got {list(layers)}")
        if list(layers) != sorted(set(layers)):
            raise ValueError(f"prompt_layers must be strictly ascending without repeats, got {list(layers)}")

    @property
    def num_prompt_layers(self) -> int:
        return 0 if self.prompt_type == "none" else len(self.prompt_layers)

    @property
    def num_prompt_sets(self) -> int:
        """Prompt sets in the prompt parameter's first axis: one per missing type, or the one shared set."""
        return NUM_MISSING_TYPES if self.missing_aware else 1

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["prompt_layers"] = list(self.prompt_layers)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MissingAwarePromptConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MissingAwarePromptConfig field(s): {unknown}")
        return cls(**values)
