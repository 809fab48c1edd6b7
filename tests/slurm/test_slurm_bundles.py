"""Several runs per array task on the single-node SLURM cluster (issue 25):
`hydra/launcher=slurm_local hydra.launcher.runs_per_gpu=K` submits one job array with a
task per bundle of K jobs, each task running its runs side by side as separate
processes. A failing run is recorded while its bundle-mates complete; a bundle stopped by
`scancel` resumes every one of its runs from its own checkpoint when the sweep runs
again, and one pre-empted with SIGUSR2 is requeued by submitit and resumes them within
the same sweep.

Skipped without a cluster (see conftest.py); about 4 minutes with one, on 2 busy cores.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.slurm.conftest import (
    diagnostics,
    finish,
    in_queue,
    read_summary,
    run_sweep,
    slurm_job_id,
    start_sweep,
    submitted_ids,
    wait_for,
)
from tests.slurm.test_slurm_sweep import SWEEP_TIMEOUT, job_history, sweep_dir_name

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

LAUNCHER = "hydra/launcher=slurm_local"
# 7 tiny jobs: the first fails at step 2 (lr 1e38, on_nonfinite=raise), six train
SEVEN = ["slurm_smoke", "trainer.on_nonfinite=raise", "hydra.sweeper.report=false",
         "hydra.sweeper.grids=[{optim:sgd,optim.lr:1e38,clip:none,seed:0},"
         "{optim:sgd,optim.lr:4,clip:none,seed:[0,1,2,3,4,5]}]"]
FAILING = "optim=sgd,optim.lr=1e+38,clip=none,seed=0"
# a bundle of two longer runs (6,000 steps, a checkpoint every 100) on a task of 2 CPUs:
# one thread each, still training when the signal comes
LONG_STEPS = 6000
TWO_LONG = ["slurm_smoke", "optim.lr=4", "clip=none", "seed=0,1",
            f"trainer.max_steps={LONG_STEPS}", "trainer.checkpoint_every=100",
            "hydra.sweeper.report=false", "hydra.launcher.runs_per_gpu=2",
            "hydra.launcher.cpus_per_task=2"]


def run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_k3_over_7_jobs_is_one_array_of_3_tasks_and_a_failure_spares_its_bundle_mates(
        slurm, tmp_path):
    rc, log = run_sweep(tmp_path, *SEVEN, LAUNCHER, "hydra.launcher.runs_per_gpu=3",
                        timeout=SWEEP_TIMEOUT)
    assert rc == 1, f"{log}\n{diagnostics(tmp_path)}"  # the injected error
    assert "3 runs per GPU: 3 array tasks" in log
    assert "7 jobs: 6 completed, 0 diverged, 1 error" in log, log
    runs = tmp_path / "runs" / sweep_dir_name(*SEVEN)
    dirs = run_dirs(runs)
    assert len(dirs) == 7
    ids = {d.name: slurm_job_id(d) for d in dirs}
    assert all(re.fullmatch(r"\d+_\d+", i) for i in ids.values()), ids
    arrays = {i.split("_")[0] for i in ids.values()}
    assert len(arrays) == 1, f"{len(arrays)} job arrays: {sorted(arrays)}"
    tasks = sorted(set(ids.values()))
    assert len(tasks) == 3
    assert sorted(list(ids.values()).count(t) for t in tasks) == [1, 3, 3]
    states = job_history(next(iter(arrays)), tmp_path)
    assert sorted(states) == sorted(f"{t}|COMPLETED" for t in tasks), states
    failed = read_summary(runs / FAILING)
    assert failed["status"] == "error"
    assert failed["error"].startswith("NonFiniteError: non-finite loss or gradient at step 2")
    mates = [n for n, t in ids.items() if t == ids[FAILING] and n != FAILING]
    assert len(mates) == 2
    for name in mates:
        s = read_summary(runs / name)
        assert s["status"] == "completed" and s["steps_completed"] == 60, s
        assert s["env"]["threads"] == 1  # cpus_per_task 1 // 3, at least one


def wait_for_both_checkpoints(runs: Path, proc: subprocess.Popen, cwd: Path) -> list[int]:
    """Block until both runs of the bundle train with a checkpoint; their steps."""
    def saved():
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before the runs checkpointed\n{diagnostics(cwd)}")
        if not runs.is_dir():
            return None
        dirs = run_dirs(runs)
        states = [read_summary(d) for d in dirs]
        if len(dirs) == 2 and all(s and s["status"] == "running" and s["steps_completed"]
                                  and (d / "checkpoint.pt").exists()
                                  for d, s in zip(dirs, states)):
            return [s["steps_completed"] for s in states]
        return None

    steps = wait_for("both runs of the bundle to checkpoint", saved, 240, cwd, poll=0.1)
    assert max(steps) < LONG_STEPS, "a run finished before it could be interrupted"
    return steps


def assert_resumed(runs: Path, stops: int) -> None:
    """Every run completed after `stops` resumes, every step recorded exactly once."""
    for d in run_dirs(runs):
        s = read_summary(d)
        assert s["status"] == "completed", s
        assert len(s["resumed_from"]) == stops, s["resumed_from"]
        assert all(0 < r < LONG_STEPS for r in s["resumed_from"])
        assert s["steps_completed"] == LONG_STEPS and s["env"]["threads"] == 1
        steps = pq.read_table(d / "metrics.parquet", columns=["step"])["step"].to_pylist()
        assert steps == list(range(1, LONG_STEPS + 1)), d.name
        assert not (d / "checkpoint.pt").exists()


def test_a_cancelled_bundle_resumes_all_its_runs_when_the_sweep_runs_again(slurm, tmp_path):
    runs = tmp_path / "runs" / sweep_dir_name(*TWO_LONG)
    proc = start_sweep(tmp_path, *TWO_LONG, LAUNCHER)
    wait_for_both_checkpoints(runs, proc, tmp_path)
    job = slurm_job_id(run_dirs(runs)[0])
    assert {slurm_job_id(d) for d in run_dirs(runs)} == {job}  # one task, both runs
    subprocess.run(["scancel", job], check=True, timeout=60)
    log = finish(proc, tmp_path, SWEEP_TIMEOUT)
    assert proc.returncode == 1, f"{log}\n{diagnostics(tmp_path)}"
    assert "2 jobs: 0 completed, 0 diverged, 2 error" in log, log
    wait_for("the cancelled task to leave the queue", lambda: not in_queue([job]), 120,
             tmp_path)
    stopped = {d.name: read_summary(d) for d in run_dirs(runs)}
    for name, s in stopped.items():  # every run of the bundle checkpointed
        assert s["status"] == "interrupted", (name, s)
        assert 0 < s["steps_completed"] < LONG_STEPS
        assert (runs / name / "checkpoint.pt").exists()

    rc, log = run_sweep(tmp_path, *TWO_LONG, LAUNCHER, timeout=SWEEP_TIMEOUT)
    assert rc == 0, f"{log}\n{diagnostics(tmp_path)}"
    assert "2 jobs: 2 completed, 0 diverged, 0 error, 0 skipped" in log, log
    assert_resumed(runs, 1)
    for name, s in stopped.items():  # each continued from its own checkpoint
        assert read_summary(runs / name)["resumed_from"] == [s["steps_completed"]]


def test_a_preempted_bundle_is_requeued_and_resumes_all_its_runs_in_the_same_sweep(
        slurm, tmp_path):
    """SIGUSR2, as SLURM sends it before a time limit and as a pre-emption test does:
    both runs checkpoint, submitit requeues the task, and it resumes both."""
    runs = tmp_path / "runs" / sweep_dir_name(*TWO_LONG)
    proc = start_sweep(tmp_path, *TWO_LONG, LAUNCHER)
    wait_for_both_checkpoints(runs, proc, tmp_path)
    job = slurm_job_id(run_dirs(runs)[0])
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=60)
    log = finish(proc, tmp_path, SWEEP_TIMEOUT)
    assert proc.returncode == 0, f"{log}\n{diagnostics(tmp_path)}"
    assert "2 jobs: 2 completed, 0 diverged, 0 error" in log, log
    history = [line.split("|")[1] for line in job_history(job, tmp_path)]
    assert history == ["REQUEUED", "COMPLETED"], history
    assert submitted_ids(tmp_path) == [job]  # requeued, never resubmitted
    assert_resumed(runs, 1)
