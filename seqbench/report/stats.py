"""Statistics for reports: interval estimates, per-configuration cells, stable learning rates.

Why this module exists: a sweep gives a handful of seeds per configuration, so every
rate and mean in a report must carry its sample size and an interval, and a missing
value (a diverged run has no final loss) must stay missing. Everything here is a pure
function of tables; nothing reads files or draws.

The Student t quantiles come from scipy; tests pin them to published table values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from seqbench.report.collect import DERIVED_COLUMNS, RUN_COLUMNS
from seqbench.report.task_groups import METRIC_COLUMNS, TASK_COLUMN, task_key_columns, with_metric
from seqbench.rundir import NON_EXPERIMENT_KEYS, REPLICATE_KEYS, TERMINAL

#: Two-sided 95% standard-normal quantile, the z of the Wilson interval.
Z95 = 1.959964

#: Config keys that do not change what is measured (where it ran, how it printed), so
#: runs that differ only in them belong to the same cell: the sweep's own list.
NON_EXPERIMENT_PREFIXES: tuple[str, ...] = NON_EXPERIMENT_KEYS

#: The columns of a cells table that are not config keys, in display order: the
#: statistics, and the metric the quality columns are in (``metric``, ``metric_unit``,
#: ``metric_lower_is_better``; part of the cell's identity, so metrics never mix).
STAT_COLUMNS: tuple[str, ...] = (
    "n",
    "n_incomplete",
    "n_finished",
    "n_diverged",
    "divergence_rate",
    "divergence_rate_lo",
    "divergence_rate_hi",
    "n_trained",
    "trained_rate",
    "trained_rate_lo",
    "trained_rate_hi",
    "n_no_progress",
    "no_progress_rate",
    "no_progress_rate_lo",
    "no_progress_rate_hi",
    "baseline_val_metric",
    "n_nonfinite",
    "nan_rate",
    "nan_rate_lo",
    "nan_rate_hi",
    *METRIC_COLUMNS,
    "final_val_metric_mean",
    "final_val_metric_lo",
    "final_val_metric_hi",
    "final_val_bpc_mean",
    "final_val_bpc_lo",
    "final_val_bpc_hi",
    "n_success",
    "n_success_trials",
    "success_rate",
    "success_rate_lo",
    "success_rate_hi",
    "median_divergence_step",
    "grad_norm_pre_median",
    "clip_fraction",
    "tokens_per_second",
)
#: Columns :mod:`seqbench.report.cost` adds to the cells table (time to a target).
COST_COLUMNS: tuple[str, ...] = ("target", "n_reached_target", "steps_to_target",
                                 "tokens_to_target", "seconds_to_target")
#: Every column of a cells table that is a statistic, not a config key.
NOT_CONFIG_COLUMNS: frozenset[str] = frozenset({*STAT_COLUMNS, *COST_COLUMNS})

#: Columns that lead a cells table (when present), because a reader scans them first.
LEADING_KEYS: tuple[str, ...] = (TASK_COLUMN, "optim.name", "clip.method", "threshold", "optim.lr")

#: Display order of clip methods; unknown methods sort after these, alphabetically.
CLIP_METHOD_ORDER: tuple[str, ...] = ("none", "value", "norm", "norm_per_tensor",
                                      "norm_relative")

_VERDICT = TERMINAL


# --------------------------------------------------------------------------- intervals


def wilson_interval(
    k: float | np.ndarray | Sequence[float],
    n: float | np.ndarray | Sequence[float],
    z: float = Z95,
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Wilson score interval for a binomial proportion k/n.

    Chosen over the normal (Wald) interval because sweeps have 1-10 seeds per cell and
    rates of exactly 0 or 1 are common; Wald collapses to a zero-width interval there.
    n == 0 gives (nan, nan): no runs, no information. Works elementwise on arrays;
    scalars in, floats out.
    """
    k_arr = np.asarray(k, dtype=float)
    n_arr = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k_arr / n_arr
        z2 = z * z
        denom = 1.0 + z2 / n_arr
        centre = (p + z2 / (2.0 * n_arr)) / denom
        half = (z / denom) * np.sqrt(p * (1.0 - p) / n_arr + z2 / (4.0 * n_arr * n_arr))
        lo = np.clip(centre - half, 0.0, 1.0)
        hi = np.clip(centre + half, 0.0, 1.0)
    # The closed form gives exactly 0 / 1 at k = 0 / k = n; remove rounding residue.
    lo = np.where(k_arr <= 0, 0.0, lo)
    hi = np.where(k_arr >= n_arr, 1.0, hi)
    empty = ~(n_arr > 0)
    lo = np.where(empty, np.nan, lo)
    hi = np.where(empty, np.nan, hi)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t with ``df`` degrees of freedom."""
    if not df > 0 or math.isnan(t):
        return math.nan
    return float(student_t.cdf(t, df))


def t_ppf(p: float | np.ndarray, df: float | np.ndarray) -> float | np.ndarray:
    """Quantile (inverse CDF) of Student's t; elementwise over arrays.

    df may be non-integer or ``inf`` (the normal quantile). Invalid input (p outside
    (0, 1), df <= 0 or NaN) gives NaN rather than an exception, so it can be applied to
    whole columns where some cells have too few runs.
    """
    p_arr, df_arr = np.broadcast_arrays(np.asarray(p, dtype=float), np.asarray(df, dtype=float))
    valid = (p_arr > 0) & (p_arr < 1) & (df_arr > 0)
    out = np.full(p_arr.shape, np.nan)
    if valid.any():
        out[valid] = student_t.ppf(p_arr[valid], df_arr[valid])
    return float(out) if out.ndim == 0 else out


def t_interval_from_summary(
    mean: np.ndarray | Sequence[float] | float,
    std: np.ndarray | Sequence[float] | float,
    n: np.ndarray | Sequence[float] | float,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided t interval for a mean from (mean, sample std with ddof=1, n).

    n < 2 gives (nan, nan): one value says nothing about its spread.
    """
    mean_a = np.asarray(mean, dtype=float)
    std_a = np.asarray(std, dtype=float)
    n_a = np.asarray(n, dtype=float)
    q = np.asarray(t_ppf(0.5 + level / 2.0, np.where(n_a >= 2, n_a - 1.0, np.nan)))
    with np.errstate(divide="ignore", invalid="ignore"):
        half = q * std_a / np.sqrt(n_a)
    ok = n_a >= 2
    return np.where(ok, mean_a - half, np.nan), np.where(ok, mean_a + half, np.nan)


