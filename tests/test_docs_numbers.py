"""The numbers in docs/findings.md and README's "What we found", against the committed CSVs.

Three checks: the generated tables of findings.md are what scripts/findings_tables.py
makes of `reports/` now; every number quoted in the prose below is in the document and is
what the CSVs give, formatted as the document writes it; and the table check does fail
when a generated number is edited by hand. Each claim is (document, the quoted text as it
appears there, a function that builds the same text from the CSVs). Whitespace and `**`
are ignored when looking the quote up, so line wrapping and bold do not matter.

When a number changes with a re-rendered report, fix the document; when a sentence is
reworded, move its quote here with it. Columns are read by name: reports that gain
columns leave these checks as they are. The CSVs are read once per module; nothing trains.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqbench.report import _format as fmt
from seqbench.report.stats import wilson_interval

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("findings_tables",
                                               ROOT / "scripts" / "findings_tables.py")
ft = importlib.util.module_from_spec(_spec)
sys.modules["findings_tables"] = ft
_spec.loader.exec_module(ft)

R = ft.reports_at(ROOT / "reports")  # the CLI calls below share it: each CSV is read once
FINDINGS_TEXT = (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")
_readme = (ROOT / "README.md").read_text(encoding="utf-8")
_start = _readme.index("## What we found")
README_SECTION = _readme[_start:_readme.index("\n## ", _start + 1)]


def _plain(text: str) -> str:
    return " ".join(text.replace("**", "").split())


DOCS = {"findings": _plain(FINDINGS_TEXT), "readme": _plain(README_SECTION)}


# --------------------------------------------------------------------------- helpers

def cells(study: str, **where) -> pd.DataFrame:
    return ft.select(R.csv(study, "cells"), **where)


def cell(study: str, **where) -> pd.Series:
    return ft.one(R.csv(study, "cells"), **where)


def runs(study: str, **where) -> pd.DataFrame:
    return ft.select(R.csv(study, "runs"), **where)


def lrs(study: str, **where) -> pd.Series:
    return ft.one(R.csv(study, "lr_summary"), **where)


def iv(row: pd.Series) -> str:
    """The final metric's mean [95% CI] as the reports print it."""
    return ft.bpc(row)


def ivd(row: pd.Series, col: str, decimals: int) -> str:
    """``col`` and its ``_lo``/``_hi`` at a fixed number of decimals."""
    lo, hi = row[f"{col}_lo"], row[f"{col}_hi"]
    return f"{row[col]:.{decimals}f} [{lo:.{decimals}f}, {hi:.{decimals}f}]"


def span(values, f=fmt.num) -> str:
    values = list(values)
    a, b = f(min(values)), f(max(values))
    return a if a == b else f"{a}–{b}"


def d(x: float, n: int) -> str:
    return f"{x:.{n}f}"


def pct(x: float, n: int = 0) -> str:
    return f"{100 * x:.{n}f}%"


