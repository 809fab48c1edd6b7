"""Final validation metric against learning rate: the figure a reader looks for first.

Why: "how good does it get, at which learning rate, with which clip setting" in one
look. One panel per optimizer, one line per clip setting, the learning rate on a log
axis with the grid's values as ticks. Config keys that distinguish cells beyond
(optimizer, clip setting, lr) - a sweep over model sizes - get a row of panels each:
different configurations are never averaged into one point.

A point is a configuration's mean over its completed runs, with its 95% t interval and
its n. Diverged runs have no value: they are counted (``k/n``) in a shaded band at the
top of the panel, drawn in axes coordinates - never at a y value - and a configuration
whose runs all diverged has no point, only its count; its line breaks there. The dashed
line is the task's input-independent baseline (``baseline_val_metric``, e.g. unigram
frequencies for text): a mean on the wrong side of it learned nothing.

Drawn from the cells table only (one row per configuration), with plain matplotlib
calls (no seaborn ``hue``, so the pandas 3 grouping bug cannot mis-assign rows): cheap
on 1,000-run sweeps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from seqbench.report import _format as fmt
from seqbench.report.figures._common import FigureSkipped, Plot, _log_worthy, _style
from seqbench.report.figures._lr_marks import (
    BASELINE_COLOR,
    DIVERGED_MARKER,
    NLabel,
    YAxis,
    draw_band,
    draw_baselines,
    draw_diverged,
    draw_error_bars,
    draw_n_labels,
    draw_no_values_note,
    y_ticks,
)
from seqbench.report.figures._lr_table import (
    Baselines,
    Grid,
    Style,
    baseline_label,
    config_facets,
    figure_table,
    line_styles,
    panel_baselines,
    panel_grid,
    panel_title,
    setting_styles,
    shared_y_axis,
    write_caption,
)
from seqbench.report.figures.registry import FigureInput, register
from seqbench.report.task_groups import MetricInfo, metric_of

DIVERGED_LEGEND = "diverged runs, k/n\n(top band; not a value)"

#: The names the package and its tests use (some are defined in the helper modules).
__all__ = [
    "BASELINE_COLOR",
    "DIVERGED_LEGEND",
    "DIVERGED_MARKER",
    "build",
    "lr_curves",
    "setting_styles",
]


@dataclass(frozen=True)
class _Frame:
    """What every panel shares: the lines and their styles, the y axis, the baselines."""

    facets: list[str]
    styles: dict[str, Style]
    order: list[str]
    y: YAxis
    base: Baselines
    metric: MetricInfo
    cap: float | None = None  # the worse edge of the informative range; None: no edge


def lr_curves(cells_df: pd.DataFrame, metric: MetricInfo | None = None,
              facets: Sequence[str] | None = None) -> Plot:
    """Final validation metric vs learning rate: one panel per optimizer, a line per clip setting.

    See the module docstring. ``metric`` defaults to the one metric of ``cells_df``;
    ``baseline_val_metric`` is optional (no dashed line without it, and the caption says
    so). ``facets``: the layout's (:func:`config_facets` of ``cells_df`` when not given).
    Raises :class:`FigureSkipped` without learning rates or runs with a verdict.
    """
    if cells_df.empty or "n" not in cells_df.columns:
        raise FigureSkipped("no configuration has any run")
    if "optim.lr" not in cells_df.columns:
        raise FigureSkipped("runs have no optim.lr in their config")
    metric = metric or metric_of(cells_df)
    facets = config_facets(cells_df) if facets is None else list(facets)
    df = figure_table(cells_df, facets)
    styles, order = line_styles(df)
    grid = panel_grid(df)
    # the y axis is shared by every panel of the task: its values first
    # with the baseline: means far below it (an MSE of 16 against 26,213) sit on the
    # floor of a linear axis, indistinguishable
    shown = df[df["n"] > 0]
    log = _log_worthy(np.concatenate([shown["mean"].to_numpy(dtype=float),
                                      shown["baseline"].to_numpy(dtype=float)]))
    base = panel_baselines(df, grid, log)
    cap = informative_edge(shown, base.drawn, metric, log)
    fr = _Frame(facets, styles, order, shared_y_axis(_capped(df, cap, metric), grid, base, log),
                base, metric, cap)
    fig, rows, cut = _draw(df, grid, fr)
    caption = write_caption(df, metric, facets, fr.y, base, cut, grid.omitted)
    beyond = int(sum(r["beyond"] for r in rows))
    if beyond:
        side = "above" if metric.lower_is_better else "below"
        caption += (f" The y axis spans the informative range, from the best mean to a "
                    f"quarter of the best-to-baseline distance past the baseline; {beyond} "
                    f"mean{'s' if beyond != 1 else ''} {side} it "
                    f"{'are' if beyond != 1 else 'is'} drawn at the edge as a triangle, "
                    "with its value written.")
    return Plot(fig, pd.DataFrame(rows), caption, {lab: styles[lab][0] for lab in order})


#: How far past the baseline the y axis reaches, as a fraction of the best-to-baseline
#: distance: far enough to see a mean sit on the baseline, not so far that the
#: differences between good settings (2.41 against 2.53 bits/char) flatten to the floor.
PAST_BASELINE = 0.25


def informative_edge(shown: pd.DataFrame, baselines: Sequence[float], metric: MetricInfo,
                     log: bool) -> float | None:
    """The worse edge of the y range: the baseline plus PAST_BASELINE of the way from the
    best mean to it (in the drawn scale); None without a baseline or a mean better than it,
    or when every mean fits anyway."""
    means = shown["mean"].to_numpy(dtype=float)
    means = means[np.isfinite(means) & ((means > 0) if log else True)]
    base = [b for b in baselines if np.isfinite(b) and (b > 0 or not log)]
    if not len(means) or not base:
        return None
    t, inv = (np.log10, lambda v: 10.0**v) if log else (float, float)
    lower = metric.lower_is_better
    best = float(means.min() if lower else means.max())
    worst_base = max(base) if lower else min(base)
    if (worst_base <= best) if lower else (worst_base >= best):
        return None
    edge = float(inv(t(worst_base) + PAST_BASELINE * (t(worst_base) - t(best))))
    worst = float(means.max() if lower else means.min())
    return None if ((worst <= edge) if lower else (worst >= edge)) else edge


def _capped(df: pd.DataFrame, cap: float | None, metric: MetricInfo) -> pd.DataFrame:
    """The table the y axis is computed from: means and intervals held to the edge."""
    if cap is None:
        return df
    out = df.copy()
    for c in ("mean", "lo", "hi"):
        out[c] = out[c].clip(upper=cap) if metric.lower_is_better else out[c].clip(lower=cap)
    return out


def _beyond(y: np.ndarray, fr: _Frame) -> np.ndarray:
    if fr.cap is None:
        return np.zeros(len(y), dtype=bool)
    return (y > fr.cap) if fr.metric.lower_is_better else (y < fr.cap)


def _draw(df: pd.DataFrame, grid: Grid, fr: _Frame) -> tuple[Figure, list[dict], bool]:
    """The figure, its data rows (one per point drawn), and whether an interval was cut."""
    rows: list[dict] = []
    used: list[str] = []
    cut = False
    ncols, nrows = grid.ncols, grid.nrows
    base_label = baseline_label(fr.metric, fr.base.values)
    with _style():
        fig = Figure(figsize=_figsize(df, grid, fr, base_label), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        axes[0, 0].set_ylim(fr.y.bottom, fr.y.top)
        if fr.y.log and fr.y.has_values:
            axes[0, 0].set_yscale("log")
        for i, slot in enumerate(grid.slots):
            r, c = divmod(i, ncols)
            ax = axes[r, c]
            if slot is None:
                ax.set_visible(False)
                continue
            opt, frow = slot
            below = grid.slots[i + ncols] if i + ncols < len(grid.slots) else None
            sub = df[(df["optim"] == opt) & (df["facet"] == frow)]
            lrs = sorted(sub["lr"].unique())  # each panel its own grid (they may differ)
            panel_used, panel_cut = _draw_panel(ax, sub, fr, (opt, frow))
            used += panel_used
            cut = cut or panel_cut
            rows += _panel_rows(sub, fr, opt, frow)
            _name_panel(ax, fr, opt, frow, lrs, bottom=below is None,
                        left=c == 0 and nrows == 1)
            _lr_axis([ax], lrs)
        for i in range(len(grid.slots), nrows * ncols):
            axes.flat[i].set_visible(False)
        _set_y_axis(axes[0, 0], fr.y)
        if nrows > 1:  # one label for the shared axis: a label per row ran into the next
            fig.supylabel(_y_label(fr), fontsize=10)
        _legend(fig, fr, used, base_label)
        suffix = f" ({grid.omitted} more panels not shown)" if grid.omitted else ""
        fig.suptitle(f"Final validation {fr.metric.label} vs learning rate{suffix}")
    return fig, rows, cut


def _figsize(df: pd.DataFrame, grid: Grid, fr: _Frame, base_label: str) -> tuple[float, float]:
    """Panels wide enough for their lr ticks, tall enough for the band; room for the legend."""
    max_lrs = max(int(df.loc[(df["optim"] == o) & (df["facet"] == f), "lr"].nunique())
                  for o, f in grid.panels)
    panel_w = max(3.3, 1.3 + 0.42 * max_lrs)
    legend_lines = [
        *fr.order,
        "clip setting",
        *base_label.split("\n"),
        *DIVERGED_LEGEND.split("\n"),
    ]
    legend_w = max(1.6, min(3.2, 0.75 + 0.06 * max(len(t) for t in legend_lines)))
    panel_h = fr.y.band.panel_h
    return (grid.ncols * panel_w + legend_w + 0.3, grid.nrows * panel_h + 0.7)


def _settings(sub: pd.DataFrame, order: list[str]) -> Iterator[tuple[str, pd.DataFrame]]:
    """The lines of one panel, in legend order, by lr: those with a run with a verdict."""
    for lab in order:
        s = sub[sub["label"] == lab].sort_values("lr")
        if not s.empty and (s["n"] > 0).any():
            yield lab, s


def _draw_panel(ax, sub: pd.DataFrame, fr: _Frame, panel: tuple) -> tuple[list[str], bool]:
    """One panel's lines, band and baselines; returns the lines drawn and whether one was cut."""
    labels: list[NLabel] = []
    stacks: dict[float, int] = {}  # diverged markers so far at each lr
    edge: dict[float, int] = {}  # values written at the y edge so far at each lr
    used: list[str] = []
    cut = False
    for lab, s in _settings(sub, fr.order):
        used.append(lab)
        line_labels, line_cut = _draw_line(ax, s, lab, fr.styles[lab], fr, stacks, edge)
        labels += line_labels
        cut = cut or line_cut
    draw_baselines(ax, fr.base.per_panel.get(panel, []), written=len(fr.base.values) > 1)
    draw_band(ax, fr.y)
    if not fr.y.has_values:
        draw_no_values_note(ax, fr.y)
    draw_n_labels(ax, labels, fr.y)
    return used, cut


