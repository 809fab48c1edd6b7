"""trainer.smoothness_every: the local smoothness probe (seqbench/smoothness.py) and its
summary (seqbench.summary.smoothness_stats).

The probe must not disturb the run: a run with it on writes the same metrics rows (every
column but wall_s) and ends with the same parameters, bit for bit, as one without it.
L̂ is checked against its closed form on a quadratic loss; the summary's correlation and
Theil-Sen fit against brute-force computations written here.
"""

from __future__ import annotations

import itertools
import json
import math
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from seqbench.config import validate
from seqbench.errors import ConfigError, ConfigErrors
from seqbench.rundir import SummaryError, validate_summary
from seqbench.smoothness import SMOOTHNESS_FILE, SmoothnessProbe, probe_loss_fn
from seqbench.summary import smoothness_stats
from seqbench.train import Interrupted, Trainer

from .test_resume import cfg_for, stop_at


def metrics(run: Path) -> pd.DataFrame:
    return pq.read_table(run / "metrics.parquet").to_pandas().drop(columns=["wall_s"])


def smoothness(run: Path) -> pd.DataFrame:
    return pq.read_table(run / SMOOTHNESS_FILE).to_pandas()


# ---- the probe does not disturb the run ------------------------------------------------

@pytest.mark.parametrize("task, extra", [
    ("charlm", []),  # two layers, dropout 0.1 (RNG draws every step), SGD, evaluations
    ("charlm", ["trainer.accum_steps=2", "optim=adam", "optim.lr=0.01"]),
    ("adding", []),
    ("regression", []),
])
def test_the_probe_leaves_the_run_bit_identical(tmp_path, task, extra):
    common = [*extra, "trainer.max_steps=20", "trainer.checkpoint_every=0"]
    off = Trainer(cfg_for(task, *common), tmp_path / "off")
    s_off = off.run()
    on = Trainer(cfg_for(task, *common, "trainer.smoothness_every=3"), tmp_path / "on")
    s_on = on.run()
    pd.testing.assert_frame_equal(metrics(tmp_path / "on"), metrics(tmp_path / "off"),
                                  check_exact=True)
    for (name, a), (_, b) in zip(on.model.state_dict().items(),
                                 off.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert s_on["final_val_metric"] == s_off["final_val_metric"]
    rows = smoothness(tmp_path / "on")
    assert rows["step"].tolist() == [3, 6, 9, 12, 15, 18]
    assert np.isfinite(rows.drop(columns="step").to_numpy()).all()
    assert (rows[["probe_grad_norm", "update_norm", "smoothness"]] > 0).all().all()
    assert s_off["smoothness"] is None and not (tmp_path / "off" / SMOOTHNESS_FILE).exists()
    assert s_on["smoothness"]["n"] == 6
    validate_summary(json.loads((tmp_path / "on" / "summary.json").read_text()))


def test_the_probe_leaves_grads_parameters_and_random_state_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 1))
    params = list(model.parameters())
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    probe = SmoothnessProbe(Path("unused"), 1, model, params,
                            lambda m: ((m(x) - y) ** 2).mean())
    for p in params:
        p.grad = torch.randn_like(p)
    grads = [p.grad.clone() for p in params]
    probe.before_update()
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 1e-2)  # "the optimizer step"
    after = [p.detach().clone() for p in params]
    rng = torch.get_rng_state()
    probe.after_update(1)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, a) for p, a in zip(params, after))
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads))
    assert model[1].p == 0.5 and model.training


