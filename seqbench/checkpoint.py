"""Checkpoints: everything a run needs to continue exactly where it stopped.

Why: on a cluster, jobs are pre-empted and time out; a benchmark that restarts them from
step 0 wastes the GPU hours already spent, and one that restarts them from a state that
is *almost* the same (a different data position, a fresh random stream) measures a
different run. A checkpoint therefore holds the model, the optimizer, the scheduler, the
AMP scaler, the clipper's state, the task's data position and carried state, every
random-number generator (Python, NumPy, torch CPU and CUDA) and the host-side run state
(evaluations so far, the first loss the explosion test compares with, the wall clock),
taken at a flush, so the metrics file holds exactly the rows up to the checkpoint.

`capture` and `restore` are the two halves: what the trainer holds goes into a payload, and
back. They live here, beside the file format, so that one module says what a checkpoint
is; the trainer only decides when to save one and whether it may resume.

Only tensors and plain Python values are saved, so `torch.load(weights_only=True)` reads
it (no pickled code runs when a checkpoint is loaded). It is written to a temporary
file, fsynced and renamed into place: a run killed while saving keeps the previous one.
"""

from __future__ import annotations

import io
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from seqbench import fork
from seqbench.data.batching import tensors_to as to_device
from seqbench.metrics import MetricsFile
from seqbench.rundir import CHECKPOINT_FILE as CHECKPOINT_FILE  # the name callers import
from seqbench.rundir import METRICS_FILE, atomic_write_bytes, differences

if TYPE_CHECKING:
    from seqbench.train import Trainer

VERSION = 1


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss_np = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss_np))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_cpu(obj: Any) -> Any:
    """Tensors to the CPU (a checkpoint loads on any device), containers preserved."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def write_tensors(path: Path, obj: dict[str, Any]) -> None:
    """torch.save of `obj` (moved to the CPU), atomically and fsynced."""
    buf = io.BytesIO()
    torch.save(to_cpu(obj), buf)
    atomic_write_bytes(Path(path), buf.getvalue(), durable=True)


def save(path: Path, payload: dict[str, Any]) -> None:
    write_tensors(path, {"version": VERSION, **payload})


class CheckpointError(Exception):
    """A checkpoint that cannot be used (unreadable, another version, another run)."""


def load(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, read with weights_only=True (no code is executed)."""
    try:
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, tampered, not a torch file, unsafe content
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise CheckpointError(f"{path} is not a version-{VERSION} seqbench checkpoint")
    return data


def capture(trainer: Trainer, step: int) -> dict[str, Any]:
    """Everything needed to continue after `step`, a flush boundary: the metrics file then
    holds exactly the rows up to it (once the pending write has landed)."""
    st = trainer.state
    return {
        "step": step,
        "config": trainer.experiment_config(),
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": trainer.schedule.state_dict() if trainer.schedule is not None else None,
        "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
        "clip": trainer.clip.state_dict() if hasattr(trainer.clip, "state_dict") else None,
        "task": trainer.task.state_dict(),
        "rng": rng_state(),
        "run": {
            "first_nonfinite_step": st.first_nonfinite_step,
            "steps_completed": st.steps_completed, "tokens_seen": st.tokens_seen,
            "skipped_steps": st.skipped_steps,
            "evals": {int(k): dict(v) for k, v in st.evals.items()},
            "initial_loss": st.initial_loss, "step_count": trainer.step_count,
            "elapsed": trainer.elapsed(), "eval_seconds": st.eval_seconds,
            "resumed_from": list(st.resumed_from),
            "parent": st.parent, "start_tokens": st.start_tokens,
            "metrics_rows": trainer.metrics.rows,
            "smoothness_rows": trainer.smooth.file.rows if trainer.smooth else 0,
        },
    }


