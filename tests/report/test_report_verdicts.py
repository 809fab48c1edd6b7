"""Outcomes and the sentences built from them, against a hand-made runs directory.

Each sentence kind of issue 11 is checked word for word: "kept training finite" and
"trained" as separate claims with counts, the clip setting that most raises the largest
trained lr (with its factor), the least LR-sensitive setting (with its interval), and a
configuration where every run ended no_progress said to have not learned.
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqbench.outcome import outcome
from seqbench.report import make_report
from seqbench.report.lr_summary import lr_sensitivity

BASELINE = 4.8  # bits/char
LN2 = math.log(2)


# ---- the outcome of one run ---------------------------------------------------------------

def test_outcomes_at_their_boundaries():
    assert outcome("completed", BASELINE - 1e-9, BASELINE) == "trained"
    assert outcome("completed", BASELINE, BASELINE) == "no_progress"  # equal is not better
    assert outcome("completed", BASELINE + 1e-9, BASELINE) == "no_progress"
    assert outcome("completed", math.inf, BASELINE) == "no_progress"
    # higher is better (accuracy): the direction flips
    assert outcome("completed", 0.61, 0.6, lower_is_better=False) == "trained"
    assert outcome("completed", 0.6, 0.6, lower_is_better=False) == "no_progress"
    assert outcome("completed", 0.59, 0.6, lower_is_better=False) == "no_progress"
    # diverged is diverged whatever its numbers; unfinished runs have no outcome
    assert outcome("diverged", 1.0, BASELINE) == "diverged"
    assert outcome("diverged", None, None) == "diverged"
    for status in ("running", "error", "interrupted"):
        assert outcome(status, 1.0, BASELINE) is None
    # nothing to compare: unknown, never guessed
    assert outcome("completed", None, BASELINE) is None
    assert outcome("completed", math.nan, BASELINE) is None
    assert outcome("completed", 1.0, None) is None
    assert outcome("completed", 1.0, math.nan) is None


# ---- a hand-made sweep -------------------------------------------------------------------

INITIAL = 4.17  # nats: ln 65, every run's first training loss

# (clip method, threshold) -> lr -> per-seed final bpc (None: diverged)
GRID = {
    ("none", None): {1: [2.0, 2.1], 4: [2.5, 4.9], 16: [None, None]},
    ("norm", 1.0): {1: [2.2, 2.3], 4: [2.0, 2.1], 16: [2.4, 2.6]},
    ("value", 0.01): {1: [5.0, 5.1], 4: [4.9, 4.95], 16: [6.5, 6.6]},
}


def write_run(d: Path, method: str, thr, lr: float, seed: int, bpc, *, old: bool = False):
    d.mkdir(parents=True)
    diverged = bpc is None
    config = {"task.name": "tinyshakespeare", "task.seq_len": 64, "task.batch_size": 16,
              "optim.name": "sgd", "optim.lr": float(lr), "clip.method": method,
              "clip.max_norm": thr if method == "norm" else None,
              "clip.clip_value": thr if method == "value" else None, "seed": seed,
              "trainer.eval_batches": 0}
    final_loss = None if diverged else bpc * LN2
    summary = {
        "schema_version": 1, "status": "diverged" if diverged else "completed",
        "divergence": "nonfinite" if diverged else None,
        "first_nonfinite_step": 3 if diverged else None, "steps_completed": 3 if diverged else 5,
        "final_val_loss": final_loss, "final_val_bpc": bpc, "final_val_metric": bpc,
        "best_val_metric": bpc,
        "metric": {"name": "bpc", "unit": "bits/char", "lower_is_better": True},
        "config": config,
    }
    if not old:
        summary.update(outcome=outcome(summary["status"], bpc, BASELINE),
                       baseline_val_metric=BASELINE, initial_loss=INITIAL)
    (d / "summary.json").write_text(json.dumps(summary))
    steps = summary["steps_completed"]
    pq.write_table(pa.table({"step": np.arange(1, steps + 1, dtype=np.int64),
                             "train_loss": np.full(steps, INITIAL)}), d / "metrics.parquet")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdicts")
    runs = root / "runs"
    for (method, thr), by_lr in GRID.items():
        for lr, finals in by_lr.items():
            for seed, bpc in enumerate(finals):
                write_run(runs / f"{method}{thr}-lr{lr}-s{seed}", method, thr, lr, seed, bpc)
    make_report(runs, root / "report")
    return root / "report"


def headline(report: Path) -> list[str]:
    """The sentences before the first section: the run counts, then (after the Answer)
    the Findings, grouped under a heading per context."""
    md = (report / "report.md").read_text()
    parts = md.split("\n## ")
    top = [parts[0], *[p for p in parts[1:] if p.startswith(("Answer\n", "Findings\n"))]]
    return [line[2:] for part in top for line in part.splitlines() if line.startswith("- ")]


def sentence(report: Path, start: str) -> str:
    found = [s for s in headline(report) if s.startswith(start)]
    assert len(found) == 1, headline(report)
    return found[0]


def test_finite_and_trained_are_separate_claims_with_counts(report):
    assert sentence(report, "Without clipping") == (
        "Without clipping, SGD (at least 2 seeds at each of 3 learning rates) kept training "
        "finite up to lr 4, but trained (every seed beat the 4.8 bits/char baseline) only up "
        "to lr 1.")
    assert sentence(report, "Of 18 runs") == (
        "Of 18 runs with a verdict, 9 trained (ended better than the 4.8 bits/char "
        "baseline), 7 finished without diverging but no better, and 2 diverged.")


def test_the_clip_setting_that_most_raises_the_largest_trained_lr_is_named(report):
    assert sentence(report, "For SGD, global norm clipping") == (
        "For SGD, global norm clipping at 1 raised the largest learning rate at which every "
        "seed trained from 1 to 16 (2 grid steps: a factor of more than 4×; 2 of 2 seeds "
        "there), the largest rate tried (the limit may be higher).")


def test_a_gain_read_off_the_grid_is_said_as_the_bound_it_is():
    """Issue 22: "from 4 to 16 (4×)" on a ×4 grid is one grid step, a factor between just
    over 1× and just under 16×; at the grid's top there is no upper bound."""
    from seqbench.report.sentences.verdicts import grid_steps

    grid = [1, 4, 16, 64]
    assert grid_steps(4, 16, grid) == ("one grid step: the limits lie between grid points, "
                                       "so a factor between just over 1× and just under 16×")
    assert grid_steps(1, 16, grid) == ("2 grid steps: the limits lie between grid points, so "
                                       "a factor between more than 4× and just under 64×")
    assert grid_steps(16, 64, grid) == "one grid step: a factor of just over 1×"


