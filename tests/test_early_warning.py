"""seqbench.early_warning: the probe's early-warning rule, against a brute-force
reference written here, and its outcomes on hand-made probe series and on a real run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqbench.early_warning import (
    DEFAULT_K,
    KS,
    MIN_HISTORY,
    first_firing,
    ratios_to_running_median,
    warning_stats,
)
from seqbench.rundir import SummaryError, validate_summary
from seqbench.train import Trainer

from .test_resume import cfg_for


def brute_ratios(values):
    out = []
    for i, v in enumerate(values):
        past = [x for x in values[:i] if np.isfinite(x)]
        if len(past) < MIN_HISTORY or np.isnan(v):
            out.append(np.nan)
        elif v == np.inf:
            out.append(np.inf)
        else:
            m = float(np.median(past))
            out.append(v / m if m > 0 else np.nan)
    return np.array(out)


values = st.lists(st.one_of(st.floats(0.0, 1e6), st.just(np.nan), st.just(np.inf)),
                  max_size=40)


@given(values)
def test_ratios_match_a_brute_force_running_median(v):
    np.testing.assert_allclose(ratios_to_running_median(np.array(v, dtype=float)),
                               brute_ratios(v), rtol=1e-12, equal_nan=True)


def rule(out, signal, k):
    return next(r for r in out[signal] if r["k"] == k)


def test_a_late_divergence_is_warned_with_its_lead():
    steps = np.arange(10, 110, 10)                    # probes at 10..100
    g = np.array([1, 1, 1, 1, 1, 1, 1.5, 2.5, 9, np.nan])  # rises from step 70
    L = np.ones(10)                                    # flat: never fires
    out = warning_stats(steps, g, L, "diverged", 95)
    assert rule(out, "grad", 2.0) == {"k": 2.0, "step": 80, "lead_steps": 15,
                                      "outcome": "warned"}
    assert rule(out, "grad", 5.0) == {"k": 5.0, "step": 90, "lead_steps": 5,
                                      "outcome": "warned"}
    assert rule(out, "grad", 10.0)["outcome"] == "missed"
    assert all(r["outcome"] == "missed" and r["step"] is None for r in out["L"])
    assert out["armed_at_step"] == steps[MIN_HISTORY] and out["default_k"] == DEFAULT_K
    assert [r["k"] for r in out["L"]] == list(KS)


def test_divergence_before_the_rule_is_armed_is_too_early_not_a_miss():
    out = warning_stats(np.array([10, 20]), np.array([1.0, np.inf]), np.array([1.0, 1.0]),
                        "diverged", 20)
    assert {r["outcome"] for r in out["L"] + out["grad"]} == {"too_early"}
    assert out["armed_at_step"] is None
    # firing at the divergence step itself is no warning
    steps = np.arange(10, 60, 10)
    out = warning_stats(steps, np.array([1, 1, 1, 1, 50.0]), np.ones(5), "diverged", 50)
    assert rule(out, "grad", 2.0)["outcome"] == "missed"


def test_runs_that_did_not_diverge_count_false_alarms_and_running_ones_nothing():
    steps = np.arange(10, 70, 10)
    g = np.array([1, 1, 1, 1, 4, 1.0])
    done = warning_stats(steps, g, np.ones(6), "completed", None)
    assert rule(done, "grad", 3.0)["outcome"] == "false_alarm"
    assert rule(done, "grad", 5.0)["outcome"] == "quiet"
    running = warning_stats(steps, g, np.ones(6), "running", None)
    assert {r["outcome"] for r in running["grad"]} == {None}
    assert first_firing(np.array([np.nan, 3.0]), np.array([1, 2]), 2.0) == 2


def test_a_run_with_the_probe_records_the_warning_in_a_valid_summary(tmp_path):
    # SGD at lr 200 on the small char-LM explodes within a few steps: too early for any
    # probe every 2 steps to see
    cfg = cfg_for("charlm", "optim.lr=200", "trainer.max_steps=40",
                  "trainer.checkpoint_every=0", "trainer.smoothness_every=2")
    s = Trainer(cfg, tmp_path / "run").run()
    assert s["status"] == "diverged"
    w = s["smoothness"]["warning"]
    assert {r["outcome"] for r in w["L"] + w["grad"]} <= {"too_early", "missed", "warned"}
    for r in w["L"] + w["grad"]:
        if r["outcome"] == "warned":
            assert r["lead_steps"] == s["divergence_step"] - r["step"] > 0
    validate_summary(json.loads((tmp_path / "run" / "summary.json").read_text()))
    bad = json.loads((tmp_path / "run" / "summary.json").read_text())
    bad["smoothness"]["warning"]["L"][0]["outcome"] = "maybe"
    with pytest.raises(SummaryError):
        validate_summary(bad)
