"""The ``spike`` label: what a run's ``trainer.spike`` did, in words, as one column.

Why a module of its own: ``layout.enrich`` adds the label to every report's runs table
(where some run has a spike) and the cells are grouped by it in place of the five
``trainer.spike.*`` keys, so a table row reads ``spike: grad ×100 at step 600`` rather
than five raw settings; the spike tables (``report.spikes``) import the layout's
neighbours, so the label lives apart from them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report.stats import SPIKE_PREFIX

#: The label column, and its value for a run without a spike.
SPIKE_COLUMN = "spike"
NO_SPIKE = "none"


def _steps(value: object) -> list[int]:
    """``trainer.spike.steps`` as a list of ints, from a list or its text (runs.csv)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return sorted(int(v) for v in value if not fmt.is_missing(v))
    return []


def _on(value: object) -> bool:
    return not fmt.is_missing(value) and value not in (False, 0, "False", "false")


def spike_label(config: Mapping[str, object]) -> str:
    """What a run's ``trainer.spike`` did, in words: ``grad ×100 at step 600``,
    ``lr ×10 for 5 steps at step 600``, ``corrupted batch at step 600`` (joined with
    commas when several), or ``none``. One-to-one with the settings that change a run."""
    steps = _steps(config.get(f"{SPIKE_PREFIX}steps"))
    parts = []
    grad = config.get(f"{SPIKE_PREFIX}grad_factor")
    if _on(grad):
        parts.append(f"grad ×{fmt.num(grad)}")
    lr = config.get(f"{SPIKE_PREFIX}lr_factor")
    if _on(lr):
        k = config.get(f"{SPIKE_PREFIX}lr_steps")
        k = 1 if fmt.is_missing(k) else int(k)  # type: ignore[arg-type]
        parts.append(f"lr ×{fmt.num(lr)} for {k} step{'s' if k != 1 else ''}")
    if _on(config.get(f"{SPIKE_PREFIX}corrupt_batch")):
        parts.append("corrupted batch")
    if not steps or not parts:
        return NO_SPIKE
    where = f"step {steps[0]}" if len(steps) == 1 else f"steps {', '.join(map(str, steps))}"
    return f"{', '.join(parts)} at {where}"


def has_spikes(runs: pd.DataFrame) -> bool:
    col = f"{SPIKE_PREFIX}steps"
    return col in runs.columns and any(_steps(v) for v in runs[col])


def add_spike_label(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with the ``spike`` label column when some run has a spike (unchanged
    otherwise: reports without spikes read as before)."""
    if runs.empty or not has_spikes(runs):
        return runs
    out = runs.copy()
    cols = [c for c in out.columns if c.startswith(SPIKE_PREFIX)]
    out[SPIKE_COLUMN] = [spike_label(r) for r in out[cols].to_dict("records")]
    return out
