"""Render a report: report.md, a self-contained report.html, and the CSV tables.

Why both documents: Markdown diffs well and renders on code hosts (figures linked
from ``figures/``); the HTML file embeds its figures as data URIs, so it can be
mailed or archived as one file. Both open with sentences generated from the numbers,
because that is what most readers will read; every sentence states its n.
Missing values print as an em dash, never as a number.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report.collect import CollectResult
from seqbench.report.figures import FigureResult
from seqbench.report.stats import STAT_COLUMNS, varying_within, wilson_interval

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
"""


_STABLE_NOTE = (
    "Largest learning rate at which no seed diverged (n ≥ 1 runs with a verdict, none diverged)."
)
_CELLS_NOTE = (
    "One row per configuration, aggregated over seeds. Rates are over runs that completed or "
    "diverged (n); bpc is over finished runs only. — means no value (nothing is imputed)."
)


# --------------------------------------------------------------------------- helpers


def _atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


def _key(rec: dict, cols: Sequence[str]) -> tuple:
    return tuple(None if fmt.is_missing(rec.get(c)) else rec.get(c) for c in cols)


_LSL_STATS = ("largest_stable_lr", "n_at_largest_stable", "smallest_diverged_lr", "n_lrs")
_COORDS = ("optim.name", "clip.method", "threshold", "optim.lr")


def _config_cols(df: pd.DataFrame) -> list[str]:
    skip = set(STAT_COLUMNS) | set(_LSL_STATS) | {"cell", "clip.max_norm", "clip.clip_value"}
    return [c for c in df.columns if c not in skip]


def _distinguishing(df: pd.DataFrame) -> list[str]:
    """Config columns beyond the usual coordinates that tell rows apart."""
    cols = [c for c in _config_cols(df) if c not in _COORDS]
    return varying_within(df, _COORDS, cols)


def _constant_settings(cells_df: pd.DataFrame) -> list[tuple[str, str]]:
    """Config keys with one value wherever they are set ("where set" if some cells lack them)."""
    if cells_df.empty:
        return []
    skip = set(_distinguishing(cells_df)) | set(_COORDS)
    out = []
    for c in _config_cols(cells_df):
        if c in skip:
            continue
        col = cells_df[c].astype(object)
        vals = col.dropna().unique()
        if len(vals) != 1:
            continue
        v = vals[0]
        text = v if isinstance(v, str) else fmt.num(v)
        out.append((c, text + (" where set" if col.isna().any() else "")))
    return out


# --------------------------------------------------------------------------- sentences


def _context_cols(stable_df: pd.DataFrame) -> list[str]:
    """Columns that separate comparisons: the optimizer and any swept non-clip setting."""
    cols = [c for c in _config_cols(stable_df) if c not in _COORDS and not c.startswith("clip.")]
    lead = ["optim.name"] if "optim.name" in stable_df.columns else []
    return lead + varying_within(stable_df, lead, cols)


def _context_name(rec: dict, cols: Sequence[str]) -> str:
    name = fmt.optimizer(rec.get("optim.name")) if "optim.name" in cols else "the model"
    extra = [f"{c}={fmt.num(rec[c])}" for c in cols if c != "optim.name"]
    return name + (f" ({', '.join(extra)})" if extra else "")


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _ratio(b: float, a: float) -> str:
    r = b / a
    return f"{r:.3g}×"


