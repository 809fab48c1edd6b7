"""Can this device run this model under autocast? Asked of the device, not assumed.

Whether a CPU runs `nn.LSTM` in bf16 depends on its instruction set: oneDNN has a bf16
LSTM primitive only where the processor has the instructions for it (seen here: an AMD
EPYC with AVX-512 runs it, an AMD EPYC without fails at the first forward pass with
"could not create a primitive descriptor for the LSTM forward propagation primitive"),
and no CPU has an fp16 one. A rule written from one machine is wrong on the next, so the
config check runs a tiny forward and backward of the configured recurrent stack under
autocast on the run's device, once per (stack, device, dtype) and process, and refuses
the config with the probe's reason before any directory is made.
"""

from __future__ import annotations

import functools
import platform
from types import SimpleNamespace
from typing import Any

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> str:
    """`trainer.device` as the trainer resolves it: auto is cuda when one is available."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@functools.cache
def processor() -> str:
    """The CPU's model name and the instruction set torch dispatches to, for messages."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown processor"
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch: no capability query
        capability = ""
    return f"{name}, {capability}" if capability else name


def device_words(device: str) -> str:
    if device == "cuda":
        try:
            return f"cuda ({torch.cuda.get_device_name()})"
        except Exception:
            return "cuda"
    return f"cpu ({processor()})"


def autocast_failure(model: dict[str, Any], device: str, amp: str) -> str | None:
    """Why `amp` autocast of `model`'s recurrent stack fails on `device`, or None when a
    forward and backward pass run. `model` is the resolved `model` config."""
    if amp not in AMP_DTYPES:
        return None
    cell = model.get("cell")
    key = (cell, int(model.get("num_layers") or 1), device, amp)
    return _probe(*key)


@functools.cache
def _probe(cell: str | None, num_layers: int, device: str, amp: str) -> str | None:
    """Once per process and key: a sweep of thousands of jobs probes each stack once."""
    return try_autocast(cell, num_layers, device, amp)


def try_autocast(cell: str | None, num_layers: int, device: str, amp: str) -> str | None:
    from seqbench.models import CELLS

    dtype = AMP_DTYPES[amp]
    try:
        if cell is not None and cell in CELLS.names():
            cfg = SimpleNamespace(cell=cell, embed_dim=8, hidden_size=8,
                                  num_layers=num_layers, dropout=0.0, forget_bias=None,
                                  init=None)
            stack = CELLS.get(cell).build(cfg, 8).to(device)
        else:  # a feed-forward model: its linear layers
            stack = torch.nn.Linear(8, 8).to(device)
            cell = None
        x = torch.randn(2, 3, 8, device=device)
        with torch.autocast(device_type=device, dtype=dtype):
            out = stack(x)
            out = out[0] if isinstance(out, tuple) else out
            loss = out.float().square().mean()
        loss.backward()
    except Exception as e:  # the device cannot: that is the answer, with its reason
        lines = str(e).strip().splitlines() or [type(e).__name__]
        return lines[0].split(". Run workload with")[0].rstrip(".")
    return None


def amp_error_text(model: dict[str, Any], device: str, amp: str, reason: str) -> str:
    """The allowed-values half of the one-line refusal."""
    what = f"nn.{_TORCH_NAMES.get(model.get('cell'), model.get('cell') or 'Linear')}"
    instead = "trainer.amp=off" + (", or a CUDA GPU" if device == "cpu" else "")
    return (f"{amp} autocast of {what} fails on {device_words(device)}: {reason}; "
            f"use {instead}")


_TORCH_NAMES = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}
