"""The smoothness section in words and display tables: what ``report.smoothness``'s
tables say about L̂ against ‖∇f‖ and about the early-warning rule.

Every sentence names its n and its interval, and says what it does not show: ρ is a
rank correlation along a trajectory, not the (L0, L1) bound itself; an L1 under clipping
describes another trajectory, not another loss surface; a warning is counted with its
false alarms, and a divergence before the rule was armed is said to be out of a probe's
reach rather than counted as a miss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pandas as pd

from seqbench.early_warning import MIN_HISTORY
from seqbench.report import _format as fmt
from seqbench.report import smoothness as sm
from seqbench.report.figures import FigureResult
from seqbench.report.layout import Layout
from seqbench.report.sentences import _setting_phrase, context_name
from seqbench.report.stats import wilson_interval
from seqbench.report.tables import _setting_columns, row_key

HEADING = "Smoothness along training"
CELLS_HEADING = "Smoothness per configuration"
WARNING_HEADING = "Early warning per configuration"
SENSITIVITY_HEADING = "Early warning: sensitivity to k"
INTRO = (
    "Runs with trainer.smoothness_every=N estimate, at every N-th step, the loss surface's "
    "local smoothness along the update, L̂ = ‖∇f(x+½Δ) − ∇f(x)‖ / ‖½Δ‖, and the gradient "
    "norm ‖∇f‖, both on one fixed probe batch (Zhang, He, Sra & Jadbabaie, ICLR 2020, who "
    "found L̂ growing with ‖∇f‖ on LSTM language models: (L0, L1)-smoothness). Only runs "
    "that completed or diverged count."
)
CELLS_NOTE = (
    "One row per configuration, over its runs with the probe on (runs) and those with at "
    "least one usable probe (probed: L̂ and ‖∇f‖ finite and > 0). ρ: Spearman's rank "
    "correlation of log L̂ with log ‖∇f‖ along each run, the mean over runs with a 95% t "
    "interval over seeds cut to [−1, 1] (a mean, not a median, because that is what a t "
    "interval is for); "
    "ρ > 0: how many runs' ρ was positive, of those with a ρ (3 or more usable probes). L1, "
    "L0: each run's Theil–Sen fit L̂ ≈ L0 + L1·‖∇f‖, the median over runs, and for L1 also "
    "the mean with a 95% t interval over seeds; L1 > 0 (Sen): runs whose own 95% Sen "
    "interval for L1 lies above 0, of those with a fit. L̂ median: the median over runs of "
    "each run's median L̂. smoothness.csv holds the same numbers. — means no value."
)
WARNING_NOTE = (
    "The rule (seqbench/early_warning.py): a probe fires when its value exceeds k times "
    "the running median of the same signal over the run's earlier probes; it is armed from "
    f"the {MIN_HISTORY + 1}th probe on. Per configuration and signal, at the runs' default "
    "k: of the runs that diverged, warned = the rule fired before the divergence step "
    "(lead: the median over those of the steps between), missed = armed and silent, too "
    "early = diverged before the rule was armed, which no probe every N steps can see "
    "coming; false alarms = runs that did not diverge on which it fired anyway."
)
SENSITIVITY_NOTE = (
    "The same rule at every k the summaries record, pooled over all runs with a warning: "
    "warned of the divergences the rule was armed for (too early ones left out), false "
    "alarms of the runs that did not diverge, each with a 95% Wilson interval. A smaller k "
    "warns of more and raises more false alarms; read the two columns together."
)


@dataclass
class SmoothnessPart:
    """What the report's smoothness section shows; None from :meth:`of` without data."""

    sentences: list[str]
    cells: pd.DataFrame
    warning: pd.DataFrame
    sensitivity: pd.DataFrame
    table: pd.DataFrame  # smoothness.csv
    default_k: float
    figures: list[FigureResult] = field(default_factory=list)

    @property
    def warning_heading(self) -> str:
        """``Early warning per configuration at k = 2``: the k its table is at."""
        return f"{WARNING_HEADING} at k = {fmt.num(self.default_k)}"

    @classmethod
    def of(cls, runs_df: pd.DataFrame, cells_df: pd.DataFrame, runs_dir, layout: Layout,
           figures: Sequence[FigureResult] = ()) -> SmoothnessPart | None:
        probe = sm.probe_runs(runs_df, runs_dir)
        if probe.empty:
            return None
        table = sm.cell_table(probe, cells_df, layout)
        warn = sm.warning_cells(probe, cells_df, layout)
        sens = sm.warning_sensitivity(probe)
        said = smoothness_sentences(probe, table, sens, layout)
        # one figure per task group when there are several: each titled with its task
        figs = [f if f.task is None else replace(f, title=f"{f.title}: {f.task.label}")
                for f in figures if f.kind == FIGURE_KIND]
        return cls(said, cells_display(table, layout), warning_display(warn, layout),
                   sensitivity_display(sens), table, probe.default_k, figs)


