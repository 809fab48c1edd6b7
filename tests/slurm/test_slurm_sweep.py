"""The cluster path for real: `python -m seqbench sweep ... hydra/launcher=slurm_local`
submits through hydra-submitit-launcher to the single-node SLURM cluster of
scripts/slurm/up.sh, and the results must be the ones the basic launcher gets in-process:
same statuses, divergence steps and final numbers (CPU, one thread, fixed seeds, so a run
is deterministic wherever it executes). A failing job must be recorded while the others
finish, and a job stopped by `scancel` or `scontrol requeue` must continue from its
checkpoint, ending exactly where an uninterrupted run ends.

Skipped without a cluster (see conftest.py); about 3 minutes with one, on 2 busy cores.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
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

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PRESET = "slurm_smoke"
LAUNCHER = "hydra/launcher=slurm_local"
SWEEP_TIMEOUT = 420  # seconds; a bound for failures, not an expectation


def is_clock(column: str) -> bool:
    """Wall-clock numbers (durations, speeds, timestamps) differ between any two
    executions of a run; every other column must not."""
    return (column == "wall_s" or column.startswith("timing")
            or column.endswith(("seconds", "per_second", "_at"))
            or column.startswith("seconds"))  # seconds_to_target

# One longer run for the interruption tests: 6,000 steps (about 6 s of training here),
# a checkpoint every 100. It must outlast the 2 s between two running summaries
# (train.SUMMARY_EVERY_S): the tests wait for a summary that reports steps and a
# checkpoint, and at 2,000 steps (1.9 s) the run could end before its second summary.
# trainer.threads=0 leaves the thread count to the trainer, which must take it from
# SLURM_CPUS_PER_TASK (slurm_local asks for one CPU).
LONG_STEPS = 6000
LONG = [PRESET, "optim.lr=4", "clip=none", "seed=0", f"trainer.max_steps={LONG_STEPS}",
        "trainer.checkpoint_every=100", "trainer.threads=0", "hydra.sweeper.report=false"]
LONG_RUN = "optim=sgd,optim.lr=4,clip=none,seed=0"


def sweep_dir_name(preset: str, *overrides: str) -> str:
    """The sweep directory (under runs/) and report directory (under reports/) name."""
    from seqbench.sweep import sweep_dir_name as name

    return name(preset, overrides)


# ---- the smoke preset, on SLURM and in-process ----------------------------------------

@pytest.fixture(scope="module")
def smoke(slurm, tmp_path_factory):
    """slurm_smoke with trainer.on_nonfinite=raise, so that its lr=1e38 run (NaN at step
    2) fails with an error while the others complete or diverge; once through SLURM and
    once with the basic launcher, each in its own directory."""
    args = [PRESET, "trainer.on_nonfinite=raise"]
    out = SimpleNamespace()
    for name, extra in (("slurm", [LAUNCHER]), ("basic", [])):
        cwd = tmp_path_factory.mktemp(name)
        rc, log = run_sweep(cwd, *args, *extra, timeout=SWEEP_TIMEOUT)
        setattr(out, name, SimpleNamespace(cwd=cwd, rc=rc, log=log,
                                           runs=cwd / "runs" / sweep_dir_name(*args),
                                           report=cwd / "reports" / sweep_dir_name(*args)))
    return out


def report_table(report: Path, name: str) -> pd.DataFrame:
    df = pd.read_csv(report / name)
    df = df.drop(columns=[c for c in df.columns if is_clock(c)])
    key = "run_dir" if "run_dir" in df.columns else list(df.columns)
    return df.sort_values(key).reset_index(drop=True)


ACTIVE = ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "CONFIGURING", "SUSPENDED")


def job_history(job: str, cwd: Path) -> list[str]:
    """`JobID|State` of every start of `job` (and of its array tasks) once all have
    ended: a job's result can be read while its process is still exiting, so accounting
    may show it RUNNING a few seconds longer."""
    def ended():
        out = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-o", "JobID,State", "-j", job],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        lines = out.split()
        return lines if lines and not lines[-1].endswith(ACTIVE) and not any(
            line.endswith(("|PENDING", "|RUNNING", "|COMPLETING")) for line in lines) else None

    return wait_for(f"job {job} to end in accounting", ended, 120, cwd)


def test_sweep_on_slurm_reports_what_the_basic_launcher_reports(smoke):
    s, b = smoke.slurm, smoke.basic
    assert b.rc == 1, b.log  # the raise-policy run is an error in both
    assert s.rc == 1, f"{s.log}\n{diagnostics(s.cwd)}"
    for table in ("runs.csv", "cells.csv", "lr_summary.csv"):
        on_slurm, basic = report_table(s.report, table), report_table(b.report, table)
        assert list(on_slurm.columns) == list(basic.columns), table
        pd.testing.assert_frame_equal(on_slurm, basic, check_exact=False, rtol=1e-9,
                                      obj=table)
    runs = report_table(s.report, "runs.csv")
    assert len(runs) == 5
    assert sorted(runs["status"]) == ["completed"] * 3 + ["diverged", "error"]
    diverged = runs[runs["status"] == "diverged"].iloc[0]
    assert diverged["divergence"] == "exploded" and diverged["divergence_step"] > 0


def test_every_run_executed_as_a_task_of_one_job_array(smoke):
    """The sweep is one job array (README: "submits one job array"), not one job after
    another; every run dir was written inside SLURM by the job that sacct lists."""
    run_dirs = sorted(p for p in smoke.slurm.runs.iterdir() if p.is_dir()
                      and not p.name.startswith("."))
    ids = [slurm_job_id(d) for d in run_dirs]
    assert all(re.fullmatch(r"\d+(_\d+)?", i) for i in ids), ids
    arrays = {i.split("_")[0] for i in ids}
    assert len(arrays) == 1 and all("_" in i for i in ids), (
        f"{len(ids)} runs came from {len(arrays)} SLURM jobs {sorted(arrays)}: "
        "the sweep was not submitted as one job array")
    states = job_history(next(iter(arrays)), smoke.slurm.cwd)
    assert sorted(states) == sorted(f"{i}|COMPLETED" for i in ids), states


def test_a_failing_job_is_recorded_and_the_others_complete(smoke):
    s = smoke.slurm
    assert s.rc == 1
    assert "5 jobs: 3 completed, 1 diverged, 1 error" in s.log, s.log
    assert (s.report / "report.html").is_file()  # the sweep went on to its report
    failed = s.runs / "optim=sgd,optim.lr=1e+38,clip=none,seed=0"
    summary = read_summary(failed)
    assert summary["status"] == "error"
    assert summary["error"].startswith("NonFiniteError: non-finite loss or gradient at step 2")
    assert f"error: {failed.name}: NonFiniteError" in s.log
    others = [read_summary(d) for d in s.runs.iterdir()
              if d.is_dir() and d != failed and not d.name.startswith(".")]
    assert sorted(o["status"] for o in others) == ["completed"] * 3 + ["diverged"]


# ---- interruptions ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def uninterrupted(slurm, tmp_path_factory):
    """The long run trained in this process without interruption, as the reference a
    resumed run must reproduce: the overrides its sweep job gets, one torch thread."""
    from omegaconf import OmegaConf

    from seqbench import sweep as sw
    from seqbench.config import compose, conf_dir
    from seqbench.train import train

    preset = OmegaConf.load(conf_dir() / "sweep" / f"{PRESET}.yaml")
    grids = OmegaConf.to_container(preset.hydra.sweeper.grids)
    jobs = sw.expand(grids, sw.split_cli_overrides([a for a in LONG[1:]
                                                     if not a.startswith("hydra.")]))
    assert [j.name for j in jobs] == [LONG_RUN]  # the command line makes it one job
    overrides = [f"+sweep={PRESET}", *jobs[0].overrides, "trainer.threads=1"]
    run_dir = tmp_path_factory.mktemp("reference")
    train(compose(overrides), run_dir)
    return run_dir


def wait_for_checkpoint(run: Path, proc: subprocess.Popen, cwd: Path) -> int:
    """Block until the running job has saved a checkpoint; the steps done by then."""
    def saved():
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before the run checkpointed\n{diagnostics(cwd)}")
        s = read_summary(run)
        if (run / "checkpoint.pt").exists() and s and s["status"] == "running":
            return s["steps_completed"] or None
        return None

    steps = wait_for("the first checkpoint of the long run", saved, 240, cwd, poll=0.1)
    assert steps < LONG_STEPS, "the run finished before it could be interrupted"
    return steps


def assert_resumed_exactly(run: Path, reference: Path, resumed_from: list[int]) -> None:
    """Completed after resuming from the steps `resumed_from`, with every metric row and
    final number equal to the uninterrupted run's."""
    s, ref = read_summary(run), read_summary(reference)
    assert s["status"] == "completed", s
    assert s["resumed_from"] == resumed_from
    assert s["steps_completed"] == LONG_STEPS
    assert s["env"]["threads"] == 1, "torch threads were not set from SLURM_CPUS_PER_TASK"
    for key in ("final_train_loss", "final_val_loss", "final_val_bpc", "best_val_bpc",
                "clip_fraction", "grad_norm_pre", "tokens_seen"):
        assert s[key] == pytest.approx(ref[key], rel=1e-9), key
    rows = pd.read_parquet(run / "metrics.parquet")
    ref_rows = pd.read_parquet(reference / "metrics.parquet")
    assert rows["step"].tolist() == list(range(1, LONG_STEPS + 1))  # no gap, no repeat
    columns = [c for c in ref_rows.columns if not is_clock(c)]
    pd.testing.assert_frame_equal(rows[columns], ref_rows[columns], check_exact=False,
                                  rtol=1e-9)


