"""collect: run directories -> runs table; corrupt and incomplete runs are listed, not fatal."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seqbench.fake_runs import write_synthetic_sweep
from seqbench.report.collect import (
    CURVE_COLUMNS,
    ReportInputError,
    collect_runs,
    find_run_dirs,
    load_curves,
)


def test_corrupt_and_incomplete_are_listed(sweep, collected):
    corrupt = dict(zip(collected.corrupt["run_dir"], collected.corrupt["reason"], strict=True))
    assert (
        set(corrupt)
        == set(sweep.corrupt)
        == {"extra/bad_json", "extra/missing_keys", "extra/truncated_parquet"}
    )
    assert "not valid JSON" in corrupt["extra/bad_json"]
    assert "status" in corrupt["extra/missing_keys"] and "config" in corrupt["extra/missing_keys"]
    assert "metrics.parquet" in corrupt["extra/truncated_parquet"]
    inc = dict(zip(collected.incomplete["run_dir"], collected.incomplete["status"], strict=True))
    assert inc == sweep.incomplete == {"extra/running": "running", "extra/error": "error"}
    assert collected.n_found == len(sweep.truth) + 5


def test_runs_table_matches_what_was_written(sweep, collected):
    runs = collected.runs
    assert len(runs) == len(sweep.truth) + len(sweep.incomplete)
    assert not set(sweep.corrupt) & set(runs["run_dir"])
    merged = sweep.truth.merge(runs, on="run_dir", suffixes=("_t", ""))
    assert len(merged) == len(sweep.truth)
    assert (merged["status"].astype(object) == merged["status_t"].astype(object)).all()
    for col in (
        "first_nonfinite_step",
        "steps_completed",
        "final_val_bpc",
        "best_val_bpc",
        "clip_fraction",
        "tokens_per_second",
        "grad_norm_pre_median",
        "grad_norm_pre_p99",
        "grad_norm_pre_max",
        "optim.lr",
        "clip.max_norm",
        "seed",
    ):
        np.testing.assert_allclose(
            pd.to_numeric(merged[col]).to_numpy(dtype=float),
            pd.to_numeric(merged[f"{col}_t"]).to_numpy(dtype=float),
            equal_nan=True,
            err_msg=col,
        )
    # flat config keys are columns; metrics row count is known
    assert {"clip.method", "optim.name", "optim.lr", "seed", "trainer.max_steps"} <= set(
        runs.columns
    )
    assert (merged["metrics_rows"] == merged["steps_completed"]).all()
    assert runs["run_dir"].is_unique
    assert not any(d.startswith("/") for d in runs["run_dir"])


def test_errors_for_unusable_runs_dir(tmp_path):
    with pytest.raises(ReportInputError, match="does not exist") as exc:
        collect_runs(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(exc.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReportInputError, match="not a directory"):
        collect_runs(tmp_path / "file")
    (tmp_path / "empty" / "a" / "b").mkdir(parents=True)
    with pytest.raises(ReportInputError, match="no run directories"):
        collect_runs(tmp_path / "empty")


@pytest.fixture
def small(tmp_path):
    sw = write_synthetic_sweep(
        tmp_path / "runs",
        optimizers=("sgd",),
        lrs=(0.1,),
        clips=(("none", None),),
        seeds=(0, 1),
        steps=12,
        eval_every=4,
        defects=False,
        hydra=False,
    )
    return sw


def _edit_summary(d, **changes):
    data = json.loads((d / "summary.json").read_text())
    for k, v in changes.items():
        if v is ...:
            data.pop(k)
        else:
            data[k] = v
    (d / "summary.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"schema_version": 2}, "schema_version 2"),
        ({"status": "finished"}, "status 'finished'"),
        ({"divergence": "boom"}, "divergence"),
        ({"config": [1, 2]}, "config is not an object"),
        ({"final_val_bpc": "1.5"}, "final_val_bpc"),
        ({"grad_norm_pre": {"median": "x"}}, "grad_norm_pre"),
        ({"grad_norm_pre": [1, 2, 3]}, "grad_norm_pre"),
        ({"steps_completed": ...}, "steps_completed"),
    ],
)
def test_summary_validation(small, changes, reason):
    _edit_summary(small.root / "0000", **changes)
    res = collect_runs(small.root)
    assert list(res.corrupt["run_dir"]) == ["0000"]
    assert reason in res.corrupt["reason"].iloc[0]
    assert list(res.runs["run_dir"]) == ["0001"]


def test_missing_metrics_corrupt_only_for_finished_runs(small):
    (small.root / "0000" / "metrics.parquet").unlink()
    (small.root / "0001" / "metrics.parquet").unlink()
    _edit_summary(small.root / "0001", status="interrupted")
    res = collect_runs(small.root)
    assert list(res.corrupt["run_dir"]) == ["0000"]
    assert "missing" in res.corrupt["reason"].iloc[0]
    assert list(res.incomplete["status"]) == ["interrupted"]
    assert math.isnan(res.runs["metrics_rows"].iloc[0])


def test_walk_is_recursive_and_skips_hidden(small):
    nested = small.root / "a" / "b" / "job"
    shutil.copytree(small.root / "0000", nested)
    hidden = small.root / ".hydra" / "job"
    shutil.copytree(small.root / "0000", hidden)
    inner = small.root / "0001" / "sub"  # never descends into a run directory
    shutil.copytree(small.root / "0000", inner)
    dirs = [p.relative_to(small.root).as_posix() for p in find_run_dirs(small.root)]
    assert dirs == ["0000", "0001", "a/b/job"]
    # a single run directory can itself be the runs dir
    res = collect_runs(small.root / "0000")
    assert list(res.runs["run_dir"]) == ["."]


def test_config_lists_become_hashable_text(small):
    data = json.loads((small.root / "0000" / "summary.json").read_text())
    data["config"]["model.sizes"] = [64, 64]
    (small.root / "0000" / "summary.json").write_text(json.dumps(data))
    res = collect_runs(small.root)
    assert res.runs["model.sizes"].iloc[0] == "[64, 64]"


def test_load_curves(sweep, collected):
    dirs = list(collected.runs["run_dir"][:4])
    errors: list = []
    cur = load_curves(sweep.root, [*dirs, "extra/truncated_parquet", "extra/error"], errors=errors)
    assert list(cur.columns) == ["run_dir", *CURVE_COLUMNS]
    assert cur["step"].dtype == np.int64
    assert all(cur[c].dtype == np.float64 for c in CURVE_COLUMNS[1:])
    sizes = cur.groupby("run_dir").size()
    expected = collected.runs.set_index("run_dir").loc[dirs, "metrics_rows"]
    assert sizes.loc[dirs].tolist() == expected.astype(int).tolist()
    assert {e[0] for e in errors} == {"extra/truncated_parquet", "extra/error"}
    # val columns are null except on eval steps
    one = cur[cur["run_dir"] == dirs[0]]
    assert one["val_bpc"].notna().sum() == (one["step"] % 10 == 0).sum()


def test_load_curves_missing_column_is_nan(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    pq.write_table(
        pa.table({"step": [1, 2, 3], "train_loss": [3.0, 2.0, 1.0]}), d / "metrics.parquet"
    )
    cur = load_curves(tmp_path, ["r"])
    assert cur["grad_norm_post"].isna().all() and cur["train_loss"].tolist() == [3.0, 2.0, 1.0]
    empty = load_curves(tmp_path, [])
    assert empty.empty and "step" in empty.columns
