"""Gradient-norm spikes against sequence length.

Why: gradients explode in recurrent nets because back-propagation multiplies Jacobians
over time steps, so the question a length sweep asks first is whether the spikes grow
with length, and how fast. One panel per optimizer and clip setting (and any other
setting that tells cells apart): x is the length (log scale), y how far each run's 99th
percentile pre-clip gradient norm sits above its median (median over runs), one line per
learning rate. Drawn only when the runs vary a length key.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from seqbench.report import _format as fmt
from seqbench.report.figures._common import FigureNotApplicable, Plot, _obj, _style
from seqbench.report.figures.registry import FigureInput, register
from seqbench.report.figures.stability_map import MAX_PANELS, panel_title
from seqbench.report.length import LENGTH, grad_norms_by_length, has_length_axis, named_columns


def grad_norm_length(runs_df: pd.DataFrame, cells_df: pd.DataFrame) -> Plot:
    if not has_length_axis(cells_df):
        raise FigureNotApplicable("the runs do not vary a sequence length")
    g = grad_norms_by_length(runs_df, cells_df)
    g = g[g["p99_over_median"].notna()]
    if g.empty:
        raise FigureNotApplicable("no run recorded gradient norms")
    named = [c for c in named_columns(cells_df) if c in g.columns]
    panels = list(g.astype({k: object for k in named}).groupby(named, dropna=False, sort=False))
    panels = panels[:MAX_PANELS]
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    lrs = sorted(g["optim.lr"].dropna().unique())
    palette = dict(zip([fmt.lr(x) for x in lrs], sns.color_palette("viridis", len(lrs))))
    data = []
    with _style():
        fig = Figure(figsize=(ncols * 3.4 + 1.6, nrows * 2.7 + 0.8), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False, sharey=True)).ravel()
        for ax, (_, sub) in zip(axes, panels, strict=False):
            title = panel_title(sub.iloc[0].to_dict(), named)
            sub = sub.assign(lr=_obj(sub["optim.lr"].map(fmt.lr)))
            order = [fmt.lr(x) for x in lrs if fmt.lr(x) in set(sub["lr"])]
            sns.lineplot(sub, x=LENGTH, y="p99_over_median", hue="lr", hue_order=order,
                         palette={k: palette[k] for k in order}, marker="o", ax=ax,
                         legend=False)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            lengths = sorted(sub[LENGTH].unique())
            ax.set_xticks(lengths, [f"{x:,.0f}" for x in lengths])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_title(title)
            ax.set_xlabel("sequence length")
            ax.set_ylabel("p99 / median of the\npre-clip gradient norm")
            data.append(sub.assign(panel=title))
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        handles = [Line2D([], [], color=c, marker="o", label=f"lr {k}")
                   for k, c in palette.items()]
        fig.legend(handles=handles, loc="outside right center", frameon=False)
        fig.suptitle("How far gradient-norm spikes reach above a typical step, by length")
    caption = (
        "For each run, the 99th percentile of its pre-clip global gradient norm over its "
        "finite steps divided by its median; the median of that ratio over the runs of a "
        "setting, learning rate and length (runs that completed or diverged). A rising line "
        "means the rare large steps grow with the length of back-propagation."
    )
    return Plot(fig, pd.concat(data, ignore_index=True), caption)


@register("grad_norm_length", title="Gradient-norm spikes against sequence length")
def build(inp: FigureInput) -> Plot:
    return grad_norm_length(inp.runs_df, inp.cells_df)