#: The registered kind of the section's figure (figures/smoothness.py); the task
#: sections leave it out, this section shows it.
FIGURE_KIND = "smoothness"


def _signal(sig: str) -> str:
    return sm.SIGNAL_NAMES.get(sig, sig)


def _iv(m: object, lo: object, hi: object, decimals: int | None = None,
        words: bool = False) -> str:
    """``0.47 [0.12, 0.81]`` (ρ: two decimals) or ``0.00663 [-0.355, 0.368]`` (three
    significant digits each: an L1 near 0 keeps its interval readable); ``words``:
    ``0.47 (95% CI 0.12–0.81)``. The bracket is left out where there is no interval."""
    if fmt.is_missing(m):
        return fmt.MISSING

    def f(v: object) -> str:
        return fmt.num(v) if decimals is None else f"{float(v):.{decimals}f}"  # type: ignore[arg-type]

    if fmt.is_missing(lo) or fmt.is_missing(hi):
        return f(m)
    if not words:
        return f"{f(m)} [{f(lo)}, {f(hi)}]"
    dash = " to " if float(lo) < 0 else "–"  # type: ignore[arg-type]  # not "-0.35–0.37"
    return f"{f(m)} (95% CI {f(lo)}{dash}{f(hi)})"


def _kn(k: object, n: object) -> str:
    return fmt.MISSING if fmt.is_missing(n) or not int(n) else f"{int(k)}/{int(n)}"


