"""The length axis in words and display tables: the sentences a length sweep opens with,
and its two tables, generated from ``length.length_summary`` and
``length.grad_norms_by_length`` and the cells behind them.

Every sentence names its counts, and a length or learning rate read off a grid is a
bound: "trained up to 512" on a x4 length grid means the limit lies somewhere between
512 and the next length run, 2,048, and the sentence says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report.length import LENGTH, with_length
from seqbench.report.length import context_columns as _context_cols
from seqbench.report.length import named_columns as _coords
from seqbench.report.sentences import context_name as _context_name
from seqbench.report.stats import threshold
from seqbench.rundir import TERMINAL

LENGTH_HEADING = "Sequence length: how far each setting trains"
LENGTH_NOTE = (
    "Per setting and learning rate, over the lengths it was run at (the length of "
    "back-propagation: task.seq_len for text, T for the synthetic tasks): trained up to = "
    "the longest length at which every seed trained with every shorter length trained too; "
    "first failed = the shortest length at which some seed did not; a longer 'any' length "
    "than the first failure means the column was not monotone. Finite = no seed diverged. "
    "Solved (synthetic tasks) = every seed met the task's success criterion. A setting row "
    "(lr —) names the learning rates that reach its longest trained length. Lengths are "
    "grid points: 'up to L' means the limit lies between L and the next length run."
)
GRAD_HEADING = "Gradient norms against length"
GRAD_NOTE = (
    "Per setting, learning rate and length, over the runs that completed or diverged: the "
    "median over runs of each run's median pre-clip global gradient norm, and, after the "
    "slash, the median over runs of each run's 99th percentile / median -- how far the "
    "top 1% of steps reach above a typical step (over each run's finite steps)."
)


def _length_word(group_df: pd.DataFrame) -> str:
    """``BPTT`` for text (task.seq_len), ``T`` for the synthetic tasks."""
    df = group_df
    if "task.seq_len" in df.columns and pd.to_numeric(df["task.seq_len"],
                                                      errors="coerce").notna().any():
        return "BPTT"
    return "T"


def _L(v: object) -> str:
    return f"{float(v):,.0f}" if not fmt.is_missing(v) else fmt.MISSING


def _named(r: dict, named: Sequence[str]) -> dict[str, str]:
    """The display columns that say which setting a row is."""
    row = {}
    for c in named:
        if c == "optim.name":
            row["optimizer"] = fmt.optimizer(r[c])
        elif c == "clip.method":
            row["clip"] = fmt.clip_short(r[c], r.get("threshold"))
        elif c != "threshold":
            row[c] = r[c] if isinstance(r[c], str) else fmt.num(r[c])
    return row


def length_table(summary_df: pd.DataFrame) -> pd.DataFrame:
    """The length summary as display strings, naming only the columns that vary."""
    if summary_df.empty:
        return pd.DataFrame()
    named = _coords(summary_df)
    solved = summary_df["largest_solved_length"].notna().any() or \
        summary_df["smallest_unsolved_length"].notna().any()
    rows = []
    for r in summary_df.to_dict("records"):
        row = _named(r, named)
        setting = r["level"] == "setting"
        row["lr"] = fmt.MISSING if setting else fmt.lr(r["optim.lr"])
        row["trained up to"] = _L(r["largest_trained_length"])
        if setting:
            row["first failed"] = f"at lr {r['lrs_reaching_longest'].replace(';', ', ')}" \
                if r["lrs_reaching_longest"] else fmt.MISSING
        else:
            row["first failed"] = _L(r["smallest_failed_length"])
        row["trained (any)"] = fmt.MISSING if setting else _L(r["longest_trained_length_any"])
        row["finite up to"] = _L(r["largest_finite_length"])
        row["first diverged"] = fmt.MISSING if setting else _L(r["smallest_diverged_length"])
        if solved:
            row["solved up to"] = _L(r["largest_solved_length"])
            row["first unsolved"] = fmt.MISSING if setting else _L(r["smallest_unsolved_length"])
        row["lengths"] = fmt.num(r["n_lengths"])
        row["seeds"] = fmt.num(r["n_seeds"])
        rows.append(row)
    return pd.DataFrame(rows)


def grad_table(grad_df: pd.DataFrame) -> pd.DataFrame:
    """Median norm / p99-over-median, one column per length, one row per setting and lr."""
    if grad_df.empty:
        return pd.DataFrame()
    named = [c for c in _coords(grad_df) if c != "threshold"]
    lengths = sorted(grad_df[LENGTH].dropna().unique())
    rows = []
    keys = [*named, "threshold", "optim.lr"] if "threshold" in grad_df else [*named, "optim.lr"]
    for _, g in grad_df.astype({k: object for k in keys}).groupby(keys, dropna=False,
                                                                  sort=False):
        r = g.iloc[0].to_dict()
        row = _named(r, named)
        row["lr"] = fmt.lr(r["optim.lr"])
        by_len = {float(x[LENGTH]): x for x in g.to_dict("records")}
        for L in lengths:
            x = by_len.get(float(L))
            row[_L(L)] = fmt.MISSING if x is None else (
                f"{fmt.short(x['grad_norm_median'])} / {fmt.short(x['p99_over_median'])}x")
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- sentences


@dataclass(frozen=True)
class _Criterion:
    """What "every seed made it" means in the sentences: trained (beat the baseline), or,
    for a task with a success criterion, solved (met it), with the columns to read."""

    verb: str        # "trained" | "solved"
    k: str           # the count of seeds that made it ...
    n: str           # ... out of
    largest: str     # length_summary columns
    failed: str


TRAINED = _Criterion("trained", "n_trained", "n", "largest_trained_length",
                     "smallest_failed_length")
SOLVED = _Criterion("solved", "n_success", "n_success_trials", "largest_solved_length",
                    "smallest_unsolved_length")


def _per_length(cells_df: pd.DataFrame) -> tuple[pd.DataFrame, _Criterion]:
    """Cells with a length, ``all_ok`` per cell, and the criterion it was read with."""
    df = with_length(cells_df[cells_df["n"] > 0])
    df = df[df[LENGTH].notna()].copy()
    crit = TRAINED
    if "n_success_trials" in df and pd.to_numeric(df["n_success_trials"],
                                                  errors="coerce").notna().any():
        crit = SOLVED
    k = pd.to_numeric(df[crit.k], errors="coerce")
    n = pd.to_numeric(df[crit.n], errors="coerce")
    df["all_ok"] = (k == n) & (n > 0)
    return df, crit


def _grid_step(values: Sequence[float]) -> str:
    """``x2`` or ``x4``: the grid's typical ratio between neighbours (for the caveat)."""
    v = sorted({float(x) for x in values if x and not math.isnan(float(x))})
    if len(v) < 2:
        return ""
    ratios = [b / a for a, b in zip(v, v[1:]) if a > 0]
    if not ratios:
        return ""
    r = float(np.median(ratios))
    return f"x{r:.3g}"


