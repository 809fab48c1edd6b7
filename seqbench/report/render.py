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
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report.collect import CollectResult
from seqbench.report.figures import FigureResult
from seqbench.report.stats import STAT_COLUMNS, varying_within, wilson_interval
from seqbench.report.tasks import BPC, MetricInfo, TaskGroup, metric_of, split_by_task

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


def cells_note(metric: MetricInfo = BPC, success: bool = False) -> str:
    """The sentence above a configurations table: what its numbers are over."""
    unit = f"{metric.unit}; {metric.direction}" if metric.unit else metric.direction
    text = (
        "One row per configuration, aggregated over seeds. Rates are over runs that completed "
        f"or diverged (n); the final validation {metric.label} ({unit}) is a mean over finished "
        "runs only, with a 95% t interval."
    )
    if success:
        text += (
            " Success counts the runs that met the task's success criterion, out of the "
            "completed runs checked against it and the runs that diverged (a diverged run did "
            "not meet it), with a 95% Wilson interval."
        )
    return text + " — means no value (nothing is imputed)."


# --------------------------------------------------------------------------- helpers


def _atomic_write(path: Path, data: str | bytes) -> None:
    """Write via a temp file and a rename. Text is UTF-8; a run directory whose name is
    not valid UTF-8 (its undecodable bytes arrive as surrogate escapes) is written with
    backslash escapes rather than failing the report."""
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8", errors="backslashreplace")
    os.replace(tmp, path)