def restore(trainer: Trainer, data: dict[str, Any]) -> None:
    """Continue `trainer`, freshly built, from a checkpoint of the same experiment.

    Raises CheckpointError for another experiment's checkpoint (the one rule of
    `seqbench.rundir.differences`, which the sweep applies too: options added since,
    switched off, are no change) and for a metrics file that lacks the checkpoint's rows.
    The random generators are set last: building the objects drew from them."""
    differ = differences(data["config"], trainer.experiment_config())
    if differ:
        raise CheckpointError(
            "the checkpoint belongs to another config ("
            + ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in differ[:3]) + ")")
    step, run = int(data["step"]), data["run"]
    rows = MetricsFile.read_upto(trainer.run_dir / METRICS_FILE, step, trainer.metrics.schema)
    if rows is None or len(rows["step"]) != int(run["metrics_rows"]):
        raise CheckpointError("metrics.parquet does not hold the checkpoint's rows")
    # smoothness.parquet continues from its rows up to the checkpoint, as metrics.parquet
    if trainer.smooth and not trainer.smooth.restore(step, int(run.get("smoothness_rows", 0))):
        raise CheckpointError("smoothness.parquet does not hold the checkpoint's rows")
    trainer.model.load_state_dict(data["model"])
    trainer.optimizer.load_state_dict(data["optimizer"])
    if trainer.schedule is not None and data["schedule"] is not None:
        trainer.schedule.load_state_dict(data["schedule"])
    if trainer.scaler is not None and data["scaler"] is not None:
        trainer.scaler.load_state_dict(data["scaler"])
    if data["clip"] is not None and hasattr(trainer.clip, "load_state_dict"):
        trainer.clip.load_state_dict(to_device(data["clip"], trainer.device))
    trainer.task.load_state_dict(data["task"])
    trainer.metrics.load(rows)
    plog = trainer.param_log
    if plog is not None:
        prows = MetricsFile.read_upto(plog.file.path, step, plog.file.schema)
        if prows is not None:
            plog.file.load(prows)
    st = trainer.state
    st.first_nonfinite_step = run["first_nonfinite_step"]
    st.steps_completed, st.tokens_seen = int(run["steps_completed"]), int(run["tokens_seen"])
    st.skipped_steps = int(run["skipped_steps"])
    st.evals = {int(k): dict(v) for k, v in run["evals"].items()}
    st.initial_loss = run["initial_loss"]
    st.eval_seconds = float(run["eval_seconds"])
    st.resumed_from = [*run["resumed_from"], step]
    st.parent = run.get("parent")  # a fork resumes from its own checkpoint, not the parent
    st.start_tokens = int(run.get("start_tokens", 0))
    trainer.step_count = int(run["step_count"])
    trainer.t_start = time.perf_counter() - float(run["elapsed"])
    trainer.checkpointed_at = step
    trainer.start_step = step + 1
    set_rng_state(data["rng"])


# ---- forks (trainer.init_from, trainer.keep_checkpoints; seqbench.fork) ------------------

def capture_kept(trainer: Trainer, step: int) -> dict[str, Any]:
    """A kept checkpoint (`checkpoint-STEP.pt`): `capture`'s payload and the task's
    vocabulary fingerprint, which a fork's validation compares with its own task's."""
    return {**capture(trainer, step), "task_fingerprint": fork.task_fingerprint(trainer.task)}


def start_fork(trainer: Trainer, parent: fork.Parent) -> None:
    """Set a freshly built trainer to its parent's kept checkpoint: weights, the task's
    data position and state, the random streams (set last), the first loss and, with
    trainer.init_optimizer, the optimizer's state under this run's hyperparameters; the
    schedule is positioned at the parent's step. Everything else is the run's own
    (seqbench.fork says why)."""
    data = load(parent.path)
    trainer.model.load_state_dict(data["model"])
    trainer.task.load_state_dict(data["task"])
    opt = trainer.optimizer
    if trainer.t.init_optimizer:
        own = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        opt.load_state_dict(data["optimizer"])
        for group, settings in zip(opt.param_groups, own):
            group.update(settings)  # the child's lr, betas, ...: only the state is taken
    step, run = parent.step, data["run"]
    sched = trainer.schedule
    if sched is not None:  # the lr the schedule gives step S + 1, as in a run from scratch
        sched.last_epoch = step
        for group, base, fn in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * fn(step)
        sched._last_lr = [g["lr"] for g in opt.param_groups]
    st = trainer.state
    st.initial_loss = run["initial_loss"]
    st.steps_completed = step
    st.tokens_seen = st.start_tokens = int(run["tokens_seen"])
    st.parent = parent.block()
    trainer.step_count = trainer.checkpointed_at = step
    trainer.start_step = step + 1
    set_rng_state(data["rng"])
