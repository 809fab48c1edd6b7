"""Reports of any task's metric: never mixed, always named, success rates with Wilson intervals."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgb

from seqbench.fake_runs import SYNTHETIC_TASKS, write_synthetic_sweep
from seqbench.report import make_report
from seqbench.report import render as R
from seqbench.report.collect import RUN_COLUMNS, collect_runs
from seqbench.report.figures.frontier import DIVERGED_STRIP_LABEL, diverged_strip_rows, frontier
from seqbench.report.figures.loss_curves import loss_curves
from seqbench.report.figures.quality_heatmap import metric_heatmap
from seqbench.report.lr_summary import lr_summary
from seqbench.report.stats import cell_index, cells
from seqbench.report.task_groups import MixedMetricsError, metric_of, split_by_task

SMALL = {"steps": 20, "eval_every": 5, "hydra": False}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A runs directory with a text task (bpc) and the adding problem (MSE, success criterion)."""
    root = tmp_path_factory.mktemp("mixed")
    chars = write_synthetic_sweep(root / "chars", seed=0, defects=False, **SMALL)
    adding = write_synthetic_sweep(  # only these runs logged per-parameter norms
        root / "adding", seed=1, defects=False, task="adding", seeds=(0, 1, 2, 3, 4),
        param_every=5, **SMALL
    )
    truth = pd.concat(
        [
            chars.truth.assign(run_dir="chars/" + chars.truth["run_dir"]),
            adding.truth.assign(run_dir="adding/" + adding.truth["run_dir"]),
        ],
        ignore_index=True,
    )
    collected = collect_runs(root)
    cells_df = cells(collected.runs)
    return root, truth, collected, cells_df


# --------------------------------------------------------------------------- collect


def test_runs_table_reads_metric_and_success(mixed):
    _, truth, collected, _ = mixed
    merged = truth.merge(collected.runs, on="run_dir", suffixes=("_t", ""))
    assert len(merged) == len(truth) == len(collected.runs)
    for col in ("metric", "metric_unit"):
        assert (merged[col].astype(object) == merged[f"{col}_t"].astype(object)).all(), col
    assert (merged["metric_lower_is_better"] == merged["metric_lower_is_better_t"]).all()
    np.testing.assert_allclose(
        merged["final_val_metric"].to_numpy(float),
        pd.to_numeric(merged["final_val_metric_t"]).to_numpy(float),
        equal_nan=True,
    )
    got = merged["task_success"].astype(object).map(lambda v: None if v is None else bool(v))
    assert got.tolist() == merged["task_success_t"].astype(object).tolist()
    adding = merged[merged["task.name"] == "adding"]
    assert set(adding["metric"]) == {"mse"} and adding["final_val_bpc"].isna().all()
    # a success verdict exactly where an adding run completed; the numbers behind it as JSON
    done = adding["status"] == "completed"
    assert adding.loc[done, "task_success"].notna().all()
    assert adding.loc[~done, "task_success"].isna().all()
    tm = json.loads(adding.loc[done, "task_metrics"].iloc[0])
    assert set(tm) == {"task_success", "mse", "n_sequences"}
    chars = merged[merged["task.name"] == "synthetic-chars"]
    assert chars["task_success"].isna().all() and set(chars["metric"]) == {"bpc"}
    assert {"metric", "final_val_metric", "task_success"} <= set(RUN_COLUMNS)