def _draw_line(
    ax, s: pd.DataFrame, lab: str, style: Style, fr: _Frame, stacks: dict[float, int],
    edge: dict[float, int],
) -> tuple[list[NLabel], bool]:
    """One setting's line through its means, its intervals and its diverged counts.

    Returns its n labels (placed later, with the panel's others) and whether an interval
    was cut; ``stacks`` counts the band rows taken at each lr, so crosses never overlap.
    """
    colour, marker = style
    yax = fr.y
    x = s["lr"].to_numpy(dtype=float)
    raw = s["mean"].to_numpy(dtype=float)
    out = _beyond(raw, fr)
    y = np.where(out, fr.cap if fr.cap is not None else raw, raw)
    ax.plot(x, y, color=colour, marker=marker, ms=4.5, lw=1.5, label=lab, gid=f"mean:{lab}",
            zorder=3, markevery=[i for i in range(len(y)) if not out[i]] or None)
    for xi, yi, v in zip(x[out], y[out], raw[out], strict=True):
        up = fr.metric.lower_is_better
        ax.plot([xi], [yi], ls="none", marker="^" if up else "v", ms=6.5, color=colour,
                zorder=4, clip_on=False, gid=f"beyond:{lab}")
        k = edge.get(float(xi), 0)  # values at one lr stack, never overlap
        edge[float(xi)] = k + 1
        ax.annotate(fmt.num(v), (xi, yi), xytext=(5, (-9 - 8 * k) if up else (5 + 8 * k)),
                    textcoords="offset points", fontsize=6.5, color=colour, zorder=5)
    lo, hi = s["lo"].to_numpy(dtype=float), s["hi"].to_numpy(dtype=float)
    keep = ~out
    cut = draw_error_bars(ax, x[keep], y[keep], lo[keep], hi[keep], colour, yax)
    labels: list[NLabel] = []
    for i, rec in enumerate(s.to_dict("records")):
        if not np.isnan(rec["mean"]) and not out[i]:
            # the label goes above-right, or below-right where the line climbs to the
            # right (it would run through the label)
            nxt = y[i + 1] if i + 1 < len(y) else math.nan
            rising = not np.isnan(nxt) and yax.frac(nxt) > yax.frac(rec["mean"]) + 0.01
            text = f"n={rec['n_finished']}"
            labels.append((rec["lr"], rec["mean"], text, colour, -1 if rising else 1))
        if rec["n_diverged"] > 0:
            j = stacks.get(rec["lr"], 0)
            stacks[rec["lr"]] = j + 1
            count = f"{rec['n_diverged']}/{rec['n']}"
            draw_diverged(ax, rec["lr"], j, count, colour, lab, yax.band)
    return labels, cut


