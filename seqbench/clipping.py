"""Gradient clipping methods, behind one registry.

Every method takes the list of gradients of the parameters that have one (frozen
parameters have none and are never part of a norm) plus the pre-clip global L2 norm the
trainer already computed, clips in place, and returns the post-clip global L2 norm and
a boolean tensor "the gradient changed". Everything stays on the device: no `.item()`,
no Python branch on a tensor value, so clipping adds no host sync to a training step.

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

from seqbench.checks import one_of, positive
from seqbench.registry import Registry

ClipFn = Callable[[list[Tensor], Tensor], tuple[Tensor, Tensor]]

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


@CLIP.register("none", NoClipConfig)
def no_clip(cfg: NoClipConfig) -> ClipFn:
    def clip(grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        return pre, torch.zeros((), dtype=torch.bool, device=pre.device)

    return clip


@CLIP.register("value", ValueClipConfig)
def value_clip(cfg: ValueClipConfig) -> ClipFn:
    c = float(cfg.clip_value)

    def clip(grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, torch.zeros((), dtype=torch.bool, device=pre.device)
        changed = global_norm(grads, math.inf) > c
        torch._foreach_clamp_min_(grads, -c)
        torch._foreach_clamp_max_(grads, c)
        return global_norm(grads, 2.0), changed

    return clip


@CLIP.register("norm", NormClipConfig)
def norm_clip(cfg: NormClipConfig) -> ClipFn:
    max_norm, p = float(cfg.max_norm), float(cfg.norm_type)
    if cfg.scope == "per_tensor":
        return _per_tensor_norm_clip(max_norm, p)

    def clip(grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, torch.zeros((), dtype=torch.bool, device=pre.device)
        total = pre if p == 2.0 else global_norm(grads, p)
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, coef)
        # A global rescale multiplies every element by coef, so the L2 norm scales by it.
        return pre * coef, coef < 1.0

    return clip


def _per_tensor_norm_clip(max_norm: float, p: float) -> ClipFn:
    def clip(grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, torch.zeros((), dtype=torch.bool, device=pre.device)
        norms = torch.stack(torch._foreach_norm(grads, p))
        coefs = max_norm / norms.clamp(min=max_norm)
        torch._foreach_mul_(grads, list(coefs.unbind()))
        return global_norm(grads, 2.0), (norms > max_norm).any()

    return clip


def build_clipper(cfg) -> ClipFn:
    entry = CLIP.get(cfg.method)
    return entry.build(cfg)
