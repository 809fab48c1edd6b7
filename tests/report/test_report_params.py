"""Per-parameter norms (param_metrics.parquet): loader, per-layer figure, documents.

References are computed here from the raw Parquet files with pyarrow and numpy, never
through the report's own loader.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.colors import to_rgb

from seqbench.fake_runs import PARAM_NAMES, write_synthetic_sweep
from seqbench.metrics import PARAM_SCHEMA, MetricsFile
from seqbench.report import make_report
from seqbench.report.collect import (
    PARAM_METRICS_FILE,
    PARAM_VALUE_COLUMNS,
    collect_runs,
    load_param_metrics,
)
from seqbench.report.figures._common import FigureSkipped
from seqbench.report.figures.param_grad_norms import (
    MAX_PARAM_CONFIGS,
    param_grad_norms,
    param_norm_stats,
)
from seqbench.report.lr_summary import lr_summary
from seqbench.report.render import DAMAGED_HEADING
from seqbench.report.stats import cells

EVERY = 5


@pytest.fixture(scope="module")
def psweep(tmp_path_factory):
    """54 runs (SGD x 3 lrs x 6 clip settings x 3 seeds) logging norms every 5 steps."""
    return write_synthetic_sweep(
        tmp_path_factory.mktemp("pruns"),
        optimizers=("sgd",),
        lrs=(0.5, 2.0, 8.0),
        steps=30,
        eval_every=10,
        seed=3,
        param_every=EVERY,
    )


@pytest.fixture(scope="module")
def pcollected(psweep):
    return collect_runs(psweep.root)


def _raw(path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def _readable(root, rel) -> pd.DataFrame | None:
    try:
        return _raw(root / rel / PARAM_METRICS_FILE)
    except (OSError, pa.ArrowException):
        return None


# --------------------------------------------------------------------------- loader


def test_loader_reads_the_trainers_format_and_only_asked_columns(tmp_path):
    """Written by the trainer's own writer (seqbench.metrics, PARAM_SCHEMA)."""
    run = tmp_path / "a"
    run.mkdir()
    f = MetricsFile(run / PARAM_METRICS_FILE, PARAM_SCHEMA)
    names = np.array(["rnn.weight_hh_l0", "decoder.weight"], dtype=object)
    f.append(
        {
            "step": np.array([10, 10]),
            "name": names,
            "grad_norm": np.array([3.0, 0.5]),
            "grad_norm_post": np.array([1.0, 0.2]),
            "weight_norm": np.array([7.0, 2.0]),
            "update_ratio": np.array([1e-3, np.nan]),
        }
    )
    (tmp_path / "b").mkdir()  # a run without per-parameter data
    errors: list = []
    full = load_param_metrics(tmp_path, ["a", "b"], errors=errors)
    assert errors == []
    assert list(full.columns) == ["run_dir", "step", "name", *PARAM_VALUE_COLUMNS]
    assert list(full["run_dir"]) == ["a", "a"] and list(full["name"]) == list(names)
    assert full["step"].dtype == np.int64 and full["name"].dtype == object
    np.testing.assert_array_equal(full["grad_norm"], [3.0, 0.5])
    np.testing.assert_array_equal(full["update_ratio"], [1e-3, np.nan])
    some = load_param_metrics(tmp_path, ["a"], ["grad_norm"])
    assert list(some.columns) == ["run_dir", "step", "name", "grad_norm"]


def test_loader_missing_files_are_no_data_not_errors(tmp_path):
    (tmp_path / "r").mkdir()
    errors: list = []
    out = load_param_metrics(tmp_path, ["r", "not_there"], errors=errors)
    assert out.empty and errors == []
    assert list(out.columns) == ["run_dir", "step", "name", *PARAM_VALUE_COLUMNS]


def test_loader_present_matches_files_and_skips_corrupt(psweep):
    rels = list(psweep.truth["run_dir"][:6])
    errors: list = []
    out = load_param_metrics(psweep.root, rels, errors=errors)
    assert [e[0] for e in errors] == list(psweep.damaged) == ["0001"]
    assert PARAM_METRICS_FILE in errors[0][1]
    for rel in rels:
        mine = out[out["run_dir"] == rel].reset_index(drop=True)
        raw = _readable(psweep.root, rel)
        if raw is None:
            assert mine.empty
            continue
        assert len(mine) == len(raw) > 0
        assert list(mine["name"]) == list(raw["name"])
        for c in ("step", *PARAM_VALUE_COLUMNS):
            np.testing.assert_array_equal(mine[c].to_numpy(float), raw[c].to_numpy(float))


def test_loader_rejects_a_file_without_names(tmp_path):
    (tmp_path / "r").mkdir()
    pq.write_table(pa.table({"step": [1, 2], "grad_norm": [1.0, 2.0]}),
                   tmp_path / "r" / PARAM_METRICS_FILE)
    errors: list = []
    assert load_param_metrics(tmp_path, ["r"], errors=errors).empty
    assert errors and "name" in errors[0][1]


