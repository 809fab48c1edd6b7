"""Optimizer factory and learning-rate schedules, one registry entry per optimizer.

The schedule is a host-side `LambdaLR`: the lr of each step is a Python number the
trainer already knows, so recording it costs no device read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from seqbench.checks import at_least, in_range, nonnegative, one_of, positive, rule
from seqbench.registry import Registry

OPTIM: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optim", "optim.name")
SCHEDULES = ("constant", "warmup_cosine")


@dataclass
class _Common:
    lr: float = positive(1e-3)
    weight_decay: float = nonnegative(0.0)
    schedule: str = one_of("constant", SCHEDULES)
    warmup_steps: int = at_least(0, 0)
    # cosine decays from lr to min_lr_ratio * lr over the run's max_steps
    min_lr_ratio: float = in_range(0.0, 0.0, 1.0)


@dataclass
class SGDConfig(_Common):
    name: str = "sgd"
    momentum: float = in_range(0.0, 0.0, 1.0, high_open=True)
    nesterov: bool = False


@dataclass
class AdamConfig(_Common):
    name: str = "adam"
    betas: list[float] = rule(
        [0.9, 0.999], "two numbers in [0, 1)", lambda b: len(b) == 2 and all(0 <= x < 1 for x in b)
    )
    eps: float = positive(1e-8)


@dataclass
class AdamWConfig(AdamConfig):
    name: str = "adamw"
    weight_decay: float = nonnegative(0.01)


@dataclass
class RMSpropConfig(_Common):
    name: str = "rmsprop"
    alpha: float = in_range(0.99, 0.0, 1.0, high_open=True)
    momentum: float = in_range(0.0, 0.0, 1.0, high_open=True)
    eps: float = positive(1e-8)
    centered: bool = False


Params = Iterable[nn.Parameter]


@OPTIM.register("sgd", SGDConfig)
def sgd(params: Params, cfg: SGDConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay, foreach=True,
    )


@OPTIM.register("adam", AdamConfig)
def adam(params: Params, cfg: AdamConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
        weight_decay=cfg.weight_decay, foreach=True,
    )


@OPTIM.register("adamw", AdamWConfig)
def adamw(params: Params, cfg: AdamWConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
        weight_decay=cfg.weight_decay, foreach=True,
    )


@OPTIM.register("rmsprop", RMSpropConfig)
def rmsprop(params: Params, cfg: RMSpropConfig) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(
        params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum,
        centered=cfg.centered, weight_decay=cfg.weight_decay, foreach=True,
    )


def build_optimizer(params: Params, cfg) -> torch.optim.Optimizer:
    return OPTIM.get(cfg.name).build(params, cfg)


def lr_factor(step: int, cfg, max_steps: int) -> float:
    """Multiplier of the base lr for 0-based optimizer step `step`."""
    if cfg.schedule == "constant":
        return 1.0
    warm = int(cfg.warmup_steps)
    if warm > 0 and step < warm:
        return (step + 1) / warm
    span = max(1, max_steps - warm)
    progress = min(1.0, (step - warm) / span)
    floor = float(cfg.min_lr_ratio)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_schedule(optimizer: torch.optim.Optimizer, cfg, max_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg, max_steps)
    )
