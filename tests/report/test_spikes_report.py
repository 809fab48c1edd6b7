"""The report's late-spike section (issue 24, part 3): the label, the recovery rule
against a brute-force reading of its definition, the per-configuration table against
numbers computed here, and a real sweep of forks with spikes reported end to end.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqbench.config import compose, validate
from seqbench.report import make_report
from seqbench.report import spikes as sp
from seqbench.report.spike_label import NO_SPIKE, spike_label
from seqbench.train import Trainer
from tests.conftest import TINY

# ---- the label ------------------------------------------------------------------------


@pytest.mark.parametrize("config, label", [
    ({"trainer.spike.steps": [600], "trainer.spike.grad_factor": 100.0},
     "grad ×100 at step 600"),
    ({"trainer.spike.steps": "[600]", "trainer.spike.lr_factor": 10.0,
      "trainer.spike.lr_steps": 5.0}, "lr ×10 for 5 steps at step 600"),
    ({"trainer.spike.steps": [7], "trainer.spike.lr_factor": 4, "trainer.spike.lr_steps": None},
     "lr ×4 for 1 step at step 7"),
    ({"trainer.spike.steps": [600, 700], "trainer.spike.corrupt_batch": True,
      "trainer.spike.grad_factor": 8}, "grad ×8, corrupted batch at steps 600, 700"),
    ({"trainer.spike.steps": [], "trainer.spike.grad_factor": 100.0}, NO_SPIKE),
    ({"trainer.spike.steps": [600], "trainer.spike.corrupt_batch": False}, NO_SPIKE),
    ({}, NO_SPIKE),
])
def test_the_spike_label_says_what_was_done(config, label):
    assert spike_label(config) == label


# ---- the recovery rule, against its definition -----------------------------------------


def brute_recovery(loss: dict[int, float], s: int, end: int) -> tuple[float, float, float]:
    """The module docstring's definitions, read literally, one step at a time."""
    before = [loss[t] for t in range(s - sp.REFERENCE_STEPS, s)
              if t in loss and math.isfinite(loss[t])]
    if len(before) < sp.MIN_REFERENCE:
        return math.nan, math.nan, math.nan
    ref = sum(before) / len(before)
    during = [loss[t] for t in range(s, end + sp.WINDOW + 1) if t in loss]
    finite = [v for v in during if math.isfinite(v)]
    peak = max(finite) / ref if finite else math.inf
    last = max(loss)
    for t in range(end + 1, last - sp.WINDOW + 2):
        window = [loss.get(u) for u in range(t, t + sp.WINDOW)]
        if any(v is None or not math.isfinite(v) for v in window):
            continue
        if sum(window) / sp.WINDOW <= (1 + sp.TOLERANCE) * ref:
            return ref, peak, float(t - s)
    return ref, peak, math.nan


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0.5, 20.0), min_size=30, max_size=90),
       st.integers(0, 40), st.integers(0, 6), st.integers(1, 80))
def test_recovery_matches_its_definition(values, at, length, first):
    steps = np.arange(first, first + len(values))
    s = first + min(at, len(values) - 1)
    end = s + length
    got = sp.recovery(steps, np.asarray(values), s, end)
    want = brute_recovery(dict(zip(steps.tolist(), values, strict=True)), s, end)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


def test_a_gap_in_the_rows_breaks_a_window_and_a_flat_run_recovers_at_once():
    steps = np.arange(1, 101)
    loss = np.full(100, 2.0)
    loss[60:70] = 9.0  # steps 61..70: the spike's effect
    ref, peak, rec = sp.recovery(steps, loss, 61, 61)
    assert (ref, peak) == (2.0, 4.5) and rec == 10.0  # the window 71..80
    keep = steps != 75  # a missing row: no window may span it
    assert sp.recovery(steps[keep], loss[keep], 61, 61)[2] == 15.0  # 76..85


# ---- a real sweep of forks with spikes ---------------------------------------------------

BASE = [*TINY, "trainer.deterministic=true", "optim=sgd", "optim.lr=0.5",
        "trainer.log_every=1"]
PARENT, END, AT = 30, 60, 42


def _run(run_dir: Path, *overrides: str) -> None:
    cfg = compose([*BASE, *overrides])
    validate(cfg)
    Trainer(cfg, run_dir).run()


