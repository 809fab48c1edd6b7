"""Figures of a report (seaborn / matplotlib, PNG).

Why these: the heatmaps answer "where is it stable, and how good is it there",
the curves show *how* runs fail, the gradient-norm distributions show what a clip
threshold actually cuts, and the frontier puts stability against quality. Where runs
logged per-parameter norms (``trainer.param_log_every``), the per-layer figure shows
*which* tensors the global norm comes from - which layer explodes first, and how big
each update is against its weights.

Quality is in each task's own metric (bpc, MSE, error rate, ...): titles, axis and
colour-bar labels carry its name, unit and direction, and colour scales run from bad
(dark) to good (light) whichever direction is better. A runs directory with several
tasks gets every figure once per task (file ``<name>-<task>.png``): numbers in
different units never share an axis.

Design choices:

- Figures are built on ``matplotlib.figure.Figure`` objects, never through pyplot, so
  no global backend or state is touched (PNG output is rendered by Agg) and nothing
  leaks between reports. Seaborn styles are applied in a context manager, not set
  globally.
- seaborn 0.13.2 mis-groups pandas 3 ``str``/categorical columns used as ``hue``
  (mwaskom/seaborn#3893): every grouping column is cast to ``object`` and every call
  gets an explicit ``hue_order`` and ``palette`` dict. Tests check each group's data.
- Degenerate input (nothing finished, no data) raises :class:`FigureSkipped`;
  :func:`make_figures` turns that into a note instead of failing the report.
- Figures stay cheap on 1,000-run x 10,000-step sweeps (``seqbench.bench.report_scale``):
  metrics are read as arrays (``collect.read_columns``: only the needed columns, a run
  index per row instead of a string), the curve figure loads only the runs it shows and
  bins each run to at most ``MAX_CURVE_POINTS`` points before aggregating (a figure
  cannot show 10,000 points per run; each point is still the exact mean of every step
  in its bin), and the ECDF draws at most ``MAX_ECDF_POINTS`` sampled norms per group.
  No statistic in a table or a sentence comes from a sampled or binned value.
"""

from __future__ import annotations

import contextlib
import math
import os
import textwrap
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure

from seqbench.report import _format as fmt
from seqbench.report.collect import load_param_metrics, read_columns
from seqbench.report.stats import (
    CLIP_METHOD_ORDER,
    STAT_COLUMNS,
    cell_index,
    t_interval_from_summary,
    varying_within,
)
from seqbench.report.tasks import BPC, MetricInfo, TaskGroup, metric_of, split_by_task

DPI = 110
MAX_CURVE_POINTS = 300
MAX_CURVE_CONFIGS = 6
#: At most this many configurations (panels per row pair) in the per-layer figure, and
#: this many parameter tensors (lines) per panel: the rest are named in the caption.
MAX_PARAM_CONFIGS = 4
MAX_PARAM_LINES = 20
MAX_PANELS = 24
MAX_ECDF_POINTS = 20000
MAX_STRIP_ROWS = 8
NATS = "nats/char"
TASK_UNITS = "task units"
#: A positive quantity whose values span this ratio or more is drawn on a log scale
#: (an MSE falls from 0.17 to 0.002; bits per character never span that much).
LOG_SPAN = 30.0

#: The kinds of figure a report draws, in order. The file name of ``quality_heatmap``
#: is ``<metric>_heatmap`` (``bpc_heatmap``, ``mse_heatmap``); see :func:`figure_name`.
FIGURE_KINDS: tuple[str, ...] = (
    "divergence_heatmap",
    "quality_heatmap",
    "loss_curves",
    "grad_norms",
    "param_grad_norms",
    "frontier",
)


def figure_name(kind: str, group: TaskGroup | None = None, multi: bool = False) -> str:
    """File stem of a figure: the kind, the metric for the quality heatmap, the task if several.

    ``figure_name("quality_heatmap", adding_group, multi=True)`` -> ``mse_heatmap-adding``.
    """
    metric = group.metric if group is not None else BPC
    stem = f"{_file_part(metric.name)}_heatmap" if kind == "quality_heatmap" else kind
    return f"{stem}-{group.slug}" if multi and group is not None else stem


def _file_part(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in text) or "metric"


class FigureSkipped(Exception):
    """The input cannot make this figure (e.g. no run finished); the message says why."""


@dataclass
class Plot:
    """A drawn figure, the tidy data behind it, and its caption."""

    figure: Figure
    data: pd.DataFrame
    caption: str
    palette: dict[str, tuple[float, float, float]] = field(default_factory=dict)


@dataclass
class FigureResult:
    """One figure of a report: a written PNG, or a note saying why there is none.

    ``kind`` is one of :data:`FIGURE_KINDS`; ``task`` the task group it shows.
    """

    name: str
    title: str
    caption: str
    path: Path | None = None
    note: str | None = None
    kind: str = ""
    task: TaskGroup | None = None


@contextlib.contextmanager
def _style() -> Iterator[None]:
    rc = {
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "figure.titlesize": 12,
        "legend.fontsize": 8,
        "savefig.dpi": DPI,
    }
    with sns.axes_style("whitegrid"), mpl.rc_context(rc):
        yield


def _obj(s: pd.Series) -> pd.Series:
    """Cast to object dtype (seaborn 0.13.2 + pandas 3 string/categorical hue bug)."""
    return s.astype(object)


def _method_sort_key(m: object) -> tuple[int, str]:
    order = {x: i for i, x in enumerate(CLIP_METHOD_ORDER)}
    return (order.get(str(m), len(order)), str(m))


def _methods(values: Sequence[object] | pd.Series) -> list[str]:
    return sorted({str(v) for v in values if not fmt.is_missing(v)}, key=_method_sort_key)


