"""Figures of a report (seaborn / matplotlib, PNG).

Why these: the first figure - final validation quality against learning rate, a line
per clip setting, diverged runs counted and the task's baseline dashed - is the one a
reader looks for first; the heatmaps answer "where is it stable, and how good is it
there", the curves show *how* runs fail, the gradient-norm distributions show what a
clip threshold actually cuts, and the frontier puts stability against quality. Where runs
logged per-parameter norms (``trainer.param_log_every``), the per-layer figure shows
*which* tensors the global norm comes from. Each module's docstring says more.

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
``_heatmap``. The modules of ``lr_curves``, ``divergence_heatmap``, ``loss_curves``,
``param_grad_norms`` and ``frontier`` are named as their figure functions, which this
package re-exports: ``figures.frontier`` is the function; the module is
``sys.modules["seqbench.report.figures.frontier"]``.

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

from seqbench.report.collect import load_param_metrics, read_columns
from seqbench.report.figures._common import (
    DPI,
    LOG_SPAN,
    MAX_CURVE_CONFIGS,
    MAX_CURVE_POINTS,
    FigureResult,
    FigureSkipped,
    Plot,
    clip_palette,
    facet_columns,
    select_curve_cells,
)
from seqbench.report.figures._heatmap import MAX_PANELS, heatmap_panels
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
from seqbench.report.stats import cell_index
from seqbench.report.task_groups import BPC, MetricInfo, TaskGroup, metric_of

# isort: off
# Registration order is report order: keep these imports in the order of the report.
from seqbench.report.figures.lr_curves import DIVERGED_LEGEND, lr_curves, setting_styles
import seqbench.report.figures.stability_map  # noqa: F401 (registers the figure)
import seqbench.report.figures.grad_norm_length  # noqa: F401 (registers the figure)
import seqbench.report.figures.seed_curves  # noqa: F401 (registers the figure)
from seqbench.report.figures.divergence_heatmap import divergence_heatmap
from seqbench.report.figures.quality_heatmap import metric_heatmap, quality_cmap
from seqbench.report.figures.loss_curves import (
    NATS,
    TASK_UNITS,
    binned_run_means,
    curve_stats,
    loss_curves,
)
from seqbench.report.figures.grad_norms import (
    MAX_ECDF_POINTS,
    grad_norm_distributions,
    grad_norm_samples,
)
from seqbench.report.figures.param_grad_norms import (
    MAX_PARAM_CONFIGS,
    MAX_PARAM_LINES,
    PARAM_ROWS,
    param_grad_norms,
    param_norm_stats,
    param_palette,
)
from seqbench.report.figures.frontier import (
    DIVERGED_STRIP_LABEL,
    MAX_STRIP_ROWS,
    diverged_strip_rows,
    frontier,
)
# isort: on

#: The kinds of figure a report draws, in order (the figures registered above;
#: :func:`~seqbench.report.figures.registry.kinds` is the live list). The file name of
#: ``quality_heatmap`` is ``<metric>_heatmap`` (``bpc_heatmap``, ``mse_heatmap``); see
#: :func:`figure_name`.
FIGURE_KINDS: tuple[str, ...] = kinds()

__all__ = [
    "BPC",
    "DIVERGED_LEGEND",
    "DIVERGED_STRIP_LABEL",
    "DPI",
    "FIGURE_KINDS",
    "LOG_SPAN",
    "MAX_CURVE_CONFIGS",
    "MAX_CURVE_POINTS",
    "MAX_ECDF_POINTS",
    "MAX_PANELS",
    "MAX_PARAM_CONFIGS",
    "MAX_PARAM_LINES",
    "MAX_STRIP_ROWS",
    "NATS",
    "PARAM_ROWS",
    "TASK_UNITS",
    "FigureInput",
    "FigureResult",
    "FigureSkipped",
    "FigureSpec",
    "MetricInfo",
    "Plot",
    "TaskGroup",
    "binned_run_means",
    "cell_index",
    "clip_palette",
    "curve_stats",
    "diverged_strip_rows",
    "divergence_heatmap",
    "facet_columns",
    "figure_name",
    "figure_title",
    "frontier",
    "grad_norm_distributions",
    "grad_norm_samples",
    "heatmap_panels",
    "kinds",
    "load_param_metrics",
    "loss_curves",
    "lr_curves",
    "make_figures",
    "metric_heatmap",
    "metric_of",
    "param_grad_norms",
    "param_norm_stats",
    "param_palette",
    "quality_cmap",
    "read_columns",
    "register",
    "select_curve_cells",
    "setting_styles",
    "unregister",
]
