"""Divergence-rate heatmap: where (threshold x learning rate) training is stable.

Why: it answers the first question of a clipping sweep - which clip thresholds let a
learning rate train without diverging - per optimizer and clip method, with the number
of runs behind each rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.colors import Normalize

from seqbench.report import _format as fmt
from seqbench.report.figures._common import Plot
from seqbench.report.figures._heatmap import _heatmap
from seqbench.report.figures.registry import FigureInput, register


def divergence_heatmap(cells_df: pd.DataFrame, facets: Sequence[str] | None = None) -> Plot:
    """Divergence rate per (threshold, lr), one panel per optimizer, clip method and facet."""

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
        facets=facets,
    )
    caption = (
        "Fraction of seeds that diverged (non-finite loss or gradient, or an exploded loss) "
        "for each clip threshold (rows) and learning rate (columns); each square shows the "
        "rate and the number n of runs that reached a verdict. Grey: not run, or no run has "
        "finished yet."
    )
    return Plot(fig, data, caption)


@register("divergence_heatmap", title="Divergence rate")
def build(inp: FigureInput) -> Plot:
    return divergence_heatmap(inp.cells_df, inp.layout.facets)
