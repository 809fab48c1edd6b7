"""What a finished run achieved: `trained`, `no_progress` or `diverged`.

Staying finite is not learning: a run at a learning rate so high that it saturates
every gate can end finite and predict worse than character frequencies do. So a run
*trained* only when its final validation metric beats its task's input-independent
baseline (`Task.baseline()`: the training split's smoothed character frequencies for
text, the best constant output for synthetic tasks, the target variance for
regression). A torch-free module because the trainer writes the outcome and the report
derives it for runs written before outcomes existed.
"""

from __future__ import annotations

import math

OUTCOMES = ("trained", "no_progress", "diverged")


def outcome(status: object, final_val_metric: object, baseline: object,
            lower_is_better: bool = True) -> str | None:
    """The outcome of a run; None while it runs, for `error`/`interrupted`, and for a
    completed run whose final metric or baseline is unknown (nothing to compare).

    Strictly better than the baseline is `trained`; equal is `no_progress` (a model that
    learned nothing can score exactly the baseline). An infinite final metric did not
    make progress; a missing (None or NaN) one is unknown.
    """
    if status == "diverged":
        return "diverged"
    if status != "completed":
        return None
    final, base = _number(final_val_metric), _number(baseline)
    if base is None or not math.isfinite(base) or final is None:
        return None
    if not math.isfinite(final):
        return "no_progress"
    better = final < base if lower_is_better else final > base
    return "trained" if better else "no_progress"


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if math.isnan(out) else out
