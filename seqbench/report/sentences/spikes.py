"""The late-spike section in words and a display table: what ``report.spikes``'s tables
say about which clip setting rescues a trained model hit by a spike, and how fast.

Every sentence names its n: a fork has recovered when it did not diverge and its 10-step
mean loss came back within 5% of its pre-spike mean before the run ended; a clip setting
rescued a disturbance when every one of its forks recovered where, without clipping, not
every one did. What the
sentences do not show is said in the intro: the spike sizes and steps tried, one
learning rate per model, forks of a few parents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report import spikes as sp
from seqbench.report.figures import FigureResult
from seqbench.report.layout import Layout
from seqbench.report.sentences import context_name
from seqbench.report.spike_label import NO_SPIKE, SPIKE_COLUMN

HEADING = "Late spikes"
TABLE_HEADING = "Spikes per configuration"
INTRO = (
    "Runs with trainer.spike met a disturbance at a chosen step (seqbench/spike.py): a "
    "gradient multiplied before clipping, a learning rate multiplied for some steps, or a "
    "batch of random tokens. Where they are forks of one trained parent "
    "(trainer.init_from), a spiked fork and its unspiked control share everything before "
    "the spike. **Recovery**: the steps from the spike to the first "
    f"{sp.WINDOW}-step window after the disturbance whose mean training loss is within "
    f"{sp.TOLERANCE:.0%} of the mean of the {sp.REFERENCE_STEPS} steps before the spike "
    f"({sp.TOLERANCE:.0%} is well above the batch-to-batch noise of a {sp.WINDOW}-step "
    "mean, which the unspiked controls show); a diverged fork does not recover. A clip "
    "setting **rescued** a disturbance when every one of its forks recovered before the "
    "run ended where, without clipping, not every one did. Only runs that completed or "
    "diverged count. What this does not show: other spike sizes, steps or learning "
    "rates, longer runs (a fork not recovered by its last step may recover later), or "
    "spikes that come in bursts."
)
TABLE_NOTE = (
    "One row per configuration with a spike or a control: forks (runs), diverged and "
    "recovered k/n, recovery in steps (median over forks, with not recovered counted as "
    "never: ∞ when half or more did not; the slowest recovered fork in brackets), the "
    "peak: the largest single-step training loss from the spike to 10 steps after it "
    "over the pre-spike mean (median over forks), and the **excess at the end**: the "
    "final validation metric minus that of the unspiked control of the same parent, "
    "seed and clip setting, the mean over the pairs where both ended finite with a 95% t "
    "interval (n pairs). spikes.csv holds the same numbers. — means no value."
)
#: The registered kind of the section's figure (figures/spike_recovery.py).
FIGURE_KIND = "spike_recovery"


@dataclass
class SpikePart:
    """What the report's spike section shows; None from :meth:`of` without spikes."""

    sentences: list[str]
    display: pd.DataFrame
    table: pd.DataFrame  # spikes.csv
    figures: list[FigureResult] = field(default_factory=list)

    @classmethod
    def of(cls, runs_df: pd.DataFrame, cells_df: pd.DataFrame, runs_dir, layout: Layout,
           figures=()) -> SpikePart | None:
        per_run = sp.spike_runs(runs_df, runs_dir)
        if per_run.empty or not (per_run[SPIKE_COLUMN] != NO_SPIKE).any():
            return None
        keys = _keys(cells_df, layout)
        table = sp.cell_table(per_run, cells_df, keys)
        figs = [f if f.task is None else replace(f, title=f"{f.title}: {f.task.label}")
                for f in figures if f.kind == FIGURE_KIND]
        return cls(spike_sentences(table, keys), display(table, keys), table, figs)


def _keys(cells_df: pd.DataFrame, layout: Layout) -> list[str]:
    """The columns that name a row: the context (without the spike), the learning rate
    when it varies, the spike, the clip setting and its facets."""
    ctx = [c for c in layout.context if c != SPIKE_COLUMN and c in cells_df.columns]
    lr = ["optim.lr"] if "optim.lr" in cells_df.columns and \
        cells_df.groupby(ctx, dropna=False)["optim.lr"].nunique().max() > 1 else []
    clip = ["clip.method", "threshold"] + [c for c in layout.facets if c.startswith("clip.")]
    return [*ctx, *lr, SPIKE_COLUMN, *[c for c in clip if c in cells_df.columns]]


def _setting(r: dict, keys) -> str:
    label = fmt.clip_short(r.get("clip.method"), r.get("threshold"))
    extra = [fmt.setting(c, r[c]) for c in keys
             if c.startswith("clip.") and c != "clip.method" and not fmt.is_missing(r.get(c))]
    return ", ".join([label, *extra])


def _context(r: dict, keys) -> str:
    """``SGD on the LSTM``: the context as the Answer names it, without the spike."""
    cols = [c for c in keys if c not in (SPIKE_COLUMN, "threshold")
            and not c.startswith("clip.")]
    return context_name(r, cols)


