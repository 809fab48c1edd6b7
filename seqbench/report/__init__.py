"""Reports: what a sweep says, with its uncertainty.

A report is a pure function of run directories - ``collect`` reads them, ``stats``
aggregates seeds into cells with intervals, ``figures`` draws, ``render`` writes
Markdown, HTML and CSV - so it can be re-rendered at any time, on any machine,
without retraining. :func:`make_report` runs the whole chain.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from seqbench.report.collect import (
    CollectResult,
    ReportInputError,
    collect_runs,
    load_curves,
    load_param_metrics,
)
from seqbench.report.cost import add_cost
from seqbench.report.figures import FigureResult, make_figures
from seqbench.report.layout import Layout, enrich
from seqbench.report.lr_summary import lr_summary
from seqbench.report.outcomes import fill_outcomes
from seqbench.report.render import write_documents
from seqbench.report.stats import cells

__all__ = [
    "PHASES",
    "CollectResult",
    "FigureResult",
    "ReportInputError",
    "Layout",
    "ReportResult",
    "cells",
    "collect_runs",
    "lr_summary",
    "load_curves",
    "load_param_metrics",
    "make_report",
]


@dataclass
class ReportResult:
    """What :func:`make_report` wrote and what it found.

    ``paths``: report_md, report_html, runs_csv, cells_csv, lr_summary_csv (and
    smoothness_csv when runs carried the smoothness probe).
    ``figures``: name -> PNG path for every figure drawn; ``skipped``: name -> note for
    figures that could not be drawn. Names are the figure kinds (``lr_curves``,
    ``divergence_heatmap``, ``<metric>_heatmap``, ``loss_curves``, ``grad_norms``,
    ``param_grad_norms``, ``frontier``, ``smoothness``), suffixed with
    ``-<task>`` when the runs hold several tasks (see ``figures.figure_name``).
    ``n_runs`` counts readable run directories (incomplete ones included);
    ``n_found`` = ``n_runs`` + ``n_corrupt``. ``n_damaged`` counts runs (in ``n_runs``)
    whose optional param_metrics.parquet is unreadable.
    """

    out_dir: Path
    paths: dict[str, Path]
    figures: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    n_found: int = 0
    n_runs: int = 0
    n_completed: int = 0
    n_diverged: int = 0
    n_incomplete: int = 0
    n_corrupt: int = 0
    n_damaged: int = 0
    n_cells: int = 0

    @property
    def written(self) -> list[Path]:
        """Every file written, documents first."""
        return [*self.paths.values(), *self.figures.values()]


#: The phases :func:`make_report` times (``timings`` keys), in order.
PHASES: tuple[str, ...] = ("collect", "stats", "figures", "render")


def make_report(
    runs_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    title: str | None = None,
    timings: dict[str, float] | None = None,
    target: float | str | None = None,
) -> ReportResult:
    """Collect ``runs_dir``, aggregate, draw and write the report into ``out_dir``.

    Raises :class:`ReportInputError` when ``runs_dir`` does not exist or holds no run
    directory. Corrupt and incomplete runs are reported, not fatal; a figure that
    cannot be drawn from the data is replaced by a note.

    ``timings``, if given, is filled with the wall seconds of each phase (:data:`PHASES`)
    and their ``total``: the scale benchmark (``seqbench.bench.report_scale``) reads
    them, so a slow phase is named instead of guessed.

    ``target``: the time-to-target's target (:mod:`seqbench.report.cost`): a value of the
    metric, or a fraction (a string, ``"0.9"``) of the way from the baseline to each
    context's best; default 0.9 of the way.
    """
    clock = _Clock(timings)
    collected = collect_runs(runs_dir)
    # outcomes (and baselines) of runs written before runs recorded them
    collected.runs, collected.derived = fill_outcomes(collected.runs, collected.runs_dir)
    clock.lap("collect")
    # one runs table (threshold and cell computed once) and one layout for every stage
    collected.runs = runs = enrich(collected.runs)
    cells_df = cells(runs)
    layout = Layout.of(runs, cells_df)
    cells_df = add_cost(cells_df, runs, collected.runs_dir, layout.context, target)
    stable_df = lr_summary(cells_df, runs)
    clock.lap("stats")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = make_figures(runs, cells_df, stable_df, collected.runs_dir, out / "figures",
                        layout=layout)
    clock.lap("figures")
    name = title or f"seqbench report: {Path(runs_dir).resolve().name}"
    paths = write_documents(collected, runs, cells_df, stable_df, figs, out, title=name,
                            layout=layout)
    clock.lap("render")
    status = collected.runs["status"].astype(object) if not collected.runs.empty else None
    return ReportResult(
        out_dir=out,
        paths=paths,
        figures={f.name: f.path for f in figs if f.path is not None},
        skipped={f.name: f.note or "" for f in figs if f.path is None},
        n_found=collected.n_found,
        n_runs=len(collected.runs),
        n_completed=int((status == "completed").sum()) if status is not None else 0,
        n_diverged=int((status == "diverged").sum()) if status is not None else 0,
        n_incomplete=len(collected.incomplete),
        n_corrupt=len(collected.corrupt),
        n_damaged=len(collected.damaged),
        n_cells=int((cells_df["n"] > 0).sum()) if not cells_df.empty else 0,
    )


class _Clock:
    """Lap timer writing into an optional dict; a no-op when there is none."""

    def __init__(self, into: dict[str, float] | None) -> None:
        self.into = into
        self.start = self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        if self.into is None:
            return
        now = time.perf_counter()
        self.into[phase] = now - self.last
        self.into["total"] = now - self.start
        self.last = now
