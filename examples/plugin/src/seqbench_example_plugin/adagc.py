"""AdaGC: adaptive gradient clipping per parameter tensor, against an EMA of its own norm.

Source: Wang et al. (2025), "AdaGC: Improving Training Stability for Large Language
Model Pretraining", arXiv:2502.11034, Algorithm 1, with the defaults of the
implementation in pytorch_optimizer (`AdaGC`). For each parameter tensor i at step t
(counted from 1), with g_{t,i} its gradient, ||.|| the L2 norm and ||g_t|| the global
norm over all tensors:

- warm-up, t <= T_start: global norm clipping at lambda_abs,
      h_t = min(1, lambda_abs / (||g_t|| + eps)),   g^_{t,i} = h_t g_{t,i},
      gamma_{t,i} = ||g^_{1,i}|| at t = 1,  else min(gamma_{t-1,i}, ||g^_{t,i}||);
- then, t > T_start: each tensor clipped to lambda_rel times its own running norm,
      h_{t,i} = min(1, lambda_rel gamma_{t-1,i} / ||g_{t,i}||),   g^_{t,i} = h_{t,i} g_{t,i},
      gamma_{t,i} = beta gamma_{t-1,i} + (1 - beta) ||g^_{t,i}||.

Defaults beta = 0.98, lambda_rel = 1.05, lambda_abs = 1.0, T_start = 100, eps = 1e-8.
pytorch_optimizer warms up while its step counter is below warmup_steps (99 steps at
the default); here T_start steps exactly. The paper builds the rule into AdamW; as a
seqbench clipping method it runs before whichever optimizer the run uses, which then
receives the clipped g^, as the paper's AdamW does.

Where the definition leaves a case open: ||g_{t,i}|| is clamped to at least eps (a zero
gradient would give 0/0); a tensor whose gamma was never set (no finite gradient during
warm-up) is not clipped and starts its average at its first clipped norm; a non-finite
norm never enters gamma (the trainer handles that step).

None of seqbench's built-ins is this: `norm` with `scope=per_tensor` clips every tensor
at one fixed threshold, `zclip` and `autoclip` adapt one global threshold.

Everything stays on the device: gamma is one tensor with an entry per parameter tensor,
the step counter is a Python int, and no value is read on the host while training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from seqbench.plugins import at_least, positive, rule


@dataclass
class AdaGCConfig:
    # no `method` field: seqbench adds it (method: adagc) when the option registers
    beta: float = rule(0.98, "must be in [0, 1)", lambda v: v is not None and 0 <= v < 1)
    lambda_rel: float = positive(1.05)
    lambda_abs: float = positive(1.0)
    warmup_steps: int = at_least(100, 1)
    eps: float = positive(1e-8)


class AdaGC:
    """The clip callable seqbench calls once per optimizer step (see seqbench.plugins)."""

    def __init__(self, cfg: AdaGCConfig, named_params: list[tuple[str, Tensor]]):
        self.beta, self.eps = float(cfg.beta), float(cfg.eps)
        self.lambda_rel, self.lambda_abs = float(cfg.lambda_rel), float(cfg.lambda_abs)
        self.warmup = int(cfg.warmup_steps)
        self.names = [name for name, _ in named_params]
        self.slot = {id(p): i for i, (_, p) in enumerate(named_params)}
        self.step = 0
        self.gamma: Tensor | None = None  # per tensor; NaN: not set yet
        self._index: dict[tuple[int, ...], Tensor] = {}

    def __call__(self, params: list[Tensor], grads: list[Tensor], pre: Tensor
                 ) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, torch.zeros((), dtype=torch.bool, device=pre.device)
        if self.gamma is None:
            self.gamma = torch.full((len(self.slot),), math.nan, device=pre.device)
        elif self.gamma.device != pre.device:  # a checkpoint loaded elsewhere
            self.gamma = self.gamma.to(pre.device)
        index = self._slots(params, pre.device)
        old = self.gamma if index is None else self.gamma[index]
        norms = torch.stack(torch._foreach_norm(grads)).to(old.dtype)
        self.step += 1
        if self.step <= self.warmup:
            h = (self.lambda_abs / (pre + self.eps)).clamp(max=1.0)
            torch._foreach_mul_(grads, h)
            clipped = norms * h
            new = torch.where(torch.isnan(old), clipped, torch.minimum(old, clipped))
            post, changed = pre * h, h < 1.0
        else:
            h = (self.lambda_rel * old / norms.clamp(min=self.eps)).clamp(max=1.0)
            h = torch.where(torch.isnan(old), 1.0, h)
            torch._foreach_mul_(grads, list(h.unbind()))
            clipped = norms * h
            new = torch.where(torch.isnan(old), clipped,
                              self.beta * old + (1 - self.beta) * clipped)
            post, changed = torch.linalg.vector_norm(clipped), (h < 1.0).any()
        new = torch.where(torch.isfinite(new), new, old)
        if index is None:
            self.gamma = new
        else:
            self.gamma = self.gamma.index_copy(0, index, new)
        return post.to(pre.dtype), changed

    def _slots(self, params: list[Tensor], device: torch.device) -> Tensor | None:
        """The gamma entries of `params`; None when they are all, in order (the usual
        step: every trainable parameter has a gradient)."""
        try:
            slots = tuple(self.slot[id(p)] for p in params)
        except KeyError:
            raise ValueError("adagc: a parameter it was not built for; build it with the "
                             "run's trainable parameters") from None
        if slots == tuple(range(len(self.slot))):
            return None
        if slots not in self._index:  # built once per set of parameters with a gradient
            self._index[slots] = torch.tensor(slots, device=device)
        return self._index[slots]

    # ---- checkpoints and the run's summary ---------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        gamma = torch.empty(0) if self.gamma is None else self.gamma.clone()
        return {"step": torch.tensor(self.step), "gamma": gamma}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        gamma = state["gamma"]
        if len(gamma) not in (0, len(self.slot)):
            raise ValueError(f"adagc: a state for {len(gamma)} parameter tensors, "
                             f"built for {len(self.slot)}")
        self.step = int(state["step"])
        self.gamma = gamma.clone() if len(gamma) else None

    def summary(self) -> dict:
        """Read once, at the end of a run: the running norm gamma of every tensor."""
        values = [None] * len(self.names) if self.gamma is None else self.gamma.tolist()
        return {"step": self.step, "warmup_steps": self.warmup,
                "gamma": {name: v if v is not None and math.isfinite(v) else None
                          for name, v in zip(self.names, values)}}
