"""The Answer: which clip setting trains at which learning rate, and how well, per context.

Why first in the report: the question a reader brings ("which clipping raises the
learning rate that trains, for which optimizer and model, and what does it cost in
quality") had its answer spread over dozens of sentences and a long table, and the
findings had to pivot it by hand. This is that pivot, generated: a row per context (the
optimizer and any non-clip setting swept within it: the model, a momentum, a length),
a column per clip setting, and in each cell

- the largest learning rate at which every seed trained (beat the task's baseline),
  with the largest at which no seed diverged in brackets where that is larger;
- the best final metric [95% t interval over seeds] among the setting's learning rates
  where no seed diverged, and the learning rate it was reached at.

A cell is marked best in its row (★) only when it is clear of every other setting in
that row; two settings with the very same best (the same runs, as when a clip threshold
never triggers) share it and neither is marked. "Clear" is decided pair by pair of
settings, paired where pairs exist (issue 24: the paired comparisons are what the Answer
uses when they exist):

- *paired* when the other setting's best is at the same learning rate as the row's best
  and the two cells share at least two pairs with a finite metric on both sides (runs
  with the same seed, and fork parent, :mod:`seqbench.report.paired`): the 95% t interval
  of the per-pair differences (best minus other) must lie wholly on the better side of 0;
- *unpaired* otherwise: the two 95% t intervals over seeds must not overlap. Pairs exist
  only at one learning rate, and each cell shows its best at its own learning rate, so
  two bests at different rates are never paired: that comparison stays unpaired.

A ★ that rests on at least one paired comparison is shown ★ₚ, and answer.csv gives each
setting's paired difference from its row's best (``vs_best_*``) where one was used, so a
reader can tell which test decided. The learning rates are
grid points: a larger one means better by at least one grid step, not by that ratio.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report.layout import Layout, enrich
from seqbench.report.paired import Prepared, paired_cells, prepare
from seqbench.report.sentences import context_name
from seqbench.report.tables import row_key
from seqbench.report.task_groups import split_by_task

#: answer.csv's columns after the context and clip-setting keys.
ANSWER_COLUMNS: tuple[str, ...] = (
    "largest_trained_lr", "largest_finite_lr", "best_metric_mean", "best_metric_lo",
    "best_metric_hi", "best_metric_lr", "best_metric_n", "best_in_row", "tie_in_row",
    "steps_to_target_at_best", "n_reached_target_at_best", "n_at_best",
    "best_paired", "vs_best_n", "vs_best_mean_diff", "vs_best_diff_lo", "vs_best_diff_hi",
    "no_best")
#: Why a row has no best (``no_best``): every run diverged; a seed diverged at every lr;
#: some lr had no divergence but an unfinished run (or no finite metric).
NO_BEST_TEXT = {"all_diverged": "every run diverged",
                "diverged_at_every_lr": "a seed diverged at every lr",
                "unfinished": "no lr where every run finished"}
MARK = "★"
#: The mark of a best whose lead rests on at least one paired comparison.
MARK_PAIRED = "★ₚ"
#: Fewest finite pairs for a paired comparison in the Answer (an interval needs two).
MIN_PAIRS = 2


def clip_keys(layout: Layout) -> list[str]:
    """The columns that name a clip setting: method, threshold, and any other clip key
    that tells two settings of one method and threshold apart."""
    return ["clip.method", "threshold", *[f for f in layout.facets if f.startswith("clip.")]]


def clip_label(rec: dict, keys: Sequence[str]) -> str:
    extra = [fmt.setting(k, rec[k]) for k in keys[2:] if not fmt.is_missing(rec.get(k))]
    base = fmt.clip_short(rec.get("clip.method"), rec.get("threshold"))
    return base + (f" ({', '.join(extra)})" if extra else "")


def answer_table(cells_df: pd.DataFrame, stable_df: pd.DataFrame,
                 layout: Layout, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (context, clip setting) of the learning-rate summary: the columns of
    :data:`ANSWER_COLUMNS` after the context and clip keys (answer.csv). ``runs``: the
    enriched runs of these cells, for the paired comparisons (none without: every
    comparison is then unpaired)."""
    if stable_df.empty or "clip.method" not in stable_df.columns:
        return pd.DataFrame()
    ctx = [c for c in ("task.name", *layout.context) if c in stable_df.columns]
    clip = [c for c in clip_keys(layout) if c in stable_df.columns]
    keys = [c for c in layout.summary_keys if c in stable_df.columns and c in cells_df.columns]
    lower = layout.metric is None or layout.metric.lower_is_better
    sign = 1.0 if lower else -1.0
    by_key: dict[tuple, list[dict]] = {}
    for c in cells_df[cells_df["n"] > 0].to_dict("records"):
        by_key.setdefault(row_key(c, keys), []).append(c)
    rows = []
    for r in stable_df.to_dict("records"):
        own = by_key.get(row_key(r, keys), [])
        clean = [c for c in own if c["n_diverged"] == 0 and c.get("n_incomplete", 0) == 0
                 and not fmt.is_missing(c["final_val_metric_mean"])]
        best = min(clean, key=lambda c: (sign * c["final_val_metric_mean"], -c["optim.lr"]),
                   default=None)
        row = {k: r.get(k) for k in (*ctx, *clip)}
        row.update(largest_trained_lr=r["largest_trained_lr"],
                   largest_finite_lr=r["largest_finite_lr"])
        if best is None:
            row["no_best"] = ("all_diverged" if own and all(c["n_diverged"] == c["n"]
                                                            for c in own)
                              else "diverged_at_every_lr" if own and all(
                                  c["n_diverged"] > 0 for c in own) else "unfinished")
        else:
            row.update(best_metric_mean=best["final_val_metric_mean"],
                       best_metric_lo=best["final_val_metric_lo"],
                       best_metric_hi=best["final_val_metric_hi"],
                       best_metric_lr=best["optim.lr"], best_metric_n=best["n"],
                       steps_to_target_at_best=best.get("steps_to_target", np.nan),
                       n_reached_target_at_best=best.get("n_reached_target", np.nan),
                       n_at_best=best["n"], __cell=best.get("cell"))
        rows.append(row)
    out = pd.DataFrame(rows)
    for c in ANSWER_COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    if "__cell" not in out.columns:
        out["__cell"] = np.nan
    prep = prepare(runs, layout) if runs is not None and not runs.empty else None
    out["best_in_row"], out["tie_in_row"] = _marks(out, ctx, sign, prep)
    return out[[*ctx, *clip, *ANSWER_COLUMNS]]


