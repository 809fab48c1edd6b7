"""Steps to a target against learning rate: what a clip setting costs, not just where
it ends.

Why: two settings can end at the same quality after very different amounts of
training, and the final-metric figure cannot show that. One panel per optimizer (and
facet values, as the lr figure), one line per clip setting: the median over seeds of
the steps until the validation metric first reached the target (the ``target`` column
of the cells table: see :mod:`seqbench.report.cost`), where a seed that never reached it
counts as not reached. A configuration whose median run did not reach the target is
drawn on the "not reached" row above the axis, with its k/n; its line breaks there.
Settings at one learning rate are dodged sideways a little, since evaluations every
``eval_every`` steps put many medians on the same value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from seqbench.report import _format as fmt
from seqbench.report.figures._common import FigureSkipped, Plot, _style
from seqbench.report.figures._lr_table import (
    config_facets,
    figure_table,
    line_styles,
    panel_grid,
    panel_title,
)
from seqbench.report.figures.registry import FigureInput, register
from seqbench.report.task_groups import MetricInfo

#: Sideways dodge between settings at one learning rate, in decades of the lr axis.
DODGE = 0.035


def cost_to_target(cells_df: pd.DataFrame, metric: MetricInfo,
                   facets: list[str] | None = None) -> Plot:
    """Median steps to the target vs learning rate; see the module docstring."""
    if "steps_to_target" not in cells_df.columns or cells_df["target"].isna().all():
        raise FigureSkipped("no configuration has a target (no baseline, or no configuration "
                            "without a diverged seed in its context)")
    facets = config_facets(cells_df) if facets is None else list(facets)
    df = figure_table(cells_df, facets)
    df["steps"] = pd.to_numeric(cells_df.loc[df.index, "steps_to_target"], errors="coerce")
    df["reached"] = pd.to_numeric(cells_df.loc[df.index, "n_reached_target"], errors="coerce")
    df = df[(df["n"] > 0) & df["steps"].notna()]
    if df.empty:
        raise FigureSkipped("no configuration with runs has a target")
    styles, order = line_styles(df)
    grid = panel_grid(df)
    finite = df.loc[np.isfinite(df["steps"]), "steps"]
    top = float(finite.max()) if len(finite) else 1.0
    miss_y = top * 1.12
    rows: list[dict] = []
    with _style():
        fig = Figure(figsize=(grid.ncols * 3.6 + 2.2, grid.nrows * 2.9 + 0.7),
                     layout="constrained")
        axes = fig.subplots(grid.nrows, grid.ncols, squeeze=False, sharey=True)
        for i, (opt, frow) in enumerate(grid.slots):
            ax = axes.flat[i]
            sub = df[(df["optim"] == opt) & (df["facet"] == frow)]
            labels = [lab for lab in order if (sub["label"] == lab).any()]
            for j, lab in enumerate(labels):
                s = sub[sub["label"] == lab].sort_values("lr")
                shift = 10 ** (DODGE * (j - (len(labels) - 1) / 2))
                x = s["lr"].to_numpy(dtype=float) * shift
                y = s["steps"].to_numpy(dtype=float)
                colour, marker = styles[lab]
                ok = np.isfinite(y)
                ax.plot(x, np.where(ok, y, np.nan), color=colour, marker=marker, ms=4.5,
                        lw=1.4)
                ax.plot(x[~ok], np.full((~ok).sum(), miss_y), ls="none", marker="x",
                        color=colour, ms=5.5, mew=1.5)
                for rec in s.to_dict("records"):
                    rows.append({"optimizer": opt, **dict(zip(facets, frow, strict=True)),
                                 "clip": lab, "lr": rec["lr"], "steps": rec["steps"],
                                 "reached": rec["reached"], "n": rec["n"]})
            lrs = sorted(sub["lr"].unique())
            ax.set_xscale("log")
            ax.set_xticks(lrs, labels=[fmt.lr(v) for v in lrs])
            ax.xaxis.set_minor_locator(NullLocator())
            if len(lrs) > 5:
                for t in ax.get_xticklabels():
                    t.set_rotation(40)
                    t.set_horizontalalignment("right")
            ax.set_title(panel_title(opt, facets, frow), fontsize=9)
            ratio = (lrs[-1] / lrs[0]) ** 0.08 if lrs[-1] > lrs[0] else 1.8
            ax.set_xlim(lrs[0] / ratio, lrs[-1] * ratio)
            ax.axhline(miss_y, color="0.6", lw=0.6, ls=":")
            if i % grid.ncols == 0:
                ax.set_ylabel("steps to target\n(median over seeds)")
            if i >= len(grid.slots) - grid.ncols:
                ax.set_xlabel("learning rate (log scale)")
        for k in range(len(grid.slots), grid.nrows * grid.ncols):
            axes.flat[k].set_visible(False)
        ax0 = axes.flat[0]
        ax0.set_ylim(0, miss_y * 1.08)
        ticks = [t for t in ax0.get_yticks() if 0 <= t <= top]
        ax0.set_yticks([*ticks, miss_y], labels=[fmt.num(t) for t in ticks] + ["not\nreached"])
        handles = [Line2D([], [], color=styles[lab][0], marker=styles[lab][1], ms=4.5,
                          lw=1.4, label=lab) for lab in order]
        handles.append(Line2D([], [], ls="none", marker="x", color="0.3", ms=5.5, mew=1.5,
                              label="median run did not\nreach the target"))
        fig.legend(handles=handles, loc="outside right upper", title="clip setting",
                   fontsize=7.5, title_fontsize=8, frameon=False)
        fig.suptitle(f"Steps until the validation {metric.label} first reached the target")
    data = pd.DataFrame(rows)
    n_miss = int((~np.isfinite(data["steps"])).sum()) if len(data) else 0
    targets = sorted({round(float(t), 4) for t in cells_df["target"].dropna()})
    shown = (fmt.num(targets[0]) if len(targets) == 1
             else f"{len(targets)} targets, {fmt.num(targets[0])}–{fmt.num(targets[-1])}")
    caption = (
        f"Median over seeds of the training steps until the validation {metric.label} "
        f"first reached the target ({shown} {metric.unit}; by default 90% of the way from "
        "the baseline to the best configuration of the same optimizer and model, see the "
        "cells table's target column), against the learning rate; one panel per optimizer"
        f"{' and ' + ', '.join(facets) if facets else ''}, one line per clip setting, "
        "dodged sideways at each lr so equal medians stay visible. A seed that never "
        "reached the target, or diverged, counts as not reached, never as a number; "
        f"{n_miss} configuration{'s' if n_miss != 1 else ''} whose median seed did not "
        "reach it sit on the 'not reached' row. Validation runs every trainer.eval_every "
        "steps, so a value is the first evaluation past the target and the crossing lies "
        "within the interval before it. Not shown: seconds and tokens (in the cells "
        "table), and how far past the target a run went.")
    return Plot(fig, data, caption, {lab: styles[lab][0] for lab in order})


@register("cost_to_target", title=lambda metric: "Steps to the target vs learning rate")
def build(inp: FigureInput) -> Plot:
    return cost_to_target(inp.cells_df, inp.metric, list(inp.layout.facets))
