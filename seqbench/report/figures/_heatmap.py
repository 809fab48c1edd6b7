"""The heatmap both heatmap figures draw: one panel per optimizer, clip method and facet.

Rows are clip thresholds, columns learning rates; each square carries its value and
the number of runs behind it, and grey squares had no run (nothing is imputed).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from seqbench.report import _format as fmt
from seqbench.report.figures._common import (
    FigureSkipped,
    _method_sort_key,
    _methods,
    _obj,
    _style,
    facet_columns,
)

MAX_PANELS = 24


def _panel_title(key: tuple, cols: Sequence[str]) -> str:
    parts = []
    for c, v in zip(cols, key, strict=True):
        if c == "optim.name":
            parts.append(fmt.optimizer(v))
        elif c == "clip.method":
            parts.append("no clipping" if v == "none" else f"{v} clipping")
        elif not fmt.is_missing(v):  # a facet this panel's method does not have: say nothing
            parts.append(f"{c}={fmt.num(v)}")
    return " · ".join(parts)


def heatmap_panels(cells_df: pd.DataFrame,
                   facets: Sequence[str] | None = None) -> list[tuple[str, pd.DataFrame]]:
    """Split a cells table into heatmap panels: one per (optimizer, clip method, facets)."""
    facets = facet_columns(cells_df) if facets is None else facets
    cols = [c for c in ("optim.name", "clip.method") if c in cells_df.columns] + list(facets)
    if cells_df.empty:
        return []
    if not cols:
        return [("all runs", cells_df)]
    tmp = cells_df.assign(**{c: _obj(cells_df[c]) for c in cols})
    groups = list(tmp.groupby(cols, dropna=False, sort=False))

    def order(item: tuple) -> tuple:
        key = item[0] if isinstance(item[0], tuple) else (item[0],)
        return tuple(
            _method_sort_key(v)
            if c == "clip.method"
            else (0, "")
            if fmt.is_missing(v)
            else (1, str(v))
            for c, v in zip(cols, key, strict=True)
        )

    out = []
    for key, sub in sorted(groups, key=order):
        key = key if isinstance(key, tuple) else (key,)
        out.append((_panel_title(key, cols), sub))
    return out


def _threshold_label(method: object, t: object) -> str:
    if fmt.is_missing(t):
        return "none" if method == "none" else "n/a"
    return fmt.lr(t)


def _threshold_axis_label(method: object) -> str:
    if method == "norm":
        return "max_norm (global gradient L2 norm)"
    if method == "value":
        return "clip_value (per-element |gradient|)"
    if method == "norm_relative":
        return "max_norm (x median unclipped norm)"
    if method == "norm_per_tensor":
        return "max_norm (each tensor's own L2 norm)"
    if method == "none":
        return "threshold (none)"
    return "clip threshold"


def _grid(n_panels: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n_panels))
    return math.ceil(n_panels / ncols), ncols


def _text_color(rgba: Sequence[float]) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def _heatmap(
    cells_df: pd.DataFrame,
    value: str,
    annotate: Callable[[dict], str],
    *,
    title: str,
    cbar_label: str,
    cmap: str,
    norm: Normalize,
    facets: Sequence[str] | None = None,
) -> tuple[Figure, pd.DataFrame, int]:
    panels = heatmap_panels(cells_df, facets)
    if not panels:
        raise FigureSkipped("no configuration has any run")
    if "optim.lr" not in cells_df.columns:
        raise FigureSkipped("runs have no optim.lr in their config")
    if len(panels) > 1 and all(p["optim.lr"].nunique() == 1 for _, p in panels):
        # a heatmap is a learning rate x threshold grid: panels of one learning rate are
        # one column each, which the tables give as well, and many of them are
        # unreadable (the late_spike sweep: 96 configurations at one lr per model)
        raise FigureSkipped(f"each of its {len(panels)} panels would have one learning "
                            "rate: the Answer and the configurations table give these "
                            "numbers")
    omitted = max(0, len(panels) - MAX_PANELS)
    panels = panels[:MAX_PANELS]
    n_methods = len(_methods(cells_df["clip.method"])) if "clip.method" in cells_df else 1
    nrows, ncols = _grid(len(panels), n_methods if n_methods <= 4 else 3)
    max_lrs = max(p["optim.lr"].nunique() for _, p in panels)
    max_thr = max(p["threshold"].nunique(dropna=False) for _, p in panels)
    # at least ~3.8 in per panel, so a title such as "SGD · norm clipping ·
    # clip.scope=per_tensor" and a wrapped y label fit without overlapping a neighbour
    width = ncols * max(3.8, 1.0 + 0.75 * max_lrs) + 1.2
    height = nrows * (1.0 + 0.45 * max(max_thr, 2)) + 0.8
    colormap = mpl.colormaps[cmap]
    rows = []
    with _style():
        fig = Figure(figsize=(max(width, 5.0), max(height, 3.0)), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax, (ptitle, sub) in zip(axes, panels, strict=False):
            method = sub["clip.method"].iloc[0] if "clip.method" in sub else None
            lrs = sorted(pd.to_numeric(sub["optim.lr"]).dropna().unique())
            thr_vals = sorted(pd.to_numeric(sub["threshold"]).dropna().unique())
            has_nan_thr = sub["threshold"].isna().any()
            row_keys: list[float] = ([math.nan] if has_nan_thr else []) + list(thr_vals)
            mat = np.full((len(row_keys), len(lrs)), np.nan)
            ann = np.full((len(row_keys), len(lrs)), "", dtype=object)
            for rec in sub.to_dict("records"):  # one per cell: a handful
                t = rec["threshold"]
                if fmt.is_missing(rec["optim.lr"]):
                    continue
                i = 0 if fmt.is_missing(t) else row_keys.index(t)
                j = lrs.index(rec["optim.lr"])
                v = rec[value]
                mat[i, j] = np.nan if fmt.is_missing(v) else float(v)
                ann[i, j] = annotate(rec)
                rows.append(
                    {"panel": ptitle, "row": i, "col": j, "value": mat[i, j], "text": ann[i, j]}
                )
            ax.set_facecolor("#e8e8e8")
            ax.grid(False)
            frame = pd.DataFrame(
                mat,
                index=[_threshold_label(method, t) for t in row_keys],
                columns=[fmt.lr(x) for x in lrs],
            )
            sns.heatmap(
                frame,
                ax=ax,
                cmap=colormap,
                norm=norm,
                vmin=norm.vmin,  # seaborn would otherwise scan (possibly all-NaN) data
                vmax=norm.vmax,
                cbar=False,
                linewidths=1.0,
                linecolor="white",
                square=False,
            )
            for i in range(mat.shape[0]):
                for j in range(mat.shape[1]):
                    if not ann[i, j]:
                        continue
                    v = mat[i, j]
                    color = "black" if np.isnan(v) else _text_color(colormap(norm(v)))
                    ax.text(
                        j + 0.5,
                        i + 0.5,
                        ann[i, j],
                        ha="center",
                        va="center",
                        fontsize=8,
                        color=color,
                    )
            ax.set_title(ptitle)
            ax.set_xlabel("learning rate (optim.lr)")
            ax.set_ylabel(textwrap.fill(_threshold_axis_label(method), 22))
            ax.tick_params(axis="y", rotation=0)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        sm = mpl.cm.ScalarMappable(norm=norm, cmap=colormap)
        fig.colorbar(sm, ax=list(axes[: len(panels)]), label=cbar_label, shrink=0.9)
        suffix = f" ({omitted} more panels not shown)" if omitted else ""
        fig.suptitle(title + suffix)
    return fig, pd.DataFrame(rows), omitted
