"""Stability-quality frontier: divergence rate against final quality, per configuration.

Why: the heatmaps show stability and quality side by side; the frontier puts them on
one plot, so the configurations that are both stable and good stand out (lower left,
or upper left for a metric where higher is better). Configurations where every seed
diverged have no quality; they are drawn in a strip above the plot, not dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from seqbench.report import _format as fmt
from seqbench.report.figures._common import (
    FigureSkipped,
    Plot,
    _log_worthy,
    _method_sort_key,
    _methods,
    _obj,
    _style,
    clip_palette,
    facet_columns,
)
from seqbench.report.figures.registry import FigureInput, register
from seqbench.report.task_groups import MetricInfo, metric_of

MAX_STRIP_ROWS = 8
#: Optimizer markers of the frontier; all have an outline, so they can be drawn hollow.
_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "<", ">", "p", "h", "8")
DIVERGED_STRIP_LABEL = "all seeds diverged (no final value)"


def _optimizer_markers(optimizers: Sequence[str]) -> dict[str, str]:
    return {o: _MARKERS[i % len(_MARKERS)] for i, o in enumerate(optimizers)}


def diverged_strip_rows(
    gone: pd.DataFrame, facets: Sequence[str], max_rows: int = MAX_STRIP_ROWS
) -> tuple[list[str], np.ndarray]:
    """Rows of the frontier's divergence strip: one per optimizer and clip setting.

    ``gone`` holds the configurations where every seed diverged (with ``optimizer`` and
    ``clip_method`` display columns). Returns the row labels (``SGD · norm 1: lr 2, 8``)
    and, for each configuration, its row. Beyond ``max_rows`` the rest share a last row,
    ``k more settings``: every configuration is still drawn.
    """
    if gone.empty:
        return [], np.zeros(0, dtype=int)
    thr = pd.to_numeric(gone["threshold"], errors="coerce").astype(float)
    rows = pd.DataFrame(
        {
            "opt": gone["optimizer"].astype(str).to_numpy(),
            "rank": [_method_sort_key(m) for m in gone["clip_method"]],
            "thr": thr.fillna(-np.inf).to_numpy(),
            "lr": pd.to_numeric(gone["optim.lr"], errors="coerce").to_numpy(dtype=float)
            if "optim.lr" in gone
            else np.nan,
        }
    )
    clip = [
        fmt.clip_short(m, t) if m != "?" else "all runs"
        for m, t in zip(gone["clip_method"], gone["threshold"], strict=True)
    ]
    extra = [
        ", ".join(f"{c}={fmt.num(rec[c])}" for c in facets if c != "optim.name")
        for rec in gone.to_dict("records")
    ]
    rows["key"] = [
        f"{o} · {c}" + (f" ({e})" if e else "")
        for o, c, e in zip(rows["opt"], clip, extra, strict=True)
    ]
    first = rows.sort_values(["opt", "rank", "thr", "key"], kind="stable").drop_duplicates("key")
    order = list(first["key"])
    shown = order if len(order) <= max_rows else order[: max_rows - 1]
    labels = []
    for k in shown:
        lrs = sorted({v for v in rows.loc[rows["key"] == k, "lr"] if np.isfinite(v)})
        labels.append(f"{k}: lr {', '.join(fmt.lr(v) for v in lrs)}" if lrs else k)
    if len(order) > len(shown):
        labels.append(f"{len(order) - len(shown)} more settings")
    row_of = {k: i for i, k in enumerate(shown)}
    return labels, np.array([row_of.get(k, len(shown)) for k in rows["key"]], dtype=int)


def _draw_strip(
    ax,
    gone: pd.DataFrame,
    labels: list[str],
    rows: np.ndarray,
    palette: dict[str, tuple[float, float, float]],
    markers: dict[str, str],
) -> None:
    """Hollow markers at each all-diverged configuration's divergence rate, one row per setting."""
    ax.set_facecolor("#f4f4f4")
    ax.grid(False)
    x = gone["divergence_rate"].to_numpy(dtype=float)
    y = rows + 1.0  # row 0 holds the strip's label
    for opt, marker in markers.items():
        sel = (gone["optimizer"] == opt).to_numpy()
        if not sel.any():
            continue
        edge = [palette[m] for m in gone["clip_method"][sel]]
        ax.scatter(
            x[sel], y[sel], marker=marker, s=55, facecolors="none", edgecolors=edge,
            linewidths=1.4, zorder=3,
        )
    ax.text(0.0, 0.0, DIVERGED_STRIP_LABEL, ha="left", va="center", fontsize=8,
            fontweight="bold", color="0.25")
    for i, lab in enumerate(labels):
        ax.text(0.96, i + 1.0, lab, ha="right", va="center", fontsize=8, color="0.2")
    ax.set_ylim(len(labels) + 0.6, -0.6)
    ax.tick_params(left=False, labelleft=False, bottom=False, labelbottom=False)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)