def test_collect_keeps_runs_with_a_damaged_param_file(psweep, pcollected):
    runs = pcollected.runs.set_index("run_dir")
    assert dict(zip(pcollected.damaged["run_dir"], pcollected.damaged["reason"],
                    strict=True)).keys() == {"0001"}
    assert "param_metrics.parquet" in pcollected.damaged["reason"].iloc[0]
    assert "0001" in runs.index and "0001" not in set(pcollected.corrupt["run_dir"])
    assert math.isnan(runs.loc["0001", "param_metrics_rows"])
    for rel in psweep.truth["run_dir"]:
        if rel in psweep.damaged:
            continue
        expected = pq.read_metadata(psweep.root / rel / PARAM_METRICS_FILE).num_rows
        assert runs.loc[rel, "param_metrics_rows"] == expected
    # the defect copies (corrupt / running / error) have no param file: 0 rows, not damaged
    assert (runs.loc["extra/running", "param_metrics_rows"]) == 0


def test_collect_without_param_files(collected):
    assert collected.damaged.empty
    assert (collected.runs["param_metrics_rows"] == 0).all()


def test_synthetic_tensor_norms_split_the_global_norm(psweep):
    """Each step's per-tensor squared norms sum to the logged global norm squared."""
    for rel in psweep.truth["run_dir"][2:8]:
        p = _raw(psweep.root / rel / PARAM_METRICS_FILE)
        m = _raw(psweep.root / rel / "metrics.parquet").set_index("step")
        assert list(dict.fromkeys(p["name"])) == list(PARAM_NAMES)
        assert set(p["step"]) == set(range(EVERY, len(m) + 1, EVERY))
        for col, glob in (("grad_norm", "grad_norm_pre"), ("grad_norm_post", "grad_norm_post")):
            ss = p.groupby("step")[col].apply(lambda v: float(np.sqrt((v**2).sum())))
            ref = m.loc[ss.index, glob].to_numpy(dtype=float)
            fin = np.isfinite(ref)
            np.testing.assert_allclose(ss.to_numpy()[fin], ref[fin], rtol=1e-6)


# --------------------------------------------------------------------------- statistics


_values = st.one_of(
    st.floats(1e-6, 1e6), st.sampled_from([0.0, -1.0, math.nan, math.inf, -math.inf])
)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["A", "B"]),
            st.sampled_from(["r0", "r1", "r2"]),
            st.sampled_from(["w", "b"]),
            st.integers(1, 6),
            _values,
        ),
        min_size=1,
        max_size=60,
        unique_by=lambda t: t[:4],
    )
)
def test_param_norm_stats_is_the_median_of_finite_positive_values(rows):
    df = pd.DataFrame(rows, columns=["label", "run_dir", "name", "step", "v"])
    out = param_norm_stats(df, "v")
    ref: dict[tuple, list[float]] = {}
    for lab, _, name, step, v in rows:
        if math.isfinite(v) and v > 0:
            ref.setdefault((lab, name, float(step)), []).append(v)
    got = {(r.label, r.name, r.step): (r.median, r.n) for r in out.itertuples()}
    assert got.keys() == ref.keys()
    for k, vals in ref.items():
        assert got[k][0] == pytest.approx(statistics.median(vals))
        assert got[k][1] == len(vals)


def test_param_norm_stats_bins_long_runs():
    steps = np.arange(1, 1001)
    df = pd.DataFrame(
        {"label": "A", "run_dir": "r", "name": "w", "step": steps, "v": steps.astype(float)}
    )
    out = param_norm_stats(df, "v", max_points=100)
    assert len(out) == 100 and out["step"].is_monotonic_increasing
    np.testing.assert_allclose(out["median"], out["step"])  # v = step: a bin's median = centre


# --------------------------------------------------------------------------- figure


def _thr(rec: dict) -> float:
    if rec["clip.method"] == "norm":
        return float(rec["clip.max_norm"])
    if rec["clip.method"] == "value":
        return float(rec["clip.clip_value"])
    return math.nan


def _panel_runs(truth: pd.DataFrame, title: str) -> list[str]:
    """Run dirs of the configuration a panel title names: ``SGD, lr 2: norm 0.25 (n=3)``."""
    head, rest = title.split(": ", 1)
    opt, lr = head.split(", lr ")
    label = rest.rsplit(" (n=", 1)[0]
    method, *thr = label.split(" ")
    sel = [
        r["run_dir"]
        for r in truth.to_dict("records")
        if r["optim.name"] == opt.lower()
        and math.isclose(r["optim.lr"], float(lr))
        and r["clip.method"] == method
        and (math.isnan(_thr(r)) if not thr else math.isclose(_thr(r), float(thr[0])))
    ]
    assert len(sel) == int(rest.rsplit("(n=", 1)[1].rstrip(")"))
    return sel