def _panel_rows(sub: pd.DataFrame, fr: _Frame, opt: str, frow: tuple) -> list[dict]:
    """The figure's data: a row per configuration of the panel, drawn as a point or not."""
    return [
        {
            "optimizer": opt,
            **dict(zip(fr.facets, frow, strict=True)),
            "clip": lab,
            **{k: rec[k] for k in ("lr", "mean", "lo", "hi", "n", "n_finished", "n_diverged")},
            "point": not np.isnan(rec["mean"]),
            "beyond": bool(_beyond(np.array([rec["mean"]], dtype=float), fr)[0]),
        }
        for lab, s in _settings(sub, fr.order)
        for rec in s.to_dict("records")
    ]


def _name_panel(
    ax, fr: _Frame, opt: str, frow: tuple, lrs: list[float], bottom: bool, left: bool
) -> None:
    """Title (optimizer and facet values); x label on the bottom row, y label on the left."""
    ax.set_title(panel_title(opt, fr.facets, frow))
    if bottom:
        scale = ", log scale" if all(v > 0 for v in lrs) else ""
        ax.set_xlabel(f"learning rate (optim.lr{scale})")
    if left:
        ax.set_ylabel(_y_label(fr))


def _y_label(fr: _Frame) -> str:
    note = "log scale" if fr.y.log else ""
    return fr.metric.axis(suffix=", mean of completed runs", note=note, wrap=True)