def clip_palette(methods: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Fixed colours per clip method so every figure uses the same ones."""
    base = {"none": 3, "value": 1, "norm": 0}  # red-ish, orange, blue in 'deep'
    colors = sns.color_palette("deep", 10)
    spare = [i for i in range(10) if i not in base.values()]
    out: dict[str, tuple[float, float, float]] = {}
    k = 0
    for m in methods:
        if m in base:
            out[m] = tuple(colors[base[m]])  # type: ignore[assignment]
        else:  # methods added to the registry later get the remaining colours, cycling
            out[m] = tuple(colors[spare[k % len(spare)]])  # type: ignore[assignment]
            k += 1
    return out


# --------------------------------------------------------------------------- heatmaps


def _config_key_columns(cells_df: pd.DataFrame) -> list[str]:
    return [c for c in cells_df.columns if c not in STAT_COLUMNS and c != "cell"]


def facet_columns(cells_df: pd.DataFrame) -> list[str]:
    """Config columns that vary among cells with the same optimizer, method, threshold and lr.

    Those must become part of a panel's identity, or two cells would share one heatmap
    square (e.g. a sweep over model sizes).
    """
    coords = ["optim.name", "clip.method", "threshold", "optim.lr"]
    extra = [
        c for c in _config_key_columns(cells_df) if c not in ("clip.max_norm", "clip.clip_value")
    ]
    return varying_within(cells_df, coords, extra)


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


def heatmap_panels(cells_df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Split a cells table into heatmap panels: one per (optimizer, clip method, facets)."""
    cols = [c for c in ("optim.name", "clip.method") if c in cells_df.columns] + facet_columns(
        cells_df
    )
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
) -> tuple[Figure, pd.DataFrame, int]:
    panels = heatmap_panels(cells_df)
    if not panels:
        raise FigureSkipped("no configuration has any run")
    if "optim.lr" not in cells_df.columns:
        raise FigureSkipped("runs have no optim.lr in their config")
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


def divergence_heatmap(cells_df: pd.DataFrame) -> Plot:
    """Divergence rate per (threshold, lr), one panel per optimizer and clip method."""

    def annotate(rec: dict) -> str:
        n = int(rec["n"])
        if n == 0:
            return f"{fmt.MISSING}\nn=0"
        return f"{rec['divergence_rate']:.2f}\nn={n}"

    fig, data, omitted = _heatmap(
        cells_df,
        "divergence_rate",
        annotate,
        title="Divergence rate by clip threshold and learning rate",
        cbar_label="divergence rate (fraction of seeds)",
        cmap="rocket_r",
        norm=Normalize(vmin=0.0, vmax=1.0),
    )
    caption = (
        "Fraction of seeds that diverged (non-finite loss or gradient, or an exploded loss) "
        "for each clip threshold (rows) and learning rate (columns); each square shows the "
        "rate and the number n of runs that reached a verdict. Grey: not run, or no run has "
        "finished yet."
    )
    return Plot(fig, data, caption)


def _value_norm(vals: np.ndarray) -> Normalize:
    """Linear colour scale over the values, or logarithmic when positive values span 100x."""
    vmin, vmax = float(np.min(vals)), float(np.max(vals))
    if vmin > 0 and vmax / vmin >= LOG_SPAN:
        return LogNorm(vmin=vmin, vmax=vmax)
    if vmax - vmin < 1e-9:
        pad = max(0.05, abs(vmin) * 0.05)
        vmin, vmax = vmin - pad, vmax + pad
    return Normalize(vmin=vmin, vmax=vmax)


def quality_cmap(metric: MetricInfo) -> str:
    """Colour map from bad (dark) to good (light), as in the divergence heatmap."""
    return "mako_r" if metric.lower_is_better else "mako"


def metric_heatmap(cells_df: pd.DataFrame, metric: MetricInfo | None = None) -> Plot:
    """Mean final validation metric over finished seeds; blank where nothing finished.

    ``metric`` defaults to the one metric of ``cells_df``; a table that mixes metrics
    raises :class:`~seqbench.report.tasks.MixedMetricsError`.
    """
    metric = metric or metric_of(cells_df)
    col = "final_val_metric_mean"
    if col not in cells_df or cells_df[col].notna().sum() == 0:
        raise FigureSkipped(
            f"no finished run has a final validation {metric.label} (every run diverged, or "
            "evaluation was off)"
        )
    norm = _value_norm(cells_df[col].dropna().to_numpy(dtype=float))

    def annotate(rec: dict) -> str:
        nf = int(rec["n_finished"])
        if nf == 0 or fmt.is_missing(rec[col]):
            return ""
        return f"{fmt.short(rec[col])}\nn={nf}"

    log = "log colour scale" if isinstance(norm, LogNorm) else ""
    fig, data, _ = _heatmap(
        cells_df,
        col,
        annotate,
        title=f"Final validation {metric.long} (finished runs only)",
        cbar_label=metric.axis(note=log),
        cmap=quality_cmap(metric),
        norm=norm,
    )
    caption = (
        f"Mean final validation {metric.long} ({metric.unit}; {metric.direction}; lighter "
        "squares are better) over the seeds that finished, with n the number of finished "
        "seeds. Diverged runs have no final value and are not counted; grey squares had no "
        "finished run (nothing is imputed)."
    )
    return Plot(fig, data, caption)


# --------------------------------------------------------------------------- curves


