"""Render a report: report.md, a self-contained report.html, and the CSV tables.

Why both documents: Markdown diffs well and renders on code hosts (figures linked
from ``figures/``); the HTML file embeds its figures as data URIs, so it can be
mailed or archived as one file. Both open with sentences generated from the numbers,
because that is what most readers will read; every sentence states its n.
Missing values print as an em dash, never as a number.

Quality is stated in each task's own metric (its name in every sentence and header).
When the runs hold several task groups (task and metric), each gets its own section -
sentences, tables, figures - because numbers in different units must never be
compared or averaged; the headline then only counts runs and lists the tasks.

Runs whose optional per-parameter file (param_metrics.parquet) is unreadable are
listed after the corrupt ones, in a section of their own, because unlike those they
still count everywhere: only the per-layer figure lacks them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from seqbench.report import length
from seqbench.report.answer import answers
from seqbench.report.collect import CollectResult
from seqbench.report.document import (
    ANSWER_HEADING,
    FINDINGS_HEADING,
    Section,
    _problem_items,
    sections,
    smoothness_part,
    spike_part,
)
from seqbench.report.figures import FigureResult
from seqbench.report.html_page import render_html
from seqbench.report.layout import Layout
from seqbench.report.paired import HEADING as PAIRED_HEADING
from seqbench.report.paired import NOTE as PAIRED_NOTE
from seqbench.report.paired import against_none, paired_between
from seqbench.report.sentences import (
    DAMAGED_HEADING,
    DAMAGED_NOTE,
    Heading,
    _damaged_items,
    _quality_sentence,  # noqa: F401 (tests reach the sentence builders through render)
    _success_sentence,  # noqa: F401
    headline,
)
from seqbench.report.sentences import length as length_text
from seqbench.report.sentences import smoothness as smooth_text
from seqbench.report.sentences import spikes as spike_text
from seqbench.report.tables import (
    LR_HEADING,
    LR_NOTE,
    SUCCESS_HEADER,  # noqa: F401
    _md_table,
    printable,
)
from seqbench.rundir import atomic_write_bytes, atomic_write_text


def _atomic_write(path: Path, data: str | bytes) -> None:
    """The contract's one atomic write (``seqbench.rundir``): a unique temporary name,
    fsynced, renamed into place. Text is UTF-8; a run directory whose name is not valid
    UTF-8 (surrogate escapes) is written with backslash escapes rather than failing."""
    if isinstance(data, bytes):
        atomic_write_bytes(path, data)
    else:
        atomic_write_text(path, data)


def md_code(text: object) -> str:
    """``text`` as a Markdown code span, whatever backticks it holds."""
    t = printable(text)
    run = longest = 0
    for ch in t:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if t.startswith("`") or t.endswith("`") else ""
    return f"{fence}{pad}{t}{pad}{fence}"



def _md_section(sec: Section) -> list[str]:
    h = "##" if sec.group is None else "###"
    lines: list[str] = []
    if sec.group is not None:
        lines += ["", f"## {sec.title}", ""]
        lines += _md_bullets(sec.sentences, "####")
    if sec.shared:
        scope = "every configuration" if sec.group is None else "every configuration of this task"
        lines += [
            "",
            f"Settings shared by {scope}: " + ", ".join(f"`{k}={v}`" for k, v in sec.shared) + ".",
        ]
    lines += ["", f"{h} {LR_HEADING}", "", LR_NOTE, ""]
    lines.append(_md_table(sec.stable))
    if sec.length is not None:
        part = sec.length
        lines += [f"{h} {length_text.LENGTH_HEADING}", ""]
        lines += [f"- {s}" for s in part.sentences]
        lines += ["", length_text.LENGTH_NOTE, "", _md_table(part.summary)]
        lines += [f"{h} {length_text.GRAD_HEADING}", "", length_text.GRAD_NOTE, ""]
        lines.append(_md_table(part.grads))
    lines += [f"{h} Configurations", "", sec.note, ""]
    lines.append(_md_table(sec.cells))
    lines += [f"{h} Figures", ""]
    for f in sec.figures:
        if f.path is None:
            lines += [f"**{f.title}**: {f.note}", ""]
        else:
            lines += [
                f"{h}# {f.title}",
                "",
                f"![{f.title}](figures/{f.path.name})",
                "",
                f"_{f.caption}_",
                "",
            ]
    if not sec.paired.empty:  # after the figures: tests read Configurations..Figures
        lines += [f"{h} {PAIRED_HEADING}", "", PAIRED_NOTE, "", _md_table(sec.paired)]
    return lines


def _md_smoothness(part: smooth_text.SmoothnessPart) -> list[str]:
    """The smoothness section (after the task sections): sentences, tables, figures."""
    lines = ["", f"## {smooth_text.HEADING}", "", smooth_text.INTRO, ""]
    lines += [f"- {s}" for s in part.sentences]
    lines += ["", f"### {smooth_text.CELLS_HEADING}", "", smooth_text.CELLS_NOTE, "",
              _md_table(part.cells)]
    if not part.warning.empty:
        lines += [f"### {part.warning_heading}", "",
                  smooth_text.WARNING_NOTE, "", _md_table(part.warning)]
        lines += [f"### {smooth_text.SENSITIVITY_HEADING}", "", smooth_text.SENSITIVITY_NOTE,
                  "", _md_table(part.sensitivity)]
    return lines + _md_part_figures(part.figures)


def _md_spikes(part: spike_text.SpikePart) -> list[str]:
    """The late-spike section (after the task sections): sentences, table, figure."""
    lines = ["", f"## {spike_text.HEADING}", "", spike_text.INTRO, ""]
    lines += [f"- {s}" for s in part.sentences]
    lines += ["", f"### {spike_text.TABLE_HEADING}", "", spike_text.TABLE_NOTE, "",
              _md_table(part.display)]
    return lines + _md_part_figures(part.figures)


def _md_part_figures(figures: Sequence[FigureResult]) -> list[str]:
    """A section's own figures, each under a heading of its own."""
    lines: list[str] = []
    for f in figures:
        if f.path is None:
            lines += [f"**{f.title}**: {f.note}", ""]
        else:
            lines += [f"### {f.title}", "", f"![{f.title}](figures/{f.path.name})", "",
                      f"_{f.caption}_", ""]
    return lines