def _vs_best(out: pd.DataFrame, i: int, top: int, prep: Prepared | None) -> dict | None:
    """Setting ``i``'s best minus the row's best (``top``) over their pairs, where both
    bests are at one learning rate and share :data:`MIN_PAIRS` finite pairs; else None."""
    if prep is None or out["best_metric_lr"].iloc[i] != out["best_metric_lr"].iloc[top]:
        return None
    a, b = out["__cell"].iloc[i], out["__cell"].iloc[top]
    if fmt.is_missing(a) or fmt.is_missing(b):
        return None
    got = paired_cells(prep, a, b)
    if got is None or got["n_diff"] < MIN_PAIRS or fmt.is_missing(got["diff_lo"]):
        return None
    return got


def _marks(out: pd.DataFrame, ctx: list[str], sign: float,
           prep: Prepared | None = None) -> tuple[list[bool], list[bool]]:
    """Best in its row: the best mean, clear of every other setting in the row: paired
    (the interval of other minus best on the worse side of 0) where :func:`_vs_best`
    finds pairs, else unpaired (the two intervals apart). Tie: another setting has the
    very same best mean. Fills ``best_paired`` and the ``vs_best_*`` columns."""
    best, tie = [False] * len(out), [False] * len(out)
    paired = [False] * len(out)
    vs = {c: [np.nan] * len(out) for c in ("vs_best_n", "vs_best_mean_diff",
                                           "vs_best_diff_lo", "vs_best_diff_hi")}
    rows: dict[tuple, list[int]] = {}
    for i, rec in enumerate(out.to_dict("records")):
        rows.setdefault(row_key(rec, ctx), []).append(i)
    mean = out["best_metric_mean"].to_numpy(dtype=float) * sign
    lo = np.fmin(out["best_metric_lo"].to_numpy(dtype=float),
                 out["best_metric_hi"].to_numpy(dtype=float))
    hi = np.fmax(out["best_metric_lo"].to_numpy(dtype=float),
                 out["best_metric_hi"].to_numpy(dtype=float))
    # in the "better" direction: lower ends for lower-is-better, upper ends otherwise
    near, far = (hi, lo) if sign > 0 else (-lo, -hi)
    for idx in rows.values():
        have = [i for i in idx if np.isfinite(mean[i])]
        if len(have) < 2:
            continue
        top = min(have, key=lambda i: mean[i])
        same = [i for i in have if i != top and mean[i] == mean[top]]
        for i in same + ([top] if same else []):
            tie[i] = True
        if same:
            continue
        clear = []
        for i in (i for i in have if i != top):
            got = _vs_best(out, i, top, prep)
            if got is None:  # unpaired: the two intervals apart
                clear.append(bool(np.isfinite(near[top]) and np.isfinite(far[i])
                                  and near[top] < far[i]))
                continue
            for col, key in (("vs_best_n", "n_diff"), ("vs_best_mean_diff", "mean_diff"),
                             ("vs_best_diff_lo", "diff_lo"), ("vs_best_diff_hi", "diff_hi")):
                vs[col][i] = got[key]
            paired[top] = True
            # other minus best: worse is above 0 where lower is better, below otherwise
            clear.append(bool(min(sign * got["diff_lo"], sign * got["diff_hi"]) > 0))
        best[top] = all(clear)
    out["best_paired"] = [p and b for p, b in zip(paired, best, strict=True)]
    for col, values in vs.items():
        out[col] = values
    return best, tie


