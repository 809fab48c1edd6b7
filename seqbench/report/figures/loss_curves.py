"""Loss curves: *how* runs fail - training and validation curves over optimizer steps.

Per optimizer, the largest learning rate at which some clip setting kept training finite
(:func:`~seqbench.report.figures._common.select_curve_cells`), every clip setting there:
mean over seeds with a 95% t band, dotted once a seed has diverged out of the mean.

Cheap on 1,000-run x 10,000-step sweeps (``seqbench.bench.report_scale``): the figure
loads only the runs it shows, as arrays (``collect.read_columns``: only the needed
columns, a run index per row instead of a string), and bins each run to at most
``MAX_CURVE_POINTS`` points before aggregating (a figure cannot show 10,000 points per
run; each point is still the exact mean of every step in its bin).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from seqbench.report import _format as fmt
from seqbench.report.collect import read_columns
from seqbench.report.figures._common import (
    MAX_CURVE_CONFIGS,
    MAX_CURVE_POINTS,
    FigureSkipped,
    Plot,
    _log_worthy,
    _method_sort_key,
    _obj,
    _style,
    select_curve_cells,
)
from seqbench.report.figures.registry import FigureInput, register
from seqbench.report.stats import cell_index, t_interval_from_summary
from seqbench.report.task_groups import MetricInfo, metric_of
from seqbench.rundir import TERMINAL

NATS = "nats/char"
TASK_UNITS = "task units"


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
    facets: Sequence[str] | None = None,
) -> Plot:
    """Training loss and a validation curve vs step for a legible subset of configurations.

    ``metric`` (default: the one metric of ``cells_df``) decides the panels and their
    units (see :func:`_curve_panels`).
    """
    metric = metric or metric_of(cells_df)
    chosen = select_curve_cells(cells_df, stable_df, metric=metric, facets=facets)
    if chosen.empty:
        raise FigureSkipped("no configuration has a run with a verdict")
    runs = runs_df[runs_df["status"].isin(TERMINAL)].copy()
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
        "largest learning rate at which some clip setting kept training finite, with up to "
        f"{MAX_CURVE_CONFIGS} clip settings at that rate. The mean at a step is over the runs "
        "still finite there: once a seed has dropped out by diverging, the line turns dotted "
        f"(mean of the survivors) and the band stops. {cut}"
    )
    return Plot(fig, data, caption, palette)


@register("loss_curves", title="Loss curves")
def build(inp: FigureInput) -> Plot:
    return loss_curves(inp.runs_df, inp.cells_df, inp.stable_df, inp.runs_dir, inp.metric,
                       inp.layout.facets)
