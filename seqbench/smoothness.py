"""The loss surface's local smoothness along training (`trainer.smoothness_every=N`).

Why: Zhang, He, Sra & Jadbabaie (ICLR 2020), "Why gradient clipping accelerates
training: a theoretical justification for adaptivity", found on LSTM language models
that the local smoothness grows with the gradient norm -- (L0, L1)-smoothness,
‖∇²f(x)‖ <= L0 + L1·‖∇f(x)‖ -- and proved that under it clipped gradient descent can
converge arbitrarily faster than gradient descent with a fixed step. This probe measures
that relation on a run, so a sweep can say whether its model and data are in that regime
(the summary's fit of L̂ against ‖∇f‖: seqbench.summary.smoothness_stats).

Definition (as Zhang et al. estimate it along the trajectory): at every N-th optimizer
step, with x the parameters before the step and Δ the update the optimizer applied (after
clipping: x + Δ are the parameters after it),

    L̂ = ‖∇f(x + ½Δ) − ∇f(x)‖ / ‖½Δ‖,

f being the loss on one fixed **probe batch**, the same every time, drawn once at set-up
and never from the training stream (whose position does not move):

- text tasks: the first validation window of the first batch_size/accum_steps streams,
  from a zero hidden state;
- synthetic tasks: the first batch_size/accum_steps sequences of the fixed validation set;
- regression: the first batch_size/accum_steps samples of the split `evaluate` scores;
- any other task: its own `probe_loss(model)` if it has one, else the setting is refused.

The probe runs in the run's train mode (cuDNN's RNN backward needs it) with dropout
switched off (every nn.Dropout's p and nn.RNNBase's inter-layer dropout set to 0 for the
probe, then put back), in float32 without autocast (the gradient difference is small; a
bf16 one would be rounding noise). A step whose update was skipped (Δ = 0) records
L̂ = NaN.

What it must not change, and does not: the parameters are restored bit for bit (copied
back from a saved copy, not recomputed); the gradients come from torch.autograd.grad, so
the run's .grad are never written; the optimizer, clipper, scheduler and task are not
touched; torch's CPU and CUDA random states are saved and restored around the probe. A
run with the probe on writes the same metrics rows as one without it
(tests/test_smoothness.py). Cost: two forward/backward passes of the probe batch and six
parameter-sized temporaries every N steps. No host read: each probe's four numbers stay
on the device until the run's flush writes them to smoothness.parquet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqbench.clipping import global_norm
from seqbench.data.regression import RegressionTask
from seqbench.data.synthetic import SyntheticTask
from seqbench.data.tasks import CharLMTask
from seqbench.errors import ConfigError
from seqbench.metrics import MetricsFile

if TYPE_CHECKING:
    from seqbench.train import Trainer

SMOOTHNESS_FILE = "smoothness.parquet"
SMOOTHNESS_SCHEMA = pa.schema([
    ("step", pa.int64()),
    ("probe_grad_norm", pa.float64()),  # ‖∇f(x)‖ on the probe batch, before the step
    ("update_norm", pa.float64()),      # ‖Δ‖, the update the optimizer applied
    ("smoothness", pa.float64()),       # L̂ = ‖∇f(x + ½Δ) − ∇f(x)‖ / ‖½Δ‖
    ("probe_loss", pa.float64()),       # f(x) on the probe batch
])

LossFn = Callable[[nn.Module], Tensor]


def probe_loss_fn(task, accum_steps: int) -> LossFn | None:
    """The loss of the task's fixed probe batch as a function of the model (see the
    module docstring for which batch); None when the task has none."""
    own = getattr(task, "probe_loss", None)
    if callable(own):
        return own
    if isinstance(task, CharLMTask):
        x, y = task.val_stream.window(0)
        rows = max(1, x.shape[0] // accum_steps)
        x, y = x[:rows], y[:rows]

        def text(model: nn.Module) -> Tensor:
            logits, _ = model(x, None)  # None: a zero initial state
            return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        return text
    if isinstance(task, SyntheticTask):
        x, y = task.val[0]
        rows = max(1, task.batch_size // accum_steps)
        x, y = x[:rows], y[:rows]
        return lambda model: task.loss(model(x), y).mean()
    if isinstance(task, RegressionTask):
        x, y = task.data["test"]
        rows = max(1, int(task.cfg.batch_size) // accum_steps)
        x, y = x[:rows], y[:rows]
        return lambda model: ((model(x).squeeze(-1) - y) ** 2).mean()
    return None


@contextlib.contextmanager
def no_dropout(model: nn.Module) -> Iterator[None]:
    """Dropout off for the block (train mode kept), and put back after it."""
    saved: list[tuple[nn.Module, str, float]] = []
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            saved.append((m, "p", m.p))
        elif isinstance(m, nn.RNNBase):
            saved.append((m, "dropout", m.dropout))
    try:
        for m, attr, _ in saved:
            setattr(m, attr, 0.0)
        yield
    finally:
        for m, attr, value in saved:
            setattr(m, attr, value)


class SmoothnessProbe:
    """L̂ every `every` optimizer steps into device tensors; rows for smoothness.parquet
    at the run's flushes (as `seqbench.metrics.ParamLog`)."""

    def __init__(self, path: Path, every: int, model: nn.Module, params: list[Tensor],
                 loss_fn: LossFn):
        self.every, self.model, self.params, self.loss_fn = every, model, params, loss_fn
        self.file = MetricsFile(path, SMOOTHNESS_SCHEMA)
        self.pending: list[tuple[int, Tensor]] = []
        self.before: list[Tensor] | None = None

    @classmethod
    def for_run(cls, trainer: Trainer) -> SmoothnessProbe | None:
        """The trainer's probe; None when `trainer.smoothness_every` is 0."""
        every = int(getattr(trainer.t, "smoothness_every", 0))
        if every <= 0:
            return None
        loss_fn = probe_loss_fn(trainer.task, trainer.accum)
        if loss_fn is None:
            raise ConfigError("trainer.smoothness_every", every,
                              f"0 for task {trainer.task.name}: it has no fixed probe batch "
                              "(a task can define probe_loss(model))")
        return cls(trainer.run_dir / SMOOTHNESS_FILE, every, trainer.model, trainer.params,
                   loss_fn)

    def active(self, step: int) -> bool:
        return step % self.every == 0

    def before_update(self) -> None:
        """Keep x, the parameters before the optimizer step."""
        self.before = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def after_update(self, step: int) -> None:
        """After the optimizer step (and zero_grad): L̂ along the update just applied;
        the parameters end exactly as the step left them."""
        params, x = self.params, self.before
        self.before = None
        after = [p.detach().clone() for p in params]
        half = torch._foreach_sub(after, x)
        torch._foreach_mul_(half, 0.5)  # ½Δ
        try:
            torch._foreach_copy_(params, x)
            g0, loss = self._grad()
            torch._foreach_add_(params, half)  # x + ½Δ
            g1, _ = self._grad()
        finally:
            torch._foreach_copy_(params, after)  # bit for bit what the optimizer left
        g_norm, half_norm = global_norm(g0), global_norm(half)
        diff = global_norm(torch._foreach_sub(g1, g0))
        values = torch.stack([g_norm, 2 * half_norm, diff / half_norm, loss]).float()
        self.pending.append((step, values))

    def _grad(self) -> tuple[list[Tensor], Tensor]:
        """∇f and f on the probe batch at the current parameters, without .grad."""
        devices = [self.params[0].device] if self.params[0].is_cuda else []
        with torch.random.fork_rng(devices=devices), no_dropout(self.model), \
                torch.enable_grad():
            loss = self.loss_fn(self.model)
            grads = torch.autograd.grad(loss, self.params, allow_unused=True,
                                        materialize_grads=True)
        return list(grads), loss.detach().float()

    def flush(self, last_step: int) -> bool:
        """Move the probes of steps up to `last_step` (later ones belong to no metrics
        row) into `self.file`'s rows; the caller writes the file. False when none."""
        keep = [x for x in self.pending if x[0] <= last_step]
        self.pending = []
        if not keep:
            return False
        host = torch.stack([v for _, v in keep]).cpu().numpy().astype(np.float64)
        return self.file.add({
            "step": np.array([s for s, _ in keep], dtype=np.int64),
            "probe_grad_norm": host[:, 0], "update_norm": host[:, 1],
            "smoothness": host[:, 2], "probe_loss": host[:, 3],
        })

    def restore(self, step: int, rows: int) -> bool:
        """A resumed run's past rows (those up to `step`, the checkpoint's); False when
        the file lacks the `rows` the checkpoint counted."""
        past = MetricsFile.read_upto(self.file.path, step, SMOOTHNESS_SCHEMA)
        if past is None:
            return rows == 0
        if len(past["step"]) != rows:
            return False
        self.file.load(past)
        return True