def _steps(median: object, worst: object) -> str:
    if fmt.is_missing(median):
        return fmt.MISSING
    m = float(median)  # type: ignore[arg-type]
    text = "∞" if math.isinf(m) else f"{m:g}"
    return text if fmt.is_missing(worst) else f"{text} ({float(worst):g})"  # type: ignore[arg-type]


def _n_steps(v: object) -> str:
    """``1 step``, ``13 steps``, ``∞ steps``."""
    text = _steps(v, None)
    return f"{text} step" if text == "1" else f"{text} steps"


def _excess(r: dict) -> str:
    if not r["n_excess"]:
        return fmt.MISSING
    m, lo, hi = r["excess_mean"], r["excess_lo"], r["excess_hi"]
    if fmt.is_missing(lo):
        return f"{m:+.3f} (n {r['n_excess']})"
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}] (n {r['n_excess']})"


def display(table: pd.DataFrame, keys) -> pd.DataFrame:
    rows = []
    for r in table.to_dict("records"):
        n = int(r["n_runs"])
        rows.append({
            "context": _context(r, keys),
            "spike": "none (control)" if r[SPIKE_COLUMN] == NO_SPIKE else r[SPIKE_COLUMN],
            "clip setting": _setting(r, keys),
            "forks": str(n),
            "diverged": f"{int(r['n_diverged'])}/{n}",
            "recovered": f"{int(r['n_recovered'])}/{n}",
            "recovery steps, median (slowest)": _steps(r["recovery_median"],
                                                       r["recovery_max"]),
            "peak ×": fmt.MISSING if fmt.is_missing(r["peak_median"])
            else f"{r['peak_median']:.3g}",
            f"excess at the end, {fmt.metric(r['metric'])} [95% CI]": _excess(r),
        })
    return pd.DataFrame(rows)


def _recovered_all(r: dict) -> bool:
    return int(r["n_diverged"]) == 0 and int(r["n_recovered"]) == int(r["n_runs"])


def spike_sentences(table: pd.DataFrame, keys) -> list[str]:
    """Per context and disturbance: what no clipping did, with which settings every fork
    recovered (fastest first) and with which not (with their counts); then what the
    controls read. "Rescued" is said only where no clipping did not recover every fork."""
    out: list[str] = []
    if table.empty:
        return out
    t = table.copy()
    t["__ctx"] = [_context(r, keys) for r in t.to_dict("records")]
    for ctx, g in t.groupby("__ctx", sort=False):
        for kind, k in g.groupby(SPIKE_COLUMN, sort=False):
            if kind == NO_SPIKE:
                continue
            recs = k.to_dict("records")
            none = [r for r in recs if r.get("clip.method") == "none"]
            head = f"{ctx}, {kind}"
            if none:
                r = none[0]
                head += (f": without clipping {int(r['n_diverged'])} of {int(r['n_runs'])} "
                         f"forks diverged and {int(r['n_recovered'])} recovered")
                if int(r["n_recovered"]):
                    head += f" (median {_n_steps(r['recovery_median'])})"
            ok = sorted((r for r in recs if _recovered_all(r) and r.get("clip.method") != "none"),
                        key=lambda r: r["recovery_median"])
            bad = [r for r in recs if not _recovered_all(r) and r.get("clip.method") != "none"]
            parts = [head]
            verb = "every fork recovered with" if none and _recovered_all(none[0]) \
                else "rescued in every fork by"
            if ok:
                parts.append(f"{verb} " + fmt.join(
                    f"{_setting(r, keys)} ({_n_steps(r['recovery_median'])}, "
                    f"n {int(r['n_runs'])})" for r in ok))
            if bad:
                parts.append(("not with " if verb.startswith("every") else "not by ")
                             + fmt.join(
                    f"{_setting(r, keys)} ({int(r['n_diverged'])}/{int(r['n_runs'])} "
                    f"diverged, {int(r['n_recovered'])}/{int(r['n_runs'])} recovered)"
                    for r in bad))
            out.append("; ".join(parts) + ".")
    ctl = t[t[SPIKE_COLUMN] == NO_SPIKE]
    if not ctl.empty:
        n = int(ctl["n_runs"].sum())
        rec = int(ctl["n_recovered"].sum())
        worst = np.nanmax(ctl["recovery_max"].to_numpy(float)) if rec else math.nan
        out.append(
            f"The unspiked controls, read at their siblings' spike step: {rec} of {n} "
            f"recovered by the criterion, the slowest after {_n_steps(worst)}: the "
            "criterion does not mistake the controls' noise for a spike"
            if rec == n and worst <= sp.WINDOW else
            f"The unspiked controls, read at their siblings' spike step: {rec} of {n} "
            f"recovered by the criterion (slowest {_n_steps(worst)}): the "
            "criterion reads some of their noise as a spike; read recovery with care")
        out[-1] += "."
    return out
