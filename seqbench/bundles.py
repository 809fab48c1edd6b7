"""Several runs per GPU (issue 25): `hydra.launcher.runs_per_gpu=K` under submitit.

The runs seqbench is made for are small: one keeps a GPU busy for a small part of its
time (8% for the study's 1 x 128 LSTM on an H200, reports/bench/packing-nvidia-h200.md).
With K > 1 the sweeper groups the jobs to launch into bundles of K, in sweep order, and
submits one array task per bundle. The task (`BundleTask`, in the SLURM or local job)
runs its bundle's K runs at once, each as its own child process (`python -m
seqbench.bundles`), which runs the job exactly as a one-run task would (the launcher's
own `__call__`: Hydra job directory, `.hydra/`, logging, `hydra.job.id`). Processes, not
threads: a crash, a NaN or an out-of-memory in one run cannot take the others down.

Signals: SLURM's SIGTERM (pre-emption, `scancel`, `scontrol requeue`) and the SIGUSR2
warning before the time limit are forwarded to every child; each run checkpoints at the
end of its current step and exits, the task waits for all of them, then hands the signal
to submitit's handler (SIGUSR2: requeue the task) and exits as a one-run task would.
A requeued task starts again with the same bundle: runs that ended in an earlier attempt
of the same task are recorded in its submitit folder (`bundle-state.json`) and not run
again; the others resume from their own checkpoints (`trainer.resume=auto`). A sweep
started again plans as always: finished runs are skipped, the rest are bundled anew.

Planning (grouping, threads, the memory a bundle needs, the one-line refusals) is here
too, for the sweeper (`hydra_plugins/seqbench_sweeper/sweeper.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

KEY = "hydra.launcher.runs_per_gpu"
MEMORY_KEY = "hydra.launcher.gpu_memory_gib"

#: What one run process holds on the GPU besides what `seqbench.sizes` estimates, in MiB:
#: the CUDA context, cuBLAS/cuDNN handles and workspaces, the caching allocator's blocks.
#: Derived from two measurements (NVIDIA H200, torch 2.11 + cu130, `nvidia-smi` per
#: process, reports/bench/packing-nvidia-h200.md) and `sizes.recurrent_estimate` of the
#: same configs (weights and gradients + one step's activations):
#:     1 x 128 LSTM, 16 x 128 (study size):  measured   880 MiB, estimate   6.7 MiB
#:     2 x 512 LSTM, 32 x 256:               measured 1,256 MiB, estimate 218.4 MiB
#: The differences (873 and 1,038 MiB) grow with the model: the estimate leaves out the
#: optimizer's state, cuDNN's reserve and the allocator's rounding, which on these two
#: is 0.78 x the estimate on top of it (a line through both points: 868 MiB + 1.78 x the
#: estimate). So a run is counted as CONTEXT_MIB + ESTIMATE_FACTOR x its estimate, with
#: the factor rounded up to 2 and the constant the larger of measured - 2 x estimate
#: (866.6 and 819.2 MiB), rounded up: 883 MiB and 1,307 MiB for the two, never below
#: what was measured.
CONTEXT_MIB = 870
ESTIMATE_FACTOR = 2
#: The GPU memory a bundle may use when the user declares none: the nominal memory of
#: the smallest data-centre GPUs still common on clusters (T4, V100 16 GB). A sweep is
#: validated on the login node, before SLURM picks the GPU, so the default must fit the
#: smallest one a job can land on; the K values worth using (up to 16 of the 1 x 128
#: LSTM: 13.8 GiB; 8 of the 2 x 512: 10.2 GiB) fit in it. Raise it for a larger GPU.
DEFAULT_GPU_MEMORY_GIB = 16.0

STATE_FILE = "bundle-state.json"
SPEC_FILE = "bundle-spec.pkl"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

T = TypeVar("T")


# ---- planning (the sweeper's process) ------------------------------------------------

def group(items: Sequence[T], k: int) -> list[list[T]]:
    """`items` in bundles of `k`, in order; the last one may be smaller."""
    return [list(items[i:i + k]) for i in range(0, len(items), k)]


def threads_per_run(cpus_per_task: int | None, k: int) -> int:
    """The task's CPUs split between its K runs (`trainer.threads`), at least one."""
    return max(1, int(cpus_per_task or 1) // k)


def k_error(value: Any, n_jobs: int) -> str | None:
    """Why `value` cannot be K for a sweep of `n_jobs` jobs (one line), or None."""
    allowed = f"an integer from 1 to the number of jobs ({n_jobs})"
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{KEY}={value}: {allowed}"
    if value < 1:
        return f"{KEY}={value}: {allowed}; 1 runs each job on a GPU of its own"
    if value > n_jobs:
        return (f"{KEY}={value}: more runs per GPU than the sweep has jobs; {allowed}")
    return None


def memory_error(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or value == float("inf"):
        return f"{MEMORY_KEY}={value}: a positive number of GiB (the memory of the GPU " \
               "the runs of a bundle share)"
    return None


def run_memory_mib(cfg, resolved: Mapping[str, Any], cache: dict | None = None) -> float:
    """GPU memory one run's process needs (MiB): CONTEXT_MIB + ESTIMATE_FACTOR x the
    closed-form estimate of `seqbench.sizes` (0 for a run on the CPU, the context alone
    for models without a closed form). `cache` is validation's: its built task is reused
    (vocabulary, sequence length) when it holds one."""
    from seqbench import sizes

    if str(resolved["trainer"].get("device")) == "cpu":
        return 0.0
    task = None
    if cache is not None:  # validation keeps the built task under this key
        task = cache.get(("task", json.dumps(resolved["task"], sort_keys=True, default=repr)))
    if task is None:
        from seqbench.data.tasks import build_task

        task = build_task(cfg.task)
        if cache is not None:
            cache[("task", json.dumps(resolved["task"], sort_keys=True, default=repr))] = task
    vocab = int(getattr(getattr(task, "vocab", None), "size", 0) or 256)
    steps = getattr(task, "steps", None)
    if not isinstance(steps, int):
        steps = int(getattr(cfg.task, "seq_len", 1) or 1)
    streams = int(getattr(cfg.task, "batch_size", 1) or 1)
    est = sizes.recurrent_estimate(cfg.model, vocab, streams, steps)
    need = 0 if est is None else est.weight_bytes + est.activation_bytes
    return CONTEXT_MIB + ESTIMATE_FACTOR * need / 2**20


def fit_error(k: int, per_run_mib: Mapping[str, float], gpu_memory_gib: float) -> str | None:
    """One line when K of the sweep's largest runs would not fit `gpu_memory_gib`."""
    if not per_run_mib:
        return None
    largest = sorted(per_run_mib.values(), reverse=True)
    need = sum(largest[:k])
    if need <= gpu_memory_gib * 1024:
        return None
    fits, total = 0, 0.0
    for m in largest:
        if total + m > gpu_memory_gib * 1024:
            break
        fits, total = fits + 1, total + m
    name = max(per_run_mib, key=per_run_mib.__getitem__)
    return (f"{KEY}={k}: a bundle of {k} runs needs about {need / 1024:,.1f} GiB of GPU "
            f"memory ({largest[0]:,.0f} MiB for the largest run, {name}: {CONTEXT_MIB} "
            f"MiB of CUDA context + {ESTIMATE_FACTOR} x its size estimate), more than "
            f"{MEMORY_KEY}={gpu_memory_gib:g}; at most {fits} fit, or declare the GPU's "
            f"memory with {MEMORY_KEY}=GIB")


# ---- the array task (the SLURM or local job's process) -------------------------------

class BundleTask:
    """What one array task runs: its bundle's runs as child processes, side by side."""

    def __init__(self, launcher):
        self.launcher = launcher

    def __call__(self, members: list[tuple[list[str], int]], singleton_state) -> list[dict]:
        import cloudpickle
        import submitit

        from seqbench.rundir import atomic_write_bytes

        folder = Path(submitit.JobEnvironment().paths.folder)
        folder.mkdir(parents=True, exist_ok=True)
        spec = folder / SPEC_FILE
        atomic_write_bytes(spec, cloudpickle.dumps((self.launcher, singleton_state,
                                                    [list(m) for m in members])))
        return _Bundle(folder, spec, members).run()

    def checkpoint(self, *args: Any, **kwargs: Any):
        """submitit's pre-emption hook (SIGUSR2): the same bundle again; the runs that
        ended are in the task's state file, the others resume from their checkpoints."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class _Bundle:
    def __init__(self, folder: Path, spec: Path, members: list[tuple[list[str], int]]):
        self.folder, self.spec, self.members = folder, spec, members
        self.procs: dict[int, subprocess.Popen] = {}
        self.received: list[int] = []

    # the state of this task across its attempts (a requeued task keeps its folder)
    def _state(self) -> dict[str, dict]:
        try:
            ended = json.loads((self.folder / STATE_FILE).read_text())["ended"]
            return ended if isinstance(ended, dict) else {}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _record(self, ended: dict[str, dict]) -> None:
        from seqbench.rundir import atomic_write_text

        atomic_write_text(self.folder / STATE_FILE, json.dumps({"ended": ended}, indent=1))

    def _forward(self, signum: int, frame=None) -> None:
        self.received.append(signum)
        self._send(signum)

    def _send(self, signum: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    def run(self) -> list[dict]:
        ended = self._state()
        previous = {sig: signal.signal(sig, self._forward) for sig in STOP_SIGNALS}
        logs = []
        try:
            for position, (_, idx) in enumerate(self.members):
                if str(idx) in ended or self.received:
                    continue
                log = open(self.folder / f"run-{idx}.log", "ab")  # noqa: SIM115
                logs.append(log)
                self.procs[idx] = subprocess.Popen(
                    [sys.executable, "-m", "seqbench.bundles", str(self.spec), str(position),
                     str(self._result_path(idx))],
                    stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, "SEQBENCH_BUNDLE_PARENT": str(os.getpid())})
            if self.received:  # a signal that came while a child was being started
                self._send(self.received[0])
            waiting = dict(self.procs)
            while waiting:
                for idx, proc in list(waiting.items()):
                    if proc.poll() is None:
                        continue
                    del waiting[idx]
                    result = self._result(idx, proc.returncode)
                    if not result["interrupted"]:  # ended: not run again by a requeue
                        ended[str(idx)] = result
                        self._record(ended)
                time.sleep(0.1)
        finally:
            for sig, handler in previous.items():
                with contextlib.suppress(ValueError, TypeError):
                    signal.signal(sig, handler)
            for log in logs:
                log.close()
        if self.received:  # every run has checkpointed and exited
            signum = self.received[0]
            handler = previous.get(signum)
            if callable(handler):  # submitit's: SIGUSR2 requeues the task and exits
                handler(signum, None)
            sys.exit(128 + signum)  # as a one-run task stopped by this signal exits
        return [ended.get(str(idx)) or {"idx": idx, "error": "not run", "interrupted": True}
                for _, idx in self.members]

    def _result_path(self, idx: int) -> Path:
        return self.folder / f"run-{idx}.result.json"

    def _result(self, idx: int, code: int) -> dict:
        stop_codes = {128 + s for s in STOP_SIGNALS} | {-s for s in STOP_SIGNALS}
        out = {"idx": idx, "returncode": code, "error": None, "interrupted": False}
        try:
            written = json.loads(self._result_path(idx).read_text())
            self._result_path(idx).unlink()
        except (OSError, ValueError):
            written = None
        if code == 0 and isinstance(written, dict):
            out["error"] = written.get("error")
        elif code in stop_codes:
            out["interrupted"] = True
            out["error"] = f"stopped by {signal.Signals(abs(code) % 128).name}"
        else:
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            out["error"] = f"the run's process ended without a result ({how}): " \
                           f"{_last_line(self.folder / f'run-{idx}.log')}"
        return out


def _last_line(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip()[:300] if lines else "no output"


# ---- one run of a bundle (a child process of the array task) -------------------------

def _die_with_parent() -> None:
    """SIGTERM this process when the array task dies (killed, out of memory): a run must
    never go on training unseen beside the requeued task that resumes it. The run then
    checkpoints and exits as on any SIGTERM. Linux only (prctl)."""
    parent = os.environ.get("SEQBENCH_BUNDLE_PARENT")
    if not sys.platform.startswith("linux") or not parent:
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    if str(os.getppid()) != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def child_main(argv: list[str]) -> int:
    """`python -m seqbench.bundles SPEC POSITION RESULT`: the run at POSITION of the
    bundle in SPEC, through the launcher as a one-run array task runs it; writes RESULT
    (JSON: the error, if the run failed) unless a signal stopped it."""
    import cloudpickle

    from seqbench.rundir import atomic_write_text

    spec, position, result_path = argv
    _die_with_parent()
    with open(spec, "rb") as f:  # written by this task's parent, in its submitit folder
        launcher, singleton_state, members = cloudpickle.load(f)
    overrides, idx = members[int(position)]
    error = None
    try:
        ret = launcher(list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                       singleton_state)
        ret.return_value  # noqa: B018 -- raises the run's exception if it failed
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    atomic_write_text(Path(result_path), json.dumps({"error": error}))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
