"""Several runs per GPU (issue 25): `hydra.launcher.runs_per_gpu=K` bundles K jobs into
one submitit task whose runs execute side by side as separate processes.

On this machine through `hydra/launcher=seqbench_submitit_local` (submitit's local
executor with seqbench's keys), on CPU with one thread a run; tests/slurm/ does the same
on the single-node SLURM cluster. The planning helpers (groups, threads, the memory a
bundle needs, the refusals) are tested directly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from seqbench import bundles

LAUNCHER = "hydra/launcher=seqbench_submitit_local"
# 7 jobs of slurm_smoke's tiny model: first one that fails at step 2 (lr 1e38 under
# on_nonfinite=raise, the failure the sweep tests inject), then six that train
SEVEN = ["slurm_smoke", "trainer.on_nonfinite=raise", "hydra.sweeper.report=false",
         "hydra.sweeper.grids=[{optim:sgd,optim.lr:1e38,clip:none,seed:0},"
         "{optim:sgd,optim.lr:4,clip:none,seed:[0,1,2,3,4,5]}]"]
FAILING = "optim=sgd,optim.lr=1e+38,clip=none,seed=0"
# two longer runs for the signal tests (as tests/slurm/: 6,000 steps, a checkpoint
# every 100, so they are still training when the signal comes)
LONG_STEPS = 6000
TWO_LONG = ["slurm_smoke", "optim.lr=4", "clip=none", "seed=0,1",
            f"trainer.max_steps={LONG_STEPS}", "trainer.checkpoint_every=100",
            "hydra.sweeper.report=false", "hydra.launcher.runs_per_gpu=2"]


# ---- planning ---------------------------------------------------------------------------

def test_jobs_are_grouped_in_order_with_a_smaller_last_bundle():
    assert bundles.group(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert bundles.group(list(range(4)), 4) == [[0, 1, 2, 3]]
    assert bundles.group([], 3) == []


def test_each_run_gets_its_share_of_the_task_cpus():
    assert bundles.threads_per_run(8, 4) == 2
    assert bundles.threads_per_run(4, 3) == 1
    assert bundles.threads_per_run(1, 2) == 1  # never 0
    assert bundles.threads_per_run(None, 3) == 1  # submitit_local asks for no CPUs


@pytest.mark.parametrize("k", [0, -1, 1.5, "2", True, 8])
def test_k_outside_1_to_the_number_of_jobs_is_one_line(k):
    line = bundles.k_error(k, 7)
    assert line.startswith(f"hydra.launcher.runs_per_gpu={k}: ") and "\n" not in line
    assert "(7)" in line


def test_k_from_1_to_the_number_of_jobs_is_accepted():
    assert all(bundles.k_error(k, 7) is None for k in range(1, 8))


def test_the_memory_model_covers_what_was_measured_on_an_h200():
    """CONTEXT_MIB + 2 x estimate against nvidia-smi's per-process memory of the two
    configs of reports/bench/packing-nvidia-h200.md: never below, at most 5% above."""
    from seqbench.bench.packing import SIZES
    from seqbench.config import compose, validate

    measured = {"lstm128": 880, "lstm512": 1256}
    for name, mib in measured.items():
        cfg = compose(list(SIZES[name]))
        need = bundles.run_memory_mib(cfg, validate(cfg, check_data=False))
        assert mib <= need <= 1.05 * mib, (name, need)
    cpu = compose([*SIZES["lstm128"], "trainer.device=cpu"])
    assert bundles.run_memory_mib(cpu, validate(cpu, check_data=False)) == 0


def test_a_bundle_that_does_not_fit_the_declared_memory_is_refused():
    per_run = {f"run{i}": 883.0 for i in range(20)}  # the 1 x 128 LSTM
    assert bundles.fit_error(16, per_run, 16) is None  # 13.8 GiB
    line = bundles.fit_error(19, per_run, 16)
    assert line.startswith("hydra.launcher.runs_per_gpu=19: a bundle of 19 runs needs "
                           "about 16.4 GiB")
    assert "at most 18 fit" in line and "hydra.launcher.gpu_memory_gib=16" in line
    assert bundles.memory_error(0) and bundles.memory_error(-4) and bundles.memory_error(True)
    assert bundles.memory_error(40) is None


# ---- the command line -------------------------------------------------------------------

def sweep(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seqbench", "sweep", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.parametrize("extra, says", [
    (["hydra.launcher.runs_per_gpu=0"], "runs_per_gpu=0: an integer from 1 to"),
    (["hydra.launcher.runs_per_gpu=-3"], "runs_per_gpu=-3: an integer from 1 to"),
    (["hydra.launcher.runs_per_gpu=1.5"], "runs_per_gpu=1.5: must be an integer"),
    (["hydra.launcher.runs_per_gpu=8"], "runs_per_gpu=8: more runs per GPU than the sweep "
                                        "has jobs"),
    (["hydra.launcher.runs_per_gpu=3", "hydra.launcher.gpu_memory_gib=2"],
     "runs_per_gpu=3: a bundle of 3 runs needs about 2.5 GiB"),
])
def test_bad_k_is_one_line_exit_2_and_writes_nothing(tmp_path, extra, says):
    out = sweep(tmp_path, *SEVEN, LAUNCHER, *extra)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqbench: error: hydra.launcher."), lines
    assert says in lines[0]
    assert not (tmp_path / "runs").exists()


# ---- real sweeps ------------------------------------------------------------------------

def run_dirs(runs: Path) -> list[Path]:
    return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))


def job_id(run_dir: Path) -> str:
    from omegaconf import OmegaConf

    return str(OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.job.id)


def tasks(runs: Path) -> list[Path]:
    """submitit's folders, one per task (named after its job id)."""
    return sorted(p for p in (runs / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?",
                                                                           p.name))


