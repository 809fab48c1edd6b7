"""The Answer table and the time to a target (issue 22), against values worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from seqbench.report.answer import answer_pivot, answer_table
from seqbench.report.cost import _median_or_inf, context_targets, parse_target
from seqbench.report.layout import Layout
from seqbench.report.lr_summary import lr_summary
from seqbench.report.sentences.verdicts import least_sensitive


def cell(method, thr, lr, mean, half=0.02, n=3, div=0, opt="sgd"):
    fin = n - div
    return {"task.name": "t", "optim.name": opt, "clip.method": method, "threshold": thr,
            "optim.lr": lr, "n": n, "n_incomplete": 0, "n_finished": fin, "n_diverged": div,
            "divergence_rate": div / n, "n_trained": fin if mean < 4.8 else 0,
            "n_no_progress": 0 if mean < 4.8 else fin, "metric": "bpc",
            "metric_unit": "bits/char", "metric_lower_is_better": True,
            "final_val_metric_mean": mean if fin else math.nan,
            "final_val_metric_lo": mean - half if fin else math.nan,
            "final_val_metric_hi": mean + half if fin else math.nan,
            "baseline_val_metric": 4.81}


def table(rows):
    df = pd.DataFrame(rows)
    df.insert(0, "cell", range(len(df)))
    return df


def test_best_in_row_needs_an_interval_clear_of_every_other():
    cells_df = table([
        cell("none", math.nan, 1, 2.60), cell("none", math.nan, 4, 9.0, div=3),
        cell("norm", 1.0, 1, 2.50), cell("norm", 1.0, 4, 2.40),   # best: 2.40 ± 0.02
        cell("value", 0.5, 1, 2.45), cell("value", 0.5, 4, 2.55),  # 2.45 ± 0.02: clear
    ])
    layout = Layout.of(None, cells_df)
    ans = answer_table(cells_df, lr_summary(cells_df), layout)
    by = ans.set_index("clip.method")
    assert by.loc["norm", "best_metric_mean"] == 2.40 and by.loc["norm", "best_metric_lr"] == 4
    assert by.loc["none", "best_metric_lr"] == 1  # lr 4 diverged: not a candidate
    assert by.loc["none", "largest_trained_lr"] == 1 and by.loc["norm", "largest_trained_lr"] == 4
    assert by.loc["norm", "best_in_row"] and not by.loc[["none", "value"], "best_in_row"].any()
    # widen value's interval until it touches norm's: no winner
    wide = cells_df.copy()
    wide.loc[wide["clip.method"] == "value", "final_val_metric_lo"] -= 0.04
    ans2 = answer_table(wide, lr_summary(wide), Layout.of(None, wide))
    assert not ans2["best_in_row"].any()
    pivot = answer_pivot(ans, layout)
    assert sorted(pivot.columns) == ["context", "none", "norm 1", "value 0.5"]
    assert pivot.loc[0, "norm 1"] == "lr 4 · ★ 2.40 [2.38, 2.42] at 4"
    assert pivot.loc[0, "none"] == "lr 1 · 2.60 [2.58, 2.62] at 1"


def test_an_exact_tie_is_shared_not_awarded():
    cells_df = table([cell("none", math.nan, 1, 2.40), cell("norm", 1.0, 1, 2.40),
                      cell("value", 0.5, 1, 3.0)])
    ans = answer_table(cells_df, lr_summary(cells_df), Layout.of(None, cells_df))
    by = ans.set_index("clip.method")
    assert not by["best_in_row"].any()
    assert by.loc["none", "tie_in_row"] and by.loc["norm", "tie_in_row"]
    assert not by.loc["value", "tie_in_row"]


def test_time_to_target_median_counts_not_reached_as_not_reached():
    assert _median_or_inf(np.array([100.0, 300.0, 200.0]), 3) == 200.0
    assert _median_or_inf(np.array([100.0, 200.0]), 3) == 200.0  # 1 of 3 missed
    assert _median_or_inf(np.array([100.0]), 3) == math.inf      # 2 of 3 missed
    assert _median_or_inf(np.array([100.0]), 2) == math.inf      # half: not reached
    assert _median_or_inf(np.array([]), 0) != _median_or_inf(np.array([]), 0)  # NaN


def test_the_default_target_is_90_percent_of_the_way_to_the_context_best():
    cells_df = table([cell("none", math.nan, 1, 2.81), cell("norm", 1.0, 1, 2.0),
                      cell("norm", 1.0, 4, 1.0, div=1),  # diverged seeds: not the best
                      cell("none", math.nan, 1, 3.81, opt="adam")])
    t = context_targets(cells_df, ["optim.name"])
    assert t.iloc[0] == pytest.approx(4.81 - 0.9 * (4.81 - 2.0))
    assert t.iloc[3] == pytest.approx(4.81 - 0.9 * (4.81 - 3.81))  # its own context
    assert context_targets(cells_df, ["optim.name"], 3.5).tolist() == [3.5] * 4
    assert context_targets(cells_df, ["optim.name"], "0.5").iloc[0] == pytest.approx(3.405)
    assert parse_target("90%") == "0.9" and parse_target("2.6") == 2.6
    with pytest.raises(ValueError):
        parse_target("150%")


def test_lr_sensitivity_over_two_rates_is_not_ranked_and_overlaps_are_named():
    def rec(method, thr, s, lo, hi, n_lrs=3):
        return {"clip.method": method, "threshold": thr, "lr_sensitivity": s,
                "lr_sensitivity_lo": lo, "lr_sensitivity_hi": hi, "n_lrs": n_lrs, "n_seeds": 3}

    two = [rec("none", math.nan, 0.5, 0.4, 0.6, 2), rec("norm", 1.0, 0.3, 0.2, 0.4, 2)]
    assert least_sensitive("SGD", two) is None
    three = [rec("none", math.nan, 0.8, 0.6, 1.1), rec("norm", 1.0, 0.64, 0.63, 0.66),
             rec("value", 0.5, 0.9, 0.85, 0.95)]
    text = least_sensitive("SGD", three, define=False)
    assert "its interval overlaps that of no clipping (0.8), so the order of the two is " \
        "not settled, and is clear of value clipping at 0.5" in text
    tie = [rec("none", math.nan, 0.5, 0.4, 0.6), rec("norm", 1.0, 0.5, 0.4, 0.6)]
    assert "tied at" in least_sensitive("SGD", tie) and "no one of them is the winner" in \
        least_sensitive("SGD", tie)


@pytest.mark.parametrize("bad", ["abc", "120%", "0%", "nan"])
def test_a_bad_target_is_one_line_and_exit_2(tmp_path, capsys, bad):
    from seqbench.cli import main

    assert main(["report", str(tmp_path), "--target", bad]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"seqbench: error: --target={bad}: ")
    assert not (tmp_path / "report.md").exists()


# Paired comparisons in the Answer: four seeds whose levels differ a lot from seed to
# seed (so unpaired intervals overlap) while norm clipping is better on every seed by
# about 0.05 (so the paired interval is clear of 0)
SEED_LEVEL = [2.40, 2.60, 2.50, 2.75]
NORM_GAIN = [0.05, 0.06, 0.04, 0.05]


def _run(method, seed, metric, lr=0.1):
    return {"run_dir": f"{method}-{lr}-{seed}", "status": "completed",
            "outcome": "trained", "final_val_metric": metric, "metric": "bpc",
            "metric_unit": "bits/char", "metric_lower_is_better": True,
            "baseline_val_metric": 4.81, "task.name": "t", "optim.name": "sgd",
            "optim.lr": lr, "clip.method": method,
            "clip.max_norm": 1.0 if method == "norm" else np.nan, "seed": seed}


def _answer(rows):
    from seqbench.report.collect import RUN_COLUMNS
    from seqbench.report.layout import enrich
    from seqbench.report.stats import cells

    runs = pd.DataFrame(rows)
    for c in RUN_COLUMNS:
        if c not in runs.columns:
            runs[c] = np.nan
    runs = enrich(runs)
    cells_df = cells(runs)
    layout = Layout.of(runs, cells_df)
    return answer_table(cells_df, lr_summary(cells_df, runs), layout, runs), layout


def _pairs(none_lr=0.1, gains=NORM_GAIN):
    rows = [_run("none", s, v, none_lr) for s, v in enumerate(SEED_LEVEL)]
    rows += [_run("norm", s, v - g) for s, (v, g) in enumerate(zip(SEED_LEVEL, gains))]
    return rows


def test_a_paired_comparison_decides_the_mark_where_pairs_exist():
    from scipy import stats as sps

    ans, layout = _answer(_pairs())
    by = ans.set_index("clip.method")
    # unpaired, the two intervals overlap: no mark without the pairs
    assert by.loc["norm", "best_metric_hi"] > by.loc["none", "best_metric_lo"]
    assert by.loc["norm", "best_in_row"] and by.loc["norm", "best_paired"]
    # the paired difference (none minus norm, the other minus the best) is scipy's
    d = np.array(NORM_GAIN)
    lo, hi = sps.t.interval(0.95, 3, loc=d.mean(), scale=sps.sem(d))
    assert by.loc["none", "vs_best_n"] == 4
    assert by.loc["none", "vs_best_mean_diff"] == pytest.approx(d.mean())
    assert (by.loc["none", "vs_best_diff_lo"], by.loc["none", "vs_best_diff_hi"]) == \
        pytest.approx((lo, hi))
    assert lo > 0 and math.isnan(by.loc["norm", "vs_best_n"])  # the best: no difference
    cell = answer_pivot(ans, layout).loc[0, "norm 1"]
    assert "★ₚ 2.51" in cell  # mean of SEED_LEVEL less the mean gain
    from seqbench.report.answer import answer_note

    note = answer_note(ans, "bpc")
    assert "here 1 comparison with a row's best was paired" in note
    assert "the two unpaired intervals do not overlap" in note


def test_paired_differences_of_both_signs_give_no_mark():
    ans, _ = _answer(_pairs(gains=[0.05, -0.04, 0.06, -0.03]))
    by = ans.set_index("clip.method")
    assert by.loc["none", "vs_best_n"] == 4 and by.loc["none", "vs_best_diff_lo"] < 0
    assert not ans["best_in_row"].any() and not ans["best_paired"].any()


def test_bests_at_different_learning_rates_are_compared_unpaired():
    # none's runs at lr 0.2 only: no pairs with norm's best at lr 0.1, and the unpaired
    # intervals overlap, so nothing is marked
    ans, _ = _answer(_pairs(none_lr=0.2))
    by = ans.set_index("clip.method")
    assert by.loc["none", "best_metric_lr"] != by.loc["norm", "best_metric_lr"]
    assert math.isnan(by.loc["none", "vs_best_n"])
    assert not ans["best_in_row"].any()
    # the same runs far apart: the unpaired rule awards a plain ★
    far = [{**r, "final_val_metric": r["final_val_metric"] - 1.0}
           for r in _pairs(none_lr=0.2) if r["clip.method"] == "norm"]
    ans, layout = _answer([r for r in _pairs(none_lr=0.2) if r["clip.method"] == "none"] + far)
    by = ans.set_index("clip.method")
    assert by.loc["norm", "best_in_row"] and not by.loc["norm", "best_paired"]
    assert "★ 1." in answer_pivot(ans, layout).loc[0, "norm 1"]


def test_a_row_without_a_best_says_why():
    """A best needs an lr where no seed diverged and every run finished; without one the
    cell says which (it read "every lr diverged" when 1 seed of 3 had)."""
    some = cell("value", 0.5, 4, 2.6, div=1)
    unfinished = {**cell("norm", 1.0, 4, 2.5), "n_incomplete": 1}
    cells_df = table([cell("none", math.nan, 4, 9.0, div=3), some, unfinished,
                      cell("autoclip", math.nan, 4, 2.55)])
    layout = Layout.of(None, cells_df)
    pivot = answer_pivot(answer_table(cells_df, lr_summary(cells_df), layout), layout)
    assert pivot.loc[0, "none"].endswith("· every run diverged")
    assert pivot.loc[0, "value 0.5"].endswith("· a seed diverged at every lr")
    assert pivot.loc[0, "norm 1"].endswith("· no lr where every run finished")
    assert pivot.loc[0, "autoclip"].endswith("2.55 [2.53, 2.57] at 4")
