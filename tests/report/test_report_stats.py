"""Interval estimates and cell aggregation against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqbench.report.collect import RUN_COLUMNS
from seqbench.report.stats import (
    Z95,
    cell_key_columns,
    cells,
    mean_t_interval,
    t_cdf,
    t_interval_from_summary,
    t_ppf,
    threshold,
    wilson_interval,
)

Z2 = 1.959964**2


def _wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    # Wilson (1927): (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    p = k / n
    centre = (p + Z2 / (2 * n)) / (1 + Z2 / n)
    half = 1.959964 * math.sqrt(p * (1 - p) / n + Z2 / (4 * n * n)) / (1 + Z2 / n)
    return centre - half, centre + half


# --------------------------------------------------------------------------- Wilson


def test_wilson_zero_of_three():
    lo, hi = wilson_interval(0, 3)
    assert lo == 0.0
    # for k = 0 the formula reduces to z² / (n + z²)
    assert hi == pytest.approx(Z2 / (3 + Z2), abs=1e-12)
    assert hi == pytest.approx(0.561497, abs=1e-6)


def test_wilson_three_of_three():
    lo, hi = wilson_interval(3, 3)
    assert hi == 1.0
    assert lo == pytest.approx(3 / (3 + Z2), abs=1e-12)
    assert lo == pytest.approx(0.438503, abs=1e-6)


@pytest.mark.parametrize(("k", "n"), [(1, 2), (5, 10), (2, 7), (9, 10)])
def test_wilson_matches_closed_form(k, n):
    lo, hi = wilson_interval(k, n)
    elo, ehi = _wilson_by_hand(k, n)
    assert lo == pytest.approx(elo, abs=1e-12)
    assert hi == pytest.approx(ehi, abs=1e-12)


def test_wilson_published_values():
    # 5 of 10: the textbook 95% Wilson interval (0.2366, 0.7634); 1 of 2: (0.0945, 0.9055)
    assert wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert wilson_interval(1, 2) == pytest.approx((0.094531, 0.905469), abs=1e-6)


def test_wilson_n_zero_is_nan_and_arrays_work():
    lo, hi = wilson_interval(0, 0)
    assert math.isnan(lo) and math.isnan(hi)
    lo, hi = wilson_interval(np.array([0, 1, 0]), np.array([3, 2, 0]))
    assert lo[0] == 0.0 and hi[0] == pytest.approx(0.561497, abs=1e-6)
    assert lo[1] == pytest.approx(0.094531, abs=1e-6)
    assert np.isnan(lo[2]) and np.isnan(hi[2])


@given(st.integers(1, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_contains_estimate(kn):
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


# --------------------------------------------------------------------------- Student t


@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (29, 2.0452), (120, 1.9799)],
)
def test_t_quantile_table(df, expected):
    assert t_ppf(0.975, df) == pytest.approx(expected, abs=5e-5)


def test_t_quantile_other_levels_and_limits():
    assert t_ppf(0.95, 5) == pytest.approx(2.0150, abs=5e-5)
    assert t_ppf(0.995, 10) == pytest.approx(3.1693, abs=5e-5)
    assert t_ppf(0.025, 4) == pytest.approx(-2.7764, abs=5e-5)
    assert t_ppf(0.975, math.inf) == pytest.approx(Z95, abs=1e-6)
    assert t_ppf(0.975, 1e6) == pytest.approx(Z95, abs=1e-5)
    assert t_ppf(0.5, 7) == 0.0
    assert (
        math.isnan(t_ppf(0.975, 0))
        and math.isnan(t_ppf(1.0, 3))
        and math.isnan(t_ppf(0.975, math.nan))
    )
    # closed forms for df = 1 and 2 agree with the generic inversion
    assert t_cdf(12.706204736, 1) == pytest.approx(0.975, abs=1e-9)
    assert t_cdf(4.302652730, 2) == pytest.approx(0.975, abs=1e-9)
    arr = t_ppf(0.975, np.array([1.0, 4.0, np.nan]))
    assert arr[0] == pytest.approx(12.7062, abs=5e-5) and np.isnan(arr[2])


@settings(max_examples=60, deadline=None)
@given(st.floats(0.001, 0.999), st.floats(0.5, 200.0))
def test_t_ppf_inverts_cdf(p, df):
    assert t_cdf(t_ppf(p, df), df) == pytest.approx(p, abs=1e-8)


def test_mean_t_interval_by_hand():
    mean, lo, hi = mean_t_interval([1.0, 2.0, 3.0])
    half = 4.302653 * 1.0 / math.sqrt(3)  # t_{0.975,2} * s / sqrt(n), s = 1
    assert mean == 2.0
    assert lo == pytest.approx(2.0 - half, abs=1e-5)
    assert hi == pytest.approx(2.0 + half, abs=1e-5)


def test_mean_t_interval_never_imputes():
    assert all(math.isnan(x) for x in mean_t_interval([]))
    assert all(math.isnan(x) for x in mean_t_interval([math.nan, math.nan]))
    mean, lo, hi = mean_t_interval([1.7, math.nan])
    assert mean == 1.7 and math.isnan(lo) and math.isnan(hi)
    lo, hi = t_interval_from_summary([1.0, 1.0], [0.5, math.nan], [1, 0])
    assert np.isnan(lo).all() and np.isnan(hi).all()


def _run(**kw) -> dict:
    row = {c: math.nan for c in RUN_COLUMNS}
    row.update(
        {
            "status": "completed",
            "divergence": None,
            "error": None,
            "task.name": "t",
            "model.hidden_size": 32,
            "optim.name": "sgd",
            "optim.lr": 1.0,
            "clip.method": "none",
            "trainer.device": "cpu",
            "trainer.log_every": 10,
            "seed": 0,
            "steps_completed": 100.0,
            "grad_norm_pre_median": 2.0,
            "clip_fraction": 0.0,
            "tokens_per_second": 1000.0,
        }
    )
    row.update(kw)
    return row


@pytest.fixture
def hand_runs() -> pd.DataFrame:
    rows = [
        # cell A: sgd none lr 1 - one finished, two diverged (nonfinite at 10, exploded after 20)
        _run(run_dir="a0", seed=0, final_val_bpc=1.5),
        _run(
            run_dir="a1",
            seed=1,
            status="diverged",
            divergence="nonfinite",
            first_nonfinite_step=10.0,
            steps_completed=10.0,
            **{"trainer.device": "cuda"},
        ),
        _run(
            run_dir="a2",
            seed=2,
            status="diverged",
            divergence="exploded",
            steps_completed=20.0,
            **{"trainer.device": "cuda:1", "trainer.log_every": 50},
        ),
        # cell B: sgd norm 1 lr 1 - two finished + one still running
        _run(
            run_dir="b0", seed=0, final_val_bpc=1.4, **{"clip.method": "norm", "clip.max_norm": 1.0}
        ),
        _run(
            run_dir="b1",
            seed=1,
            final_val_bpc=1.6,
            **{"clip.method": "norm", "clip.max_norm": 1.0},
            first_nonfinite_step=5.0,
            skipped_steps=1.0,
        ),
        _run(
            run_dir="b2", seed=2, status="running", **{"clip.method": "norm", "clip.max_norm": 1.0}
        ),
        # cell C: sgd norm 1 lr 2 - every seed diverged
        _run(
            run_dir="c0",
            seed=0,
            status="diverged",
            divergence="exploded",
            steps_completed=30.0,
            **{"clip.method": "norm", "clip.max_norm": 1.0, "optim.lr": 2.0},
        ),
        _run(
            run_dir="c1",
            seed=1,
            status="diverged",
            divergence="nonfinite",
            first_nonfinite_step=40.0,
            steps_completed=40.0,
            **{"clip.method": "norm", "clip.max_norm": 1.0, "optim.lr": 2.0},
        ),
        # cell D: sgd value 0.5 lr 1 - only an errored run
        _run(
            run_dir="d0",
            status="error",
            error="boom",
            **{"clip.method": "value", "clip.clip_value": 0.5},
        ),
    ]
    return pd.DataFrame(rows)


def _cell(df: pd.DataFrame, method: str, lr: float) -> pd.Series:
    sel = df[(df["clip.method"] == method) & (df["optim.lr"] == lr)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_cell_keys_exclude_seed_and_non_experiment_keys(hand_runs):
    keys = cell_key_columns(hand_runs)
    assert "seed" not in keys
    assert not any(k.startswith(("trainer.device", "trainer.log_every")) for k in keys)
    assert {"optim.lr", "clip.method", "clip.max_norm", "model.hidden_size"} <= set(keys)


def test_threshold_column(hand_runs):
    t = threshold(hand_runs)
    assert t.iloc[0] != t.iloc[0]  # none -> NaN
    assert t.iloc[3] == 1.0 and t.iloc[8] == 0.5
    # robust to absent columns
    assert threshold(pd.DataFrame({"clip.method": ["norm", "none"]})).isna().all()
    assert threshold(pd.DataFrame({"x": [1]})).isna().all()


def test_cells_counts_and_rates(hand_runs):
    c = cells(hand_runs)
    assert len(c) == 4  # device / log_every differences do not split cell A
    a = _cell(c, "none", 1.0)
    assert (a["n"], a["n_incomplete"], a["n_finished"], a["n_diverged"], a["n_nonfinite"]) == (
        3,
        0,
        1,
        2,
        1,
    )
    assert a["divergence_rate"] == pytest.approx(2 / 3)
    assert (a["divergence_rate_lo"], a["divergence_rate_hi"]) == pytest.approx(
        _wilson_by_hand(2, 3)
    )
    assert a["nan_rate"] == pytest.approx(1 / 3)
    assert (a["nan_rate_lo"], a["nan_rate_hi"]) == pytest.approx(_wilson_by_hand(1, 3))
    # one finished run: a mean, but no interval
    assert a["final_val_bpc_mean"] == 1.5
    assert math.isnan(a["final_val_bpc_lo"]) and math.isnan(a["final_val_bpc_hi"])
    # nonfinite at step 10, exploded after 20 steps -> median 15
    assert a["median_divergence_step"] == 15.0
    assert math.isnan(a["threshold"])


def test_cells_interval_and_incomplete(hand_runs):
    b = _cell(cells(hand_runs), "norm", 1.0)
    assert (b["n"], b["n_incomplete"], b["n_finished"], b["n_diverged"]) == (2, 1, 2, 0)
    # a completed run that saw a NaN (skip policy) counts as non-finite, not diverged
    assert b["n_nonfinite"] == 1 and b["divergence_rate"] == 0.0
    sd = math.sqrt(((1.4 - 1.5) ** 2 + (1.6 - 1.5) ** 2) / 1)
    half = 12.706205 * sd / math.sqrt(2)
    assert b["final_val_bpc_mean"] == pytest.approx(1.5)
    assert b["final_val_bpc_lo"] == pytest.approx(1.5 - half, abs=1e-5)
    assert b["final_val_bpc_hi"] == pytest.approx(1.5 + half, abs=1e-5)
    assert b["threshold"] == 1.0
    assert math.isnan(b["median_divergence_step"])


def test_cells_never_impute(hand_runs):
    c = cells(hand_runs)
    all_div = _cell(c, "norm", 2.0)
    assert all_div["n_finished"] == 0 and all_div["n_diverged"] == 2
    assert math.isnan(all_div["final_val_bpc_mean"])
    assert math.isnan(all_div["final_val_bpc_lo"]) and math.isnan(all_div["final_val_bpc_hi"])
    assert all_div["median_divergence_step"] == 35.0
    only_error = _cell(c, "value", 1.0)
    assert only_error["n"] == 0 and only_error["n_incomplete"] == 1
    for col in (
        "divergence_rate",
        "divergence_rate_lo",
        "nan_rate",
        "final_val_bpc_mean",
        "grad_norm_pre_median",
    ):
        assert math.isnan(only_error[col]), col
    assert only_error["threshold"] == 0.5


def test_cells_empty_input():
    c = cells(pd.DataFrame(columns=list(RUN_COLUMNS)))
    assert c.empty and "n" in c.columns


def test_cells_on_sweep_match_truth(sweep, cells_df):
    truth = sweep.truth.copy()
    assert int(cells_df["n"].sum()) == len(truth)
    assert int(cells_df["n_incomplete"].sum()) == len(sweep.incomplete)
    assert set(cells_df["n"]) == {3}
    truth["thr"] = truth["clip.max_norm"].fillna(truth["clip.clip_value"]).fillna(-1.0)
    truth["div"] = truth["status"] == "diverged"
    truth["bpc"] = truth["final_val_bpc"].where(truth["status"] == "completed")
    exp = truth.groupby(["optim.name", "optim.lr", "clip.method", "thr"]).agg(
        n_diverged=("div", "sum"), bpc=("bpc", "mean"), n_finished=("bpc", "count")
    )
    got = cells_df.assign(thr=cells_df["threshold"].fillna(-1.0)).set_index(
        ["optim.name", "optim.lr", "clip.method", "thr"]
    )
    got = got.loc[exp.index]
    assert (got["n_diverged"].to_numpy() == exp["n_diverged"].to_numpy()).all()
    assert (got["n_finished"].to_numpy() == exp["n_finished"].to_numpy()).all()
    np.testing.assert_allclose(
        got["final_val_bpc_mean"].to_numpy(), exp["bpc"].to_numpy(), equal_nan=True
    )
    assert got["final_val_bpc_mean"].isna().sum() == (exp["n_finished"] == 0).sum() > 0


# --------------------------------------------------------------------------- largest stable lr