def select_curve_cells(
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    max_configs: int = MAX_CURVE_CONFIGS,
    metric: MetricInfo | None = None,
) -> pd.DataFrame:
    """Pick a legible subset of cells for the loss-curve figure.

    Per optimizer: the largest learning rate at which *some* clip setting was stable
    (where clipping makes a difference), or the smallest lr tried if none was; then
    every clip setting at that lr, unclipped first, the most stable and best ones next
    ("best" in ``metric``'s direction), at most ``max_configs``. Returns the chosen cells
    rows with a ``label`` column.
    """
    if cells_df.empty or "optim.lr" not in cells_df.columns:
        return cells_df.iloc[0:0].assign(label=pd.Series(dtype=object))
    metric = metric or metric_of(cells_df)
    opt_col = "optim.name" if "optim.name" in cells_df.columns else None
    groups = cells_df.groupby(_obj(cells_df[opt_col]), sort=True) if opt_col else [(None, cells_df)]
    chosen = []
    for opt, sub in groups:
        sub = sub[sub["n"] > 0]
        if sub.empty:
            continue
        lr_star = math.nan
        if not stable_df.empty and "largest_stable_lr" in stable_df:
            st = (
                stable_df
                if opt_col is None or opt_col not in stable_df
                else stable_df[stable_df[opt_col].astype(object) == opt]
            )
            if st["largest_stable_lr"].notna().any():
                lr_star = float(st["largest_stable_lr"].max())
        if math.isnan(lr_star) or not (sub["optim.lr"] == lr_star).any():
            lr_star = float(sub["optim.lr"].min())
        at = sub[sub["optim.lr"] == lr_star].copy()
        method = (
            _obj(at["clip.method"])
            if "clip.method" in at
            else pd.Series("?", index=at.index, dtype=object)
        )
        at["__none"] = (method != "none").astype(int)
        at["__score"] = metric.score(at["final_val_metric_mean"])
        at = at.sort_values(["__none", "divergence_rate", "__score"], kind="stable")
        chosen.append(at.head(max_configs).drop(columns=["__none", "__score"]))
    if not chosen:
        return cells_df.iloc[0:0].assign(label=pd.Series(dtype=object))
    out = pd.concat(chosen)
    facets = facet_columns(cells_df)
    labels = []
    for rec in out.to_dict("records"):
        label = (
            fmt.clip_short(rec["clip.method"], rec.get("threshold"))
            if "clip.method" in rec
            else "all runs"
        )
        extra = [f"{c}={fmt.num(rec[c])}" for c in facets if c != "optim.name"]
        labels.append(", ".join([label, *extra]))
    out["label"] = pd.Series(labels, index=out.index, dtype=object)
    # labels must be unique within an optimizer row
    if opt_col:
        dup = out.groupby([_obj(out[opt_col]), out["label"]]).cumcount()
    else:
        dup = out.groupby(out["label"]).cumcount()
    out["label"] = [
        lab if d == 0 else f"{lab} #{d + 1}" for lab, d in zip(out["label"], dup, strict=True)
    ]
    return out.reset_index(drop=True)


