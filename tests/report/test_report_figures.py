"""Figures: every group drawn holds exactly the rows it should (seaborn + pandas 3 hue bug)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgb

from seqbench.fake_runs import write_synthetic_sweep
from seqbench.report.collect import collect_runs
from seqbench.report.figures._common import MAX_CURVE_CONFIGS, facet_columns, select_curve_cells
from seqbench.report.figures._heatmap import heatmap_panels
from seqbench.report.figures.divergence_heatmap import divergence_heatmap
from seqbench.report.figures.driver import make_figures
from seqbench.report.figures.frontier import frontier
from seqbench.report.figures.grad_norms import grad_norm_distributions
from seqbench.report.figures.loss_curves import loss_curves
from seqbench.report.figures.quality_heatmap import metric_heatmap
from seqbench.report.figures.registry import figure_name, kinds
from seqbench.report.lr_summary import lr_summary
from seqbench.report.stats import cells


def _titled_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]


def _labels_ok(fig):
    for ax in _titled_axes(fig):
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    assert fig.get_suptitle() or all(ax.get_title() for ax in fig.axes if ax.get_visible())


def _expected_norm_counts(sweep, kind: str) -> Counter:
    """Finite positive norms per clip method, read independently of the report code."""
    counts: Counter = Counter()
    truth = sweep.truth
    for rel, method in zip(truth["run_dir"], truth["clip.method"], strict=True):
        v = (
            pq.read_table(sweep.root / rel / "metrics.parquet", columns=[kind])
            .column(0)
            .to_numpy(zero_copy_only=False)
        )
        v = np.asarray(v, dtype=float)
        counts[method] += int((np.isfinite(v) & (v > 0)).sum())
    return counts


def test_divergence_heatmap_panels_and_annotations(cells_df):
    plot = divergence_heatmap(cells_df)
    axes = _titled_axes(plot.figure)
    assert [ax.get_title() for ax in axes] == [
        "Adam · no clipping",
        "Adam · value clipping",
        "Adam · norm clipping",
        "SGD · no clipping",
        "SGD · value clipping",
        "SGD · norm clipping",
    ]
    _labels_ok(plot.figure)
    for ax in axes:
        opt, method = ax.get_title().split(" · ")
        method = {"no clipping": "none", "value clipping": "value", "norm clipping": "norm"}[method]
        sub = cells_df[
            (cells_df["optim.name"] == opt.lower()) & (cells_df["clip.method"] == method)
        ]
        expected = Counter(
            f"{r:.2f}\nn={n}" for r, n in zip(sub["divergence_rate"], sub["n"], strict=True)
        )
        assert Counter(t.get_text() for t in ax.texts) == expected
        # the colour grid has one row per threshold and one column per lr
        mesh = ax.collections[0]
        assert mesh.get_array().shape == (
            max(1, sub["threshold"].nunique()),
            sub["optim.lr"].nunique(),
        )


def test_bpc_heatmap_blank_where_nothing_finished(cells_df):
    plot = metric_heatmap(cells_df)
    _labels_ok(plot.figure)
    texts = [t.get_text() for ax in _titled_axes(plot.figure) for t in ax.texts]
    finished = cells_df[cells_df["n_finished"] > 0]
    assert len(texts) == len(finished)
    assert Counter(texts) == Counter(
        f"{m:.2f}\nn={n}"
        for m, n in zip(finished["final_val_bpc_mean"], finished["n_finished"], strict=True)
    )
    # cells where nothing finished are masked (no colour), not filled with a number
    masked = sum(
        int(np.ma.getmaskarray(ax.collections[0].get_array()).sum())
        for ax in _titled_axes(plot.figure)
    )
    assert masked == int((cells_df["n_finished"] == 0).sum())


def test_grad_norm_hue_groups_have_the_right_rows(sweep, collected):
    plot = grad_norm_distributions(collected.runs, sweep.root)
    _labels_ok(plot.figure)
    colour_to_method = {to_rgb(c): m for m, c in plot.palette.items()}
    for ax, kind in zip(plot.figure.axes[:2], ("grad_norm_pre", "grad_norm_post"), strict=True):
        lines = [ln for ln in ax.lines if len(ln.get_xdata())]
        drawn = {colour_to_method[to_rgb(ln.get_color())]: len(ln.get_xdata()) - 1 for ln in lines}
        assert drawn == dict(_expected_norm_counts(sweep, kind))
    # the three groups differ in size, so a mix-up could not go unnoticed
    assert len(set(_expected_norm_counts(sweep, "grad_norm_pre").values())) == 3


@pytest.mark.parametrize("dtype", ["str", pd.CategoricalDtype(["value", "unused", "norm", "none"])])
def test_hue_groups_survive_string_dtype_and_odd_order(sweep, collected, dtype):
    """pandas 3 `str`/categorical dtypes, rows and categories in an order unlike hue_order."""
    runs = collected.runs.iloc[::-1].reset_index(drop=True)
    runs["clip.method"] = runs["clip.method"].astype(dtype)
    plot = grad_norm_distributions(runs, sweep.root)
    colour_to_method = {to_rgb(c): m for m, c in plot.palette.items()}
    ax = plot.figure.axes[0]
    drawn = {
        colour_to_method[to_rgb(ln.get_color())]: len(ln.get_xdata()) - 1
        for ln in ax.lines
        if len(ln.get_xdata())
    }
    assert drawn == dict(_expected_norm_counts(sweep, "grad_norm_pre"))


def test_frontier_points_carry_their_cells_colour(cells_df):
    plot = frontier(cells_df)
    _labels_ok(plot.figure)
    ax = plot.figure.axes[0]
    coll = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(coll) == 1
    offsets, colours = coll[0].get_offsets(), coll[0].get_facecolors()
    expected = cells_df[cells_df["final_val_bpc_mean"].notna()]
    assert len(offsets) == len(expected)
    for (x, y), colour in zip(offsets, colours, strict=True):
        match = expected[
            np.isclose(expected["divergence_rate"], x)
            & np.isclose(expected["final_val_bpc_mean"], y)
        ]
        assert len(match) >= 1
        assert {to_rgb(plot.palette[m]) for m in match["clip.method"]} == {to_rgb(colour)}


def test_loss_curves_groups(sweep, collected, cells_df, stable_df):
    chosen = select_curve_cells(cells_df, stable_df)
    assert set(chosen["optim.name"]) == {"sgd", "adam"}
    assert (chosen.groupby("optim.name").size() <= MAX_CURVE_CONFIGS).all()
    # per optimizer, one lr: the largest lr at which some setting was stable
    for opt, sub in chosen.groupby("optim.name"):
        assert sub["optim.lr"].nunique() == 1
        assert (
            sub["optim.lr"].iloc[0]
            == stable_df.loc[stable_df["optim.name"] == opt, "largest_finite_lr"].max()
        )
    plot = loss_curves(collected.runs, cells_df, stable_df, sweep.root)
    _labels_ok(plot.figure)
    data = plot.data
    for rec in chosen.to_dict("records"):
        first = data[
            (data["optimizer"] == rec["optim.name"])
            & (data["label"] == rec["label"])
            & (data["metric"] == "train_loss")
        ].sort_values("step")
        # every verdict run of the cell contributes at step 1, no other run does
        assert int(first["n"].iloc[0]) == rec["n"]
    for ax in plot.figure.axes:
        labels = [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")]
        assert len(labels) == len(set(labels))
        opt = "adam" if ax.get_title().startswith("Adam") else "sgd"
        assert set(labels) <= set(chosen.loc[chosen["optim.name"] == opt, "label"])


def test_make_figures_skips_with_notes_when_nothing_finished(tmp_path):
    sw = write_synthetic_sweep(
        tmp_path / "runs",
        seeds=(0, 1),
        steps=12,
        eval_every=4,
        defects=False,
        hydra=False,
        stability=1e-4,
    )
    res = collect_runs(sw.root)
    c = cells(res.runs)
    assert (c["n_finished"] == 0).all()
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "bpc_heatmap.png").write_bytes(b"stale")
    out = make_figures(res.runs, c, lr_summary(c), sw.root, tmp_path / "figs")
    notes = {f.name: f.note for f in out if f.path is None}
    # no param files; no target where nothing finished
    assert set(notes) == {"bpc_heatmap", "frontier", "param_grad_norms", "cost_to_target"}
    assert all(n.startswith("skipped:") for n in notes.values())
    assert not (tmp_path / "figs" / "bpc_heatmap.png").exists()
    assert {f.name for f in out if f.path is not None} == {
        "lr_curves",
        "divergence_heatmap",
        "loss_curves",
        "grad_norms",
    }


def test_facets_split_panels_when_other_settings_vary(cells_df):
    a = cells_df.assign(**{"model.hidden_size": 32})
    b = cells_df.assign(**{"model.hidden_size": 256})
    both = pd.concat([a, b], ignore_index=True)
    assert facet_columns(both) == ["model.hidden_size"]
    panels = heatmap_panels(both)
    assert len(panels) == 12
    assert all("model.hidden_size=" in title for title, _ in panels)
    # optimizer-specific keys (momentum only for SGD) do not create panels
    assert facet_columns(cells_df) == []


@pytest.mark.parametrize("kind", [k for k in kinds() if k not in (
    "param_grad_norms", "stability_map", "grad_norm_length", "seed_curves", "smoothness",
    "spike_recovery")])
def test_every_figure_is_drawn(report, kind):
    # param_grad_norms needs param_metrics.parquet files: see test_report_params.py;
    # the length figures need a length axis: see test_report_length.py; the smoothness
    # figure runs with the probe: see test_smoothness_report.py; the spike figure with
    # spikes: see test_spikes_report.py
    # one text task: names are the kinds, the quality heatmap is named after bpc
    assert figure_name(kind) in report.figures
    assert figure_name(kind) == ("bpc_heatmap" if kind == "quality_heatmap" else kind)