def test_a_configuration_where_every_run_made_no_progress_did_not_learn(report):
    text = sentence(report, "3 configurations did not learn")
    assert text == (
        "3 configurations did not learn: every run finished without diverging but no better "
        "than the 4.8 bits/char baseline: SGD, lr 1, value clipping at 0.01 (2 of 2); SGD, "
        "lr 4, value clipping at 0.01 (2 of 2); SGD, lr 16, value clipping at 0.01 (2 of 2).")
    # and nothing calls such a cell stable
    md = (report / "report.md").read_text()
    assert "stable" not in md.lower().replace("unstable", "")


def test_the_least_lr_sensitive_setting_is_named_with_its_interval(report):
    summary = pd.read_csv(report / "lr_summary.csv")
    sens = {}
    for (method, _thr), by_lr in GRID.items():
        per_lr = [np.array([INITIAL if b is None else min(b * LN2, INITIAL) for b in finals])
                  for finals in by_lr.values()]
        sens[method] = lr_sensitivity(per_lr)
        row = summary[summary["clip.method"] == method].iloc[0]
        assert row["lr_sensitivity"] == pytest.approx(sens[method][0], abs=1e-12)
        assert (row["lr_sensitivity_lo"], row["lr_sensitivity_hi"]) == pytest.approx(
            sens[method][1:], abs=1e-12)
    best = min(sens, key=lambda m: sens[m][0])
    assert best == "norm"
    text = sentence(report, "For SGD, the least LR-sensitive setting")
    v, lo, hi = sens["norm"]
    n0, lo0, hi0 = sens["none"]
    pattern = (r"For SGD, the least LR-sensitive setting was global norm clipping at 1: LR "
               r"sensitivity "
               r"(\S+) \(95% bootstrap interval (\S+)–(\S+)\) nats over 3 learning rates "
               r"\(at least 2 seeds each\); without clipping (\S+) \(95% bootstrap interval "
               r"(\S+)–(\S+)\); its interval is clear of every other setting's\. ")
    m = re.match(pattern, text)
    assert m, text
    shown = [float(x) for x in m.groups()]
    assert shown == pytest.approx([v, lo, hi, n0, lo0, hi0], rel=5e-3)  # 3 digits shown
    assert text.endswith("a diverged run counts at its initial loss.")


