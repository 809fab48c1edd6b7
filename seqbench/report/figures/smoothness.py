"""L̂ against ‖∇f‖ along training: the smoothness probe's points (Zhang et al. 2020, Fig. 1).

Why: Zhang, He, Sra & Jadbabaie (ICLR 2020) showed, by plotting the local smoothness
against the gradient norm along one LSTM's training, that the two grow together -- the
observation behind (L0, L1)-smoothness and their case for clipping. This figure is that
plot for every configuration of a sweep with ``trainer.smoothness_every=N``: one panel
per configuration (the seeds of one configuration pooled, so a panel is never two
experiments and never one seed picked out), log-log axes, the points coloured by the
training step, so a trajectory reads from dark (early) to light (late). The dashed curve
is the Theil–Sen fit L0 + L1·‖∇f‖ with the median L0 and L1 over the configuration's runs
(the numbers of the smoothness table). Each panel has axes of its own: one exploding seed
spans three decades where the others stay within half of one, and shared axes would
squash every other panel of its model into a corner (the numbers to compare across
panels are in the smoothness table).

Drawn only for runs that carry the probe (summary.json ``smoothness``); otherwise the
figure is not applicable and the report reads as before. It is shown in the report's
smoothness section, not among the task's figures (``sentences.smoothness.FIGURE_KIND``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from seqbench.report import _format as fmt
from seqbench.report.figures._common import FigureNotApplicable, FigureSkipped, Plot, _style
from seqbench.report.figures._heatmap import MAX_PANELS
from seqbench.report.figures._lr_table import panel_title
from seqbench.report.figures.registry import FigureInput, register
from seqbench.report.layout import Layout
from seqbench.report.smoothness import (
    cell_table,
    probe_runs,
    read_probes,
    setting_keys,
)
from seqbench.report.tables import row_key

#: Points drawn per panel at most (evenly spaced over the panel's probes, for drawing
#: only; every number in a table comes from the summaries, not from these).
MAX_POINTS = 4000
_CMAP = "viridis"
#: The narrowest span of an axis, in decades.
MIN_DECADES = 1.0


def _grid(groups: list[int]) -> int:
    """Columns: the panels per (context, clip setting) when every one has as many (a row
    per setting, a column per learning rate), else 3 or 4, whichever leaves fewer empty
    places after the last panel."""
    n = sum(groups)
    if len(set(groups)) == 1 and groups[0] <= 5:
        return groups[0]
    if n <= 4:
        return max(n, 1)
    return min((4, 3), key=lambda c: -n % c)


def _limits(x: np.ndarray, y: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Log-axis limits: the data with a margin of a tenth of its span, and at least one
    decade (so that ticks at 1, 2, 5 x 10^k always fall inside, and a tight cluster
    reads as tight instead of filling the panel)."""
    out = []
    for v in (x, y):
        lo, hi = math.log10(float(v.min())), math.log10(float(v.max()))
        pad = max(0.1 * (hi - lo), (MIN_DECADES - (hi - lo)) / 2)
        out.append((10 ** (lo - pad), 10 ** (hi + pad)))
    return out[0], out[1]