def _lr_axis(column: Sequence, lrs: list[float]) -> None:
    """The lr axis of the panels given: log where it can be, the grid's values as the
    ticks."""
    ax0 = column[0]
    if all(v > 0 for v in lrs):
        ax0.set_xscale("log")
        ratio = (lrs[-1] / lrs[0]) ** 0.08 if lrs[-1] > lrs[0] else 1.8
        ax0.set_xlim(lrs[0] / ratio, lrs[-1] * ratio)
    ax0.set_xticks(lrs, labels=[fmt.lr(v) for v in lrs])
    ax0.xaxis.set_minor_locator(NullLocator())
    if len(lrs) > 5:
        for ax in column:
            for t in ax.get_xticklabels():
                t.set_rotation(40)
                t.set_horizontalalignment("right")


def _set_y_axis(ax0, yax: YAxis) -> None:
    """The shared y axis: ticks in the data part only, limits including the band."""
    ax0.yaxis.set_minor_locator(NullLocator())
    if yax.has_values:
        ticks = y_ticks(yax.bottom, yax.data_top, yax.log)
        ax0.set_yticks(ticks, labels=[fmt.num(t) for t in ticks])
    else:
        ax0.set_yticks([])
    ax0.set_ylim(yax.bottom, yax.top)


def _legend(fig: Figure, fr: _Frame, used: list[str], base_label: str) -> None:
    """The lines drawn, then the baseline and the diverged cross where there are any."""
    handles = [
        Line2D([], [], color=fr.styles[lab][0], marker=fr.styles[lab][1], ms=4.5, lw=1.5, label=lab)
        for lab in dict.fromkeys(lab for lab in fr.order if lab in used)
    ]
    if fr.base.values:
        handles.append(Line2D([], [], ls="--", lw=1.2, color=BASELINE_COLOR, label=base_label))
    if fr.y.band.rows:
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker=DIVERGED_MARKER,
                ms=6,
                mew=1.8,
                color="0.3",
                label=DIVERGED_LEGEND,
            )
        )
    fig.legend(
        handles=handles,
        loc="outside right upper",
        title="clip setting",
        fontsize=7.5,
        title_fontsize=8,
        frameon=False,
    )


@register("lr_curves", title=lambda metric: f"Final validation {metric.long} vs learning rate")
def build(inp: FigureInput) -> Plot:
    return lr_curves(inp.cells_df, inp.metric, inp.layout.facets)