def test_a_cancelled_job_resumes_from_its_checkpoint_when_the_sweep_runs_again(
        slurm, uninterrupted, tmp_path):
    proc = start_sweep(tmp_path, *LONG, LAUNCHER)
    run = tmp_path / "runs" / sweep_dir_name(*LONG) / LONG_RUN
    wait_for_checkpoint(run, proc, tmp_path)
    job = slurm_job_id(run)
    subprocess.run(["scancel", job], check=True, timeout=60)
    log = finish(proc, tmp_path, SWEEP_TIMEOUT)
    # cancelled for good: an error of this sweep, which still ends with its counts
    assert proc.returncode == 1, f"{log}\n{diagnostics(tmp_path)}"
    assert "1 jobs: 0 completed, 0 diverged, 1 error" in log, log
    wait_for("the cancelled job to leave the queue", lambda: not in_queue([job]), 120,
             tmp_path)
    s = read_summary(run)
    assert s["status"] == "interrupted", s
    assert 0 < s["steps_completed"] < LONG_STEPS
    assert (run / "checkpoint.pt").exists()
    stopped_at = s["steps_completed"]

    rc, log = run_sweep(tmp_path, *LONG, LAUNCHER, timeout=SWEEP_TIMEOUT)
    assert rc == 0, f"{log}\n{diagnostics(tmp_path)}"
    assert "1 jobs: 1 completed, 0 diverged, 0 error" in log, log
    assert_resumed_exactly(run, uninterrupted, [stopped_at])
    assert not (run / "checkpoint.pt").exists()  # a finished run keeps no checkpoint


