"""seqbench's clipping methods in any PyTorch training loop, without Hydra.

    clipper = Clipper("zclip", z_thresh=2.5)   # a method of the CLIP registry, its keys
    loss.backward()
    stats = clipper(model.named_parameters())  # clips in place; ClipStats of tensors
    optimizer.step()

The same code as `seqbench train` runs: the config is the method's registered dataclass
(its defaults are conf/clip/<method>.yaml's, a test keeps them equal; an installed
plugin's methods are registered too, see `seqbench.plugins`), checked by the functions
the CLI uses, and each call does what Trainer.step does between backward and the
optimizer step. So a number measured in a seqbench sweep means the same in a loop.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, InterpolationResolutionError, OmegaConfBaseException
from torch import Tensor

from seqbench.clipping import CLIP, global_norm

# config.py's own checks and wording, so that every line is the CLI's
from seqbench.config import (
    clip_errors,
    ensure_registered,
    field_errors,
    first_line,
    known_keys,
    resolve_config,
    selector_errors,
    type_rule,
)
from seqbench.errors import ConfigError, ConfigErrors


class ClipStats(NamedTuple):
    """One call's numbers, as tensors on the gradients' device: reading them (`.item()`,
    `bool()`) is a host sync, so a loop that wants speed reads them only every N steps."""

    pre_norm: Tensor  # global L2 norm of the gradients before clipping
    post_norm: Tensor  # ... after clipping (whatever the method: comparable across methods)
    clipped: Tensor  # bool: the method changed the gradient


def clip_config(method: str, keys: dict[str, Any]) -> DictConfig:
    """The validated config of `method` with `keys` over its dataclass defaults.

    Raises ConfigErrors; each of its errors reads exactly as the line that
    `python -m seqbench train clip=<method> clip.<key>=<value>` prints after
    "seqbench: error: ". As there, wrong types and unknown keys (Hydra's composition
    step) are reported before ranges, which are only checked on well-typed values.
    Values go through OmegaConf.update(merge=True), the call Hydra applies an override
    with, so conversions ("2.5" -> 2.5, "yes" -> True) and refusals are the CLI's.
    """
    ensure_registered()  # an installed plugin's methods are methods here too
    try:
        entry = CLIP.get(method)
    except ConfigError:  # the CLI names the group (clip=bogus), not clip.method
        raise ConfigErrors([ConfigError("clip", method, "one of " + ", ".join(CLIP.names()))]
                           ) from None
    # under a `clip` node, so that every key OmegaConf and config.py report is clip.<key>
    root = OmegaConf.create({"clip": OmegaConf.structured(entry.schema)})
    errors = []
    for key, value in keys.items():
        if key not in root.clip:
            errors.append(ConfigError(f"clip.{key}", _as_given(value), "unknown key; known "
                                      "keys here: " + ", ".join(root.clip.keys())))
            continue
        try:
            OmegaConf.update(root, f"clip.{key}", value, merge=True)
        except OmegaConfBaseException as e:
            errors.append(_composition_error(e, key, value))
    if errors:
        raise ConfigErrors(errors)
    resolved, errors = resolve_config(root)
    if not errors:
        errors = field_errors(entry.schema, resolved["clip"], "clip.")
    if not errors:  # the CLI's rules for the clip group that need no trainer
        errors = selector_errors("clip", resolved["clip"], entry.schema) \
            + clip_errors(resolved["clip"])
    if errors:
        raise ConfigErrors(errors)
    OmegaConf.resolve(root)  # an ${oc.env:...} is read now, not at the first call
    return root.clip


def _composition_error(e: OmegaConfBaseException, key: str, value: Any) -> ConfigError:
    """hydra_input.explain_hydra_error's line for the same override: the value as given, or
    `?` when OmegaConf names a key inside it (a field of a group rule)."""
    where = getattr(e, "full_key", None) or f"clip.{key}"
    shown = _as_given(value) if where == f"clip.{key}" else "?"
    if isinstance(e, ConfigKeyError):
        return ConfigError(where, shown, "unknown key" + known_keys(e))
    if isinstance(e, InterpolationResolutionError):
        return ConfigError(where, shown, "cannot be resolved: " + re.sub(
            r"^\w+ raised while resolving interpolation: ", "", first_line(e)))
    return ConfigError(where, shown, type_rule(e))


def _as_given(value: Any) -> Any:
    """A value as typed in an override (the CLI echoes the typed text): None is null."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return value


