"""The length axis of a report, on hand-made run directories: a text sweep over
task.seq_len (with the batch size following the length, as the seq_length preset does),
including a non-monotone column and a pair never run, plus a synthetic task over
task.length in the same directory. The CSV, the stability map's data and the sentences
are pinned to values worked out by hand from the grid below."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqbench.outcome import outcome
from seqbench.report import make_report
from seqbench.report.collect import collect_runs
from seqbench.report.figures.grad_norm_length import grad_norm_length
from seqbench.report.figures.stability_map import stability_map
from seqbench.report.length import has_length_axis, length_summary
from seqbench.report.stats import cells

LN2 = math.log(2)
BASELINE = 4.8
# (clip method, lr) -> seq_len -> per-seed final bpc (None: diverged; 5.0: no progress)
TEXT = {
    ("none", 4.0): {32: [2.0, 2.1], 128: [2.1, 2.2], 512: [2.2, None], 2048: [None, None]},
    # non-monotone: fails at 128, trains again at 512
    ("none", 1.0): {32: [2.5, 2.6], 128: [2.6, 5.0], 512: [2.6, 2.7], 2048: [2.8, 2.9]},
    ("norm", 4.0): {32: [2.0, 2.0], 128: [2.1, 2.1], 512: [2.2, 2.2], 2048: [2.3, 2.4]},
    # 2048 never run at lr 1 with norm clipping: a blank square, never a zero
    ("norm", 1.0): {32: [2.5, 2.5], 128: [2.6, 2.6], 512: [2.7, 2.7]},
}
# temporal order: (clip, lr) -> T -> per-seed (error rate, success); the failed seed at
# T 100 learned first (best 0.1) and collapsed back to 0.7, near chance (0.75)
SYNTH = {
    ("none", 0.1): {50: [(0.0, True), (0.0, True)], 100: [(0.7, False), (0.0, True)]},
    ("norm", 0.1): {50: [(0.0, True), (0.0, True)], 100: [(0.0, True), (0.0, True)]},
}


def _write(d: Path, config: dict, status: str, final, metric: dict, base: float,
           lower=True, success=None, gn=(1.0, 3.0, 9.0), best=None):
    d.mkdir(parents=True)
    summary = {
        "schema_version": 1, "status": status,
        "divergence": "nonfinite" if status == "diverged" else None,
        "first_nonfinite_step": 3 if status == "diverged" else None,
        "steps_completed": 3 if status == "diverged" else 5,
        "final_val_loss": None if final is None else final * LN2,
        "final_val_metric": final, "best_val_metric": final if best is None else best,
        "final_val_bpc": final if metric["name"] == "bpc" else None,
        "metric": metric, "config": config, "baseline_val_metric": base,
        "outcome": outcome(status, final, base, lower), "initial_loss": 4.2,
        "grad_norm_pre": {"median": gn[0], "p99": gn[1], "max": gn[2]},
    }
    if success is not None:
        summary["task_success"] = success
    (d / "summary.json").write_text(json.dumps(summary))
    steps = summary["steps_completed"]
    val = np.full(steps, np.nan)
    val[-1] = np.nan if final is None else final
    val[1] = val[-1] if best is None else best
    pq.write_table(pa.table({"step": np.arange(1, steps + 1, dtype=np.int64),
                             "train_loss": np.full(steps, 4.2), "val_metric": val}),
                   d / "metrics.parquet")


def write_runs(runs: Path, synthetic: bool = True, text: dict = TEXT,
               cell: str = "lstm") -> None:
    bpc = {"name": "bpc", "unit": "bits/char", "lower_is_better": True}
    for (method, lr), by_len in text.items():
        for length, finals in by_len.items():
            for seed, final in enumerate(finals):
                config = {"task.name": "tinyshakespeare", "task.seq_len": length,
                          "task.batch_size": 4096 // length, "model.cell": cell,
                          "optim.name": "sgd", "optim.lr": lr, "clip.method": method,
                          "clip.max_norm": 1.0 if method == "norm" else None, "seed": seed}
                # spikes grow with length: p99 = median x (length / 16)
                _write(runs / f"t-{cell}-{method}-{lr}-{length}-{seed}", config,
                       "diverged" if final is None else "completed", final, bpc, BASELINE,
                       gn=(1.0, length / 16, length / 4))
    if not synthetic:
        return
    err = {"name": "error_rate", "unit": "fraction of sequences", "lower_is_better": True}
    for (method, lr), by_len in SYNTH.items():
        for length, per_seed in by_len.items():
            for seed, (rate, ok) in enumerate(per_seed):
                config = {"task.name": "temporal_order", "task.length": length,
                          "model.cell": "rnn_tanh", "optim.name": "sgd", "optim.lr": lr,
                          "clip.method": method,
                          "clip.max_norm": 1.0 if method == "norm" else None, "seed": seed}
                _write(runs / f"s-{method}-{lr}-{length}-{seed}", config, "completed", rate,
                       err, 0.75, success=ok, best=0.1 if rate == 0.7 else None)


@pytest.fixture(scope="module")
def text_cells(tmp_path_factory):
    runs = tmp_path_factory.mktemp("len") / "runs"
    write_runs(runs, synthetic=False)
    return cells(collect_runs(runs).runs), collect_runs(runs).runs


def _row(summary, method, lr=None):
    sel = summary[(summary["clip.method"] == method)]
    sel = sel[sel["level"] == "setting"] if lr is None else sel[sel["optim.lr"] == lr]
    assert len(sel) == 1
    return sel.iloc[0]


def test_length_summary_by_hand(text_cells):
    c, _ = text_cells
    s = length_summary(c)
    assert "task.batch_size" not in s.columns  # it follows the length: not a setting
    r = _row(s, "none", 4.0)
    assert (r.largest_trained_length, r.smallest_failed_length) == (128, 512)
    assert (r.largest_finite_length, r.smallest_diverged_length) == (128, 512)
    r = _row(s, "none", 1.0)  # the non-monotone column
    assert (r.largest_trained_length, r.smallest_failed_length,
            r.longest_trained_length_any) == (32, 128, 2048)
    assert r.largest_finite_length == 2048 and math.isnan(r.smallest_diverged_length)
    r = _row(s, "norm", 4.0)
    assert (r.largest_trained_length, r.n_lengths, r.n_seeds) == (2048, 4, 2)
    r = _row(s, "norm", 1.0)  # 2048 never run: the summary ends at 512
    assert (r.largest_trained_length, r.n_lengths) == (512, 3)
    assert _row(s, "none").lrs_reaching_longest == "4"   # 128 at lr 4 beats 32 at lr 1
    assert _row(s, "norm").lrs_reaching_longest == "4"
    assert math.isnan(r.largest_solved_length)  # text: no success criterion


def test_stability_map_data_leaves_the_unrun_pair_blank(text_cells):
    c, _ = text_cells
    plot = stability_map(c)
    d = plot.data
    assert len(d) == 15  # 16 pairs, one never run: no square for it, not a zero
    norm1 = d[(d["panel"] == "SGD · norm 1") & (d["optim.lr"] == 1.0)]
    assert sorted(norm1["length"]) == [32, 128, 512]
    at = d[(d["panel"] == "SGD · no clipping") & (d["optim.lr"] == 4.0)].set_index("length")
    assert at.loc[512, ["k", "n", "n_diverged"]].tolist() == [1, 2, 1]
    assert at.loc[2048, ["fraction", "n_diverged"]].tolist() == [0.0, 2]
    nm = d[(d["panel"] == "SGD · no clipping") & (d["optim.lr"] == 1.0)].set_index("length")
    assert nm.loc[128, ["k", "n", "n_diverged"]].tolist() == [1, 2, 0]  # no progress


def test_grad_norm_figure_data(text_cells):
    c, runs = text_cells
    d = grad_norm_length(runs, c).data
    x = d[(d["clip.method"] == "norm") & (d["optim.lr"] == 4.0)].sort_values("length")
    assert x["p99_over_median"].tolist() == [2.0, 8.0, 32.0, 128.0]


def test_no_length_axis_changes_nothing(tmp_path):
    runs = tmp_path / "runs"
    write_runs(runs, synthetic=False)
    keep = [d for d in runs.iterdir() if "-2048-" not in d.name and "-512-" not in d.name
            and "-128-" not in d.name]
    for d in runs.iterdir():
        if d not in keep:
            shutil.rmtree(d)
    c = cells(collect_runs(runs).runs)
    assert not has_length_axis(c)
    result = make_report(runs, tmp_path / "rep")
    assert not (tmp_path / "rep" / "length_summary.csv").exists()
    assert "stability_map" not in result.figures and "stability_map" not in result.skipped
    assert "Sequence length" not in (tmp_path / "rep" / "report.md").read_text()


def test_mixed_text_and_synthetic_report(tmp_path):
    runs = tmp_path / "runs"
    write_runs(runs)
    result = make_report(runs, tmp_path / "rep")
    csv = pd.read_csv(tmp_path / "rep" / "length_summary.csv")
    synth = csv[(csv["task.name"] == "temporal_order") & (csv["level"] == "lr")]
    by = synth.set_index("clip.method")
    assert by.loc["none", "largest_solved_length"] == 50
    assert by.loc["none", "smallest_unsolved_length"] == 100
    assert by.loc["norm", "largest_solved_length"] == 100
    assert set(result.figures) >= {"stability_map-tinyshakespeare", "stability_map-temporal_order"}
    md = (tmp_path / "rep" / "report.md").read_text()
    assert (
        "SGD with no clipping: the largest learning rate at which every seed trained fell "
        "from 4 at BPTT 32 to 1 at 2,048 (per length, 32: 4; 128: 4; 512: 1; 2,048: 1; "
        "2 seeds a cell)." in md)
    assert ("SGD with global norm clipping at 1: the largest learning rate at which every "
            "seed trained stayed at 4 from BPTT 32 to 2,048" in md)
    assert ("SGD at lr 4: without clipping every seed trained up to BPTT 128 and not at 512 "
            "(1/2 seeds trained there, 1 diverged); with global norm clipping at 1 every "
            "seed trained up to BPTT 2,048 (clipping reached a longer length at 2 of the 2 "
            "learning rates run both ways)." in md)
    assert ("lengths and learning rates are grid points (BPTT grid x4, lr grid x4)" in md)
    assert ("SGD without clipping at lr 4: the 99th percentile of the gradient norm was "
            "2.00x its median at BPTT 32 and 128x at 2,048" in md)
    assert ("SGD with no clipping: the largest learning rate at which every seed solved "
            "fell from 0.1 at T 50 to none at 100" in md)  # the synthetic task: T, solved
    assert ("SGD at lr 0.1: without clipping every seed solved up to T 50 and not at 100 "
            "(1/2 seeds solved there, 0 diverged); with global norm clipping at 1 every seed "
            "solved up to T 100" in md)
    assert "(T grid x2, one learning rate)" in md


def test_learned_then_collapsed_is_named_and_drawn(tmp_path):
    runs = tmp_path / "runs"
    write_runs(runs)
    result = make_report(runs, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert ("1 of the 8 runs that learned (best validation metric at most half the "
            "baseline's) collapsed back to within 10% of the baseline or diverged afterwards, "
            "the signature of an exploding gradient: SGD with no clipping at lr 0.1: 1 (T 100)."
            in md)
    assert "seed_curves-temporal_order" in result.figures  # a success criterion: drawn
    assert "seed_curves-tinyshakespeare" not in result.figures  # none: left out
    assert "seed_curves-tinyshakespeare" not in result.skipped
    collected = collect_runs(runs)
    synth = collected.runs[collected.runs["task.name"] == "temporal_order"]
    from seqbench.report.figures.seed_curves import seed_curves
    from seqbench.report.task_groups import metric_of

    plot = seed_curves(synth, cells(synth), runs, metric_of(synth))
    row = plot.data[(plot.data["length"] == 100) & (plot.data["seed"] == 0)
                    & plot.data["row"].str.startswith("SGD · no clipping")]
    assert row["val_metric"].tolist() == [0.1, 0.7]  # the drop and the climb back


def test_counts_come_from_the_sentence_s_own_model(tmp_path):
    """Two models in one sweep: the counts a clip-gain sentence quotes for the unclipped
    run are that model's, never the other model's cell at the same lr and length."""
    runs = tmp_path / "runs"
    write_runs(runs, synthetic=False)
    rnn = {k: dict(v) for k, v in TEXT.items()}
    rnn[("none", 4.0)] = {32: [None, 5.0], 128: [None, None], 512: [None, None],
                          2048: [None, None]}
    write_runs(runs, synthetic=False, text=rnn, cell="rnn_tanh")
    make_report(runs, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert ("SGD on the tanh RNN at lr 4: without clipping not every seed trained even at "
            "BPTT 32 (0/2 seeds trained there, 1 diverged)" in md)
    assert ("SGD on the LSTM at lr 4: without clipping every seed trained up to BPTT 128 "
            "and not at 512 (1/2 seeds trained there, 1 diverged)" in md)