def length_sentences(summary_df: pd.DataFrame, cells_df: pd.DataFrame,
                     grad_df: pd.DataFrame, runs_df: pd.DataFrame | None = None) -> list[str]:
    """What the length axis shows, per context (optimizer, model, other settings)."""
    if summary_df.empty:
        return []
    per, crit = _per_length(cells_df)
    word = _length_word(per)
    lstep = _grid_step(per[LENGTH])
    lrstep = _grid_step(pd.to_numeric(per["optim.lr"], errors="coerce"))
    lr_grid = f"lr grid {lrstep}" if lrstep else "one learning rate"
    caveat = (f"lengths and learning rates are grid points ({word} grid {lstep}, {lr_grid}): "
              "each limit lies between the value named and the next one run")
    ctx_cols = _context_cols(summary_df)
    out = [f"Every length and learning rate below is a bound: {caveat}."]
    lr_rows = summary_df[summary_df["level"] == "lr"]
    scols = _coords(summary_df)
    for _, ctx in lr_rows.astype({c: object for c in ctx_cols}).groupby(
            ctx_cols, dropna=False, sort=False) if ctx_cols else [((), lr_rows)]:
        first = ctx.iloc[0].to_dict()
        cname = _context_name(first, ctx_cols)
        out += _edge_sentences(cname, ctx, per, scols, word, crit)
        out += _clip_gain_sentences(cname, ctx, per, word, crit, ctx_cols)
        out += _spike_sentences(cname, first, ctx_cols, grad_df, word)
    if runs_df is not None:
        out += _collapse_sentences(runs_df, cells_df, word)
    return out


#: A run *learned* when its best validation metric came within half the baseline's
#: distance of zero (for an error rate: half the chance error), and *collapsed* when it
#: then ended within 10% of the baseline again, or diverged: the signature of an
#: exploding gradient that undid what was learned.
LEARNED, COLLAPSED = 0.5, 0.9


def collapsed_runs(runs_df: pd.DataFrame) -> pd.DataFrame:
    """Runs (lower-is-better metrics with a baseline) that learned and then collapsed."""
    df = with_length(runs_df)
    if "best_val_metric" not in df or "baseline_val_metric" not in df:
        return df.iloc[:0]
    lower = df.get("metric_lower_is_better", pd.Series(True, index=df.index)).astype(object)
    base = pd.to_numeric(df["baseline_val_metric"], errors="coerce")
    best = pd.to_numeric(df["best_val_metric"], errors="coerce")
    final = pd.to_numeric(df["final_val_metric"], errors="coerce")
    learned = (lower == True) & (base > 0) & (best <= LEARNED * base)  # noqa: E712
    back = (df["status"].astype(object) == "diverged") | (final >= COLLAPSED * base)
    return df[learned & back]