def test_param_figure_one_line_per_tensor_with_the_right_points(psweep, pcollected):
    runs = pcollected.runs
    c = cells(runs)
    plot = param_grad_norms(runs, c, lr_summary(c), psweep.root)
    fig = plot.figure
    assert fig.get_suptitle() and fig.legends
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(PARAM_NAMES)
    colour_to_name = {to_rgb(col): n for n, col in plot.palette.items()}
    assert len(colour_to_name) == len(PARAM_NAMES)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2 * min(6, MAX_PARAM_CONFIGS)  # two rows, one column per setting
    seen_rows = Counter()
    for ax in axes:
        assert ax.get_xlabel() == "optimizer step" and ax.get_ylabel() and ax.get_yscale() == "log"
        value = "grad_norm" if "before clipping" in ax.get_ylabel() else "update_ratio"
        seen_rows[value] += 1
        rels = _panel_runs(psweep.truth, ax.get_title())
        raws = [r for r in (_readable(psweep.root, rel) for rel in rels) if r is not None]
        expected = {}
        for name in PARAM_NAMES:
            per_step: dict[float, list[float]] = {}
            for raw in raws:
                sub = raw[raw["name"] == name]
                for s, v in zip(sub["step"], sub[value], strict=True):
                    if np.isfinite(v) and v > 0:
                        per_step.setdefault(float(s), []).append(float(v))
            if per_step:
                expected[name] = sorted((s, float(np.median(v))) for s, v in per_step.items())
        lines = [ln for ln in ax.lines if len(ln.get_xdata())]
        drawn = {colour_to_name[to_rgb(ln.get_color())]: ln for ln in lines}
        assert len(drawn) == len(lines) == len(expected)  # one line per tensor
        for name, pts in expected.items():
            ln = drawn[name]
            np.testing.assert_allclose(ln.get_xdata(), [s for s, _ in pts])
            np.testing.assert_allclose(ln.get_ydata(), [v for _, v in pts], rtol=1e-12)
    assert seen_rows == {"grad_norm": len(axes) // 2, "update_ratio": len(axes) // 2}


def test_param_figure_hue_survives_string_names(psweep, pcollected, monkeypatch):
    """pandas 3 `str` dtype for names and labels: every line still gets its own colour."""
    module = sys.modules["seqbench.report.figures.param_grad_norms"]
    real = module.load_param_metrics

    def as_str(*a, **k):
        out = real(*a, **k)
        return out.assign(name=out["name"].astype("str"))

    monkeypatch.setattr(module, "load_param_metrics", as_str)
    runs = pcollected.runs
    c = cells(runs)
    plot = param_grad_norms(runs, c, lr_summary(c), psweep.root)
    for ax in (a for a in plot.figure.axes if a.get_visible()):
        colours = [to_rgb(ln.get_color()) for ln in ax.lines if len(ln.get_xdata())]
        assert len(colours) == len(set(colours)) == len(PARAM_NAMES)


def test_param_figure_skipped_without_param_files(sweep, collected, cells_df, stable_df):
    with pytest.raises(FigureSkipped, match="param_log_every"):
        param_grad_norms(collected.runs, cells_df, stable_df, sweep.root)
    # a runs table that does not say which runs have files: the loader finds none
    unknown = collected.runs.drop(columns="param_metrics_rows")
    with pytest.raises(FigureSkipped, match="param_log_every"):
        param_grad_norms(unknown, cells_df, stable_df, sweep.root)


def test_param_figure_without_row_counts_reads_the_files(psweep, pcollected):
    c = cells(pcollected.runs)
    known = param_grad_norms(pcollected.runs, c, lr_summary(c), psweep.root)
    runs = pcollected.runs.drop(columns="param_metrics_rows")
    plot = param_grad_norms(runs, c, lr_summary(c), psweep.root)
    assert set(plot.data["name"]) == set(PARAM_NAMES)
    pd.testing.assert_frame_equal(plot.data, known.data)


# --------------------------------------------------------------------------- documents


@pytest.fixture(scope="module")
def preport(psweep, tmp_path_factory):
    return make_report(psweep.root, tmp_path_factory.mktemp("preport"))


def test_documents_show_the_figure_and_the_damaged_run(preport):
    assert "param_grad_norms" in preport.figures and preport.skipped == {}
    assert preport.n_damaged == 1
    assert preport.n_completed + preport.n_diverged == 54  # the damaged run still counts
    md = preport.paths["report_md"].read_text()
    assert "### Per-layer gradient norms over time" in md
    assert "![Per-layer gradient norms over time](figures/param_grad_norms.png)" in md
    assert "_For each parameter tensor" in md
    assert f"## {DAMAGED_HEADING}" in md and "- `0001` — param_metrics.parquet" in md
    html = preport.paths["report_html"].read_text()
    assert '<figure id="param_grad_norms"><img src="data:image/png;base64,' in html
    assert DAMAGED_HEADING in html and "<code>0001</code>" in html


def test_documents_note_the_figure_when_absent(report):
    md = report.paths["report_md"].read_text()
    assert "**Per-layer gradient norms over time**: skipped: no run logged" in md
    assert "param_grad_norms.png" not in md and DAMAGED_HEADING not in md