def mean_t_interval(
    values: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of the non-missing values with a two-sided Student-t interval.

    Returns (mean, lo, hi). NaN entries are missing data and are dropped, never
    filled in. One value: (value, nan, nan). None: (nan, nan, nan).
    """
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    n = arr.size
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if n == 1:
        return mean, math.nan, math.nan
    lo, hi = t_interval_from_summary(mean, arr.std(ddof=1), n, level)
    return mean, float(lo), float(hi)


def config_columns(runs_df: pd.DataFrame) -> list[str]:
    """The config keys of a runs table: every column that is not a run-level field."""
    skip = set(RUN_COLUMNS) | set(DERIVED_COLUMNS)
    return [c for c in runs_df.columns if c not in skip]


#: The keys of trainer.spike (seqbench/spike.py), carried by the report's ``spike`` label.
SPIKE_PREFIX = "trainer.spike."


def cell_key_columns(runs_df: pd.DataFrame) -> list[str]:
    """Config keys that define an experimental cell: all but the replicate keys (the seed
    and a fork's parent, ``seqbench.rundir.REPLICATE_KEYS``) and non-experiment keys;
    where the runs carry the ``spike`` label (``report.spikes``), it stands for the
    ``trainer.spike.*`` keys."""
    carried = SPIKE_PREFIX if "spike" in runs_df.columns else None  # by the spike label
    return [
        c
        for c in config_columns(runs_df)
        if c not in REPLICATE_KEYS and not any(c.startswith(p) for p in NON_EXPERIMENT_PREFIXES)
        and not (carried and c.startswith(carried))
    ]


def threshold(df: pd.DataFrame) -> pd.Series:
    """The clip threshold as one numeric column.

    ``clip.max_norm`` for norm clipping, ``clip.clip_value`` for value clipping, NaN
    for ``none`` and for any method without a single threshold. Missing columns are
    tolerated (a sweep without value clipping has no ``clip.clip_value``).
    """
    nan = pd.Series(np.nan, index=df.index, dtype=float)
    if "clip.method" not in df.columns:
        return nan
    method = df["clip.method"].astype(object)
    max_norm = pd.to_numeric(df["clip.max_norm"], errors="coerce") if "clip.max_norm" in df else nan
    clip_value = (
        pd.to_numeric(df["clip.clip_value"], errors="coerce") if "clip.clip_value" in df else nan
    )
    out = nan.copy()
    out = out.mask(method.isin(["norm", "norm_per_tensor", "norm_relative"]),
                   max_norm.astype(float))
    out = out.mask(method == "value", clip_value.astype(float))
    return out.astype(float).rename("threshold")


def cell_index(runs_df: pd.DataFrame) -> pd.Series:
    """Integer cell id for every run (same key columns as :func:`cells`).

    A cell is a configuration *and* the metric its runs report, so runs in different
    units never share a cell. Deterministic for a given table, so figures can map runs
    to the cells table.
    """
    if runs_df.empty:
        return pd.Series([], index=runs_df.index, dtype="int64", name="cell")
    df = with_metric(runs_df)
    keys = [*cell_key_columns(runs_df), *METRIC_COLUMNS]
    gid = df[keys].astype(object).groupby(keys, dropna=False, sort=False).ngroup()
    return gid.astype("int64").rename("cell")


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def _method_rank(values: pd.Series) -> pd.Series:
    order = {m: i for i, m in enumerate(CLIP_METHOD_ORDER)}
    return values.astype(object).map(lambda m: order.get(m, len(order))).astype(int)


def sort_cells(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Sort a cells-like table by its keys (clip methods in :data:`CLIP_METHOD_ORDER`)."""
    if df.empty:
        return df.reset_index(drop=True)
    tmp = df.copy()
    sort_cols: list[str] = []
    for k in keys:
        if k not in tmp.columns:
            continue
        if k == "clip.method":
            tmp["__rank_method"] = _method_rank(tmp[k])
            sort_cols.append("__rank_method")
        col = tmp[k]
        if not pd.api.types.is_numeric_dtype(col):
            numeric = pd.to_numeric(col, errors="coerce")
            if numeric.notna().sum() == col.notna().sum():
                col = numeric
            else:
                col = col.astype(object).map(lambda v: "" if v is None or v != v else str(v))
        tmp[f"__sort_{k}"] = col
        sort_cols.append(f"__sort_{k}")
    if sort_cols:
        tmp = tmp.sort_values(sort_cols, kind="stable", na_position="first")
    return tmp.drop(columns=[c for c in tmp.columns if c.startswith("__")]).reset_index(drop=True)


def _success_columns(df: pd.DataFrame, completed: pd.Series, diverged: pd.Series) -> pd.DataFrame:
    """Per run: did it meet the task's success criterion, and does it count toward the rate.

    A task has a criterion when any of its runs reported a ``task_success`` verdict.
    For such a task the trials are the completed runs with a verdict plus the diverged
    runs - a run that diverged did not meet the criterion (it has no trained model to
    check), which is the outcome, not an imputation. Completed runs without a verdict
    (the check was not run) count nowhere.
    """
    verdict = df["task_success"].astype(object)
    known = verdict.notna()
    tcols = task_key_columns(df)
    task_id = df[tcols].astype(object).groupby(tcols, dropna=False, sort=False).ngroup()
    criterion = known.groupby(task_id).transform("any").astype(bool)
    return pd.DataFrame(
        {
            "success": (completed & verdict.isin([True])).astype(int),
            "trial": ((completed & known) | (diverged & criterion)).astype(int),
            "criterion": criterion.astype(int),
        },
        index=df.index,
    )


def cells(runs_df: pd.DataFrame) -> pd.DataFrame:
    """Aggregate runs over seeds: one row per configuration cell.

    A cell is one configuration (every config key but the seed and the keys that do
    not change what is measured) *and* one metric (``metric``, ``metric_unit``,
    ``metric_lower_is_better``), so a table can hold several tasks without ever
    averaging numbers in different units. Counts and rates use only runs that reached a
    verdict (``completed`` or ``diverged``); runs still ``running`` or stopped by
    ``interrupted``/``error`` are counted in ``n_incomplete`` and nowhere else. Rates come
    with Wilson intervals; ``final_val_metric_mean`` (the task's own metric) and
    ``final_val_bpc_mean`` (text tasks only) with t intervals over completed runs with a
    value. Where no run finished the mean is NaN (never imputed), and with one finished
    run the interval is NaN. ``n_nonfinite`` counts runs that ever saw a NaN/Inf
    (``first_nonfinite_step`` set or ``divergence == "nonfinite"``), even when a ``skip``
    policy let the run complete; ``n_diverged`` counts status ``diverged`` of either kind.
    ``median_divergence_step`` is over diverged runs: the run's ``divergence_step`` where
    the writer recorded one, else the first non-finite step, else ``steps_completed``
    (exploded runs). ``n_success`` of ``n_success_trials`` runs met the task's success
    criterion (see :func:`_success_columns`), with ``success_rate`` and its Wilson
    interval; all missing for tasks without a criterion. A ``cell`` column in
    ``runs_df`` (:func:`seqbench.report.layout.enrich`) is taken as the cell ids.

    Outcomes (``seqbench.outcome``): ``n_trained`` runs ended better than the task's
    input-independent baseline, ``n_no_progress`` completed no better than it, and
    ``n_diverged`` diverged; each with its rate over ``n`` and a Wilson interval. A
    completed run whose outcome is unknown (an old run whose baseline could not be
    recomputed) is in neither count. ``baseline_val_metric`` is the cell's baseline
    (the same for every run of one task config; the mean if they differ).
    """
    keys = cell_key_columns(runs_df)
    group_keys = [*keys, *METRIC_COLUMNS]
    lead_order = [TASK_COLUMN, "metric", *LEADING_KEYS]
    leading = [k for k in LEADING_KEYS if k in keys or k == "threshold"]
    other = sorted(k for k in keys if k not in LEADING_KEYS)
    key_order = leading + other
    out_cols = ["cell", *key_order, *STAT_COLUMNS]
    if runs_df.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in out_cols})

    df = with_metric(runs_df)
    df["threshold"] = threshold(df)
    if "cell" not in df.columns:  # else numbered already (layout.enrich), over the whole table
        df["cell"] = cell_index(df)
    status = df["status"].astype(object)
    verdict = status.isin(_VERDICT)
    diverged = status == "diverged"
    completed = status == "completed"
    first_nf = _num(df, "first_nonfinite_step")
    div_at = _num(df, "divergence_step")
    divergence = (
        df["divergence"].astype(object) if "divergence" in df else pd.Series(None, index=df.index)
    )
    nonfinite = verdict & (first_nf.notna() | (divergence == "nonfinite"))
    steps = _num(df, "steps_completed")
    succ = _success_columns(df, completed, diverged)
    result = (df["outcome"].astype(object) if "outcome" in df
              else pd.Series(None, index=df.index, dtype=object))

    work = pd.DataFrame(
        {
            "cell": df["cell"],
            "verdict": verdict.astype(int),
            "incomplete": (~verdict).astype(int),
            "finished": completed.astype(int),
            "diverged": diverged.astype(int),
            "trained": (completed & (result == "trained")).astype(int),
            "no_progress": (completed & (result == "no_progress")).astype(int),
            "baseline": _num(df, "baseline_val_metric").where(verdict),
            "nonfinite": nonfinite.astype(int),
            "metric": _num(df, "final_val_metric").where(completed),
            "bpc": _num(df, "final_val_bpc").where(completed),
            "success": succ["success"],
            "trial": succ["trial"],
            "criterion": succ["criterion"],
            "div_step": div_at.fillna(first_nf).fillna(steps).where(diverged),
            "gn": _num(df, "grad_norm_pre_median").where(verdict),
            "clipf": _num(df, "clip_fraction").where(verdict),
            "tps": _num(df, "tokens_per_second").where(verdict),
        }
    )
    g = work.groupby("cell", sort=True)
    agg = g.agg(
        n=("verdict", "sum"),
        n_incomplete=("incomplete", "sum"),
        n_finished=("finished", "sum"),
        n_diverged=("diverged", "sum"),
        n_trained=("trained", "sum"),
        n_no_progress=("no_progress", "sum"),
        baseline_val_metric=("baseline", "mean"),
        n_nonfinite=("nonfinite", "sum"),
        metric_mean=("metric", "mean"),
        metric_std=("metric", "std"),
        metric_count=("metric", "count"),
        bpc_mean=("bpc", "mean"),
        bpc_std=("bpc", "std"),
        bpc_count=("bpc", "count"),
        n_success=("success", "sum"),
        n_trials=("trial", "sum"),
        criterion=("criterion", "max"),
        median_divergence_step=("div_step", "median"),
        grad_norm_pre_median=("gn", "median"),
        clip_fraction=("clipf", "mean"),
        tokens_per_second=("tps", "mean"),
    )
    firsts = df.groupby("cell", sort=True)[[*group_keys, "threshold"]].first()

    n = agg["n"].to_numpy(dtype=float)
    out = pd.DataFrame(index=agg.index)
    out["cell"] = agg.index.to_numpy()
    # .first() skips NaN; a key that is NaN in some runs of a cell is NaN in all.
    for k in [*key_order, *METRIC_COLUMNS]:
        out[k] = firsts[k]
    out["metric_lower_is_better"] = out["metric_lower_is_better"].astype(bool)
    for c in ("n", "n_incomplete", "n_finished", "n_diverged", "n_trained", "n_no_progress",
              "n_nonfinite"):
        out[c] = agg[c].astype("int64")
    for rate, count in (("divergence_rate", "n_diverged"), ("trained_rate", "n_trained"),
                        ("no_progress_rate", "n_no_progress"), ("nan_rate", "n_nonfinite")):
        with np.errstate(divide="ignore", invalid="ignore"):
            out[rate] = np.where(n > 0, agg[count] / np.where(n > 0, n, 1), np.nan)
        out[f"{rate}_lo"], out[f"{rate}_hi"] = wilson_interval(agg[count], n)
    out["baseline_val_metric"] = agg["baseline_val_metric"].astype(float)
    for name, prefix in (("metric", "final_val_metric"), ("bpc", "final_val_bpc")):
        mean, std, count = agg[f"{name}_mean"], agg[f"{name}_std"], agg[f"{name}_count"]
        out[f"{prefix}_mean"] = mean.where(count > 0)
        out[f"{prefix}_lo"], out[f"{prefix}_hi"] = t_interval_from_summary(mean, std, count)
    criterion = agg["criterion"] > 0
    trials = agg["n_trials"].to_numpy(dtype=float)
    out["n_success"] = agg["n_success"].astype("Int64").where(criterion, pd.NA)
    out["n_success_trials"] = agg["n_trials"].astype("Int64").where(criterion, pd.NA)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(trials > 0, agg["n_success"] / np.where(trials > 0, trials, 1), np.nan)
    out["success_rate"] = pd.Series(rate, index=agg.index).where(criterion)
    lo, hi = wilson_interval(agg["n_success"], trials)
    out["success_rate_lo"] = pd.Series(lo, index=agg.index).where(criterion)
    out["success_rate_hi"] = pd.Series(hi, index=agg.index).where(criterion)
    for c in (
        "median_divergence_step",
        "grad_norm_pre_median",
        "clip_fraction",
        "tokens_per_second",
    ):
        out[c] = agg[c].astype(float)
    out = out[[c for c in out_cols if c in out.columns]]
    return sort_cells(out, list(dict.fromkeys([k for k in lead_order if k in out] + key_order)))


def varying_within(df: pd.DataFrame, by: Sequence[str], candidates: Sequence[str]) -> list[str]:
    """The ``candidates`` that take more than one value among rows sharing the same ``by``.

    Used to tell which config keys distinguish rows beyond the usual coordinates
    (optimizer, clip method, threshold, lr) - e.g. a sweep over model sizes - while
    keys that merely follow the optimizer (``optim.momentum`` is NaN for Adam) do not.
    """
    by = [c for c in by if c in df.columns]
    cand = [c for c in candidates if c in df.columns and c not in by]
    if df.empty or not cand:
        return []
    tmp = df[by + cand].astype(object)
    if not by:
        return [c for c in cand if tmp[c].nunique(dropna=False) > 1]
    g = tmp.groupby(by, dropna=False, sort=False)
    return [c for c in cand if (g[c].nunique(dropna=False) > 1).any()]