def binned_run_means(
    run: np.ndarray, step: np.ndarray, values: np.ndarray, max_points: int = MAX_CURVE_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each run's mean of its finite ``values`` in equal step bins: ``(run, step, mean)``.

    Why bin: a figure a few hundred pixels wide cannot show 10,000 points per run, and
    drawing (or aggregating over seeds) ten million rows is what made a 1,000-run report
    slow. The binning loses nothing the figure claims: every mean is over *all* finite
    values of its run in its bin (nothing is sampled), and every run of one call shares
    the bins - width ``ceil(max step / max_points)``, bin k holding steps
    ``(k*w, (k+1)*w]`` and placed at its centre ``k*w + (w+1)/2``; with width 1 the
    "bin" is the step itself. Non-finite values are missing (a run that went NaN stops
    contributing). Vectorised: a count over (run, bin) keys - a sort of the pairs where
    odd step numbers (far below 1) make the keys sparse - and no loop over runs.
    """
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return np.zeros(0, np.int64), np.zeros(0, float), np.zeros(0, float)
    run = np.asarray(run, dtype=np.int64)[ok]
    step = np.asarray(step, dtype=np.int64)[ok]
    v = v[ok]
    width = max(1, math.ceil(int(step.max()) / max_points))
    b = (step - 1) // width
    b0 = int(b.min())
    n_bins = int(b.max()) - b0 + 1
    n_runs = int(run.max()) + 1
    if n_runs * n_bins <= 4 * len(v) + 1024:  # dense (the usual case): count, no sort
        key = run * n_bins + (b - b0)
        sums = np.bincount(key, weights=v, minlength=n_runs * n_bins)
        counts = np.bincount(key, minlength=n_runs * n_bins)
        keys = np.flatnonzero(counts)
        means = sums[keys] / counts[keys]
        r, k = keys // n_bins, keys % n_bins + b0
    else:  # sparse: sort the (run, bin) pairs instead of a huge (or overflowing) table
        pairs, inverse = np.unique(np.column_stack([run, b]), axis=0, return_inverse=True)
        inverse = inverse.ravel()
        means = np.bincount(inverse, weights=v) / np.bincount(inverse)
        r, k = pairs[:, 0], pairs[:, 1]
    kf = k.astype(float)
    centre = kf * width + (width + 1) / 2.0 if width > 1 else kf + 1.0
    return r, centre, means


def _seed_stats(labels: np.ndarray, step: np.ndarray, means: np.ndarray) -> pd.DataFrame:
    """Mean and 95% t band over runs per (label, step) of per-run bin means."""
    cols = ["label", "step", "mean", "lo", "hi", "n"]
    if len(means) == 0:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    per_run = pd.DataFrame({"label": labels, "bin": step, "v": means})
    g = per_run.groupby(["label", "bin"], sort=True)["v"].agg(["mean", "std", "count"])
    g = g.reset_index()
    lo, hi = t_interval_from_summary(g["mean"], g["std"], g["count"])
    return pd.DataFrame(
        {
            "label": _obj(g["label"]),
            "step": g["bin"].astype(float),
            "mean": g["mean"],
            "lo": lo,
            "hi": hi,
            "n": g["count"],
        }
    )


def curve_stats(
    curves: pd.DataFrame, value: str, max_points: int = MAX_CURVE_POINTS
) -> pd.DataFrame:
    """Mean and 95% t band over runs of ``value`` per (label, step bin).

    Each run is first reduced to its means in at most ``max_points`` equal step bins
    (:func:`binned_run_means`: exact means of every finite value, no sampling), then
    the runs of a label are aggregated per bin. Columns: label, step, mean, lo, hi,
    n (runs contributing). ``curves`` has columns label, run_dir, step and ``value``.
    """
    pair = pd.MultiIndex.from_arrays([_obj(curves["label"]), _obj(curves["run_dir"])])
    codes, uniques = pd.factorize(pair)
    run, step, means = binned_run_means(
        codes, curves["step"].to_numpy(), curves[value].to_numpy(dtype=float), max_points
    )
    labels = np.asarray(uniques.get_level_values(0), dtype=object)
    return _seed_stats(labels[run], step, means)


def _log_worthy(values: Sequence[float] | np.ndarray) -> bool:
    """Positive values spanning :data:`LOG_SPAN` or more read better on a log axis."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(v.size) and float(v.min()) > 0 and float(v.max()) / float(v.min()) >= LOG_SPAN


def _curve_panels(
    metric: MetricInfo, val_metric: np.ndarray
) -> tuple[tuple[str, str, str], ...]:
    """(column, name, unit) of the two panels; ``val_metric`` is that column's values.

    Text: training and validation cross-entropy, both in nats/char. Other tasks: the
    training loss in the task's own units (a task's loss need not be its metric) and
    the validation metric where the metrics files record it, else the validation loss.
    """
    if metric.is_text:
        return (("train_loss", "training loss", NATS), ("val_loss", "validation loss", NATS))
    has_metric = np.isfinite(np.asarray(val_metric, dtype=float)).any()
    val = (
        ("val_metric", f"validation {metric.label}", metric.unit)
        if has_metric
        else ("val_loss", "validation loss", TASK_UNITS)
    )
    return (("train_loss", "training loss", TASK_UNITS), val)


def _set_limits(
    axes: Sequence, firsts: list[float], lows: list[float], *, allow_log: bool = False
) -> None:
    """Cut the y axis at 1.3x the initial value, so exploding runs leave the plot.

    With ``allow_log``, a window whose top is :data:`LOG_SPAN` times its positive bottom
    or more becomes logarithmic (the spread of exploding values does not count).
    """
    if not firsts:
        return
    top = 1.3 * float(np.nanmax(firsts))
    low = float(np.nanmin(lows))
    log = allow_log and _log_worthy([low, top])
    bottom = 0.8 * low if log else max(0.0, 0.9 * low)
    if np.isfinite(top) and np.isfinite(bottom) and top > bottom:
        for ax in axes:
            if log:
                ax.set_yscale("log")
            ax.set_ylim(bottom, top)


def loss_curves(
    runs_df: pd.DataFrame,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    runs_dir: str | os.PathLike[str],
    metric: MetricInfo | None = None,
) -> Plot:
    """Training loss and a validation curve vs step for a legible subset of configurations.

    ``metric`` (default: the one metric of ``cells_df``) decides the panels and their
    units (see :func:`_curve_panels`).
    """
    metric = metric or metric_of(cells_df)
    chosen = select_curve_cells(cells_df, stable_df, metric=metric)
    if chosen.empty:
        raise FigureSkipped("no configuration has a run with a verdict")
    runs = runs_df[runs_df["status"].isin(["completed", "diverged"])].copy()
    # cell ids are numbered over the whole runs table; a task's rows carry them along
    cell_ids = runs_df["cell"] if "cell" in runs_df.columns else cell_index(runs_df)
    runs["cell"] = cell_ids.loc[runs.index]
    chosen["__opt"] = _obj(chosen["optim.name"]) if "optim.name" in chosen else "all runs"
    if "clip.method" in chosen:
        method_rank = chosen["clip.method"].map(_method_sort_key)
    else:
        method_rank = pd.Series([(0, "")] * len(chosen), index=chosen.index, dtype=object)
    chosen["__order"] = list(zip(method_rank, chosen["threshold"].fillna(-1.0), strict=True))
    runs = runs.merge(chosen[["cell", "label", "__opt"]], on="cell", how="inner")
    # arrays, not a frame with a run_dir string per row: ~300 runs x 10,000 steps here
    data = read_columns(runs_dir, runs["run_dir"], ("train_loss", "val_loss", "val_metric"))
    if not len(data):
        raise FigureSkipped("the selected runs have no readable metrics")
    by_dir = runs.assign(run_dir=runs["run_dir"].astype(str)).drop_duplicates("run_dir")
    by_dir = by_dir.set_index("run_dir").loc[data.ids]
    run_label = np.asarray(_obj(by_dir["label"]), dtype=object)
    run_opt = np.asarray(_obj(by_dir["__opt"]), dtype=object)
    panels = _curve_panels(metric, data.values["val_metric"])
    opts = list(dict.fromkeys(chosen["__opt"]))
    labels_all = list(dict.fromkeys(chosen["label"]))
    colors = sns.color_palette("tab10", max(10, len(labels_all)))
    palette = {lab: tuple(colors[i % len(colors)]) for i, lab in enumerate(labels_all)}
    tidy = []
    with _style():
        fig = Figure(figsize=(10.5, 3.3 * len(opts) + 0.6), layout="constrained")
        axes = fig.subplots(len(opts), 2, squeeze=False)
        for r, opt in enumerate(opts):
            rows = np.isin(data.run, np.flatnonzero(run_opt == opt))
            mine = chosen[chosen["__opt"] == opt]
            lr_star = mine["optim.lr"].iloc[0]
            order = list(dict.fromkeys(mine.sort_values("__order", kind="stable")["label"]))
            firsts: list[list[float]] = [[], []]
            lows: list[list[float]] = [[], []]
            highs: list[list[float]] = [[], []]
            for c, (value, name, unit) in enumerate(panels):
                ax = axes[r, c]
                run, step, means = binned_run_means(
                    data.run[rows], data.step[rows], data.values[value][rows]
                )
                st = _seed_stats(run_label[run], step, means)
                st["optimizer"] = opt
                st["metric"] = value
                tidy.append(st)
                for lab in order:
                    s = st[st["label"] == lab]
                    if s.empty:
                        continue
                    col = palette[lab]
                    n_all = int(s["n"].max())
                    full = s["mean"].where(s["n"] == n_all)
                    # evaluations are sparse (every eval_every steps): show each point
                    marker = "o" if len(s) <= 30 else None
                    ax.plot(s["step"], full, color=col, label=lab, lw=1.4, marker=marker, ms=4)
                    if (s["n"] < n_all).any():
                        ax.plot(s["step"], s["mean"], color=col, lw=1.0, ls=":", alpha=0.8,
                                marker=marker, ms=3)
                    full_n = (s["n"] == n_all).to_numpy()
                    ax.fill_between(
                        s["step"], s["lo"], s["hi"], where=full_n, color=col, alpha=0.15, lw=0
                    )
                    firsts[c].append(float(s["mean"].iloc[0]))
                    lows[c].append(float(s["mean"].min()))
                    highs[c].append(float(s["mean"].max()))
                ax.set_title(f"{fmt.optimizer(opt)}, lr {fmt.lr(lr_star)}: {name}")
                ax.set_xlabel("optimizer step")
                ax.set_ylabel(f"{name} ({unit})")
            if metric.is_text:
                # cross-entropy on both panels, in the same units: one cut for both
                _set_limits(axes[r], firsts[0] + firsts[1], lows[0] + lows[1])
            else:  # a loss, or a metric that falls as the model learns: cut each panel
                for c, (value, _, _) in enumerate(panels):
                    if value != "val_metric" or metric.lower_is_better:
                        _set_limits([axes[r, c]], firsts[c], lows[c], allow_log=True)
                    elif lows[c]:  # a rising metric: the means' range, not the wide bands
                        lo, hi = float(np.nanmin(lows[c])), float(np.nanmax(highs[c]))
                        pad = 0.08 * (hi - lo) if hi > lo else 0.05 * max(abs(hi), 1e-6)
                        if np.isfinite(lo) and np.isfinite(hi):
                            axes[r, c].set_ylim(lo - pad, hi + pad)
            axes[r, 1].set_xlim(axes[r, 0].get_xlim())  # same steps on both panels
            handles, labs = axes[r, 0].get_legend_handles_labels()
            if handles:  # where a falling (rising) curve has left room: top (bottom) right
                rising = panels[1][0] == "val_metric" and not metric.lower_is_better
                loc = "lower right" if rising else "upper right"
                axes[r, 1].legend(handles, labs, title="clip setting", loc=loc, frameon=True)
        fig.suptitle("Loss curves: mean over seeds with 95% t band")
    data = pd.concat(tidy, ignore_index=True) if tidy else pd.DataFrame()
    if metric.is_text:
        what = "Training (left) and validation (right) cross-entropy vs optimizer step"
        cut = "The y axis is cut at 1.3x the initial loss, so exploding runs leave the plot."
    else:
        right = panels[1][1]
        what = (
            f"Training loss (left, in the task's own units) and {right} (right"
            + (f"; {metric.unit}, {metric.direction}" if panels[1][0] == "val_metric" else "")
            + ") vs optimizer step"
        )
        cut = (
            "Loss axes are cut at 1.3x the initial value, so exploding runs leave the plot; "
            "values spanning two orders of magnitude are on a log scale."
        )
    caption = (
        f"{what}; line = mean over seeds, band = 95% t interval. For each optimizer, the "
        "largest learning rate at which some clip setting was stable, with up to "
        f"{MAX_CURVE_CONFIGS} clip settings at that rate. The mean at a step is over the runs "
        "still finite there: once a seed has dropped out by diverging, the line turns dotted "
        f"(mean of the survivors) and the band stops. {cut}"
    )
    return Plot(fig, data, caption, palette)


# --------------------------------------------------------------------------- gradient norms


def grad_norm_samples(
    runs_df: pd.DataFrame,
    runs_dir: str | os.PathLike[str],
    max_points: int = MAX_ECDF_POINTS,
    seed: int = 0,
) -> pd.DataFrame:
    """Long table (clip_method, kind in {pre, post}, value) of finite positive norms.

    Runs with a verdict only; each (method, kind) group is subsampled without
    replacement to at most ``max_points`` values (deterministic for ``seed``): an ECDF
    of 20,000 points is indistinguishable from one of ten million at figure size.
    Selection is on arrays (one method code per run), never on a string per row.
    """
    cols = ["clip_method", "kind", "value"]
    runs = runs_df[runs_df["status"].isin(["completed", "diverged"])]
    if "clip.method" in runs.columns:
        methods = _obj(runs["clip.method"]).fillna("unknown")
    else:  # a config without clip keys: one group
        methods = pd.Series("all runs", index=runs.index, dtype=object)
    data = read_columns(
        runs_dir, runs["run_dir"], ("grad_norm_pre", "grad_norm_post"), steps=False
    )
    if not len(data):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    method_of = dict(zip(runs["run_dir"].astype(str), methods, strict=True))
    run_code, names = pd.factorize(pd.Series([method_of[i] for i in data.ids], dtype=object))
    small = np.int8 if len(names) < 128 else np.int32  # cheaper passes over 10^7 rows
    row_method = run_code.astype(small)[data.run]
    parts = []
    rng = np.random.default_rng(seed)
    for kind, col in (("pre", "grad_norm_pre"), ("post", "grad_norm_post")):
        v = data.values[col]
        with np.errstate(invalid="ignore"):
            ok = v > 0  # NaN compares False
        ok &= v < np.inf
        v, m = v[ok], row_method[ok]
        for k in pd.unique(m):  # methods in order of first appearance
            idx = np.flatnonzero(m == k)
            if len(idx) > max_points:
                idx = idx[np.sort(rng.choice(len(idx), size=max_points, replace=False))]
            parts.append(
                pd.DataFrame(
                    {"clip_method": np.full(len(idx), names[k], dtype=object),
                     "kind": kind, "value": v[idx]}
                )
            )
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    out = pd.concat(parts, ignore_index=True)
    out["clip_method"] = _obj(out["clip_method"])
    out["kind"] = _obj(out["kind"])
    return out


def grad_norm_distributions(runs_df: pd.DataFrame, runs_dir: str | os.PathLike[str]) -> Plot:
    """ECDF of pre- and post-clip global gradient norms per clip method (log x)."""
    data = grad_norm_samples(runs_df, runs_dir)
    if data.empty:
        raise FigureSkipped("no finite positive gradient norms were recorded")
    methods = _methods(data["clip_method"])
    palette = clip_palette(methods)
    with _style():
        fig = Figure(figsize=(10.5, 4.0), layout="constrained")
        axes = fig.subplots(1, 2, sharex=True, sharey=True)
        for ax, kind, name in (
            (axes[0], "pre", "before clipping"),
            (axes[1], "post", "after clipping"),
        ):
            sub = data[data["kind"] == kind]
            present = [m for m in methods if (sub["clip_method"] == m).any()]
            if present:
                sns.ecdfplot(
                    data=sub,
                    x="value",
                    hue="clip_method",
                    hue_order=present,
                    palette={m: palette[m] for m in present},
                    log_scale=True,
                    ax=ax,
                )
                leg = ax.get_legend()
                if leg is not None:
                    leg.set_title("clip method")
            ax.set_title(f"Gradient norm {name}")
            ax.set_xlabel("global gradient L2 norm (log scale)")
            ax.set_ylabel("fraction of optimizer steps (ECDF)")
        fig.suptitle("Distribution of per-step gradient norms by clip method")
    caption = (
        "Empirical CDF of the global L2 gradient norm at every logged optimizer step, before "
        "(left) and after (right) clipping, pooled over all runs of each clip method (thresholds, "
        f"learning rates and seeds together; at most {MAX_ECDF_POINTS:,} steps sampled per curve). "
        "Non-finite norms are left out."
    )
    return Plot(fig, data, caption, palette)


# --------------------------------------------------------------------------- per-layer norms


#: (column of param_metrics.parquet, y-axis label) of the per-layer figure's two rows.
PARAM_ROWS: tuple[tuple[str, str], ...] = (
    ("grad_norm", "gradient L2 norm before clipping\n(median over seeds, log scale)"),
    ("update_ratio", "update / weight norm ‖Δw‖/‖w‖\n(median over seeds, log scale)"),
)


def param_norm_stats(
    params: pd.DataFrame, value: str, max_points: int = MAX_CURVE_POINTS
) -> pd.DataFrame:
    """Median over runs of ``value`` per (label, name, step): the per-layer figure's lines.

    Only finite positive values count (the axis is logarithmic; a run that went NaN stops
    contributing). Runs logged on more than ``max_points`` distinct steps are binned
    first (each run's median per bin), as the loss curves are. Columns: label, name,
    step, median, n (runs contributing).
    """
    cols = ["label", "name", "step", "median", "n"]
    df = params[["label", "run_dir", "name", "step", value]]
    v = df[value].to_numpy(dtype=float)
    df = df[np.isfinite(v) & (v > 0)]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("label", "name") else float)
                             for c in cols})
    steps = np.sort(df["step"].unique())
    width = max(1, math.ceil(len(steps) / max_points))
    if width > 1:  # equal-count bins over the logged steps, placed at their mean step
        edges = steps[::width]
        idx = np.searchsorted(edges, df["step"].to_numpy(), side="right") - 1
        centre = pd.Series(steps).groupby(np.arange(len(steps)) // width).mean().to_numpy()
        df = df.assign(step=centre[idx])
    per_run = df.groupby(["label", "name", "run_dir", "step"], sort=False)[value].median()
    g = per_run.groupby(["label", "name", "step"], sort=True).agg(["median", "count"])
    g = g.reset_index()
    return pd.DataFrame(
        {
            "label": _obj(g["label"]),
            "name": _obj(g["name"]),
            "step": g["step"].astype(float),
            "median": g["median"],
            "n": g["count"],
        }
    )


def param_palette(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per parameter tensor, in the model's order (tab20 past 10 tensors)."""
    colors = sns.color_palette("tab10" if len(names) <= 10 else "tab20", max(len(names), 1))
    return {n: tuple(colors[i % len(colors)]) for i, n in enumerate(names)}  # type: ignore


def _runs_with_param_data(runs_df: pd.DataFrame) -> pd.DataFrame:
    runs = runs_df[runs_df["status"].isin(["completed", "diverged"])]
    if "param_metrics_rows" in runs.columns:  # collect_runs read the footers already
        runs = runs[runs["param_metrics_rows"].fillna(0) > 0]
    return runs


def param_grad_norms(
    runs_df: pd.DataFrame,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    runs_dir: str | os.PathLike[str],
    metric: MetricInfo | None = None,
    max_configs: int = MAX_PARAM_CONFIGS,
) -> Plot:
    """Per-layer gradient norms (and update/weight ratios) over time, one line per tensor.

    The configurations are chosen as for the loss curves (:func:`select_curve_cells`),
    among the cells that logged per-parameter norms: per optimizer, the largest stable
    learning rate, unclipped first, at most ``max_configs``. One column per
    configuration; per optimizer a row of pre-clip gradient norms and a row of
    update/weight ratios, both the median over seeds at each logged step.
    Raises :class:`FigureSkipped` when no run logged per-parameter norms.
    """
    runs = _runs_with_param_data(runs_df).copy()
    if runs.empty:
        raise FigureSkipped(
            "no run logged per-parameter norms (set trainer.param_log_every > 0 to get them)"
        )
    cell_ids = runs_df["cell"] if "cell" in runs_df.columns else cell_index(runs_df)
    runs["cell"] = cell_ids.loc[runs.index]
    metric = metric or metric_of(cells_df)
    chosen = select_curve_cells(
        cells_df[cells_df["cell"].isin(set(runs["cell"]))], stable_df, max_configs, metric
    )
    if chosen.empty:
        raise FigureSkipped("no configuration with per-parameter norms has a run with a verdict")
    chosen["__opt"] = _obj(chosen["optim.name"]) if "optim.name" in chosen else "all runs"
    # panels in the loss curves' legend order: unclipped, then by method and threshold
    rank = (
        chosen["clip.method"].map(_method_sort_key)
        if "clip.method" in chosen
        else pd.Series([(0, "")] * len(chosen), index=chosen.index, dtype=object)
    )
    chosen["__order"] = list(zip(rank, chosen["threshold"].fillna(-1.0), strict=True))
    chosen = chosen.sort_values("__order", kind="stable")
    runs = runs.merge(chosen[["cell", "label", "__opt"]], on="cell", how="inner")
    errors: list[tuple[str, str]] = []
    params = load_param_metrics(runs_dir, runs["run_dir"], [c for c, _ in PARAM_ROWS],
                                errors=errors)
    if params.empty and not errors:  # runs_df did not say which runs have files
        raise FigureSkipped(
            "no run logged per-parameter norms (set trainer.param_log_every > 0 to get them)"
        )
    if params.empty:
        raise FigureSkipped(
            f"the selected runs' per-parameter files could not be read ({len(errors)} unreadable)"
        )
    params = params.merge(runs[["run_dir", "label", "__opt"]], on="run_dir", how="inner")
    params["label"] = _obj(params["label"])
    params["name"] = _obj(params["name"])
    names_all = list(dict.fromkeys(params["name"]))  # the model's order (first run first)
    names = names_all[:MAX_PARAM_LINES]
    params = params[params["name"].isin(set(names))]
    palette = param_palette(names)
    opts = list(dict.fromkeys(chosen["__opt"]))
    ncols = max(int((chosen["__opt"] == o).sum()) for o in opts)
    tidy = []
    with _style():
        fig = Figure(
            figsize=(3.4 * ncols + 2.6, 2.9 * len(PARAM_ROWS) * len(opts) + 0.6),
            layout="constrained",
        )
        axes = fig.subplots(len(PARAM_ROWS) * len(opts), ncols, squeeze=False, sharex="col")
        for o, opt in enumerate(opts):
            mine = chosen[chosen["__opt"] == opt]
            for r, (value, ylabel) in enumerate(PARAM_ROWS):
                row = o * len(PARAM_ROWS) + r
                st = param_norm_stats(params[params["__opt"] == opt], value)
                st["optimizer"], st["metric"] = opt, value
                tidy.append(st)
                for c in range(ncols):
                    ax = axes[row, c]
                    if c >= len(mine):
                        ax.set_visible(False)
                        continue
                    rec = mine.iloc[c]
                    sub = st[st["label"] == rec["label"]]
                    present = [n for n in names if (sub["name"] == n).any()]
                    if present:
                        sns.lineplot(
                            data=sub,
                            x="step",
                            y="median",
                            hue="name",
                            hue_order=present,
                            palette={n: palette[n] for n in present},
                            estimator=None,
                            marker="o" if sub["step"].nunique() <= 30 else None,
                            markersize=3.5,
                            linewidth=1.3,
                            legend=False,
                            ax=ax,
                        )
                        ax.set_yscale("log")
                    else:
                        ax.text(0.5, 0.5, "no finite values", ha="center", va="center",
                                transform=ax.transAxes, color="0.4")
                    n_runs = int((runs["cell"] == rec["cell"]).sum())
                    ax.set_title(
                        f"{fmt.optimizer(opt)}, lr {fmt.lr(rec['optim.lr'])}: {rec['label']}"
                        f" (n={n_runs})"
                    )
                    ax.set_xlabel("optimizer step")
                    # the first column says how values were aggregated; all say what they are
                    ax.set_ylabel(ylabel if c == 0 else ylabel.split("\n")[0])
        handles = [
            mpl.lines.Line2D([], [], color=palette[n], lw=1.6, marker="o", ms=3.5, label=n)
            for n in names
        ]
        fig.legend(handles=handles, title="parameter tensor", loc="outside right center")
        fig.suptitle("Per-layer gradient norms over time: median over seeds")
    data = pd.concat(tidy, ignore_index=True) if tidy else pd.DataFrame()
    left_out = names_all[MAX_PARAM_LINES:]
    caption = (
        "For each parameter tensor (one line each), the median over seeds of its gradient's "
        "L2 norm before clipping (top row of each optimizer) and of the ratio of its update "
        "to its weights, ‖Δw‖/‖w‖ after the step (bottom row), at every step the runs logged "
        "(trainer.param_log_every), on log scales. Configurations are chosen as for the loss "
        "curves, among those that logged per-parameter norms: per optimizer, the largest "
        f"learning rate at which some clip setting was stable, up to {max_configs} clip "
        "settings; n counts the seeds that logged per-parameter norms (a run that diverged "
        "before its first logged step has none). A seed stops contributing once its values "
        "are non-finite, so late points of diverging configurations are medians of the "
        "survivors. Tensors with identical gradients (an LSTM's bias_ih and bias_hh) draw "
        "coinciding lines."
        + (f" {len(left_out)} more tensors are not drawn: {', '.join(left_out)}."
           if left_out else "")
        + (f" {len(errors)} run(s) with an unreadable per-parameter file are left out (listed "
           "at the end of the report)." if errors else "")
    )
    return Plot(fig, data, caption, palette)


# --------------------------------------------------------------------------- frontier


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


def frontier(cells_df: pd.DataFrame, metric: MetricInfo | None = None) -> Plot:
    """Divergence rate vs mean final metric, one point per cell.

    Configurations where every seed diverged have no final value; they are drawn as
    hollow markers in a strip above the plot (at their divergence rate, 1), one row per
    optimizer and clip setting naming the learning rates, so divergence stays visible.
    ``metric`` defaults to the one metric of ``cells_df``.
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
    labels, rows = diverged_strip_rows(gone, facet_columns(cells_df))
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


# --------------------------------------------------------------------------- driver


def figure_title(kind: str, metric: MetricInfo) -> str:
    """The heading a document gives a figure."""
    return {
        "divergence_heatmap": "Divergence rate",
        "quality_heatmap": f"Final validation {metric.long}",
        "loss_curves": "Loss curves",
        "grad_norms": "Gradient-norm distributions",
        "param_grad_norms": "Per-layer gradient norms over time",
        "frontier": "Stability–quality frontier",
    }[kind]


def _save(fig: Figure, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=DPI, format="png")
    os.replace(tmp, path)


def _is_report_figure(stem: str) -> bool:
    """A PNG name this module writes (so a re-render may remove it when it is stale)."""
    base = stem.split("-", 1)[0]
    return base in FIGURE_KINDS or base.endswith("_heatmap")


def make_figures(
    runs_df: pd.DataFrame,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    runs_dir: str | os.PathLike[str],
    fig_dir: str | os.PathLike[str],
) -> list[FigureResult]:
    """Draw every figure into ``fig_dir``; a figure that cannot be drawn becomes a note.

    One set of figures per task group (task and metric) when the runs hold several,
    named ``<name>-<task>`` and titled with the task; otherwise one set named by kind.
    A report figure left in ``fig_dir`` by an earlier render that this one did not
    write is removed, so a directory never shows a stale figure.
    """
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    # number cells over the whole table, as cells() did, before splitting it by task
    runs_df = runs_df.assign(cell=cell_index(runs_df))
    groups = split_by_task(runs_df, cells_df, stable_df)
    if not groups:  # nothing readable: one set of notes, named as for text runs
        empty = [runs_df, cells_df, stable_df]
        groups = [(TaskGroup(None, BPC, "all_runs"), empty)]
    multi = len(groups) > 1
    results: list[FigureResult] = []
    for group, (runs_g, cells_g, stable_g) in groups:
        metric = group.metric
        builders: dict[str, Callable[[], Plot]] = {
            "divergence_heatmap": lambda c=cells_g: divergence_heatmap(c),
            "quality_heatmap": lambda c=cells_g, m=metric: metric_heatmap(c, m),
            "loss_curves": lambda r=runs_g, c=cells_g, s=stable_g, m=metric: loss_curves(
                r, c, s, runs_dir, m
            ),
            "grad_norms": lambda r=runs_g: grad_norm_distributions(r, runs_dir),
            "param_grad_norms": lambda r=runs_g, c=cells_g, s=stable_g, m=metric: (
                param_grad_norms(r, c, s, runs_dir, m)
            ),
            "frontier": lambda c=cells_g, m=metric: frontier(c, m),
        }
        for kind in FIGURE_KINDS:
            name = figure_name(kind, group, multi)
            title = figure_title(kind, metric)
            task = group if multi else None
            try:
                plot = builders[kind]()
            except FigureSkipped as exc:
                results.append(
                    FigureResult(name, title, "", note=f"skipped: {exc}", kind=kind, task=task)
                )
                continue
            except Exception as exc:  # a figure must not cost the whole report  # noqa: BLE001
                warnings.warn(f"figure {name} failed: {exc!r}", RuntimeWarning, stacklevel=2)
                note = f"failed: {type(exc).__name__}: {exc}"
                results.append(FigureResult(name, title, "", note=note, kind=kind, task=task))
                continue
            if multi:
                fig = plot.figure
                fig.suptitle(f"{group.label} ({metric.label}) — {fig.get_suptitle()}")
            path = fig_dir / f"{name}.png"
            _save(plot.figure, path)
            results.append(
                FigureResult(name, title, plot.caption, path=path, kind=kind, task=task)
            )
    written = {f.path.name for f in results if f.path is not None}
    for old in fig_dir.glob("*.png"):
        if old.name not in written and _is_report_figure(old.stem):
            old.unlink(missing_ok=True)
    return results
