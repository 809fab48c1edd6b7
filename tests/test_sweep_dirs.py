"""Issue 15: a second sweep never destroys the first.

A sweep's directory is keyed by the preset and its command-line globals; a run directory
that holds a run of another experiment is never overwritten without --force; runs
written before the keying are found and reused.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqbench import sweep as sw
from seqbench.cli import main
from seqbench.confdir import conf_dir

TINY = ["task.seq_len=16", "task.batch_size=4", "model.hidden_size=8", "model.embed_dim=4",
        "trainer.eval_batches=2", "trainer.eval_every=0",
        "hydra.sweeper.grids=[{optim:sgd,optim.lr:[1,64],clip:none}]"]
JOBS = ["optim=sgd,optim.lr=1,clip=none", "optim=sgd,optim.lr=64,clip=none"]


def sweep(cwd: Path, *args: str, preset: str = "demo") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "seqbench", "sweep", preset, *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


def summaries(runs: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/summary.json")}


def stamps(runs: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/*")}


@pytest.fixture
def book(tmp_path) -> Path:
    text = "".join(f"{i} it was the best of times, it was the worst of times\n"
                   for i in range(400))
    (tmp_path / "war_and_peace.txt").write_text(text)
    return tmp_path / "war_and_peace.txt"


# ---- names -----------------------------------------------------------------------------

def test_the_sweep_directory_is_named_by_the_preset_and_its_globals():
    assert sw.sweep_dir_name("demo", []) == "demo"
    # swept values are job axes (in the job names), Hydra's and non-experiment keys are not
    # the experiment: none of them keys the directory
    assert sw.sweep_dir_name("demo", ["seed=0,1", "trainer.threads=1", "hydra/launcher=basic",
                                      "hydra.sweeper.force=true", "trainer.progress=off"]) \
        == "demo"
    name = sw.sweep_dir_name("demo", ["trainer.max_steps=20", "seed=0", "task=text_file",
                                      "task.path=war_and_peace.txt"])
    assert name == "demo+task=text_file,task.path=war_and_peace.txt,trainer.max_steps=20,seed=0"
    # the order on the command line does not matter
    assert name == sw.sweep_dir_name("demo", ["seed=0", "task.path=war_and_peace.txt",
                                              "trainer.max_steps=20", "task=text_file"])
    # a path is not a directory level: replaced characters, and a hash keeps names apart
    a = sw.sweep_dir_name("demo", ["task.path=/data/a/b.txt"])
    b = sw.sweep_dir_name("demo", ["task.path=/data/a_b.txt"])
    assert "/" not in a and a != b and a.startswith("demo+task.path=")


def test_differences_name_the_keys_that_differ():
    old = {"optim.lr": 1.0, "trainer.max_steps": 20, "trainer.threads": 1, "task.name": "x"}
    new = {"optim.lr": 1.0, "trainer.max_steps": 30, "trainer.threads": 2, "task.name": "y",
           "model.forget_bias": None}
    assert sw.differences(old, new) == [("task.name", "x", "y"),
                                        ("trainer.max_steps", 20, 30)]


def write_run(d: Path, status: str, config: dict) -> None:
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"status": status, "config": config}))


def test_a_conflict_is_a_kept_run_of_another_experiment(tmp_path):
    cfg = {"optim.lr": 1.0, "seed": 0}
    for status in ("completed", "diverged", "interrupted", "running"):
        write_run(tmp_path / status, status, cfg)
        clash = sw.conflict(tmp_path / status, {**cfg, "seed": 1})
        assert clash is not None and clash.status == status
        assert clash.differ == [("seed", 0, 1)]
        assert sw.conflict(tmp_path / status, cfg) is None  # the same experiment: ours
    write_run(tmp_path / "error", "error", cfg)  # a failed run holds nothing to keep
    assert sw.conflict(tmp_path / "error", {**cfg, "seed": 1}) is None
    assert sw.conflict(tmp_path / "missing", cfg) is None


def test_the_refusal_lists_the_first_conflicts_then_a_count(tmp_path):
    clashes = [sw.Conflict(tmp_path / f"job{i}", "completed",
                           [("trainer.max_steps", 20, 30), ("task.name", "a", "b"),
                            ("seed", 0, 1), ("optim.lr", 1, 2)]) for i in range(7)]
    lines = sw.conflict_lines(clashes, "use --force")
    assert len(lines) == 6
    assert lines[0] == (f"{tmp_path}/job0: holds a completed run of another experiment "
                        "(trainer.max_steps is 20 there, 30 here, task.name is \"a\" there, "
                        "\"b\" here, seed is 0 there, 1 here and 1 more keys); use --force")
    assert lines[-1] == "... and 2 more run directories of other experiments"


# ---- real sweeps -------------------------------------------------------------------------

@pytest.mark.slow
def test_a_second_sweep_with_other_settings_keeps_the_first(tmp_path, book):
    """The issue's two commands: a War and Peace sweep, then the same preset with fewer
    steps on the bundled corpus. Both sets of runs and both reports stay."""
    first_args = ["task=text_file", f"task.path={book.name}", "seed=0",
                  "trainer.max_steps=15", *TINY]
    second_args = ["seed=0", "trainer.max_steps=10", *TINY]
    first = sweep(tmp_path, *first_args)
    assert first.returncode == 0, first.stderr
    second = sweep(tmp_path, *second_args)
    assert second.returncode == 0, second.stderr
    assert "0 skipped" in second.stdout
    one = tmp_path / "runs" / sw.sweep_dir_name("demo", first_args)
    two = tmp_path / "runs" / sw.sweep_dir_name("demo", second_args)
    assert one != two
    for runs, task, steps in ((one, "text_file", 15), (two, "tinyshakespeare", 10)):
        found = summaries(runs)
        assert sorted(found) == JOBS
        for s in found.values():
            assert s["status"] in ("completed", "diverged")
            assert s["config"]["trainer.max_steps"] == steps
            assert s["config"]["task.name"] == task
        info = json.loads((runs / "sweep.json").read_text())
        assert info["preset"] == "demo" and f"trainer.max_steps={steps}" in info["globals"]
        report = tmp_path / "reports" / runs.name
        assert (report / "report.html").is_file()
        assert "runs.csv" in os.listdir(report)
    # one report over both keeps the experiments apart: 4 cells, not 2
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "both")]) == 0
    import pandas as pd

    cells = pd.read_csv(tmp_path / "both" / "cells.csv")
    assert len(cells) == 4 and set(cells["n"]) == {1}


@pytest.mark.slow
def test_a_sweep_into_a_directory_of_another_experiment_is_refused_and_force_replaces(
        tmp_path):
    runs = tmp_path / "runs" / "mine"
    where = f"hydra.sweep.dir={runs}"
    first = sweep(tmp_path, where, "seed=0", "trainer.max_steps=6", "trainer.param_log_every=2",
                  *TINY)
    assert first.returncode == 0, first.stderr
    before = stamps(runs)
    assert all((runs / job / "param_metrics.parquet").is_file() for job in JOBS)

    refused = sweep(tmp_path, where, "seed=0", "trainer.max_steps=8", *TINY)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in refused.stderr
    for line, job in zip(lines, JOBS):
        assert line == (f"seqbench: error: {runs / job}: holds a completed run of another "
                        "experiment (trainer.max_steps is 6 there, 8 here, "
                        "trainer.param_log_every is 2 there, 0 here); run the sweep into "
                        "another directory (hydra.sweep.dir=DIR) or replace it with --force")
    assert lines[-1] == ("seqbench: error: 2 job(s) would overwrite runs of other "
                         "experiments; nothing was launched")
    assert stamps(runs) == before  # nothing was touched
    assert {s["steps_completed"] for s in summaries(runs).values()} == {6}

    forced = sweep(tmp_path, where, "seed=0", "trainer.max_steps=8", "--force", *TINY)
    assert forced.returncode == 0, forced.stderr
    after = summaries(runs)
    assert {s["steps_completed"] for s in after.values()} == {8}
    # the replaced run left nothing of its own behind
    assert not any((runs / job / "param_metrics.parquet").exists() for job in JOBS)


@pytest.mark.slow
def test_train_into_a_run_directory_of_another_experiment_is_refused(tmp_path):
    run = tmp_path / "runs" / "one"
    base = ["seed=0", "task.seq_len=16", "task.batch_size=4", "model.hidden_size=8",
            "model.embed_dim=4", "trainer.eval_batches=2", "trainer.progress=off",
            f"hydra.run.dir={run}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def train(*args):
        return subprocess.run([sys.executable, "-m", "seqbench", "train", *base, *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)

    assert train("trainer.max_steps=4").returncode == 0
    again = train("trainer.max_steps=4")  # the same experiment: it is the user's to repeat
    assert again.returncode == 0, again.stderr
    other = train("trainer.max_steps=5")
    assert other.returncode == 2
    assert other.stderr.strip() == (
        f"seqbench: error: {run}: holds a completed run of another experiment "
        "(trainer.max_steps is 4 there, 5 here); choose another hydra.run.dir, or replace "
        "it with --force")
    assert json.loads((run / "summary.json").read_text())["steps_completed"] == 4
    forced = train("trainer.max_steps=5", "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((run / "summary.json").read_text())["steps_completed"] == 5


@pytest.mark.slow
def test_runs_of_the_old_layout_are_reused_not_rerun(tmp_path):
    """Before the keying, `sweep demo GLOBALS` wrote into runs/demo/. The same command now
    keys its own directory and copies those finished runs in instead of training again;
    runs/demo/ keeps them."""
    args = ["seed=0", "trainer.max_steps=6", *TINY]
    old = tmp_path / "runs" / "demo"
    legacy = sweep(tmp_path, *args, "hydra.sweep.dir=runs/demo")  # the old layout
    assert legacy.returncode == 0, legacy.stderr
    kept = stamps(old)
    now = sweep(tmp_path, *args)
    assert now.returncode == 0, now.stderr
    assert "2 jobs (2 already finished)" in now.stdout
    assert f"2 of them were copied from {Path('runs/demo')}/" in now.stdout
    assert "2 jobs: 0 completed, 0 diverged, 0 error, 2 skipped" in now.stdout
    new = tmp_path / "runs" / sw.sweep_dir_name("demo", args)
    assert summaries(new) == summaries(old)
    assert stamps(old) == kept
    assert (tmp_path / "reports" / new.name / "runs.csv").is_file()
    # and an unchanged re-run skips them where they now are
    third = sweep(tmp_path, *args)
    assert "2 jobs (2 already finished)" in third.stdout and "copied" not in third.stdout


@pytest.fixture
def own_preset():
    """A preset file of this test's own in conf/sweep/, removed afterwards."""
    path = conf_dir() / "sweep" / "test_changed_preset.yaml"
    if not os.access(path.parent, os.W_OK):
        pytest.skip("conf/ is read-only (an installed wheel)")
    demo = (conf_dir() / "sweep" / "demo.yaml").read_text()

    def write(max_steps: int) -> None:
        path.write_text(demo.replace("max_steps: 300", f"max_steps: {max_steps}"))

    yield write
    path.unlink(missing_ok=True)


@pytest.mark.slow
def test_a_changed_preset_file_does_not_overwrite_the_runs_of_the_old_one(tmp_path,
                                                                         own_preset):
    own_preset(6)
    first = sweep(tmp_path, *TINY, preset="test_changed_preset")
    assert first.returncode == 0, first.stderr
    runs = tmp_path / "runs" / sw.sweep_dir_name("test_changed_preset", TINY)
    before = stamps(runs)
    own_preset(7)  # the preset's author changed the step count
    again = sweep(tmp_path, *TINY, preset="test_changed_preset")
    assert again.returncode == 2
    assert "trainer.max_steps is 6 there, 7 here" in again.stderr
    assert "2 job(s) would overwrite runs of other experiments" in again.stderr
    assert stamps(runs) == before