class Clipper:
    """A seqbench clipping method for a plain PyTorch loop: `Clipper(method, **keys)`.

    Construction validates like the CLI (`clip_config`). Two checks of `seqbench train`
    involve the trainer and cannot be made here: `clip.calibration_steps` (relative
    norm) must be below trainer.max_steps, and `clip.error_if_nonfinite` contradicts
    trainer.on_nonfinite=skip. `error_if_nonfinite=true` raises like torch's
    clip_grad_norm_ on a non-finite norm, which costs one host sync per call.

    The method is built on the first call, because its builder takes the named trainable
    parameters (per-name groups, AGC's head). A call then clips, in place, the
    gradients of the parameters that require grad and have one -- frozen ones are never
    part of a norm, as in Trainer.step -- and returns ClipStats without a host sync.
    Use it after gradient accumulation, and after `scaler.unscale_(optimizer)` under
    fp16 AMP. Another set of trainable parameters later (another model, a changed
    `requires_grad`) is an error: the method was set up for the first set.
    """

    def __init__(self, method: str, /, **keys: Any):
        self.method = method
        self.config = clip_config(method, keys)
        self._build = CLIP.get(method).build
        # Whether a method keeps state is a property of what its builder returns; every
        # builder is cheap and pure, so building once without parameters tells.
        self.stateful = hasattr(self._build(self.config, []), "load_state_dict")
        self._raise_nonfinite = bool(self.config.get("error_if_nonfinite", False))
        self._fn: Any = None
        self._names: list[tuple[str, int]] | None = None  # (name, id) of the first call
        self._device = torch.device("cpu")
        self._pending: dict[str, Any] = {}  # state loaded before the first call

    def __call__(self, named_parameters: Iterable[tuple[str, Tensor]]) -> ClipStats:
        trainable = []
        for item in named_parameters:
            if not (isinstance(item, tuple) and len(item) == 2 and torch.is_tensor(item[1])):
                raise TypeError("Clipper expects model.named_parameters(): (name, parameter)"
                                f" pairs, got {type(item).__name__}")
            if item[1].requires_grad:
                trainable.append(item)
        names = [(n, id(p)) for n, p in trainable]
        if self._names is not None and names != self._names:
            raise ValueError(_mismatch(self._names, names))
        if self._fn is None:
            self._names = names
            self._device = trainable[0][1].device if trainable else torch.device("cpu")
            self._fn = self._build(self.config, trainable)
            for line in getattr(self._fn, "warnings", []):  # e.g. a group rule without match
                warnings.warn(f"clip {self.method}: {line}", stacklevel=2)
            if self._pending:
                self._fn.load_state_dict(_copied(self._pending, self._device))
                self._pending = {}
        params = [p for _, p in trainable if p.grad is not None]
        grads = [p.grad for p in params]
        pre = global_norm(grads, 2.0)
        if self._raise_nonfinite and not bool(torch.isfinite(pre)):
            raise RuntimeError(f"the gradient norm is non-finite ({float(pre)}) and "
                               "clip.error_if_nonfinite=true (as torch's clip_grad_norm_)")
        post, clipped = self._fn(params, grads, pre)
        return ClipStats(pre, post, clipped)

    def state_dict(self) -> dict[str, Any]:
        """The method's state (histories, EMA, calibrated threshold) as the trainer saves
        it in a checkpoint; {} for a stateless method or before the first call. Copies,
        unlike nn.Module.state_dict: some methods update their tensors in place, which
        would otherwise change a dict kept in memory."""
        if self._fn is None or not self.stateful:
            return _copied(self._pending)
        return _copied(self._fn.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`'s result; before the first call it is kept until
        the method is built. {} is a fresh state (what a new clipper has)."""
        if state and not self.stateful:
            raise ValueError(f"clip method {self.method!r} keeps no state; got keys "
                             f"{', '.join(map(str, state))}")
        if self._fn is None:
            self._pending = _copied(state)
        elif state:
            self._fn.load_state_dict(_copied(state, self._device))
        elif self.stateful:
            self._fn = None  # rebuilt fresh at the next call (same parameters)

    def summary(self) -> dict[str, Any]:
        """What the trainer writes to summary.json's `clip` (thresholds, spikes, groups):
        reading it is a host sync. {} before the first call or for a method without one."""
        return self._fn.summary() if hasattr(self._fn, "summary") else {}

    def __repr__(self) -> str:
        keys = ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k != "method")
        return f"Clipper({self.method!r}{', ' if keys else ''}{keys})"


def _copied(state: dict[str, Any], device: torch.device | None = None) -> dict[str, Any]:
    return {k: v.detach().to(device or v.device, copy=True) if torch.is_tensor(v) else v
            for k, v in state.items()}


def _mismatch(old: list[tuple[str, int]], new: list[tuple[str, int]]) -> str:
    was, now = dict(old), dict(new)
    parts = [f"{what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
             for what, names in (
                 ("added", [n for n in now if n not in was]),
                 ("removed", [n for n in was if n not in now]),
                 ("other tensors", [n for n in now if n in was and now[n] != was[n]]))
             if names]
    return ("Clipper: the trainable parameters differ from the first call's, which the "
            f"method was set up for ({'; '.join(parts) or 'another order'}). Make a new "
            "Clipper for them; its state carries over: new.load_state_dict(old.state_dict())")
