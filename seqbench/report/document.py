"""What a report shows, whatever its format: a section per task group, the problem
run directories, and the headings both documents share.

Why a module of its own: the Markdown (``render``) and the HTML page (``html_page``)
must show the same things in the same order; each renders this model in its own markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report import length
from seqbench.report.collect import CollectResult
from seqbench.report.figures import FigureResult
from seqbench.report.layout import Layout, enrich
from seqbench.report.paired import paired_comparisons, paired_table
from seqbench.report.sentences import (
    _counts,
    _seeds_phrase,
    task_sentences,
)
from seqbench.report.sentences import length as length_text
from seqbench.report.sentences.smoothness import FIGURE_KIND as SMOOTHNESS_FIGURE
from seqbench.report.sentences.smoothness import SmoothnessPart
from seqbench.report.sentences.spikes import FIGURE_KIND as SPIKE_FIGURE
from seqbench.report.sentences.spikes import SpikePart
from seqbench.report.tables import (
    _constant_settings,
    cells_note,
    cells_table,
    stable_table,
)
from seqbench.report.task_groups import BPC, TaskGroup, split_by_task


def _problem_items(collected: CollectResult) -> tuple[list[str], list[str]]:
    inc = []
    for r in collected.incomplete.to_dict("records"):
        err = "" if fmt.is_missing(r.get("error")) else f" ({r['error']})"
        inc.append((r["run_dir"], f"{r['status']}{err}"))
    cor = [(r["run_dir"], r["reason"]) for r in collected.corrupt.to_dict("records")]
    return inc, cor  # type: ignore[return-value]


# --------------------------------------------------------------------------- documents


@dataclass
class LengthPart:
    """A section's sequence-length axis: sentences and the two display tables."""

    sentences: list[str]
    summary: pd.DataFrame
    grads: pd.DataFrame

    @classmethod
    def of(cls, runs_df: pd.DataFrame, cells_df: pd.DataFrame) -> LengthPart | None:
        """None when the runs do not vary a length (the section reads as before)."""
        if not length.has_length_axis(cells_df):
            return None
        summary = length.length_summary(cells_df)
        grads = length.grad_norms_by_length(runs_df, cells_df)
        return cls(length_text.length_sentences(summary, cells_df, grads, runs_df),
                   length_text.length_table(summary), length_text.grad_table(grads))


@dataclass
class Section:
    """What a document shows for one task group (the whole report when there is one).

    ``group`` is None for a single-task report, whose findings are in the headline;
    otherwise the section gets its own heading and sentences.
    """

    group: TaskGroup | None
    sentences: list[str]
    shared: list[tuple[str, str]]
    stable: pd.DataFrame
    cells: pd.DataFrame
    note: str
    figures: list[FigureResult] = field(default_factory=list)
    length: LengthPart | None = None
    #: the paired comparisons against no clipping (``paired.paired_table``); empty: none
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def title(self) -> str:
        if self.group is None:
            return ""
        return f"Task {self.group.label}: {self.group.metric.axis(prefix='').strip()}"


def sections(
    collected: CollectResult,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    figures: Sequence[FigureResult],
    layout: Layout | None = None,
) -> list[Section]:
    """One :class:`Section` per task group (one without heading when there is one group).

    ``layout``: the report's (derived from the tables when not given)."""
    layout = layout if layout is not None else Layout.of(collected.runs, cells_df)
    runs = collected.runs if "cell" in collected.runs.columns else enrich(collected.runs)
    # the smoothness figure is shown in its own section (smoothness_part)
    figures = [f for f in figures if f.kind not in (SMOOTHNESS_FIGURE, SPIKE_FIGURE)]
    groups = split_by_task(runs, cells_df, stable_df)
    if len(groups) <= 1:
        own = layout.within(cells_df)
        metric = groups[0][0].metric if groups else BPC
        success = bool(groups and groups[0][0].has_success)
        return [
            Section(
                None,
                [],
                _constant_settings(cells_df, own),
                stable_table(stable_df, own),
                cells_table(cells_df, metric, own),
                cells_note(metric, success),
                list(figures),
                LengthPart.of(collected.runs, cells_df),
                paired_table(paired_comparisons(runs, own)),
            )
        ]
    out = []
    for group, (runs_g, cells_g, stable_g) in groups:
        own = layout.within(cells_g)
        with_runs = cells_g[cells_g["n"] > 0] if not cells_g.empty else cells_g
        n_completed, n_diverged = _counts(runs_g)
        counts = (
            f"{len(runs_g)} run{'s' if len(runs_g) != 1 else ''}: {n_completed} completed, "
            f"{n_diverged} diverged, "
            f"{len(runs_g) - n_completed - n_diverged} incomplete; "
            f"{len(with_runs)} configurations{_seeds_phrase(with_runs)}."
        )
        out.append(
            Section(
                group,
                [counts, *task_sentences(runs_g, cells_g, stable_g, group, own)],
                _constant_settings(cells_g, own),
                stable_table(stable_g, own),
                cells_table(cells_g, group.metric, own),
                cells_note(group.metric, group.has_success),
                [f for f in figures if f.task is not None and f.task.slug == group.slug],
                LengthPart.of(runs_g, cells_g),
                paired_table(paired_comparisons(runs_g, own)),
            )
        )
    return out


def smoothness_part(collected: CollectResult, cells_df: pd.DataFrame,
                    figures: Sequence[FigureResult], layout: Layout) -> SmoothnessPart | None:
    """The section after the task sections when runs carried the smoothness probe
    (``trainer.smoothness_every``); None otherwise, and the report reads as before."""
    runs = collected.runs if "cell" in collected.runs.columns else enrich(collected.runs)
    return SmoothnessPart.of(runs, cells_df, collected.runs_dir, layout, figures)


def spike_part(collected: CollectResult, cells_df: pd.DataFrame,
               figures: Sequence[FigureResult], layout: Layout) -> SpikePart | None:
    """The section after the task sections when some run has a spike (``trainer.spike``);
    None otherwise, and the report reads as before."""
    runs = collected.runs if "cell" in collected.runs.columns else enrich(collected.runs)
    return SpikePart.of(runs, cells_df, collected.runs_dir, layout, figures)


ANSWER_HEADING = "Answer"
FINDINGS_HEADING = "Findings"


