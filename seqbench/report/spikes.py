"""Late spikes as tables: what each disturbance did to each fork, and how it recovered.

Why a module of its own: runs with ``trainer.spike`` (seqbench/spike.py), usually forks
of one trained parent (seqbench/fork.py), carry evidence the outcome columns do not: how
far the training loss jumped at the spike, how many steps it took to come back, and what
the spike still cost at the end against the same fork without it. The report's section
on it (``sentences/spikes``, ``figures/spike_recovery``) reads only these tables.

Definitions (per run, on its own training-loss rows, one per step):

- **spike step** ``s``: the first of ``trainer.spike.steps``; the disturbance **ends**
  at the last spike step, or ``lr_steps - 1`` steps after it for a learning-rate spike.
- **reference**: the mean training loss of the :data:`REFERENCE_STEPS` steps before
  ``s`` (at least :data:`MIN_REFERENCE` of them, else no reference and no recovery).
- **peak**: the largest training loss from ``s`` to :data:`WINDOW` steps after the end,
  over the reference. A gradient or lr spike shows from the step after it (a step's
  loss is taken before its update); a corrupted batch shows at its own step.
- **recovery steps**: ``t - s`` for the first step ``t`` after the end at which the mean
  loss of the :data:`WINDOW` steps ``t .. t + 9`` is at most ``1 +`` :data:`TOLERANCE`
  times the reference; **not recovered** when no such window fits before the run's
  last step, and a diverged run does not recover. Why a 10-step mean and 5%: one step's
  loss on 16 streams of 128 characters moves by several percent from batch to batch,
  a 10-step mean by about 1-2% (the late_spike pilot's unspiked forks stayed within
  0.98-1.00 of their reference for 400 steps), so 5% is clear of that noise and still
  small against the spikes' jumps (1.3x to 9x). The unspiked control of every fork
  gets the same numbers, at its spiked siblings' step: its recovery shows what the
  criterion reads when nothing happened.
- **excess at the end**: the spiked fork's final validation metric minus that of its
  unspiked control (same parent, seed and clip setting), per pair, with a 95% t
  interval over the pairs where both ended finite.

A **configuration** here is the report's cell without the spike: its context, its clip
setting and its spike label (the ``spike`` column: ``grad ×100 at step 600``, ``none``
for runs without one, added by ``layout.enrich`` only when some run has a spike).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report.collect import read_columns
from seqbench.report.paired import _key
from seqbench.report.spike_label import NO_SPIKE, SPIKE_COLUMN, _on, _steps
from seqbench.report.stats import SPIKE_PREFIX, cell_key_columns, mean_t_interval, sort_cells
from seqbench.rundir import REPLICATE_KEYS, TERMINAL

#: Steps before the spike whose mean loss is the reference, and the fewest accepted.
REFERENCE_STEPS = 50
MIN_REFERENCE = 10
#: Steps in the window whose mean loss must come back, and how close (a fraction).
WINDOW = 10
TOLERANCE = 0.05
#: Columns of the per-run table after run_dir, cell, the label and the pair key.
RUN_COLUMNS: tuple[str, ...] = (
    "spike_step", "spike_end", "diverged", "reference", "peak_ratio", "recovery_steps",
    "recovered", "final_val_metric",
)
#: Columns of the per-configuration table (spikes.csv) after the configuration's keys.
CELL_COLUMNS: tuple[str, ...] = (
    "n_runs", "n_diverged", "n_recovered", "recovery_median", "recovery_max",
    "peak_median", "n_excess", "excess_mean", "excess_lo", "excess_hi",
    "metric", "metric_lower_is_better",
)


def _end(r: Mapping[str, object]) -> int:
    steps = _steps(r.get(f"{SPIKE_PREFIX}steps"))
    k = r.get(f"{SPIKE_PREFIX}lr_steps")
    extra = 0
    if _on(r.get(f"{SPIKE_PREFIX}lr_factor")):
        extra = (1 if fmt.is_missing(k) else int(k)) - 1  # type: ignore[arg-type]
    return steps[-1] + extra


def recovery(step: np.ndarray, loss: np.ndarray, s: int, end: int
             ) -> tuple[float, float, float]:
    """(reference, peak ratio, recovery steps) of one run's loss rows around a spike at
    ``s`` that ends at ``end`` (NaN where not defined; recovery NaN: not recovered)."""
    order = np.argsort(step, kind="stable")
    step, loss = step[order], loss[order]
    before = loss[(step >= s - REFERENCE_STEPS) & (step < s)]
    before = before[np.isfinite(before)]
    if before.size < MIN_REFERENCE:
        return math.nan, math.nan, math.nan
    ref = float(before.mean())
    during = loss[(step >= s) & (step <= end + WINDOW)]
    with np.errstate(invalid="ignore"):
        peak = float(np.nanmax(during)) / ref if np.isfinite(during).any() else math.inf
    after = step > end
    st, lo = step[after], loss[after]
    if st.size < WINDOW:
        return ref, peak, math.nan
    # windows of WINDOW consecutive rows (rows are one per step: a gap breaks a window)
    kernel = np.ones(WINDOW) / WINDOW
    means = np.convolve(lo, kernel, mode="valid")
    span = st[WINDOW - 1:] - st[: st.size - WINDOW + 1]
    ok = (span == WINDOW - 1) & np.isfinite(means) & (means <= (1 + TOLERANCE) * ref)
    hit = np.flatnonzero(ok)
    return ref, peak, (float(st[hit[0]] - s) if hit.size else math.nan)


def spike_runs(runs: pd.DataFrame, runs_dir) -> pd.DataFrame:
    """One row per run with a verdict in a report with spikes (the unspiked controls
    included, measured at their siblings' spike step): ``run_dir``, ``cell``, ``spike``,
    ``__sibling`` (the configuration without the spike), ``__pair`` (seed and parent),
    then :data:`RUN_COLUMNS`. Empty when no run has a spike."""
    if runs.empty or SPIKE_COLUMN not in runs.columns or "status" not in runs.columns:
        return pd.DataFrame()
    df = runs[runs["status"].isin(TERMINAL)].copy()
    if df.empty:
        return pd.DataFrame()
    keys = [c for c in _cell_keys(df) if c != SPIKE_COLUMN]
    df["__sibling"] = _key(df, keys)
    df["__pair"] = _key(df, [c for c in REPLICATE_KEYS if c in df.columns])
    spiked = df[SPIKE_COLUMN] != NO_SPIKE
    # the control's spike step: its spiked siblings' (the most common one)
    at = {sib: int(pd.Series([_steps(v)[0] for v in g[f"{SPIKE_PREFIX}steps"]]).mode()[0])
          for sib, g in df[spiked].groupby("__sibling")}
    df["spike_step"] = [(_steps(v)[0] if sp else at.get(sib, -1)) for v, sp, sib in
                        zip(df[f"{SPIKE_PREFIX}steps"], spiked, df["__sibling"])]
    df["spike_end"] = [(_end(r) if sp else s) for r, sp, s in zip(
        df.to_dict("records"), spiked, df["spike_step"])]
    df = df[df["spike_step"] >= 0]
    losses = loss_rows(runs_dir, df["run_dir"])
    rows = []
    for r in df.to_dict("records"):
        ref = peak = rec = math.nan
        if str(r["run_dir"]) in losses:
            step, loss = losses[str(r["run_dir"])]
            ref, peak, rec = recovery(step, loss, int(r["spike_step"]), int(r["spike_end"]))
        diverged = r["status"] == "diverged"
        if diverged:
            rec = math.nan
        rows.append({**{k: r[k] for k in ("run_dir", "cell", SPIKE_COLUMN, "__sibling",
                                          "__pair", "spike_step", "spike_end")},
                     "diverged": diverged, "reference": ref, "peak_ratio": peak,
                     "recovery_steps": rec, "recovered": not math.isnan(rec),
                     "final_val_metric": pd.to_numeric(r.get("final_val_metric"),
                                                       errors="coerce")})
    return pd.DataFrame(rows)


def loss_rows(runs_dir, run_dirs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """run_dir -> (steps, training losses) from each run's metrics.parquet (columnar; a
    file that cannot be read is left out)."""
    curves = read_columns(runs_dir, run_dirs, ["train_loss"])
    bounds = np.searchsorted(curves.run, np.arange(len(curves.ids) + 1))
    return {rel: (curves.step[bounds[i]:bounds[i + 1]],
                  curves.values["train_loss"][bounds[i]:bounds[i + 1]])
            for i, rel in enumerate(curves.ids)}


def _cell_keys(df: pd.DataFrame) -> list[str]:
    return [c for c in cell_key_columns(df) if c in df.columns]


def excess(per_run: pd.DataFrame) -> pd.DataFrame:
    """Per spiked run with a finite metric and a finite control of the same sibling
    configuration and pair: ``run_dir`` and ``excess`` (spiked minus control)."""
    control = per_run[per_run[SPIKE_COLUMN] == NO_SPIKE]
    control = control.drop_duplicates(["__sibling", "__pair"], keep=False)
    joined = per_run[per_run[SPIKE_COLUMN] != NO_SPIKE].merge(
        control[["__sibling", "__pair", "final_val_metric"]], on=["__sibling", "__pair"],
        suffixes=("", "_control"))
    joined["excess"] = joined["final_val_metric"] - joined["final_val_metric_control"]
    ok = np.isfinite(joined["excess"].to_numpy(float))
    return joined.loc[ok, ["run_dir", "excess"]]


def cell_table(per_run: pd.DataFrame, cells_df: pd.DataFrame,
               keys: Sequence[str]) -> pd.DataFrame:
    """One row per configuration (cell) with spike data: ``keys`` (the cells table's
    columns naming it), then :data:`CELL_COLUMNS`. Recovery statistics count not
    recovered (and diverged) as never: the median is ∞ when half or more did not."""
    if per_run.empty:
        return pd.DataFrame(columns=[*keys, *CELL_COLUMNS])
    ex = per_run.merge(excess(per_run), on="run_dir", how="left")
    info = cells_df.set_index("cell")
    rows = []
    for cell, g in ex.groupby("cell", sort=False):
        c = info.loc[cell]
        rec = g["recovery_steps"].to_numpy(float)
        never = np.where(np.isnan(rec), np.inf, rec)
        got = rec[~np.isnan(rec)]
        m, lo, hi = mean_t_interval(g["excess"].to_numpy(float))
        rows.append({**{k: c.get(k) for k in keys if k != "cell"},
                     "n_runs": len(g), "n_diverged": int(g["diverged"].sum()),
                     "n_recovered": int(g["recovered"].sum()),
                     "recovery_median": float(np.median(never)),
                     "recovery_max": float(got.max()) if got.size else math.nan,
                     "peak_median": float(np.nanmedian(g["peak_ratio"]))
                     if np.isfinite(g["peak_ratio"].to_numpy(float)).any() else math.nan,
                     "n_excess": int(g["excess"].notna().sum()),
                     "excess_mean": m, "excess_lo": lo, "excess_hi": hi,
                     "metric": c.get("metric", "bpc"),
                     "metric_lower_is_better": c.get("metric_lower_is_better", True)})
    out = pd.DataFrame(rows)
    shown = [k for k in keys if k != "cell"]
    return sort_cells(out, shown)[[*shown, *CELL_COLUMNS]]
