"""The missing-modality vocabulary every stage speaks (docs/method.md §2): the per-sample missing-type codes, the
missing types of a scenario and `MissingScenario`, a type and a rate.

A code says what one sample lacks: 0 complete, 1 text missing, 2 image missing (never both). A scenario says
what a split lacks: `rate` of its samples lose `missing_type` ('text', 'image', or 'both' = rate/2 text +
rate/2 image). The data layer turns a scenario into a table of codes (`mmp_core.data.missing`), the model picks
prompts by code, and params.yaml names scenarios (`mmp_core.config.ScenarioParams`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

COMPLETE, TEXT_MISSING, IMAGE_MISSING = 0, 1, 2
MISSING_TYPES = ("text", "image", "both")
TYPE_CODES = {"text": TEXT_MISSING, "image": IMAGE_MISSING}
CODE_NAMES = {COMPLETE: "complete", TEXT_MISSING: "text_missing", IMAGE_MISSING: "image_missing"}
DEFAULT_RATES = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass(frozen=True)
class MissingScenario:
    """`rate` of the samples lose `missing_type` ('text', 'image', or 'both' = rate/2 text + rate/2 image)."""

    missing_type: str
    rate: float

    def __post_init__(self) -> None:
        if self.missing_type not in MISSING_TYPES:
            raise ValueError(f"missing_type must be one of {MISSING_TYPES}, got {self.missing_type!r}")
        rate = self.rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            raise ValueError(f"missing rate must be a number in [0, 1], got {rate!r}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"missing rate must be in [0, 1], got {rate!r}")
        object.__setattr__(self, "rate", float(rate))

    @classmethod
    def parse(cls, text: str) -> MissingScenario:
        """'both:0.7', 'both=0.7' or 'both_0.70' -> MissingScenario('both', 0.7)."""
        match = re.fullmatch(r"\s*(text|image|both)\s*[:=_]\s*([0-9.eE+-]+)\s*", text)
        if not match:
            raise ValueError(f"cannot parse missing scenario {text!r}: expected TYPE:RATE, e.g. both:0.7")
        try:
            rate = float(match.group(2))
        except ValueError:
            raise ValueError(f"cannot parse missing scenario {text!r}: bad rate {match.group(2)!r}") from None
        return cls(match.group(1), rate)

    @property
    def name(self) -> str:
        """`{type}_{rate}` as used in file names, e.g. `both_0.70`."""
        return f"{self.missing_type}_{rate_tag(self.rate)}"

    def __str__(self) -> str:
        return f"{self.missing_type}:{self.rate:g}"


def rate_tag(rate: float) -> str:
    """0.7 -> '0.70'; rates that are not whole percents keep more digits (0.125 -> '0.125')."""
    percent = rate * 100
    if abs(percent - round(percent)) < 1e-9:
        return f"{rate:.2f}"
    return f"{rate:.6f}".rstrip("0")
