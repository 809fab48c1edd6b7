"""The figure registry: one list of figures in report order; adding a figure is one module."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure

from seqbench.fake_runs import write_synthetic_sweep
from seqbench.report.collect import collect_runs
from seqbench.report.figures import registry
from seqbench.report.figures._common import FigureSkipped, Plot
from seqbench.report.figures.driver import make_figures
from seqbench.report.figures.registry import FigureInput, figure_title, kinds, register, unregister
from seqbench.report.lr_summary import lr_summary
from seqbench.report.stats import cells
from seqbench.rundir import BPC

LENGTH_FIGURES = ("stability_map", "grad_norm_length", "seed_curves")
#: figures left out of a report whose runs lack their axis (no length, no probe)
NOT_APPLICABLE = (*LENGTH_FIGURES, "smoothness", "spike_recovery")
REPORT_ORDER = (
    "lr_curves",
    "cost_to_target",
    "stability_map",     # drawn only for runs that vary a sequence length
    "grad_norm_length",  # likewise
    "seed_curves",       # likewise, with a success criterion
    "divergence_heatmap",
    "quality_heatmap",
    "loss_curves",
    "grad_norms",
    "param_grad_norms",
    "frontier",
    "smoothness",        # drawn only for runs with the smoothness probe, in its section
    "spike_recovery",    # drawn only where some run has a spike, in its section
)


def test_registry_lists_the_figures_in_report_order():
    assert registry.kinds() == kinds() == REPORT_ORDER
    # one module per kind, each registering its builder
    modules = [registry.get(kind).build.__module__ for kind in REPORT_ORDER]
    assert modules == [f"seqbench.report.figures.{kind}" for kind in REPORT_ORDER]
    assert figure_title("divergence_heatmap", BPC) == "Divergence rate"
    assert figure_title("quality_heatmap", BPC) == f"Final validation {BPC.long}"


def test_registry_refuses_duplicates_and_unsafe_file_names():
    def build(inp):
        raise FigureSkipped("never drawn")

    with pytest.raises(ValueError, match="already registered"):
        register("frontier", title="again", build=build)
    with pytest.raises(ValueError, match="already registered"):
        register("other", title="x", file="{metric}_heatmap", build=build)
    for bad in ("a-b", "../x", "{metric}", "{metric}_{metric}", ""):
        with pytest.raises(ValueError, match="plain file stem"):
            register("other", title="x", file=bad, build=build)
    assert registry.kinds() == REPORT_ORDER


def test_a_registered_figure_is_drawn_by_make_figures_into_its_own_file(tmp_path):
    sw = write_synthetic_sweep(
        tmp_path / "runs",
        optimizers=("sgd",),
        lrs=(0.1, 8.0),
        clips=(("none", None), ("norm", 1.0)),
        seeds=(0,),
        steps=12,
        eval_every=4,
        defects=False,
        hydra=False,
    )
    res = collect_runs(sw.root)
    c = cells(res.runs)
    seen: list[FigureInput] = []

    # what a new figure module declares
    @register("probe", title=lambda metric: f"Probe ({metric.name})", file="{metric}_probe")
    def build(inp: FigureInput) -> Plot:
        seen.append(inp)
        if len(seen) > 1:
            raise FigureSkipped("nothing to probe")
        fig = Figure(figsize=(2.0, 2.0))
        fig.subplots().plot([0, 1], [0, 1])
        return Plot(fig, pd.DataFrame({"cells": [len(inp.cells_df)]}), "A probe.")

    figs = tmp_path / "figs"
    try:
        out = make_figures(res.runs, c, lr_summary(c), sw.root, figs)
        # the length figures do not apply to a sweep without a length axis, nor the
        # smoothness one to runs without the probe: left out
        applies = [k for k in REPORT_ORDER if k not in NOT_APPLICABLE]
        assert [f.kind for f in out] == [*applies, "probe"]
        probe = out[-1]
        assert (probe.name, probe.title, probe.caption) == ("bpc_probe", "Probe (bpc)", "A probe.")
        assert probe.path == figs / "bpc_probe.png"
        assert probe.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        inp = seen[0]
        assert inp.metric.name == "bpc" and inp.runs_dir == sw.root and len(inp.cells_df) == 4
        # a re-render that cannot draw it: a note, and its stale file is removed
        again = make_figures(res.runs, c, lr_summary(c), sw.root, figs)
        assert again[-1].note == "skipped: nothing to probe" and again[-1].path is None
        assert not (figs / "bpc_probe.png").exists()
        assert (figs / "frontier.png").exists()
    finally:
        unregister("probe")
    assert registry.kinds() == REPORT_ORDER
