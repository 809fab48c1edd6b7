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

The zoo below adds, each following its source's reference code (see each docstring):
- combined: the norm and value methods above, in either order.
- groups: per-group value/norm thresholds by parameter-name glob (Graves 2013 preset).
- autoclip: norm clipping at a percentile of the norm history (Seetharaman et al. 2020).
- agc: unit-wise adaptive gradient clipping (Brock et al. 2021, as in timm).
- zclip: z-score spike clipping against an EMA of the norm (Kumar et al. 2025).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from seqbench.checks import at_least, in_range, one_of, optional_above, positive, rule
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
    if math.isinf(norm_type) and grads[0].device.type == "cpu":
        # the same max |g| (exact either way); torch's CPU inf-norm kernel is 5-7x slower
        # than abs().amax() on an LSTM-256's gradients (measured, interleaved runs)
        return torch.stack([g.abs().amax() for g in grads]).max()
    norms = torch._foreach_norm(grads, norm_type)
    stacked = torch.stack(norms)  # seqbench keeps a model on one device
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
    # as in torch's clip_grad_norm_: a non-finite gradient norm is an error, i.e. the run
    # takes trainer.on_nonfinite=raise (found at the next flush, at its exact step)
    error_if_nonfinite: bool = False


@CLIP.register("none", NoClipConfig)
def no_clip(cfg: NoClipConfig, named_params: NamedParams) -> ClipFn:
    never: dict[torch.device, Tensor] = {}  # one constant `False` per device, made once

    def clip(params: list[Tensor], grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        if pre.device not in never:
            never[pre.device] = torch.zeros((), dtype=torch.bool, device=pre.device)
        return pre, never[pre.device]

    return clip


@CLIP.register("value", ValueClipConfig)
def value_clip(cfg: ValueClipConfig, named_params: NamedParams) -> ClipFn:
    c = float(cfg.clip_value)

    def clip(params: list[Tensor], grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, torch.zeros((), dtype=torch.bool, device=pre.device)
        changed = _clamp_(grads, c)
        return global_norm(grads, 2.0), changed

    return clip


def _clamp_(grads: list[Tensor], c: float) -> Tensor:
    """clip_grad_value_'s rule in place; returns "some entry was outside [-c, c]"."""
    changed = global_norm(grads, math.inf) > c
    torch._foreach_clamp_min_(grads, -c)
    torch._foreach_clamp_max_(grads, c)
    return changed


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

    def state_dict(self) -> dict[str, Tensor]:
        state = {"seen": torch.tensor(self.seen)}
        if self.history is not None:
            state["history"] = self.history
        if self.threshold is not None:
            state["threshold"] = self.threshold
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.seen = int(state["seen"])
        self.history = state.get("history")
        self.threshold = state.get("threshold")

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


# ---- the clipping zoo: combined, per-group, AutoClip, AGC, ZClip ------------------------
def _false(pre: Tensor) -> Tensor:
    return torch.zeros((), dtype=torch.bool, device=pre.device)


@dataclass
class CombinedClipConfig:
    method: str = "combined"
    # Which stage runs first. value_then_norm is the default because it is the order in
    # which both stages can act at equal thresholds: after a global L2 rescale to
    # max_norm every entry is already <= max_norm, so norm_then_value's value stage only
    # fires when clip_value < max_norm.
    order: str = one_of("value_then_norm", ("norm_then_value", "value_then_norm"))
    max_norm: float = positive(1.0)
    norm_type: float = one_of(2.0, NORM_TYPES)
    clip_value: float = positive(1.0)


@CLIP.register("combined", CombinedClipConfig)
def combined_clip(cfg: CombinedClipConfig, named_params: NamedParams) -> ClipFn:
    """Norm clipping and value clipping, one after the other.

    There is no canonical source for the pair (Keras 3 refuses `clipnorm` together with
    `clipvalue`), so each stage is exactly seqbench's own `norm` (global scope,
    clip_grad_norm_) and `value` (clip_grad_value_) method, built from the same code,
    and the second stage is handed the first stage's post-clip L2 norm as its pre-clip
    norm. `changed` is true when either stage changed the gradient.
    """
    norm = norm_clip(NormClipConfig(max_norm=cfg.max_norm, norm_type=cfg.norm_type),
                     named_params)
    value = value_clip(ValueClipConfig(clip_value=cfg.clip_value), named_params)
    first, second = (norm, value) if cfg.order == "norm_then_value" else (value, norm)

    def clip(params: list[Tensor], grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        mid, changed_first = first(params, grads, pre)
        post, changed_second = second(params, grads, mid)
        return post, changed_first | changed_second

    return clip


@dataclass
class GroupRule:
    pattern: str = "*"
    method: str = "value"
    threshold: float = 1.0


def _rules_ok(rules: list) -> bool:
    return all(
        isinstance(r.get("pattern"), str) and r.get("method") in ("value", "norm")
        and isinstance(r.get("threshold"), (int, float)) and math.isfinite(r["threshold"])
        and r["threshold"] > 0
        for r in rules
    )


@dataclass
class GroupClipConfig:
    method: str = "groups"
    # Tried in order, first match wins. `pattern` is an fnmatch glob on the parameter's
    # name as named_parameters() gives it (`rnn.weight_hh_l0`); `*` matches dots too.
    rules: list[GroupRule] = rule(
        [], "a list of {pattern: <glob>, method: value | norm, threshold: > 0}", _rules_ok)
    # for the parameters that match no rule
    default_method: str = one_of("none", ("none", "value", "norm"))
    default_threshold: float = positive(1.0)


class GroupClip:
    """Per-group thresholds chosen by parameter name (the idea of Graves 2013).

    Graves, "Generating sequences with recurrent neural networks" (2013), clipped,
    inside backpropagation, the derivatives with respect to the network outputs to
    [-100, 100] and the LSTM derivatives (with respect to the inputs of the LSTM layers,
    before the gate nonlinearities) to [-10, 10]. Those are derivatives of
    *activations*; seqbench clips *parameter* gradients after backpropagation, so the
    `graves` option applies his thresholds to the parameter gradients of the
    corresponding layers -- the same per-layer idea, not the same operation.

    Patterns are fnmatch globs (chosen over regular expressions because parameter names
    are dotted paths and `decoder.*` reads as it means). A group's rule is applied to
    the group's gradients together: `value` is clip_grad_value_ on them, `norm` is
    clip_grad_norm_ on them (one L2 norm over the group). The assignment is fixed when
    the method is built; `summary()` reports it, with a warning for every rule that
    matches no parameter (a typo in a pattern would otherwise pass silently).
    """

    DEFAULT = "(default)"

    def __init__(self, rules: list[tuple[str, str, float]], default: tuple[str, float],
                 named_params: NamedParams):
        self.rules = [*rules, (self.DEFAULT, *default)]
        self.labels = _unique_labels([r[0] for r in rules]) + [self.DEFAULT]
        self.slot: dict[int, int] = {}
        self.groups: dict[str, list[str]] = {label: [] for label in self.labels}
        for name, p in named_params:
            i = next((i for i, r in enumerate(rules) if fnmatch.fnmatchcase(name, r[0])),
                     len(rules))
            self.slot[id(p)] = i
            self.groups[self.labels[i]].append(name)
        self.warnings = [f"rule {label!r} matches no parameter"
                         for label in self.labels[:-1] if not self.groups[label]]
        unmatched = self.groups[self.DEFAULT]
        if unmatched and default[0] == "none":
            self.warnings.append(f"{len(unmatched)} parameter(s) match no rule and are "
                                 "not clipped: " + ", ".join(unmatched))

    def __call__(self, params: list[Tensor], grads: list[Tensor], pre: Tensor
                 ) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, _false(pre)
        parts: list[list[Tensor]] = [[] for _ in self.rules]
        for p, g in zip(params, grads):
            parts[self.slot.get(id(p), len(self.rules) - 1)].append(g)
        changed = _false(pre)
        for (_, method, threshold), part in zip(self.rules, parts):
            if not part or method == "none":
                continue
            if method == "value":
                changed = changed | _clamp_(part, threshold)
            else:
                total = global_norm(part, 2.0)
                changed = changed | _rescale(part, total, total, threshold)[1]
        return global_norm(grads, 2.0), changed

    def summary(self) -> dict:
        """Which parameters went to which rule (fixed at build time)."""
        return {"groups": {k: list(v) for k, v in self.groups.items()},
                "warnings": list(self.warnings)}


def _unique_labels(patterns: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for p in patterns:
        seen[p] = seen.get(p, 0) + 1
        out.append(p if seen[p] == 1 else f"{p}#{seen[p]}")
    return out


@CLIP.register("groups", GroupClipConfig)
def group_clip(cfg: GroupClipConfig, named_params: NamedParams) -> GroupClip:
    rules = [(str(r.pattern), str(r.method), float(r.threshold)) for r in cfg.rules]
    default = (str(cfg.default_method), float(cfg.default_threshold))
    return GroupClip(rules, default, named_params)


@dataclass
class AutoClipConfig:
    method: str = "autoclip"
    percentile: float = in_range(10.0, 0.0, 100.0)
    history: int = at_least(0, 0)  # window of the most recent norms; 0: all of them


class AutoClip:
    """AutoClip (Seetharaman, Wichern, Pardo & Le Roux 2020, MLSP).

    Global L2 norm clipping (clip_grad_norm_'s rule) at the `percentile`-th percentile
    of the history of pre-clip global L2 gradient norms. As in the paper's code
    (github.com/pseeth/autoclip, `autoclip.py`), the current step's norm is appended to
    the history *before* the percentile is taken, the percentile is numpy's (linear
    interpolation), the default is p = 10 and the history is the whole run. The later
    `autoclip` pip package differs (quantile 0.9, the current norm excluded, a 1000-step
    window, per-parameter thresholds unless global_threshold=True); seqbench follows the
    paper. `history > 0` keeps only the most recent `history` norms (a ring buffer).

    Because the current norm is in the history, the first step's threshold is its own
    norm, and clip_grad_norm_'s 1e-6 in the denominator scales it by
    norm / (norm + 1e-6), which `changed` reports -- as the reference does.

    A non-finite norm (NaN/Inf) is stored as NaN and the percentile is taken with
    `torch.nanquantile`, so it never enters a threshold; that step's own gradient is
    already non-finite and is handled by the trainer. History lives in a preallocated
    device tensor that doubles when full, so nothing is read on the host.
    """

    def __init__(self, percentile: float, window: int):
        self.q, self.percentile, self.window = percentile / 100.0, percentile, window
        self.seen = 0
        self.buf: Tensor | None = None
        self.threshold: Tensor | None = None

    def _filled(self) -> int:
        return min(self.seen, self.window) if self.window else self.seen

    def __call__(self, params: list[Tensor], grads: list[Tensor], pre: Tensor
                 ) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, _false(pre)
        if self.buf is None:
            self.buf = torch.empty(self.window or 1024, device=pre.device)
        elif self.buf.device != pre.device:  # loaded from a checkpoint elsewhere
            self.buf = self.buf.to(pre.device)
        if not self.window and self.seen == len(self.buf):
            self.buf = torch.cat([self.buf, torch.empty_like(self.buf)])
        slot = self.seen % self.window if self.window else self.seen
        self.buf[slot] = torch.where(torch.isfinite(pre), pre, torch.nan)
        self.seen += 1
        self.threshold = torch.nanquantile(self.buf[:self._filled()], self.q)
        return _rescale(grads, pre, pre, self.threshold)

    def summary(self) -> dict:
        t = None if self.threshold is None else float(self.threshold)
        return {"clip_threshold": t if t is not None and math.isfinite(t) else None,
                "percentile": self.percentile, "history_len": self._filled()}

    def state_dict(self) -> dict[str, Tensor]:
        hist = torch.empty(0) if self.buf is None else self.buf[:self._filled()].clone()
        return {"history": hist, "seen": torch.tensor(self.seen)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        hist, self.seen = state["history"], int(state["seen"])
        n = len(hist)
        self.buf = torch.empty(self.window or max(1024, 2 * n), device=hist.device)
        self.buf[:n] = hist
        self.threshold = None


@CLIP.register("autoclip", AutoClipConfig)
def autoclip(cfg: AutoClipConfig, named_params: NamedParams) -> AutoClip:
    return AutoClip(float(cfg.percentile), int(cfg.history))


@dataclass
class AGCConfig:
    method: str = "agc"
    clip_factor: float = positive(0.01)
    eps: float = positive(1e-3)
    # Leave the output layer alone, as the paper advises and timm's train.py does
    # (`model_parameters(model, exclude_head=True)`: the last two parameters).
    exclude_head: bool = True


def _unitwise_norm(x: Tensor) -> Tensor:
    """timm's unitwise_norm (L2): over all dims but the first; a 1-D tensor as a whole."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


class AdaptiveGradClip:
    """Adaptive gradient clipping, unit-wise (Brock, De, Smith & Simonyan 2021, NFNets).

    Implemented as timm's `adaptive_clip_grad` (timm/utils/agc.py): for every
    parameter W with gradient G, per output unit i (row i: all dims but the first)
    max_i = max(||W_i||, eps) * clip_factor, and G_i becomes G_i * max_i / max(||G_i||,
    1e-6) where ||G_i|| >= max_i, else stays. A 1-D tensor (a bias) is one unit, as in
    timm's unitwise_norm. Defaults clip_factor=0.01,
    eps=1e-3 are timm's. The paper does not clip the final linear layer; timm's training
    script drops the last two parameters for AGC, and `exclude_head` does that here (in
    seqbench's models they are the output layer's weight and bias).

    nn.LSTM stacks its four gates along dim 0 (weight_ih_l0 is 4H x input), so the units
    are the 4H gate rows -- exactly what timm does with it; its biases (4H) are each one
    unit. nn.Embedding's weight is vocab x dim, so its units are the token vectors.
    """

    def __init__(self, clip_factor: float, eps: float, excluded: NamedParams,
                 named_params: NamedParams):
        self.clip_factor, self.eps = clip_factor, eps
        self.excluded = {id(p) for _, p in excluded}
        self.excluded_names = [n for n, _ in excluded]
        self.clipped_names = [n for n, p in named_params if id(p) not in self.excluded]

    def __call__(self, params: list[Tensor], grads: list[Tensor], pre: Tensor
                 ) -> tuple[Tensor, Tensor]:
        flags = []
        for p, g in zip(params, grads):
            if id(p) in self.excluded:
                continue
            max_norm = _unitwise_norm(p.detach()).clamp(min=self.eps) * self.clip_factor
            g_norm = _unitwise_norm(g)
            g.mul_(torch.where(g_norm < max_norm, 1.0, max_norm / g_norm.clamp(min=1e-6)))
            flags.append((g_norm > max_norm).any())
        if not flags:
            return pre, _false(pre)
        return global_norm(grads, 2.0), torch.stack(flags).any()

    def summary(self) -> dict:
        return {"unitwise": list(self.clipped_names), "excluded": list(self.excluded_names)}


@CLIP.register("agc", AGCConfig)
def agc(cfg: AGCConfig, named_params: NamedParams) -> AdaptiveGradClip:
    excluded = list(named_params[-2:]) if cfg.exclude_head else []
    return AdaptiveGradClip(float(cfg.clip_factor), float(cfg.eps), excluded,
                            list(named_params))


@dataclass
class ZClipConfig:
    method: str = "zclip"
    alpha: float = rule(0.97, "must be in (0, 1)", lambda v: v is not None and 0 < v < 1)
    z_thresh: float = positive(2.5)
    warmup_steps: int = at_least(25, 1)
    mode: str = one_of("zscore", ("zscore", "percentile"))
    clip_option: str = one_of("adaptive_scaling", ("adaptive_scaling", "mean"))
    clip_factor: float = positive(1.0)
    max_grad_norm: float | None = optional_above(None, 0.0)
    eps: float = positive(1e-6)
    skip_update_on_spike: bool = False


class ZClip:
    """ZClip (Kumar, Owen, Roy Chowdhury & Güra 2025, "ZClip: Adaptive Spike Mitigation
    for LLM Pre-Training"), following the reference code github.com/bluorion-com/ZClip
    (`zclip/zclip.py`) step for step, on the device.

    - Warm-up: the first `warmup_steps` pre-clip global L2 norms are collected, unclipped
      (but for the optional `max_grad_norm`, applied with clip_grad_norm_ as the
      reference does); at the last warm-up step mean and (population) variance of them
      initialise the EMA.
    - Then each step: std = sqrt(var), z = (g - mean) / (std + eps).
      mode=zscore: a spike is z > z_thresh; clip_option=adaptive_scaling (the paper's
      "reciprocal" clipping) clips to (mean + z_thresh * std / (z / z_thresh)) *
      clip_factor, i.e. mean + z_thresh^2 std / z -- larger spikes get a tighter
      threshold; clip_option=mean clips to the mean. mode=percentile: a spike is
      g > mean + z_thresh * std, clipped to that.
    - `max_grad_norm` caps the threshold (min of both); null (the paper, and the
      reference before it set a default) leaves ZClip alone, the current reference's
      default is 1.0.
    - Rescale as the reference: coef = thr / (g + 1e-6) when g > thr, else 1 exactly.
    - The EMA is updated with the clipped value on a spike (the raw norm otherwise), the
      variance with the already-updated mean, as the reference does;
      skip_update_on_spike leaves it unchanged on a spike.

    Non-finite norms (which the reference would feed into its statistics) are kept
    out: they are left out of the warm-up statistics and do not update the EMA. If no
    warm-up norm was finite, the first finite norm initialises mean (variance 0).
    """

    def __init__(self, cfg: ZClipConfig):
        self.alpha, self.z_thresh = float(cfg.alpha), float(cfg.z_thresh)
        self.warmup, self.mode, self.option = int(cfg.warmup_steps), cfg.mode, cfg.clip_option
        self.clip_factor, self.eps = float(cfg.clip_factor), float(cfg.eps)
        self.cap = None if cfg.max_grad_norm is None else float(cfg.max_grad_norm)
        self.skip_update = bool(cfg.skip_update_on_spike)
        self.seen = 0
        self.warm: Tensor | None = None
        self.mean: Tensor | None = None
        self.var: Tensor | None = None
        self.spikes: Tensor | None = None
        self.z: Tensor | None = None  # the last step's z-score (after warm-up)
        self.threshold: Tensor | None = None  # the norm the last step allowed (g if unclipped)
        self.changed: Tensor | None = None

    def _warmup_step(self, grads: list[Tensor], pre: Tensor) -> tuple[Tensor, Tensor]:
        if self.warm is None:
            self.warm = torch.empty(self.warmup, device=pre.device)
            self.spikes = torch.zeros((), dtype=torch.long, device=pre.device)
        self.warm[self.seen] = torch.where(torch.isfinite(pre), pre, torch.nan)
        self.seen += 1
        if self.seen == self.warmup:
            self.mean = torch.nanmean(self.warm)
            self.var = torch.nanmean((self.warm - self.mean) ** 2)
        if self.cap is None:
            return pre, _false(pre)
        return _rescale(grads, pre, pre, self.cap)

    def __call__(self, params: list[Tensor], grads: list[Tensor], pre: Tensor
                 ) -> tuple[Tensor, Tensor]:
        if not grads:
            return pre, _false(pre)
        if self.spikes is not None and self.spikes.device != pre.device:
            self._move(pre.device)  # loaded from a checkpoint elsewhere
        if self.seen < self.warmup:
            return self._warmup_step(grads, pre)
        self.seen += 1
        g, mean, var, finite = pre, self.mean, self.var, torch.isfinite(pre)
        std = var.sqrt()
        z = (g - mean) / (std + self.eps)
        if self.mode == "percentile":
            clip_val = mean + self.z_thresh * std
            spike = g > clip_val
        else:
            spike = z > self.z_thresh
            if self.option == "mean":
                clip_val = mean
            else:
                clip_val = (mean + self.z_thresh * std / (z / self.z_thresh)) * self.clip_factor
        effective = torch.where(spike, clip_val, g)
        if self.cap is not None:
            effective = effective.clamp(max=self.cap)
        changed = g > effective
        coef = torch.where(changed, effective / (g + 1e-6), 1.0)
        torch._foreach_mul_(grads, coef)
        x = torch.where(spike, clip_val, g)
        new_mean = self.alpha * mean + (1 - self.alpha) * x
        new_var = self.alpha * var + (1 - self.alpha) * (x - new_mean) ** 2
        update = finite & ~spike if self.skip_update else finite
        fresh = finite & torch.isnan(mean)  # no finite warm-up norm: start from this one
        self.mean = torch.where(fresh, g, torch.where(update, new_mean, mean))
        self.var = torch.where(fresh, 0.0, torch.where(update, new_var, var))
        self.spikes = self.spikes + (spike & finite)
        self.z, self.threshold, self.changed = z, effective, changed
        return pre * coef, changed

    def _move(self, device: torch.device) -> None:
        for key in ("warm", "mean", "var", "spikes"):
            t = getattr(self, key)
            if t is not None:
                setattr(self, key, t.to(device))

    def summary(self) -> dict:
        def num(t: Tensor | None) -> float | None:
            v = None if t is None else float(t)
            return v if v is not None and math.isfinite(v) else None

        return {"initialized": self.mean is not None, "ema_mean": num(self.mean),
                "ema_std": num(None if self.var is None else self.var.sqrt()),
                "spikes": None if self.spikes is None else int(self.spikes),
                "last_z": num(self.z),
                # the norm the last step was clipped to; null when it was not clipped
                "last_clipped_to": num(self.threshold) if self.changed is not None
                and bool(self.changed) else None}

    def state_dict(self) -> dict[str, Tensor]:
        empty = torch.full((), torch.nan)
        return {
            "seen": torch.tensor(self.seen),
            "warm": torch.empty(0) if self.warm is None else self.warm.clone(),
            "mean": empty if self.mean is None else self.mean.clone(),
            "var": empty if self.var is None else self.var.clone(),
            "spikes": torch.zeros((), dtype=torch.long) if self.spikes is None
            else self.spikes.clone(),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.seen = int(state["seen"])
        self.warm = state["warm"].clone() if len(state["warm"]) else None
        self.spikes = state["spikes"].clone()
        initialised = self.seen >= self.warmup
        self.mean = state["mean"].clone() if initialised else None
        self.var = state["var"].clone() if initialised else None
        self.z = self.threshold = self.changed = None


@CLIP.register("zclip", ZClipConfig)
def zclip(cfg: ZClipConfig, named_params: NamedParams) -> ZClip:
    return ZClip(cfg)