def test_old_summaries_without_metric_keys_read_as_bpc(tmp_path):
    kw = {"seeds": (0, 1), "defects": False, **SMALL}
    new = write_synthetic_sweep(tmp_path / "new", **kw)
    old = write_synthetic_sweep(tmp_path / "old", legacy=True, **kw)
    data = json.loads((old.root / "0000" / "summary.json").read_text())
    assert not {"metric", "final_val_metric", "best_val_metric", "task_success"} & set(data)
    runs = collect_runs(old.root).runs
    assert set(runs["metric"]) == {"bpc"} and set(runs["metric_unit"]) == {"bits/char"}
    assert runs["metric_lower_is_better"].all() and runs["task_success"].isna().all()
    np.testing.assert_array_equal(runs["final_val_metric"], runs["final_val_bpc"])
    np.testing.assert_array_equal(runs["best_val_metric"], runs["best_val_bpc"])
    # the same runs in the old and the new format give the same cells, but for the
    # outcome counts: an old summary has no outcome until the report derives one
    # (seqbench.report.outcomes), and cells() never guesses it
    a, b = cells(runs), cells(collect_runs(new.root).runs)
    outcome_cols = [c for c in a.columns if c.startswith(("n_trained", "trained_rate",
                                                          "n_no_progress", "no_progress_rate",
                                                          "baseline_val_metric"))]
    pd.testing.assert_frame_equal(a.drop(columns=outcome_cols), b.drop(columns=outcome_cols))
    assert (a["n_trained"] == 0).all() and (a["n_no_progress"] == 0).all()
    assert b["n_trained"].sum() > 0
    assert a["n_success"].isna().all() and a["success_rate"].isna().all()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"metric": "mse"}, "metric is not null or"),
        ({"metric": {"name": "mse", "unit": "u"}}, "metric is not null or"),
        ({"metric": {"name": "", "unit": "u", "lower_is_better": True}}, "metric"),
        ({"task_success": 1}, "task_success"),
        ({"task_metrics": [1]}, "task_metrics"),
        ({"final_val_metric": "0.1"}, "final_val_metric"),
    ],
)
def test_malformed_metric_keys_are_corrupt(tmp_path, changes, reason):
    sw = write_synthetic_sweep(
        tmp_path / "r", optimizers=("sgd",), lrs=(0.1,), clips=(("none", None),), seeds=(0, 1),
        task="adding", defects=False, **SMALL,
    )
    path = sw.root / "0000" / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    res = collect_runs(sw.root)
    assert list(res.corrupt["run_dir"]) == ["0000"] and reason in res.corrupt["reason"].iloc[0]


# --------------------------------------------------------------------------- cells


def test_cells_of_a_mixed_directory_never_mix_metrics(mixed):
    _, truth, collected, cells_df = mixed
    assert set(cells_df["metric"]) == {"bpc", "mse"}
    runs = collected.runs.assign(cell=cell_index(collected.runs))
    per_cell = runs.groupby("cell")["metric"].nunique()
    assert (per_cell == 1).all()
    # the mean of every cell, recomputed from what was written (completed runs only)
    t = truth[truth["status"] == "completed"].copy()
    t["thr"] = t["clip.max_norm"].fillna(t["clip.clip_value"]).fillna(-1.0)
    keys = ["task.name", "optim.name", "optim.lr", "clip.method", "thr"]
    exp = t.groupby(keys)["final_val_metric"].mean()
    got = cells_df.assign(thr=cells_df["threshold"].fillna(-1.0)).set_index(keys)
    np.testing.assert_allclose(
        got.loc[exp.index, "final_val_metric_mean"].to_numpy(float), exp.to_numpy(float)
    )
    adding = cells_df[cells_df["task.name"] == "adding"]
    assert (adding["metric"] == "mse").all() and adding["final_val_bpc_mean"].isna().all()
    chars = cells_df[cells_df["task.name"] == "synthetic-chars"]
    np.testing.assert_array_equal(chars["final_val_metric_mean"], chars["final_val_bpc_mean"])
    # tasks lead the table and are not interleaved
    assert list(dict.fromkeys(cells_df["task.name"])) == ["adding", "synthetic-chars"]


def test_same_config_different_metric_are_different_cells():
    base = {c: math.nan for c in RUN_COLUMNS}
    common = {"status": "completed", "divergence": None, "optim.name": "sgd", "optim.lr": 0.1,
              "clip.method": "none", "task.name": "t", "seed": 0}
    rows = [
        {**base, **common, "run_dir": "a", "metric": "mse", "metric_unit": "u",
         "metric_lower_is_better": True, "final_val_metric": 0.01},
        {**base, **common, "run_dir": "b", "seed": 1, "metric": "error_rate", "metric_unit": "f",
         "metric_lower_is_better": True, "final_val_metric": 0.5},
        {**base, **common, "run_dir": "c", "seed": 2, "final_val_bpc": 1.5},  # old: bpc
    ]
    c = cells(pd.DataFrame(rows))
    assert len(c) == 3
    assert dict(zip(c["metric"], c["final_val_metric_mean"], strict=True)) == {
        "mse": 0.01, "error_rate": 0.5, "bpc": 1.5
    }
    with pytest.raises(MixedMetricsError, match="several metrics"):
        metric_of(c)
    with pytest.raises(MixedMetricsError):
        metric_heatmap(c)
    assert len(split_by_task(c)) == 3