def frontier(cells_df: pd.DataFrame, metric: MetricInfo | None = None,
             facets: Sequence[str] | None = None) -> Plot:
    """Divergence rate vs mean final metric, one point per cell.

    Configurations where every seed diverged have no final value; they are drawn as
    hollow markers in a strip above the plot (at their divergence rate, 1), one row per
    optimizer and clip setting naming the learning rates, so divergence stays visible.
    ``metric`` defaults to the one metric of ``cells_df``, ``facets`` to its
    :func:`facet_columns`.
    """
    metric = metric or metric_of(cells_df)
    col = "final_val_metric_mean"
    if cells_df.empty or col not in cells_df:
        raise FigureSkipped("no configuration has any run")
    has = cells_df["n"] > 0
    missing = has & cells_df[col].isna()
    all_div = missing & (cells_df["n_diverged"] == cells_df["n"])
    data = cells_df[has & cells_df[col].notna()].copy()
    if data.empty:
        raise FigureSkipped(
            f"no configuration has a finished run with a final validation {metric.label}, so "
            f"there is no quality to plot ({int(all_div.sum())} diverged in every seed)"
        )
    gone = cells_df[all_div].copy()
    omitted = int((missing & ~all_div).sum())
    for frame in (data, gone):
        frame["clip_method"] = _obj(frame["clip.method"]) if "clip.method" in frame else "?"
        frame["optimizer"] = (
            _obj(frame["optim.name"].map(fmt.optimizer)) if "optim.name" in frame else "?"
        )
        frame["clip_method"] = _obj(frame["clip_method"])
        frame["optimizer"] = _obj(frame["optimizer"])
    methods = _methods(pd.concat([data["clip_method"], gone["clip_method"]]))
    optimizers = sorted(set(data["optimizer"]) | set(gone["optimizer"]))
    palette = clip_palette(methods)
    markers = _optimizer_markers(optimizers)
    labels, rows = diverged_strip_rows(
        gone, facet_columns(cells_df) if facets is None else facets)
    y = data[col].to_numpy(dtype=float)
    log = _log_worthy(y)
    with _style():
        strip_h = 0.28 * (len(labels) + 1) + 0.15 if labels else 0.0
        fig = Figure(figsize=(7.5, 5.0 + strip_h), layout="constrained")
        if labels:
            gs = fig.add_gridspec(2, 1, height_ratios=[strip_h, 4.6])
            ax = fig.add_subplot(gs[1])  # the plot first: figure.axes[0]
            strip = fig.add_subplot(gs[0], sharex=ax)
        else:
            ax = fig.subplots()
        x = data["divergence_rate"].to_numpy(dtype=float)
        yl = data["final_val_metric_lo"].to_numpy(dtype=float)
        yh = data["final_val_metric_hi"].to_numpy(dtype=float)
        oky = np.isfinite(yl) & np.isfinite(yh)
        if log:  # a t interval can reach below 0; on a log axis draw it to the floor
            yl = np.where(yl > 0, yl, float(np.nanmin(y)) / 10.0)
            ax.set_yscale("log")
        err = {"fmt": "none", "ecolor": "0.7", "elinewidth": 0.8, "capsize": 2, "zorder": 1}
        if oky.any():
            ax.errorbar(x[oky], y[oky], yerr=np.vstack([y[oky] - yl[oky], yh[oky] - y[oky]]), **err)
        sns.scatterplot(
            data=data,
            x="divergence_rate",
            y=col,
            hue="clip_method",
            hue_order=methods,
            palette=palette,
            style="optimizer",
            style_order=optimizers,
            markers=markers,
            s=55,
            edgecolor="white",
            linewidth=0.5,
            zorder=3,
            ax=ax,
        )
        ax.set_xlim(-0.05, 1.05)
        ax.set_xlabel("divergence rate (fraction of seeds that diverged)")
        scale = "log scale" if log else ""
        ax.set_ylabel(metric.axis(suffix=", mean of finished seeds", note=scale, wrap=True))
        leg = ax.get_legend()
        if leg is not None:
            for t in leg.get_texts():
                if t.get_text() == "clip_method":
                    t.set_text("clip method")
        if labels:
            _draw_strip(strip, gone, labels, rows, palette, markers)
        fig.suptitle("Stability vs quality: one point per configuration")
    corner = "Lower left" if metric.lower_is_better else "Upper left"
    caption = (
        "Each point is one configuration (optimizer, clip setting, learning rate): its divergence "
        f"rate (x) against the mean final validation {metric.long} of its finished seeds (y, "
        f"{metric.unit}{'; log scale' if log else ''}; grey bar = 95% t interval, shown with 2+ "
        "finished seeds). The rates' Wilson intervals are in the configurations table. "
        f"{corner} is better."
        + (
            f" Hollow markers in the strip above the plot: the {len(gone)} configuration(s) "
            "where every seed diverged, so there is no final value; they sit at divergence "
            "rate 1, one row per optimizer and clip setting with its learning rates."
            if len(gone)
            else ""
        )
        + (
            f" {omitted} configuration(s) whose finished seeds recorded no final value are not "
            "shown."
            if omitted
            else ""
        )
    )
    return Plot(fig, data, caption, palette)


@register("frontier", title="Stability–quality frontier")
def build(inp: FigureInput) -> Plot:
    return frontier(inp.cells_df, inp.metric, inp.layout.facets)
