"""The self-contained report.html: the document model (``document``) as one HTML file
with its figures embedded as data URIs, a table of contents, tables sorted by a click on
a header (a few lines of inline JavaScript: the page loads nothing from the network),
and a caption on every figure. ``tests/test_report_browser.py`` drives it in Chromium.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence

import pandas as pd

from seqbench.report.answer import answers
from seqbench.report.collect import CollectResult
from seqbench.report.document import (
    ANSWER_HEADING,
    FINDINGS_HEADING,
    Section,
    _problem_items,
    sections,
)
from seqbench.report.figures import FigureResult
from seqbench.report.layout import Layout
from seqbench.report.paired import HEADING as PAIRED_HEADING
from seqbench.report.paired import NOTE as PAIRED_NOTE
from seqbench.report.sentences import (
    DAMAGED_HEADING,
    DAMAGED_NOTE,
    Heading,
    _damaged_items,
    headline,
)
from seqbench.report.sentences import length as length_text
from seqbench.report.sentences import smoothness as smooth_text
from seqbench.report.sentences import spikes as spike_text
from seqbench.report.tables import (
    LR_HEADING,
    LR_NOTE,
    _html_table,
    printable,
)

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
    parts += _html_figures(sec.figures)
    if not sec.paired.empty:  # after the figures, as in the Markdown
        parts += [f'<{h} id="{pre}paired">{e(PAIRED_HEADING)}</{h}>',
                  f"<p>{_md_emphasis(e(PAIRED_NOTE))}</p>", _html_table(sec.paired)]
    return parts


def _html_figures(figures: Sequence[FigureResult]) -> list[str]:
    """Each figure embedded with its caption, or the note that says why there is none."""
    e, parts = html.escape, []
    for f in figures:
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


def _html_smoothness(part: smooth_text.SmoothnessPart) -> list[str]:
    """The smoothness section, after the task sections; its headings are in the contents."""
    e = html.escape
    parts = [f'<h2 id="smoothness">{e(smooth_text.HEADING)}</h2>',
             f"<p>{e(smooth_text.INTRO)}</p>",
             '<ul class="summary">' + "".join(f"<li>{e(s)}</li>" for s in part.sentences)
             + "</ul>",
             f'<h3 id="smoothness-configurations">{e(smooth_text.CELLS_HEADING)}</h3>',
             f"<p>{e(smooth_text.CELLS_NOTE)}</p>", _html_table(part.cells)]
    if not part.warning.empty:
        parts += [f'<h3 id="smoothness-warning">{e(part.warning_heading)}</h3>',
                  f"<p>{e(smooth_text.WARNING_NOTE)}</p>", _html_table(part.warning),
                  f'<h3 id="smoothness-sensitivity">{e(smooth_text.SENSITIVITY_HEADING)}</h3>',
                  f"<p>{e(smooth_text.SENSITIVITY_NOTE)}</p>", _html_table(part.sensitivity)]
    return parts + _html_figures(part.figures)


def _html_spikes(part: spike_text.SpikePart) -> list[str]:
    """The late-spike section, after the smoothness one; its headings are in the contents."""
    e = html.escape
    return [f'<h2 id="spikes">{e(spike_text.HEADING)}</h2>',
            f"<p>{_md_emphasis(e(spike_text.INTRO))}</p>",
            '<ul class="summary">' + "".join(f"<li>{e(s)}</li>" for s in part.sentences)
            + "</ul>",
            f'<h3 id="spikes-configurations">{e(spike_text.TABLE_HEADING)}</h3>',
            f"<p>{_md_emphasis(e(spike_text.TABLE_NOTE))}</p>", _html_table(part.display),
            *_html_figures(part.figures)]


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
    smoothness: smooth_text.SmoothnessPart | None = None,
    spikes: spike_text.SpikePart | None = None,
) -> str:
    """report.html; ``smoothness``, ``spikes``: the sections after the task sections, as in
    ``render_markdown``."""
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
    if smoothness is not None:
        parts += _html_smoothness(smoothness)
    if spikes is not None:
        parts += _html_spikes(spikes)
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