def _stability_sentences(name: str, recs: list[dict], ctx_cells: list[dict]) -> list[str]:
    """Unclipped vs the best clip setting for one optimizer (and swept setting), in words."""
    out: list[str] = []
    base = [r for r in recs if r["clip.method"] == "none"]
    clipped = [
        r for r in recs if r["clip.method"] != "none" and not fmt.is_missing(r["largest_stable_lr"])
    ]
    max_lr = max((c["optim.lr"] for c in ctx_cells), default=math.nan)

    def same_setting(c: dict, r: dict) -> bool:
        return c.get("clip.method") == r["clip.method"] and _key(c, ["threshold"]) == _key(
            r, ["threshold"]
        )

    def bpc_at(r: dict, lr: float) -> float:
        for c in ctx_cells:
            if same_setting(c, r) and c["optim.lr"] == lr:
                v = c["final_val_bpc_mean"]
                return math.inf if fmt.is_missing(v) else float(v)
        return math.inf

    # the clipped setting with the largest stable lr; ties go to the better final bpc
    best = None
    if clipped:
        best = min(
            clipped, key=lambda r: (-r["largest_stable_lr"], bpc_at(r, r["largest_stable_lr"]))
        )
    b_lr = best["largest_stable_lr"] if best else math.nan
    phrase = fmt.clip_phrase(best["clip.method"], best["threshold"]) if best else ""
    ties = [
        fmt.clip_phrase(r["clip.method"], r["threshold"])
        for r in clipped
        if best and r is not best and r["largest_stable_lr"] == b_lr
    ]
    tail = ""
    if best and b_lr == max_lr:
        tail += ", the largest rate tried (the limit may be higher)"
    if ties:
        tail += f"; {_join(ties)} reached it too"

    if len(base) != 1:
        if best:
            out.append(
                f"With no unclipped runs to compare with, the largest stable {name} learning "
                f"rate was {fmt.lr(b_lr)}, with {phrase}{tail}."
            )
        return out

    a_lr = base[0]["largest_stable_lr"]
    if not fmt.is_missing(a_lr) and best and b_lr > a_lr:
        out.append(
            f"{phrase[0].upper() + phrase[1:]} raised the largest stable {name} learning rate "
            f"from {fmt.lr(a_lr)} to {fmt.lr(b_lr)} ({_ratio(b_lr, a_lr)}){tail}."
        )
    elif not fmt.is_missing(a_lr):
        edge = "; it was the largest rate tried" if a_lr == max_lr else ""
        out.append(
            f"No clip setting raised the largest stable {name} learning rate above "
            f"{fmt.lr(a_lr)}, the unclipped value{edge}."
        )
    elif best:
        out.append(
            f"Unclipped {name} diverged at every learning rate tried; {phrase} kept it "
            f"stable up to {fmt.lr(b_lr)}{tail}."
        )
    else:
        out.append(f"{name} diverged at every learning rate tried, with and without clipping.")

    none_cells = [c for c in ctx_cells if c.get("clip.method") == "none"]
    k = sum(int(c["n_diverged"]) for c in none_cells)
    n = sum(int(c["n"]) for c in none_cells)
    if n:
        n_lr = len(none_cells)
        sentence = (
            f"Unclipped {name} diverged in {k} of {n} runs across "
            f"{n_lr} learning rate{'s' if n_lr != 1 else ''}"
        )
        if best:
            lrs = {c["optim.lr"] for c in none_cells}
            bc = [c for c in ctx_cells if same_setting(c, best) and c["optim.lr"] in lrs]
            k2, n2 = sum(int(c["n_diverged"]) for c in bc), sum(int(c["n"]) for c in bc)
            if n2:
                sentence += f"; with {phrase} at the same rates, {k2} of {n2}"
        out.append(sentence + ".")
    return out


def _quality_sentence(cells_df: pd.DataFrame, n_completed: int) -> str:
    fin = cells_df[cells_df["n_finished"] > 0] if not cells_df.empty else cells_df
    if fin.empty or not fin["final_val_bpc_mean"].notna().any():
        if n_completed == 0:
            return "No run finished, so there is no final validation bpc to compare."
        return (
            f"None of the {n_completed} finished runs recorded a final validation bpc "
            "(was evaluation off?), so quality cannot be compared."
        )
    rec = fin.loc[fin["final_val_bpc_mean"].idxmin()].to_dict()
    parts = []
    if "optim.name" in rec:
        parts.append(fmt.optimizer(rec["optim.name"]))
    if "optim.lr" in rec:
        parts.append(f"lr {fmt.lr(rec['optim.lr'])}")
    if "clip.method" in rec:
        parts.append(fmt.clip_phrase(rec["clip.method"], rec.get("threshold")))
    mean, lo, hi = rec["final_val_bpc_mean"], rec["final_val_bpc_lo"], rec["final_val_bpc_hi"]
    text = fmt.interval(mean, lo, hi)
    if "[" in text:  # "1.49 [1.35, 1.62]" -> "1.49 (95% CI 1.35–1.62)"
        m, rest = text.split(" [", 1)
        a, b = rest.rstrip("]").split(", ")
        text = f"{m} (95% CI {a}–{b})"
    caveat = (
        f"; {int(rec['n_diverged'])} of its {int(rec['n'])} seeds diverged"
        if rec["n_diverged"]
        else ""
    )
    return (
        f"The lowest mean final validation bpc was {text}, with {', '.join(parts)} "
        f"({int(rec['n_finished'])} of {int(rec['n'])} seeds finished{caveat})."
    )