def cells_display(table: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    rows = []
    for r in table.to_dict("records"):
        row = _setting_columns(r, [c for c in layout.facets if c in r], with_lr=True)
        row["runs"] = str(int(r["n_runs"]))
        row["probed"] = str(int(r["n_probed"]))
        row["ρ mean [95% CI]"] = _iv(r["rho_mean"], r["rho_lo"], r["rho_hi"], 2)
        row["ρ > 0"] = _kn(r["n_rho_positive"], r["n_rho"])
        row["L1 median"] = fmt.num(r["L1_median"])
        row["L1 mean [95% CI]"] = _iv(r["L1_mean"], r["L1_lo"], r["L1_hi"])
        row["L1 > 0 (Sen)"] = _kn(r["n_L1_above_0"], r["n_fit"])
        row["L0 median"] = fmt.num(r["L0_median"])
        row["L̂ median"] = fmt.num(r["median_L_median"])
        rows.append(row)
    return pd.DataFrame(rows)


def warning_display(warn: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    rows = []
    for r in warn.to_dict("records"):
        row = _setting_columns(r, [c for c in layout.facets if c in r], with_lr=True)
        row["signal"] = _signal(r["signal"])
        row["runs"] = str(int(r["n_runs"]))
        row["diverged"] = str(int(r["n_diverged"]))
        row["warned"] = _kn(r["n_warned"], r["n_diverged"])
        row["lead (steps, median)"] = fmt.num(r["lead_median"])
        row["missed"] = str(int(r["n_missed"]))
        row["too early"] = str(int(r["n_too_early"]))
        row["false alarms"] = _kn(r["n_false_alarm"], r["n_not_diverged"])
        rows.append(row)
    return pd.DataFrame(rows)


def sensitivity_display(sens: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in sens.to_dict("records"):
        rows.append({
            "signal": _signal(r["signal"]), "k": fmt.num(r["k"]),
            "warned / armed divergences": fmt.rate(r["n_warned"], r["n_armed"],
                                                   r["warned_lo"], r["warned_hi"]),
            "lead (steps, median)": fmt.num(r["lead_median"]),
            "too early": f"{int(r['n_too_early'])}/{int(r['n_diverged'])}",
            "false alarms / not diverged": fmt.rate(r["n_false_alarm"], r["n_not_diverged"],
                                                    r["false_alarm_lo"], r["false_alarm_hi"]),
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- sentences


def _runs(n: int) -> str:
    return f"{n} run{'s' if n != 1 else ''}"


def _rate_words(k: int, n: int) -> str:
    """``3 of 5 (95% Wilson interval 0.23–0.88)``; ``0 of 0`` without an interval."""
    if not n:
        return f"{k} of 0"
    lo, hi = wilson_interval(k, n)
    return f"{k} of {n} (95% Wilson interval {lo:.2f}–{hi:.2f})"


def coverage_sentence(probe: sm.ProbeRuns) -> str:
    runs = probe.runs
    n, probed = len(runs), int((runs["n_used"] > 0).sum())
    with_rho = int(runs["rho"].notna().sum())
    none = runs[runs["n_used"] == 0]
    every = runs["probe_every"].dropna()
    how = (f"a probe every {fmt.num(every.mode().iloc[0])} steps" if len(every)
           else "the probe on")
    text = (f"{n} of the {probe.n_verdict} runs that completed or diverged ran with {how}; "
            f"{probed} recorded at least one usable probe and {with_rho} the 3 or more a "
            "rank correlation needs")
    if len(none):
        n_div = int(none["diverged"].sum())
        which = ("all diverged" if n_div == len(none)
                 else f"{n_div} of them diverged")
        text += f"; {_runs(len(none))} had none ({which} before their first probe)"
    return text + "."


def growth_sentence(table: pd.DataFrame, layout: Layout) -> str | None:
    """Whether L̂ grows with ‖∇f‖: the sign of ρ per configuration, with its interval."""
    t = table[table["n_rho"] > 0]
    if t.empty:
        return None
    facets = [c for c in layout.facets if c in t.columns]
    ok = t[t["rho_lo"].notna()]
    up, down = int((ok["rho_lo"] > 0).sum()), int((ok["rho_hi"] < 0).sum())
    single = len(t) - len(ok)
    runs_pos, runs_all = int(t["n_rho_positive"].sum()), int(t["n_rho"].sum())
    text = ("Does L̂ grow with ‖∇f‖? The mean Spearman ρ (log L̂ against log ‖∇f‖ along a "
            "run, 95% t interval over seeds) ")
    if len(ok):
        rest = len(ok) - up - down
        clauses = [f"was above 0 with its interval clear of 0 in {up} of the {len(ok)} "
                   "configurations with 2 or more runs"]
        if down:
            clauses.append(f"below 0 and clear of it in {down}")
        if rest:
            zero = ok[(ok["rho_lo"] <= 0) & (ok["rho_hi"] >= 0)].to_dict("records")
            named = (" (" + "; ".join(_setting_phrase(r, facets) for r in zero) + ")"
                     if len(zero) <= 3 else "")
            clauses.append(f"its interval included 0 in {'the other' if up + down else 'all'}"
                           f" {rest}{named}")
        text += fmt.join(clauses)
        if single:
            text += f"; {single} more had one run with a ρ (no interval)"
    else:
        text += f"has no interval: each of the {single} configurations had one run with a ρ"
    none = int((table["n_rho"] == 0).sum())
    if none:
        text += (f"; {none} configuration{'s' if none != 1 else ''} had no run with the 3 "
                 "usable probes a ρ needs")
    text += f". Over runs, {runs_pos} of {runs_all} had ρ > 0."
    pool = ok if len(ok) else t  # a configuration with an interval, where there is one
    best = pool.loc[pool["rho_mean"].idxmax()].to_dict()
    largest = _iv(best["rho_mean"], best["rho_lo"], best["rho_hi"], 2, words=True)
    text += (f" The largest mean ρ was {largest}, with "
             f"{_setting_phrase(best, facets)} "
             f"({_runs(int(best['n_rho']))}).")
    return text + (" What this does not show: ρ ranks the probes of one trajectory, so it "
                   "says L̂ and ‖∇f‖ rose and fell together there, not that one drives the "
                   "other, and L̂ is measured along the update, not the Hessian norm of "
                   "Zhang et al.'s bound.")


def _l1(r: dict) -> str:
    n = int(r["n_fit"])
    if not n:
        return "no fit"
    if fmt.is_missing(r["L1_lo"]):
        return f"{fmt.num(r['L1_mean'])} ({_runs(n)}, no interval)"
    return f"{_iv(r['L1_mean'], r['L1_lo'], r['L1_hi'], words=True)} ({_runs(n)})"


def l1_sentences(table: pd.DataFrame, layout: Layout) -> list[str]:
    """Per context: L1 without clipping against each clip setting, at each shared lr."""
    if "clip.method" not in table.columns or table.empty:
        return []
    ctx = [c for c in layout.context if c in table.columns]
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in table.to_dict("records"):
        groups.setdefault(row_key(r, ctx), []).append(r)
    for recs in groups.values():
        plain = {r.get("optim.lr"): r for r in recs if r["clip.method"] == "none"}
        clipped = [r for r in recs if r["clip.method"] != "none"]
        pairs = [(plain[r.get("optim.lr")], r) for r in clipped if r.get("optim.lr") in plain
                 and plain[r.get("optim.lr")]["n_fit"] and r["n_fit"]]
        if not pairs:
            continue
        parts, apart, both = [], [], 0
        for a, b in pairs:
            parts.append(f"lr {fmt.lr(b.get('optim.lr'))}, "
                         f"{fmt.clip_phrase(b['clip.method'], b.get('threshold'))}: "
                         f"{_l1(a)} unclipped vs {_l1(b)}")
            if math.isnan(a["L1_lo"]) or math.isnan(b["L1_lo"]):
                continue
            both += 1
            if a["L1_hi"] < b["L1_lo"] or b["L1_hi"] < a["L1_lo"]:
                word = "lower" if b["L1_mean"] < a["L1_mean"] else "higher"
                apart.append(f"lr {fmt.lr(b.get('optim.lr'))} ({word} with clipping)")
        if not both:
            verdict = ("no pair has an interval on both sides (a side with one run), so "
                       "nothing is compared")
        elif apart:
            verdict = (f"of the {both} pairs with intervals on both sides, they are apart at "
                       f"{len(apart)}: {fmt.join(apart)}")
        else:
            at = {1: "the one pair", 2: "both pairs"}.get(both, f"all {both} pairs")
            verdict = (f"the intervals overlap at {at} with intervals on both sides, so no "
                       "difference is shown")
        name = context_name(recs[0], ctx)
        out.append(f"{name[0].upper() + name[1:]}: fitted L1, mean over seeds — "
                   f"{'; '.join(parts)}; {verdict}.")
    if out:
        out.append("A clipped run takes shorter steps and visits other gradient norms, so "
                   "an L1 under clipping describes another trajectory, not another loss "
                   "surface; and a fit over a narrow range of ‖∇f‖ is loose (the L1 > 0 "
                   "column counts the runs whose own Sen interval excludes 0).")
    return out


def warning_sentences(probe: sm.ProbeRuns, sens: pd.DataFrame) -> list[str]:
    runs = probe.runs
    old = int((~runs["has_warning"].astype(bool)).sum())
    if sens.empty:
        return [f"No run recorded the early-warning rule ({_runs(old)} with summaries "
                "written before it existed), so there is no warning table."]
    k = probe.default_k
    at = sens[sens["k"].astype(float) == k]
    armed, every = sm.armed_after(probe), runs["probe_every"].dropna()
    n_every = fmt.num(every.mode().iloc[0]) if len(every) else "N"
    rule = (f"k = {fmt.num(k)}: a probe above {fmt.num(k)}× the running median of the "
            f"run's earlier probes, armed from its {MIN_HISTORY + 1}th")
    recs = at.to_dict("records")
    if all(not r["n_diverged"] for r in recs):  # both signals: only false alarms to count
        alarms = fmt.join(f"{_rate_words(int(r['n_false_alarm']), int(r['n_not_diverged']))}"
                          f" for {_signal(r['signal'])}" for r in recs)
        out = [f"No run with a warning diverged ({_runs(int(recs[0]['n_runs']))}), so the "
               f"early-warning rule ({rule}) had nothing to warn of; it raised false alarms "
               f"in {alarms}."]
        recs = []
    else:
        out = []
    for r in recs:
        name = _signal(r["signal"])
        lead = (f", a median of {fmt.num(r['lead_median'])} steps ahead"
                if r["n_warned"] else "")
        text = (f"Early warning from {name} ({rule}): of {int(r['n_diverged'])} diverged runs "
                f"it warned of {int(r['n_warned'])}{lead}, missed {int(r['n_missed'])} and "
                f"{int(r['n_too_early'])} came too early")
        if not r["n_armed"]:
            text = (f"Early warning from {name} ({rule}): all {int(r['n_diverged'])} "
                    "divergences came before the rule was armed (too early), so there was "
                    "none it could have warned of")
        else:
            text += (f"; of the {int(r['n_armed'])} it was armed for, it warned of "
                     f"{_rate_words(int(r['n_warned']), int(r['n_armed']))}")
        alarms = _rate_words(int(r["n_false_alarm"]), int(r["n_not_diverged"]))
        text += f"; false alarms in {alarms} runs that did not diverge."
        out.append(text)
    early = probe.rules[(probe.rules["outcome"] == "too_early")]
    if not early.empty:
        steps = runs.set_index("run_dir").loc[early["run_dir"].unique(), "divergence_step"]
        out.append(
            f"Too early: {_runs(early['run_dir'].nunique())} diverged by step "
            f"{fmt.num(steps.max())} (median {fmt.num(steps.median())}), before the rule was "
            f"armed (at its {MIN_HISTORY + 1}th probe: step {fmt.num(armed)} for most runs): "
            "a probe every "
            f"{n_every} steps cannot see an explosion in the first steps coming, and these "
            "are not counted as misses.")
    if old:
        out.append(f"{_runs(old)} with summaries written before the warning existed "
                   "are in the smoothness table but in no warning table.")
    out.append("What the warning counts do not show: a rule that fires on every run warns of "
               "every divergence, so warned is read with the false alarms; and a lead is in "
               f"steps between probes every {n_every} steps, so it is that coarse.")
    return out


def smoothness_sentences(probe: sm.ProbeRuns, table: pd.DataFrame, sens: pd.DataFrame,
                         layout: Layout) -> list[str]:
    out = [coverage_sentence(probe)]
    growth = growth_sentence(table, layout)
    if growth:
        out.append(growth)
    out += l1_sentences(table, layout)
    out += warning_sentences(probe, sens)
    return out

