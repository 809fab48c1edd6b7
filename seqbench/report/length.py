"""The length axis: how far up the sequence length a setting keeps training.

Why: seqbench's question is about long sequences, and the length of back-propagation
(``task.seq_len``, truncated BPTT for text; ``task.length``, T, for the synthetic tasks)
is the axis along which gradients explode. When the runs of a report vary it, the
report says, per setting and learning rate, up to which length every seed trained, and
how the gradient-norm spikes grow with length.

A *setting* is every config key that tells cells apart except the learning rate and the
length, and except keys that only follow the length (the ``seq_length`` preset keeps
``batch_size x seq_len`` constant, so the batch size is a function of the length: it is
carried beside the length, not made a setting of its own).

Pure functions of the cells and runs tables; nothing here reads files or draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from seqbench.report.lr_summary import group_columns
from seqbench.report.stats import NOT_CONFIG_COLUMNS, sort_cells, varying_within
from seqbench.report.task_groups import METRIC_COLUMNS, TASK_COLUMN
from seqbench.rundir import TERMINAL

#: The config keys that are a sequence length: truncated-BPTT window (text) and T
#: (synthetic tasks). A run has at most one of them.
LENGTH_KEYS: tuple[str, ...] = ("task.seq_len", "task.length")
LENGTH = "length"

#: What a cell of the length summary asks of its seeds, and the column names it gives.
_CRITERIA = (
    # (name, largest column, smallest-failed column, any column)
    ("trained", "largest_trained_length", "smallest_failed_length", "longest_trained_length_any"),
    ("finite", "largest_finite_length", "smallest_diverged_length", "longest_finite_length_any"),
    ("solved", "largest_solved_length", "smallest_unsolved_length", "longest_solved_length_any"),
)

SUMMARY_COLUMNS: tuple[str, ...] = (
    "largest_trained_length", "smallest_failed_length", "longest_trained_length_any",
    "largest_finite_length", "smallest_diverged_length", "longest_finite_length_any",
    "largest_solved_length", "smallest_unsolved_length", "longest_solved_length_any",
    "n_lengths", "n_seeds", "lrs_reaching_longest",
)

GRAD_COLUMNS: tuple[str, ...] = (
    "n_runs", "grad_norm_median", "p99_over_median", "max_over_median",
)


def with_length(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a numeric ``length`` column: the run's length key, whichever it has."""
    out = df.copy()
    length = pd.Series(np.nan, index=df.index, dtype=float)
    for key in LENGTH_KEYS:
        if key in df.columns:
            length = length.fillna(pd.to_numeric(df[key], errors="coerce").astype(float))
    out[LENGTH] = length
    return out


