"""The sentences a report opens with about learning rates and outcomes.

Every sentence is generated from the tables (``lr_summary.csv`` and ``cells.csv``) and
claims no more than they show. Two claims are kept apart because readers act on them
differently: a setting *kept training finite* (no seed diverged) and a setting
*trained* (every seed ended better than the task's input-independent baseline). Where
learning rates are compared, the grid's edge is named (the limit may lie beyond it);
LR sensitivity carries its bootstrap interval and says when intervals overlap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from seqbench.report import _format as fmt
from seqbench.report.paired import diff_text
from seqbench.report.task_groups import BPC, MetricInfo

#: How many configurations a "did not learn" sentence names before it counts the rest.
MAX_NAMED = 4


def _same(a: object, b: object) -> bool:
    return (fmt.is_missing(a) and fmt.is_missing(b)) or a == b


def _phrase(rec: dict) -> str:
    return fmt.clip_phrase(rec["clip.method"], rec.get("threshold"))


def _edge(lr: float, max_lr: float) -> str:
    return ", the largest rate tried (the limit may be higher)" if lr == max_lr else ""


def baseline_words(cells: Sequence[dict], metric: MetricInfo = BPC) -> str:
    """``the 4.81 bits/char baseline`` (or ``the baseline`` when it is unknown)."""
    values = sorted({round(float(c["baseline_val_metric"]), 6) for c in cells
                     if not fmt.is_missing(c.get("baseline_val_metric"))})
    if len(values) == 1:
        unit = metric.unit if metric.is_text else metric.label
        return f"the {fmt.num(values[0])} {unit} baseline"
    return "the task's baseline"


def finite_vs_trained(name: str, rec: dict, cells: Sequence[dict], max_lr: float,
                      metric: MetricInfo = BPC) -> str:
    """Unclipped: how far up the lr training stayed finite, and how far it trained."""
    finite, trained = rec["largest_finite_lr"], rec["largest_trained_lr"]
    base = baseline_words(cells, metric)
    k, lrs = int(rec["n_seeds"]), int(rec["n_lrs"])
    n = (f"at least {k} seed{'s' if k != 1 else ''} at each of {lrs} learning rates"
         if lrs != 1 else f"{k} seed{'s' if k != 1 else ''} at its one learning rate")
    if fmt.is_missing(finite):
        return f"Without clipping, {name} ({n}) diverged at every learning rate tried."
    head = f"Without clipping, {name} ({n}) kept training finite up to lr {fmt.lr(finite)}"
    if fmt.is_missing(trained):
        return (f"{head}{_edge(finite, max_lr)}, but at no learning rate did every seed "
                f"beat {base}.")
    if trained == finite:
        return (f"{head} and trained (every seed beat {base}) up to the same rate"
                f"{_edge(finite, max_lr)}.")
    return (f"{head}{_edge(finite, max_lr)}, but trained (every seed beat {base}) only up "
            f"to lr {fmt.lr(trained)}.")


def best_clipped(recs: Sequence[dict], score_at) -> dict | None:
    """The clip setting that trains furthest up the lr (ties: the better final metric
    there, then the one that stays finite furthest); None when none trains anywhere."""
    clipped = [r for r in recs if r["clip.method"] != "none"
               and not fmt.is_missing(r["largest_trained_lr"])]
    if not clipped:
        return None

    def finite(r: dict) -> float:
        return -math.inf if fmt.is_missing(r["largest_finite_lr"]) else r["largest_finite_lr"]

    return min(clipped, key=lambda r: (-r["largest_trained_lr"],
                                       score_at(r, r["largest_trained_lr"]), -finite(r)))


def grid_steps(a: float, b: float, grid: Sequence[float]) -> str:
    """A gain read off grid points, said as the bound it is: ``one grid step: a factor
    between just over 1× and just under 16×``. Each largest-that-trained lies somewhere
    below the next grid point up, so the true factor is between b / next(a) and
    next(b) / a (no upper bound when b is the grid's top)."""
    g = sorted(set(float(v) for v in grid))
    if a not in g or b not in g:
        return f"{b / a:.3g}× on the grid"
    k = g.index(b) - g.index(a)
    steps = f"{'one grid step' if k == 1 else f'{k} grid steps'}"
    low = b / g[g.index(a) + 1]
    low_text = "just over 1×" if low == 1 else f"more than {low:.3g}×"
    if g.index(b) + 1 < len(g):
        return (f"{steps}: the limits lie between grid points, so a factor between "
                f"{low_text} and just under {g[g.index(b) + 1] / a:.3g}×")
    return f"{steps}: a factor of {low_text}"


def trained_lr_gain(name: str, recs: Sequence[dict], best: dict | None,
                    max_lr: float, grid: Sequence[float] = ()) -> str | None:
    """The clip setting that most raises the largest lr at which every seed trained."""
    base = [r for r in recs if r["clip.method"] == "none"]
    clipped = [r for r in recs if r["clip.method"] != "none"
               and not fmt.is_missing(r["largest_trained_lr"])]
    if best is None:
        if any(r["clip.method"] != "none" for r in recs):
            return (f"For {name}, at no learning rate did every seed train with any clip "
                    "setting.")
        return None
    b_lr = best["largest_trained_lr"]
    ties = [_phrase(r) for r in clipped if r is not best and r["largest_trained_lr"] == b_lr]
    tail = _edge(b_lr, max_lr)
    if ties:
        tail += f"; {fmt.join(ties)} reached it too"
    finite = best["largest_finite_lr"]
    if not fmt.is_missing(finite) and finite > b_lr:
        tail += f"; it kept training finite up to lr {fmt.lr(finite)}"
    n = f"{fmt.num(best['n_at_largest_trained'])} of {fmt.num(best['n_at_largest_trained'])}"
    a_lr = base[0]["largest_trained_lr"] if len(base) == 1 else math.nan
    if len(base) != 1:
        return (f"For {name}, with no unclipped runs to compare with, the largest learning "
                f"rate at which every seed trained was {fmt.lr(b_lr)}, with {_phrase(best)}"
                f"{tail}.")
    if fmt.is_missing(a_lr):
        return (f"Unclipped {name} trained at no learning rate tried; with {_phrase(best)} "
                f"every seed trained up to lr {fmt.lr(b_lr)} ({n} seeds there){tail}.")
    if b_lr > a_lr:
        return (f"For {name}, {_phrase(best)} raised the largest learning rate at which "
                f"every seed trained from {fmt.lr(a_lr)} to {fmt.lr(b_lr)} "
                f"({grid_steps(a_lr, b_lr, grid)}; {n} seeds there){tail}.")
    return (f"For {name}, no clip setting raised the largest learning rate at which every "
            f"seed trained above {fmt.lr(a_lr)}, the unclipped value{_edge(a_lr, max_lr)}.")


#: LR sensitivity is ranked only over this many learning rates or more: over two, one
#: bad rate decides it (it is still shown in the table).
MIN_RANK_LRS = 3


def least_sensitive(name: str, recs: Sequence[dict], metric: MetricInfo = BPC,
                    define: bool = True) -> str | None:
    """The setting whose final loss depends least on the lr, with its interval, and
    whether that interval overlaps each other setting's (no clipping included); an exact
    tie names no winner. ``define``: say what LR sensitivity is (once per report)."""
    have = [r for r in recs if not fmt.is_missing(r["lr_sensitivity"])
            and r["n_lrs"] >= MIN_RANK_LRS]
    if len(have) < 2:
        return None
    have.sort(key=lambda r: r["lr_sensitivity"])
    best = have[0]
    unit = "nats" if metric.is_text else "in the task's loss"

    def val(r: dict) -> str:
        text = fmt.interval(r["lr_sensitivity"], r["lr_sensitivity_lo"], r["lr_sensitivity_hi"])
        if "[" in text:
            m, rest = text.split(" [", 1)
            a, b = rest.rstrip("]").split(", ")
            return f"{m} (95% bootstrap interval {a}–{b})"
        return text

    definition = (" LR sensitivity is the mean excess of the final validation loss over the "
                  "grid's best (Wortsman et al. 2023); a diverged run counts at its initial "
                  "loss." if define else "")
    n = (f"over {fmt.num(best['n_lrs'])} learning rates (at least "
         f"{fmt.num(best['n_seeds'])} seeds each)")
    tied = [r for r in have[1:] if r["lr_sensitivity"] == best["lr_sensitivity"]]
    if tied:
        names = fmt.join([_phrase(r) for r in [best, *tied]])
        return (f"For {name}, the least LR-sensitive settings were {names}, tied at "
                f"{val(best)} {unit} {n}: no one of them is the winner.{definition}")
    others = have[1:]
    hi = best["lr_sensitivity_hi"]
    overlap = [r for r in others if fmt.is_missing(hi) or fmt.is_missing(r["lr_sensitivity_lo"])
               or hi >= r["lr_sensitivity_lo"]]
    clear = [r for r in others if r not in overlap]
    none = [r for r in others if r["clip.method"] == "none"]
    versus = f"; without clipping {val(none[0])}" if none else ""
    if not overlap:
        verdict = "; its interval is clear of every other setting's"
    else:
        listed = fmt.join([f"{_phrase(r)} ({fmt.num(r['lr_sensitivity'])})" for r in overlap])
        verdict = (f"; its interval overlaps that of {listed}, so the order of "
                   f"{'the two' if len(overlap) == 1 else 'these'} is not settled")
        if clear:
            verdict += (f", and is clear of {fmt.join([_phrase(r) for r in clear])}")
    return (f"For {name}, the least LR-sensitive setting was {_phrase(best)}: LR sensitivity "
            f"{val(best)} {unit} {n}{versus}{verdict}.{definition}")


def not_learned(cells: Sequence[dict], extra: Sequence[str], setting_phrase,
                metric: MetricInfo = BPC) -> str | None:
    """Configurations where every run finished no better than the baseline."""
    dead = [c for c in cells if c["n"] > 0 and c.get("n_no_progress", 0) == c["n"]]
    if not dead:
        return None
    named = [f"{setting_phrase(c, extra)} ({int(c['n'])} of {int(c['n'])})"
             for c in dead[:MAX_NAMED]]
    more = f" and {len(dead) - MAX_NAMED} more" if len(dead) > MAX_NAMED else ""
    k = len(dead)
    return (f"{k} configuration{'s' if k != 1 else ''} did not learn: every run finished "
            f"without diverging but no better than {baseline_words(cells, metric)}: "
            f"{'; '.join(named)}{more}.")


def outcome_counts(cells: Sequence[dict], metric: MetricInfo = BPC) -> str | None:
    """How many runs trained, made no progress, or diverged, over the whole task."""
    n = sum(int(c["n"]) for c in cells)
    if not n:
        return None
    t = sum(int(c.get("n_trained", 0)) for c in cells)
    p = sum(int(c.get("n_no_progress", 0)) for c in cells)
    d = sum(int(c["n_diverged"]) for c in cells)
    unknown = n - t - p - d
    tail = f"; {unknown} completed runs have no known outcome (no baseline)" if unknown else ""
    return (f"Of {n} run{'s' if n != 1 else ''} with a verdict, {t} trained (ended better than "
            f"{baseline_words(cells, metric)}), {p} finished without diverging but no better, "
            f"and {d} diverged{tail}.")


def divergence_counts(name: str, best: dict | None, ctx_cells: Sequence[dict]
                      ) -> str | None:
    """Divergences without clipping, and with the setting that trains furthest (the one
    the sentence before names), at the same learning rates."""
    none_cells = [c for c in ctx_cells if c.get("clip.method") == "none"]
    n = sum(int(c["n"]) for c in none_cells)
    if not n:
        return None
    k = sum(int(c["n_diverged"]) for c in none_cells)
    n_lr = len(none_cells)
    out = (f"Unclipped {name} diverged in {k} of {n} runs across {n_lr} learning "
           f"rate{'s' if n_lr != 1 else ''}")
    if best is not None:
        lrs = {c["optim.lr"] for c in none_cells}
        same = [c for c in ctx_cells if c.get("clip.method") == best["clip.method"]
                and _same(c.get("threshold"), best.get("threshold")) and c["optim.lr"] in lrs]
        k2, n2 = sum(int(c["n_diverged"]) for c in same), sum(int(c["n"]) for c in same)
        if n2:
            out += f"; with {_phrase(best)} at the same rates, {k2} of {n2}"
    return out + "."


def context_sentences(name: str, recs: list[dict], ctx_cells: list[dict],
                      metric: MetricInfo = BPC, define: bool = True) -> list[str]:
    """The lr sentences for one optimizer (and swept non-clip setting)."""
    out: list[str] = []
    max_lr = max((c["optim.lr"] for c in ctx_cells), default=math.nan)

    def score_at(r: dict, lr: float) -> float:
        for c in ctx_cells:
            if (c.get("clip.method") == r["clip.method"]
                    and _same(c.get("threshold"), r.get("threshold")) and c["optim.lr"] == lr):
                return float(metric.score([c["final_val_metric_mean"]])[0])
        return math.inf

    base = [r for r in recs if r["clip.method"] == "none"]
    if len(base) == 1:
        none_cells = [c for c in ctx_cells if c.get("clip.method") == "none"]
        out.append(finite_vs_trained(name, base[0], none_cells, max_lr, metric))
    best = best_clipped(recs, score_at)
    grid = sorted({c["optim.lr"] for c in ctx_cells})
    gain = trained_lr_gain(name, recs, best, max_lr, grid)
    if gain:
        out.append(gain)
    counts = divergence_counts(name, best, ctx_cells)
    if counts:
        out.append(counts)
    sens = least_sensitive(name, recs, metric, define)
    if sens:
        out.append(sens)
    return out


#: Fewest pairs with a finite metric on both sides for a paired sentence (an interval).
MIN_PAIRED = 2


def paired_vs_none(setting: str, got: dict | None, metric: MetricInfo = BPC) -> str | None:
    """The best configuration against no clipping at its own learning rate, over the runs
    that pair with it (:func:`seqbench.report.paired.paired_against_none`): the mean
    per-pair difference with its 95% t interval and n, which side of 0 the interval is
    on, and the discordant trained/not pairs with McNemar's exact p where there are any.
    Why next to the unpaired statement and not instead of it: the pairs are what compare
    the two settings (issue 24), but only the pairs with both runs finite enter the
    difference, and only at this one learning rate. None with fewer than
    :data:`MIN_PAIRED` such pairs."""
    if got is None or got["n_diff"] < MIN_PAIRED or fmt.is_missing(got["diff_lo"]):
        return None
    text = diff_text(got["mean_diff"], got["diff_lo"], got["diff_hi"])
    mean, rest = text.split(" [", 1)
    lo, hi = rest.rstrip("]").split(", ")
    unit = metric.unit if metric.is_text else metric.label
    n, k = int(got["n_diff"]), int(got["n_pairs"])
    better = -1.0 if metric.lower_is_better else 1.0
    if better * got["diff_lo"] > 0 and better * got["diff_hi"] > 0:
        verdict = "the interval is clear of 0 on the better side: the pairs show it better"
    elif better * got["diff_lo"] < 0 and better * got["diff_hi"] < 0:
        verdict = "the interval is clear of 0 on the worse side: the pairs show it worse"
    else:
        verdict = "the interval includes 0: the pairs do not show a difference"
    out = (f"Against no clipping at the same learning rate, over {n} pairs of runs that "
           f"share a seed (the same initial weights and batches) and both ended finite, "
           f"{setting} changed the final validation {metric.label} by {mean} {unit} on "
           f"average (95% t interval {lo} to {hi}); {verdict} there")
    a, b = int(got["only_a"]), int(got["only_b"])
    if a + b:
        out += (f"; of the {k} pairs, {a} trained only with clipping and {b} only without "
                f"(McNemar exact p = {fmt.num(got['mcnemar_p'])})")
    return (out + ". Not shown: other learning rates, other seeds, and the pairs where a run "
            "diverged (left out of the difference).")
