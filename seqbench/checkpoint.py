"""Checkpoints: everything a run needs to continue exactly where it stopped.

Why: on a cluster, jobs are pre-empted and time out; a benchmark that restarts them from
step 0 wastes the GPU hours already spent, and one that restarts them from a state that
is *almost* the same (a different data position, a fresh random stream) measures a
different run. A checkpoint therefore holds the model, the optimizer, the scheduler, the
AMP scaler, the clipper's state, the task's data position and carried state, every
random-number generator (Python, NumPy, torch CPU and CUDA) and the host-side run state
(evaluations so far, the first loss the explosion test compares with, the wall clock),
taken at a flush, so the metrics file holds exactly the rows up to the checkpoint.

Only tensors and plain Python values are saved, so `torch.load(weights_only=True)` reads
it (no pickled code runs when a checkpoint is loaded). It is written to a temporary
file, fsynced and renamed into place: a run killed while saving keeps the previous one.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqbench.rundir import atomic_write_bytes

CHECKPOINT_FILE = "checkpoint.pt"
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


def to_device(obj: Any, device: torch.device) -> Any:
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
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
