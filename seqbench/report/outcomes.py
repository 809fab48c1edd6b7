"""Outcomes for runs written before runs recorded them.

A run's `outcome` (trained / no_progress / diverged, `seqbench.outcome`) is written by
the trainer since issue 11. An older run directory still reports: its baseline is
recomputed from its task config (the task is built from the data, as the trainer
would, and asked for `baseline(trainer.eval_batches)`), and its outcome is derived from
its own final metric against it. Its loss at initialization, which LR sensitivity needs,
is the first `train_loss` of its metrics file.

This is the only part of the report that imports torch (through the task modules), and
only when some run lacks a baseline: reports of new sweeps stay torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from seqbench.outcome import outcome
from seqbench.rundir import TERMINAL

_TERMINAL = TERMINAL


@dataclass
class Derived:
    """What was derived, for the report's notes."""

    outcomes: int = 0  # runs whose outcome was derived here
    baselines: int = 0  # runs whose baseline was recomputed here
    problems: list[str] = field(default_factory=list)  # task configs without a baseline


def fill_outcomes(runs: pd.DataFrame, runs_dir: Path) -> tuple[pd.DataFrame, Derived]:
    """`runs` with `outcome`, `baseline_val_metric` and `initial_loss` filled in where a
    terminal run lacks them (a copy; rows that have them are untouched)."""
    info = Derived()
    if runs.empty:
        return runs, info
    runs = runs.copy()
    if "outcome" not in runs:
        runs["outcome"] = None
    for col in ("baseline_val_metric", "initial_loss"):
        if col not in runs:
            runs[col] = math.nan
    status = runs["status"].astype(object)
    terminal = status.isin(_TERMINAL)
    need = terminal & pd.to_numeric(runs["baseline_val_metric"], errors="coerce").isna()
    if need.any():
        info.baselines, info.problems = _recompute_baselines(runs, need)
    lost = terminal & pd.to_numeric(runs["initial_loss"], errors="coerce").isna()
    for i in runs.index[lost]:
        runs.at[i, "initial_loss"] = _first_loss(Path(runs_dir) / str(runs.at[i, "run_dir"]))
    missing = terminal & runs["outcome"].isna()
    for i in runs.index[missing]:
        runs.at[i, "outcome"] = outcome(
            status[i], runs.at[i, "final_val_metric"], runs.at[i, "baseline_val_metric"],
            bool(runs.at[i, "metric_lower_is_better"]))
        info.outcomes += runs.at[i, "outcome"] is not None
    return runs, info


def _task_config(row: pd.Series) -> tuple[str, dict, int]:
    """(task name, the task's options, trainer.eval_batches) from a run's config columns."""
    opts = {}
    for key, value in row.items():
        if not isinstance(key, str) or not key.startswith("task.") or _missing(value):
            continue
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # a table column with NaN elsewhere made it a float
        opts[key[len("task."):]] = value
    eval_batches = row.get("trainer.eval_batches")
    return str(opts.get("name", "tinyshakespeare")), opts, \
        0 if _missing(eval_batches) else int(eval_batches)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _recompute_baselines(runs: pd.DataFrame, need: pd.Series) -> tuple[int, list[str]]:
    from omegaconf import OmegaConf

    from seqbench.config import ensure_registered
    from seqbench.data.tasks import TASKS

    ensure_registered()  # every task: the built-ins' modules and the plugins'
    done, problems, cache = 0, [], {}
    for i in runs.index[need]:
        name, opts, eval_batches = _task_config(runs.loc[i])
        key = (name, tuple(sorted((k, repr(v)) for k, v in opts.items())), eval_batches)
        if key not in cache:
            try:
                entry = TASKS.get(name)
                fields = set(entry.schema.__dataclass_fields__)
                cfg = OmegaConf.merge(OmegaConf.structured(entry.schema),
                                      {k: v for k, v in opts.items() if k in fields})
                cache[key] = float(entry.build(cfg).baseline(eval_batches)["val_metric"])
            except Exception as e:  # a corpus no longer on this machine, a moved file
                cache[key] = math.nan
                problems.append(f"task {name}: baseline not recomputed "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:200]})")
        value = cache[key]
        if not math.isnan(value):
            runs.at[i, "baseline_val_metric"] = value
            done += 1
    return done, problems


def _first_loss(run_dir: Path) -> float:
    """The first training loss in a run's metrics file (NaN when there is none)."""
    try:
        f = pq.ParquetFile(run_dir / "metrics.parquet")
        if f.metadata.num_rows == 0:
            return math.nan
        col = f.read_row_group(0, columns=["train_loss"]).column(0)
        return float(col[0].as_py()) if len(col) and col[0].is_valid else math.nan
    except Exception:  # damaged files are the collector's to report
        return math.nan
