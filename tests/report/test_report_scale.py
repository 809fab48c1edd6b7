"""What the report does to stay fast on 1,000 runs x 10,000 steps, checked for exactness.

Curves are binned per run before they are aggregated or drawn, metrics are read as
arrays, gradient norms are subsampled for the ECDF: each is compared here with an
independent, slow reference (plain loops, pyarrow per file), so speed never changes a
number the report states.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import t as t_dist

from seqbench.fake_runs import write_synthetic_sweep
from seqbench.report import PHASES, make_report
from seqbench.report.collect import read_columns
from seqbench.report.figures.grad_norms import grad_norm_samples
from seqbench.report.figures.loss_curves import binned_run_means, curve_stats

# --------------------------------------------------------------------------- binning


def _reference_bins(run, step, values, max_points):
    """Per (run, bin) mean of finite values, by a plain loop over rows."""
    finite = [(r, s, v) for r, s, v in zip(run, step, values, strict=True) if math.isfinite(v)]
    if not finite:
        return {}
    width = max(1, math.ceil(max(s for _, s, _ in finite) / max_points))
    acc: dict[tuple[int, float], list[float]] = defaultdict(list)
    for r, s, v in finite:
        k = (s - 1) // width
        centre = float(k) * width + (width + 1) / 2 if width > 1 else float(s)
        acc[(r, centre)].append(v)
    return {key: sum(vs) / len(vs) for key, vs in acc.items()}


# no subnormals: a test elsewhere may have set flush-to-zero (torch.set_flush_denormal)
_VALUES = st.floats(-1e6, 1e6, allow_subnormal=False) | st.sampled_from(
    [math.nan, math.inf, -math.inf]
)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 4),
            st.integers(1, 400) | st.integers(-(10**15), 10**15),  # odd writers too
            _VALUES,
        ),
        min_size=0,
        max_size=200,
    ),
    max_points=st.integers(1, 60),
)
def test_binned_run_means_are_exact_means_of_all_rows(rows, max_points):
    run = np.array([r for r, _, _ in rows], dtype=np.int64)
    step = np.array([s for _, s, _ in rows], dtype=np.int64)
    values = np.array([v for _, _, v in rows], dtype=float)
    got_run, got_step, got_mean = binned_run_means(run, step, values, max_points)
    got = {(int(r), float(s)): m for r, s, m in zip(got_run, got_step, got_mean, strict=True)}
    want = _reference_bins(run.tolist(), step.tolist(), values.tolist(), max_points)
    assert got.keys() == want.keys()
    for key, m in want.items():
        assert got[key] == pytest.approx(m, rel=1e-9, abs=1e-9)
    # never more than max_points bins per run over the steps a run file has (1, 2, ...);
    # a step below 1 gets a bin of its own (see test_binned_run_means_odd_step_numbers)
    if step.size and step.min() >= 1:
        assert all(c <= max_points for c in Counter(int(r) for r in got_run).values())


def test_binned_run_means_odd_step_numbers():
    """A writer that counts from step 0 gets a bin too (keys stay per run)."""
    run = np.array([0, 0, 1, 1])
    step = np.array([0, 1, 0, 1])
    r, s, m = binned_run_means(run, step, np.array([1.0, 3.0, 5.0, 7.0]), max_points=10)
    assert list(zip(r.tolist(), s.tolist(), m.tolist(), strict=True)) == [
        (0, 0.0, 1.0), (0, 1.0, 3.0), (1, 0.0, 5.0), (1, 1.0, 7.0),
    ]
    # steps far below 1 make the (run, bin) table sparse: sorted pairs, same answer
    r, s, m = binned_run_means(np.array([0, 0, 1]), np.array([-(10**12), 1, 1]),
                                 np.array([2.0, 4.0, 6.0]), max_points=10)
    assert list(zip(r.tolist(), s.tolist(), m.tolist(), strict=True)) == [
        (0, -1e12, 2.0), (0, 1.0, 4.0), (1, 1.0, 6.0),
    ]


def test_curve_stats_over_seeds_match_a_hand_computation():
    """10,000 steps binned to 300 points: each point is the mean (t band, n) over seeds of
    each seed's mean over every step in the bin; a NaN run stops contributing."""
    rng = np.random.default_rng(3)
    T, max_points = 10_000, 300
    frames = []
    for label, n_runs in (("a", 3), ("b", 4)):
        for i in range(n_runs):
            v = rng.normal(size=T)
            if label == "b" and i == 0:
                v[7000:] = np.nan  # diverged at step 7001
            frames.append(pd.DataFrame({"label": label, "run_dir": f"{label}{i}",
                                        "step": np.arange(1, T + 1), "x": v}))
    curves = pd.concat(frames, ignore_index=True)
    st_ = curve_stats(curves, "x", max_points)
    width = math.ceil(T / max_points)
    assert len(st_) == 2 * math.ceil(T / width)
    for rec in st_.sample(25, random_state=0).to_dict("records"):
        k = int((rec["step"] - (width + 1) / 2) // width)
        lo_step, hi_step = k * width + 1, (k + 1) * width
        means = []
        for f in frames:
            if f["label"].iloc[0] != rec["label"]:
                continue
            sel = f[(f["step"] >= lo_step) & (f["step"] <= hi_step)]["x"]
            sel = sel[np.isfinite(sel)]
            if len(sel):
                means.append(float(sel.mean()))
        assert rec["n"] == len(means)
        assert rec["mean"] == pytest.approx(float(np.mean(means)), rel=1e-12, abs=1e-12)
        half = t_dist.ppf(0.975, len(means) - 1) * np.std(means, ddof=1) / math.sqrt(len(means))
        assert rec["hi"] == pytest.approx(np.mean(means) + half, rel=1e-9, abs=1e-12)
        assert rec["lo"] == pytest.approx(np.mean(means) - half, rel=1e-9, abs=1e-12)


# --------------------------------------------------------------------------- reading


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_synthetic_sweep(
        tmp_path_factory.mktemp("scale"), optimizers=("sgd", "adam"), lrs=[0.1, 8.0],
        clips=(("none", None), ("value", 0.5), ("norm", 1.0)), seeds=(0, 1), steps=120,
        eval_every=40, seed=5,
    )


def test_read_columns_matches_each_file(small):
    dirs = [*small.truth["run_dir"], "extra/truncated_parquet", "extra/error", "nowhere"]
    errors: list = []
    cols = read_columns(small.root, dirs, ("train_loss", "val_loss", "missing_column"),
                        errors=errors)
    assert cols.ids == list(small.truth["run_dir"])
    assert {e[0] for e in errors} == {"extra/truncated_parquet", "extra/error", "nowhere"}
    assert cols.run.dtype == np.int32 and cols.step.dtype == np.int64
    for i, rel in enumerate(cols.ids):
        table = pq.read_table(small.root / rel / "metrics.parquet")
        rows = cols.run == i
        np.testing.assert_array_equal(cols.step[rows], table.column("step").to_numpy())
        for c in ("train_loss", "val_loss"):
            want = np.array(table.column(c).to_pylist(), dtype=float)  # None -> nan
            np.testing.assert_array_equal(cols.values[c][rows], want)
        assert np.isnan(cols.values["missing_column"][rows]).all()


def test_read_columns_rejects_text_where_numbers_belong(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    pq.write_table(pa.table({"step": [1, 2], "train_loss": ["1.5", "2.5"]}), d / "metrics.parquet")
    errors: list = []
    cols = read_columns(tmp_path, ["r"], ("train_loss",), errors=errors)
    assert cols.ids == [] and len(cols) == 0
    assert errors and "train_loss" in errors[0][1]


def test_grad_norm_samples_are_capped_subsets_of_the_real_norms(small):
    from seqbench.report.collect import collect_runs

    runs = collect_runs(small.root).runs
    cap = 150
    a = grad_norm_samples(runs, small.root, max_points=cap, seed=1)
    b = grad_norm_samples(runs, small.root, max_points=cap, seed=1)
    pd.testing.assert_frame_equal(a, b)  # deterministic
    truth = small.truth
    for (method, kind), sub in a.groupby(["clip_method", "kind"]):
        col = "grad_norm_pre" if kind == "pre" else "grad_norm_post"
        pool: Counter = Counter()
        for rel in truth.loc[truth["clip.method"] == method, "run_dir"]:
            v = pq.read_table(small.root / rel / "metrics.parquet", columns=[col])
            v = np.asarray(v.column(0).to_numpy(zero_copy_only=False), dtype=float)
            pool.update(v[np.isfinite(v) & (v > 0)].tolist())
        assert len(sub) == min(cap, sum(pool.values()))
        assert not Counter(sub["value"].tolist()) - pool  # drawn without replacement


# --------------------------------------------------------------------------- plumbing


def test_max_runs_keeps_the_first_runs_of_the_grid(tmp_path):
    full = write_synthetic_sweep(tmp_path / "full", seeds=(0, 1, 2), steps=10, eval_every=5,
                                 defects=False)
    cut = write_synthetic_sweep(tmp_path / "cut", seeds=(0, 1, 2), steps=10, eval_every=5,
                                defects=False, max_runs=5)
    assert len(cut.truth) == 5
    assert sorted(p.name for p in cut.root.iterdir()) == [f"{i:04d}" for i in range(5)]
    cols = ["optim.name", "optim.lr", "clip.method", "seed"]
    pd.testing.assert_frame_equal(cut.truth[cols], full.truth[cols].head(5))
    with pytest.raises(ValueError, match="max_runs"):
        write_synthetic_sweep(tmp_path / "bad", max_runs=-1)


def test_make_report_fills_phase_timings(tmp_path):
    sw = write_synthetic_sweep(tmp_path / "runs", optimizers=("sgd",), lrs=[0.1],
                               clips=(("none", None), ("norm", 1.0)), seeds=(0, 1), steps=20,
                               eval_every=10, defects=False)
    timings: dict = {}
    make_report(sw.root, tmp_path / "out", timings=timings)
    assert set(timings) == {*PHASES, "total"}
    assert all(v >= 0 for v in timings.values())
    assert timings["total"] == pytest.approx(sum(timings[p] for p in PHASES), rel=1e-6)


def test_non_experiment_keys_match_the_sweeps_list():
    """The report groups cells by the same keys the sweep and the trainer use."""
    from seqbench.report.stats import NON_EXPERIMENT_PREFIXES
    from seqbench.rundir import NON_EXPERIMENT_KEYS

    assert tuple(NON_EXPERIMENT_PREFIXES) == tuple(NON_EXPERIMENT_KEYS)


def test_the_report_does_not_import_torch():
    """A report never trains: importing it must not pay for torch (seconds at start and exit)."""
    import subprocess
    import sys

    code = "import sys, seqbench.report; print(sorted({'torch', 'hydra'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