def _collapse_sentences(runs_df: pd.DataFrame, cells_df: pd.DataFrame, word: str) -> list[str]:
    df = with_length(runs_df)
    df = df[df["status"].astype(object).isin(TERMINAL) & df[LENGTH].notna()].copy()
    df["threshold"] = threshold(df)
    if df.empty or "best_val_metric" not in df:
        return []
    bad = collapsed_runs(df)
    n_learned = int((pd.to_numeric(df["best_val_metric"], errors="coerce")
                     <= LEARNED * pd.to_numeric(df["baseline_val_metric"], errors="coerce")
                     ).sum())
    if n_learned == 0:
        return []
    if bad.empty:
        return [f"No run that learned (best validation metric at most half the baseline's; "
                f"{n_learned} of {len(df)} runs) collapsed back to the baseline afterwards."]
    named = [c for c in _coords(cells_df) if c in bad.columns]
    ctx = [c for c in named if not (c.startswith("clip.") or c == "threshold")]
    keys = [*named, "optim.lr"]
    parts = []
    for _, g in bad.astype({c: object for c in keys}).groupby(keys, dropna=False, sort=False):
        r = g.iloc[0].to_dict()
        lengths = ", ".join(f"{word} {_L(x)}" for x in sorted(g[LENGTH].unique()))
        clip = fmt.clip_phrase(r.get("clip.method"), r.get("threshold"))
        parts.append(f"{_context_name(r, ctx)} with {clip} at lr {fmt.lr(r['optim.lr'])}: "
                     f"{len(g)} ({lengths})")
    return [f"{len(bad)} of the {n_learned} runs that learned (best validation metric at most "
            "half the baseline's) collapsed back to within 10% of the baseline or diverged "
            "afterwards, the signature of an exploding gradient: " + "; ".join(parts) + "."]


def _match(df: pd.DataFrame, rec: dict, cols: Sequence[str]) -> pd.Series:
    m = pd.Series(True, index=df.index)
    for c in cols:
        if c not in df.columns:
            continue
        v = rec.get(c)
        col = df[c].astype(object)
        m &= col.isna() if fmt.is_missing(v) else (col == v)
    return m


def _edge_sentences(cname: str, ctx: pd.DataFrame, per: pd.DataFrame, scols: list[str],
                    word: str, crit: _Criterion) -> list[str]:
    """Per clip setting: the largest lr at which every seed made it, against length."""
    out = []
    clip_cols = [c for c in scols if c.startswith("clip.") or c == "threshold"]
    seen = set()
    for r in ctx.to_dict("records"):
        key = tuple(None if fmt.is_missing(r.get(c)) else r.get(c) for c in clip_cols)
        if key in seen:
            continue
        seen.add(key)
        cells = per[_match(per, r, [c for c in scols if c in per.columns])]
        if cells[LENGTH].nunique() < 2:
            continue
        edge = []
        for L, g in cells.groupby(LENGTH, sort=True):
            ok = pd.to_numeric(g.loc[g["all_ok"], "optim.lr"], errors="coerce")
            n = int(g["n"].min())
            edge.append((float(L), ok.max() if len(ok) else math.nan, n))
        clip = fmt.clip_phrase(r.get("clip.method"), r.get("threshold"))
        first, last = edge[0], edge[-1]
        ns = sorted({n for _, _, n in edge})
        seeds = f"{ns[0]} seeds" if len(ns) == 1 else f"{ns[0]}-{ns[-1]} seeds"
        lrs = "; ".join(f"{_L(L)}: {fmt.lr(v) if not math.isnan(v) else 'none'}"
                        for L, v, _ in edge)
        if all(math.isnan(v) for _, v, _ in edge):
            out.append(f"{cname} with {clip}: at no learning rate did every seed "
                       f"{_inf(crit)} at any {word} ({lrs}; {seeds} a cell).")
            continue
        a, b = first[1], last[1]
        if not math.isnan(a) and not math.isnan(b) and a == b:
            trend = f"stayed at {fmt.lr(a)} from {word} {_L(first[0])} to {_L(last[0])}"
        else:
            fa = fmt.lr(a) if not math.isnan(a) else "none"
            fb = fmt.lr(b) if not math.isnan(b) else "none"
            verb = "fell" if (math.isnan(b) or (not math.isnan(a) and b < a)) else "rose"
            trend = f"{verb} from {fa} at {word} {_L(first[0])} to {fb} at {_L(last[0])}"
        out.append(f"{cname} with {clip}: the largest learning rate at which every seed "
                   f"{crit.verb} {trend} (per length, {lrs}; {seeds} a cell).")
    return out