def smoothness_figure(runs_df: pd.DataFrame, cells_df: pd.DataFrame, runs_dir,
                      layout: Layout) -> Plot:
    probe = probe_runs(runs_df, runs_dir)
    if probe.empty:
        raise FigureNotApplicable("no run carries the smoothness probe")
    pts = read_probes(runs_dir, list(probe.runs.loc[probe.runs["n_used"] > 0, "run_dir"]))
    if not len(pts.run):
        raise FigureSkipped(f"none of the {len(probe.runs)} runs with the probe recorded a "
                            "usable probe (every one diverged before its first probe)")
    cell_of = probe.runs.set_index("run_dir")["cell"]
    cell = np.asarray([int(cell_of[r]) for r in pts.ids])[pts.run]
    table = cell_table(probe, cells_df, layout).set_index("cell")
    keys = setting_keys(cells_df, layout)
    ctx = [c for c in layout.context if c in keys]
    facets = [c for c in layout.facets if c in ctx and c != "optim.name"]
    recs = {int(r["cell"]): r for r in cells_df.to_dict("records")}
    has = set(np.unique(cell).tolist())
    order = [int(c) for c in table.index if int(c) in has]  # the smoothness table's order
    empty = [int(c) for c in table.index if int(c) not in has]
    shown, left_out = order[:MAX_PANELS], len(order) - min(len(order), MAX_PANELS)
    setting = [(*row_key(recs[c], ctx), recs[c].get("clip.method"), recs[c].get("threshold"))
               for c in shown]
    ncols = _grid(list(pd.Series(setting, dtype=object).value_counts(sort=False)))
    nrows = math.ceil(len(shown) / ncols)
    norm = Normalize(0, float(pts.step.max()))
    cmap = colormaps[_CMAP]
    rows: list[pd.DataFrame] = []
    thinned = 0
    with _style():
        fig = Figure(figsize=(ncols * 3.0 + 1.3, nrows * 2.75 + 0.9), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for i, c in enumerate(shown):
            ax, rec = axes.flat[i], recs[c]
            sel = np.flatnonzero(cell == c)
            sel = sel[np.argsort(pts.step[sel], kind="stable")]  # late points on top
            if len(sel) > MAX_POINTS:
                thinned += 1
                sel = sel[np.linspace(0, len(sel) - 1, MAX_POINTS).round().astype(int)]
            x, y, s = pts.grad[sel], pts.smooth[sel], pts.step[sel]
            ax.scatter(x, y, c=s, cmap=cmap, norm=norm, s=6, alpha=0.7, linewidths=0)
            xl, yl = _limits(pts.grad[cell == c], pts.smooth[cell == c])
            t = table.loc[c]
            if not (fmt.is_missing(t["L0_median"]) or fmt.is_missing(t["L1_median"])):
                gx = np.geomspace(float(x.min()), float(x.max()), 200)  # no extrapolation
                gy = t["L0_median"] + t["L1_median"] * gx
                ax.plot(gx, np.where(gy > 0, gy, np.nan), color="0.15", lw=1.1, ls="--")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlim(*xl)
            ax.set_ylim(*yl)
            for axis, (lo, hi) in ((ax.xaxis, xl), (ax.yaxis, yl)):  # 0.2, 0.5, 1: no 2×10⁻¹
                subs = (1.0, 2.0, 5.0) if math.log10(hi / lo) <= 2.2 else (1.0,)
                axis.set_major_locator(LogLocator(base=10, subs=subs))
                axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                axis.set_minor_formatter(NullFormatter())
            head = panel_title(rec.get("optim.name"), facets, row_key(rec, facets))
            ax.set_title(f"{head}\n{fmt.clip_short(rec.get('clip.method'), rec.get('threshold'))}"
                         f" · lr {fmt.lr(rec.get('optim.lr'))}", fontsize=9)
            rho = "" if fmt.is_missing(t["rho_mean"]) else f"\nmean ρ {t['rho_mean']:.2f}"
            ax.text(0.03, 0.97, f"runs {int(t['n_probed'])}/{int(t['n_runs'])} · "
                    f"{_probes(int((cell == c).sum()))}{rho}", transform=ax.transAxes,
                    va="top", ha="left", fontsize=7,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none",
                          "alpha": 0.75})
            if i % ncols == 0:
                ax.set_ylabel("L̂ (smoothness along the update)")
            if i >= len(shown) - ncols:
                ax.set_xlabel("‖∇f‖ on the probe batch")
            rows.append(pd.DataFrame({"cell": c, "run_dir": np.asarray(pts.ids)[pts.run[sel]],
                                      "step": s, "probe_grad_norm": x, "smoothness": y}))
        for k in range(len(shown), nrows * ncols):
            axes.flat[k].set_visible(False)
        fig.colorbar(ScalarMappable(norm, cmap), ax=axes[:, -1].tolist(), label="training step",
                     shrink=min(1.0, 2.5 / nrows) if nrows > 1 else 1.0)
        fit = Line2D([], [], color="0.15", lw=1.1, ls="--",
                     label="L0 + L1·‖∇f‖ (Theil–Sen,\nmedian over runs)")
        fig.legend(handles=[fit], loc="outside lower center", frameon=False, fontsize=7.5)
        fig.suptitle("Local smoothness L̂ against the gradient norm along training")
    return Plot(fig, pd.concat(rows, ignore_index=True),
                _caption(layout, pts.n_dropped, empty, recs, left_out, thinned))


def _caption(layout: Layout, dropped: int, empty: list[int], recs: dict, left_out: int,
             thinned: int) -> str:
    text = (
        "L̂ = ‖∇f(x+½Δ) − ∇f(x)‖ / ‖½Δ‖, the local smoothness along the update Δ, against "
        "‖∇f‖, the gradient norm, both on the fixed probe batch, at every probe "
        "(trainer.smoothness_every steps), log scales; one panel per configuration, every "
        "seed of it pooled, points coloured by the training step (dark early, light late). "
        "Each panel has its own axes (read the ticks). Dashed, over the range of ‖∇f‖ drawn: "
        "L0 + L1·‖∇f‖ with the median over the configuration's runs of each run's Theil–Sen "
        "L0 and L1 (the smoothness table). "
        "Zhang et al. (2020) found L̂ rising with ‖∇f‖ on LSTM language models: points "
        "along a rising diagonal. In each panel: runs with a usable probe / runs with the "
        "probe, probes drawn, the mean ρ over runs. Runs that completed or diverged only. "
        f"{dropped} probe{'s' if dropped != 1 else ''} with a non-finite or non-positive "
        "L̂ or ‖∇f‖ (a skipped update, an overflow) "
        f"{'are' if dropped != 1 else 'is'} not drawn.")
    if empty:
        names = "; ".join(_name(recs[c], layout.facets) for c in empty)
        text += (f" No panel for {len(empty)} configuration{'s' if len(empty) != 1 else ''} "
                 f"without a usable probe (every run diverged before its first): {names}.")
    if left_out:
        text += f" {left_out} configurations beyond the first {MAX_PANELS} are not drawn."
    if thinned:
        text += (f" {thinned} panel{'s' if thinned != 1 else ''} with more than {MAX_POINTS} "
                 f"probes show{'s' if thinned == 1 else ''} {MAX_POINTS} evenly spaced ones.")
    return text + (" Not shown: which seed a point belongs to, and the time order except "
                   "through the colour.")


def _probes(n: int) -> str:
    return f"{n} probe{'s' if n != 1 else ''}"


def _name(rec: dict, facets) -> str:
    """``SGD · tanh RNN · none · lr 2``: a configuration without a panel, in the caption."""
    parts = [fmt.optimizer(rec.get("optim.name"))] if "optim.name" in rec else []
    parts += [fmt.setting(c, rec[c]) for c in facets if not fmt.is_missing(rec.get(c))]
    parts.append(fmt.clip_short(rec.get("clip.method"), rec.get("threshold")))
    parts.append(f"lr {fmt.lr(rec.get('optim.lr'))}")
    return " · ".join(parts)


@register("smoothness", title="Local smoothness against the gradient norm")
def build(inp: FigureInput) -> Plot:
    return smoothness_figure(inp.runs_df, inp.cells_df, inp.runs_dir, inp.layout)
