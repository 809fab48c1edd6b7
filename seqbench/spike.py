"""Exact disturbances at named steps (`trainer.spike`): a late explosion on demand.

Why: a run from scratch explodes, if at all, in its first steps, where no calibrated or
warmed-up clipper can act. The explosions practitioners fight come late, in a trained
model: a rare huge gradient, a learning-rate jump, a bad batch. `trainer.spike` makes
one happen at a chosen step, exactly, so forks of one trained parent (`trainer.init_from`,
seqbench.fork) differ only in the clipping that meets it.

    trainer.spike.steps=[510]        # the steps disturbed (global steps: a fork's count
                                     # on from its parent's); empty: off (the default)
    trainer.spike.grad_factor=128    # that step's gradient x 128, before clipping
    trainer.spike.lr_factor=4        # the learning rate x 4 ...
    trainer.spike.lr_steps=3         # ... for 3 steps from each spike step (null: 1)
    trainer.spike.corrupt_batch=true # that step's batch replaced by random tokens

What each does, exactly:

- `grad_factor`: the accumulated (and, under fp16, unscaled) gradient is multiplied in
  place before the pre-clip norm is taken, so `grad_norm_pre` of that step is the factor
  times the undisturbed norm (bit for bit with a power-of-two factor) and the clipper
  sees the spike as it would see a real one.
- `lr_factor`: every parameter group's lr is multiplied just before `optimizer.step()`
  and put back (the value itself, not divided again) right after; the `lr` column shows
  the multiplied lr. A schedule is unaffected (it recomputes lr from its base). Windows
  of several spike steps that overlap multiply once, never twice.
- `corrupt_batch`: the step's input and target windows (every stream) are replaced by
  uniformly random token ids from the whole vocabulary, drawn on the CPU from a
  generator seeded from (`seed`, step) alone -- the same tokens for every fork of one
  parent and seed, on any device -- and never from the run's own random streams. The
  data position moves on as usual (the real window is skipped, not delayed), so the
  steps after it read the data an undisturbed run reads; the hidden state the random
  window leaves is carried on, as a bad batch's would be. Only tasks with a
  `corrupt(generator)` method (the character-LM tasks) support it; the synthetic and
  regression tasks are refused at validation (their inputs are not tokens).

Recorded: metrics.parquet gets a nullable text column `spike` (only in runs with
`trainer.spike` on: the other runs' files are unchanged), naming what was done on each
disturbed step (`grad_factor=128,lr_factor=4,corrupt_batch`; `lr_factor=4` on the
following lr steps) and null elsewhere; summary.json's `spike` repeats the settings and
lists `applied`: the disturbed steps the run reached, with what was done.

Cost: nothing is read from the device. The disturbed steps are known on the host, so an
undisturbed step costs one dict lookup; a disturbed one a few kernels (a foreach
multiply, a host-to-device copy of the random window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from seqbench.checks import rule
from seqbench.errors import ConfigError

SPIKE_COLUMN = "spike"
#: the column metrics.parquet adds in a run with `trainer.spike` on
SPIKE_FIELD = pa.field(SPIKE_COLUMN, pa.string())


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _factor(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v) and v > 0)


@dataclass
class SpikeConfig:
    # the steps disturbed, on the run's step axis (a fork's steps count on from its
    # parent's); empty: no spike
    # (their range, which depends on max_steps and a parent, is checked with the others')
    steps: list[int] = rule([], "a list of distinct steps",
                            lambda v: isinstance(v, list) and all(_is_int(s) for s in v)
                            and len(set(v)) == len(v))
    # that step's gradient x this, before clipping; null: unchanged
    grad_factor: float | None = rule(None, "null or a finite number > 0", _factor)
    # the learning rate x this for lr_steps steps from each spike step; null: unchanged
    lr_factor: float | None = rule(None, "null or a finite number > 0", _factor)
    lr_steps: int | None = rule(None, "null (one step) or an integer >= 1",
                                lambda v: v is None or (_is_int(v) and v >= 1))
    # that step's batch replaced by uniformly random tokens (seeded from seed and step)
    corrupt_batch: bool = False


def config_errors(trainer: dict, parent_step: int | None) -> list[ConfigError]:
    """The rules between `trainer.spike`'s keys and the run's steps (each key's own rule
    is its field's). `parent_step`: a fork's starting step (its spikes must come after)."""
    s = trainer["spike"]
    steps = s["steps"]
    actions = [k for k in ("grad_factor", "lr_factor") if s[k] is not None]
    actions += ["corrupt_batch"] if s["corrupt_batch"] else []
    out = []
    if steps and not actions:
        out.append(ConfigError("trainer.spike.steps", steps, "names no disturbance: set "
                               "trainer.spike.grad_factor, lr_factor or corrupt_batch"))
    if not steps:
        out += [ConfigError(f"trainer.spike.{k}", s[k], "needs trainer.spike.steps (the "
                            "steps to disturb)") for k in actions]
    if s["lr_steps"] is not None and s["lr_factor"] is None:
        out.append(ConfigError("trainer.spike.lr_steps", s["lr_steps"],
                               "only with trainer.spike.lr_factor"))
    low, high = (parent_step or 0) + 1, trainer["max_steps"]
    if any(not low <= x <= high for x in steps):
        where = f" (after the parent's step {parent_step}: a fork's steps count on from " \
                "its parent's)" if parent_step else ""
        out.append(ConfigError("trainer.spike.steps", steps,
                               f"each step in [{low}, trainer.max_steps={high}]{where}"))
    return out


def data_errors(resolved: dict, task: Any) -> list[ConfigError]:
    """`corrupt_batch` needs a task whose batches are tokens (a `corrupt` method)."""
    if resolved["trainer"]["spike"]["corrupt_batch"] and not callable(
            getattr(task, "corrupt", None)):
        return [ConfigError("trainer.spike.corrupt_batch", True,
                            f"false for task {resolved['task']['name']}: only tasks whose "
                            "batches are tokens (the character-LM tasks) have a corrupted "
                            "batch")]
    return []


def _number(v: float) -> str:
    short = f"{v:g}"
    return short if float(short) == v else repr(float(v))


def corrupt_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of step `step`'s random batch: a function of (seed, step) only."""
    words = np.random.SeedSequence([int(seed), int(step)]).generate_state(2, dtype=np.uint32)
    gen = torch.Generator(device="cpu")
    gen.manual_seed((int(words[0]) << 31) ^ int(words[1]))  # < 2**63
    return gen


@dataclass(frozen=True)
class Disturbance:
    """What is done at one step: None / False where nothing."""

    grad_factor: float | None
    lr_factor: float | None
    corrupt: bool
    label: str  # the metrics row's `spike` value


class SpikePlan:
    """The disturbances of a run, per step, known on the host before it starts."""

    def __init__(self, cfg: dict, seed: int):
        self.cfg, self.seed = dict(cfg), int(seed)
        steps = sorted(int(s) for s in cfg["steps"])
        lr_at: set[int] = set()
        if cfg["lr_factor"] is not None:
            k = int(cfg["lr_steps"] or 1)
            lr_at = {n for s in steps for n in range(s, s + k)}
        self.at: dict[int, Disturbance] = {}
        for n in sorted(set(steps) | lr_at):
            spike = n in steps
            grad = cfg["grad_factor"] if spike else None
            lr = cfg["lr_factor"] if n in lr_at else None
            corrupt = bool(cfg["corrupt_batch"]) and spike
            label = ",".join([*([f"grad_factor={_number(grad)}"] if grad is not None else []),
                              *([f"lr_factor={_number(lr)}"] if lr is not None else []),
                              *(["corrupt_batch"] if corrupt else [])])
            self.at[n] = Disturbance(None if grad is None else float(grad),
                                     None if lr is None else float(lr), corrupt, label)

    @classmethod
    def for_run(cls, spike_cfg: dict | None, seed: int) -> SpikePlan | None:
        """The plan; None when `trainer.spike` is off (no steps)."""
        if not spike_cfg or not spike_cfg.get("steps"):
            return None
        return cls(spike_cfg, seed)

    def get(self, step: int) -> Disturbance | None:
        return self.at.get(step)

    def generator(self, step: int) -> torch.Generator:
        return corrupt_generator(self.seed, step)

    def summary(self, reached: int) -> dict[str, Any]:
        """summary.json's `spike`: the settings, and the disturbed steps up to `reached`."""
        return {**self.cfg, "steps": sorted(self.cfg["steps"]),
                "applied": [{"step": n, "what": d.label} for n, d in self.at.items()
                            if n <= reached]}