def summary(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture(scope="module")
def seven(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("seven")
    from seqbench.sweep import sweep_dir_name

    runs = cwd / "runs" / sweep_dir_name("slurm_smoke", SEVEN[1:])
    first = sweep(cwd, *SEVEN, LAUNCHER, "hydra.launcher.runs_per_gpu=3")
    first.tasks = tasks(runs) if runs.is_dir() else []
    first.ids = {d.name: job_id(d) for d in run_dirs(runs)} if runs.is_dir() else {}
    first.summaries = {d.name: summary(d) for d in run_dirs(runs)} if runs.is_dir() else {}
    again = sweep(cwd, *SEVEN, LAUNCHER, "hydra.launcher.runs_per_gpu=3")
    return first, again, runs


@pytest.mark.slow
def test_k3_over_7_jobs_runs_3_tasks_and_7_run_directories(seven):
    first, _, runs = seven
    assert first.returncode == 1, first.stdout + first.stderr  # the injected error
    assert "3 runs per GPU: 3 array tasks" in first.stdout
    assert "7 jobs: 6 completed, 0 diverged, 1 error" in first.stdout
    dirs = run_dirs(runs)
    assert len(dirs) == 7 and len(first.tasks) == 3
    by_task: dict[str, list[str]] = {}
    for name, task in first.ids.items():
        by_task.setdefault(task, []).append(name)
    assert sorted(len(v) for v in by_task.values()) == [1, 3, 3]
    assert {t.name for t in first.tasks} == set(by_task)
    for s in first.summaries.values():  # one thread each: cpus_per_task (none) // 3, >= 1
        assert s["config"]["trainer.threads"] == 1


@pytest.mark.slow
def test_a_failing_run_is_an_error_and_its_bundle_mates_complete(seven):
    first, _, runs = seven
    failed = first.summaries[FAILING]
    assert failed["status"] == "error"
    assert failed["error"].startswith("NonFiniteError: non-finite loss or gradient at step 2")
    assert f"error: {FAILING}: NonFiniteError" in first.stderr
    mates = [n for n, task in first.ids.items() if task == first.ids[FAILING] and n != FAILING]
    assert len(mates) == 2
    assert all(first.summaries[n]["status"] == "completed" for n in mates)
    assert all(first.summaries[n]["steps_completed"] == 60 for n in mates)


@pytest.mark.slow
def test_the_sweep_again_runs_only_the_unfinished_run(seven):
    _, again, runs = seven
    assert again.returncode == 1, again.stdout + again.stderr
    assert "7 jobs (6 already finished)" in again.stdout
    assert "3 runs per GPU: 1 array task," in again.stdout
    assert "7 jobs: 0 completed, 0 diverged, 1 error, 6 skipped" in again.stdout
    assert len(tasks(runs)) == 4


# ---- signals ----------------------------------------------------------------------------

def start(cwd: Path, *args: str) -> subprocess.Popen:
    log = open(cwd / f"sweep-{len(list(cwd.glob('sweep-*.log')))}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "seqbench", "sweep", *args], cwd=cwd,
                            stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc.log = log  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float = 420) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.log.close()  # type: ignore[attr-defined]
    return Path(proc.log.name).read_text()  # type: ignore[attr-defined]


def wait_for(what: str, predicate, timeout: float = 240, poll: float = 0.1):
    t0 = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def both_checkpointed(runs: Path, proc: subprocess.Popen):
    """The bundle's process (submitit's task, under its local controller) once both
    runs are training with a checkpoint; (pid, steps of each run)."""
    if proc.poll() is not None:
        pytest.fail("the sweep ended before its runs checkpointed")
    if not runs.is_dir():
        return None
    dirs = run_dirs(runs)
    states = [summary(d) for d in dirs]
    if len(dirs) != 2 or not all(s and s["status"] == "running" and s["steps_completed"]
                                 and (d / "checkpoint.pt").exists()
                                 for d, s in zip(dirs, states)):
        return None
    found = tasks(runs)
    task = children(int(found[-1].name)) if found else []
    return (task[0], [s["steps_completed"] for s in states]) if task else None


def assert_resumed(runs: Path, stops: int) -> None:
    for d in run_dirs(runs):
        s = summary(d)
        assert s["status"] == "completed", s
        assert len(s["resumed_from"]) == stops and 0 < s["resumed_from"][0] < LONG_STEPS, s
        assert s["steps_completed"] == LONG_STEPS
        steps = pq.read_table(d / "metrics.parquet", columns=["step"])["step"].to_pylist()
        assert steps == list(range(1, LONG_STEPS + 1)), d.name  # no gap, no repeat
        assert not (d / "checkpoint.pt").exists()


@pytest.mark.slow
def test_sigterm_checkpoints_every_run_of_the_bundle_and_the_sweep_again_resumes_them(
        tmp_path):
    from seqbench.sweep import sweep_dir_name

    runs = tmp_path / "runs" / sweep_dir_name("slurm_smoke", TWO_LONG[1:])
    proc = start(tmp_path, *TWO_LONG, LAUNCHER)
    pid, _ = wait_for("both runs to checkpoint", lambda: both_checkpointed(runs, proc))
    os.kill(pid, signal.SIGTERM)  # what scancel sends
    log = finish(proc)
    assert proc.returncode == 1, log
    assert "2 jobs: 0 completed, 0 diverged, 2 error" in log, log
    stopped = [summary(d) for d in run_dirs(runs)]
    assert [s["status"] for s in stopped] == ["interrupted"] * 2, stopped
    assert all((d / "checkpoint.pt").exists() for d in run_dirs(runs))

    again = sweep(tmp_path, *TWO_LONG, LAUNCHER)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 jobs: 2 completed, 0 diverged, 0 error" in again.stdout
    assert_resumed(runs, 1)
    for d, s in zip(run_dirs(runs), stopped):
        assert summary(d)["resumed_from"] == [s["steps_completed"]]


@pytest.mark.slow
def test_sigusr2_checkpoints_every_run_and_the_requeued_task_resumes_them(tmp_path):
    from seqbench.sweep import sweep_dir_name

    runs = tmp_path / "runs" / sweep_dir_name("slurm_smoke", TWO_LONG[1:])
    proc = start(tmp_path, *TWO_LONG, LAUNCHER)
    pid, _ = wait_for("both runs to checkpoint", lambda: both_checkpointed(runs, proc))
    os.kill(pid, signal.SIGUSR2)  # the warning before a time limit; submitit requeues
    log = finish(proc)
    assert proc.returncode == 0, log
    assert "2 jobs: 2 completed, 0 diverged, 0 error" in log, log
    assert len(tasks(runs)) == 1  # requeued by submitit, not submitted again
    assert_resumed(runs, 1)