@pytest.fixture(scope="module")
def spiked(tmp_path_factory):
    root = tmp_path_factory.mktemp("spikes")
    runs = root / "runs"
    for seed in (0, 1):
        parent = root / f"parent{seed}"
        _run(parent, f"seed={seed}", f"trainer.max_steps={PARENT}", "clip=none",
             f"trainer.keep_checkpoints=[{PARENT}]")
        for clip in (["clip=none"], ["clip=norm", "clip.max_norm=0.5"]):
            for name, spike in (("control", []),
                                ("grad", [f"trainer.spike.steps=[{AT}]",
                                          "trainer.spike.grad_factor=1000"])):
                _run(runs / f"{clip[0]}-{name}-{seed}", f"seed={seed}", *clip, *spike,
                     f"trainer.max_steps={END}", f"trainer.init_from={parent}")
    out = root / "report"
    make_report(runs, out)
    return runs, out


def test_the_spike_table_holds_what_the_runs_say(spiked):
    runs, out = spiked
    table = pd.read_csv(out / "spikes.csv")
    assert set(table["spike"]) == {NO_SPIKE, f"grad ×1000 at step {AT}"}
    assert table["n_runs"].tolist() == [2, 2, 2, 2]
    # recompute every fork's numbers from its metrics.parquet, here
    per = {}
    for d in sorted(runs.iterdir()):
        m = pd.read_parquet(d / "metrics.parquet")
        ref, peak, rec = brute_recovery(dict(zip(m["step"], m["train_loss"], strict=True)),
                                        AT, AT)
        status = pd.read_json(d / "summary.json", typ="series")["status"]
        per[d.name] = (rec if status != "diverged" else math.nan, status == "diverged")
    for r in table.to_dict("records"):
        clip = "clip=none" if r["clip.method"] == "none" else "clip=norm"
        kind = "control" if r["spike"] == NO_SPIKE else "grad"
        mine = [per[f"{clip}-{kind}-{seed}"] for seed in (0, 1)]
        assert r["n_diverged"] == sum(d for _, d in mine)
        assert r["n_recovered"] == sum(not math.isnan(x) for x, _ in mine)
        never = [math.inf if math.isnan(x) else x for x, _ in mine]
        assert r["recovery_median"] == pytest.approx(float(np.median(never)))


def test_the_excess_is_the_spiked_fork_minus_its_own_control(spiked):
    runs, out = spiked
    table = pd.read_csv(out / "spikes.csv")

    def final(name):
        s = pd.read_json(runs / name / "summary.json", typ="series")
        return s["final_val_metric"] if s["status"] == "completed" else math.nan

    for clip, method in (("clip=none", "none"), ("clip=norm", "norm")):
        diffs = [final(f"{clip}-grad-{s}") - final(f"{clip}-control-{s}") for s in (0, 1)]
        diffs = [d for d in diffs if math.isfinite(d)]
        row = table[(table["clip.method"] == method) & (table["spike"] != NO_SPIKE)].iloc[0]
        assert row["n_excess"] == len(diffs)
        if diffs:
            assert row["excess_mean"] == pytest.approx(float(np.mean(diffs)))


def test_the_section_and_its_figure_are_in_the_report(spiked):
    _, out = spiked
    md = (out / "report.md").read_text()
    assert "## Late spikes" in md and "### Spikes per configuration" in md
    assert f"grad ×1000 at step {AT}" in md and "(spike_recovery.png" not in md
    assert "figures/spike_recovery.png" in md and (out / "figures/spike_recovery.png").exists()
    html = (out / "report.html").read_text()
    assert 'id="spikes"' in html and "<strong>Recovery</strong>" in html
    # the controls are read at their siblings' spike step, and say so
    assert "The unspiked controls, read at their siblings' spike step" in md
    # forks pair by parent: every two clip settings in paired_between.csv, and the rows
    # against no clipping in paired.csv are the same numbers
    between, paired = (pd.read_csv(out / f"{n}.csv") for n in ("paired_between", "paired"))
    vs_none = between[between["vs.clip.method"] == "none"]
    assert len(vs_none) == len(paired) == len(between) > 0  # two settings: one pair each
    np.testing.assert_allclose(np.sort(vs_none["mean_diff"].to_numpy(float)),
                               np.sort(paired["mean_diff"].to_numpy(float)), equal_nan=True)
    # forks of parents that differ in seed only are one configuration of two seeds
    cells = pd.read_csv(out / "cells.csv")
    assert len(cells) == 4 and set(cells["n"]) == {2}
    answer = md.split("## Findings")[0]  # contexts are named without digests or paths
    assert "parent.lineage" not in answer and "trainer.init_from" not in answer
    assert "spike: grad ×1000 at step 42" in answer and "no spike" in answer


def test_a_report_without_spikes_has_no_spike_section(report):
    """The session's synthetic sweep (tests/report/conftest.py) has no spikes."""
    out = report.paths["report_md"].parent
    assert "Late spikes" not in report.paths["report_md"].read_text()
    assert not (out / "spikes.csv").exists() and "spikes_csv" not in report.paths
    assert "spike" not in pd.read_csv(out / "runs.csv").columns