def printable(text: object) -> str:
    """``text`` on one printable line: newlines, other control characters and
    undecodable bytes in run-directory names or messages are shown as escapes."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))


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


def _stability_sentences(
    name: str, recs: list[dict], ctx_cells: list[dict], metric: MetricInfo = BPC
) -> list[str]:
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

    def score_at(r: dict, lr: float) -> float:
        """The cell's final metric, smaller is better (missing is worst)."""
        for c in ctx_cells:
            if same_setting(c, r) and c["optim.lr"] == lr:
                return float(metric.score([c["final_val_metric_mean"]])[0])
        return math.inf

    # the clipped setting with the largest stable lr; ties go to the better final metric
    best = None
    if clipped:
        best = min(
            clipped, key=lambda r: (-r["largest_stable_lr"], score_at(r, r["largest_stable_lr"]))
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


def _setting_phrase(rec: dict, extra: Sequence[str] = ()) -> str:
    """``SGD, lr 0.1, norm clipping at 1`` (+ any distinguishing setting)."""
    parts = []
    if "optim.name" in rec:
        parts.append(fmt.optimizer(rec["optim.name"]))
    if "optim.lr" in rec:
        parts.append(f"lr {fmt.lr(rec['optim.lr'])}")
    if "clip.method" in rec:
        parts.append(fmt.clip_phrase(rec["clip.method"], rec.get("threshold")))
    parts += [f"{c}={fmt.num(rec[c]) if not isinstance(rec[c], str) else rec[c]}" for c in extra
              if not fmt.is_missing(rec[c])]  # a key this configuration does not have
    return ", ".join(parts) if parts else "every run"


def _ci_words(mean: object, lo: object, hi: object) -> str:
    """``1.49 (95% CI 1.35–1.62)``, or the mean alone where there is no interval."""
    text = fmt.interval(mean, lo, hi)
    if "[" in text:  # "1.49 [1.35, 1.62]" -> "1.49 (95% CI 1.35–1.62)"
        m, rest = text.split(" [", 1)
        a, b = rest.rstrip("]").split(", ")
        text = f"{m} (95% CI {a}–{b})"
    return text


def _quality_sentence(cells_df: pd.DataFrame, n_completed: int, metric: MetricInfo = BPC) -> str:
    """The best mean final metric (lowest or highest, as the metric says) and where."""
    label = metric.label
    col = "final_val_metric_mean"
    fin = cells_df[cells_df["n_finished"] > 0] if not cells_df.empty else cells_df
    if fin.empty or not fin[col].notna().any():
        if n_completed == 0:
            return f"No run finished, so there is no final validation {label} to compare."
        return (
            f"None of the {n_completed} finished runs recorded a final validation {label} "
            "(was evaluation off?), so quality cannot be compared."
        )
    best = int(np.argmin(metric.score(fin[col])))
    rec = fin.iloc[best].to_dict()
    text = _ci_words(rec[col], rec["final_val_metric_lo"], rec["final_val_metric_hi"])
    caveat = (
        f"; {int(rec['n_diverged'])} of its {int(rec['n'])} seeds diverged"
        if rec["n_diverged"]
        else ""
    )
    word = "lowest" if metric.lower_is_better else "highest"
    return (
        f"The {word} mean final validation {label} was {text}, with "
        f"{_setting_phrase(rec, _distinguishing(cells_df))} "
        f"({int(rec['n_finished'])} of {int(rec['n'])} seeds finished{caveat})."
    )


def _task_name(group: TaskGroup | None) -> str:
    return "The task" if group is None or group.task is None else f"Task {group.task}"


def _success_sentence(cells_df: pd.DataFrame, group: TaskGroup | None) -> str | None:
    """How often the task's success criterion was met: the best configuration and overall."""
    if cells_df.empty or "n_success_trials" not in cells_df:
        return None
    trials = pd.to_numeric(cells_df["n_success_trials"], errors="coerce")
    if not trials.notna().any():
        return None  # the task has no success criterion
    name = _task_name(group)
    tried = cells_df[trials.fillna(0) > 0]
    if tried.empty:
        return f"{name} has a success criterion, but no run has been checked against it yet."
    k_all = int(pd.to_numeric(tried["n_success"]).sum())
    n_all = int(pd.to_numeric(tried["n_success_trials"]).sum())
    n_cfg = len(tried)
    cfgs = f"{n_cfg} configuration{'s' if n_cfg != 1 else ''}"
    if k_all == 0:
        return (
            f"{name} never met its success criterion: 0 of {n_all} runs across {cfgs} "
            "(diverged runs count as not met)."
        )
    metric = metric_of(cells_df)
    order = np.lexsort(
        (
            metric.score(tried["final_val_metric_mean"]),
            -pd.to_numeric(tried["n_success_trials"]).to_numpy(dtype=float),
            -pd.to_numeric(tried["success_rate"]).to_numpy(dtype=float),
        )
    )
    rec = tried.iloc[int(order[0])].to_dict()
    k, n = int(rec["n_success"]), int(rec["n_success_trials"])
    lo, hi = float(rec["success_rate_lo"]), float(rec["success_rate_hi"])
    same = int(
        (
            (pd.to_numeric(tried["n_success"]) == k)
            & (pd.to_numeric(tried["n_success_trials"]) == n)
        ).sum()
    )
    ties = ""
    if same > 1:
        ties = f" ({same - 1} other configuration{'s' if same > 2 else ''} did as well)"
    overall = (
        f"over all {cfgs}, {k_all} of {n_all} runs met it"
        if n_cfg > 1
        else "the only configuration checked"
    )
    return (
        f"{name} met its success criterion in {k} of {n} runs with "
        f"{_setting_phrase(rec, _distinguishing(cells_df))} (95% Wilson interval "
        f"{lo:.2f}–{hi:.2f}), the highest success rate{ties}; {overall} "
        "(diverged runs count as not met)."
    )


def _counts(runs: pd.DataFrame) -> tuple[int, int]:
    status = runs["status"].astype(object) if not runs.empty else pd.Series(dtype=object)
    return int((status == "completed").sum()), int((status == "diverged").sum())


def _seeds_phrase(with_runs: pd.DataFrame) -> str:
    if with_runs.empty:
        return ""
    lo, hi = int(with_runs["n"].min()), int(with_runs["n"].max())
    seeds = f"{lo}–{hi} seeds" if lo != hi else f"{lo} seed{'s' if lo != 1 else ''}"
    return f", {seeds} per configuration"


def task_sentences(
    runs: pd.DataFrame,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    group: TaskGroup | None = None,
) -> list[str]:
    """What one task group's runs found: stability, divergence kinds, quality, success."""
    out: list[str] = []
    metric = group.metric if group is not None else metric_of(cells_df)
    n_completed, n_diverged = _counts(runs)
    if n_completed + n_diverged == 0:
        return ["No run of it has finished or diverged yet, so there are no rates to report."]
    if not stable_df.empty and "clip.method" in stable_df.columns:
        ctx_cols = _context_cols(stable_df)
        contexts: dict[tuple, list[dict]] = {}
        for r in stable_df.to_dict("records"):
            contexts.setdefault(_key(r, ctx_cols), []).append(r)
        cells_rec = cells_df.to_dict("records")
        cell_cols = [c for c in ctx_cols if c in cells_df.columns]
        for ctx, recs in contexts.items():
            ctx_cells = [c for c in cells_rec if _key(c, cell_cols) == ctx and c["n"] > 0]
            name = _context_name(recs[0], ctx_cols)
            out += _stability_sentences(name, recs, ctx_cells, metric)
    if n_diverged:
        div = runs.loc[runs["status"].astype(object) == "diverged", "divergence"].astype(object)
        n_nf, n_ex = int((div == "nonfinite").sum()), int((div == "exploded").sum())
        out.append(
            f"Of the {n_diverged} diverged runs, {n_nf} hit a non-finite loss or gradient "
            f"and {n_ex} exploded."
        )
    out.append(_quality_sentence(cells_df, n_completed, metric))
    success = _success_sentence(cells_df, group)
    if success:
        out.append(success)
    return out


def headline(
    collected: CollectResult, cells_df: pd.DataFrame, stable_df: pd.DataFrame
) -> list[str]:
    """A few sentences that state what the sweep found, each with its counts.

    With one task group, every finding is here; with several, this holds the counts and
    the list of tasks, and :func:`task_sentences` gives each task's findings.
    """
    runs = collected.runs
    out: list[str] = []
    n_completed, n_diverged = _counts(runs)
    n_incomplete, n_corrupt = len(collected.incomplete), len(collected.corrupt)
    with_runs = cells_df[cells_df["n"] > 0] if not cells_df.empty else cells_df
    out.append(
        f"{collected.n_found} run directories: {n_completed} completed, {n_diverged} diverged, "
        f"{n_incomplete} incomplete and {n_corrupt} corrupt; "
        f"{len(with_runs)} configurations{_seeds_phrase(with_runs)}."
    )
    if n_completed + n_diverged == 0:
        out.append("No run has finished or diverged yet, so there are no rates to report.")
        return out

    groups = split_by_task(runs, cells_df, stable_df)
    if len(groups) > 1:
        listed = [f"{g.label}, scored by {g.metric.axis(prefix='').strip()}" for g, _ in groups]
        out.append(
            f"The runs belong to {len(groups)} tasks, each with its own quality measure, so "
            f"each is reported in its own section and never averaged with another: "
            f"{'; '.join(listed)}."
        )
    else:
        group = groups[0][0] if groups else None
        out += task_sentences(runs, cells_df, stable_df, group)

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
    n_damaged = len(_damaged_items(collected))
    if n_damaged:
        out.append(
            f"{n_damaged} run{'s' if n_damaged != 1 else ''} with an unreadable per-parameter "
            f"file (param_metrics.parquet) still count{'s' if n_damaged == 1 else ''} "
            "everywhere but in the per-layer figure; listed at the end."
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


def quality_header(metric: MetricInfo) -> str:
    """Header of the quality column: ``final val MSE [95% CI]``."""
    return f"final val {metric.label} [95% CI]"


SUCCESS_HEADER = "success k/n (rate [95% CI])"


def cells_table(cells_df: pd.DataFrame, metric: MetricInfo | None = None) -> pd.DataFrame:
    """The cells table of one task group as display strings; n is shown in every row.

    The quality column is named after the metric (``metric`` defaults to the one metric
    of ``cells_df``; a table that mixes metrics raises). A success column appears where
    the task has a success criterion.
    """
    if cells_df.empty:
        return pd.DataFrame()
    metric = metric or metric_of(cells_df)
    extra = _distinguishing(cells_df)
    show_incomplete = bool((cells_df["n_incomplete"] > 0).any())
    show_success = (
        "n_success_trials" in cells_df and bool(cells_df["n_success_trials"].notna().any())
    )
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
        row[quality_header(metric)] = fmt.interval(
            r["final_val_metric_mean"], r["final_val_metric_lo"], r["final_val_metric_hi"]
        )
        if show_success:
            trials = r["n_success_trials"]
            row[SUCCESS_HEADER] = (
                fmt.MISSING
                if fmt.is_missing(trials)
                else fmt.rate(r["n_success"], trials, r["success_rate_lo"], r["success_rate_hi"])
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
        return printable(str(x).replace("\n", " ")).replace("|", "\\|")

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


DAMAGED_HEADING = "Runs with an unreadable per-parameter file"
DAMAGED_NOTE = (
    "These runs are kept in every table, rate and figure except the per-layer one: their "
    "summary and main metrics are fine, only param_metrics.parquet cannot be read."
)


def _damaged_items(collected: CollectResult) -> list[tuple[str, str]]:
    damaged = getattr(collected, "damaged", None)
    if damaged is None or damaged.empty:
        return []
    return [(r["run_dir"], r["reason"]) for r in damaged.to_dict("records")]


# --------------------------------------------------------------------------- documents


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
) -> list[Section]:
    """One :class:`Section` per task group (one without heading when there is one group)."""
    groups = split_by_task(collected.runs, cells_df, stable_df)
    if len(groups) <= 1:
        metric = groups[0][0].metric if groups else BPC
        success = bool(groups and groups[0][0].has_success)
        return [
            Section(
                None,
                [],
                _constant_settings(cells_df),
                stable_table(stable_df),
                cells_table(cells_df, metric),
                cells_note(metric, success),
                list(figures),
            )
        ]
    out = []
    for group, (runs_g, cells_g, stable_g) in groups:
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
                [counts, *task_sentences(runs_g, cells_g, stable_g, group)],
                _constant_settings(cells_g),
                stable_table(stable_g),
                cells_table(cells_g, group.metric),
                cells_note(group.metric, group.has_success),
                [f for f in figures if f.task is not None and f.task.slug == group.slug],
            )
        )
    return out


