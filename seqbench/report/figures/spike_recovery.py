"""The training loss around a late spike, per clip setting: how far it jumped, how fast
it came back.

Why: the spike table gives recovery as one number per configuration; the curve shows
what that number hides -- a clip setting that never lets the loss jump, one that jumps
and comes back in ten steps, one that drifts back over hundreds. One panel per context
(model, ...) and disturbance, the steps since the spike on x, the loss over its
pre-spike reference on a log y axis, one line per clip setting: the median over its
forks of the 10-step trailing mean (the window the recovery criterion reads), drawn
while at least half of the forks are still running. The dotted line is the recovery
criterion (1 + ``spikes.TOLERANCE``).

Drawn only where some run has a spike (``trainer.spike``); shown in the report's spike
section, not among the task's figures (``sentences.spikes.FIGURE_KIND``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report.figures._common import FigureNotApplicable, Plot, _style
from seqbench.report.figures.registry import FigureInput, register
from seqbench.report.layout import Layout
from seqbench.report.spike_label import NO_SPIKE, SPIKE_COLUMN
from seqbench.report.spikes import TOLERANCE, WINDOW, loss_rows, spike_runs

#: Steps before the spike drawn.
BEFORE = 20


def _context(rec: dict, layout: Layout) -> str:
    parts = [fmt.optimizer(rec["optim.name"])] if "optim.name" in rec else []
    parts += [fmt.setting(c, rec[c]) for c in layout.context
              if c not in ("optim.name", SPIKE_COLUMN) and c in rec
              and not fmt.is_missing(rec[c])]
    return ", ".join(parts)


def spike_figure(runs_df: pd.DataFrame, cells_df: pd.DataFrame, runs_dir,
                 layout: Layout) -> Plot:
    from matplotlib.figure import Figure

    per_run = spike_runs(runs_df, runs_dir)
    if per_run.empty or not (per_run[SPIKE_COLUMN] != NO_SPIKE).any():
        raise FigureNotApplicable("no run has a spike")
    info = cells_df.set_index("cell")
    per_run = per_run[np.isfinite(per_run["reference"].to_numpy(float))]
    losses = loss_rows(runs_dir, per_run["run_dir"])
    rows = []
    for r in per_run.to_dict("records"):
        if str(r["run_dir"]) not in losses:
            continue
        step, values = losses[str(r["run_dir"])]
        loss = pd.Series(values, index=step).sort_index()
        smooth = loss.rolling(WINDOW, min_periods=1).mean() / r["reference"]
        since = smooth.index.to_numpy() - int(r["spike_step"])
        keep = since >= -BEFORE
        c = info.loc[r["cell"]].to_dict()
        rows.append(pd.DataFrame({
            "cell": r["cell"], "run_dir": r["run_dir"], "since": since[keep],
            "ratio": smooth.to_numpy()[keep], SPIKE_COLUMN: r[SPIKE_COLUMN],
            "context": _context(c, layout),
            "setting": fmt.clip_short(c.get("clip.method"), c.get("threshold")) + "".join(
                f", {fmt.setting(k, c[k])}" for k in layout.facets
                if k.startswith("clip.") and not fmt.is_missing(c.get(k)))}))
    data = pd.concat(rows, ignore_index=True)
    spiked = data[data[SPIKE_COLUMN] != NO_SPIKE]
    contexts = list(dict.fromkeys(spiked["context"]))
    kinds = sorted(set(spiked[SPIKE_COLUMN]), key=_kind_order)
    settings = list(dict.fromkeys(data.sort_values("cell")["setting"]))
    n_forks = data.groupby(["context", SPIKE_COLUMN, "setting"])["run_dir"].nunique()
    with _style():
        import seaborn as sns

        colours = dict(zip(settings, sns.color_palette("tab10", len(settings)), strict=True))
        fig = Figure(figsize=(3.2 * len(kinds), 2.7 * len(contexts) + 0.9),
                     layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(contexts), len(kinds), sharex=True,
                                          sharey=True, squeeze=False))
        for i, ctx in enumerate(contexts):
            for j, kind in enumerate(kinds):
                ax = axes[i, j]
                sub = spiked[(spiked["context"] == ctx) & (spiked[SPIKE_COLUMN] == kind)]
                for setting, g in sub.groupby("setting", sort=False):
                    n = n_forks[(ctx, kind, setting)]
                    per_step = g.groupby("since")["ratio"]
                    med = per_step.median()[per_step.count() * 2 >= n]
                    ax.plot(med.index, med.to_numpy(), color=colours[setting], lw=1.1,
                            label=setting)
                ax.axhline(1 + TOLERANCE, color="0.3", lw=0.8, ls=":")
                ax.axvline(0, color="0.6", lw=0.8)
                ax.set_yscale("log")
                ax.set_title(f"{ctx}\n{kind}", fontsize=8.5)
                if j == 0:
                    ax.set_ylabel("train loss / pre-spike mean")
                if i == len(contexts) - 1:
                    ax.set_xlabel("steps since the spike")
        handles = [axes[0, 0].plot([], [], color=colours[s], lw=1.5, label=s)[0]
                   for s in settings]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(settings)),
                   frameon=False, fontsize=7.5)
        fig.suptitle("Training loss around the spike, per clip setting")
    caption = (
        "The training loss over its pre-spike reference (the mean of the 50 steps before "
        f"the spike), as a {WINDOW}-step trailing mean, against the steps since the spike "
        "(log y); one line per clip setting: the median over its forks, drawn while at "
        "least half of them are still running (a diverged fork stops). One panel per "
        "context and disturbance. Dotted: the recovery criterion, "
        f"{1 + TOLERANCE:g}× the reference (a fork has recovered when a {WINDOW}-step mean "
        "after the disturbance is at or below it; the spike table counts them). The "
        "unspiked controls are not drawn: they stay near 1. Not shown: the spread over "
        "forks (the spike table has the counts) and the validation metric.")
    return Plot(fig, data, caption)


def _kind_order(label: str) -> tuple[int, float, str]:
    """Gradient spikes by factor, then learning-rate spikes, corrupted batches, others."""
    if label.startswith("grad ×"):
        try:
            return (0, float(label.split("×")[1].split()[0].rstrip(",")), label)
        except ValueError:
            return (0, 0.0, label)
    return (1 if label.startswith("lr") else 2 if label.startswith("corrupted") else 3,
            0.0, label)


@register("spike_recovery", title="Training loss around the spike")
def build(inp: FigureInput) -> Plot:
    if SPIKE_COLUMN not in inp.runs_df.columns:
        raise FigureNotApplicable("no run has a spike")
    return spike_figure(inp.runs_df, inp.cells_df, inp.runs_dir, inp.layout)
