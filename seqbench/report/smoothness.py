"""The smoothness probe's numbers as tables: per run, per configuration, per warning rule.

Why a module of its own: runs with ``trainer.smoothness_every=N`` carry a second kind of
evidence besides their outcome -- L̂, the loss surface's local smoothness along each N-th
update, against ‖∇f‖, the gradient norm of a fixed probe batch (seqbench/smoothness.py,
after Zhang, He, Sra & Jadbabaie, ICLR 2020) -- and whether a jump in either came before a
divergence (seqbench/early_warning.py). The report's section on it (the sentences in
``sentences/smoothness``, the figure in ``figures/smoothness``) reads only these tables.

Inputs: each run's summary.json ``smoothness`` object (its per-run statistics and
warning outcomes) and smoothness.parquet (the probes, for the figure). Only runs with a
verdict (completed or diverged) count, as in every rate of the report; a run whose
summary lacks ``smoothness`` (the probe was off, or the run predates it) is not in any
of these tables, and a report without such runs has no smoothness section at all. A
summary written before the warning existed has no ``warning``: its run is in the
per-configuration table but in no warning table.

Reads are columnar (pyarrow, three columns) with one small loop per run directory; the
summaries were validated by ``collect`` (``seqbench.rundir._smoothness_ok``) and are
read again here through the same validator, so a run rewritten since is skipped, not
trusted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqbench.early_warning import DEFAULT_K, KS, MIN_HISTORY, SIGNALS
from seqbench.report.collect import _Corrupt, _read_summary, _source, is_numeric_type
from seqbench.report.layout import Layout
from seqbench.report.stats import mean_t_interval, sort_cells, wilson_interval
from seqbench.rundir import SUMMARY_FILE, TERMINAL

#: seqbench.smoothness.SMOOTHNESS_FILE (not imported from there: that module needs torch).
SMOOTHNESS_FILE = "smoothness.parquet"
#: The probe columns the figure reads.
PROBE_COLUMNS: tuple[str, ...] = ("step", "probe_grad_norm", "smoothness")
#: How the two warning signals are named in tables and sentences.
SIGNAL_NAMES: dict[str, str] = {"L": "L̂", "grad": "‖∇f‖"}
#: Columns of the per-configuration table (smoothness.csv) after the setting's keys.
CELL_COLUMNS: tuple[str, ...] = (
    "n_runs", "n_probed", "n_rho", "rho_mean", "rho_lo", "rho_hi", "rho_median",
    "n_rho_positive", "n_fit", "L1_median", "L1_mean", "L1_lo", "L1_hi",
    "n_L1_above_0", "L0_median", "median_L_median", "probe_every",
)
#: Columns of the warning tables (per configuration and signal; per signal and k).
WARNING_COLUMNS: tuple[str, ...] = (
    "n_runs", "n_diverged", "n_warned", "lead_median", "n_missed", "n_too_early",
    "n_not_diverged", "n_false_alarm",
)


@dataclass
class ProbeRuns:
    """The smoothness data of a report's runs with a verdict and the probe on.

    ``runs``: one row per such run -- ``run_dir``, ``cell``, ``diverged``, the probe
    interval ``probe_every`` and the summary's ``n``, ``n_used``, ``median_L``, ``rho``
    (Spearman of log L̂ and log ‖∇f‖), ``L0``, ``L1``, ``L1_lo``/``L1_hi`` (Sen's 95%
    interval), ``has_warning``, ``armed_at_step``, ``default_k`` and ``divergence_step``.
    ``rules``: one row per run with a warning, signal and k -- ``run_dir``, ``cell``,
    ``signal``, ``k``, ``step`` (the first firing), ``lead_steps``, ``outcome``.
    ``n_verdict``: the runs with a verdict the report has (probe on or not).
    """

    runs: pd.DataFrame
    rules: pd.DataFrame
    n_verdict: int

    @property
    def empty(self) -> bool:
        return self.runs.empty

    @property
    def default_k(self) -> float:
        """The k the report leads with: the runs' own ``default_k`` (the most common)."""
        ks = self.runs.loc[self.runs["has_warning"], "default_k"].dropna()
        return float(ks.mode().iloc[0]) if len(ks) else DEFAULT_K


_RUN_COLS = ("run_dir", "cell", "diverged", "probe_every", "n", "n_used", "median_L", "rho",
             "L0", "L1", "L1_lo", "L1_hi", "has_warning", "armed_at_step", "default_k",
             "divergence_step")
