"""Learning-rate summaries: how far up the learning rate a setting stays finite, how far
it still trains, and how much its result depends on the learning rate.

One row per (optimizer, clip setting, any other config that tells cells apart, task),
over the learning rates its cells tested:

- ``largest_finite_lr``: the largest lr at which no seed diverged (``n >= 1`` runs with a
  verdict, ``n_diverged == 0``). Staying finite is all it says: such a run may have
  learned nothing.
- ``largest_trained_lr``: the largest lr at which every seed *trained* (ended better
  than the task's input-independent baseline, ``seqbench.outcome``). This is the
  *maximal learning rate* of Iyer, Hanin & Rolnick (ICML 2023, "Maximal initial learning
  rates in deep ReLU networks"): the largest learning rate at which training from a
  random initialisation reaches a given threshold, here the baseline. On a grid it is
  the largest tested lr that met it, even when a smaller one did not: the table says so
  through ``smallest_untrained_lr`` (below ``largest_trained_lr`` means not monotone),
  as ``smallest_diverged_lr`` does for ``largest_finite_lr``.
- ``lr_sensitivity``: Wortsman et al. (ICLR 2024, "Small-scale proxies for large-scale
  Transformer training instabilities", sec. 2.2), the expectation over the lr grid of
  ``min(l(eta), l_0) - min_eta l(eta)``, with ``l(eta)`` the final loss at ``eta`` and
  ``l_0`` the loss at initialisation. It is how much worse than the grid's best a
  learning rate drawn from the grid ends, on average; 0 means the result does not
  depend on the lr. The paper counts a diverged run at ``l_0`` (its ``min`` caps every
  run there), and so do we: this is the statistic's definition, not an imputed value.
  Here ``l`` is a run's final *validation* loss in the task's loss unit (nats per
  character for text) and ``l_0`` its own first training loss; with seeds, ``l(eta)`` is
  the mean over the lr's runs of ``min(l, l_0)``. ``lr_sensitivity_lo``/``_hi``: a 95%
  percentile bootstrap over seeds (each lr's runs resampled with replacement, 2,000
  times, a fixed generator); NaN when no lr has two runs. NaN altogether with fewer
  than two lrs, or when a run with a verdict lacks ``l`` or ``l_0`` (never filled in).
  Settings are comparable only over the same grid: the report compares them per
  optimizer.
- ``n_lrs``: learning rates with a verdict; ``n_seeds``: the fewest runs with a verdict
  at any of them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from seqbench.report.stats import NOT_CONFIG_COLUMNS, cell_index, sort_cells
from seqbench.report.task_groups import METRIC_COLUMNS
from seqbench.rundir import TERMINAL

BOOTSTRAP = 2000

LR_COLUMNS: tuple[str, ...] = (
    "largest_finite_lr",
    "n_at_largest_finite",
    "smallest_diverged_lr",
    "largest_trained_lr",
    "n_at_largest_trained",
    "smallest_untrained_lr",
    "lr_sensitivity",
    "lr_sensitivity_lo",
    "lr_sensitivity_hi",
    "n_lrs",
    "n_seeds",
)


def group_columns(cells_df: pd.DataFrame) -> list[str]:
    """The columns that define one row: every config key but the lr (and the raw
    threshold keys, which ``threshold`` carries), then the metric columns."""
    skip = set(NOT_CONFIG_COLUMNS) | {"cell", "optim.lr", "clip.max_norm", "clip.clip_value"}
    cols = [c for c in cells_df.columns if c not in skip]
    lead = [c for c in ("optim.name", "clip.method", "threshold") if c in cols]
    metric = [c for c in METRIC_COLUMNS if c in cells_df.columns]
    return lead + [c for c in cols if c not in lead] + metric


def lr_summary(cells_df: pd.DataFrame, runs_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """The learning-rate summary of a cells table (see the module docstring).

    ``runs_df`` (the runs behind ``cells_df``, as :func:`stats.cells` was given them) is
    needed for LR sensitivity only; without it those columns are NaN.
    """
    gcols = group_columns(cells_df)
    out_cols = [*gcols, *LR_COLUMNS]
    if cells_df.empty or "optim.lr" not in cells_df.columns:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in out_cols})
    df = cells_df.copy()
    lr = pd.to_numeric(df["optim.lr"], errors="coerce").astype(float)
    n = pd.to_numeric(df["n"], errors="coerce").fillna(0)
    nd = pd.to_numeric(df["n_diverged"], errors="coerce").fillna(0)
    nt = (pd.to_numeric(df["n_trained"], errors="coerce").fillna(0)
          if "n_trained" in df else pd.Series(0, index=df.index))
    tested = n >= 1
    finite = tested & (nd == 0)
    trained = tested & (nt == n)
    gid = (df[gcols].astype(object).groupby(gcols, dropna=False, sort=False).ngroup()
           if gcols else pd.Series(0, index=df.index))
    work = pd.DataFrame({"gid": gid, "lr": lr, "n": n, "tested": tested.astype(int),
                         "finite": lr.where(finite), "div": lr.where(nd > 0),
                         "trained": lr.where(trained), "untrained": lr.where(tested & ~trained),
                         "n_tested": n.where(tested)})
    agg = work.groupby("gid", sort=True).agg(
        largest_finite_lr=("finite", "max"), smallest_diverged_lr=("div", "min"),
        largest_trained_lr=("trained", "max"), smallest_untrained_lr=("untrained", "min"),
        n_lrs=("tested", "sum"), n_seeds=("n_tested", "min"))
    for name, mask in (("finite", finite), ("trained", trained)):
        best = work[mask].sort_values(["gid", "lr"], kind="stable").groupby("gid").tail(1)
        agg[f"n_at_largest_{name}"] = best.set_index("gid")["n"].reindex(agg.index)
    sens = _sensitivities(df, gid, runs_df)
    for j, k in enumerate(("lr_sensitivity", "lr_sensitivity_lo", "lr_sensitivity_hi")):
        agg[k] = [sens.get(g, (math.nan,) * 3)[j] for g in agg.index]
    if gcols:
        keys = df.assign(gid=gid).groupby("gid", sort=True)[gcols].first()
        out = pd.concat([keys, agg], axis=1)
    else:
        out = agg
    out["n_lrs"] = out["n_lrs"].astype("int64")
    return sort_cells(out[out_cols], gcols)


def _sensitivities(cells_df: pd.DataFrame, gid: pd.Series, runs_df: pd.DataFrame | None
                   ) -> dict[int, tuple[float, float, float]]:
    """gid -> (sensitivity, lo, hi) from the runs of each group's cells."""
    if runs_df is None or runs_df.empty or "cell" not in cells_df:
        return {}
    runs = runs_df if "cell" in runs_df else runs_df.assign(cell=cell_index(runs_df))
    status = runs["status"].astype(object)
    verdict = status.isin(TERMINAL)
    l0 = pd.to_numeric(runs.get("initial_loss"), errors="coerce") \
        if "initial_loss" in runs else pd.Series(np.nan, index=runs.index)
    final = pd.to_numeric(runs["final_val_loss"], errors="coerce")
    value = np.where(status == "diverged", l0, np.minimum(final, l0))
    runs = runs.assign(value=value)[verdict]
    by_cell = {c: g["value"].to_numpy(float) for c, g in runs.groupby("cell")}
    out = {}
    for g, cell_ids in cells_df.groupby(gid)["cell"]:
        per_lr = [by_cell[c] for c in cell_ids if c in by_cell and len(by_cell[c])]
        out[int(g)] = lr_sensitivity(per_lr)
    return out


def lr_sensitivity(per_lr: list[np.ndarray], seed: int = 0) -> tuple[float, float, float]:
    """(sensitivity, bootstrap lo, hi) from each lr's per-run values ``min(l, l_0)``
    (``l_0`` for a diverged run). NaN when there is no lr or a value is missing."""
    if len(per_lr) < 2 or any(not np.isfinite(v).all() for v in per_lr):
        return math.nan, math.nan, math.nan  # one lr: nothing to be sensitive to
    means = np.array([v.mean() for v in per_lr])
    point = float(np.mean(means - means.min()))
    if max(len(v) for v in per_lr) < 2:
        return point, math.nan, math.nan
    rng = np.random.default_rng(seed)
    boot = np.empty((BOOTSTRAP, len(per_lr)))
    for j, v in enumerate(per_lr):
        boot[:, j] = v[rng.integers(0, len(v), size=(BOOTSTRAP, len(v)))].mean(axis=1)
    stats = (boot - boot.min(axis=1, keepdims=True)).mean(axis=1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return point, float(lo), float(hi)
