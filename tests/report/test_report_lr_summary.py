"""Learning-rate summaries against hand-made grids: the largest finite lr, the largest
trained lr (non-monotone grids included), and LR sensitivity computed by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from seqbench.report.lr_summary import lr_sensitivity, lr_summary
from seqbench.report.stats import cells


def _table() -> pd.DataFrame:
    rows = []

    def add(opt, method, thr, lr, n, nd, nt=None):
        rows.append({"optim.name": opt, "clip.method": method, "threshold": thr,
                     "optim.lr": lr, "n": n, "n_diverged": nd,
                     "n_trained": n - nd if nt is None else nt})

    # sgd none: finite up to 0.5; at 0.5 one seed finished without learning
    for lr, nd, nt in [(0.1, 0, 3), (0.5, 0, 2), (2.0, 1, 2), (8.0, 3, 0)]:
        add("sgd", "none", math.nan, lr, 3, nd, nt)
    for lr, nd in [(0.1, 0), (0.5, 0), (2.0, 0), (8.0, 1)]:
        add("sgd", "norm", 1.0, lr, 3, nd)
    for lr in (0.1, 0.5):
        add("sgd", "norm", 4.0, lr, 3, 3)
    add("sgd", "value", 0.5, 0.1, 3, 1)  # not monotone: diverged at the small lr,
    add("sgd", "value", 0.5, 0.5, 3, 0)  # finite (and trained) at the larger one
    add("adam", "none", math.nan, 0.001, 0, 0)  # no verdict yet: not evidence of anything
    add("adam", "none", math.nan, 0.01, 2, 0)
    return pd.DataFrame(rows)


def row(out, opt, method, thr):
    sel = out[(out["optim.name"] == opt) & (out["clip.method"] == method)]
    sel = sel[sel["threshold"].isna()] if thr is None else sel[sel["threshold"] == thr]
    assert len(sel) == 1
    return sel.iloc[0]


def test_largest_finite_and_trained_lr_on_a_hand_table():
    out = lr_summary(_table())
    assert len(out) == 5
    r = row(out, "sgd", "none", None)
    assert (r["largest_finite_lr"], r["smallest_diverged_lr"], r["n_at_largest_finite"],
            r["n_lrs"], r["n_seeds"]) == (0.5, 2.0, 3, 4, 3)
    # every seed trained only at 0.1; 0.5 had a seed without progress
    assert (r["largest_trained_lr"], r["n_at_largest_trained"],
            r["smallest_untrained_lr"]) == (0.1, 3, 0.5)
    r = row(out, "sgd", "norm", 1.0)
    assert (r["largest_finite_lr"], r["smallest_diverged_lr"]) == (2.0, 8.0)
    assert (r["largest_trained_lr"], r["smallest_untrained_lr"]) == (2.0, 8.0)
    r = row(out, "sgd", "norm", 4.0)
    assert math.isnan(r["largest_finite_lr"]) and r["smallest_diverged_lr"] == 0.1
    assert math.isnan(r["n_at_largest_finite"]) and math.isnan(r["largest_trained_lr"])
    assert math.isnan(r["n_at_largest_trained"])
    r = row(out, "sgd", "value", 0.5)  # the non-monotone grid
    assert (r["largest_finite_lr"], r["smallest_diverged_lr"]) == (0.5, 0.1)
    assert (r["largest_trained_lr"], r["smallest_untrained_lr"]) == (0.5, 0.1)
    r = row(out, "adam", "none", None)
    assert r["largest_finite_lr"] == 0.01 and r["n_at_largest_finite"] == 2
    assert (r["n_lrs"], r["n_seeds"]) == (1, 2)
    assert math.isnan(r["smallest_diverged_lr"])
    # without runs the sensitivity is not computed
    assert out["lr_sensitivity"].isna().all()


def test_a_finite_run_that_learned_nothing_is_not_trained():
    t = _table()
    t.loc[(t["clip.method"] == "norm") & (t["threshold"] == 1.0), "n_trained"] = 0
    r = row(lr_summary(t), "sgd", "norm", 1.0)
    assert r["largest_finite_lr"] == 2.0 and math.isnan(r["largest_trained_lr"])


def test_lr_summary_keeps_other_settings_apart():
    a = _table().assign(**{"model.hidden_size": 32})
    b = _table().assign(**{"model.hidden_size": 256, "n_diverged": 3, "n_trained": 0})
    out = lr_summary(pd.concat([a, b], ignore_index=True))
    assert len(out) == 10
    big = out[out["model.hidden_size"] == 256]
    assert big["largest_finite_lr"].isna().all() and big["largest_trained_lr"].isna().all()


def test_lr_summary_empty():
    assert lr_summary(pd.DataFrame(columns=["optim.name", "n", "n_diverged"])).empty


# ---- LR sensitivity ---------------------------------------------------------------------

def test_lr_sensitivity_by_hand():
    # three lrs; per-run values are min(final, initial) (initial for a diverged run)
    per_lr = [np.array([2.0, 2.2]), np.array([1.5, 1.7]), np.array([4.0, 4.0])]
    means = [2.1, 1.6, 4.0]
    expected = sum(m - 1.6 for m in means) / 3  # (0.5 + 0 + 2.4) / 3
    value, lo, hi = lr_sensitivity(per_lr)
    assert value == pytest.approx(expected, abs=1e-12)
    assert lo <= value <= hi
    # the bootstrap is seeded: the same numbers every time
    assert lr_sensitivity(per_lr) == (value, lo, hi)
    # a flat curve is not sensitive at all, whatever the bootstrap draws
    assert lr_sensitivity([np.array([1.0, 1.0]), np.array([1.0, 1.0])]) == (0.0, 0.0, 0.0)
    # one seed per lr: a value but no interval; one lr or a missing value: nothing
    v, lo1, hi1 = lr_sensitivity([np.array([2.0]), np.array([3.0])])
    assert v == 0.5 and math.isnan(lo1) and math.isnan(hi1)
    assert all(math.isnan(x) for x in lr_sensitivity([np.array([2.0, 3.0])]))
    assert all(math.isnan(x) for x in lr_sensitivity([np.array([2.0]), np.array([np.nan])]))


def _runs() -> pd.DataFrame:
    """SGD without clipping at lrs 0.1, 1, 10 (2 seeds), the last diverging in one seed."""
    base = {"optim.name": "sgd", "clip.method": "none", "metric": "bpc",
            "metric_unit": "bits/char", "metric_lower_is_better": True, "task.name": "t"}
    rows = []
    for lr, seed, status, final, l0 in [
        (0.1, 0, "completed", 3.0, 4.2), (0.1, 1, "completed", 3.2, 4.1),
        (1.0, 0, "completed", 2.0, 4.2), (1.0, 1, "completed", 2.4, 4.1),
        (10.0, 0, "completed", 5.0, 4.2),  # ended worse than at initialisation: capped
        (10.0, 1, "diverged", math.nan, 4.1),  # counted at its own initial loss
    ]:
        rows.append({**base, "optim.lr": lr, "seed": seed, "status": status,
                     "final_val_loss": final, "final_val_metric": final / math.log(2),
                     "initial_loss": l0, "outcome": "diverged" if status == "diverged"
                     else "trained", "run_dir": f"r{lr}-{seed}"})
    return pd.DataFrame(rows)


def test_lr_summary_computes_sensitivity_from_the_runs():
    runs = _runs()
    out = lr_summary(cells(runs), runs)
    assert len(out) == 1
    r = out.iloc[0]
    means = [(3.0 + 3.2) / 2, (2.0 + 2.4) / 2, (4.2 + 4.1) / 2]
    expected = sum(m - min(means) for m in means) / 3
    assert r["lr_sensitivity"] == pytest.approx(expected, abs=1e-12)
    assert r["lr_sensitivity_lo"] <= r["lr_sensitivity"] <= r["lr_sensitivity_hi"]
    assert (r["n_lrs"], r["n_seeds"]) == (3, 2)
    # a run with a verdict but no initial loss makes the statistic unknown, not smaller
    broken = runs.assign(initial_loss=[4.2, 4.1, 4.2, 4.1, 4.2, math.nan])
    assert math.isnan(lr_summary(cells(broken), broken).iloc[0]["lr_sensitivity"])
