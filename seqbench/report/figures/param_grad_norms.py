"""Per-layer gradient norms: *which* tensors the global norm comes from.

Where runs logged per-parameter norms (``trainer.param_log_every``), this figure shows
which layer explodes first, and how big each update is against its weights; without
such runs it is skipped with a note saying how to get it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from seqbench.report import _format as fmt
from seqbench.report.collect import load_param_metrics
from seqbench.report.figures._common import (
    MAX_CURVE_POINTS,
    FigureSkipped,
    Plot,
    _method_sort_key,
    _obj,
    _style,
    select_curve_cells,
)
from seqbench.report.figures.registry import FigureInput, register
from seqbench.report.stats import cell_index
from seqbench.report.task_groups import MetricInfo, metric_of
from seqbench.rundir import TERMINAL

#: At most this many configurations (panels per row pair) in the per-layer figure, and
#: this many parameter tensors (lines) per panel: the rest are named in the caption.
MAX_PARAM_CONFIGS = 4
MAX_PARAM_LINES = 20


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
    runs = runs_df[runs_df["status"].isin(TERMINAL)]
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
        f"learning rate at which some clip setting kept training finite, up to {max_configs} clip "
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


@register("param_grad_norms", title="Per-layer gradient norms over time")
def build(inp: FigureInput) -> Plot:
    return param_grad_norms(inp.runs_df, inp.cells_df, inp.stable_df, inp.runs_dir, inp.metric)
