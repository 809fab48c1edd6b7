"""Did the smoothness probe see a divergence coming? (summary.json `smoothness.warning`)

The rule, applied separately to two signals of the probe (seqbench.smoothness): L̂, the
local smoothness along the update, and ‖∇f‖, the probe batch's gradient norm. A probe
*fires* when its value exceeds k times the running median of the same signal over all
the run's previous probes (non-finite values left out of the median; +inf always fires,
NaN -- a skipped update's L̂ -- never). The rule is armed from the (MIN_HISTORY + 1)-th
probe on: a median of fewer probes is the first steps' transient, not a baseline.

Why a ratio to the running median: L̂ and ‖∇f‖ differ by orders of magnitude between
models, learning rates and stages of training, so a fixed threshold would need tuning per
run; the ratio to the run's own past needs none. Why the median and not the mean: one
earlier spike must not raise the bar for the next.

Why DEFAULT_K = 2: in the pilot for the `smoothness` preset (1 x 128 LSTM at SGD lr 16
and 24, tanh RNN at lr 1.5 and 1.75, 1,000 steps, a probe every 10 steps, 7 runs that
completed and trained), the largest ratio of a probe to its running median was 1.28 for
L̂ and 1.63 for ‖∇f‖; k = 2 is the smallest round factor above both, so it fires as early
as that noise allows. The summary records every k in KS, so the report shows how the
counts move with k (its sensitivity) and nothing needs re-running to try another.

Each rule ends in one of five outcomes, for a run that has ended:

- `warned`: the run diverged, and the rule fired at a probe before `divergence_step`
  (lead = divergence_step − that probe's step);
- `missed`: it diverged, the rule was armed before the divergence, and did not fire;
- `too_early`: it diverged before the rule was armed -- no probe every N steps can see an
  explosion at step 3 coming, and the report says so instead of counting it as a miss;
- `false_alarm`: the run did not diverge, and the rule fired anyway;
- `quiet`: it did not diverge, and the rule never fired.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from seqbench.rundir import RULE_OUTCOMES

#: probes before the rule is armed (the (MIN_HISTORY + 1)-th probe is the first judged)
MIN_HISTORY = 3
#: the factors recorded in every summary, and the one the report leads with
KS: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 10.0)
DEFAULT_K = 2.0
SIGNALS = ("L", "grad")  # L̂ and the probe's ‖∇f‖
OUTCOMES = RULE_OUTCOMES[1:]  # warned, missed, too_early, false_alarm, quiet


def ratios_to_running_median(values: np.ndarray) -> np.ndarray:
    """For each probe i, values[i] / median(finite values[:i]); NaN where fewer than
    MIN_HISTORY finite values precede it or values[i] is NaN, +inf where values[i] is
    +inf. One pass with a sorted list: the summary is rewritten every few seconds."""
    out = np.full(len(values), np.nan)
    past: list[float] = []
    for i, v in enumerate(values):
        if len(past) >= MIN_HISTORY:
            n = len(past)
            median = past[n // 2] if n % 2 else 0.5 * (past[n // 2 - 1] + past[n // 2])
            if v == np.inf:
                out[i] = np.inf
            elif np.isfinite(v) and median > 0:
                out[i] = v / median
        if np.isfinite(v):
            bisect.insort(past, float(v))
    return out


def first_firing(ratios: np.ndarray, steps: np.ndarray, k: float) -> int | None:
    """The step of the first probe whose ratio exceeds k; None when none does."""
    hit = np.flatnonzero(ratios > k)  # NaN compares False
    return int(steps[hit[0]]) if hit.size else None


def warning_stats(steps: np.ndarray, grad_norm: np.ndarray, smooth: np.ndarray,
                  status: str, divergence_step: int | None) -> dict[str, Any]:
    """summary.json's `smoothness.warning`: per signal and k, the firing step, the
    outcome and, for a warned divergence, the lead in steps. Outcomes are null while
    the run has not ended (status neither completed nor diverged)."""
    steps = np.asarray(steps, dtype=np.int64)
    ended = status in ("completed", "diverged")
    diverged = status == "diverged" and divergence_step is not None
    if diverged:  # the probes the rule could judge before the divergence
        judged_before = int(np.sum(steps < divergence_step)) - MIN_HISTORY
    rules: dict[str, list[dict[str, Any]]] = {}
    for name, values in zip(SIGNALS, (smooth, grad_norm)):
        ratios = ratios_to_running_median(np.asarray(values, dtype=np.float64))
        rules[name] = []
        for k in KS:
            step = first_firing(ratios, steps, k)
            lead, result = None, None
            if diverged:
                if step is not None and step < divergence_step:
                    lead, result = divergence_step - step, "warned"
                else:
                    result = "missed" if judged_before > 0 else "too_early"
            elif ended:
                result = "false_alarm" if step is not None else "quiet"
            rules[name].append({"k": k, "step": step, "lead_steps": lead, "outcome": result})
    armed = int(steps[MIN_HISTORY]) if len(steps) > MIN_HISTORY else None
    return {"min_history": MIN_HISTORY, "default_k": DEFAULT_K, "armed_at_step": armed,
            **rules}