def _md_bullets(items: Sequence[str], level: str) -> list[str]:
    """Sentences as bullets; a :class:`Heading` among them as a heading of ``level``."""
    out: list[str] = []
    for s in items:
        if isinstance(s, Heading):
            out += ["", f"{level} {s}", ""]
        else:
            out.append(f"- {s}")
    return out


def render_markdown(
    collected: CollectResult,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    figures: Sequence[FigureResult],
    title: str,
    layout: Layout | None = None,
    smoothness: smooth_text.SmoothnessPart | None = None,
    spikes: spike_text.SpikePart | None = None,
) -> str:
    """report.md; ``smoothness``: the smoothness section (``document.smoothness_part``),
    after the task sections, when the runs carried the probe; ``spikes``: the late-spike
    section (``document.spike_part``) after it, when some run has a spike."""
    layout = layout if layout is not None else Layout.of(collected.runs, cells_df)
    lines = [f"# {printable(title)}", "", f"Runs directory: {md_code(collected.runs_dir)}", ""]
    said = headline(collected, cells_df, stable_df, layout)
    lines += [f"- {s}" for s in said[:1]]  # the run counts, then the answer
    for label, _, pivot, note in answers(collected.runs, cells_df, stable_df, layout):
        if not any(x == f"## {ANSWER_HEADING}" for x in lines):
            lines += ["", f"## {ANSWER_HEADING}", ""]
        if label:
            lines += [f"### Task {label}", ""]
        lines += [_md_table(pivot), note, ""]
    if len(said) > 1:
        lines += ["", f"## {FINDINGS_HEADING}", ""]
        lines += _md_bullets(said[1:], "###")
    for sec in sections(collected, cells_df, stable_df, figures, layout):
        lines += _md_section(sec)
    if smoothness is not None:
        lines += _md_smoothness(smoothness)
    if spikes is not None:
        lines += _md_spikes(spikes)
    inc, cor = _problem_items(collected)
    lines += ["## Incomplete run directories", ""]
    lines += [f"- {md_code(d)} — {printable(s)}" for d, s in inc] or ["None."]
    lines += ["", "## Corrupt run directories", ""]
    lines += [f"- {md_code(d)} — {printable(s)}" for d, s in cor] or ["None."]
    damaged = _damaged_items(collected)
    if damaged:
        lines += ["", f"## {DAMAGED_HEADING}", "", DAMAGED_NOTE, ""]
        lines += [f"- {md_code(d)} — {printable(s)}" for d, s in damaged]
    return "\n".join(lines) + "\n"