def _wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def test_success_rate_and_wilson_interval_by_hand():
    base = {c: math.nan for c in RUN_COLUMNS}
    adding = {"task.name": "adding", "metric": "mse", "metric_unit": "u",
              "metric_lower_is_better": True, "optim.name": "sgd", "clip.method": "none",
              "divergence": None}

    def run(i, lr, status, success, **kw):
        return {**base, **adding, "run_dir": f"r{i}", "seed": i, "optim.lr": lr,
                "status": status, "task_success": success, **kw}

    rows = [
        # lr 1: three successes, one failure, one divergence -> 3 of 5
        run(0, 1.0, "completed", True, final_val_metric=0.001),
        run(1, 1.0, "completed", True, final_val_metric=0.002),
        run(2, 1.0, "completed", True, final_val_metric=0.003),
        run(3, 1.0, "completed", False, final_val_metric=0.1),
        run(4, 1.0, "diverged", None, divergence="nonfinite"),
        # lr 2: one completed run was never checked (counts nowhere), one still running
        run(5, 2.0, "completed", None, final_val_metric=0.004),
        run(6, 2.0, "completed", False, final_val_metric=0.2),
        run(7, 2.0, "running", None),
        # lr 4: every seed diverged -> 0 of 2, not "no information"
        run(8, 4.0, "diverged", None, divergence="exploded"),
        run(9, 4.0, "diverged", None, divergence="exploded"),
        # a text task in the same table: no criterion, no success columns
        {**base, "task.name": "chars", "optim.name": "sgd", "clip.method": "none",
         "optim.lr": 1.0, "status": "completed", "run_dir": "t0", "seed": 0,
         "final_val_bpc": 1.5},
    ]
    c = cells(pd.DataFrame(rows)).set_index(["task.name", "optim.lr"])
    a = c.loc[("adding", 1.0)]
    assert (a["n_success"], a["n_success_trials"], a["success_rate"]) == (3, 5, 0.6)
    assert (a["success_rate_lo"], a["success_rate_hi"]) == pytest.approx(_wilson(3, 5), abs=1e-12)
    assert (a["success_rate_lo"], a["success_rate_hi"]) == pytest.approx(
        (0.230724, 0.882379), abs=1e-6  # the published 95% Wilson interval for 3/5
    )
    b = c.loc[("adding", 2.0)]
    assert (b["n"], b["n_incomplete"], b["n_success"], b["n_success_trials"]) == (2, 1, 0, 1)
    assert b["success_rate"] == 0.0 and b["success_rate_hi"] == pytest.approx(_wilson(0, 1)[1])
    d = c.loc[("adding", 4.0)]
    assert (d["n_success"], d["n_success_trials"], d["success_rate_lo"]) == (0, 2, 0.0)
    assert d["success_rate_hi"] == pytest.approx(_wilson(0, 2)[1], abs=1e-12)
    t = c.loc[("chars", 1.0)]
    assert pd.isna(t["n_success"]) and pd.isna(t["n_success_trials"])
    assert math.isnan(t["success_rate"]) and math.isnan(t["success_rate_lo"])
    assert t["metric"] == "bpc" and t["final_val_metric_mean"] == 1.5
    # the sentence states the best cell's k/n and its interval, and the total
    cells_a = cells(pd.DataFrame(rows[:-1]))
    text = R._success_sentence(cells_a, split_by_task(cells_a)[0][0])
    lo, hi = _wilson(3, 5)
    assert text.startswith("Task adding met its success criterion in 3 of 5 runs with SGD, lr 1,")
    assert f"95% Wilson interval {lo:.2f}–{hi:.2f}" in text
    assert "3 of 8 runs met it" in text


# --------------------------------------------------------------------------- figures


@pytest.fixture(scope="module")
def adding_tables(mixed):
    root, _, collected, cells_df = mixed
    groups = {g.task: (g, parts) for g, parts in split_by_task(collected.runs, cells_df)}
    group, (runs, c) = groups["adding"]
    return root, group, runs, c, lr_summary(c)