def headline(
    collected: CollectResult, cells_df: pd.DataFrame, stable_df: pd.DataFrame
) -> list[str]:
    """A few sentences that state what the sweep found, each with its counts."""
    runs = collected.runs
    out: list[str] = []
    status = runs["status"].astype(object) if not runs.empty else pd.Series(dtype=object)
    n_completed = int((status == "completed").sum())
    n_diverged = int((status == "diverged").sum())
    n_incomplete, n_corrupt = len(collected.incomplete), len(collected.corrupt)
    with_runs = cells_df[cells_df["n"] > 0] if not cells_df.empty else cells_df
    seeds = ""
    if not with_runs.empty:
        lo, hi = int(with_runs["n"].min()), int(with_runs["n"].max())
        seeds = f"{lo}–{hi} seeds" if lo != hi else f"{lo} seed{'s' if lo != 1 else ''}"
        seeds = f", {seeds} per configuration"
    out.append(
        f"{collected.n_found} run directories: {n_completed} completed, {n_diverged} diverged, "
        f"{n_incomplete} incomplete and {n_corrupt} corrupt; "
        f"{len(with_runs)} configurations{seeds}."
    )
    if n_completed + n_diverged == 0:
        out.append("No run has finished or diverged yet, so there are no rates to report.")
        return out

    if not stable_df.empty and "clip.method" in stable_df.columns:
        ctx_cols = _context_cols(stable_df)
        contexts: dict[tuple, list[dict]] = {}
        for r in stable_df.to_dict("records"):
            contexts.setdefault(_key(r, ctx_cols), []).append(r)
        cells_rec = cells_df.to_dict("records")
        cell_cols = [c for c in ctx_cols if c in cells_df.columns]
        for ctx, recs in contexts.items():
            ctx_cells = [c for c in cells_rec if _key(c, cell_cols) == ctx and c["n"] > 0]
            out += _stability_sentences(_context_name(recs[0], ctx_cols), recs, ctx_cells)

    if n_diverged:
        div = runs.loc[status == "diverged", "divergence"].astype(object)
        n_nf, n_ex = int((div == "nonfinite").sum()), int((div == "exploded").sum())
        out.append(
            f"Of the {n_diverged} diverged runs, {n_nf} hit a non-finite loss or gradient "
            f"and {n_ex} exploded."
        )

    out.append(_quality_sentence(cells_df, n_completed))

    if not with_runs.empty:
        n_typ = int(with_runs["n"].mode().iloc[0])
        lo, hi = wilson_interval(0, n_typ)
        out.append(
            f"With {n_typ} seed{'s' if n_typ != 1 else ''}, 0 divergences out of {n_typ} "
            "still has a 95% Wilson interval "
            f"of {lo:.2f}–{hi:.2f}: a 'stable' cell is evidence, not proof."
        )
    if n_incomplete or n_corrupt:
        out.append(
            f"{n_incomplete} incomplete and {n_corrupt} corrupt run directories are excluded "
            "from every rate; they are listed at the end."
        )
    return out


# --------------------------------------------------------------------------- tables


def _setting_columns(r: dict, extra: list[str], *, with_lr: bool) -> dict[str, str]:
    """The columns that say which setting a row is: optimizer, clip, [lr], the rest."""
    row = {}
    if "optim.name" in r:
        row["optimizer"] = fmt.optimizer(r["optim.name"])
    if "clip.method" in r:
        row["clip"] = fmt.clip_short(r["clip.method"], r.get("threshold"))
    if with_lr and "optim.lr" in r:
        row["lr"] = fmt.lr(r["optim.lr"])
    for c in extra:
        row[c] = fmt.num(r[c]) if not isinstance(r[c], str) else r[c]
    return row


