"""Paired comparisons of clip settings: against no clipping, and with each other (issue 24).

Why a module of its own: the cells table compares clip settings with unpaired
intervals, which treat the seeds of two settings as independent samples. Runs that share
a seed in one context (same model, optimizer, learning rate, every other setting but the
clip setting) start from the same weights and see the same batches, and forks of one
parent (``parent.digest``, ``parent.step``) share its training too: such runs are
**pairs**, and their differences remove the run-to-run noise that both sides share.

For each clip setting against ``clip.method == "none"`` at the same context and lr:

- per-pair differences in the final metric (setting minus none), over the pairs where
  both runs have a finite ``final_val_metric``: n, the mean, a 95% Student-t interval on
  the differences, and a two-sided Wilcoxon signed-rank p when n >= 6 (fewer pairs
  cannot reach p < 0.05, so none is shown);
- outcome changes as a 2x2 over every pair where both runs have a verdict (trained or
  not: ``outcome == "trained"``), with McNemar's exact p: the two-sided binomial test of
  the discordant pairs (only one side trained) against 1/2; none without discordant
  pairs.

The same statistics compare any two settings A and B of one context and lr (A minus B):
:func:`paired_between` for every two settings, :func:`paired_cells` for two cells (the
Answer compares each row's best with the others this way), :func:`paired_against_none`
for one cell against the unclipped cell beside it (the sentences). :func:`prepare`
computes the pair keys once for all of them.

A non-finite side drops its pair from the difference only: the pair still counts in
the 2x2. A pair key held by several runs of one setting (the same run twice) is
ambiguous and is not paired. Pure pandas/scipy: no files, no drawing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as sps

from seqbench.report import _format as fmt
from seqbench.report.layout import RAW_THRESHOLD, Layout, enrich
from seqbench.report.stats import cell_key_columns, cells, sort_cells
from seqbench.report.task_groups import TASK_COLUMN

#: Config keys naming a fork's parent: part of the pair key when the runs carry them.
PARENT_COLUMNS: tuple[str, ...] = ("parent.digest", "parent.step")
#: The statistics of :func:`paired_comparisons`, after the key columns.
PAIRED_COLUMNS: tuple[str, ...] = (
    "n_pairs", "n_diff", "mean_diff", "diff_lo", "diff_hi", "wilcoxon_p",
    "both_trained", "only_setting", "only_none", "neither", "mcnemar_p",
    "metric", "metric_lower_is_better",
)
#: Fewest finite pairs for a Wilcoxon p.
MIN_WILCOXON = 6

HEADING = "Paired comparisons against no clipping"
NOTE = (
    'A pair is two runs that differ only in the clip setting: same context (model, '
    'optimizer, every other setting), same learning rate and same seed, so the same '
    'initial weights and the same batches (and, for forked runs, the same parent). **mean'
    ' difference** is the final metric of the setting minus that of no clipping, averaged'
    " over the pairs where both runs ended with a finite metric (n), in the metric's own "
    'units: negative is better where lower is better. The interval is a 95% t interval on'
    ' those differences; the two-sided Wilcoxon signed-rank p needs n ≥ 6 (— with fewer).'
    ' A difference of exactly 0 [0, 0] means the paired runs ended the same: the clip '
    'setting did not change the run (it never acted, or acted alike).'
    ' The 2×2 counts every pair where both runs have a verdict: both trained / only the '
    "setting trained / only no clipping trained / neither; McNemar's exact p tests the "
    'discordant pairs (only one trained; — when there are none). What it does not show: '
    'pairs whose runs diverged or ended non-finite are in the 2×2 but not in the '
    'difference, so the difference is among survivors only; a difference says nothing '
    'about other seeds, learning rates or tasks; and p values are not corrected for the '
    'many rows tested.'
)


def _keys(runs: pd.DataFrame, layout: Layout) -> tuple[list[str], list[str]]:
    """(context keys without the lr, setting keys): the cell keys split into what is not a
    clip setting and what is; the raw threshold keys are read through ``threshold``."""
    cell_keys = list(layout.cell_keys) or cell_key_columns(runs)
    cell_keys = [c for c in cell_keys if c in runs.columns]
    setting = ["clip.method", "threshold"] + [
        c for c in cell_keys
        if c.startswith("clip.") and c != "clip.method" and c not in RAW_THRESHOLD]
    context = [c for c in cell_keys if not c.startswith("clip.") and c != "optim.lr"
               and c not in PARENT_COLUMNS]
    for c in ("metric",):  # runs in different units never pair
        if c in runs.columns and c not in context:
            context.append(c)
    return context, setting


def _norm(v: object) -> object:
    """A key value that compares equal to itself (NaN and None as one marker)."""
    if fmt.is_missing(v):
        return "\0missing"
    if isinstance(v, list | dict | np.ndarray):
        return repr(v)
    return v


def _key(df: pd.DataFrame, cols: Sequence[str]) -> pd.Series:
    """One string per row naming its values of ``cols`` (NaN equal to NaN)."""
    if not cols:
        return pd.Series("()", index=df.index, dtype=object)
    rows = df[list(cols)].astype(object).itertuples(index=False, name=None)
    return pd.Series([repr(tuple(_norm(v) for v in r)) for r in rows], index=df.index,
                     dtype=object)


def diff_stats(diffs: Sequence[float]) -> dict[str, float]:
    """n, mean, 95% t interval and Wilcoxon p of paired differences (finite values only).
    One difference: no interval; fewer than :data:`MIN_WILCOXON`: no Wilcoxon p."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    out = {"n_diff": n, "mean_diff": math.nan, "diff_lo": math.nan, "diff_hi": math.nan,
           "wilcoxon_p": math.nan}
    if n == 0:
        return out
    mean = float(d.mean())
    out["mean_diff"] = mean
    if n >= 2:
        half = float(sps.t.ppf(0.975, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
        out["diff_lo"], out["diff_hi"] = mean - half, mean + half
    if n >= MIN_WILCOXON:
        with warnings.catch_warnings():  # all-zero differences warn; scipy still answers
            warnings.simplefilter("ignore")
            try:
                p = float(sps.wilcoxon(d).pvalue)
            except ValueError:
                p = math.nan
        out["wilcoxon_p"] = p if math.isfinite(p) else math.nan
    return out


def mcnemar_exact(only_setting: int, only_none: int) -> float:
    """McNemar's exact p: two-sided binomial test of the discordant pairs; NaN without."""
    n = int(only_setting) + int(only_none)
    if n == 0:
        return math.nan
    return float(sps.binomtest(int(only_setting), n, 0.5).pvalue)


def prepare(runs: pd.DataFrame, layout: Layout | None = None) -> Prepared:
    """The runs that can pair, with their keys computed once: a run with a verdict,
    named by its context and lr (``__ctx``), its pair key (seed and parent, ``__pair``)
    and its clip setting (``__set``). A pair key held twice in one setting of one context
    (the same run twice) is ambiguous and dropped. ``layout``: the report's (derived
    from ``runs`` when not given)."""
    need = {"clip.method", "seed", "outcome", "final_val_metric"}
    if runs.empty or not need <= set(runs.columns):
        return Prepared(pd.DataFrame(), [], [], [])
    if "threshold" not in runs.columns or "cell" not in runs.columns:
        runs = enrich(runs)
    if layout is None:
        layout = Layout.of(runs, cells(runs))
    context, setting = _keys(runs, layout)
    parents = [c for c in PARENT_COLUMNS if c in runs.columns]
    df = runs[runs["outcome"].map(lambda v: not fmt.is_missing(v))].copy()
    lr = ["optim.lr"] if "optim.lr" in df.columns else []
    if df.empty:
        return Prepared(pd.DataFrame(), context, lr, setting)
    df["__ctx"] = _key(df, [*context, *lr])
    df["__pair"] = _key(df, ["seed", *parents])
    df["__set"] = _key(df, setting)
    df["__metric"] = pd.to_numeric(df["final_val_metric"], errors="coerce").astype(float)
    df["__trained"] = df["outcome"].astype(object) == "trained"
    dup = df.duplicated(["__ctx", "__set", "__pair"], keep=False)
    return Prepared(df[~dup], context, lr, setting)


class Prepared(NamedTuple):
    """What :func:`prepare` returns: the pairable runs and the key columns it used."""

    df: pd.DataFrame
    context: list[str]
    lr: list[str]
    setting: list[str]


def pair_stats(a: pd.DataFrame, b: pd.DataFrame) -> dict | None:
    """A minus B over the pairs of two prepared sets of runs (one setting each, joined on
    context, lr and pair key): n_pairs, the difference statistics of :func:`diff_stats`,
    the trained 2x2 (``both_trained``, ``only_a``, ``only_b``, ``neither``) and McNemar's
    exact p. None when no run of A has a twin in B."""
    cols = ["__ctx", "__pair", "__metric", "__trained"]
    joined = a[cols].merge(b[cols], on=["__ctx", "__pair"], suffixes=("", "_b"))
    if joined.empty:
        return None
    x, y = joined["__trained"].to_numpy(bool), joined["__trained_b"].to_numpy(bool)
    counts = {"both_trained": int((x & y).sum()), "only_a": int((x & ~y).sum()),
              "only_b": int((~x & y).sum()), "neither": int((~x & ~y).sum())}
    return {"n_pairs": len(joined),
            **diff_stats((joined["__metric"] - joined["__metric_b"]).to_numpy()),
            **counts, "mcnemar_p": mcnemar_exact(counts["only_a"], counts["only_b"])}


def paired_cells(prep: Prepared, cell_a: object, cell_b: object) -> dict | None:
    """Cell A minus cell B (``cell`` ids of the enriched runs) over their pairs, as
    :func:`pair_stats`; None unless both cells are in one context and lr, in different
    clip settings, and share a pair key."""
    df = prep.df
    if df.empty or "cell" not in df.columns:
        return None
    a, b = df[df["cell"] == cell_a], df[df["cell"] == cell_b]
    if a.empty or b.empty or a["__ctx"].iloc[0] != b["__ctx"].iloc[0] \
            or a["__set"].iloc[0] == b["__set"].iloc[0]:
        return None
    return pair_stats(a, b)


def paired_against_none(prep: Prepared, cell: object) -> dict | None:
    """``cell`` minus the unclipped cell of its context and lr (:func:`paired_cells`);
    None where there is no single unclipped cell there, or no pair."""
    df = prep.df
    if df.empty or "cell" not in df.columns:
        return None
    own = df[df["cell"] == cell]
    if own.empty:
        return None
    there = df[(df["__ctx"] == own["__ctx"].iloc[0])
               & (df["clip.method"].astype(object) == "none")]
    if there["cell"].nunique() != 1:
        return None
    return paired_cells(prep, cell, there["cell"].iloc[0])


def _shown(out: pd.DataFrame, layout: Layout, lr: list[str]) -> list[str]:
    """The columns a row is named by: the layout's context (what the sentences compare
    clip settings within), the task when several, and the lr."""
    shown = [c for c in layout.context if c in out.columns and c != "optim.lr"]
    if TASK_COLUMN in out.columns and out[TASK_COLUMN].astype(object).nunique() > 1:
        shown.insert(0, TASK_COLUMN)
    return list(dict.fromkeys([*shown, *lr]))


def paired_comparisons(runs: pd.DataFrame, layout: Layout | None = None) -> pd.DataFrame:
    """One row per (context, lr, clip setting other than none) with at least one pair
    with a verdict: the columns naming it (the task when several, ``layout.context``,
    ``optim.lr``, ``clip.method``, ``threshold``, clip facets), then
    :data:`PAIRED_COLUMNS`: the rows of :func:`paired_between` that have no clipping on
    one side, as that setting minus no clipping.

    ``runs``: the enriched runs table (``layout.enrich``); ``layout``: the report's
    (its cell keys say what a context is, its context and clip facets which columns
    name a row; derived from ``runs`` when not given). Empty when nothing pairs."""
    return against_none(paired_between(runs, layout))


def against_none(between: pd.DataFrame) -> pd.DataFrame:
    """The rows of a :func:`paired_between` table with no clipping on one side, as that
    setting minus no clipping, in :func:`paired_comparisons`' columns."""
    if between.empty:
        return pd.DataFrame(columns=list(PAIRED_COLUMNS))
    vs = [c for c in between.columns if c.startswith(VS)]
    mine = [c[len(VS):] for c in vs]
    b_none = between[f"{VS}clip.method"].astype(object) == "none"
    a_none = between["clip.method"].astype(object) == "none"
    rows = between[b_none & ~a_none]
    flipped = between[a_none & ~b_none].copy()  # none sorted after a setting: turn round
    if not flipped.empty:
        flipped[mine + vs] = flipped[vs + mine].to_numpy()
        flipped[["mean_diff", "diff_lo", "diff_hi"]] = \
            -flipped[["mean_diff", "diff_hi", "diff_lo"]].to_numpy(float)
        flipped[["only_a", "only_b"]] = flipped[["only_b", "only_a"]].to_numpy()
    out = pd.concat([rows, flipped]).drop(columns=vs)
    out = out.rename(columns={"only_a": "only_setting", "only_b": "only_none"})
    keys = [c for c in out.columns if c not in PAIRED_COLUMNS]
    return sort_cells(out, keys)[keys + list(PAIRED_COLUMNS)]


#: The statistics of :func:`paired_between`, after the key columns: as
#: :data:`PAIRED_COLUMNS`, with the 2x2 named by side (``only_a``: only A trained).
BETWEEN_COLUMNS: tuple[str, ...] = (
    "n_pairs", "n_diff", "mean_diff", "diff_lo", "diff_hi", "wilcoxon_p",
    "both_trained", "only_a", "only_b", "neither", "mcnemar_p",
    "metric", "metric_lower_is_better",
)
#: The prefix of setting B's key columns in :func:`paired_between`.
VS = "vs."


def paired_between(runs: pd.DataFrame, layout: Layout | None = None) -> pd.DataFrame:
    """Every two clip settings of one context and lr compared over their pairs, no
    clipping included: one row per (context, lr, setting A, setting B) with a pair, A
    after B in the report's order of settings (so B is no clipping where one side is),
    the difference A minus B. Columns: the context and lr (as
    :func:`paired_comparisons`), A's clip keys, B's under :data:`VS` (``vs.clip.method``),
    then :data:`BETWEEN_COLUMNS`. The statistics are those of the pairs alone: which
    setting is better needs the metric's direction (``metric_lower_is_better``)."""
    if layout is None and not runs.empty and "clip.method" in runs.columns:
        runs = enrich(runs) if "threshold" not in runs.columns else runs
        layout = Layout.of(runs, cells(runs))
    prep = prepare(runs, layout)
    df = prep.df
    if df.empty or layout is None:
        return pd.DataFrame(columns=list(BETWEEN_COLUMNS))
    extra = [c for c in layout.facets if c.startswith("clip.") and c in df.columns]
    clip = list(dict.fromkeys(["clip.method", "threshold", *extra]))
    rows = []
    for _, g in df.groupby("__ctx", sort=False):
        firsts = g.drop_duplicates("__set")
        order = sort_cells(firsts[clip].assign(_pos=np.arange(len(firsts))), clip)["_pos"]
        sets = [firsts.iloc[int(i)] for i in order]
        for j, b in enumerate(sets):
            for a in sets[j + 1:]:
                got = pair_stats(g[g["__set"] == a["__set"]], g[g["__set"] == b["__set"]])
                if got is None:
                    continue
                row = {c: a[c] for c in [*prep.context, *prep.lr, *clip]}
                row.update({f"{VS}{c}": b[c] for c in clip})
                row.update(got, metric=a.get("metric", "bpc"),
                           metric_lower_is_better=a.get("metric_lower_is_better", True))
                rows.append(row)
    if not rows:
        return pd.DataFrame(columns=list(BETWEEN_COLUMNS))
    out = pd.DataFrame(rows)
    keys = [*_shown(out, layout, prep.lr), *clip, *[f"{VS}{c}" for c in clip]]
    out = sort_cells(out, keys)
    return out[keys + list(BETWEEN_COLUMNS)]


def diff_text(mean: object, lo: object, hi: object) -> str:
    """``-0.118 [-0.236, -0.000]``: one number of decimals for all three, 3 significant
    digits of the largest (a difference near 0 is read against its interval)."""
    if fmt.is_missing(mean):
        return fmt.MISSING
    vals = [float(v) for v in (mean, lo, hi) if not fmt.is_missing(v)]  # type: ignore[arg-type]
    big = max(abs(v) for v in vals)
    dec = 3 if big == 0 else max(0, 2 - math.floor(math.log10(big)))
    m = f"{float(mean):.{dec}f}"  # type: ignore[arg-type]
    if fmt.is_missing(lo) or fmt.is_missing(hi):
        return m
    return f"{m} [{float(lo):.{dec}f}, {float(hi):.{dec}f}]"  # type: ignore[arg-type]


def _p(x: object) -> str:
    if fmt.is_missing(x):
        return fmt.MISSING
    v = float(x)  # type: ignore[arg-type]
    return "<0.001" if v < 0.001 else f"{v:.3f}" if v < 0.1 else f"{v:.2f}"


#: Headers of the display table (the numeric ones align right).
PAIRS_HEADER = "pairs"
N_HEADER = "n (both finite)"
TABLE_HEADERS: tuple[str, ...] = (PAIRS_HEADER, N_HEADER, "Wilcoxon p", "McNemar p")


def paired_table(paired: pd.DataFrame) -> pd.DataFrame:
    """The display table of :func:`paired_comparisons`: context, lr, setting, pairs,
    mean difference [95% CI], Wilcoxon p, the 2×2 counts and McNemar p."""
    if paired.empty:
        return pd.DataFrame()
    ctx_cols = [c for c in paired.columns if c not in PAIRED_COLUMNS
                and c not in ("optim.lr", "clip.method", "threshold")
                and not c.startswith("clip.")]
    set_cols = [c for c in paired.columns if c.startswith("clip.") and c != "clip.method"]
    unit = fmt.metric(paired["metric"].iloc[0]) if paired["metric"].nunique() == 1 else ""
    diff_header = f"mean difference in {unit} [95% CI]" if unit else "mean difference [95% CI]"
    rows = []
    for r in paired.to_dict("records"):
        ctx = [fmt.optimizer(r[c]) if c == "optim.name" else
               str(r[c]) if c == TASK_COLUMN else fmt.setting(c, r[c]) for c in ctx_cols]
        label = fmt.clip_short(r["clip.method"], r["threshold"])
        extra = [fmt.setting(c, r[c]) for c in set_cols]
        rows.append({
            "context": ", ".join(ctx) or fmt.MISSING,
            "lr": fmt.lr(r.get("optim.lr")),
            "setting": ", ".join([label, *extra]),
            PAIRS_HEADER: str(int(r["n_pairs"])),
            N_HEADER: str(int(r["n_diff"])),
            diff_header: diff_text(r["mean_diff"], r["diff_lo"], r["diff_hi"]),
            "Wilcoxon p": _p(r["wilcoxon_p"]),
            "both / only setting / only none / neither":
                f"{r['both_trained']} / {r['only_setting']} / {r['only_none']} / {r['neither']}",
            "McNemar p": _p(r["mcnemar_p"]),
        })
    return pd.DataFrame(rows)
