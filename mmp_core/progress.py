"""Progress of long loops (training, pretraining, evaluation, prediction) in a form a person can follow.

On a terminal: a tqdm bar. Anywhere else (CI, `dvc repro` logs, a Prefect worker, `nohup`): a log line through
`logging` every `interval` seconds and one at the end, with the position, the latest metrics, the rate and the
time left, e.g.

    train input: step 120/480 (25%) loss=0.4123 lr=8.1e-03 | 3.20 step/s, elapsed 0:00:37, ETA 0:01:52

`MMP_PROGRESS=bar|log|off` forces a mode; `MMP_PROGRESS_INTERVAL` sets the seconds between log lines (30).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import timedelta

logger = logging.getLogger(__name__)

MODES = ("bar", "log", "off")
DEFAULT_INTERVAL = 30.0


def _format_duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-2 <= abs(value) < 1e4 or value == 0 else f"{value:.2e}"
    return str(value)


class Progress:
    """Reports `update()` calls of a loop of `total` units.

    Args:
        total: units of the whole loop (steps, batches, rows); None when unknown (no percentage or ETA).
        desc: what runs, e.g. "train input"; starts every log line.
        unit: the unit's name in messages ("step", "batch", "row").
        initial: units already done (a resumed run); the rate counts only this run's units.
        enabled: False on processes that should stay quiet (ranks other than 0).
        mode: "bar", "log" or "off"; default MMP_PROGRESS, else a bar on a terminal (stderr) and log lines elsewhere.
        interval: seconds between log lines; default MMP_PROGRESS_INTERVAL or 30. 0 logs every update.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "step",
        initial: int = 0,
        enabled: bool = True,
        mode: str | None = None,
        interval: float | None = None,
    ):
        mode = mode or os.environ.get("MMP_PROGRESS") or ("bar" if sys.stderr.isatty() else "log")
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {mode!r} (MMP_PROGRESS)")
        self.mode = mode if enabled else "off"
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.start_n = initial
        self.metrics: dict[str, object] = {}
        if interval is None:
            interval = float(os.environ.get("MMP_PROGRESS_INTERVAL", DEFAULT_INTERVAL))
        self.interval = interval
        self.started = self.last_log = time.monotonic()
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)

    def update(self, n: int = 1, **metrics) -> None:
        """`n` more units done; `metrics` (loss, lr, ...) are shown with the next report."""
        self.n += n
        self.metrics.update(metrics)
        if self._bar is not None:
            self._bar.update(n)
            if metrics:
                self._bar.set_postfix({k: _format_value(v) for k, v in self.metrics.items()}, refresh=False)
        elif self.mode == "log" and time.monotonic() - self.last_log >= self.interval:
            self._log()

    def message(self) -> str:
        """The log line for the current position."""
        elapsed = time.monotonic() - self.started
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 else 0.0
        position = f"{self.unit} {self.n}"
        if self.total:
            position += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
        parts = [f"{self.desc}: {position}"]
        if self.metrics:
            parts.append(" ".join(f"{k}={_format_value(v)}" for k, v in self.metrics.items()))
        timing = f"{rate:.2f} {self.unit}/s, elapsed {_format_duration(elapsed)}"
        if self.total and rate > 0 and self.n < self.total:
            timing += f", ETA {_format_duration((self.total - self.n) / rate)}"
        return " ".join(parts) + " | " + timing

    def _log(self) -> None:
        logger.info(self.message())
        self.last_log = time.monotonic()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "log" and self.n > self.start_n:
            self._log()  # the final position and rate, whatever the interval
        self.mode = "off"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
