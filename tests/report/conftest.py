"""Shared fixtures: one synthetic sweep (written once per session) and its report."""

from __future__ import annotations

import pytest

from seqbench.fake_runs import write_synthetic_sweep
from seqbench.report import make_report
from seqbench.report.collect import collect_runs
from seqbench.report.lr_summary import lr_summary
from seqbench.report.stats import cells


@pytest.fixture(scope="session")
def sweep(tmp_path_factory):
    """126 well-formed runs (2 optimizers x 3-4 lrs x 6 clip settings x 3 seeds) + 5 defects."""
    return write_synthetic_sweep(tmp_path_factory.mktemp("runs"), steps=40, eval_every=10, seed=0)


@pytest.fixture(scope="session")
def collected(sweep):
    return collect_runs(sweep.root)


@pytest.fixture(scope="session")
def cells_df(collected):
    return cells(collected.runs)


@pytest.fixture(scope="session")
def stable_df(cells_df):
    return lr_summary(cells_df)


@pytest.fixture(scope="session")
def report(sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return make_report(sweep.root, out)