def test_L_hat_on_a_quadratic_is_the_curvature_along_the_update():
    """f(w) = mean((Xw - y)^2): ∇f(w + ½Δ) − ∇f(w) = H·½Δ with H = 2XᵀX/n, so
    L̂ = ‖HΔ‖/‖Δ‖, computed here in float64 numpy."""
    gen = torch.Generator().manual_seed(1)
    X, y = torch.randn(32, 5, generator=gen), torch.randn(32, generator=gen)
    model = nn.Linear(5, 1, bias=False)
    params = list(model.parameters())
    probe = SmoothnessProbe(Path("unused"), 1, model, params,
                            lambda m: ((m(X).squeeze(-1) - y) ** 2).mean())
    w0 = params[0].detach().clone()
    probe.before_update()
    delta = torch.randn(1, 5, generator=gen) * 0.1
    with torch.no_grad():
        params[0].add_(delta)
    probe.after_update(7)
    g_norm, d_norm, L, loss = probe.pending[0][1].tolist()
    Xn, yn, w, d = (t.double().numpy() for t in (X, y, w0.reshape(-1), delta.reshape(-1)))
    H = 2 * Xn.T @ Xn / len(Xn)
    assert L == pytest.approx(np.linalg.norm(H @ d) / np.linalg.norm(d), rel=1e-4)
    assert d_norm == pytest.approx(np.linalg.norm(d), rel=1e-5)
    assert g_norm == pytest.approx(np.linalg.norm(2 * Xn.T @ (Xn @ w - yn) / len(Xn)),
                                   rel=1e-4)
    assert loss == pytest.approx(np.mean((Xn @ w - yn) ** 2), rel=1e-5)
    assert probe.pending[0][0] == 7


def test_probe_steps_make_no_host_reads(tiny_cfg, tmp_path, host_reads):
    cfg = tiny_cfg("trainer.smoothness_every=2", "trainer.accum_steps=2")
    trainer = Trainer(cfg, tmp_path)
    for _ in range(cfg.trainer.log_every):
        trainer.step()
    assert host_reads == []
    assert len(trainer.smooth.pending) == cfg.trainer.log_every // 2
    trainer.flush(1)
    assert trainer.smooth.file.rows == cfg.trainer.log_every // 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_probe_steps_make_no_sync(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.device=cuda", "trainer.smoothness_every=1")
    trainer = Trainer(cfg, tmp_path)
    trainer.step()
    trainer.flush(1)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(cfg.trainer.log_every):
            trainer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.flush(2)


def test_a_resumed_run_continues_smoothness_parquet(tmp_path):
    cfg = cfg_for("charlm", "trainer.smoothness_every=3")
    Trainer(cfg, tmp_path / "ref").run()
    run = tmp_path / "run"
    trainer = Trainer(cfg, run)
    stop_at(trainer, 23, signal.SIGTERM)
    with pytest.raises(Interrupted):
        trainer.run()
    assert smoothness(run)["step"].tolist() == list(range(3, 22, 3))
    Trainer(cfg, run).run()
    pd.testing.assert_frame_equal(smoothness(run), smoothness(tmp_path / "ref"),
                                  check_exact=True)
    assert smoothness(run)["step"].tolist() == list(range(3, 41, 3))  # no gap, no duplicate


def test_negative_every_is_refused_and_a_task_without_a_probe_batch_has_none(tiny_cfg):
    with pytest.raises((ConfigError, ConfigErrors), match="smoothness_every"):
        validate(tiny_cfg("trainer.smoothness_every=-1"), check_data=False)
    assert probe_loss_fn(object(), 1) is None


# ---- the summary's statistics against brute force --------------------------------------

def ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing their mean rank, by counting."""
    return np.array([(v < a).sum() + ((v == a).sum() + 1) / 2 for a in v])


def theil_sen_reference(x, y):
    """Median pairwise slope, intercept median(y - b x), and Sen's 95% interval: the
    sorted slopes at 1-based ranks round((N - C)/2) and round((N + C)/2) + 1 (Sen 1968,
    eq. 2.6), C = z_0.975·sqrt(Var S), Var S = n(n-1)(2n+5)/18 (Kendall's S, no ties)."""
    slopes = sorted((y[j] - y[i]) / (x[j] - x[i])
                    for i, j in itertools.combinations(range(len(x)), 2) if x[j] != x[i])
    N, n = len(slopes), len(x)
    b = float(np.median(slopes))
    c = 1.959963984540054 * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    lo = slopes[max(int(round((N - c) / 2)) - 1, 0)]
    hi = slopes[min(int(round((N + c) / 2)), N - 1)]
    return b, float(np.median(y - b * x)), lo, hi


def test_stats_match_brute_force():
    rng = np.random.default_rng(3)
    g = rng.lognormal(0, 1, 40)
    L = 0.5 + 2.0 * g + rng.normal(0, 0.3, 40) ** 2
    out = smoothness_stats(g, L)
    rg, rl = ranks(np.log(g)), ranks(np.log(L))
    rho = np.corrcoef(rg, rl)[0, 1]
    assert out["spearman_log"] == {"rho": pytest.approx(rho, abs=1e-12), "n": 40}
    b, a, lo, hi = theil_sen_reference(g, L)
    fit = out["fit"]
    assert fit["L1"] == pytest.approx(b, abs=1e-12)
    assert fit["L0"] == pytest.approx(a, abs=1e-12)
    assert fit["L1_ci95"] == [pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12)]
    assert out["median_L"] == pytest.approx(np.median(L))
    assert out["n"] == 40 and fit["n"] == 40


def test_stats_hand_computed_and_degenerate():
    # slopes of (1,2) (2,5) (4,6): 3, 4/3, 1/2 -> median 4/3; intercept
    # median(2 - 4/3, 5 - 8/3, 6 - 16/3) = median(2/3, 7/3, 2/3) = 2/3
    out = smoothness_stats(np.array([1.0, 2.0, 4.0]), np.array([2.0, 5.0, 6.0]))
    assert out["fit"]["L1"] == pytest.approx(4 / 3) and out["fit"]["L0"] == pytest.approx(2 / 3)
    assert out["spearman_log"]["rho"] == pytest.approx(1.0)
    # non-finite and non-positive probes are left out of everything but n
    out = smoothness_stats(np.array([1.0, np.nan, 2.0, 0.0]),
                           np.array([1.0, 1.0, np.inf, 1.0]))
    assert out["n"] == 4 and out["n_used"] == 1 and out["median_L"] == 1.0
    assert out["spearman_log"] is None and out["fit"] is None
    assert smoothness_stats(np.array([]), np.array([]))["median_L"] is None


@given(st.lists(st.floats(0.01, 100), min_size=2, max_size=30, unique=True),
       st.floats(0.0, 10.0), st.floats(0.01, 10.0))
def test_an_exact_line_is_recovered(xs, a, b):
    g = np.array(xs)
    out = smoothness_stats(g, a + b * g)
    assert out["fit"]["L1"] == pytest.approx(b, rel=1e-6)
    assert out["fit"]["L0"] == pytest.approx(a, rel=1e-6, abs=1e-6)
    lo, hi = out["fit"]["L1_ci95"]
    assert lo == pytest.approx(b, rel=1e-6) and hi == pytest.approx(b, rel=1e-6)


def test_a_long_run_fits_on_at_most_the_cap(monkeypatch):
    import seqbench.summary as summary

    monkeypatch.setattr(summary, "SMOOTHNESS_FIT_MAX", 50)
    g = np.linspace(1, 10, 500)
    out = smoothness_stats(g, 1 + 3 * g)
    assert out["fit"]["n"] == 50 and out["spearman_log"]["n"] == 500
    assert out["fit"]["L1"] == pytest.approx(3.0)


def test_validate_summary_checks_the_smoothness_object():
    base = {"schema_version": 1, "status": "completed", "divergence": None,
            "first_nonfinite_step": None, "steps_completed": 3, "config": {}}
    validate_summary({**base, "smoothness": None})
    good = smoothness_stats(np.array([1.0, 2.0, 4.0]), np.array([2.0, 5.0, 6.0]))
    validate_summary({**base, "smoothness": json.loads(json.dumps(good))})
    for bad in ("x", {"n": "3"}, {"n": 3, "median_L": "a"},
                {**good, "fit": {"L0": 1, "L1": 2, "L1_ci95": [1]}},
                {**good, "spearman_log": {"rho": "high"}}):
        with pytest.raises(SummaryError, match="smoothness"):
            validate_summary({**base, "smoothness": bad})