def stable_table(stable_df: pd.DataFrame) -> pd.DataFrame:
    """The largest-stable-lr table as display strings (constant columns left out)."""
    if stable_df.empty:
        return pd.DataFrame()
    extra = _distinguishing(stable_df)
    rows = []
    for r in stable_df.to_dict("records"):
        row = _setting_columns(r, extra, with_lr=False)
        row["largest stable lr"] = fmt.lr(r["largest_stable_lr"])
        row["n at that lr"] = fmt.num(r["n_at_largest_stable"])
        row["smallest diverged lr"] = fmt.lr(r["smallest_diverged_lr"])
        row["lrs tried"] = fmt.num(r["n_lrs"])
        rows.append(row)
    return pd.DataFrame(rows)


def cells_table(cells_df: pd.DataFrame) -> pd.DataFrame:
    """The cells table as display strings; n is shown in every row."""
    if cells_df.empty:
        return pd.DataFrame()
    extra = _distinguishing(cells_df)
    show_incomplete = bool((cells_df["n_incomplete"] > 0).any())
    rows = []
    for r in cells_df.to_dict("records"):
        row = _setting_columns(r, extra, with_lr=True)
        row["n"] = str(int(r["n"]))
        if show_incomplete:
            row["incomplete"] = str(int(r["n_incomplete"]))
        row["diverged k/n (rate [95% CI])"] = fmt.rate(
            r["n_diverged"], r["n"], r["divergence_rate_lo"], r["divergence_rate_hi"]
        )
        row["non-finite k/n"] = f"{int(r['n_nonfinite'])}/{int(r['n'])}" if r["n"] else fmt.MISSING
        row["finished"] = str(int(r["n_finished"]))
        row["final val bpc [95% CI]"] = fmt.interval(
            r["final_val_bpc_mean"], r["final_val_bpc_lo"], r["final_val_bpc_hi"]
        )
        row["median divergence step"] = fmt.num(r["median_divergence_step"])
        row["median grad norm"] = fmt.num(r["grad_norm_pre_median"])
        row["clip fraction"] = fmt.num(r["clip_fraction"], 2)
        row["tokens/s"] = fmt.num(r["tokens_per_second"])
        rows.append(row)
    return pd.DataFrame(rows)