def _md_section(sec: Section) -> list[str]:
    h = "##" if sec.group is None else "###"
    lines: list[str] = []
    if sec.group is not None:
        lines += ["", f"## {sec.title}", ""]
        lines += [f"- {s}" for s in sec.sentences]
    if sec.shared:
        scope = "every configuration" if sec.group is None else "every configuration of this task"
        lines += [
            "",
            f"Settings shared by {scope}: " + ", ".join(f"`{k}={v}`" for k, v in sec.shared) + ".",
        ]
    lines += ["", f"{h} Largest stable learning rate", "", _STABLE_NOTE, ""]
    lines.append(_md_table(sec.stable))
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


def render_markdown(
    collected: CollectResult,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    figures: Sequence[FigureResult],
    title: str,
) -> str:
    lines = [f"# {printable(title)}", "", f"Runs directory: {md_code(collected.runs_dir)}", ""]
    lines += [f"- {s}" for s in headline(collected, cells_df, stable_df)]
    for sec in sections(collected, cells_df, stable_df, figures):
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
    e = html.escape
    h = "h2" if sec.group is None else "h3"
    parts: list[str] = []
    if sec.group is not None:
        parts.append(f'<h2 id="task-{e(sec.group.slug)}">{e(sec.title)}</h2>')
        parts.append(
            '<ul class="summary">' + "".join(f"<li>{e(s)}</li>" for s in sec.sentences) + "</ul>"
        )
    if sec.shared:
        scope = "every configuration" if sec.group is None else "every configuration of this task"
        parts.append(
            f"<p>Settings shared by {scope}: "
            + ", ".join(f"<code>{e(k)}={e(v)}</code>" for k, v in sec.shared)
            + ".</p>"
        )
    parts += [
        f"<{h}>Largest stable learning rate</{h}>",
        f"<p>{e(_STABLE_NOTE)}</p>",
        _html_table(sec.stable),
        f"<{h}>Configurations</{h}>",
        f"<p>{e(sec.note)}</p>",
        _html_table(sec.cells),
        f"<{h}>Figures</{h}>",
    ]
    for f in sec.figures:
        if f.path is None:
            parts.append(f'<p class="note"><strong>{e(f.title)}</strong>: {e(f.note or "")}</p>')
            continue
        b64 = base64.b64encode(f.path.read_bytes()).decode("ascii")
        parts.append(
            f'<figure id="{e(f.name)}"><img src="data:image/png;base64,{b64}" alt="{e(f.title)}">'
            f"<figcaption><strong>{e(f.title)}.</strong> {e(f.caption)}</figcaption></figure>"
        )
    return parts


