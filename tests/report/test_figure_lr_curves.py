"""The first figure: final validation metric against learning rate, from hand-made cells."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from seqbench.fake_runs import write_synthetic_sweep
from seqbench.report import _format as fmt
from seqbench.report.collect import collect_runs
from seqbench.report.figures import registry
from seqbench.report.figures._common import FigureSkipped, Plot, clip_palette
from seqbench.report.figures.driver import make_figures
from seqbench.report.figures.lr_curves import DIVERGED_LEGEND, lr_curves
from seqbench.report.figures.registry import FigureInput, figure_name, figure_title, kinds
from seqbench.report.stats import cells
from seqbench.report.task_groups import MetricInfo
from seqbench.rundir import BPC

LRS = {"sgd": (0.1, 1.0, 10.0), "adam": (0.001, 0.01)}
CLIPS = (("none", math.nan), ("value", 0.5), ("norm", 1.0))
BASELINE = 4.81
#: (optimizer, method, lr) -> runs that diverged out of 3
DIVERGED = {("sgd", "none", 10.0): 3, ("sgd", "norm", 10.0): 1, ("adam", "none", 0.01): 2}


def _mean(opt: str, method: str, lr: float) -> float:
    """A distinct value per cell, so a mix-up between cells cannot go unnoticed."""
    return round(
        4.0
        - 0.3 * math.log10(lr)
        + {"none": 0.0, "value": 0.05, "norm": 0.1}[method]
        + (0.05 if opt == "adam" else 0.0),
        6,
    )


def make_cells(baseline: float | None = BASELINE, **extra: object) -> pd.DataFrame:
    rows = []
    for opt, lrs in LRS.items():
        for method, thr in CLIPS:
            for lr in lrs:
                div = DIVERGED.get((opt, method, lr), 0)
                fin = 3 - div
                mean = _mean(opt, method, lr) if fin else math.nan
                half = 0.1 if fin >= 2 else math.nan
                rows.append(
                    {
                        "task.name": "text",
                        "optim.name": opt,
                        "clip.method": method,
                        "threshold": thr,
                        "optim.lr": lr,
                        **extra,
                        "n": 3,
                        "n_incomplete": 0,
                        "n_finished": fin,
                        "n_diverged": div,
                        "divergence_rate": div / 3,
                        "metric": "bpc",
                        "metric_unit": "bits/char",
                        "metric_lower_is_better": True,
                        "final_val_metric_mean": mean,
                        "final_val_metric_lo": mean - half,
                        "final_val_metric_hi": mean + half,
                        "baseline_val_metric": baseline,
                        "n_trained": fin,
                        "n_no_progress": 0,
                    }
                )
    out = pd.DataFrame(rows)
    if baseline is None:
        out = out.drop(columns="baseline_val_metric")
    return out


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]


def _lines(ax, prefix: str) -> dict[str, object]:
    return {
        ln.get_gid().split(":", 1)[1]: ln
        for ln in ax.lines
        if (ln.get_gid() or "").startswith(prefix + ":")
    }


def _texts(ax, gid: str) -> list:
    return [t for t in ax.texts if t.get_gid() == gid]


def _axes_y(ax, y: float) -> float:
    """Where data value ``y`` sits in axes fraction (0 bottom, 1 top)."""
    return float(ax.transAxes.inverted().transform(ax.transData.transform((1.0, y)))[1])


@pytest.fixture(scope="module")
def plot():
    return lr_curves(make_cells())


def test_registered_first_and_titled_with_the_metric():
    assert kinds()[0] == registry.kinds()[0] == "lr_curves"
    assert registry.get("lr_curves").build.__module__ == "seqbench.report.figures.lr_curves"
    assert (
        figure_title("lr_curves", BPC) == "Final validation bits per character vs learning rate"
    )
    assert figure_name("lr_curves") == "lr_curves"


def test_one_panel_per_optimizer_one_line_per_clip_setting(plot):
    cells_df = make_cells()
    panels = _panels(plot.figure)
    assert [ax.get_title() for ax in panels] == ["Adam", "SGD"]
    for ax in panels:
        opt = ax.get_title().lower()
        sub = cells_df[cells_df["optim.name"] == opt]
        lines = _lines(ax, "mean")
        assert set(lines) == {"none", "value 0.5", "norm 1"}
        assert ax.get_xscale() == "log"
        assert list(ax.get_xticks()) == list(LRS[opt])
        assert [t.get_text() for t in ax.get_xticklabels()] == [fmt.lr(v) for v in LRS[opt]]
        for label, ln in lines.items():
            method = label.split()[0]
            rows = sub[sub["clip.method"] == method].sort_values("optim.lr")
            x, y = np.asarray(ln.get_xdata(), float), np.asarray(ln.get_ydata(), float)
            assert list(x) == list(rows["optim.lr"])
            expected = rows["final_val_metric_mean"].to_numpy(float)
            assert np.array_equal(np.isnan(y), np.isnan(expected))
            assert np.allclose(y[~np.isnan(y)], expected[~np.isnan(expected)])
            assert ln.get_linestyle() == "-"
    # every panel shares the y axis, and colours follow the clip methods of other figures
    assert panels[0].get_ylim() == panels[1].get_ylim()
    palette = clip_palette(["none", "value", "norm"])
    assert np.allclose(plot.palette["none"], palette["none"])


def test_fully_diverged_cell_has_no_point_only_a_counted_top_edge_marker(plot):
    sgd = _panels(plot.figure)[1]
    none = _lines(sgd, "mean")["none"]
    x, y = np.asarray(none.get_xdata(), float), np.asarray(none.get_ydata(), float)
    assert math.isnan(y[list(x).index(10.0)])  # no value: the line breaks
    # no n label at the fully diverged cell (lr 10 holds only norm 1 and value 0.5 points)
    n_at_10 = [t for t in _texts(sgd, "n") if t.xy[0] == 10.0]
    assert {t.get_text() for t in n_at_10} <= {"n=2", "n=3"}
    marker = _lines(sgd, "diverged")["none"]
    # drawn in axes coordinates along y (x is the lr): never at a metric value
    assert marker.get_transform() == sgd.get_xaxis_transform()
    assert list(marker.get_xdata()) == [10.0]
    top_of_data = max(_axes_y(sgd, v) for v in make_cells()["final_val_metric_hi"].dropna())
    assert all(top_of_data < yy <= 1.0 for yy in marker.get_ydata())
    counts = {
        t.get_gid(): t.get_text() for t in sgd.texts if "diverged_count" in (t.get_gid() or "")
    }
    assert counts == {"diverged_count:none": "3/3", "diverged_count:norm 1": "1/3"}
    # partly diverged: a point of the completed runs *and* the count
    norm = _lines(sgd, "mean")["norm 1"]
    assert np.isclose(norm.get_ydata()[-1], _mean("sgd", "norm", 10.0))
    # two settings diverged at lr 10: stacked, not on top of each other
    ys = [_lines(sgd, "diverged")[k].get_ydata()[0] for k in ("none", "norm 1")]
    assert ys[0] != ys[1]
    adam_counts = [
        t.get_text() for t in _panels(plot.figure)[0].texts if t.get_gid() == "diverged_count:none"
    ]
    assert adam_counts == ["2/3"]
    legend = [t.get_text() for t in plot.figure.legends[0].get_texts()]
    assert DIVERGED_LEGEND in legend
    assert "diverged" in plot.caption and "not values" in plot.caption


def test_baseline_is_a_dashed_line_at_its_value(plot):
    for ax in _panels(plot.figure):
        base = [ln for ln in ax.lines if ln.get_gid() == "baseline"]
        assert len(base) == 1
        assert base[0].get_linestyle() == "--"
        assert np.allclose(base[0].get_ydata(), BASELINE)
    legend = [t.get_text() for t in plot.figure.legends[0].get_texts()]
    assert "baseline (unigram)\n4.81 bits/char" in legend
    assert "baseline (unigram; 4.81 bits/char)" in plot.caption
    assert "below it beat the baseline" in plot.caption


def test_every_point_shows_its_n(plot):
    cells_df = make_cells()
    for ax in _panels(plot.figure):
        opt = ax.get_title().lower()
        sub = cells_df[(cells_df["optim.name"] == opt) & cells_df["final_val_metric_mean"].notna()]
        labels = _texts(ax, "n")
        assert labels and all(t.get_fontsize() < 8 for t in labels)
        for lr, at in sub.groupby("optim.lr"):
            here = [t for t in labels if t.xy[0] == lr]
            # one label per point; points that coincide with the same n may share one
            assert {t.get_text() for t in here} == {f"n={k}" for k in at["n_finished"]}
            assert 1 <= len(here) <= len(at)
    data = plot.data
    assert int(data["point"].sum()) == int(cells_df["final_val_metric_mean"].notna().sum())
    assert "labelled with its n (the completed runs in the mean" in plot.caption
    assert "95% t interval" in plot.caption


def test_error_bars_are_the_t_intervals(plot):
    sgd = _panels(plot.figure)[1]
    segs = [
        seg
        for coll in sgd.collections
        if hasattr(coll, "get_segments")
        for seg in coll.get_segments()
    ]
    cells_df = make_cells()
    expected = cells_df[(cells_df["optim.name"] == "sgd") & cells_df["final_val_metric_lo"].notna()]
    assert len(segs) == len(expected)
    got = sorted((round(s[0][0], 6), round(s[0][1], 6), round(s[1][1], 6)) for s in segs)
    want = sorted(
        (lr, round(lo, 6), round(hi, 6))
        for lr, lo, hi in zip(
            expected["optim.lr"],
            expected["final_val_metric_lo"],
            expected["final_val_metric_hi"],
            strict=True,
        )
    )
    assert got == want


def test_without_a_baseline_no_line_and_the_caption_says_so():
    for table in (make_cells(baseline=None), make_cells(baseline=math.nan)):
        plot = lr_curves(table)
        for ax in _panels(plot.figure):
            assert not [ln for ln in ax.lines if ln.get_gid() == "baseline"]
            assert not [ln for ln in ax.lines if ln.get_linestyle() == "--"]
        assert "No baseline is drawn" in plot.caption


def test_higher_is_better_turns_the_words():
    table = make_cells().assign(
        metric="accuracy",
        metric_unit="fraction",
        metric_lower_is_better=False,
        baseline_val_metric=0.2,
    )
    plot = lr_curves(table, MetricInfo("accuracy", "fraction", False))
    assert "above it beat the baseline" in plot.caption
    assert "higher is better" in _panels(plot.figure)[0].get_ylabel()
    legend = [t.get_text() for t in plot.figure.legends[0].get_texts()]
    assert "baseline\n0.2 fraction" in legend
    assert "input-independent baseline (0.2 fraction)" in plot.caption


def test_a_baseline_per_task_configuration_is_drawn_in_its_own_panels():
    short = make_cells(**{"task.seq_len": 16}).assign(baseline_val_metric=4.9)
    long = make_cells(**{"task.seq_len": 64}).assign(baseline_val_metric=4.7)
    plot = lr_curves(pd.concat([short, long], ignore_index=True))
    for ax in _panels(plot.figure):
        want = 4.9 if ax.get_title().endswith("=16") else 4.7
        base = [ln for ln in ax.lines if ln.get_gid() == "baseline"]
        assert [float(ln.get_ydata()[0]) for ln in base] == [want]
        assert f"baseline {want}" in [t.get_text() for t in ax.texts]
    assert "2 values, one per task configuration" in plot.caption


def test_other_config_keys_become_panels_never_averaged():
    small = make_cells(**{"model.hidden_size": 32})
    big = make_cells(**{"model.hidden_size": 256})
    big["final_val_metric_mean"] -= 0.5
    big["final_val_metric_lo"] -= 0.5
    big["final_val_metric_hi"] -= 0.5
    both = pd.concat([small, big], ignore_index=True)
    plot = lr_curves(both)
    panels = _panels(plot.figure)
    # each optimizer a row of its own, its settings across
    assert [ax.get_title() for ax in panels] == [
        "Adam · model.hidden_size=32",
        "Adam · model.hidden_size=256",
        "SGD · model.hidden_size=32",
        "SGD · model.hidden_size=256",
    ]
    for ax in panels:
        opt, size = ax.get_title().split(" · ")
        table = {"32": small, "256": big}[size.split("=")[1]]
        for label, ln in _lines(ax, "mean").items():
            rows = table[
                (table["optim.name"] == opt.lower()) & (table["clip.method"] == label.split()[0])
            ].sort_values("optim.lr")
            y = np.asarray(ln.get_ydata(), float)
            ok = ~np.isnan(y)
            assert np.allclose(y[ok], rows["final_val_metric_mean"].to_numpy(float)[ok])
    # the statistics columns (baseline, outcome counts) are never facets
    assert "model.hidden_size" in plot.data.columns
    assert "n_trained" not in plot.data.columns


def test_configurations_no_facet_tells_apart_get_lines_of_their_own():
    table = make_cells()
    twin = table[table["optim.name"] == "sgd"].copy()
    for col in ("final_val_metric_mean", "final_val_metric_lo", "final_val_metric_hi"):
        twin[col] -= 0.5
    plot = lr_curves(pd.concat([table, twin], ignore_index=True))
    sgd = _panels(plot.figure)[1]
    lines = _lines(sgd, "mean")
    assert {"norm 1", "norm 1 #2"} <= set(lines)
    assert np.allclose(
        np.asarray(lines["norm 1 #2"].get_ydata(), float) - lines["norm 1"].get_ydata(),
        -0.5,
        equal_nan=True,
    )


def test_every_run_diverged_still_draws_the_counts():
    table = make_cells().assign(
        n_finished=0,
        n_diverged=3,
        final_val_metric_mean=math.nan,
        final_val_metric_lo=math.nan,
        final_val_metric_hi=math.nan,
        baseline_val_metric=math.nan,
    )
    plot = lr_curves(table)
    for ax in _panels(plot.figure):
        assert not _texts(ax, "n")
        assert all(
            t.get_text() == "3/3" for t in ax.texts if "diverged_count" in (t.get_gid() or "")
        )
        assert len(_lines(ax, "diverged")) == 3


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        (make_cells().iloc[0:0], "no configuration has any run"),
        (make_cells().drop(columns="optim.lr"), "no optim.lr"),
        (make_cells().assign(n=0, n_finished=0, n_diverged=0), "verdict"),
    ],
)
def test_degenerate_input_is_skipped_with_a_reason(table, reason):
    with pytest.raises(FigureSkipped, match=reason):
        lr_curves(table)


def test_two_tasks_make_two_figures(tmp_path, monkeypatch):
    small = {
        "optimizers": ("sgd",),
        "lrs": (0.1, 8.0),
        "clips": (("none", None), ("norm", 1.0)),
        "seeds": (0, 1),
        "steps": 12,
        "eval_every": 4,
        "defects": False,
        "hydra": False,
    }
    root = tmp_path / "runs"
    write_synthetic_sweep(root / "chars", seed=0, **small)
    write_synthetic_sweep(root / "adding", seed=1, task="adding", **small)
    runs = collect_runs(root).runs
    c = cells(runs)
    # the baselines as the stats would carry them (hand-set: synthetic runs may lack them)
    c["baseline_val_metric"] = np.where(c["metric"] == "bpc", 4.5, 0.167)
    drawn: list[tuple[FigureInput, Plot]] = []
    spec = registry.get("lr_curves")

    def spy(inp):
        out = spec.build(inp)
        drawn.append((inp, out))
        return out

    monkeypatch.setitem(registry._FIGURES, "lr_curves", dataclasses.replace(spec, build=spy))
    out = make_figures(runs, c, c.iloc[0:0], root, tmp_path / "figs")
    mine = [f for f in out if f.kind == "lr_curves"]
    assert [f.name for f in mine] == ["lr_curves-adding", "lr_curves-synthetic_chars"]
    assert all(f.path is not None and f.path.is_file() for f in mine)
    for f in mine:  # the first figure of each task's section
        assert next(g for g in out if g.task == f.task).kind == "lr_curves"
    by_metric = {inp.metric.name: plot for inp, plot in drawn}
    assert set(by_metric) == {"mse", "bpc"}
    for name, base in (("mse", 0.167), ("bpc", 4.5)):
        fig = by_metric[name].figure
        ax = _panels(fig)[0]
        assert fmt.metric(name) in ax.get_ylabel()
        assert [
            np.asarray(ln.get_ydata(), float)[0] for ln in ax.lines if ln.get_gid() == "baseline"
        ] == [base]
        assert fmt.metric(name) in fig.get_suptitle()
    assert "mean squared error" in mine[0].caption and "bits per character" in mine[1].caption


def test_settings_an_optimizer_lacks_give_it_no_empty_panels():
    """SGD with and without momentum over grids that do not overlap are two panels, never
    one line; Adam (no momentum) gets one panel, not one per momentum value."""
    sgd = make_cells()
    sgd = sgd[sgd["optim.name"] == "sgd"]
    plain = sgd.assign(**{"optim.momentum": 0.0})
    heavy = sgd.assign(**{"optim.momentum": 0.9, "optim.lr": sgd["optim.lr"] / 10})
    adam = make_cells()
    adam = adam[adam["optim.name"] == "adam"].assign(**{"optim.momentum": np.nan})
    plot = lr_curves(pd.concat([plain, heavy, adam], ignore_index=True))
    titles = [ax.get_title() for ax in _panels(plot.figure)]
    assert titles == ["Adam", "SGD · no momentum", "SGD · momentum 0.9"]


def test_means_far_below_the_baseline_get_a_log_axis():
    """An MSE of 16 against a baseline of 26,213 (the tutorial's MLP) would sit on the
    floor of a linear axis; with the baseline in view the axis is logarithmic."""
    far = make_cells(baseline=26213.0)
    assert far["final_val_metric_mean"].max() < 30  # the means alone span little
    plot = lr_curves(far)
    assert {ax.get_yscale() for ax in _panels(plot.figure)} == {"log"}
    near = lr_curves(make_cells())  # bpc around a 4.8 baseline: linear, as before
    assert {ax.get_yscale() for ax in _panels(near.figure)} == {"linear"}


def test_means_far_past_the_baseline_sit_at_the_edge_with_their_value():
    """The y axis spans the informative range (issue 22): one exploded configuration at
    40 bits/char must not flatten every other line onto the floor."""
    table = make_cells()
    far = (table["optim.name"] == "sgd") & (table["clip.method"] == "value") \
        & (table["optim.lr"] == 10.0)
    table.loc[far, ["final_val_metric_mean", "final_val_metric_lo",
                    "final_val_metric_hi"]] = [40.0, 35.0, 45.0]
    plot = lr_curves(table)
    sgd = _panels(plot.figure)[1]
    best = table["final_val_metric_mean"].min()
    edge = BASELINE + 0.25 * (BASELINE - best)
    lo, hi = sgd.get_ylim()
    assert hi < 7  # the band sits above the data part, which ends at the edge
    value = _lines(sgd, "mean")["value 0.5"]
    assert np.isclose(np.asarray(value.get_ydata(), float)[-1], edge)
    marks = [ln for ln in sgd.lines if ln.get_gid() == "beyond:value 0.5"]
    assert len(marks) == 1 and marks[0].get_marker() == "^"
    assert "40" in [t.get_text() for t in sgd.texts]
    assert plot.data.loc[plot.data["beyond"], "mean"].tolist() == [40.0]
    assert "drawn at the edge as a triangle, with its value written" in plot.caption
    # every other mean is drawn at its value
    other = _lines(sgd, "mean")["none"]
    rows = table[(table["optim.name"] == "sgd") & (table["clip.method"] == "none")]
    y = np.asarray(other.get_ydata(), float)
    ok = ~np.isnan(y)
    assert np.allclose(y[ok], rows.sort_values("optim.lr")["final_val_metric_mean"]
                       .to_numpy(float)[ok])
