"""Per-step numbers, the metrics file and the run summary.

Per-step values are written into one preallocated device tensor and copied to the host
once per flush, so recording costs no host sync. Everything another process reads
(metrics.parquet, summary.json) is written to a temporary file and renamed into place,
so a reader never sees half a file and a killed run loses at most one flush interval.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

SCHEMA_VERSION = 1
STATUSES = ("running", "completed", "diverged", "error", "interrupted")

# device-side columns, in buffer order
DEVICE_COLUMNS = ("train_loss", "grad_norm_pre", "grad_norm_post", "clipped", "nonfinite",
                  "exploded", "skipped")

METRICS_SCHEMA = pa.schema([
    ("step", pa.int64()),
    ("tokens", pa.int64()),
    ("train_loss", pa.float64()),
    ("grad_norm_pre", pa.float64()),
    ("grad_norm_post", pa.float64()),
    ("clipped", pa.bool_()),
    ("lr", pa.float64()),
    ("nonfinite", pa.bool_()),
    ("skipped", pa.bool_()),
    ("wall_s", pa.float64()),
    ("val_loss", pa.float64()),
    ("val_bpc", pa.float64()),
    ("val_metric", pa.float64()),
])
# columns filled from an evaluation (null on the other steps)
EVAL_COLUMNS = ("val_loss", "val_bpc", "val_metric")


class StepBuffer:
    """`capacity` steps of per-step numbers, kept on the device until a flush."""

    def __init__(self, capacity: int, device: torch.device):
        self.values = torch.zeros(capacity, len(DEVICE_COLUMNS), dtype=torch.float32,
                                  device=device)
        self.n = 0

    def record(self, *values: Tensor) -> None:
        self.values[self.n].copy_(torch.stack([v.float() for v in values]))
        self.n += 1

    @property
    def full(self) -> bool:
        return self.n == self.values.shape[0]

    def drain(self) -> dict[str, np.ndarray]:
        """The buffered rows on the host (the one sync of a flush interval)."""
        host = self.values[: self.n].cpu().numpy().astype(np.float64)
        self.n = 0
        out = {name: host[:, i] for i, name in enumerate(DEVICE_COLUMNS)}
        for name in ("clipped", "nonfinite", "exploded", "skipped"):
            out[name] = out[name] > 0.5
        return out


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_safe(obj: Any) -> Any:
    """JSON has no NaN/Inf: non-finite numbers become null (never a made-up value)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())


class MetricsFile:
    """metrics.parquet, rewritten atomically at every flush from the rows so far."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.columns: dict[str, list[np.ndarray]] = {f.name: [] for f in METRICS_SCHEMA}

    def append(self, columns: dict[str, np.ndarray]) -> None:
        n = len(columns["step"])
        if n == 0:
            return
        for name, chunks in self.columns.items():
            chunks.append(np.asarray(columns.get(name, np.full(n, np.nan))))
        self.write()

    def set_last(self, **values: float) -> None:
        """Fill values of the last row written (the end-of-run evaluation)."""
        for name, value in values.items():
            self.columns[name][-1] = self.columns[name][-1].astype(np.float64, copy=True)
            self.columns[name][-1][-1] = value
        self.write()

    def column(self, name: str) -> np.ndarray:
        chunks = self.columns[name]
        return np.concatenate(chunks) if chunks else np.array([])

    def write(self) -> None:
        arrays = [pa.array(self.column(f.name), type=f.type, from_pandas=True)
                  for f in METRICS_SCHEMA]
        table = pa.Table.from_arrays(arrays, schema=METRICS_SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        atomic_write_bytes(self.path, sink.getvalue().to_pybytes())


def grad_norm_stats(pre: np.ndarray) -> dict[str, float] | None:
    finite = pre[np.isfinite(pre)]
    if finite.size == 0:
        return None
    return {
        "median": float(np.median(finite)),
        "p99": float(np.percentile(finite, 99)),
        "max": float(finite.max()),
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def env_info(device: torch.device) -> dict[str, Any]:
    from seqbench import __version__

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine() or "cpu"
    return {
        "seqbench": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "device": str(device),
        "device_name": name,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "git_commit": _git_commit(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
    }