def _csv(df: pd.DataFrame) -> str:
    return df.to_csv(index=False, na_rep="", lineterminator="\n")


def write_documents(
    collected: CollectResult,
    runs_df: pd.DataFrame,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    figures: Sequence[FigureResult],
    out_dir: str | os.PathLike[str],
    title: str = "seqbench report",
    layout: Layout | None = None,
) -> dict[str, Path]:
    """Write runs.csv, cells.csv, lr_summary.csv, answer.csv, report.md and report.html
    into ``out_dir`` (and smoothness.csv when runs carried the smoothness probe,
    paired.csv and paired_between.csv when runs pair: ``seqbench.report.paired``).

    A ``stable_lr.csv`` left by a report of before lr_summary.csv is removed, so a
    re-rendered directory never shows the old table beside the new one. ``layout``: the
    report's (derived from the tables when not given)."""
    layout = layout if layout is not None else Layout.of(runs_df, cells_df)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "runs_csv": out / "runs.csv",
        "cells_csv": out / "cells.csv",
        "lr_summary_csv": out / "lr_summary.csv",
        "report_md": out / "report.md",
        "report_html": out / "report.html",
    }
    _atomic_write(paths["runs_csv"], _csv(runs_df))
    _atomic_write(paths["cells_csv"], _csv(cells_df))
    _atomic_write(paths["lr_summary_csv"], _csv(stable_df))
    found = answers(collected.runs, cells_df, stable_df, layout)
    paths["answer_csv"] = out / "answer.csv"
    _atomic_write(paths["answer_csv"],
                  _csv(pd.concat([a for _, a, _, _ in found], ignore_index=True)
                       if found else pd.DataFrame()))
    (out / "stable_lr.csv").unlink(missing_ok=True)
    # the length axis: written only for runs that vary a length (and removed otherwise,
    # so a re-rendered directory never keeps a stale one)
    for name, table in (("length_summary_csv", length.length_summary(cells_df)),
                        ("grad_norms_by_length_csv",
                         length.grad_norms_by_length(collected.runs, cells_df))):
        path = out / f"{name[:-4]}.csv"
        if table.empty:
            path.unlink(missing_ok=True)
        else:
            paths[name] = path
            _atomic_write(path, _csv(table))
    # paired_between.csv: every two clip settings over their pairs; paired.csv: those
    # against no clipping (each only when some runs pair, removed otherwise)
    between = paired_between(runs_df, layout)
    for name, table in (("paired_between", between), ("paired", against_none(between))):
        if table.empty:
            (out / f"{name}.csv").unlink(missing_ok=True)
        else:
            paths[f"{name}_csv"] = out / f"{name}.csv"
            _atomic_write(paths[f"{name}_csv"], _csv(table))
    # smoothness.csv: only for runs that carried the smoothness probe, spikes.csv only
    # where some run has a spike (each removed otherwise)
    smooth = smoothness_part(collected, cells_df, figures, layout)
    spikes = spike_part(collected, cells_df, figures, layout)
    for name, part in (("smoothness", smooth), ("spikes", spikes)):
        if part is None:
            (out / f"{name}.csv").unlink(missing_ok=True)
        else:
            paths[f"{name}_csv"] = out / f"{name}.csv"
            _atomic_write(paths[f"{name}_csv"], _csv(part.table))
    _atomic_write(
        paths["report_md"],
        render_markdown(collected, cells_df, stable_df, figures, title, layout, smooth, spikes),
    )
    _atomic_write(paths["report_html"], render_html(collected, cells_df, stable_df, figures,
                                                    title, layout, smooth, spikes))
    return paths
