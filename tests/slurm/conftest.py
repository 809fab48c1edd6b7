"""The `slurm` tests need a real SLURM cluster with accounting (scripts/slurm/up.sh).

Without one they are skipped, with the reason; with SEQBENCH_REQUIRE_SLURM=1 (CI sets
it after starting the cluster) a missing or broken cluster fails them instead, so CI can
never pass by skipping. Helpers here run `python -m seqbench sweep` as a subprocess in a
test's own directory (runs/ and reports/ land there) and wait on the cluster with a
timeout on every wait.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def cluster_problem() -> str | None:
    """Why no usable cluster is reachable, or None when one is."""
    if not os.environ.get("SLURM_CONF"):
        return ("SLURM_CONF is not set; start the test cluster with "
                "`sudo scripts/slurm/up.sh && source scripts/slurm/env.sh`")
    for tool in ("sinfo", "sbatch", "sacct", "scontrol", "scancel"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/slurm/up.sh installs it)"
    try:
        nodes = _run(["sinfo", "-h", "-N", "-o", "%t"])
        usable = [s for s in nodes.split() if s.rstrip("*~#!%$@^-").startswith(
            ("idle", "mix", "alloc"))]
        if not usable:
            return f"no usable node in sinfo ({nodes.split() or 'none'})"
        # submitit follows its jobs with sacct: without accounting a sweep can hang
        _run(["sacct", "-n", "-X", "-S", "now", "-o", "JobID"])
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        return f"the cluster does not answer: {detail.strip().splitlines()[-1]}"
    return None


@pytest.fixture(scope="session")
def slurm() -> None:
    problem = cluster_problem()
    if problem is None:
        return
    if os.environ.get("SEQBENCH_REQUIRE_SLURM") == "1":
        pytest.fail(f"SEQBENCH_REQUIRE_SLURM=1 but {problem}", pytrace=False)
    pytest.skip(problem)


def _run(cmd: list[str], timeout: float = 60) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True,
                          timeout=timeout).stdout


def sweep_env() -> dict[str, str]:
    return {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}


def start_sweep(cwd: Path, *args: str) -> subprocess.Popen:
    """`python -m seqbench sweep ARGS` in `cwd`, output (both streams) to cwd/sweep-N.log."""
    n = len(list(cwd.glob("sweep-*.log")))
    log = open(cwd / f"sweep-{n}.log", "w")  # noqa: SIM115 -- closed in finish()
    proc = subprocess.Popen([sys.executable, "-m", "seqbench", "sweep", *args], cwd=cwd,
                            env=sweep_env(), stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, cwd: Path, timeout: float) -> str:
    """Wait for a sweep; its output. On timeout the sweep and its jobs are stopped."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        cancel_jobs_under(cwd)
        pytest.fail(f"the sweep did not end within {timeout} s\n{diagnostics(cwd)}")
    finally:
        proc.log.close()  # type: ignore[attr-defined]
    return Path(proc.log.name).read_text()  # type: ignore[attr-defined]


def run_sweep(cwd: Path, *args: str, timeout: float = 600) -> tuple[int, str]:
    proc = start_sweep(cwd, *args)
    out = finish(proc, cwd, timeout)
    return proc.returncode, out


def wait_for(what: str, predicate: Callable[[], object], timeout: float,
             cwd: Path | None = None, poll: float = 0.2):
    """Poll until `predicate()` is truthy; its value. Fails naming `what` after timeout."""
    t0 = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n"
                        + (diagnostics(cwd) if cwd else ""))
        time.sleep(poll)


def read_summary(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):  # not written yet, or being replaced
        return None


def slurm_job_id(run_dir: Path) -> str:
    """The SLURM job id (`123` or `123_4` in an array) a run directory was written by:
    the submitit launcher sets hydra.job.id, which Hydra saves in .hydra/hydra.yaml."""
    from omegaconf import OmegaConf

    return str(OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.job.id)


def submitted_ids(cwd: Path) -> list[str]:
    """Job ids submitit used under cwd: its folders are named after them."""
    return sorted(p.name for p in cwd.glob("runs/*/.submitit/*") if p.is_dir())


def in_queue(job_ids: list[str]) -> list[str]:
    """The queue entries (jobs, array tasks) of job_ids that squeue still lists."""
    roots = {j.split("_")[0] for j in job_ids}
    return [i for i in _run(["squeue", "-h", "-o", "%i"]).split() if i.split("_")[0] in roots]


def cancel_jobs_under(cwd: Path) -> None:
    ids = submitted_ids(cwd)
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)


def diagnostics(cwd: Path) -> str:
    """What to read when a cluster test fails: the sweep's output, the jobs' stderr."""
    parts = []
    for f in sorted(cwd.glob("sweep-*.log")) + sorted(cwd.glob("runs/*/.submitit/*/*_log.err")):
        text = f.read_text(errors="replace").strip().splitlines()
        parts.append(f"--- {f.relative_to(cwd)} (last 25 lines)\n" + "\n".join(text[-25:]))
    try:
        parts.append("--- squeue\n" + _run(["squeue"]))
    except Exception as e:  # the cluster itself may be what failed
        parts.append(f"--- squeue failed: {e}")
    return "\n".join(parts)