def wilson(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{lo:.2f}–{hi:.2f}"


def k_of_n(k, n) -> str:
    return f"{int(k)} of {int(n)}"


def grid_ratio(study: str, **where) -> float:
    """The factor between neighbouring learning rates of a grid."""
    grid = np.sort(cells(study, **where)["optim.lr"].unique())
    ratios = grid[1:] / grid[:-1]
    assert np.allclose(ratios, ratios[0]), grid
    return float(ratios[0])


def factor_bounds(low_limits, high_limits, g: float) -> str:
    """What a ratio of two limits read off a grid of factor ``g`` can be: each true limit
    lies in [grid point, next grid point), so the ratio is strictly between
    high/(low*g) and high*g/low."""
    lows = [h / (lo * g) for lo, h in zip(low_limits, high_limits)]
    highs = [h * g / lo for lo, h in zip(low_limits, high_limits)]
    return f"between just over {fmt.lr(min(lows))}× and just under {fmt.lr(max(highs))}×"


def overlaps(a: pd.Series, b: pd.Series) -> bool:
    return (a["final_val_metric_lo"] <= b["final_val_metric_hi"]
            and b["final_val_metric_lo"] <= a["final_val_metric_hi"])


def best(study: str, **where) -> pd.Series:
    return ft.best_cell(cells(study, **where)).iloc[0]


LSTM_SGD = dict(model__cell="lstm", optim__name="sgd", momentum=0)
RNN_SGD = dict(model__cell="rnn_tanh", optim__name="sgd", momentum=0)


# --------------------------------------------------------------------------- study

def study_grids() -> str:
    parts = []
    for name, (opt, mom) in [("SGD", ("sgd", 0)), ("SGD with momentum", ("sgd", 0.9)),
                             ("Adam", ("adam", 0)), ("RMSprop", ("rmsprop", 0))]:
        grid = cells("study", optim__name=opt, momentum=mom)["optim.lr"]
        parts.append(f"{name} {fmt.lr(grid.min())}–{fmt.lr(grid.max())}")
    return "Grids: " + ", ".join(parts)


def raised_nowhere_else(doc: str) -> str:
    """Which (model, optimizer) groups had a clip setting raise the largest trained lr."""
    raised = set()
    for g in _study_groups():
        none = lrs("study", **g, clip__method="none")["largest_trained_lr"]
        for m in ft.STUDY_CLIPS[1:]:
            if lrs("study", **g, clip__method=m)["largest_trained_lr"] > none:
                raised.add((g["model__cell"], g["optim__name"], g["momentum"], m))
    groups = {x[:3] for x in raised}
    assert groups == {("lstm", "sgd", 0), ("rnn_tanh", "sgd", 0), ("rnn_tanh", "sgd", 0.9)}
    assert not any(m == "value" and model == "rnn_tanh" for model, _, _, m in raised)
    if doc == "readme":
        return ("For Adam and RMSprop no clipping setting raised it on either model, and Keras' "
                "example `clipvalue=0.5` raised it for no optimizer on the tanh RNN")
    return ("With momentum 0.9 on the LSTM, and with Adam and RMSprop on both models, no "
            "clipping setting raised the largest learning rate that trains.")


def study_sgd_moves() -> str:
    lstm = [lrs("study", **LSTM_SGD, clip__method=m)["largest_trained_lr"]
            for m in ft.STUDY_CLIPS]
    rnn = {m: lrs("study", **RNN_SGD, clip__method=m)["largest_trained_lr"]
           for m in ft.STUDY_CLIPS}
    assert len(set(lstm[1:])) == 1, lstm
    norm_based = [rnn[m] for m in ("norm", "norm_per_tensor", "autoclip")]
    assert len(set(norm_based)) == 1 and rnn["value"] == rnn["none"], rnn
    return (f"On the LSTM every clipping method moved it from {fmt.lr(lstm[0])} to "
            f"{fmt.lr(lstm[1])}; on the tanh RNN the three norm-based methods moved it from "
            f"{fmt.lr(rnn['none'])} to {fmt.lr(norm_based[0])}")


def sgd_lstm_step_bounds() -> str:
    none = lrs("study", **LSTM_SGD, clip__method="none")["largest_trained_lr"]
    clipped = lrs("study", **LSTM_SGD, clip__method="autoclip")["largest_trained_lr"]
    g = grid_ratio("study", **LSTM_SGD)
    assert math.isclose(clipped / none, g)  # one grid step
    return factor_bounds([none], [clipped], g)


def lstm_sgd_lr16_unclipped() -> str:
    x = cell("study", **LSTM_SGD, clip__method="none", optim__lr=16)
    words = {1: "one", 2: "two"}
    finite = lrs("study", **LSTM_SGD, clip__method="none")["largest_finite_lr"]
    return (f"Without clipping the LSTM stays finite up to {fmt.lr(finite)} but "
            f"{words[int(x['n_no_progress'])]} of three seeds there ends no better than the "
            f"baseline (mean {d(x['final_val_metric_mean'], 1)} bits/char)")


def autoclip_vs_unclipped(doc: str) -> str:
    a = best("study", **LSTM_SGD, clip__method="autoclip")
    n = best("study", **LSTM_SGD, clip__method="none")
    assert not overlaps(a, n)
    if doc == "findings":
        return (f"(AutoClip at lr {fmt.lr(a['optim.lr'])}, {iv(a)} bits/char) beats the best "
                f"unclipped one ({iv(n)} at lr {fmt.lr(n['optim.lr'])}) with intervals apart")
    return (f"{iv(a)} bits/char at lr {fmt.lr(a['optim.lr'])} against {iv(n)} unclipped at "
            f"lr {fmt.lr(n['optim.lr'])}")


def global_norm_overlaps(doc: str) -> str:
    g = best("study", **LSTM_SGD, clip__method="norm")
    n = best("study", **LSTM_SGD, clip__method="none")
    verb = "overlaps" if overlaps(g, n) else "is clear of"
    if doc == "findings":
        return (f"Global norm clipping's best, {iv(g)} at lr {fmt.lr(g['optim.lr'])}, {verb} "
                "the unclipped interval")
    return f"global norm clipping's {iv(g)} at lr {fmt.lr(g['optim.lr'])} {verb} it"


def only_autoclip_clear() -> str:
    n = best("study", **LSTM_SGD, clip__method="none")
    clear = [m for m in ft.STUDY_CLIPS[1:]
             if not overlaps(best("study", **LSTM_SGD, clip__method=m), n)]
    assert clear == ["autoclip"], clear
    return "Only AutoClip's best result is clear of the unclipped one"


def beside_the_best() -> str:
    g = best("study", **LSTM_SGD, clip__method="norm")
    mom = dict(model__cell="lstm", optim__name="sgd", momentum=0.9)
    lr_best = best("study", **mom, clip__method="none")["optim.lr"]
    cf = max(cell("study", **mom, clip__method=m, optim__lr=lr_best)["clip_fraction"]
             for m in ("value", "norm", "norm_per_tensor"))
    a = cell("study", **mom, clip__method="autoclip", optim__lr=lr_best)
    return (f"for SGD on the LSTM, global norm clipping's best was {iv(g)} at lr "
            f"{fmt.lr(g['optim.lr'])}; for SGD with momentum on the LSTM, value, global norm "
            f"and per-tensor norm clipping never clipped at lr {fmt.lr(lr_best)} (clip fraction "
            f"{fmt.num(cf)}), and AutoClip there ended at {iv(a)}")


def _study_groups():
    for model in ft.MODELS:
        for opt, mom in ft.STUDY_OPTIMIZERS:
            yield dict(model__cell=model, optim__name=opt, momentum=mom)


def max_clip_fraction_at_best(methods) -> float:
    return max(best("study", **g, clip__method=m)["clip_fraction"]
               for g in _study_groups() for m in methods)


def same_within_intervals_elsewhere() -> str:
    for g in _study_groups():
        if g == {**LSTM_SGD}:
            continue
        n = best("study", **g, clip__method="none")
        for m in ft.STUDY_CLIPS[1:]:
            assert overlaps(best("study", **g, clip__method=m), n), (g, m)
    cf = max_clip_fraction_at_best(["value", "norm", "norm_per_tensor"])
    return (f"Everywhere else the best final bpc with and without clipping is the same "
            f"within the intervals, usually the very same runs (at the best learning rate the "
            f"threshold was almost never reached: clip fraction ≤ {math.ceil(cf * 100) / 100:g} "
            "for value and norm clipping)")


def momentum_lstm_finite() -> str:
    mom = dict(model__cell="lstm", optim__name="sgd", momentum=0.9)
    finite = {m: lrs("study", **mom, clip__method=m)["largest_finite_lr"]
              for m in ("norm", "autoclip")}
    assert finite["norm"] == finite["autoclip"]
    g = cell("study", **mom, clip__method="norm", optim__lr=finite["norm"])
    a = cell("study", **mom, clip__method="autoclip", optim__lr=finite["norm"])
    return (f"kept SGD with momentum finite up to lr {fmt.lr(finite['norm'])} on the LSTM, but "
            f"every one of those runs ended worse than the baseline (means "
            f"{d(g['final_val_metric_mean'], 1)} and {d(a['final_val_metric_mean'], 1)} "
            f"bits/char) but one (AutoClip, {k_of_n(a['n_trained'], a['n'])})")


def _rnn_value_vs_none():
    r = runs("study", model__cell="rnn_tanh")
    key = ["optim.name", "optim.lr", "seed"]
    r = r.assign(mom=ft.momentum(r))
    none = r[r["clip.method"] == "none"].set_index([*key, "mom"]).sort_index()
    value = r[r["clip.method"] == "value"].set_index([*key, "mom"]).sort_index()
    assert none.index.equals(value.index)
    return none, value


def rnn_value_sgd_identical() -> str:
    none, value = _rnn_value_vs_none()
    sgd = none.index.get_level_values("optim.name") == "sgd"
    trained = sgd & (none["outcome"] == "trained").to_numpy()
    assert (none["final_val_bpc"][trained] == value["final_val_bpc"][trained]).all()
    assert (value["outcome"][trained] == "trained").all()
    cf = value["clip_fraction"][trained].max()
    return (f"there its numbers are those of no clipping, run for run, at every learning "
            f"rate that trained (clip fraction {fmt.num(cf)} there)")


def rnn_value_adaptive(opt: str) -> str:
    g = dict(model__cell="rnn_tanh", optim__name=opt)
    lr = lrs("study", **g, clip__method="value")["largest_trained_lr"]
    assert lr == lrs("study", **g, clip__method="none")["largest_trained_lr"]
    v = cell("study", **g, clip__method="value", optim__lr=lr)
    n = cell("study", **g, clip__method="none", optim__lr=lr)
    assert overlaps(v, n)
    if opt == "adam":
        return (f"Adam at lr {fmt.lr(lr)} clipped on {pct(v['clip_fraction'], 2)} of steps and "
                f"ended at {iv(v)} bits/char against {iv(n)} unclipped")
    return (f"RMSprop at lr {fmt.lr(lr)} clipped on {pct(v['clip_fraction'], 2)}, {iv(v)} "
            f"against {iv(n)}")


def rnn_value_divergence() -> str:
    none, value = _rnn_value_vs_none()
    div = (none["outcome"] == "diverged").to_numpy()
    assert (value["outcome"][div] == "diverged").all()
    vs, ns = value["divergence_step"][div], none["divergence_step"][div]
    differ = int((vs != ns).sum())
    return (f"the value-clipped runs diverged too, at steps {span(vs)} (unclipped: "
            f"{span(ns)}), but not always at the same step: {differ} of those {int(div.sum())} "
            "pairs of runs with the same seed diverged at different steps")


def rnn_vs_lstm_limits() -> str:
    parts, rnn, lstm = [], [], []
    for name, (opt, mom) in [("SGD", ("sgd", 0)), ("with momentum", ("sgd", 0.9)),
                             ("Adam", ("adam", 0)), ("RMSprop", ("rmsprop", 0))]:
        a = lrs("study", model__cell="rnn_tanh", optim__name=opt, momentum=mom,
                clip__method="none")["largest_finite_lr"]
        b = lrs("study", model__cell="lstm", optim__name=opt, momentum=mom,
                clip__method="none")["largest_finite_lr"]
        rnn.append(a)
        lstm.append(b)
        parts.append(f"{name} {fmt.lr(a)} vs {fmt.lr(b)}")
    g = grid_ratio("study", **LSTM_SGD)
    steps = sorted({round(math.log(b / a, g)) for a, b in zip(rnn, lstm)})
    assert steps == [1, 2], steps
    return ("(largest finite lr without clipping: " + ", ".join(parts)
            + f"; on a ×4 grid the limits themselves differ by a factor "
            f"{factor_bounds(rnn, lstm, g)})")


def diverged_counts() -> str:
    r = R.csv("study", "runs")
    div = r[r["outcome"] == "diverged"].groupby("model.cell").size()
    n = r.groupby("model.cell").size()
    return (f"{div['rnn_tanh']} of its {n['rnn_tanh']} runs diverged against {div['lstm']} of "
            "the LSTM's")


def sensitivity(group: dict, method: str) -> str:
    return ivd(lrs("study", **group, clip__method=method), "lr_sensitivity", 3)


def sensitivity_sgd() -> str:
    mom = dict(RNN_SGD, momentum=0.9)
    return (f"AutoClip {sensitivity(RNN_SGD, 'autoclip')} and global norm "
            f"{sensitivity(RNN_SGD, 'norm')} nats against {sensitivity(RNN_SGD, 'none')} without "
            f"clipping; with momentum, AutoClip {sensitivity(mom, 'autoclip')} against "
            f"{sensitivity(mom, 'none')}")


def sensitivity_adam_rnn() -> str:
    g = dict(model__cell="rnn_tanh", optim__name="adam")
    none = lrs("study", **g, clip__method="none")
    for m in ("norm", "autoclip"):
        assert lrs("study", **g, clip__method=m)["lr_sensitivity_lo"] > none["lr_sensitivity_hi"]
    return (f"({sensitivity(g, 'norm')} and {sensitivity(g, 'autoclip')} against "
            f"{sensitivity(g, 'none')})")


def sensitivity_adaptive_not_lower() -> str:
    for model in ft.MODELS:
        for opt in ("adam", "rmsprop"):
            g = dict(model__cell=model, optim__name=opt)
            none = lrs("study", **g, clip__method="none")
            for m in ft.STUDY_CLIPS[1:]:
                assert lrs("study", **g, clip__method=m)["lr_sensitivity_hi"] >= \
                    none["lr_sensitivity_lo"], (g, m)
    return ("For Adam and RMSprop no setting is less sensitive than no clipping beyond the "
            "intervals")


def adam_hint() -> str:
    g = dict(model__cell="lstm", optim__name="adam", optim__lr=1.024)
    x = {m: cell("study", **g, clip__method=m) for m in ft.STUDY_CLIPS}
    assert x["none"]["n_diverged"] == x["value"]["n_diverged"] == 0
    assert x["none"]["n_trained"] == x["value"]["n_trained"] == 0
    return (f"no clipping and value clipping kept all {int(x['none']['n'])} runs finite (none "
            f"learned: {d(x['none']['final_val_metric_mean'], 1)} and "
            f"{d(x['value']['final_val_metric_mean'], 1)} bits/char), while global norm "
            f"({k_of_n(x['norm']['n_diverged'], x['norm']['n'])}), per-tensor norm "
            f"({k_of_n(x['norm_per_tensor']['n_diverged'], x['norm_per_tensor']['n'])}) and "
            f"AutoClip ({k_of_n(x['autoclip']['n_diverged'], x['autoclip']['n'])}) runs diverged")


def adam_hint_counts() -> str:
    g = dict(model__cell="lstm", optim__name="adam", optim__lr=1.024)
    normed = [cell("study", **g, clip__method=m) for m in ("norm", "norm_per_tensor",
                                                           "autoclip")]
    other = [cell("study", **g, clip__method=m) for m in ("none", "value")]
    k1, n1 = sum(int(x["n_diverged"]) for x in normed), sum(int(x["n"]) for x in normed)
    k2, n2 = sum(int(x["n_diverged"]) for x in other), sum(int(x["n"]) for x in other)
    return (f"this is {k1} of {n1} against {k2} of {n2} (Wilson intervals {wilson(k1, n1)} and "
            f"{wilson(k2, n2)})")


def autoclip_fraction_range() -> str:
    a = cells("study", clip__method="autoclip")
    a = a[a["n_diverged"] == 0]
    return f"it clipped on {span(a['clip_fraction'], lambda x: pct(x)[:-1])}% of steps"


def norm_under_one_percent() -> str:
    cf = max_clip_fraction_at_best(["norm"])
    assert cf < 0.01
    return "where norm clipping at 1 clipped on under 1% at the best learning rates"


# --------------------------------------------------------------------------- clip zoo

def zoo_lr16() -> str:
    c = cells("clip_zoo", optim__lr=16)
    assert (c["n_trained"] == c["n"]).all() and (c["n"] == 3).all()
    n = cell("clip_zoo", optim__lr=16, clip__method="none")
    return (f"At lr 16 every method trained in 3 of 3 seeds (final bpc "
            f"{span(c['final_val_metric_mean'], lambda x: d(x, 2))}; none {iv(n)})")


def zoo_finite_not_trained(doc: str) -> str:
    ms = ["norm", "combined", "autoclip"]
    x = [cell("clip_zoo", optim__lr=64, clip__method=m) for m in ms]
    n = sum(int(r["n"]) for r in x)
    assert all(r["n_diverged"] == 0 and r["n_trained"] == 0 for r in x)
    base = fmt.num(x[0]["baseline_val_metric"])
    if doc == "readme":
        return (f"global norm clipping at 1, combined clipping and AutoClip kept all {n} of their "
                f"runs finite, and all {n} ended worse than the baseline")
    means = [r["final_val_metric_mean"] for r in x]
    r = runs("clip_zoo", optim__lr=64)
    worst = r[r["clip.method"].isin(ms)]["final_val_bpc"].max()
    uniform = math.log2(65)  # tiny-shakespeare's 65 characters
    assert worst > uniform
    return (f"all {n} of those runs ended worse than the {base} bits/char unigram baseline "
            f"(means {span(means, lambda v: d(v, 1))} bits/char, some worse than a uniform "
            f"guess over 65 characters, {d(uniform, 2)})")


def zoo_value_only(doc: str) -> str:
    c = cells("clip_zoo", optim__lr=64)
    trained = c[c["n_trained"] > 0]
    assert list(trained["clip.method"]) == ["value"]
    v = trained.iloc[0]
    k = k_of_n(v["n_trained"], v["n"])
    if doc == "readme":
        return f"only value clipping at {fmt.lr(v['threshold'])} trained ({k})"
    return f"Only value clipping at {fmt.lr(v['threshold'])} trained at lr 64 ({k})"


def zoo_never_clipped() -> str:
    c = cells("clip_zoo", optim__lr=64)
    never = c[(c["clip_fraction"] == 0) & (c["clip.method"] != "none")]
    assert sorted(never["clip.method"]) == ["groups", "norm_relative", "zclip"]
    r = runs("clip_zoo", optim__lr=64)
    steps = r[r["clip.method"].isin([*never["clip.method"], "none"])]["divergence_step"]
    words = {3: "Three", 4: "Four"}
    return (f"{words[len(never)]} methods never clipped before the explosion. Relative norm "
            f"clipping (2× the median of the first 50 steps), ZClip (25 warm-up steps) and "
            f"Graves' per-group rule had a clip fraction of 0 and diverged at step "
            f"{span(steps)}, exactly like no clipping")


def zoo_per_tensor() -> str:
    x = cell("clip_zoo", optim__lr=64, clip__method="norm_per_tensor")
    r = runs("clip_zoo", optim__lr=64, clip__method="norm_per_tensor").sort_values(
        "divergence_step")
    steps = [fmt.num(s) for s in r["divergence_step"]]
    return (f"Per-tensor norm clipping at 1 did clip, on {pct(x['clip_fraction'])} of its "
            f"steps, and still diverged, at steps {', '.join(steps[:-1])} and {steps[-1]}")


def zoo_grid_step() -> str:
    finite = lrs("clip_zoo", clip__method="none")["largest_finite_lr"]
    n = cell("clip_zoo", optim__lr=64, clip__method="none")
    assert n["n_diverged"] == n["n"] and n["median_divergence_step"] == 3
    assert 64 / finite == 4
    return ("(here lr 64, one ×4 grid step above the largest rate at which it stayed "
            "finite)")


# --------------------------------------------------------------------------- thresholds

def threshold_sensitivity_line() -> str:
    s = R.csv("threshold_sensitivity", "lr_summary")
    q = ft.one(s, clip__method="norm_relative", threshold=0.25)
    n = ft.one(s, clip__method="none")
    mid = s[s["threshold"].between(0.5, 2)]["lr_sensitivity"]
    high = s[s["threshold"] >= 5]["lr_sensitivity"]
    assert (high == n["lr_sensitivity"]).all()
    return (f"{ivd(q, 'lr_sensitivity', 2)} nats at 0.25×, {ivd(n, 'lr_sensitivity', 2)} "
            f"without clipping; 0.5×–2× lie between ({span(mid, lambda v: d(v, 2))}), 5×–20× "
            "equal no clipping")


def threshold_never_triggered() -> str:
    r = R.csv("threshold_sensitivity", "runs")
    assert (r[r["threshold"] >= 5]["clip_fraction"] == 0).all()
    return "At 5×, 10× and 20× the median norm, clipping never triggered (clip fraction 0"


def threshold_lr32() -> str:
    c = cells("threshold_sensitivity", optim__lr=32)
    trained = c[c["n_trained"] == c["n"]]
    assert list(trained["threshold"]) == [0.25]
    q = trained.iloc[0]
    mid = c[c["threshold"].between(0.5, 2)]
    assert (mid["n_trained"] == 0).all()
    cf = mid["clip_fraction"]
    return (f"only 0.25× made the runs train ({k_of_n(q['n_trained'], q['n'])}, "
            f"{d(q['final_val_metric_mean'], 2)} bits/char); 0.5×–2× clipped "
            f"({pct(cf.min(), 1)}–{pct(cf.max())} of steps)")


def threshold_lr64() -> str:
    r = runs("threshold_sensitivity", optim__lr=64)
    assert (r["outcome"] == "diverged").all()
    return f"every run diverged at step {span(r['divergence_step'])}"


def threshold_readme_never() -> str:
    r = R.csv("threshold_sensitivity", "runs")
    high = r[r["threshold"] >= 5]
    assert (high["clip_fraction"] == 0).all()
    return f"{span(high['threshold'], fmt.lr).replace('–', '×–')}× never clipped at all"


def threshold_range() -> str:
    t = cells("threshold_sensitivity")["threshold"].dropna()
    return f"then clips at {fmt.lr(t.min())}×–{fmt.lr(t.max())}× of it"


def threshold_lrs() -> str:
    grid = sorted(cells("threshold_sensitivity")["optim.lr"].unique())
    words = ", ".join(fmt.lr(x) for x in grid[:-1]) + f" and {fmt.lr(grid[-1])}"
    return f"{max_steps('threshold_sensitivity')} steps, SGD at lr {words}"


def threshold_readme() -> str:
    q = cell("threshold_sensitivity", optim__lr=32, clip__method="norm_relative",
             threshold=0.25)
    return f"only 0.25× made the runs train ({k_of_n(q['n_trained'], q['n'])})"


# --------------------------------------------------------------------------- repro_mlp

def repro_norm(doc: str) -> str:
    x = [cell("repro_mlp", clip__method=m) for m in ("norm", "norm_per_tensor")]
    assert x[0]["n_success"] == x[1]["n_success"] and x[0]["n"] == x[1]["n"]
    return f"Norm clipping rescues its exploding MLP in {k_of_n(x[0]['n_success'], x[0]['n'])}"


def repro_value() -> str:
    v = cell("repro_mlp", clip__method="value")
    assert v["final_val_metric_mean"] > 10
    return f"ends at a test MSE of {iv(v)}, not below 10"


def repro_unclipped() -> str:
    n = cell("repro_mlp", clip__method="none")
    assert n["n_nonfinite"] == n["n"]
    return f"({k_of_n(n['n_nonfinite'], n['n'])} unclipped runs hit a non-finite loss"


# --------------------------------------------------------------------------- pascanu

def pascanu_temporal() -> pd.DataFrame:
    return cells("pascanu", task__name="temporal_order")


def pascanu_adding() -> pd.DataFrame:
    return cells("pascanu", task__name="adding")


def pascanu_baselines() -> str:
    return span(pascanu_temporal()["baseline_val_metric"], lambda v: d(v, 3))


def pascanu_no_divergence() -> str:
    c = pascanu_temporal()
    lstm50 = ft.select(c, model__cell="lstm", task__length=50)
    assert (lstm50["n_success"] == lstm50["n"]).all()
    return (f"No run diverged ({int(c['n_diverged'].sum())} of {int(c['n'].sum())}). 5 of 5 "
            f"solved has a Wilson interval of {wilson(5, 5)}, 0 of 5 one of {wilson(0, 5)}.")


def pascanu_adding_counts() -> str:
    c = pascanu_adding()
    assert c["n_success"].sum() == 0 and c["n_diverged"].sum() == 0
    per = [int(ft.select(c, model__cell=m)["n"].sum()) for m in ("rnn_tanh", "lstm")]
    lr = {m: fmt.lr(ft.select(c, model__cell=m)["optim.lr"].iloc[0]) for m in ft.MODELS}
    return (f"({int(c['n'].sum())} runs, 5 seeds per cell): no run solved it at any length, with "
            f"or without clipping (0 of {per[0]} each for the tanh RNN at lr {lr['rnn_tanh']} "
            f"and the LSTM at lr {lr['lstm']})")


def pascanu_adding_levels() -> str:
    c = pascanu_adding()
    below = c[c["n_trained"] > 0]
    assert len(below) == 1 and below.iloc[0]["n_trained"] == 1
    b = below.iloc[0]
    assert (b["model.cell"], b["clip.method"], b["task.length"]) == ("rnn_tanh", "none", 200)
    rnn = ft.select(c, model__cell="rnn_tanh", clip__method="norm")["clip_fraction"]
    lstm = ft.select(c, model__cell="lstm", clip__method="norm")["clip_fraction"]
    return (f"{span(c['final_val_metric_mean'], lambda v: d(v, 3))} against baselines of "
            f"{span(c['baseline_val_metric'], lambda v: d(v, 3))}; one run of "
            f"{int(c['n'].sum())} (the unclipped RNN at T 200) ended just below its baseline. "
            f"No run diverged; clipping at 1 fired on {span(rnn, pct)} of the RNN's steps and "
            f"{span(lstm, lambda v: pct(v, 1)[:-1])}% of the LSTM's")


def pascanu_rnn_chance() -> str:
    c = ft.select(pascanu_temporal(), model__cell="rnn_tanh")
    assert c["n_success"].sum() == 0
    return (f"every cell's final error rate sits at chance "
            f"({span(c['final_val_metric_mean'], lambda v: d(v, 3))} against a baseline of "
            f"{pascanu_baselines()})")


def pascanu_rnn_clipping() -> str:
    c = ft.select(pascanu_temporal(), model__cell="rnn_tanh", clip__method="norm")
    med = ft.select(c, optim__lr=0.01)["grad_norm_pre_median"]
    r = runs("pascanu", task__name="temporal_order", model__cell="rnn_tanh",
             clip__method="norm")
    frac = r.groupby("optim.lr")["clip_fraction"].mean()
    return (f"at lr 0.01 the pre-clip norm's median was {span(med, lambda v: d(v, 2))}, so the "
            f"threshold of 1 clipped {pct(frac[0.01])} of the RNN's steps ({pct(frac[0.1])} at "
            "lr 0.1)")


def pascanu_lstm() -> tuple[str, str]:
    c = ft.select(pascanu_temporal(), model__cell="lstm")
    t50 = ft.select(c, task__length=50)
    longer = c[c["task.length"] > 50]
    assert longer["n_success"].sum() == 0
    r = runs("pascanu", task__name="temporal_order", model__cell="lstm", clip__method="norm",
             task__length=50)
    # the steps at which each seed first solved it come from the runs' curves, not a CSV
    return (f"The LSTM with forget bias 1 solved T = 50 in "
            f"{k_of_n(t50['n_success'].sum(), t50['n'].sum())} runs, with and without clipping, "
            f"and nothing longer.", f"Clipping fired on "
            f"{span(r['clip_fraction'], lambda v: pct(v)[:-1])}% of the clipped runs' steps")


def pascanu_spikes() -> str:
    g = R.csv("pascanu", "grad_norms_by_length")
    g = ft.select(g, task__name="temporal_order", clip__method="none")

    def p99(model, lr, length):
        return d(ft.one(g, model__cell=model, optim__lr=lr, length=length)["p99_over_median"], 1)

    return (f"(the 99th percentile was {p99('rnn_tanh', 0.1, 50)}× its median at T 50 and "
            f"{p99('rnn_tanh', 0.1, 200)}× at 200, unclipped, lr 0.1); the LSTM's fell "
            f"({p99('lstm', 0.1, 50)}× at T 50, where it learned, {p99('lstm', 0.1, 200)}× at "
            "200, where it did not)")


def pascanu_readme() -> str:
    c = ft.select(pascanu_temporal(), model__cell="rnn_tanh")
    assert c["n_success"].sum() == 0 and (c["n"] == 5).all()
    lstm = ft.select(pascanu_temporal(), model__cell="lstm", task__length=50)
    a = pascanu_adding()
    return (f"(0 of 5 in each of {len(c)} cells), and nothing diverged to be clipped; an LSTM "
            f"with forget bias 1 solved T 50 in {k_of_n(lstm['n_success'].sum(), lstm['n'].sum())}"
            f" runs with and without clipping, and nothing longer. Nothing solved the adding "
            f"problem ({int(a['n_success'].sum())} of {int(a['n'].sum())})")


# --------------------------------------------------------------------------- seq_length

SEQ = "seq_length"


def seq_lr(model: str, clip: str, length: int) -> float:
    return lrs(SEQ, model__cell=model, optim__name="sgd", clip__method=clip,
               task__seq_len=length)["largest_trained_lr"]


def seq_flat(model: str, clip: str) -> str:
    values = {seq_lr(model, clip, n) for n in (32, 128, 512, 2048)}
    assert len(values) == 1, (model, clip, values)
    return fmt.lr(values.pop())


def seq_stayed() -> str:
    assert seq_flat("lstm", "norm") == seq_flat("lstm", "autoclip")
    assert seq_flat("rnn_tanh", "autoclip") == fmt.lr(seq_lr("rnn_tanh", "norm", 32))
    return (f"it stayed at {seq_flat('lstm', 'none')} for the unclipped LSTM and at "
            f"{seq_flat('rnn_tanh', 'none')} for the unclipped tanh RNN, and at "
            f"{seq_flat('lstm', 'norm')} and {seq_flat('rnn_tanh', 'autoclip')} with global "
            "norm or AutoClip clipping")


def seq_rnn_norm_exception() -> str:
    lr = seq_lr("rnn_tanh", "norm", 512)
    c = cells(SEQ, model__cell="rnn_tanh", optim__name="sgd", clip__method="norm", optim__lr=lr)
    short = ft.select(c, task__seq_len=32), ft.select(c, task__seq_len=2048)
    assert (c[c["task.seq_len"] < 2048]["n_trained"] == 3).all()
    assert c["n_diverged"].sum() == 0
    assert seq_lr("rnn_tanh", "norm", 2048) == lr / 2
    return (f"(lr {fmt.lr(lr)}: {k_of_n(short[0]['n_trained'].iloc[0], 3)} trained at 32–512, "
            f"{k_of_n(short[1]['n_trained'].iloc[0], 3)} at 2,048, none diverged)")


def seq_gain() -> str:
    g = grid_ratio(SEQ, **LSTM_SGD, task__seq_len=32, clip__method="none")
    lstm = (float(seq_flat("lstm", "none")), float(seq_flat("lstm", "norm")))
    rnn = (float(seq_flat("rnn_tanh", "none")), float(seq_flat("rnn_tanh", "autoclip")))
    steps = {round(math.log(b / a, g)) for a, b in (lstm, rnn)}
    assert steps == {2}
    bounds = factor_bounds([lstm[0], rnn[0]], [lstm[1], rnn[1]], g).replace("×", "")
    return (f"raised the largest trained lr from {fmt.lr(lstm[0])} to {fmt.lr(lstm[1])} on the "
            f"LSTM and from {fmt.lr(rnn[0])} to {fmt.lr(rnn[1])} on the RNN (two grid steps: a "
            f"factor {bounds})")


def seq_value() -> str:
    assert seq_flat("rnn_tanh", "value") == seq_flat("rnn_tanh", "none")
    v = [seq_lr("lstm", "value", n) for n in (32, 128, 512, 2048)]
    assert v[:3] == [seq_lr("lstm", "none", n) for n in (32, 128, 512)]
    n = cell(SEQ, **LSTM_SGD, clip__method="none", task__seq_len=2048, optim__lr=v[3])
    return (f"one step on the LSTM at 2,048 only ({fmt.lr(v[3])}, where unclipped "
            f"{k_of_n(n['n_trained'], n['n'])} trained)")


def seq_best(model: str, clip: str, length: int) -> pd.Series:
    c = cells(SEQ, model__cell=model, optim__name="sgd", clip__method=clip,
              task__seq_len=length)
    c = c[c["n_trained"] == c["n"]]
    return c.loc[c["final_val_metric_mean"].idxmin()]


def seq_quality_rnn() -> str:
    n = seq_best("rnn_tanh", "none", 2048)
    g = seq_best("rnn_tanh", "norm", 2048)
    for length in (32, 2048):
        base = seq_best("rnn_tanh", "none", length)
        for clip in ("norm", "autoclip"):
            x = seq_best("rnn_tanh", clip, length)
            assert not overlaps(x, base)
            assert round(base["final_val_metric_mean"] - x["final_val_metric_mean"], 1) == 0.1
    return (f"its upper end, {d(g['final_val_metric_hi'], 3)}, against the unclipped lower "
            f"end, {d(n['final_val_metric_lo'], 3)}")


def seq_quality_lstm(doc: str) -> str:
    for clip in ("norm", "autoclip"):
        assert overlaps(seq_best("lstm", clip, 32), seq_best("lstm", "none", 32))
    a, n = seq_best("lstm", "autoclip", 2048), seq_best("lstm", "none", 2048)
    g = seq_best("lstm", "norm", 2048)
    assert not overlaps(a, n) and overlaps(g, n)
    if doc == "readme":
        return f"{iv(a)} against {iv(n)} bits/char at 2,048, nothing at 32"
    return f"at 2,048 AutoClip's {iv(a)} is clear of unclipped {iv(n)}, global norm's overlaps"


def seq_divergence() -> str:
    c = cells(SEQ, optim__name="sgd")
    lstm32 = ft.select(c, model__cell="lstm", optim__lr=32)
    assert (ft.select(lstm32, clip__method="none")["n_diverged"] == 3).all()
    for clip in ("norm", "autoclip"):
        assert (ft.select(lstm32, clip__method=clip)["n_trained"] == 3).all()
    lstm16 = ft.select(c, model__cell="lstm", optim__lr=16, clip__method="none")
    d16 = dict(zip(lstm16["task.seq_len"], lstm16["n_diverged"]))
    assert (lstm16["n_trained"] == 2).all()
    rnn2 = ft.select(c, model__cell="rnn_tanh", optim__lr=2)
    dr = dict(zip(ft.select(rnn2, clip__method="none")["task.seq_len"],
                  ft.select(rnn2, clip__method="none")["n_diverged"]))
    for clip in ("norm", "autoclip"):
        assert (ft.select(rnn2, clip__method=clip)["n_trained"] == 3).all()
    assert d16[128] == d16[512] == d16[2048] == 0 and dr[32] == dr[128] == dr[512]
    return (f"LSTM at lr 32, 3 of 3 diverged at every length while global norm and AutoClip "
            f"trained 3 of 3; at lr 16, {d16[32]} of 3 diverged at 32 (none at longer lengths; 2 "
            f"of 3 trained at each). RNN at lr 2, {dr[32]} of 3 diverged at 32, 128 and 512 and "
            f"{dr[2048]} of 3 at 2,048, while clipped runs trained 3 of 3 at every length")


def seq_readme_lr32() -> str:
    c = cells(SEQ, model__cell="lstm", optim__name="sgd", optim__lr=32)
    div = set(ft.select(c, clip__method="none")["n_diverged"])
    trained = set(c[c["clip.method"].isin(["norm", "autoclip"])]["n_trained"])
    assert len(div) == len(trained) == 1 and set(c["n"]) == {3}
    return (f"(LSTM lr 32: {div.pop()} of 3 diverged at every length, {trained.pop()} of 3 "
            "trained clipped)")


def seq_spikes() -> str:
    g = ft.select(R.csv(SEQ, "grad_norms_by_length"), optim__name="sgd", clip__method="none")

    def v(model, lr, length, col="p99_over_median", n=1):
        return d(ft.one(g, model__cell=model, optim__lr=lr, length=length)[col], n)

    assert (cells(SEQ, model__cell="rnn_tanh", optim__name="sgd", clip__method="none",
                  optim__lr=8)["n_diverged"] == 3).all()

    def med(model, lr):
        x = ft.select(g, model__cell=model, optim__lr=lr)["grad_norm_median"]
        return span(x, lambda y: d(y, 2))

    return (f"the LSTM at lr 4 went from {v('lstm', 4, 32)}× at 32 to {v('lstm', 4, 2048)}× at "
            f"2,048, at lr 8 from {v('lstm', 8, 32)}× to {v('lstm', 8, 2048)}× (the largest "
            f"max/median from {v('lstm', 8, 32, 'max_over_median')}× to "
            f"{v('lstm', 8, 2048, 'max_over_median')}×); the RNN at lr 1 from "
            f"{v('rnn_tanh', 1, 32)}× to {v('rnn_tanh', 1, 2048)}×, and at lr 8, where every "
            f"run diverged, from {v('rnn_tanh', 8, 32, n=0)}× to {v('rnn_tanh', 8, 2048, n=0)}×. "
            f"The median norm itself did not change with length (LSTM lr 4: {med('lstm', 4)}; "
            f"RNN lr 1: {med('rnn_tanh', 1)})")


def seq_adam() -> str:
    a = cells(SEQ, optim__name="adam")
    assert list(a["optim.lr"].unique()) == [0.064]
    assert (a["n_trained"] == a["n"]).all()
    return (f"Adam at lr {fmt.lr(0.064)} (the only Adam rate run) trained every seed at every "
            "length, clipped or not, on both models")


def seq_setup() -> str:
    r = R.csv(SEQ, "runs")
    assert set(r["model.hidden_size"]) == {128} and set(r["model.num_layers"]) == {1}
    per = (r["task.batch_size"] * r["task.seq_len"]).unique()
    assert len(per) == 1
    batches = r.groupby("task.seq_len")["task.batch_size"].first().sort_index()
    steps = int(r["trainer.max_steps"].iloc[0])
    return (f"({len(r)} runs: a 1×128 LSTM and a 1×128 tanh RNN on tiny-shakespeare at "
            f"`task.seq_len` ∈ {{{', '.join(str(n) for n in batches.index)}}} with "
            f"{int(per[0]):,} characters a step at every length — batch "
            f"{', '.join(str(b) for b in batches)} — so only the length of back-propagation "
            f"changes; {steps} steps, {steps * int(per[0]) / 1e6:.1f}M characters")


def seq_readme_headline() -> str:
    return (f"stayed at {seq_flat('lstm', 'none')} on a 1×128 LSTM and at "
            f"{seq_flat('rnn_tanh', 'none')} on a 1×128 tanh RNN; global norm clipping at 1 and "
            f"AutoClip kept it at {seq_flat('lstm', 'norm')} and "
            f"{seq_flat('rnn_tanh', 'autoclip')} at every length (global norm on the RNN: "
            f"{fmt.lr(seq_lr('rnn_tanh', 'norm', 2048))} at 2,048)")


def seq_readme_spike() -> str:
    g = ft.select(R.csv(SEQ, "grad_norms_by_length"), optim__name="sgd", clip__method="none",
                  model__cell="lstm", optim__lr=8)
    a = ft.one(g, length=32)["p99_over_median"]
    b = ft.one(g, length=2048)["p99_over_median"]
    return f"{d(a, 1)}× to {d(b, 1)}× for the LSTM at lr 8"


# --------------------------------------------------------------------------- scale of runs

def n_runs(study: str) -> str:
    return f"{len(R.csv(study, 'runs'))} runs"


# the studies of findings.md and "What we found" (the demo is the README's quickstart)
STUDIES = ["study", "clip_zoo", "threshold_sensitivity", "repro_mlp", "seq_length", "pascanu",
           "smoothness", "late_spike"]
WORDS = {5: "five", 6: "six", 7: "seven", 8: "eight"}


def max_steps(study: str) -> int:
    return int(R.csv(study, "runs")["trainer.max_steps"].max())


def studies_and_steps() -> str:
    steps = [max_steps(s) for s in STUDIES]
    sizes = [R.csv(s, "runs") for s in STUDIES]
    assert max(r["model.hidden_size"].max() for r in sizes if "model.hidden_size" in r) == 128
    assert all(set(r["model.num_layers"]) == {1} for r in sizes if "model.num_layers" in r)
    return (f"From {WORDS[len(STUDIES)]} studies on 2 CPU cores, every claim with its counts, "
            f"intervals and what it does not show in [`docs/findings.md`](docs/findings.md). "
            f"Small models (up to 1×128 units), {min(steps):,}–{max(steps):,} steps")


def most_steps() -> str:
    return f"more than {max(max_steps(s) for s in STUDIES):,} steps"


# --------------------------------------------------------------------------- late spikes

def _spike(model: str, kind: str, method: str, thr: float | None = None) -> pd.Series:
    g = ft.select(R.csv("late_spike", "spikes"), model__cell=model, spike=kind,
                  clip__method=method)
    if thr is not None:
        g = ft.select(g, threshold=thr)
    assert len(g) == 1
    return g.iloc[0]


def _signed(v: float, d: int = 2) -> str:
    return f"{v:+.{d}f}".replace("-", "−")


def _iv2(mean: float, lo: float, hi: float, d: int = 2) -> str:
    def f(v):
        return f"{v:.{d}f}".replace("-", "−")
    return f"{_signed(mean, d)} [{f(lo)}, {f(hi)}]"


def spike_unclipped_x100() -> str:
    a = _spike("lstm", "grad ×100 at step 600", "none")
    b = _spike("rnn_tanh", "grad ×100 at step 600", "none")
    assert a["n_recovered"] == b["n_recovered"] == 0
    return (f"{_iv2(a['excess_mean'], a['excess_lo'], a['excess_hi'])} bits/char on the LSTM "
            f"and {_iv2(b['excess_mean'], b['excess_lo'], b['excess_hi'])} on the RNN")


def spike_zclip_cost() -> str:
    p = R.csv("late_spike", "paired")
    out = []
    for model in ("lstm", "rnn_tanh"):
        r = ft.select(p, model__cell=model, spike="none", clip__method="zclip").iloc[0]
        assert r["n_diff"] == 5
        out.append(_iv2(r["mean_diff"], r["diff_lo"], r["diff_hi"], 3))
    return f"{out[0]} bits/char on the LSTM, {out[1]} on the RNN"


def spike_norm_rescues() -> str:
    """Every norm-based setting, every gradient spike and corrupted batch: n of n."""
    c = R.csv("late_spike", "spikes")
    norm = c[~c["clip.method"].isin(["none", "value"]) & ~c["spike"].str.startswith("lr")
             & (c["spike"] != "none")]
    per = norm.groupby(["model.cell", "clip.method", "threshold"], dropna=False)
    n = per["n_runs"].sum()
    assert (per["n_diverged"].sum() == 0).all() and (per["n_recovered"].sum() == n).all()
    assert n.nunique() == 1 and len(n) == 12
    return f"({n.iloc[0]} of {n.iloc[0]} forks per setting and model)"


def spike_design() -> str:
    r = R.csv("late_spike", "runs")
    models = r["model.cell"].nunique()
    parents = r.groupby("model.cell")["parent.digest"].nunique()
    assert parents.nunique() == 1
    settings = r.groupby(["clip.method", "threshold"], dropna=False).ngroups
    kinds = r["spike"].nunique()
    assert models * parents.iloc[0] * settings * kinds == len(r)
    return (f"{models} models × {parents.iloc[0]} parents × {settings} clip settings × {kinds} "
            f"disturbances = {len(r)} forks")


def baseline_text() -> str:
    b = R.csv("study", "cells")["baseline_val_metric"].unique()
    assert len(b) == 1
    return f"{fmt.num(b[0])} bits/char on tiny-shakespeare"


CLAIMS: list[tuple[str, str, object]] = [
    # --- findings: the header
    ("findings", "4.81 bits/char on tiny-shakespeare", baseline_text),
    ("findings", "more than 2,000 steps", most_steps),
    ("findings", "3 of 3 has a Wilson interval of 0.44–1.00",
     lambda: f"3 of 3 has a Wilson interval of {wilson(3, 3)}"),
    # --- findings: the study
    ("findings", "`python -m seqbench sweep study` (630 runs",
     lambda: f"`python -m seqbench sweep study` ({n_runs('study')}"),
    ("findings", "1,000 steps (about two epochs)",
     lambda: f"{max_steps('study'):,} steps (about two epochs)"),
    ("findings", "Grids: SGD 0.25–64, SGD with momentum 0.1–25.6, Adam 0.004–4.096, RMSprop "
                 "0.001–0.256", study_grids),
    ("findings", "for SGD on the LSTM, global norm clipping's best was 2.43 [2.38, 2.49] at lr "
                 "16; for SGD with momentum on the LSTM, value, global norm and per-tensor norm "
                 "clipping never clipped at lr 1.6 (clip fraction 0), and AutoClip there ended "
                 "at 2.38 [2.34, 2.43]", beside_the_best),
    ("findings", "(on a ×4 grid the limit itself rose by a factor between just over 1× and just "
                 "under 16×)",
     lambda: f"(on a ×4 grid the limit itself rose by a factor {sgd_lstm_step_bounds()})"),
    ("findings", "On the LSTM every clipping method moved it from 4 to 16; on the tanh RNN the "
                 "three norm-based methods moved it from 1 to 4", study_sgd_moves),
    ("findings", "Without clipping the LSTM stays finite up to 16 but one of three seeds there "
                 "ends no better than the baseline (mean 5.0 bits/char)", lstm_sgd_lr16_unclipped),
    ("findings", "(AutoClip at lr 16, 2.41 [2.39, 2.42] bits/char) beats the best unclipped one "
                 "(2.52 [2.47, 2.58] at lr 4) with intervals apart",
     lambda: autoclip_vs_unclipped("findings")),
    ("findings", "Global norm clipping's best, 2.43 [2.38, 2.49] at lr 16, overlaps the "
                 "unclipped interval", lambda: global_norm_overlaps("findings")),
    ("findings", "Everywhere else the best final bpc with and without clipping is the same "
                 "within the intervals, usually the very same runs (at the best learning rate the "
                 "threshold was almost never reached: clip fraction ≤ 0.01 for value and norm "
                 "clipping)", same_within_intervals_elsewhere),
    ("findings", "With momentum 0.9 on the LSTM, and with Adam and RMSprop on both models, no "
                 "clipping setting raised the largest learning rate that trains.",
     lambda: raised_nowhere_else("findings")),
    ("findings", "kept SGD with momentum finite up to lr 25.6 on the LSTM, but every one of those "
                 "runs ended worse than the baseline (means 26.4 and 14.0 bits/char) but one "
                 "(AutoClip, 1 of 3)", momentum_lstm_finite),
    ("findings", "there its numbers are those of no clipping, run for run, at every learning rate "
                 "that trained (clip fraction 0 there)", rnn_value_sgd_identical),
    ("findings", "Adam at lr 0.064 clipped on 0.13% of steps and ended at 3.39 [3.00, 3.78] "
                 "bits/char against 3.49 [3.24, 3.75] unclipped",
     lambda: rnn_value_adaptive("adam")),
    ("findings", "RMSprop at lr 0.016 clipped on 0.43%, 3.31 [2.94, 3.67] against 3.37 [3.19, "
                 "3.56]", lambda: rnn_value_adaptive("rmsprop")),
    ("findings", "the value-clipped runs diverged too, at steps 2–14 (unclipped: 2–15), but not "
                 "always at the same step: 4 of those 30 pairs of runs with the same seed "
                 "diverged at different steps", rnn_value_divergence),
    ("findings", "(largest finite lr without clipping: SGD 1 vs 16, with momentum 0.4 vs 6.4, "
                 "Adam 0.256 vs 1.024, RMSprop 0.016 vs 0.064; on a ×4 grid the limits "
                 "themselves differ by a factor between just over 1× and just under 64×)",
     rnn_vs_lstm_limits),
    ("findings", "130 of its 315 runs diverged against 51 of the LSTM's", diverged_counts),
    ("findings", "AutoClip 0.984 [0.975, 0.993] and global norm 0.996 [0.984, 1.009] nats against "
                 "1.435 [1.426, 1.445] without clipping; with momentum, AutoClip 1.057 [1.048, "
                 "1.068] against 1.459 [1.449, 1.470]", sensitivity_sgd),
    ("findings", "For Adam and RMSprop no setting is less sensitive than no clipping beyond the "
                 "intervals", sensitivity_adaptive_not_lower),
    ("findings", "(1.324 [1.308, 1.339] and 1.330 [1.310, 1.351] against 1.259 [1.235, 1.285])",
     sensitivity_adam_rnn),
    ("findings", "no clipping and value clipping kept all 3 runs finite (none learned: 7.2 and "
                 "6.4 bits/char), while global norm (2 of 3), per-tensor norm (1 of 3) and "
                 "AutoClip (1 of 3) runs diverged", adam_hint),
    ("findings", "this is 4 of 9 against 0 of 6 (Wilson intervals 0.19–0.73 and 0.00–0.39)",
     adam_hint_counts),
    ("findings", "it clipped on 71–98% of steps", autoclip_fraction_range),
    ("findings", "where norm clipping at 1 clipped on under 1% at the best learning rates",
     norm_under_one_percent),
    ("findings", "means 3 of 3 (Wilson 0.44–1.00)",
     lambda: f"means 3 of 3 (Wilson {wilson(3, 3)})"),
    # --- findings: clip zoo
    ("findings", "`python -m seqbench sweep clip_zoo` (60 runs",
     lambda: f"`python -m seqbench sweep clip_zoo` ({n_runs('clip_zoo')}"),
    ("findings", "300 steps, SGD at lr 16 and 64, 3 seeds",
     lambda: f"{max_steps('clip_zoo')} steps, SGD at lr "
             + " and ".join(fmt.lr(x) for x in sorted(cells('clip_zoo')['optim.lr'].unique()))
             + f", {R.csv('clip_zoo', 'runs')['seed'].nunique()} seeds"),
    ("findings", "At lr 16 every method trained in 3 of 3 seeds (final bpc 2.98–3.14; none 3.12 "
                 "[3.02, 3.22])", zoo_lr16),
    ("findings", "Only value clipping at 0.01 trained at lr 64 (3 of 3)",
     lambda: zoo_value_only("findings")),
    ("findings", "all 9 of those runs ended worse than the 4.81 bits/char unigram baseline (means "
                 "6.1–9.8 bits/char, some worse than a uniform guess over 65 characters, 6.02)",
     lambda: zoo_finite_not_trained("findings")),
    ("findings", "Three methods never clipped before the explosion. Relative norm clipping (2× "
                 "the median of the first 50 steps), ZClip (25 warm-up steps) and Graves' "
                 "per-group rule had a clip fraction of 0 and diverged at step 3, exactly like no "
                 "clipping", zoo_never_clipped),
    ("findings", "Per-tensor norm clipping at 1 did clip, on 69% of its steps, and still "
                 "diverged, at steps 3, 3 and 4", zoo_per_tensor),
    ("findings", "(here lr 64, one ×4 grid step above the largest rate at which it stayed "
                 "finite)", zoo_grid_step),
    ("findings", "it clipped on 100% of steps",
     lambda: "it clipped on "
             f"{pct(cell('clip_zoo', optim__lr=64, clip__method='value')['clip_fraction'])} "
             "of steps"),
    # --- findings: threshold sensitivity
    ("findings", "`python -m seqbench sweep threshold_sensitivity` (72 runs",
     lambda: f"`python -m seqbench sweep threshold_sensitivity` "
             f"({n_runs('threshold_sensitivity')}"),
    ("findings", "400 steps, SGD at lr 16, 32 and 64", threshold_lrs),
    ("findings", "then clips at 0.25×–20× of it", threshold_range),
    ("findings", "0.98 [0.92, 1.05] nats at 0.25×, 1.32 [1.26, 1.37] without clipping; 0.5×–2× "
                 "lie between (1.26–1.29), 5×–20× equal no clipping", threshold_sensitivity_line),
    ("findings", "At 5×, 10× and 20× the median norm, clipping never triggered (clip fraction 0",
     threshold_never_triggered),
    ("findings", "only 0.25× made the runs train (3 of 3, 4.25 bits/char); 0.5×–2× clipped "
                 "(0.2%–66% of steps)", threshold_lr32),
    ("findings", "every run diverged at step 3", threshold_lr64),
    # --- findings: repro_mlp
    ("findings", "`python -m seqbench sweep repro_mlp` (40 runs",
     lambda: f"`python -m seqbench sweep repro_mlp` ({n_runs('repro_mlp')}"),
    ("findings", "variance, 26,213",
     lambda: f"variance, {fmt.num(cell('repro_mlp', clip__method='none')['baseline_val_metric'])}"),
    ("findings", "(10 of 10 unclipped runs hit a non-finite loss", repro_unclipped),
    ("findings", "the mean final test MSE is 50.8",
     lambda: "the mean final test MSE is "
             f"{fmt.num(cell('repro_mlp', clip__method='value')['final_val_metric_mean'])}"),
    # --- findings: pascanu
    ("findings", "`python -m seqbench sweep pascanu` (150 runs",
     lambda: f"`python -m seqbench sweep pascanu` ({n_runs('pascanu')}"),
    ("findings", "5 seeds; 1,500 updates",
     lambda: f"{R.csv('pascanu', 'runs')['seed'].nunique()} seeds; "
             f"{max_steps('pascanu'):,} updates"),
    ("findings", "the baseline is the best constant prediction's error rate, 0.718–0.736",
     lambda: f"the baseline is the best constant prediction's error rate, {pascanu_baselines()}"),
    ("findings", "No run diverged (0 of 90). 5 of 5 solved has a Wilson interval of 0.57–1.00, 0 "
                 "of 5 one of 0.00–0.43.", pascanu_no_divergence),
    ("findings", "(60 runs, 5 seeds per cell): no run solved it at any length, with or without "
                 "clipping (0 of 30 each for the tanh RNN at lr 0.01 and the LSTM at lr 0.1)",
     pascanu_adding_counts),
    ("findings", "0.837–0.859 against baselines of 0.827–0.844; one run of 60 (the unclipped RNN "
                 "at T 200) ended just below its baseline. No run diverged; clipping at 1 fired "
                 "on 4% of the RNN's steps and 0.1–0.2% of the LSTM's", pascanu_adding_levels),
    ("findings", "every cell's final error rate sits at chance (0.749–0.755 against a baseline of "
                 "0.718–0.736)", pascanu_rnn_chance),
    ("findings", "at lr 0.01 the pre-clip norm's median was 1.13–1.14, so the threshold of 1 "
                 "clipped 67% of the RNN's steps (15% at lr 0.1)", pascanu_rnn_clipping),
    ("findings", "The LSTM with forget bias 1 solved T = 50 in 10 of 10 runs, with and without "
                 "clipping, and nothing longer.", lambda: pascanu_lstm()[0]),
    ("findings", "Clipping fired on 10–20% of the clipped runs' steps", lambda: pascanu_lstm()[1]),
    ("findings", "(the 99th percentile was 2.8× its median at T 50 and 2.9× at 200, unclipped, lr "
                 "0.1); the LSTM's fell (8.3× at T 50, where it learned, 2.3× at 200, where it "
                 "did not)", pascanu_spikes),
    # --- findings: seq_length
    ("findings", "(480 runs: a 1×128 LSTM and a 1×128 tanh RNN on tiny-shakespeare at "
                 "`task.seq_len` ∈ {32, 128, 512, 2048} with 4,096 characters a step at every "
                 "length — batch 128, 32, 8, 2 — so only the length of back-propagation changes; "
                 "300 steps, 1.2M characters", seq_setup),
    ("findings", "Adam at lr 0.064 (the only Adam rate run) trained every seed at every length, "
                 "clipped or not, on both models", seq_adam),
    ("findings", "it stayed at 8 for the unclipped LSTM and at 1 for the unclipped tanh RNN, and "
                 "at 32 and 4 with global norm or AutoClip clipping", seq_stayed),
    ("findings", "(lr 4: 3 of 3 trained at 32–512, 1 of 3 at 2,048, none diverged)",
     seq_rnn_norm_exception),
    ("findings", "raised the largest trained lr from 8 to 32 on the LSTM and from 1 to 4 on the "
                 "RNN (two grid steps: a factor between just over 2 and just under 8)", seq_gain),
    ("findings", "one step on the LSTM at 2,048 only (16, where unclipped 2 of 3 trained)",
     seq_value),
    ("findings", "its upper end, 3.016, against the unclipped lower end, 3.018", seq_quality_rnn),
    ("findings", "at 2,048 AutoClip's 2.81 [2.74, 2.88] is clear of unclipped 2.93 [2.90, 2.96], "
                 "global norm's overlaps", lambda: seq_quality_lstm("findings")),
    ("findings", "LSTM at lr 32, 3 of 3 diverged at every length while global norm and AutoClip "
                 "trained 3 of 3; at lr 16, 1 of 3 diverged at 32 (none at longer lengths; 2 of 3 "
                 "trained at each). RNN at lr 2, 1 of 3 diverged at 32, 128 and 512 and 2 of 3 at "
                 "2,048, while clipped runs trained 3 of 3 at every length", seq_divergence),
    ("findings", "the LSTM at lr 4 went from 2.1× at 32 to 2.4× at 2,048, at lr 8 from 2.5× to "
                 "4.4× (the largest max/median from 4.5× to 19.8×); the RNN at lr 1 from 1.8× to "
                 "2.0×, and at lr 8, where every run diverged, from 11× to 32×. The median norm "
                 "itself did not change with length (LSTM lr 4: 0.19–0.21; RNN lr 1: 0.41–0.43)",
     seq_spikes),
    ("findings", "fewer streams (2 at 2,048)",
     lambda: "fewer streams ("
             f"{int(ft.select(R.csv(SEQ, 'runs'), task__seq_len=2048)['task.batch_size'].max())}"
             " at 2,048)"),
    # --- README, What we found
    ("readme", "From eight studies on 2 CPU cores, every claim with its counts, intervals and what "
               "it does not show in [`docs/findings.md`](docs/findings.md). Small models (up to "
               "1×128 units), 300–2,000 steps", studies_and_steps),
    ("readme", "stayed at 8 on a 1×128 LSTM and at 1 on a 1×128 tanh RNN; global norm clipping at "
               "1 and AutoClip kept it at 32 and 4 at every length (global norm on the RNN: 2 at "
               "2,048)", seq_readme_headline),
    ("readme", "(LSTM lr 32: 3 of 3 diverged at every length, 3 of 3 trained clipped)",
     seq_readme_lr32),
    ("readme", "2.5× to 4.4× for the LSTM at lr 8", seq_readme_spike),
    ("readme", "2.81 [2.74, 2.88] against 2.93 [2.90, 2.96] bits/char at 2,048, nothing at 32",
     lambda: seq_quality_lstm("readme")),
    ("readme", "(0 of 5 in each of 12 cells), and nothing diverged to be clipped; an LSTM with "
               "forget bias 1 solved T 50 in 10 of 10 runs with and without clipping, and nothing "
               "longer. Nothing solved the adding problem (0 of 60)", pascanu_readme),
    ("readme", "(4.81 bits/char)", lambda: f"({baseline_text().split(' on ')[0]})"),
    ("readme", "global norm clipping at 1, combined clipping and AutoClip kept all 9 of their "
               "runs finite, and all 9 ended worse than the baseline",
     lambda: zoo_finite_not_trained("readme")),
    ("readme", "only value clipping at 0.01 trained (3 of 3)", lambda: zoo_value_only("readme")),
    ("readme", "from 4 to 16, one step of a ×4 grid (so the limit itself rose by a factor between "
               "just over 1× and just under 16×)",
     lambda: f"from 4 to 16, one step of a ×4 grid (so the limit itself rose by a factor "
             f"{sgd_lstm_step_bounds()})"),
    ("readme", "Only AutoClip's best result is clear of the unclipped one", only_autoclip_clear),
    ("readme", "2.41 [2.39, 2.42] bits/char at lr 16 against 2.52 [2.47, 2.58] unclipped at lr 4",
     lambda: autoclip_vs_unclipped("readme")),
    ("readme", "global norm clipping's 2.43 [2.38, 2.49] at lr 16 overlaps it",
     lambda: global_norm_overlaps("readme")),
    ("readme", "moved it from 1 to 4 (with momentum 0.9: 0.4 to 1.6), one grid step too",
     lambda: "moved it from "
             + " to ".join(fmt.lr(lrs("study", **RNN_SGD, clip__method=m)["largest_trained_lr"])
                           for m in ("none", "norm"))
             + " (with momentum 0.9: "
             + " to ".join(fmt.lr(lrs("study", **dict(RNN_SGD, momentum=0.9),
                                      clip__method=m)["largest_trained_lr"])
                           for m in ("none", "norm"))
             + "), one grid step too"),
    ("readme", "For Adam and RMSprop no clipping setting raised it on either model, and Keras' "
               "example `clipvalue=0.5` raised it for no optimizer on the tanh RNN",
     lambda: raised_nowhere_else("readme")),
    ("readme", "Pascanu et al.'s temporal-order result is out of reach at 1,500 updates.",
     lambda: f"Pascanu et al.'s temporal-order result is out of reach at "
             f"{max_steps('pascanu'):,} updates."),
    ("readme", "in the clipping zoo at SGD lr 64 on a 1×64 LSTM",
     lambda: "in the clipping zoo at SGD lr "
             f"{fmt.lr(cells('clip_zoo')['optim.lr'].max())} on a "
             f"{int(R.csv('clip_zoo', 'runs')['model.num_layers'].max())}×"
             f"{int(R.csv('clip_zoo', 'runs')['model.hidden_size'].max())} LSTM"),
    ("readme", "5×–20× never clipped at all", threshold_readme_never),
    ("readme", "only 0.25× made the runs train (3 of 3)", threshold_readme),
    ("readme", "Norm clipping rescues its exploding MLP in 10 of 10", lambda: repro_norm("readme")),
    ("readme", "ends at a test MSE of 50.8 [26.1, 75.5], not below 10", repro_value),
    # --- late spikes
    ("findings", "+0.43 [0.33, 0.54] bits/char on the LSTM and +0.71 [0.10, 1.33] on the RNN",
     spike_unclipped_x100),
    ("findings", "+0.001 [−0.003, 0.004] bits/char on the LSTM, −0.005 [−0.019, 0.009] on the "
                 "RNN", spike_zclip_cost),
    ("readme", "(20 of 20 forks per setting and model)", spike_norm_rescues),
    ("findings", "2 models × 5 parents × 8 clip settings × 6 disturbances = 480 forks",
     spike_design),
]


# Numbers in the prose that do not come from reports/*/*.csv, so no claim above checks them:
# wall times and machines (sweep logs), the 21 November comparison (an earlier commit's
# demo CSV), the step-time benchmark (reports/bench/*.json), the steps at which each
# Pascanu LSTM seed first solved T 50 and the lr 1 aside (run curves, runs outside the
# preset), docs/repro_mlp.md's epoch-by-epoch numbers and the tutorial's own (9.985),
# the vocabulary of 65 characters, √7 ≈ 2.6 and the √v argument, and the sources' settings
# (Keras' 0.5 and 1, AutoClip's 10th percentile, ZClip's 25 warm-up steps).


def _id(claim) -> str:
    doc, quote, _ = claim
    return f"{doc}:{re.sub(r'[^0-9A-Za-z.%×–-]+', '_', quote)[:60]}"


@pytest.mark.parametrize("claim", CLAIMS, ids=[_id(c) for c in CLAIMS])
def test_quoted_number_is_in_the_doc_and_matches_the_csvs(claim):
    doc, quote, compute = claim
    assert quote in DOCS[doc], f"{doc}: the quoted text is no longer in the document"
    assert compute() == quote


def test_generated_tables_match_the_csvs():
    assert ft.check(FINDINGS_TEXT, R) == []


def test_every_table_of_numbers_in_findings_is_generated():
    """A table typed by hand would escape the check: every Markdown table with a digit in
    its body must sit between generation markers."""
    inside, unmarked = False, []
    for line in FINDINGS_TEXT.split("\n"):
        if line.startswith("<!-- generated by scripts/findings_tables.py"):
            inside = True
        elif line.startswith("<!-- end "):
            inside = False
        elif line.startswith("|") and not line.startswith("|---") and not inside:
            unmarked.append(line)
    body = [x for x in unmarked if re.search(r"\d", x)]
    assert body == []


def test_check_reports_a_number_edited_by_hand(tmp_path, capsys):
    doc = tmp_path / "findings.md"
    doc.write_text(FINDINGS_TEXT, encoding="utf-8")
    assert ft.main(["--check", "--doc", str(doc)]) == 0

    original = "| LSTM | SGD | 2.52 [2.47, 2.58] at lr 4 |"
    assert FINDINGS_TEXT.count(original) == 1
    doc.write_text(FINDINGS_TEXT.replace(original, "| LSTM | SGD | 2.53 [2.47, 2.58] at lr 4 |"),
                   encoding="utf-8")
    capsys.readouterr()
    assert ft.main(["--check", "--doc", str(doc)]) == 1
    out = capsys.readouterr().out
    line = FINDINGS_TEXT[: FINDINGS_TEXT.index(original)].count("\n") + 1
    assert f"study_best_bpc: line {line} of the document differs" in out
    assert "document:  | LSTM | SGD | 2.53 [2.47, 2.58] at lr 4 |" in out
    assert "generated: | LSTM | SGD | 2.52 [2.47, 2.58] at lr 4 |" in out

    # and regenerating puts it back
    assert ft.main(["--doc", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == FINDINGS_TEXT


def test_check_reports_a_missing_marker(tmp_path, capsys):
    doc = tmp_path / "findings.md"
    doc.write_text(FINDINGS_TEXT.replace("<!-- end repro_mlp -->", ""), encoding="utf-8")
    assert ft.main(["--check", "--doc", str(doc)]) == 1
    assert "repro_mlp: markers not found" in capsys.readouterr().out


def test_tables_read_columns_by_name(tmp_path):
    """Re-rendered reports gain columns (and may reorder them): the tables stay the same."""
    for study, names in [*((s, ["cells", "lr_summary"]) for s in [
            "study", "clip_zoo", "threshold_sensitivity", "repro_mlp", "pascanu",
            "seq_length"]), ("smoothness", ["smoothness"]), ("late_spike", ["spikes"])]:
        (tmp_path / study).mkdir()
        for name in names:
            df = R.csv(study, name)
            df = df.assign(extra_column=1.5, n_extra=7).iloc[:, ::-1]
            df.to_csv(tmp_path / study / f"{name}.csv", index=False)
    assert ft.check(FINDINGS_TEXT, ft.Reports(tmp_path)) == []