def test_the_tables_carry_the_outcome_counts(report):
    cells = pd.read_csv(report / "cells.csv")
    none4 = cells[(cells["clip.method"] == "none") & (cells["optim.lr"] == 4)].iloc[0]
    assert (none4["n"], none4["n_trained"], none4["n_no_progress"], none4["n_diverged"]) \
        == (2, 1, 1, 0)
    assert none4["trained_rate"] == 0.5 and none4["baseline_val_metric"] == BASELINE
    assert 0 < none4["trained_rate_lo"] < 0.5 < none4["trained_rate_hi"] < 1
    lr = pd.read_csv(report / "lr_summary.csv")
    none = lr[lr["clip.method"] == "none"].iloc[0]
    assert (none["largest_finite_lr"], none["largest_trained_lr"],
            none["smallest_untrained_lr"]) == (4, 1, 4)
    value = lr[lr["clip.method"] == "value"].iloc[0]
    assert value["largest_finite_lr"] == 16 and math.isnan(value["largest_trained_lr"])


def test_an_old_runs_directory_without_outcomes_still_reports(tmp_path):
    """Runs written before outcomes existed: the report recomputes the baseline from the
    task (tinyshakespeare, bundled) and derives each outcome from the run's numbers."""
    from seqbench.config import compose
    from seqbench.data.tasks import build_task

    cfg = compose(["task.seq_len=64", "task.batch_size=16"])
    baseline = build_task(cfg.task).baseline(0)["val_metric"]
    runs = tmp_path / "runs"
    for lr, bpc in ((1, baseline - 0.5), (4, baseline + 0.1), (16, None)):
        write_run(runs / f"lr{lr}", "none", None, lr, 0, bpc, old=True)
    make_report(runs, tmp_path / "report")
    table = pd.read_csv(tmp_path / "report" / "runs.csv").sort_values("optim.lr")
    assert table["outcome"].tolist() == ["trained", "no_progress", "diverged"]
    assert table["baseline_val_metric"].tolist() == pytest.approx([baseline] * 3)
    assert table["initial_loss"].tolist() == pytest.approx([INITIAL] * 3)  # metrics row 1
    lines = headline(tmp_path / "report")
    assert ("3 runs were written before runs recorded their outcome; their outcomes were "
            "derived here from the run's own final metric and its task's baseline, "
            "recomputed from the data.") in lines


def test_the_divergence_counts_compare_with_the_setting_named_before(report):
    assert sentence(report, "Unclipped SGD diverged") == (
        "Unclipped SGD diverged in 2 of 6 runs across 3 learning rates; with global norm "
        "clipping at 1 at the same rates, 0 of 6.")


def test_methods_without_one_threshold_are_named_as_their_sources_name_them():
    from seqbench.report import _format as fmt

    assert fmt.clip_phrase("autoclip", None) == "AutoClip"
    assert fmt.clip_phrase("zclip", None) == "ZClip"
    assert fmt.clip_phrase("norm", 1.0) == "global norm clipping at 1"
    assert fmt.clip_phrase("norm_per_tensor", 1.0) == "per-tensor norm clipping at 1"
    assert fmt.clip_short("norm_per_tensor", 1.0) == "per-tensor norm 1"


def test_per_tensor_norm_clipping_is_reported_as_its_own_method(tmp_path):
    from seqbench.report.collect import collect_runs

    for scope in ("global", "per_tensor"):
        d = tmp_path / scope
        write_run(d, "norm", 1.0, 1, 0, 2.0)
        summary = json.loads((d / "summary.json").read_text())
        summary["config"]["clip.scope"] = scope
        (d / "summary.json").write_text(json.dumps(summary))
    runs = collect_runs(tmp_path).runs.set_index("clip.scope")
    assert runs.loc["global", "clip.method"] == "norm"
    assert runs.loc["per_tensor", "clip.method"] == "norm_per_tensor"