def scontrol_job(job: str) -> dict[str, str]:
    """`scontrol show job` as a dict (JobState, Restarts, ...)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def test_a_requeued_or_preempted_job_resumes_from_its_checkpoint_within_the_same_sweep(
        slurm, uninterrupted, tmp_path):
    """`scontrol requeue` (SIGTERM; SLURM requeues), then, once the job runs again,
    SIGUSR2 as SLURM sends it before a time limit and submitit's own pre-emption test
    does (submitit's handler requeues the job itself): one sweep, one run, two resumes."""
    proc = start_sweep(tmp_path, *LONG, LAUNCHER)
    run = tmp_path / "runs" / sweep_dir_name(*LONG) / LONG_RUN
    wait_for_checkpoint(run, proc, tmp_path)
    job = slurm_job_id(run)
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
    # the sweep waits while the job starts again (AuthInfo cred_expire=10 in up.sh: about
    # 11 s later); it is training again once it has replaced its checkpoint
    wait_for("the requeued job to start again", lambda: scontrol_job(job).get("Restarts")
             == "1" and scontrol_job(job).get("JobState") == "RUNNING", 120, tmp_path)
    first = (run / "checkpoint.pt").stat().st_ino

    def training_again():
        try:
            return (run / "checkpoint.pt").stat().st_ino != first
        except FileNotFoundError:  # finished: checkpoint removed
            pytest.fail(f"the run ended before it could be pre-empted\n{diagnostics(tmp_path)}")

    wait_for("a checkpoint of the resumed run", training_again, 120, tmp_path, poll=0.05)
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=60)
    log = finish(proc, tmp_path, SWEEP_TIMEOUT)
    assert proc.returncode == 0, f"{log}\n{diagnostics(tmp_path)}"
    assert "1 jobs: 1 completed, 0 diverged, 0 error" in log, log
    history = [line.split("|")[1] for line in job_history(job, tmp_path)]
    assert history == ["REQUEUED", "REQUEUED", "COMPLETED"], history
    stops = read_summary(run)["resumed_from"]
    assert len(stops) == 2 and 0 < stops[0] < stops[1] < LONG_STEPS, stops
    assert_resumed_exactly(run, uninterrupted, stops)
    assert submitted_ids(tmp_path) == [job]  # resumed by SLURM, never resubmitted
