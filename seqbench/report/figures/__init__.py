"""Figures of a report (seaborn / matplotlib, PNG).

Why these: the first figure - final validation quality against learning rate, a line
per clip setting, diverged runs counted and the task's baseline dashed - is the one a
reader looks for first; the heatmaps answer "where is it stable, and how good is it
there", the curves show *how* runs fail, the gradient-norm distributions show what a
clip threshold actually cuts, and the frontier puts stability against quality. Where runs
logged per-parameter norms (``trainer.param_log_every``), the per-layer figure shows
*which* tensors the global norm comes from; where they carried the smoothness probe
(``trainer.smoothness_every``), the smoothness figure (shown in the report's smoothness
section) plots L̂ against ‖∇f‖ along training. Each module's docstring says more.

Quality is in each task's own metric (bpc, MSE, error rate, ...): titles, axis and
colour-bar labels carry its name, unit and direction, and colour scales run from bad
(dark) to good (light) whichever direction is better. A runs directory with several
tasks gets every figure once per task (file ``<name>-<task>.png``): numbers in
different units never share an axis.

Layout: one module per figure kind, each registering one builder in the registry
(:mod:`.registry`: kind -> title, file name, builder); :func:`make_figures`
(:mod:`.driver`) draws whatever is registered, in registration order, which is the
import order below. Adding a figure is adding a module that declares
``@register("kind", title=...)`` over ``def build(inp: FigureInput) -> Plot``, and
importing it here. What several figures share (result types, style, palettes, the
choice of configurations for the curves) is in ``_common``, the heatmap drawing in
``_heatmap``. This package exports only what a report and a figure plug-in need (the
driver, the registry and the result types); a figure's own helpers are imported from
its module (``from seqbench.report.figures.lr_curves import lr_curves``).

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
  metrics are read as arrays, only the runs and columns a figure shows, and curves are
  binned and ECDFs sampled for drawing only (see ``loss_curves`` and ``grad_norms``).
  No statistic in a table or a sentence comes from a sampled or binned value.
"""

from __future__ import annotations

from seqbench.report.figures._common import FigureResult, FigureSkipped, Plot
from seqbench.report.figures.driver import make_figures
from seqbench.report.figures.registry import (
    FigureInput,
    FigureSpec,
    figure_name,
    figure_title,
    kinds,
    register,
    unregister,
)

# isort: off
# Registration order is report order: keep these imports in the order of the report.
import seqbench.report.figures.lr_curves  # noqa: F401 (registers the figure)
import seqbench.report.figures.cost_to_target  # noqa: F401
import seqbench.report.figures.stability_map  # noqa: F401
import seqbench.report.figures.grad_norm_length  # noqa: F401
import seqbench.report.figures.seed_curves  # noqa: F401
import seqbench.report.figures.divergence_heatmap  # noqa: F401
import seqbench.report.figures.quality_heatmap  # noqa: F401
import seqbench.report.figures.loss_curves  # noqa: F401
import seqbench.report.figures.grad_norms  # noqa: F401
import seqbench.report.figures.param_grad_norms  # noqa: F401
import seqbench.report.figures.frontier  # noqa: F401
import seqbench.report.figures.smoothness  # noqa: F401 (in the smoothness section)
import seqbench.report.figures.spike_recovery  # noqa: F401 (in the late-spike section)
# isort: on

__all__ = [
    "FigureInput",
    "FigureResult",
    "FigureSkipped",
    "FigureSpec",
    "Plot",
    "figure_name",
    "figure_title",
    "kinds",
    "make_figures",
    "register",
    "unregister",
]
