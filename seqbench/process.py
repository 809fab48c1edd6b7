"""What a run sets in the process it runs in: torch's threads, the seeds, the device, and
the handlers of the signals that stop it.

Why apart from the loop: these are process-wide (they outlive the Trainer, and a sweep
runs many trainers in one process), each with a reason that is about the machine or the
cluster, not about training; the loop only calls them.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from seqbench import precision


def torch_threads(configured: int) -> int:
    """trainer.threads, where 0 means: the SLURM allocation's CPUs (cores of the job's
    own), else one thread. With torch's default of one per core, `train` next to one
    busy process ran 3.15x slower, with one thread 1.03x (reports/bench/threads.md)."""
    return int(configured) or _slurm_cpus() or 1


def _slurm_cpus() -> int:
    """Under SLURM with task/none, `-c N` does not limit torch's threads: use N."""
    try:
        return max(0, int(os.environ.get("SLURM_CPUS_PER_TASK", "0")))
    except ValueError:
        return 0


def resolve_device(name: str) -> torch.device:
    """`trainer.device` as a torch device (the rule is precision's, which validation uses)."""
    return torch.device(precision.resolve_device(name))


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


# SIGTERM: SLURM's pre-emption, scancel and time limit; SIGUSR1/SIGUSR2: the early
# warning clusters send on request (`sbatch --signal`); submitit asks for SIGUSR2.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Interrupted(Exception):
    """SIGTERM/SIGUSR1/SIGUSR2 (cluster pre-emption or time limit): the run stopped
    after saving a checkpoint."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def catch_stop_signals(record: Callable[[int], None]) -> dict[int, Any]:
    """Handlers that only `record` the signal: the loop checkpoints at the end of the
    current step (state mid-step is not worth saving) and then stops. Returns the
    handlers they replaced, for `restore_handlers` and for passing the signal on."""

    def handler(signum, frame):
        record(signum)

    previous = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread (e.g. a joblib worker thread)
            return previous
    return previous


def restore_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(sig, handler)
