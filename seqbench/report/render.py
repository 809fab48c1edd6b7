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

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report import length
from seqbench.report.answer import answers
from seqbench.report.collect import CollectResult
from seqbench.report.figures import FigureResult
from seqbench.report.layout import Layout
from seqbench.report.sentences import (
    DAMAGED_HEADING,
    DAMAGED_NOTE,
    Heading,
    _counts,
    _damaged_items,
    _quality_sentence,  # noqa: F401 (tests reach the sentence builders through render)
    _seeds_phrase,
    _success_sentence,  # noqa: F401
    headline,
    task_sentences,
)
from seqbench.report.sentences import length as length_text
from seqbench.report.tables import (
    LR_HEADING,
    LR_NOTE,
    SUCCESS_HEADER,  # noqa: F401
    _constant_settings,
    _html_table,
    _md_table,
    cells_note,
    cells_table,
    printable,
    stable_table,
)
from seqbench.report.task_groups import BPC, TaskGroup, split_by_task
from seqbench.rundir import atomic_write_bytes, atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:3px 7px;vertical-align:top}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafafa}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444;max-width:900px}
.note{color:#8a4b00}.meta{color:#666;font-size:.9em}code{font-size:.9em}
ul.summary li{margin:.25em 0}
nav.toc{font-size:.9em;margin:.8em 0;padding:.35em .6em;background:#f7f7f7;border:1px solid #e4e4e4}
nav.toc a{color:#0b5394;text-decoration:none}nav.toc a:hover{text-decoration:underline}
th button.sort{all:unset;cursor:pointer;display:block}
th button.sort:focus-visible{outline:2px solid #0b5394}
th button.sort::after{content:"\\a0\\2195";color:#aaa;font-size:.85em}
th[aria-sort=ascending] button.sort::after{content:"\\a0\\25B2";color:#333}
th[aria-sort=descending] button.sort::after{content:"\\a0\\25BC";color:#333}
"""


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
    groups = split_by_task(collected.runs, cells_df, stable_df)
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
            )
        )
    return out


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
    return lines


ANSWER_HEADING = "Answer"
FINDINGS_HEADING = "Findings"


def _md_bullets(items: Sequence[str], level: str) -> list[str]:
    """Sentences as bullets; a :class:`Heading` among them as a heading of ``level``."""
    out: list[str] = []
    for s in items:
        if isinstance(s, Heading):
            out += ["", f"{level} {s}", ""]
        else:
            out.append(f"- {s}")
    return out


def _html_bullets(items: Sequence[str], tag: str, prefix: str = "") -> str:
    """Sentences as lists; a :class:`Heading` among them as a ``tag`` heading (its id:
    ``prefix`` + ``ctx-`` + the heading in lower case)."""
    e, out, run = html.escape, [], []
    for s in [*items, None]:
        if (s is None or isinstance(s, Heading)) and run:
            out.append('<ul class="summary">' + "".join(f"<li>{e(x)}</li>" for x in run)
                       + "</ul>")
            run = []
        if isinstance(s, Heading):  # an id, so the contents can link it
            slug = re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")
            out.append(f'<{tag} id="{e(prefix)}ctx-{e(slug)}">{e(s)}</{tag}>')
        elif s is not None:
            run.append(s)
    return "".join(out)


def _html_answer(collected: CollectResult, cells_df: pd.DataFrame, stable_df: pd.DataFrame,
                 layout: Layout) -> list[str]:
    """The Answer section: a table per task group; the first is ``#answer-table``."""
    e, parts = html.escape, []
    for label, _, pivot, note in answers(collected.runs, cells_df, stable_df, layout):
        if not parts:
            parts.append(f'<h2 id="answer">{ANSWER_HEADING}</h2>')
        if label:
            parts.append(f"<h3>Task {e(label)}</h3>")
        table = _html_table(pivot)
        if not any('id="answer-table"' in x for x in parts):
            table = table.replace("<table>", '<table class="answer" id="answer-table">', 1)
        else:
            table = table.replace("<table>", '<table class="answer">', 1)
        parts += [table, f'<p class="note">{_md_emphasis(e(note))}</p>']
    return parts


def _md_emphasis(text: str) -> str:
    """``**x**`` of a note written for Markdown as <strong> in HTML."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


def render_markdown(
    collected: CollectResult,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    figures: Sequence[FigureResult],
    title: str,
    layout: Layout | None = None,
) -> str:
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


def _html_section(sec: Section) -> list[str]:
    """One task group's HTML. Every heading gets a stable id (``lr-summary``,
    ``configurations``, ...; prefixed ``task-<slug>-`` in a section of a multi-task
    report), which the table of contents links to."""
    e = html.escape
    h = "h2" if sec.group is None else "h3"
    pre = "" if sec.group is None else f"task-{e(sec.group.slug)}-"
    parts: list[str] = []
    if sec.group is not None:
        parts.append(f'<h2 id="task-{e(sec.group.slug)}">{e(sec.title)}</h2>')
        parts.append(
            _html_bullets(sec.sentences, "h4", f"task-{sec.group.slug}-")
        )
    if sec.shared:
        scope = "every configuration" if sec.group is None else "every configuration of this task"
        parts.append(
            f"<p>Settings shared by {scope}: "
            + ", ".join(f"<code>{e(k)}={e(v)}</code>" for k, v in sec.shared)
            + ".</p>"
        )
    parts += [
        f'<{h} id="{pre}lr-summary">{e(LR_HEADING)}</{h}>',
        f"<p>{e(LR_NOTE)}</p>",
        _html_table(sec.stable),
        *_html_length(sec, h, pre),
        f'<{h} id="{pre}configurations">Configurations</{h}>',
        f"<p>{e(sec.note)}</p>",
        _html_table(sec.cells),
        f'<{h} id="{pre}figures">Figures</{h}>',
    ]
    for f in sec.figures:
        if f.path is None:  # skipped: the note says why, where the figure would be
            parts.append(f'<p class="note"><strong>{e(f.title)}</strong>: {e(f.note or "")}</p>')
            continue
        b64 = base64.b64encode(f.path.read_bytes()).decode("ascii")
        caption = f" {e(f.caption)}" if f.caption else ""  # the title at least, always
        parts.append(
            f'<figure id="{e(f.name)}"><img src="data:image/png;base64,{b64}" alt="{e(f.title)}">'
            f"<figcaption><strong>{e(f.title)}.</strong>{caption}</figcaption></figure>"
        )
    return parts


def _html_length(sec: Section, h: str, pre: str = "") -> list[str]:
    if sec.length is None:
        return []
    e, part = html.escape, sec.length
    return [
        f'<{h} id="{pre}length-summary">{e(length_text.LENGTH_HEADING)}</{h}>',
        '<ul class="summary">' + "".join(f"<li>{e(s)}</li>" for s in part.sentences) + "</ul>",
        f"<p>{e(length_text.LENGTH_NOTE)}</p>",
        _html_table(part.summary),
        f'<{h} id="{pre}grad-norms-by-length">{e(length_text.GRAD_HEADING)}</{h}>',
        f"<p>{e(length_text.GRAD_NOTE)}</p>",
        _html_table(part.grads),
    ]


def render_html(
    collected: CollectResult,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    figures: Sequence[FigureResult],
    title: str,
    layout: Layout | None = None,
) -> str:
    layout = layout if layout is not None else Layout.of(collected.runs, cells_df)
    e = html.escape

    def p(text: object) -> str:  # run-directory names and messages: one printable line
        return html.escape(printable(text))

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">Runs directory: <code>{p(collected.runs_dir)}</code></p>',
    ]
    said = headline(collected, cells_df, stable_df, layout)
    parts.append(_html_bullets(said[:1], "h3"))
    parts += _html_answer(collected, cells_df, stable_df, layout)
    # the table of contents after the answer (which stays in the first screen)
    toc_at = len(parts)
    if len(said) > 1:
        parts += [f'<h2 id="findings">{FINDINGS_HEADING}</h2>', _html_bullets(said[1:], "h3")]
    for sec in sections(collected, cells_df, stable_df, figures, layout):
        parts += _html_section(sec)
    inc, cor = _problem_items(collected)
    parts.append('<h2 id="incomplete-runs">Incomplete run directories</h2>')
    parts.append(
        "<ul>" + "".join(f"<li><code>{p(d)}</code> — {p(s)}</li>" for d, s in inc) + "</ul>"
        if inc
        else "<p>None.</p>"
    )
    parts.append('<h2 id="corrupt-runs">Corrupt run directories</h2>')
    parts.append(
        "<ul>" + "".join(f"<li><code>{p(d)}</code> — {p(s)}</li>" for d, s in cor) + "</ul>"
        if cor
        else "<p>None.</p>"
    )
    damaged = _damaged_items(collected)
    if damaged:
        parts.append(f'<h2 id="damaged-runs">{e(DAMAGED_HEADING)}</h2>')
        parts.append(f"<p>{e(DAMAGED_NOTE)}</p>")
        parts.append(
            "<ul>" + "".join(f"<li><code>{p(d)}</code> — {p(s)}</li>" for d, s in damaged)
            + "</ul>"
        )
    parts.insert(toc_at, _html_toc(parts))
    parts.append(f"<script>{_SORT_JS}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_HEADING = re.compile(r'<h([23]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.S)


def _html_toc(parts: Sequence[str]) -> str:
    """One compact block of links to every h2/h3 with an id, h3s in brackets after their
    h2: a line or two, so that it never pushes the answer out of the first screen."""
    items: list[tuple[str, list[str]]] = []
    for part in parts:
        for m in _HEADING.finditer(part):
            level, hid, inner = m.groups()
            link = f'<a href="#{hid}">{re.sub(r"<[^>]*>", "", inner)}</a>'
            if level == "2" or not items:
                items.append((link, []))
            else:
                items[-1][1].append(link)
    links = [a + (f" ({', '.join(sub)})" if sub else "") for a, sub in items]
    return ('<nav class="toc" aria-label="Contents"><strong>Contents:</strong> '
            + " · ".join(links) + "</nav>")


# Tables sort by a click on a header (a second click reverses): plain JavaScript, no
# library. A cell that starts with a number (``2.41 [2.38, 2.45]``, ``3/3``, ``92,087``,
# ``-∞``) sorts by that number, before cells of text (compared with their digits read as
# numbers: ``norm 5`` before ``norm 10``); empty and ``—`` cells stay last either way.
# Ties keep their order. The sorted header carries aria-sort.
_SORT_JS = r"""
(function () {
  "use strict";
  var NUM = /^[+\-\u2212]?(?:\d{1,3}(?:,\d{3})+(?:\.\d*)?|\d+(?:\.\d*)?|\.\d+)(?:e[+\-]?\d+)?/i;
  var collator = new Intl.Collator(undefined, {numeric: true, sensitivity: "base"});
  function key(cell) {
    var t = cell ? cell.textContent.trim() : "";
    if (t === "" || t === "\u2014") return null;
    var inf = /^([+\-\u2212]?)\u221e/.exec(t), m = NUM.exec(t);
    var n = inf ? (inf[1] && inf[1] !== "+" ? -Infinity : Infinity)
      : m ? parseFloat(m[0].replace(/,/g, "").replace("\u2212", "-")) : null;
    return {n: n, t: t};
  }
  function cmp(a, b) {
    if (a.n !== null && b.n !== null && a.n !== b.n) return a.n < b.n ? -1 : 1;
    if ((a.n === null) !== (b.n === null)) return a.n === null ? 1 : -1;
    return collator.compare(a.t, b.t);
  }
  function sort(table, th, col) {
    var asc = th.getAttribute("aria-sort") !== "ascending", body = table.tBodies[0];
    var rows = Array.prototype.map.call(body.rows, function (r, i) {
      return {r: r, k: key(r.cells[col]), i: i};
    });
    rows.sort(function (a, b) {
      if (a.k === null || b.k === null) return (a.k === null) - (b.k === null) || a.i - b.i;
      return (asc ? cmp(a.k, b.k) : cmp(b.k, a.k)) || a.i - b.i;
    });
    rows.forEach(function (x) { body.appendChild(x.r); });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table"), function (table) {
    if (!table.tHead || !table.tHead.rows.length || !table.tBodies.length) return;
    var head = table.tHead.rows[table.tHead.rows.length - 1];
    Array.prototype.forEach.call(head.cells, function (th, col) {
      var b = document.createElement("button");
      b.type = "button";
      b.className = "sort";
      b.title = "Sort by this column (again: reverse)";
      while (th.firstChild) b.appendChild(th.firstChild);
      th.appendChild(b);
      th.style.cursor = "pointer";  // the whole cell: headers of a row differ in height
      th.addEventListener("click", function () { sort(table, th, col); });
    });
  });
})();
"""


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
    into ``out_dir``.

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
    _atomic_write(
        paths["report_md"],
        render_markdown(collected, cells_df, stable_df, figures, title, layout),
    )
    _atomic_write(paths["report_html"],
                  render_html(collected, cells_df, stable_df, figures, title, layout))
    return paths