def _clip_gain_sentences(cname: str, ctx: pd.DataFrame, per: pd.DataFrame,
                         word: str, crit: _Criterion, ctx_cols: list[str]) -> list[str]:
    """Where clipping kept training to a longer length than no clipping at the same lr."""
    if "clip.method" not in ctx.columns:
        return []
    none = ctx[ctx["clip.method"].astype(object) == "none"]
    if none.empty:
        return []
    out, both = [], {}
    for c in ctx[ctx["clip.method"].astype(object) != "none"].to_dict("records"):
        base = none[np.isclose(pd.to_numeric(none["optim.lr"], errors="coerce"),
                               float(c["optim.lr"]))]
        if base.empty:
            continue
        method = (c["clip.method"], None if fmt.is_missing(c.get("threshold")) else
                  c.get("threshold"))
        both[method] = both.get(method, 0) + 1
        b = base.iloc[0].to_dict()
        reach_b, reach_c = b[crit.largest], c[crit.largest]
        if fmt.is_missing(reach_c) or not (fmt.is_missing(reach_b) or reach_c > reach_b):
            continue
        c["_gap"] = reach_c / reach_b if not fmt.is_missing(reach_b) and reach_b else math.inf
        c["_b"], c["_method"] = b, method
        out.append(c)
    lines = []
    for method in dict.fromkeys(r["_method"] for r in out):
        rows = [r for r in out if r["_method"] == method]
        best = max(rows, key=lambda r: (r["_gap"], float(r["optim.lr"])))
        b = best["_b"]
        fail = b[crit.failed]
        cell = per.iloc[:0]
        if not fmt.is_missing(fail):
            cell = per[(per["clip.method"].astype(object) == "none")
                       & np.isclose(pd.to_numeric(per["optim.lr"], errors="coerce"),
                                    float(best["optim.lr"]))
                       & (per[LENGTH] == fail)]
            # the context columns of the whole table: within one context none varies
            cell = cell[_match(cell, b, [c for c in ctx_cols if c in cell.columns])]
        counts = ""
        if len(cell):
            x = cell.iloc[0]
            counts = (f" ({int(x[crit.k])}/{int(x[crit.n])} seeds {crit.verb} there, "
                      f"{int(x['n_diverged'])} diverged)")
        if fmt.is_missing(b[crit.largest]):
            unclipped = f"not every seed {crit.verb} even at {word} {_L(fail)}{counts}"
        else:
            unclipped = (f"every seed {crit.verb} up to {word} {_L(b[crit.largest])} "
                         f"and not at {_L(fail)}{counts}")
        lines.append(
            f"{cname} at lr {fmt.lr(best['optim.lr'])}: without clipping {unclipped}; "
            f"with {fmt.clip_phrase(*method)} every seed {crit.verb} up to {word} "
            f"{_L(best[crit.largest])} (clipping reached a longer length at "
            f"{len(rows)} of the {both[method]} learning rates run both ways).")
    return lines


def _inf(crit: _Criterion) -> str:
    return "train" if crit is TRAINED else "solve the task"


def _spike_sentences(cname: str, first: dict, ctx_cols: list[str], grad_df: pd.DataFrame,
                     word: str) -> list[str]:
    """How the gradient-norm spikes of unclipped runs grow with length."""
    if grad_df.empty or "clip.method" not in grad_df.columns:
        return []
    g = grad_df[_match(grad_df, first, ctx_cols)]
    g = g[g["clip.method"].astype(object) == "none"]
    if g.empty:
        return []
    best = None
    for lr, x in g.groupby("optim.lr", sort=True):
        if x[LENGTH].nunique() >= 2 and x["p99_over_median"].notna().all():
            best = (lr, x.sort_values(LENGTH))  # the largest such lr wins
    if best is None:
        return []
    lr, x = best
    a, b = x.iloc[0], x.iloc[-1]
    return [f"{cname} without clipping at lr {fmt.lr(lr)}: the 99th percentile of the "
            f"gradient norm was {fmt.short(a['p99_over_median'])}x its median at {word} "
            f"{_L(a[LENGTH])} and {fmt.short(b['p99_over_median'])}x at {_L(b[LENGTH])} "
            f"(median norm {fmt.short(a['grad_norm_median'])} and "
            f"{fmt.short(b['grad_norm_median'])}; medians over {int(a['n_runs'])} and "
            f"{int(b['n_runs'])} runs)."]