_NUMERIC_HEADERS = {
    "n",
    "incomplete",
    "finished",
    "lr",
    "largest stable lr",
    "n at that lr",
    "smallest diverged lr",
    "lrs tried",
    "median divergence step",
    "median grad norm",
    "clip fraction",
    "tokens/s",
}


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_\n"

    def esc(x: object) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(esc(c) for c in df.columns) + " |"
    align = "|" + "|".join("---:" if c in _NUMERIC_HEADERS else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, align, *body]) + "\n"


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(none)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        tds = "".join(
            f'<td class="num">{html.escape(str(v))}</td>'
            if c in _NUMERIC_HEADERS
            else f"<td>{html.escape(str(v))}</td>"
            for c, v in zip(df.columns, row, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _problem_items(collected: CollectResult) -> tuple[list[str], list[str]]:
    inc = []
    for r in collected.incomplete.to_dict("records"):
        err = "" if fmt.is_missing(r.get("error")) else f" ({r['error']})"
        inc.append((r["run_dir"], f"{r['status']}{err}"))
    cor = [(r["run_dir"], r["reason"]) for r in collected.corrupt.to_dict("records")]
    return inc, cor  # type: ignore[return-value]


# --------------------------------------------------------------------------- documents


def render_markdown(
    collected: CollectResult,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    figures: Sequence[FigureResult],
    title: str,
) -> str:
    lines = [f"# {title}", "", f"Runs directory: `{collected.runs_dir}`", ""]
    lines += [f"- {s}" for s in headline(collected, cells_df, stable_df)]
    const = _constant_settings(cells_df)
    if const:
        lines += [
            "",
            "Settings shared by every configuration: "
            + ", ".join(f"`{k}={v}`" for k, v in const)
            + ".",
        ]
    lines += [
        "",
        "## Largest stable learning rate",
        "",
        _STABLE_NOTE,
        "",
    ]
    lines.append(_md_table(stable_table(stable_df)))
    lines += [
        "## Configurations",
        "",
        _CELLS_NOTE,
        "",
    ]
    lines.append(_md_table(cells_table(cells_df)))
    lines += ["## Figures", ""]
    for f in figures:
        if f.path is None:
            lines += [f"**{f.title}**: {f.note}", ""]
        else:
            lines += [
                f"### {f.title}",
                "",
                f"![{f.title}](figures/{f.path.name})",
                "",
                f"_{f.caption}_",
                "",
            ]
    inc, cor = _problem_items(collected)
    lines += ["## Incomplete run directories", ""]
    lines += [f"- `{d}` — {s}" for d, s in inc] or ["None."]
    lines += ["", "## Corrupt run directories", ""]
    lines += [f"- `{d}` — {s}" for d, s in cor] or ["None."]
    return "\n".join(lines) + "\n"


def render_html(
    collected: CollectResult,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    figures: Sequence[FigureResult],
    title: str,
) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">Runs directory: <code>{e(str(collected.runs_dir))}</code></p>',
        '<ul class="summary">'
        + "".join(f"<li>{e(s)}</li>" for s in headline(collected, cells_df, stable_df))
        + "</ul>",
    ]
    const = _constant_settings(cells_df)
    if const:
        parts.append(
            "<p>Settings shared by every configuration: "
            + ", ".join(f"<code>{e(k)}={e(v)}</code>" for k, v in const)
            + ".</p>"
        )
    parts += [
        "<h2>Largest stable learning rate</h2>",
        f"<p>{html.escape(_STABLE_NOTE)}</p>",
        _html_table(stable_table(stable_df)),
        "<h2>Configurations</h2>",
        f"<p>{html.escape(_CELLS_NOTE)}</p>",
        _html_table(cells_table(cells_df)),
        "<h2>Figures</h2>",
    ]
    for f in figures:
        if f.path is None:
            parts.append(f'<p class="note"><strong>{e(f.title)}</strong>: {e(f.note or "")}</p>')
            continue
        b64 = base64.b64encode(f.path.read_bytes()).decode("ascii")
        parts.append(
            f'<figure id="{e(f.name)}"><img src="data:image/png;base64,{b64}" alt="{e(f.title)}">'
            f"<figcaption><strong>{e(f.title)}.</strong> {e(f.caption)}</figcaption></figure>"
        )
    inc, cor = _problem_items(collected)
    parts.append("<h2>Incomplete run directories</h2>")
    parts.append(
        "<ul>" + "".join(f"<li><code>{e(d)}</code> — {e(s)}</li>" for d, s in inc) + "</ul>"
        if inc
        else "<p>None.</p>"
    )
    parts.append("<h2>Corrupt run directories</h2>")
    parts.append(
        "<ul>" + "".join(f"<li><code>{e(d)}</code> — {e(s)}</li>" for d, s in cor) + "</ul>"
        if cor
        else "<p>None.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


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
) -> dict[str, Path]:
    """Write runs.csv, cells.csv, stable_lr.csv, report.md and report.html into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "runs_csv": out / "runs.csv",
        "cells_csv": out / "cells.csv",
        "stable_lr_csv": out / "stable_lr.csv",
        "report_md": out / "report.md",
        "report_html": out / "report.html",
    }
    _atomic_write(paths["runs_csv"], _csv(runs_df))
    _atomic_write(paths["cells_csv"], _csv(cells_df))
    _atomic_write(paths["stable_lr_csv"], _csv(stable_df))
    _atomic_write(
        paths["report_md"], render_markdown(collected, cells_df, stable_df, figures, title)
    )
    _atomic_write(paths["report_html"], render_html(collected, cells_df, stable_df, figures, title))
    return paths
