"""Draw every registered figure, once per task group, into a figures directory."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd

from seqbench.report.figures import registry
from seqbench.report.figures._common import (
    FigureNotApplicable,
    FigureResult,
    FigureSkipped,
    _save,
)
from seqbench.report.figures.registry import FigureInput, figure_name
from seqbench.report.layout import Layout
from seqbench.report.stats import cell_index
from seqbench.report.task_groups import BPC, TaskGroup, split_by_task


def _is_report_figure(stem: str) -> bool:
    """A PNG name a registered figure writes (so a re-render may remove it when it is stale)."""
    base = stem.split("-", 1)[0]
    return any(spec.owns(base) for spec in registry.specs())


def make_figures(
    runs_df: pd.DataFrame,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    runs_dir: str | os.PathLike[str],
    fig_dir: str | os.PathLike[str],
    layout: Layout | None = None,
) -> list[FigureResult]:
    """Draw every figure into ``fig_dir``; a figure that cannot be drawn becomes a note.

    The figures are those of the registry (:mod:`.registry`), in its order. One set of
    figures per task group (task and metric) when the runs hold several, named
    ``<name>-<task>`` and titled with the task; otherwise one set named by kind.
    A report figure left in ``fig_dir`` by an earlier render that this one did not
    write is removed, so a directory never shows a stale figure. ``runs_df`` may carry
    its ``cell`` column already (:func:`seqbench.report.layout.enrich`); ``layout`` is the
    report's (derived from the tables when not given).
    """
    fig_dir = Path(fig_dir)
    fig_dir.mkdir(parents=True, exist_ok=True)
    # number cells over the whole table, as cells() did, before splitting it by task
    if "cell" not in runs_df.columns:
        runs_df = runs_df.assign(cell=cell_index(runs_df))
    layout = layout if layout is not None else Layout.of(runs_df, cells_df)
    groups = split_by_task(runs_df, cells_df, stable_df)
    if not groups:  # nothing readable: one set of notes, named as for text runs
        empty = [runs_df, cells_df, stable_df]
        groups = [(TaskGroup(None, BPC, "all_runs"), empty)]
    multi = len(groups) > 1
    results: list[FigureResult] = []
    for group, (runs_g, cells_g, stable_g) in groups:
        metric = group.metric
        inp = FigureInput(runs_g, cells_g, stable_g, runs_dir, metric, group,
                          layout.within(cells_g))
        for spec in registry.specs():
            kind = spec.kind
            name = figure_name(kind, group, multi)
            title = spec.title_for(metric)
            task = group if multi else None
            try:
                plot = spec.build(inp)
            except FigureNotApplicable:
                continue
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