_RULE_COLS = ("run_dir", "cell", "signal", "k", "step", "lead_steps", "outcome")


def _f(v: object) -> float:
    """A summary's number as a float; NaN for null and for anything the validator does
    not check that is not a finite number (``default_k``, ``armed_at_step``)."""
    if isinstance(v, bool) or not isinstance(v, Real):
        return math.nan
    try:
        return float(v)
    except OverflowError:  # an integer beyond float range
        return math.nan


def _smoothness_of(path: Path) -> dict | None:
    try:
        return _read_summary(path).get("smoothness")
    except _Corrupt:  # rewritten since collect read it: not trusted
        return None


def probe_runs(runs_df: pd.DataFrame, runs_dir: str | os.PathLike[str]) -> ProbeRuns:
    """Read the ``smoothness`` object of every run with a verdict (see :class:`ProbeRuns`).

    ``runs_df``: the report's runs table with its ``cell`` column
    (:func:`seqbench.report.layout.enrich`)."""
    empty = ProbeRuns(pd.DataFrame(columns=list(_RUN_COLS)),
                      pd.DataFrame(columns=list(_RULE_COLS)), 0)
    if runs_df.empty or "cell" not in runs_df.columns:
        return empty
    verdict = runs_df[runs_df["status"].astype(object).isin(TERMINAL)]
    every = (pd.to_numeric(verdict["trainer.smoothness_every"], errors="coerce")
             if "trainer.smoothness_every" in verdict else pd.Series(np.nan, verdict.index))
    div_at = pd.Series(np.nan, verdict.index)  # as stats.cells: the step it was recorded at,
    for col in ("divergence_step", "first_nonfinite_step", "steps_completed"):  # else ...
        if col in verdict:
            div_at = div_at.fillna(pd.to_numeric(verdict[col], errors="coerce"))
    rows, rules = [], []
    root = Path(runs_dir)
    for (_, rec), n_every, d_step in zip(verdict.iterrows(), every, div_at, strict=True):
        sm = _smoothness_of(root / rec["run_dir"] / SUMMARY_FILE)
        if not isinstance(sm, dict):
            continue
        rho, fit, warn = sm.get("spearman_log") or {}, sm.get("fit") or {}, sm.get("warning")
        ci = fit.get("L1_ci95") or [None, None]  # validated: two numbers or nulls
        diverged = rec["status"] == "diverged"
        rows.append({
            "run_dir": rec["run_dir"], "cell": int(rec["cell"]), "diverged": diverged,
            "probe_every": _f(n_every), "n": int(sm["n"]),
            "n_used": int(sm.get("n_used", sm["n"]) or 0), "median_L": _f(sm["median_L"]),
            "rho": _f(rho.get("rho")), "L0": _f(fit.get("L0")), "L1": _f(fit.get("L1")),
            "L1_lo": _f(ci[0]), "L1_hi": _f(ci[1]), "has_warning": isinstance(warn, dict),
            "armed_at_step": _f(warn.get("armed_at_step")) if isinstance(warn, dict) else math.nan,
            "default_k": _f(warn.get("default_k")) if isinstance(warn, dict) else math.nan,
            "divergence_step": _f(d_step) if diverged else math.nan,
        })
        for sig in SIGNALS if isinstance(warn, dict) else ():
            for r in warn[sig]:  # the validator lets any of these be null or absent
                rules.append({"run_dir": rec["run_dir"], "cell": int(rec["cell"]), "signal": sig,
                              "k": _f(r.get("k")), "step": _f(r.get("step")),
                              "lead_steps": _f(r.get("lead_steps")),
                              "outcome": r.get("outcome")})
    if not rows:
        return ProbeRuns(empty.runs, empty.rules, len(verdict))
    return ProbeRuns(pd.DataFrame(rows, columns=list(_RUN_COLS)),
                     pd.DataFrame(rules, columns=list(_RULE_COLS)), len(verdict))


def setting_keys(cells_df: pd.DataFrame, layout: Layout) -> list[str]:
    """The columns that name a configuration in these tables: the layout's coordinates
    and facets (the task too, when the report holds several)."""
    keys = [*layout.coords, *(c for c in layout.facets if c not in layout.coords)]
    return [c for c in keys if c in cells_df.columns]


def _order(keys: Sequence[str], layout: Layout) -> list[str]:
    """Rows sorted context by context (optimizer, model, ...), then clip setting and lr:
    the settings one reader compares sit together."""
    ctx = [c for c in layout.context if c in keys]
    return [*ctx, *(k for k in keys if k not in ctx)]