def render_html(
    collected: CollectResult,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    figures: Sequence[FigureResult],
    title: str,
) -> str:
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
        '<ul class="summary">'
        + "".join(f"<li>{e(s)}</li>" for s in headline(collected, cells_df, stable_df))
        + "</ul>",
    ]
    for sec in sections(collected, cells_df, stable_df, figures):
        parts += _html_section(sec)
    inc, cor = _problem_items(collected)
    parts.append("<h2>Incomplete run directories</h2>")
    parts.append(
        "<ul>" + "".join(f"<li><code>{p(d)}</code> — {p(s)}</li>" for d, s in inc) + "</ul>"
        if inc
        else "<p>None.</p>"
    )
    parts.append("<h2>Corrupt run directories</h2>")
    parts.append(
        "<ul>" + "".join(f"<li><code>{p(d)}</code> — {p(s)}</li>" for d, s in cor) + "</ul>"
        if cor
        else "<p>None.</p>"
    )
    damaged = _damaged_items(collected)
    if damaged:
        parts.append(f"<h2>{e(DAMAGED_HEADING)}</h2>")
        parts.append(f"<p>{e(DAMAGED_NOTE)}</p>")
        parts.append(
            "<ul>" + "".join(f"<li><code>{p(d)}</code> — {p(s)}</li>" for d, s in damaged)
            + "</ul>"
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