def companions(cells_df: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """The ``keys`` that only follow the length: they vary, yet hold one value at each
    (task, length). Treated as part of the length, not as settings."""
    df = with_length(cells_df)
    if df[LENGTH].notna().sum() == 0:
        return []
    by = [c for c in (TASK_COLUMN, LENGTH) if c in df.columns]
    out = []
    for k in keys:
        if k not in df.columns or k in (TASK_COLUMN, "optim.lr", *METRIC_COLUMNS):
            continue
        col = df[k].astype(object)
        if col.nunique(dropna=False) <= 1:
            continue
        if (df[by].astype(object).assign(v=col).groupby(by, dropna=False)["v"]
                .nunique(dropna=False).max()) == 1:
            out.append(k)
    return out


def setting_columns(cells_df: pd.DataFrame) -> list[str]:
    """The columns that name one setting of the length summary (see the module doc)."""
    base = [c for c in group_columns(cells_df) if c not in LENGTH_KEYS]
    follow = set(companions(cells_df, base))
    return [c for c in base if c not in follow]


def has_length_axis(cells_df: pd.DataFrame) -> bool:
    """Some setting and learning rate was run at two or more lengths."""
    if cells_df.empty or "optim.lr" not in cells_df.columns:
        return False
    df = with_length(cells_df[cells_df["n"] > 0])
    if df[LENGTH].notna().sum() < 2:
        return False
    keys = [*setting_columns(cells_df), "optim.lr"]
    n = df[keys].astype(object).assign(L=df[LENGTH]).groupby(keys, dropna=False)["L"].nunique()
    return bool((n > 1).any())


def _reach(lengths: np.ndarray, ok: np.ndarray) -> tuple[float, float, float]:
    """(largest length with ok here and at every shorter length, smallest length not ok,
    largest length ok at all) over sorted ``lengths``; NaN where there is none."""
    bad = ~ok
    first_bad = lengths[bad].min() if bad.any() else math.nan
    prefix = lengths[ok & ~(lengths > first_bad)] if bad.any() else lengths[ok]
    largest = prefix.max() if prefix.size else math.nan
    anyok = lengths[ok].max() if ok.any() else math.nan
    return float(largest), float(first_bad), float(anyok)


def length_summary(cells_df: pd.DataFrame) -> pd.DataFrame:
    """One row per setting and learning rate over the lengths its cells tested, then one
    setting row (``optim.lr`` empty) naming the learning rates that reach its longest
    trained length. Empty when the cells have no length axis.

    ``largest_trained_length``: every seed trained at this length and at every shorter
    length run; ``smallest_failed_length``: the shortest length where some seed did not;
    ``longest_trained_length_any``: the longest length where every seed trained, shorter
    failures or not -- above ``smallest_failed_length`` it shows a non-monotone column.
    The same for ``finite`` (no seed diverged) and, for tasks with a success criterion,
    ``solved`` (every seed met it).
    """
    scols = setting_columns(cells_df)
    cols = ["level", *scols, "optim.lr", *SUMMARY_COLUMNS]
    if not has_length_axis(cells_df):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    df = with_length(cells_df[cells_df["n"] > 0])
    n = df["n"].astype(float)
    ok = {
        "trained": (pd.to_numeric(df["n_trained"], errors="coerce") == n).to_numpy(),
        "finite": (pd.to_numeric(df["n_diverged"], errors="coerce") == 0).to_numpy(),
    }
    trials = pd.to_numeric(df.get("n_success_trials"), errors="coerce") \
        if "n_success_trials" in df else pd.Series(np.nan, index=df.index)
    succ = pd.to_numeric(df.get("n_success"), errors="coerce") \
        if "n_success" in df else pd.Series(np.nan, index=df.index)
    has_criterion = trials.notna().to_numpy()
    ok["solved"] = ((succ == trials) & trials.notna() & (trials > 0)).to_numpy()
    keys = [*scols, "optim.lr"]
    rows = []
    grouped = df.assign(_i=np.arange(len(df))).astype({k: object for k in keys})
    for _, g in grouped.groupby(keys, dropna=False, sort=False):
        g = g.sort_values(LENGTH)
        idx = g["_i"].to_numpy()
        lengths = g[LENGTH].to_numpy(float)
        rec = {k: g[k].iloc[0] for k in keys}
        rec["level"] = "lr"
        for name, largest, smallest, anyok in _CRITERIA:
            if name == "solved" and not has_criterion[idx].any():
                rec[largest] = rec[smallest] = rec[anyok] = math.nan
                continue
            rec[largest], rec[smallest], rec[anyok] = _reach(lengths, ok[name][idx])
        rec["n_lengths"] = len(np.unique(lengths))
        rec["n_seeds"] = int(g["n"].min())
        rec["lrs_reaching_longest"] = ""
        rows.append(rec)
    per_lr = pd.DataFrame(rows)
    per_lr["optim.lr"] = pd.to_numeric(per_lr["optim.lr"], errors="coerce")
    settings = []
    for _, g in per_lr.astype({k: object for k in scols}).groupby(scols, dropna=False,
                                                                  sort=False):
        reach = g["largest_trained_length"]
        rec = {k: g[k].iloc[0] for k in scols}
        rec.update({"level": "setting", "optim.lr": math.nan})
        for c in SUMMARY_COLUMNS:
            rec[c] = math.nan
        rec["largest_trained_length"] = reach.max()
        if reach.notna().any():
            best = sorted(g.loc[reach == reach.max(), "optim.lr"].dropna())
            rec["lrs_reaching_longest"] = ";".join(_num(v) for v in best)
        else:
            rec["lrs_reaching_longest"] = ""
        for c in ("largest_finite_length", "largest_solved_length"):
            rec[c] = g[c].max()
        rec["n_lengths"] = int(g["n_lengths"].max())
        rec["n_seeds"] = int(g["n_seeds"].min())
        settings.append(rec)
    out = pd.concat([per_lr, pd.DataFrame(settings)], ignore_index=True)
    out["_lvl"] = (out["level"] == "setting").astype(int)
    out = sort_cells(out, [*scols, "_lvl", "optim.lr"]).drop(columns="_lvl")
    for c in ("n_lengths", "n_seeds"):
        out[c] = out[c].astype("Int64")
    return out[cols]


def grad_norms_by_length(runs_df: pd.DataFrame, cells_df: pd.DataFrame) -> pd.DataFrame:
    """Per setting, learning rate and length: how large the pre-clip gradient norm is and
    how far its spikes reach above it, over the runs with a verdict.

    ``grad_norm_median``: the median over runs of each run's median pre-clip global norm;
    ``p99_over_median``: the median over runs of each run's 99th percentile / median (how
    far the top 1% of steps reach); ``max_over_median``: the largest max / median of any
    run. Norms are over each run's finite steps (summary.json's ``grad_norm_pre``)."""
    scols = setting_columns(cells_df)
    cols = [*scols, "optim.lr", LENGTH, *GRAD_COLUMNS]
    if not has_length_axis(cells_df) or runs_df.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    from seqbench.report.stats import threshold
    from seqbench.report.task_groups import with_metric

    runs = with_length(with_metric(runs_df))
    runs["threshold"] = threshold(runs)
    runs = runs[runs["status"].astype(object).isin(TERMINAL)]
    med = pd.to_numeric(runs["grad_norm_pre_median"], errors="coerce")
    with np.errstate(divide="ignore", invalid="ignore"):
        p99 = pd.to_numeric(runs["grad_norm_pre_p99"], errors="coerce") / med
        mx = pd.to_numeric(runs["grad_norm_pre_max"], errors="coerce") / med
    work = runs[[c for c in scols if c in runs.columns] + ["optim.lr", LENGTH]].astype(object)
    work = work.assign(med=med, p99=p99.where(med > 0), mx=mx.where(med > 0))
    keys = [c for c in cols if c in work.columns and c not in GRAD_COLUMNS]
    g = work.groupby(keys, dropna=False, sort=False)
    out = g.agg(n_runs=("med", "size"), grad_norm_median=("med", "median"),
                p99_over_median=("p99", "median"), max_over_median=("mx", "max")).reset_index()
    for c in ("optim.lr", LENGTH):
        out[c] = pd.to_numeric(out[c], errors="coerce")
    return sort_cells(out, keys)[[c for c in cols if c in out.columns]]


def named_columns(df: pd.DataFrame) -> list[str]:
    """The setting columns a table, a figure panel or a sentence must name: the optimizer
    and the clip setting, and the keys that take several values for one of them (the
    model, a momentum, the task), as the learning-rate tables choose theirs."""
    not_keys = {"level", "optim.lr", LENGTH, "cell", *SUMMARY_COLUMNS, *GRAD_COLUMNS,
                *METRIC_COLUMNS, "clip.max_norm", "clip.clip_value", *LENGTH_KEYS}
    stats = set(NOT_CONFIG_COLUMNS)
    cols = [c for c in df.columns if c not in not_keys and c not in stats]
    cols = [c for c in cols if c not in companions(df, cols)]
    always = [c for c in ("optim.name", "clip.method", "threshold") if c in cols]
    return always + varying_within(df, always, [c for c in cols if c not in always])


def context_columns(df: pd.DataFrame) -> list[str]:
    """What separates comparisons of clip settings: every named column but the clip."""
    return [c for c in named_columns(df) if not (c.startswith("clip.") or c == "threshold")]


def _num(v: float) -> str:
    return f"{v:g}"
