"""Truncated-BPTT batching over a token stream.

The stream is cut into `batch_size` parallel streams laid side by side; step k takes
the k-th window of `seq_len` characters of every stream, so the hidden state a window
ends with is exactly the state the next window of the same stream starts from. With
the state carried (and detached) across windows, a model sees the whole corpus as a
few long sequences, which is what "long sequence" means for an LSTM here.

The streams live on the device once; every window is a view, never a copy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def windows_per_pass(n_tokens: int, batch_size: int, seq_len: int) -> int:
    """Full windows one pass over the streams yields (the targets need one token more)."""
    length = n_tokens // batch_size
    return max(0, (length - 1) // seq_len)


def target_spans(n_tokens: int, batch_size: int, seq_len: int,
                 max_windows: int = 0) -> list[tuple[int, int]]:
    """[start, stop) ranges of the flat token array that are the targets `y` of the
    first `max_windows` windows of a pass (all of them if 0), one range per stream: the
    tokens a StreamBatches over `n_tokens` tokens scores. The first token of each stream
    is never a target; tokens past the last full window are never scored."""
    length = n_tokens // batch_size
    windows = windows_per_pass(n_tokens, batch_size, seq_len)
    if max_windows > 0:
        windows = min(windows, max_windows)
    return [(r * length + 1, r * length + 1 + windows * seq_len) for r in range(batch_size)]


def max_seq_len(n_tokens: int, batch_size: int) -> int:
    return max(0, n_tokens // batch_size - 1)


class StreamBatches:
    def __init__(self, ids: Tensor, batch_size: int, seq_len: int):
        length = ids.numel() // batch_size
        if windows_per_pass(ids.numel(), batch_size, seq_len) < 1:
            raise ValueError(
                f"{ids.numel()} tokens give streams of {length} for batch_size {batch_size}; "
                f"seq_len {seq_len} needs at least {seq_len + 1}"
            )
        self.data = ids[: batch_size * length].view(batch_size, length)
        self.batch_size, self.seq_len = batch_size, seq_len
        self.windows = windows_per_pass(ids.numel(), batch_size, seq_len)
        self.position = 0  # index of the next window within the current pass

    def window(self, index: int, rows: slice = slice(None)) -> tuple[Tensor, Tensor]:
        start = index * self.seq_len
        x = self.data[rows, start : start + self.seq_len]
        y = self.data[rows, start + 1 : start + self.seq_len + 1]
        return x, y

    def current(self, rows: slice = slice(None)) -> tuple[Tensor, Tensor]:
        return self.window(self.position, rows)

    def advance(self) -> bool:
        """Move to the next window; True when a new pass starts (the state must reset)."""
        self.position += 1
        if self.position >= self.windows:
            self.position = 0
            return True
        return False

    @property
    def tokens_per_window(self) -> int:
        return self.batch_size * self.seq_len


def to_device(ids, device: torch.device) -> Tensor:
    return torch.as_tensor(ids, dtype=torch.long).to(device)


def tensors_to(obj: Any, device: torch.device) -> Any:
    """Every tensor of a nested dict/list/tuple moved to `device` (a task's hidden states
    and a checkpoint's payload are such trees); everything else as it is."""
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: tensors_to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(tensors_to(v, device) for v in obj)
    return obj
