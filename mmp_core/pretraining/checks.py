"""Does a pretrained backbone look usable? Plain checks on `pretrain_summary.json` and `probe.json`.

* `chance_warning`: held-out image-text matching within noise of chance. The held-out mix is half matched
  pairs, half mismatched, so a model that has learnt nothing scores 0.5 with a standard error of
  sqrt(0.25 / n) on n held-out pairs; below 0.5 + `CHANCE_Z` standard errors (0.558 on 300 pairs, 0.532 on
  1,000) the matching head cannot be told from a coin.
* `own_data_verdict`: the README's rule for a backbone pretrained on your own pairs: held-out matching accuracy
  at least `MIN_HELDOUT_ITM` and a complete-input linear probe at least `MIN_COMPLETE_OVER_SINGLE` times the
  better single-modality probe. Below either, expect the prompts not to beat the frozen baseline.
"""

from __future__ import annotations

import math

CHANCE_ITM = 0.5
CHANCE_Z = 2.0
MIN_HELDOUT_ITM = 0.7
MIN_COMPLETE_OVER_SINGLE = 1.1
SINGLE_INPUTS = ("text missing", "image missing")


def chance_bound(pairs: int) -> float:
    """Held-out matching accuracy that `pairs` pairs tell apart from chance (0.5 + CHANCE_Z standard errors)."""
    return CHANCE_ITM + CHANCE_Z * math.sqrt(CHANCE_ITM * (1 - CHANCE_ITM) / max(pairs, 1))


def chance_warning(heldout: dict | None) -> str | None:
    """A warning line when the held-out matching accuracy is within noise of chance, else None."""
    if not heldout or "itm_accuracy" not in heldout:
        return None
    pairs = int(heldout.get("heldout_pairs", 0))
    bound = chance_bound(pairs)
    if heldout["itm_accuracy"] >= bound:
        return None
    return (
        f"held-out image-text matching accuracy {heldout['itm_accuracy']:.3f} on {pairs} pairs is within noise of "
        f"chance (below {bound:.3f} = 0.5 + {CHANCE_Z:g} standard errors): this backbone has not learnt to match "
        "text and image"
    )


def own_data_verdict(summary: dict | None, probe: dict | None) -> str | None:
    """One line on the README's rule for an own-data backbone (held-out ITM, then the probe), or None when
    neither is known."""
    parts, failed = [], False
    itm = ((summary or {}).get("heldout") or {}).get("itm_accuracy")
    if itm is not None:
        failed |= itm < MIN_HELDOUT_ITM
        parts.append(f"held-out ITM {itm:.3f} ({'<' if itm < MIN_HELDOUT_ITM else '>='} {MIN_HELDOUT_ITM})")
    if probe:
        metric = probe["metric"]
        complete = probe["complete"][metric]
        single = max(probe[name][metric] for name in SINGLE_INPUTS)
        ratio = complete / single if single > 0 else math.inf
        failed |= ratio < MIN_COMPLETE_OVER_SINGLE
        parts.append(
            f"probe complete {complete:.4f} = {ratio:.2f} x the best single modality {single:.4f} "
            f"({'<' if ratio < MIN_COMPLETE_OVER_SINGLE else '>='} {MIN_COMPLETE_OVER_SINGLE} x)"
        )
    if not parts:
        return None
    if failed:
        return "TROUBLE: " + "; ".join(parts) + ": expect the prompts not to beat the frozen baseline"
    if itm is None or not probe:
        return "so far OK: " + "; ".join(parts) + " (the rule needs both the held-out ITM and the probe)"
    return "OK: " + "; ".join(parts)