def _all_text(fig) -> str:
    parts = [fig.get_suptitle()]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return " | ".join(parts)


def test_quality_heatmap_names_the_metric(adding_tables):
    _, group, _, c, _ = adding_tables
    plot = metric_heatmap(c, group.metric)
    cbar = plot.figure.axes[-1].get_ylabel()
    assert cbar.startswith("final validation MSE (squared target units; lower is better")
    assert "mean squared error" in plot.figure.get_suptitle()
    assert "bpc" not in _all_text(plot.figure) and "bits" not in _all_text(plot.figure)
    # lower is better: the best (smallest) value is drawn lighter than the worst
    vals = c["final_val_metric_mean"].dropna()
    mesh = next(ax.collections[0] for ax in plot.figure.axes if ax.get_title())
    rgba = mesh.cmap(mesh.norm(np.array([vals.min(), vals.max()])))
    assert rgba[0][:3].sum() > rgba[1][:3].sum()
    # squares show the mean (2 significant digits below 1) and n; never 0.00
    texts = [t.get_text() for ax in plot.figure.axes for t in ax.texts]
    assert "0.00\n" not in "".join(texts) and len(texts) == int((c["n_finished"] > 0).sum())


def test_higher_is_better_flips_colours_and_words(tmp_path):
    sw = write_synthetic_sweep(tmp_path / "r", task="copy", seeds=(0, 1), defects=False, **SMALL)
    res = collect_runs(sw.root)
    c = cells(res.runs)
    plot = metric_heatmap(c)
    assert "higher is better" in plot.figure.axes[-1].get_ylabel()
    vals = c["final_val_metric_mean"].dropna()
    mesh = next(ax.collections[0] for ax in plot.figure.axes if ax.get_title())
    rgba = mesh.cmap(mesh.norm(np.array([vals.max(), vals.min()])))
    assert rgba[0][:3].sum() > rgba[1][:3].sum()  # the best (largest) is the lightest
    sentence = R._quality_sentence(c, int((res.runs["status"] == "completed").sum()), metric_of(c))
    best = c.loc[c["final_val_metric_mean"].idxmax()]
    assert sentence.startswith("The highest mean final validation accuracy was")
    assert f"lr {best['optim.lr']:g}" in sentence
    assert "Upper left is better" in frontier(c).caption


def test_loss_curves_units_follow_the_task(adding_tables, sweep, collected, cells_df, stable_df):
    root, group, runs, c, stable = adding_tables
    plot = loss_curves(runs, c, stable, root, group.metric)
    ylabels = {ax.get_ylabel() for ax in plot.figure.axes}
    assert "training loss (task units)" in ylabels
    assert "validation MSE (squared target units)" in ylabels
    assert not any("nats" in y for y in ylabels)
    text = loss_curves(collected.runs, cells_df, stable_df, sweep.root)
    assert {ax.get_ylabel() for ax in text.figure.axes} == {
        "training loss (nats/char)", "validation loss (nats/char)"
    }


def _strip_axes(fig):
    return [ax for ax in fig.axes if any(DIVERGED_STRIP_LABEL == t.get_text() for t in ax.texts)]


def test_frontier_draws_configurations_where_every_seed_diverged(adding_tables):
    _, group, _, c, _ = adding_tables
    gone = c[(c["n"] > 0) & (c["n_diverged"] == c["n"])]
    assert len(gone) >= 2  # the fixture must exercise the strip
    plot = frontier(c, group.metric)
    ax = plot.figure.axes[0]
    assert ax.get_ylabel().startswith("final validation MSE, mean of finished seeds")
    assert "squared target units; lower is better" in ax.get_ylabel()
    (strip,) = _strip_axes(plot.figure)
    colls = [col for col in strip.collections if isinstance(col, PathCollection)]
    offsets = np.concatenate([col.get_offsets() for col in colls])
    assert len(offsets) == len(gone)
    np.testing.assert_array_equal(offsets[:, 0], 1.0)  # at their divergence rate
    # hollow: no face, an edge in the clip method's colour
    edges = set()
    for col in colls:
        assert all(fc[3] == 0 for fc in col.get_facecolors())
        edges |= {to_rgb(tuple(e)) for e in col.get_edgecolors()}
    assert edges == {to_rgb(plot.palette[m]) for m in gone["clip.method"]}
    # every setting's row names its learning rates
    rows = [t.get_text() for t in strip.texts if t.get_text() != DIVERGED_STRIP_LABEL]
    for rec in gone.to_dict("records"):
        opt = {"sgd": "SGD", "adam": "Adam"}[rec["optim.name"]]
        assert any(r.startswith(opt) and f"{rec['optim.lr']:g}" in r for r in rows), rec
    assert f"the {len(gone)} configuration(s) where every seed diverged" in plot.caption


