"""Validation curves per seed, setting by length: where a run learned and then collapsed.

Why: a mean over seeds hides the signature of an exploding gradient -- one seed that
learned the task and then fell back to chance. On a length sweep of a task with a
success criterion (the synthetic tasks), each panel is one setting and learning rate
(rows) at one length (columns), with one line per seed: the validation metric at every
evaluation, the baseline dashed. A seed that diverged ends where its line stops, marked
with an x. Drawn only for length sweeps with a success criterion, at most 12 rows.
"""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

from seqbench.report import _format as fmt
from seqbench.report.collect import load_curves
from seqbench.report.figures._common import FigureNotApplicable, FigureSkipped, Plot, _style
from seqbench.report.figures.registry import FigureInput, register
from seqbench.report.figures.stability_map import panel_title
from seqbench.report.length import LENGTH, has_length_axis, named_columns, with_length
from seqbench.report.stats import threshold
from seqbench.rundir import TERMINAL

MAX_ROWS = 12


def seed_curves(runs_df: pd.DataFrame, cells_df: pd.DataFrame, runs_dir, metric) -> Plot:
    if not has_length_axis(cells_df):
        raise FigureNotApplicable("the runs do not vary a sequence length")
    if not ("task_success" in runs_df and runs_df["task_success"].notna().any()):
        raise FigureNotApplicable("no success criterion: the stability map says it")
    runs = with_length(runs_df[runs_df["status"].astype(object).isin(TERMINAL)])
    runs["threshold"] = threshold(runs)
    named = [c for c in named_columns(cells_df) if c in runs.columns]
    rows_keys = [*named, "optim.lr"]
    groups = list(runs.astype({k: object for k in rows_keys}).groupby(rows_keys, dropna=False,
                                                                       sort=False))
    if len(groups) > MAX_ROWS:
        raise FigureSkipped(f"{len(groups)} settings and learning rates; at most {MAX_ROWS} "
                            "rows of per-seed curves are drawn")
    lengths = sorted(runs[LENGTH].dropna().unique())
    curves = load_curves(runs_dir, runs["run_dir"], ["val_metric"])
    curves = curves[curves["val_metric"].notna()]
    data = []
    with _style():
        fig = Figure(figsize=(3.0 * len(lengths) + 0.6, 1.9 * len(groups) + 1.0),
                     layout="constrained")
        axes = fig.subplots(len(groups), len(lengths), squeeze=False, sharex=True, sharey=True)
        for i, (_, g) in enumerate(groups):
            rec = g.iloc[0].to_dict()
            label = f"{panel_title(rec, named)}, lr {fmt.lr(rec['optim.lr'])}"
            for j, L in enumerate(lengths):
                ax = axes[i, j]
                sub = g[g[LENGTH] == L]
                for r in sub.to_dict("records"):
                    c = curves[curves["run_dir"] == r["run_dir"]]
                    ax.plot(c["step"], c["val_metric"], lw=1.0, alpha=0.85)
                    if r["status"] == "diverged":
                        ax.plot(c["step"].tail(1), c["val_metric"].tail(1), "kx")
                    data.append(c.assign(row=label, length=L, seed=r.get("seed")))
                # each length has its own baseline (the validation sequences differ)
                base = pd.to_numeric(sub.get("baseline_val_metric"), errors="coerce").median() \
                    if not sub.empty else math.nan
                if not math.isnan(base):
                    ax.axhline(base, color="grey", ls="--", lw=0.8)
                if i == 0:
                    ax.set_title(f"length {L:,.0f}")
                if j == 0:
                    ax.set_ylabel(label, fontsize=7.5)
                if sub.empty:
                    ax.text(0.5, 0.5, "not run", ha="center", va="center",
                            transform=ax.transAxes, color="grey")
        for ax in axes[-1]:
            ax.set_xlabel("optimizer step")
        fig.suptitle(f"Validation {metric.label} per seed over training (dashed: baseline)")
    caption = (
        f"One line per seed: the validation {metric.label} at each evaluation, for every "
        "setting and learning rate (rows) at every length (columns). The dashed line is the "
        "task's input-independent baseline (chance). A line that drops and climbs back to "
        "the baseline is a run that learned and then lost it; x marks where a run diverged."
    )
    frame = pd.concat(data, ignore_index=True) if data else pd.DataFrame()
    return Plot(fig, frame, caption)


@register("seed_curves", title=lambda m: f"Validation {m.label} per seed, by length")
def build(inp: FigureInput) -> Plot:
    return seed_curves(inp.runs_df, inp.cells_df, inp.runs_dir, inp.metric)