def _median(v: pd.Series) -> float:
    v = v.dropna()
    return float(v.median()) if len(v) else math.nan


def cell_table(probe: ProbeRuns, cells_df: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """Per configuration with probe runs (smoothness.csv): ``n_runs`` with the probe on,
    ``n_probed`` with at least one usable probe (L̂ and ‖∇f‖ finite and > 0); Spearman's
    ρ over the ``n_rho`` runs that have one -- mean with a 95% t interval over seeds
    (:func:`seqbench.report.stats.mean_t_interval`; cut to [-1, 1], a correlation's
    range), median, how many > 0; the fitted L1
    over the ``n_fit`` runs with a fit -- median, mean with a 95% t interval, how many
    whose own Sen 95% interval lies above 0; the median L0 and the median over runs of
    each run's median L̂. Nothing is imputed: a run without a ρ or a fit is left out of
    those columns only."""
    keys = setting_keys(cells_df, layout)
    cols = ["cell", *keys, *CELL_COLUMNS]
    if probe.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    by_cell = cells_df.set_index("cell")
    for cell, g in probe.runs.groupby("cell", sort=False):
        rho, l1 = g["rho"].dropna(), g["L1"].dropna()
        rho_mean, rho_lo, rho_hi = mean_t_interval(rho.to_numpy())
        rho_lo, rho_hi = max(rho_lo, -1.0), min(rho_hi, 1.0)  # a correlation's range (NaN stays)
        l1_mean, l1_lo, l1_hi = mean_t_interval(l1.to_numpy())
        rec = {"cell": cell, **{k: by_cell.at[cell, k] for k in keys}}
        rec.update({
            "n_runs": len(g), "n_probed": int((g["n_used"] > 0).sum()), "n_rho": len(rho),
            "rho_mean": rho_mean, "rho_lo": rho_lo, "rho_hi": rho_hi,
            "rho_median": _median(rho), "n_rho_positive": int((rho > 0).sum()),
            "n_fit": len(l1), "L1_median": _median(l1), "L1_mean": l1_mean, "L1_lo": l1_lo,
            "L1_hi": l1_hi, "n_L1_above_0": int((g["L1_lo"] > 0).sum()),
            "L0_median": _median(g["L0"]), "median_L_median": _median(g["median_L"]),
            "probe_every": _median(g["probe_every"]),
        })
        rows.append(rec)
    return sort_cells(pd.DataFrame(rows, columns=cols), _order(keys, layout))


def _counts(rules: pd.DataFrame) -> dict[str, float]:
    """The warning columns over one group of rule rows (one row per run)."""
    out = rules["outcome"].astype(object)
    warned = out == "warned"
    n_div = int(out.isin(["warned", "missed", "too_early"]).sum())
    n_not = int(out.isin(["false_alarm", "quiet"]).sum())
    return {"n_runs": n_div + n_not, "n_diverged": n_div, "n_warned": int(warned.sum()),
            "lead_median": _median(rules.loc[warned, "lead_steps"]),
            "n_missed": int((out == "missed").sum()),
            "n_too_early": int((out == "too_early").sum()),
            "n_not_diverged": n_not, "n_false_alarm": int((out == "false_alarm").sum())}


def warning_cells(probe: ProbeRuns, cells_df: pd.DataFrame, layout: Layout,
                  k: float | None = None) -> pd.DataFrame:
    """Per configuration and signal, at ``k`` (default: :attr:`ProbeRuns.default_k`): of
    the runs with a warning that ended, how many diverged; of those, how many the rule
    warned of (and the median lead in steps of those), missed, or could not judge
    (``too_early``: the divergence came before the rule was armed); of those that did not
    diverge, how many it fired on anyway (``false_alarm``)."""
    keys = setting_keys(cells_df, layout)
    cols = ["cell", *keys, "signal", "k", *WARNING_COLUMNS]
    k = probe.default_k if k is None else k
    at_k = probe.rules[np.isclose(probe.rules["k"].astype(float), k)] \
        if not probe.rules.empty else probe.rules
    if at_k.empty:
        return pd.DataFrame(columns=cols)
    by_cell = cells_df.set_index("cell")
    rows = []
    for (cell, sig), g in at_k.groupby(["cell", "signal"], sort=False):
        rows.append({"cell": cell, **{c: by_cell.at[cell, c] for c in keys},
                     "signal": sig, "k": k, **_counts(g)})
    out = pd.DataFrame(rows, columns=cols)
    out["_sig"] = out["signal"].map({s: i for i, s in enumerate(SIGNALS)})
    return sort_cells(out, [*_order(keys, layout), "_sig"]).drop(columns="_sig")


def warning_sensitivity(probe: ProbeRuns) -> pd.DataFrame:
    """Per signal and k, pooled over every run with a warning: the warning columns, and
    the Wilson 95% intervals of warned / armed divergences (``n_warned`` of
    ``n_diverged - n_too_early``) and of false alarms / runs that did not diverge."""
    cols = ["signal", "k", *WARNING_COLUMNS, "n_armed", "warned_lo", "warned_hi",
            "false_alarm_lo", "false_alarm_hi"]
    if probe.rules.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for sig in SIGNALS:
        for k in sorted(set(probe.rules["k"].dropna()) | set(KS)):
            g = probe.rules[(probe.rules["signal"] == sig) & np.isclose(probe.rules["k"], k)]
            if g.empty:
                continue
            c = _counts(g)
            armed = c["n_diverged"] - c["n_too_early"]
            w_lo, w_hi = wilson_interval(c["n_warned"], armed)
            f_lo, f_hi = wilson_interval(c["n_false_alarm"], c["n_not_diverged"])
            rows.append({"signal": sig, "k": float(k), **c, "n_armed": armed,
                         "warned_lo": w_lo, "warned_hi": w_hi,
                         "false_alarm_lo": f_lo, "false_alarm_hi": f_hi})
    return pd.DataFrame(rows, columns=cols)


def armed_after(probe: ProbeRuns) -> float:
    """The step at which the rule is armed for most runs: the (MIN_HISTORY + 1)-th probe,
    from the runs' ``armed_at_step`` or, where none got that far, the probe interval."""
    armed = probe.runs["armed_at_step"].dropna()
    if len(armed):
        return float(armed.mode().iloc[0])
    every = probe.runs["probe_every"].dropna()
    return float(every.mode().iloc[0]) * (MIN_HISTORY + 1) if len(every) else math.nan


# --------------------------------------------------------------------------- the probes


@dataclass
class Probes:
    """The probes of several runs as flat arrays (``run``: index into ``ids``); rows with
    a non-finite or non-positive L̂ or ‖∇f‖ are dropped and counted in ``n_dropped``."""

    ids: list[str]
    run: np.ndarray
    step: np.ndarray
    grad: np.ndarray
    smooth: np.ndarray
    n_dropped: int = 0


def _read_probe_file(path: Path) -> tuple[np.ndarray, ...] | None:
    """(step, probe_grad_norm, smoothness) of one file; None when it is missing or not a
    smoothness file (a run that diverged before its first probe has none)."""
    if not path.is_file():
        return None
    try:
        with _source(path) as src, pq.ParquetFile(src) as pf:
            schema = pf.schema_arrow
            if any(c not in schema.names or not is_numeric_type(schema.field(c).type)
                   for c in PROBE_COLUMNS):
                return None
            table = pf.read(columns=list(PROBE_COLUMNS), use_threads=False)
    except (OSError, pa.ArrowException):
        return None
    return tuple(np.asarray(table.column(c).cast(pa.float64()).to_numpy(), dtype=np.float64)
                 for c in PROBE_COLUMNS)


def read_probes(runs_dir: str | os.PathLike[str], run_dirs: Sequence[str]) -> Probes:
    """The usable probes of ``run_dirs`` (see :class:`Probes`); unreadable files are
    skipped (the summary's statistics still count in the tables)."""
    root = Path(runs_dir)
    ids, parts, dropped = [], [], 0
    for rel in dict.fromkeys(run_dirs):
        got = _read_probe_file(root / rel / SMOOTHNESS_FILE)
        if got is None:
            continue
        step, grad, smooth = got
        ok = np.isfinite(step) & np.isfinite(grad) & np.isfinite(smooth) & (grad > 0) \
            & (smooth > 0)
        dropped += int((~ok).sum())
        ids.append(rel)
        parts.append((step[ok], grad[ok], smooth[ok]))
    if not parts:
        z = np.zeros(0)
        return Probes(ids, np.zeros(0, np.int32), z, z, z, dropped)
    return Probes(ids, np.repeat(np.arange(len(parts), dtype=np.int32),
                                 [len(p[0]) for p in parts]),
                  *(np.concatenate([p[j] for p in parts]) for j in range(3)), dropped)