def test_frontier_strip_rows_are_capped_but_every_point_is_drawn():
    gone = pd.DataFrame(
        {
            "optimizer": ["SGD"] * 12,
            "clip_method": ["norm"] * 12,
            "threshold": [float(i) for i in range(12)],
            "optim.lr": [1.0] * 12,
        }
    )
    labels, rows = diverged_strip_rows(gone, [], max_rows=5)
    assert len(labels) == 5 and labels[-1] == "8 more settings"
    assert len(rows) == 12 and rows.max() == 4 and list(rows[:4]) == [0, 1, 2, 3]


def test_frontier_without_total_divergence_has_no_strip(cells_df):
    some = cells_df[~((cells_df["n"] > 0) & (cells_df["n_diverged"] == cells_df["n"]))]
    plot = frontier(some)
    assert _strip_axes(plot.figure) == [] and len(plot.figure.axes) == 1


# --------------------------------------------------------------------------- documents


@pytest.fixture(scope="module")
def mixed_report(mixed, tmp_path_factory):
    root = mixed[0]
    out = tmp_path_factory.mktemp("mixed_report")
    (out / "figures").mkdir()
    (out / "figures" / "frontier.png").write_bytes(b"stale")  # from an earlier single-task render
    (out / "figures" / "notes.png").write_bytes(b"mine")  # not a report figure: kept
    return make_report(root, out)


def test_mixed_report_has_one_set_of_figures_per_task(mixed_report):
    assert set(mixed_report.figures) == {
        f"{kind}-{task}"
        for task in ("adding", "synthetic_chars")  # task names made safe for file names
        for kind in ("lr_curves", "cost_to_target", "divergence_heatmap", "loss_curves",
                     "grad_norms", "frontier")
    } | {"mse_heatmap-adding", "bpc_heatmap-synthetic_chars", "param_grad_norms-adding"}
    fig_dir = mixed_report.out_dir / "figures"
    assert not (fig_dir / "frontier.png").exists() and (fig_dir / "notes.png").exists()
    # the text runs logged no per-parameter norms: a note in their section, no figure
    assert set(mixed_report.skipped) == {"param_grad_norms-synthetic_chars"}


def _sections(md: str) -> dict[str, str]:
    parts = re.split(r"^## Task ", md, flags=re.M)[1:]
    return {p.split(":", 1)[0]: p.split("## Incomplete", 1)[0] for p in parts}


def test_mixed_report_sections_carry_their_metric(mixed_report, mixed):
    _, _, _, cells_df = mixed
    md = mixed_report.paths["report_md"].read_text(encoding="utf-8")
    assert "The runs belong to 2 tasks" in md
    sec = _sections(md)
    assert set(sec) == {"adding", "synthetic-chars"}
    add, txt = sec["adding"], sec["synthetic-chars"]
    assert add.startswith("adding: MSE (squared target units; lower is better)")
    assert "| final val MSE [95% CI] |" in add and "bpc" not in add.lower().replace("bpc_", "")
    assert f"| {R.SUCCESS_HEADER} |" in add and R.SUCCESS_HEADER not in txt
    assert "| final val bpc [95% CI] |" in txt and "MSE" not in txt
    assert "The lowest mean final validation MSE was" in add
    assert "The lowest mean final validation bpc was" in txt
    # the success sentence's totals are the cells table's
    a = cells_df[cells_df["task.name"] == "adding"]
    k, n = int(a["n_success"].sum()), int(a["n_success_trials"].sum())
    assert f"{k} of {n} runs met it" in add
    # each cells table row shows k/n where the task has a criterion
    table = add.split("### Configurations", 1)[1].split("### Figures", 1)[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "optimizer" not in ln]
    assert len(rows) == len(a)
    assert all(re.search(r"\| \d+/\d+ \(\d\.\d\d \[", r) for r in rows)
    html = mixed_report.paths["report_html"].read_text(encoding="utf-8")
    assert "<h2 id=\"task-adding\">Task adding: MSE (squared target units; lower is better)" in html
    assert "final val MSE [95% CI]" in html


