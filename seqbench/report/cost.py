"""What clipping costs: steps, tokens and seconds until the validation metric first
reached a target (AlgoPerf's time-to-result, Dahl et al. 2023), per configuration.

Why a target and not the final value: two settings that end at the same quality may
get there at very different speeds, and a setting that diverges late may have been the
fastest until then. Why a median over seeds with "not reached" as a value of its own: a
seed that never reached the target, or diverged, has no time to average; counting it as
infinite keeps it in the median (half or more not reached: the median is "not reached")
without inventing a number, and k/n says how many did reach it.

The target (``report --target``): an absolute value of the task's metric, or by default
a fraction of the way from the task's baseline (``baseline_val_metric``: the unigram
model for text) to the best configuration of the same context (optimizer and any
non-clip setting swept within it, the rows of the Answer table), among configurations
where no seed diverged. 0.9 of the way: near enough to the best that reaching it means
training worked, far enough that the best settings of a context all reach it and the
comparison is one of speed, not of whether the run ever got there.

Resolution: the validation metric is measured every ``trainer.eval_every`` steps, so a
time to target is the first evaluation at or past the target: the true crossing lies
within the evaluation interval before it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from seqbench.report.collect import read_columns
from seqbench.report.stats import COST_COLUMNS
from seqbench.report.tables import row_key

#: The default target: this fraction of the way from the baseline to the context's best.
DEFAULT_FRACTION = 0.9


def parse_target(text: str) -> float | str:
    """``2.6`` (a value of the metric) or ``90%`` (a fraction of the way from the baseline
    to the best); raises ValueError with what is allowed."""
    t = text.strip()
    try:
        v = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise ValueError("not a number") from None
    if t.endswith("%"):
        if not 0 < v <= 1:
            raise ValueError("a percentage must be in (0%, 100%]")
        return f"{v:g}"
    if not np.isfinite(v):
        raise ValueError("not a finite value")
    return v


def context_targets(cells_df: pd.DataFrame, context: Sequence[str],
                    target: float | str | None = None) -> pd.Series:
    """The target of every cell: ``target`` if a number, else the fraction (a string such
    as ``"0.9"``, default :data:`DEFAULT_FRACTION`) of the way from the cell's baseline to
    its context's best clean configuration (NaN where the context has none)."""
    if isinstance(target, float | int) and not isinstance(target, bool):
        return pd.Series(float(target), index=cells_df.index)
    frac = float(target) if target is not None else DEFAULT_FRACTION
    out = pd.Series(np.nan, index=cells_df.index)
    if cells_df.empty:
        return out
    lower = cells_df["metric_lower_is_better"].astype(object).map(lambda v: v is not False)
    sign = np.where(lower, 1.0, -1.0)
    mean = pd.to_numeric(cells_df["final_val_metric_mean"], errors="coerce") * sign
    clean = (cells_df["n"] > 0) & (cells_df["n_diverged"] == 0) & mean.notna()
    keys = [c for c in dict.fromkeys(("task.name", "metric", *context)) if c in cells_df.columns]
    # repr: config values may be lists or dicts (unhashable), and NaN never equals itself
    groups = pd.Series([repr(row_key(r, keys)) for r in cells_df[keys].to_dict("records")],
                       index=cells_df.index)
    best = mean.where(clean).groupby(groups).transform("min") * sign
    base = pd.to_numeric(cells_df["baseline_val_metric"], errors="coerce")
    out = base + frac * (best - base)
    return out.where(best.notna() & base.notna())


def first_reached(runs_dir: str | os.PathLike[str], runs: pd.DataFrame,
                  target_of_run: pd.Series) -> pd.DataFrame:
    """Per run (index of ``runs``): the step, tokens and seconds of its first evaluation at
    or past its target (NaN where it never got there, or has no target)."""
    out = pd.DataFrame(np.nan, index=runs.index, columns=["steps", "tokens", "seconds"])
    todo = runs[target_of_run.notna()]
    if todo.empty:
        return out
    cols = read_columns(runs_dir, todo["run_dir"], ["val_metric", "tokens", "wall_s"])
    if not cols.ids:
        return out
    pos = {rid: i for i, rid in enumerate(cols.ids)}
    lower = todo["metric_lower_is_better"].astype(object).map(lambda v: v is not False)
    run_target = np.full(len(cols.ids), np.nan)
    run_sign = np.ones(len(cols.ids))
    row_of = np.full(len(cols.ids), -1, dtype=np.int64)
    for idx, rid, t, lo in zip(todo.index, todo["run_dir"], target_of_run[todo.index], lower,
                               strict=True):
        i = pos.get(str(rid))
        if i is not None:
            run_target[i], run_sign[i], row_of[i] = t, 1.0 if lo else -1.0, idx
    val = cols.values["val_metric"]
    hit = np.isfinite(val) & (val * run_sign[cols.run] <= run_target[cols.run] * run_sign[cols.run])
    rows = np.flatnonzero(hit)
    if not len(rows):
        return out
    # the first hit of each run: rows are in step order within a run
    first = rows[np.unique(cols.run[rows], return_index=True)[1]]
    for r in first:
        idx = row_of[cols.run[r]]
        if idx >= 0:
            out.loc[idx] = (float(cols.step[r]), cols.values["tokens"][r],
                            cols.values["wall_s"][r])
    return out


def _median_or_inf(values: np.ndarray, n: int) -> float:
    """Median over ``n`` runs of which ``values`` reached the target; the others count as
    infinite. inf when half or more did not reach it."""
    if n == 0:
        return np.nan
    full = np.concatenate([np.sort(values), np.full(n - len(values), np.inf)])
    m = float(np.median(full)) if len(full) else np.nan
    return m


def add_cost(cells_df: pd.DataFrame, runs: pd.DataFrame, runs_dir: str | os.PathLike[str],
             context: Sequence[str], target: float | str | None = None) -> pd.DataFrame:
    """``cells_df`` with :data:`COST_COLUMNS`: the target, how many of the cell's runs with
    a verdict reached it, and the median steps, tokens and seconds (``inf``: the median
    run did not reach it)."""
    out = cells_df.copy()
    if out.empty or runs.empty or "cell" not in runs.columns:
        for c in COST_COLUMNS:
            out[c] = pd.Series(dtype=float)
        return out
    out["target"] = context_targets(out, context, target)
    verdict = runs["status"].astype(object).isin(["completed", "diverged"])
    judged = runs[verdict]
    target_of_run = judged["cell"].map(out.set_index("cell")["target"])
    hits = first_reached(runs_dir, judged, target_of_run)
    n_reached, med = [], {k: [] for k in ("steps", "tokens", "seconds")}
    by_cell = {c: g.index for c, g in judged.groupby("cell")}
    for cell, n in zip(out["cell"], out["n"], strict=True):
        idx = by_cell.get(cell)
        h = hits.loc[idx] if idx is not None else hits.iloc[:0]
        reached = h["steps"].notna()
        n_reached.append(int(reached.sum()))
        for k in med:
            med[k].append(_median_or_inf(h.loc[reached, k].to_numpy(dtype=float), int(n)))
    out["n_reached_target"] = n_reached
    out["steps_to_target"] = med["steps"]
    out["tokens_to_target"] = med["tokens"]
    out["seconds_to_target"] = med["seconds"]
    no_target = out["target"].isna()
    out.loc[no_target, ["n_reached_target", "steps_to_target", "tokens_to_target",
                        "seconds_to_target"]] = np.nan
    return out
