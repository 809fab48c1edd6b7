"""Stability map: which (learning rate, sequence length) pairs train, per setting.

Why: the length of back-propagation is the axis seqbench's question is about. One panel
per optimizer and clip setting (and any other setting that tells cells apart); x is the
learning rate and y the length, each square coloured by the fraction of seeds that
trained (for a task with a success criterion, that met it), with k/n written in it.
Squares where a seed diverged are hatched and count the diverged seeds, so a diverged
cell never looks like a no-progress one; squares not run stay blank, never zero.
Drawn only when the runs vary a length key (``task.seq_len`` or ``task.length``).
"""

from __future__ import annotations

import math
import textwrap

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from seqbench.report import _format as fmt
from seqbench.report.figures._common import FigureNotApplicable, Plot, _style
from seqbench.report.figures.registry import FigureInput, register
from seqbench.report.length import LENGTH, has_length_axis, named_columns, with_length

MAX_PANELS = 24


def panel_title(rec: dict, cols: list[str]) -> str:
    parts = []
    for c in cols:
        v = rec.get(c)
        if c == "optim.name":
            parts.append(fmt.optimizer(v))
        elif c == "clip.method":
            clip = fmt.clip_short(v, rec.get("threshold"))
            parts.append("no clipping" if clip == "none" else clip)
        elif c == "threshold" or fmt.is_missing(v):
            continue
        else:
            parts.append(fmt.setting(c, v).replace("model.cell=", ""))
    return textwrap.fill(" · ".join(parts), 30)


def stability_map(cells_df: pd.DataFrame) -> Plot:
    if not has_length_axis(cells_df):
        raise FigureNotApplicable("the runs do not vary a sequence length")
    df = with_length(cells_df[cells_df["n"] > 0])
    df = df[df[LENGTH].notna()]
    success = "n_success_trials" in df and pd.to_numeric(
        df["n_success_trials"], errors="coerce").notna().any()
    k_col, n_col = ("n_success", "n_success_trials") if success else ("n_trained", "n")
    what = "met the success criterion" if success else "trained"
    named = named_columns(cells_df)
    keys = [c for c in named if c in df.columns]
    panels = list(df.astype({k: object for k in keys}).groupby(keys, dropna=False, sort=False))
    omitted = max(0, len(panels) - MAX_PANELS)
    panels = panels[:MAX_PANELS]
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    lrs_all = sorted(pd.to_numeric(df["optim.lr"], errors="coerce").dropna().unique())
    lens_all = sorted(df[LENGTH].unique())
    cmap = mpl.colormaps["RdYlGn"]
    norm = Normalize(0.0, 1.0)
    rows = []
    with _style():
        width = ncols * max(3.2, 0.55 * len(lrs_all) + 1.2) + 1.4
        height = nrows * max(2.4, 0.42 * len(lens_all) + 1.2) + 1.0
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, (_, sub) in zip(axes, panels, strict=False):
            rec0 = sub.iloc[0].to_dict()
            title = panel_title(rec0, named)
            lrs = sorted(pd.to_numeric(sub["optim.lr"], errors="coerce").dropna().unique())
            lens = sorted(sub[LENGTH].unique())
            ax.set_xlim(0, len(lrs))
            ax.set_ylim(0, len(lens))
            ax.set_facecolor("white")
            ax.grid(False)
            for rec in sub.to_dict("records"):
                n = pd.to_numeric(rec.get(n_col), errors="coerce")
                k = pd.to_numeric(rec.get(k_col), errors="coerce")
                d = int(rec["n_diverged"])
                j, i = lrs.index(float(rec["optim.lr"])), lens.index(rec[LENGTH])
                frac = float(k) / float(n) if n and not math.isnan(n) else math.nan
                color = cmap(norm(frac)) if not math.isnan(frac) else (0.9, 0.9, 0.9, 1)
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor=color, edgecolor="white",
                                       linewidth=1.5, hatch="xx" if d else None))
                text = f"{int(k)}/{int(n)}" if not math.isnan(frac) else fmt.MISSING
                if d:
                    text += f"\n{d} div."
                ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=7.5,
                        color="black",
                        bbox={"facecolor": "white", "alpha": 0.6, "pad": 1,
                              "linewidth": 0} if d else None)
                rows.append({"panel": title, "optim.lr": float(rec["optim.lr"]),
                             "length": float(rec[LENGTH]), "k": k, "n": n,
                             "fraction": frac, "n_diverged": d})
            ax.set_xticks(np.arange(len(lrs)) + 0.5, [fmt.lr(x) for x in lrs])
            ax.set_yticks(np.arange(len(lens)) + 0.5, [f"{x:,.0f}" for x in lens])
            ax.set_xlabel("learning rate (optim.lr)")
            ax.set_ylabel("sequence length")
            ax.set_title(title)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=list(axes[: len(panels)]), shrink=0.8,
                     label=textwrap.fill(f"fraction of seeds that {what}", 28))
        fig.legend(handles=[Patch(facecolor="white", edgecolor="grey", hatch="xx",
                                  label="a seed diverged (count written)")],
                   loc="outside lower center", frameon=False)
        more = f" ({omitted} more panels not shown)" if omitted else ""
        fig.suptitle(f"Which learning rates train at which sequence length{more}")
    caption = (
        f"Each square is one learning rate (x) and sequence length (y): its colour is the "
        f"fraction of seeds that {what}, and k/n writes it out. Hatched squares had a seed "
        "diverge (the count is written), so they are told apart from runs that finished "
        "without learning. Blank: that pair was not run. Lengths and learning rates are "
        "grid points, so a boundary lies somewhere between two squares."
    )
    return Plot(fig, pd.DataFrame(rows), caption)


@register("stability_map", title="Stability map: learning rate against sequence length")
def build(inp: FigureInput) -> Plot:
    return stability_map(inp.cells_df)