def test_mixed_cells_csv_is_self_explanatory(mixed_report):
    c = pd.read_csv(mixed_report.paths["cells_csv"])
    cols = list(c.columns)
    for col in ("metric", "metric_unit", "metric_lower_is_better", "final_val_metric_mean",
                "n_success", "n_success_trials", "success_rate", "success_rate_lo"):
        assert col in cols
    assert cols.index("metric") < cols.index("final_val_metric_mean")
    assert set(zip(c["task.name"], c["metric"])) == {("adding", "mse"), ("synthetic-chars", "bpc")}
    # success counts are whole numbers where the task has a criterion, empty elsewhere
    raw = pd.read_csv(mixed_report.paths["cells_csv"], dtype=str, keep_default_na=False)
    adding = raw["task.name"] == "adding"
    for col in ("n_success", "n_success_trials"):
        assert raw.loc[adding, col].str.fullmatch(r"\d+").all(), col
        assert (raw.loc[~adding, col] == "").all(), col


def test_synthetic_tasks_follow_their_contract(mixed):
    root, truth, _, _ = mixed
    spec = SYNTHETIC_TASKS["adding"]
    add = truth[truth["task.name"] == "adding"]
    done = add[add["status"] == "completed"]
    assert (done["task_success"] == (done["final_val_metric"] < spec.success_at)).all()
    assert 0 < done["task_success"].sum() < len(done)  # both outcomes occur
    import pyarrow.parquet as pq

    table = pq.read_table(root / "adding" / "0000" / "metrics.parquet")
    assert table.column("val_bpc").null_count == table.num_rows
    assert table.column("val_metric").null_count < table.num_rows
    with pytest.raises(ValueError, match="legacy"):
        write_synthetic_sweep(root / "x", task="adding", legacy=True)
    with pytest.raises(ValueError, match="not one of"):
        write_synthetic_sweep(root / "y", task="nope")


_OUTCOMES = st.sampled_from(
    [("completed", True), ("completed", False), ("completed", None), ("diverged", None),
     ("running", None)]
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.1, 1.0]), _OUTCOMES), min_size=1, max_size=25))
def test_success_counts_match_an_independent_count(runs):
    base = {c: math.nan for c in RUN_COLUMNS}
    rows = [
        {**base, "run_dir": f"r{i}", "seed": i, "task.name": "adding", "metric": "mse",
         "metric_unit": "u", "metric_lower_is_better": True, "optim.lr": lr, "status": status,
         "divergence": "exploded" if status == "diverged" else None, "task_success": ok}
        for i, (lr, (status, ok)) in enumerate(runs)
    ]
    c = cells(pd.DataFrame(rows)).set_index("optim.lr")
    criterion = any(ok is not None for _, (_, ok) in runs)
    for lr in {lr for lr, _ in runs}:
        mine = [o for r, o in runs if r == lr]
        rec = c.loc[lr]
        if not criterion:
            assert pd.isna(rec["n_success"]) and math.isnan(rec["success_rate"])
            continue
        k = sum(1 for s, ok in mine if s == "completed" and ok is True)
        n = sum(1 for s, ok in mine if (s == "completed" and ok is not None) or s == "diverged")
        assert (rec["n_success"], rec["n_success_trials"]) == (k, n)
        if n == 0:
            assert math.isnan(rec["success_rate"]) and math.isnan(rec["success_rate_lo"])
        else:
            assert rec["success_rate"] == pytest.approx(k / n)
            assert (rec["success_rate_lo"], rec["success_rate_hi"]) == pytest.approx(
                _wilson(k, n), abs=1e-9
            )
            assert rec["success_rate_lo"] <= k / n <= rec["success_rate_hi"]
