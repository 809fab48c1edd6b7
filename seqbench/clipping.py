"""Gradient clipping methods, behind one registry.

A method is built once per run from its config and the run's trainable parameters with
their names (`build_clipper(cfg, named_params)`), so per-group rules and per-parameter
state are set up once. Each step it is called with the parameters that have a gradient
(frozen parameters have none and are never part of a norm), their gradients, and the
pre-clip global L2 norm the trainer already computed; it clips in place and returns the
post-clip global L2 norm and a boolean tensor "the gradient changed". Everything stays
on the device: no `.item()`, no Python branch on a tensor value, so clipping adds no
host sync to a training step.

Semantics follow DESIGN.md exactly and are tested against `torch.nn.utils`:
- value: elementwise clamp to [-c, c] (`clip_grad_value_`).
- norm, scope=global: `clip_grad_norm_` -- coef = min(1, max_norm / (total + 1e-6)),
  one norm of type p over all gradients (Keras `global_clipnorm`).
- norm, scope=per_tensor: Keras `clipnorm` -- each tensor g becomes
  g * max_norm / max(||g||_p, max_norm) (`tf.clip_by_norm`, no epsilon).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from seqbench.checks import at_least, one_of, positive
from seqbench.registry import Registry

# clip(params, grads, pre_l2) -> (post_l2, changed); grads[i] is params[i].grad
ClipFn = Callable[[list[Tensor], list[Tensor], Tensor], tuple[Tensor, Tensor]]
NamedParams = list[tuple[str, Tensor]]

CLIP: Registry[Callable[..., ClipFn]] = Registry("clip", "clip.method")

NORM_TYPES = (1.0, 2.0, math.inf)


def global_norm(grads: list[Tensor], norm_type: float = 2.0) -> Tensor:
    """One norm over all tensors, with the fused per-tensor kernels (as clip_grad_norm_)."""
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads, norm_type)
    stacked = torch.stack([n.to(norms[0].device) for n in norms])
    if math.isinf(norm_type):
        return stacked.max()
    return torch.linalg.vector_norm(stacked, norm_type)


@dataclass
class NoClipConfig:
    method: str = "none"


@dataclass
class ValueClipConfig:
    method: str = "value"
    clip_value: float = positive(1.0)


@dataclass
class NormClipConfig:
    method: str = "norm"
    max_norm: float = positive(1.0)
    norm_type: float = one_of(2.0, NORM_TYPES)
    scope: str = one_of("global", ("global", "per_tensor"))
    # relative: max_norm is a multiple of the median gradient norm (of norm_type) over the
    # first calibration_steps steps, which run unclipped -- the heuristic of Pascanu,
    # Mikolov & Bengio (2013, sec. 3.2), who found 0.5x to 10x that average to work.
    relative: bool = False
    calibration_steps: int = at_least(50, 1)


@CLIP.register("none", NoClipConfig)
def no_clip(cfg: NoClipConfig, named_params: NamedParams) -> ClipFn:
    def clip(params: list[Tensor], grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        return pre, torch.zeros((), dtype=torch.bool, device=pre.device)

    return clip


@CLIP.register("value", ValueClipConfig)
def value_clip(cfg: ValueClipConfig, named_params: NamedParams) -> ClipFn:
    c = float(cfg.clip_value)

    def clip(params: list[Tensor], grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, torch.zeros((), dtype=torch.bool, device=pre.device)
        changed = global_norm(grads, math.inf) > c
        torch._foreach_clamp_min_(grads, -c)
        torch._foreach_clamp_max_(grads, c)
        return global_norm(grads, 2.0), changed

    return clip


@CLIP.register("norm", NormClipConfig)
def norm_clip(cfg: NormClipConfig, named_params: NamedParams) -> ClipFn:
    max_norm, p = float(cfg.max_norm), float(cfg.norm_type)
    if cfg.scope == "per_tensor":
        return _per_tensor_norm_clip(max_norm, p)
    if cfg.relative:
        return RelativeNormClip(max_norm, p, int(cfg.calibration_steps))

    def clip(params: list[Tensor], grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, torch.zeros((), dtype=torch.bool, device=pre.device)
        total = pre if p == 2.0 else global_norm(grads, p)
        return _rescale(grads, pre, total, max_norm)

    return clip


def _rescale(grads: list[Tensor], pre: Tensor, total: Tensor, max_norm) -> tuple[Tensor, Tensor]:
    """clip_grad_norm_'s rule: scale every gradient by min(1, max_norm / (total + 1e-6))."""
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, coef)
    # A global rescale multiplies every element by coef, so the L2 norm scales by it.
    return pre * coef, coef < 1.0


class RelativeNormClip:
    """Global norm clipping at `multiple` x the median norm of the first `steps` steps.

    The calibration norms are written into a device tensor and the median is taken on
    the device, so calibrating costs no host sync either.
    """

    def __init__(self, multiple: float, norm_type: float, steps: int):
        self.multiple, self.p, self.steps = multiple, norm_type, steps
        self.seen = 0
        self.history: Tensor | None = None
        self.threshold: Tensor | None = None

    def __call__(self, params: list[Tensor], grads: list[Tensor], pre: Tensor
                 ) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, torch.zeros((), dtype=torch.bool, device=pre.device)
        total = pre if self.p == 2.0 else global_norm(grads, self.p)
        if self.threshold is None:
            if self.history is None:
                self.history = torch.empty(self.steps, device=total.device)
            self.history[self.seen] = total
            self.seen += 1
            if self.seen == self.steps:
                finite = torch.where(torch.isfinite(self.history), self.history, torch.nan)
                self.threshold = self.multiple * torch.nanmedian(finite)
            return pre, torch.zeros((), dtype=torch.bool, device=pre.device)
        return _rescale(grads, pre, total, self.threshold)

    def summary(self) -> dict[str, float | None]:
        """The threshold the run used (read once, at the end of the run)."""
        if self.threshold is None:
            return {"clip_threshold": None, "calibration_median": None}
        t = float(self.threshold)
        return {"clip_threshold": t, "calibration_median": t / self.multiple}


def _per_tensor_norm_clip(max_norm: float, p: float) -> ClipFn:
    def clip(params: list[Tensor], grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, torch.zeros((), dtype=torch.bool, device=pre.device)
        norms = torch.stack(torch._foreach_norm(grads, p))
        coefs = max_norm / norms.clamp(min=max_norm)
        torch._foreach_mul_(grads, list(coefs.unbind()))
        return global_norm(grads, 2.0), (norms > max_norm).any()

    return clip


def build_clipper(cfg, named_params: NamedParams = ()) -> ClipFn:
    """The run's clipping method, set up for its trainable parameters."""
    entry = CLIP.get(cfg.method)
    return entry.build(cfg, list(named_params))
