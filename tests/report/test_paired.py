"""Paired comparisons against no clipping (seqbench.report.paired), checked against scipy
called here on the same hand-made pairs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from seqbench.report.collect import RUN_COLUMNS, CollectResult
from seqbench.report.layout import Layout, enrich
from seqbench.report.lr_summary import lr_summary
from seqbench.report.paired import (
    HEADING,
    PAIRED_COLUMNS,
    against_none,
    paired_between,
    paired_cells,
    paired_comparisons,
    paired_table,
    prepare,
)
from seqbench.report.render import render_markdown
from seqbench.report.stats import cells

# seven seeds of no clipping and of norm clipping at 1 (lr 0.1); the setting's seed 6
# diverged (non-finite, not trained), and none's seed 5 did not train
NONE = [3.10, 3.20, 3.05, 3.30, 3.15, 3.40, 3.25]
NORM = [3.00, 3.18, 2.90, 3.10, 3.16, 3.20, math.nan]
NONE_TRAINED = [True, True, True, True, True, False, True]
NORM_TRAINED = [True, True, True, True, True, True, False]


def _run(method, seed, metric, trained, lr=0.1, max_norm=1.0):
    finite = math.isfinite(metric)
    return {"run_dir": f"{method}-{lr}-{seed}", "status": "completed" if finite else "diverged",
            "outcome": ("trained" if trained else "no_progress") if finite else "diverged",
            "final_val_metric": metric, "metric": "bpc", "metric_unit": "bits/char",
            "metric_lower_is_better": True, "task.name": "shakespeare",
            "optim.name": "sgd", "optim.lr": lr, "clip.method": method,
            "clip.max_norm": max_norm, "seed": seed}


def _runs(extra=()):
    rows = [_run("none", s, m, t) for s, (m, t) in enumerate(zip(NONE, NONE_TRAINED))]
    rows += [_run("norm", s, m, t) for s, (m, t) in enumerate(zip(NORM, NORM_TRAINED))]
    df = pd.DataFrame([*rows, *extra])
    for c in RUN_COLUMNS:  # the run-level fields a report reads, missing here
        if c not in df.columns:
            df[c] = np.nan
    return enrich(df)


def _paired(runs):
    return paired_comparisons(runs, Layout.of(runs, cells(runs)))


def test_differences_match_scipy():
    out = _paired(_runs())
    assert len(out) == 1
    r = out.iloc[0]
    d = np.array(NORM[:6]) - np.array(NONE[:6])  # the non-finite pair is dropped
    assert r["n_pairs"] == 7 and r["n_diff"] == 6
    half = sps.t.ppf(0.975, 5) * d.std(ddof=1) / math.sqrt(6)
    assert r["mean_diff"] == pytest.approx(d.mean())
    assert (r["diff_lo"], r["diff_hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    lo, hi = sps.t.interval(0.95, 5, loc=d.mean(), scale=sps.sem(d))
    assert (r["diff_lo"], r["diff_hi"]) == pytest.approx((lo, hi))
    assert r["wilcoxon_p"] == pytest.approx(sps.wilcoxon(d).pvalue)


def test_two_by_two_and_mcnemar_match_scipy():
    r = _paired(_runs()).iloc[0]
    # the non-finite pair stays in the 2x2: only none trained there
    assert (r["both_trained"], r["only_setting"], r["only_none"], r["neither"]) == (5, 1, 1, 0)
    assert r["mcnemar_p"] == pytest.approx(sps.binomtest(1, 2, 0.5).pvalue)
    # no discordant pairs: no McNemar p
    runs = _runs()
    runs["outcome"] = np.where(runs["outcome"] == "diverged", "diverged", "trained")
    runs.loc[(runs["clip.method"] == "none") & (runs["seed"] == 6), "outcome"] = "no_progress"
    r = _paired(runs).iloc[0]
    assert r["only_setting"] == r["only_none"] == 0 and math.isnan(r["mcnemar_p"])


def test_fewer_than_six_pairs_have_no_wilcoxon():
    runs = _runs()
    runs = runs[runs["seed"] < 5]
    r = _paired(runs).iloc[0]
    assert r["n_diff"] == 5 and math.isnan(r["wilcoxon_p"])
    d = np.array(NORM[:5]) - np.array(NONE[:5])
    assert (r["diff_lo"], r["diff_hi"]) == pytest.approx(
        sps.t.interval(0.95, 4, loc=d.mean(), scale=sps.sem(d)))


def test_unmatched_seeds_and_other_contexts_do_not_pair():
    extra = [_run("norm", 11, 3.0, True), _run("norm", 12, 3.1, True),  # no unclipped twin
             _run("norm", 0, 2.0, True, lr=0.2)]  # another lr: no none there
    r = _paired(_runs(extra))
    assert len(r) == 1 and r.iloc[0]["n_pairs"] == 7
    # no shared seed at all: nothing pairs
    runs = _runs()
    runs.loc[runs["clip.method"] == "norm", "seed"] += 100
    assert _paired(runs).empty and paired_table(_paired(runs)).empty


def test_parents_are_part_of_the_pair():
    runs = _runs()
    runs["parent.digest"] = "a"
    runs.loc[(runs["clip.method"] == "norm") & (runs["seed"] < 2), "parent.digest"] = "b"
    assert _paired(runs).iloc[0]["n_pairs"] == 5


def test_display_table():
    table = paired_table(_paired(_runs()))
    row = table.iloc[0]
    shown = (row["context"], row["lr"], row["setting"], row["pairs"])
    assert shown == ("SGD", "0.1", "norm 1", "7")
    assert row["both / only setting / only none / neither"] == "5 / 1 / 1 / 0"
    assert "[" in row["mean difference in bpc [95% CI]"]


def _markdown(runs):
    collected = CollectResult(runs_dir=pd.io.common.Path("/nonexistent"), runs=runs)
    cells_df = cells(runs)
    return render_markdown(collected, cells_df, lr_summary(cells_df, runs), [], "t")


def test_section_only_with_pairs():
    assert f"## {HEADING}" in _markdown(_runs())
    assert HEADING not in _markdown(_runs()[lambda d: d["clip.method"] != "none"])


# a third setting for the setting-vs-setting comparisons: value clipping at 0.5, seeds
# 0-6 at lr 0.1; its seed 3 did not train
VALUE = [3.05, 3.15, 2.95, 4.90, 3.10, 3.30, 3.20]
VALUE_TRAINED = [True, True, True, False, True, True, True]


def _three():
    extra = [{**_run("value", s, m, t), "clip.max_norm": np.nan, "clip.clip_value": 0.5}
             for s, (m, t) in enumerate(zip(VALUE, VALUE_TRAINED))]
    return _runs(extra)


def _between(runs):
    return paired_between(runs, Layout.of(runs, cells(runs)))


def test_between_settings_match_scipy_and_against_none_is_unchanged():
    runs = _three()
    out = _between(runs)
    named = {(r["clip.method"], r["vs.clip.method"]): r for r in out.to_dict("records")}
    # every two settings once, the later minus the earlier in the report's order (none,
    # value, norm): none is always B
    assert set(named) == {("norm", "none"), ("value", "none"), ("norm", "value")}
    r = named[("norm", "value")]
    d = np.array(NORM[:6]) - np.array(VALUE[:6])  # norm's seed 6 is non-finite
    assert (r["n_pairs"], r["n_diff"]) == (7, 6)
    assert r["mean_diff"] == pytest.approx(d.mean())
    assert (r["diff_lo"], r["diff_hi"]) == pytest.approx(
        sps.t.interval(0.95, 5, loc=d.mean(), scale=sps.sem(d)))
    assert r["wilcoxon_p"] == pytest.approx(sps.wilcoxon(d).pvalue)
    # 2x2, A = norm, B = value: seed 3 only norm trained, seed 6 only value (norm diverged)
    assert (r["both_trained"], r["only_a"], r["only_b"], r["neither"]) == (5, 1, 1, 0)
    assert r["mcnemar_p"] == pytest.approx(sps.binomtest(1, 2, 0.5).pvalue)
    # against none: the same numbers as paired_comparisons
    old = _paired(runs).set_index("clip.method")
    r = named[("norm", "none")]
    for col in ("n_pairs", "n_diff", "mean_diff", "diff_lo", "diff_hi", "mcnemar_p"):
        assert r[col] == pytest.approx(old.loc["norm", col])
    assert (r["only_a"], r["only_b"]) == (old.loc["norm", "only_setting"],
                                          old.loc["norm", "only_none"])
    assert set(old.index) == {"norm", "value"}


def test_between_needs_the_same_lr_and_seed():
    runs = _three()
    runs.loc[runs["clip.method"] == "value", "optim.lr"] = 0.2  # value alone at lr 0.2
    out = _between(runs)
    assert list(zip(out["clip.method"], out["vs.clip.method"])) == [("norm", "none")]
    runs = _three()
    runs.loc[runs["clip.method"] == "value", "seed"] += 100
    assert len(_between(runs)) == 1


def test_paired_cells_is_a_minus_b_and_refuses_other_contexts():
    runs = _three()
    prep = prepare(runs, Layout.of(runs, cells(runs)))
    cell = {m: runs.loc[runs["clip.method"] == m, "cell"].iloc[0]
            for m in ("none", "norm", "value")}
    ab, ba = paired_cells(prep, cell["value"], cell["none"]), \
        paired_cells(prep, cell["none"], cell["value"])
    d = np.array(VALUE) - np.array(NONE)
    assert ab["mean_diff"] == pytest.approx(d.mean())
    assert ba["mean_diff"] == pytest.approx(-d.mean())
    assert (ab["only_a"], ab["only_b"]) == (ba["only_b"], ba["only_a"]) == (1, 1)
    assert paired_cells(prep, cell["none"], cell["none"]) is None  # one setting: no pair
    moved = _three()
    moved.loc[moved["clip.method"] == "value", "optim.lr"] = 0.2
    moved = enrich(moved.drop(columns=["cell"]))
    prep = prepare(moved, Layout.of(moved, cells(moved)))
    c = {m: moved.loc[moved["clip.method"] == m, "cell"].iloc[0] for m in ("none", "value")}
    assert paired_cells(prep, c["value"], c["none"]) is None  # another lr: not a pair


def _sentences(runs):
    from seqbench.report.sentences import task_sentences

    cells_df = cells(runs)
    layout = Layout.of(runs, cells_df)
    said = task_sentences(runs, cells_df, lr_summary(cells_df, runs), None, layout)
    return [s for s in said if s.startswith("Against no clipping")]


def test_the_best_configuration_is_compared_with_no_clipping_over_its_pairs():
    (text,) = _sentences(_runs())  # norm at lr 0.1 has the lowest mean
    d = np.array(NORM[:6]) - np.array(NONE[:6])
    lo, hi = sps.t.interval(0.95, 5, loc=d.mean(), scale=sps.sem(d))
    assert hi < 0  # so the pairs show norm clipping better
    assert (f"over 6 pairs of runs that share a seed (the same initial weights and batches) "
            f"and both ended finite, global norm clipping at 1 changed the final validation bpc by "
            f"{d.mean():.3f} bits/char on average (95% t interval {lo:.3f} to {hi:.3f}); "
            "the interval is clear of 0 on the better side: the pairs show it better there"
            ) in text
    # the 2x2: seed 5 trained only with clipping, seed 6 only without
    p = sps.binomtest(1, 2, 0.5).pvalue
    assert f"of the 7 pairs, 1 trained only with clipping and 1 only without (McNemar exact " \
        f"p = {p:g})" in text
    # differences of both signs: the interval includes 0, and the sentence says so
    runs = _runs()
    runs.loc[(runs["clip.method"] == "norm") & (runs["seed"] < 2), "final_val_metric"] += 0.15
    (text,) = _sentences(runs) or [""]
    assert "the interval includes 0: the pairs do not show a difference" in text


def test_no_pairs_no_paired_sentence():
    runs = _runs()
    runs.loc[runs["clip.method"] == "norm", "seed"] += 100
    assert _sentences(runs) == []
    # the best is unclipped: nothing to compare it with here
    runs = _runs()
    runs.loc[runs["clip.method"] == "norm", "final_val_metric"] += 1.0
    assert _sentences(runs) == []


def test_against_none_turns_round_a_row_with_none_on_the_a_side():
    """paired.csv is paired_between.csv's rows against no clipping, always as the setting
    minus none: a row with none as A is negated and its 2x2 sides swapped."""
    out = _between(_three())
    row = out[out["vs.clip.method"] == "none"].iloc[[0]]
    turned = row.copy()
    for c in ("clip.method", "threshold"):
        turned[c], turned[f"vs.{c}"] = row[f"vs.{c}"].to_numpy(), row[c].to_numpy()
    turned[["mean_diff", "diff_lo", "diff_hi"]] = -row[["mean_diff", "diff_hi",
                                                        "diff_lo"]].to_numpy(float)
    turned[["only_a", "only_b"]] = row[["only_b", "only_a"]].to_numpy()
    a, b = against_none(row), against_none(turned)
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                  check_dtype=False)
    assert a["clip.method"].iloc[0] != "none" and list(a.columns[-len(PAIRED_COLUMNS):]) \
        == list(PAIRED_COLUMNS)