def answer_pivot(answer: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    """The Answer as display strings: a row per context, a column per clip setting."""
    if answer.empty:
        return pd.DataFrame()
    ctx = [c for c in ("task.name", *layout.context) if c in answer.columns]
    shown_ctx = [c for c in ctx if c != "task.name" or answer["task.name"].nunique() > 1]
    clip = [c for c in clip_keys(layout) if c in answer.columns]
    cols: list[str] = []
    table: dict[str, dict[str, str]] = {}
    for rec in answer.to_dict("records"):
        name = context_name(rec, shown_ctx) if shown_ctx else "all runs"
        label = clip_label(rec, clip)
        if label not in cols:
            cols.append(label)
        table.setdefault(name, {})[label] = cell_text(rec)
    return pd.DataFrame([{"context": name, **{c: row.get(c, "") for c in cols}}
                         for name, row in table.items()])


def cell_text(rec: dict) -> str:
    """``lr 16 (64) · 2.41 [2.38, 2.45] at 4``; ``★`` before a best-in-row quality."""
    trained, finite = rec["largest_trained_lr"], rec["largest_finite_lr"]
    lr = "—" if fmt.is_missing(trained) else fmt.lr(trained)
    if not fmt.is_missing(finite) and (fmt.is_missing(trained) or finite > trained):
        lr += f" ({fmt.lr(finite)})"
    if fmt.is_missing(rec["best_metric_mean"]):
        why = rec.get("no_best")
        return f"lr {lr} · {NO_BEST_TEXT.get(why, NO_BEST_TEXT['all_diverged'])}"
    q = fmt.interval(rec["best_metric_mean"], rec["best_metric_lo"], rec["best_metric_hi"])
    mark = ""
    if rec["best_in_row"]:
        paired = rec.get("best_paired")
        mark = f"{MARK_PAIRED if not fmt.is_missing(paired) and bool(paired) else MARK} "
    tie = " (tie)" if rec["tie_in_row"] else ""
    return f"lr {lr} · {mark}{q}{tie} at {fmt.lr(rec['best_metric_lr'])}"


def answer_note(answer: pd.DataFrame, metric_label: str) -> str:
    """How to read the Answer, with its n."""
    n = answer["best_metric_n"].dropna()
    seeds = ""
    if len(n):
        lo, hi = int(n.min()), int(n.max())
        seeds = f" ({lo} seeds)" if lo == hi else f" ({lo}–{hi} seeds)"
    k = int(answer["vs_best_n"].notna().sum()) if "vs_best_n" in answer.columns else 0
    paired = (f"; here {k} comparison{'s' if k != 1 else ''} with a row's best "
              f"{'were' if k != 1 else 'was'} paired")
    return (f"Each cell: **lr** the largest learning rate at which every seed trained (beat "
            f"the baseline), in brackets the largest at which no seed diverged where that is "
            f"larger (— : none); then the best final validation {metric_label} [95% t "
            f"interval over seeds{seeds}] among the learning rates where no seed diverged, "
            f"and the learning rate it was reached at. {MARK}: best in its row, clear of "
            "every other setting in the row: where the other setting's best is at the same "
            f"learning rate and the two share at least {MIN_PAIRS} pairs (runs with the "
            "same seed, "
            "and fork parent, that ended finite), the 95% t interval of the per-pair "
            "differences lies wholly on the worse side of 0 for the other setting; "
            "otherwise (a best at another learning rate, or no pairs) the two unpaired "
            f"intervals do not overlap. {MARK_PAIRED}: at least one of those comparisons "
            "was paired (answer.csv, vs_best_*: each paired difference from the row's best)"
            f"{paired}; (tie): the very same best as another setting, so neither is awarded. "
            "No correction is made for the many rows compared. Learning rates are grid points: a "
            "larger largest-trained lr means better by at least one grid step, not by the "
            "ratio of the two values. Not shown: cost (see the time-to-target columns of "
            "the configurations table) and the learning rates between grid points.")


def answers(runs: pd.DataFrame, cells_df: pd.DataFrame, stable_df: pd.DataFrame,
            layout: Layout) -> list[tuple[str | None, pd.DataFrame, pd.DataFrame, str]]:
    """The Answer of each task group: (its label, or None when there is one group; the
    answer.csv rows; the display pivot; how to read it)."""
    if not runs.empty and "cell" not in runs.columns:
        runs = enrich(runs)  # the cell ids of cells_df, numbered over the whole table
    groups = split_by_task(runs, cells_df, stable_df)
    out = []
    for group, (runs_g, cells_g, stable_g) in groups:
        own = layout.within(cells_g)
        table = answer_table(cells_g, stable_g, own, runs_g)
        if table.empty:
            continue
        label = group.label if len(groups) > 1 else None
        out.append((label, table, answer_pivot(table, own),
                    answer_note(table, group.metric.label)))
    return out
