"""Quality heatmap: how good the finished runs are, where they are stable.

Why: next to the divergence heatmap it answers "how good is it there". Quality is in
the task's own metric (bits per character, MSE, accuracy, ...): the file is named
``<metric>_heatmap`` (``bpc_heatmap``, ``mse_heatmap``), the colour bar carries the
metric's name and unit, and the scale runs from bad (dark) to good (light) whichever
direction is better - logarithmic when positive values span :data:`LOG_SPAN` or more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize

from seqbench.report import _format as fmt
from seqbench.report.figures._common import LOG_SPAN, FigureSkipped, Plot
from seqbench.report.figures._heatmap import _heatmap
from seqbench.report.figures.registry import FigureInput, register
from seqbench.report.task_groups import MetricInfo, metric_of


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


def metric_heatmap(cells_df: pd.DataFrame, metric: MetricInfo | None = None,
                   facets: Sequence[str] | None = None) -> Plot:
    """Mean final validation metric over finished seeds; blank where nothing finished.

    ``metric`` defaults to the one metric of ``cells_df``; a table that mixes metrics
    raises :class:`~seqbench.report.task_groups.MixedMetricsError`.
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
        facets=facets,
    )
    caption = (
        f"Mean final validation {metric.long} ({metric.unit}; {metric.direction}; lighter "
        "squares are better) over the seeds that finished, with n the number of finished "
        "seeds. Diverged runs have no final value and are not counted; grey squares had no "
        "finished run (nothing is imputed)."
    )
    return Plot(fig, data, caption)


@register(
    "quality_heatmap",
    title=lambda metric: f"Final validation {metric.long}",
    file="{metric}_heatmap",
)
def build(inp: FigureInput) -> Plot:
    return metric_heatmap(inp.cells_df, inp.metric, inp.layout.facets)
