"""Sweeps: a preset is a union of grids; every job is validated before any is launched.

A grid is a mapping `override key -> list of values`; within a grid the jobs are the
cartesian product, across grids the union, and jobs whose experiment config is the same
are launched once. This is what comparisons of clipping need: `clip=none` must not be
crossed with thresholds, and SGD and Adam need different learning-rate ranges.

Each job's directory name is derived from its own overrides only, so it is the same on
every re-run and a finished job (terminal `summary.json` for the same config) is
skipped. The Hydra sweeper plugin (`hydra_plugins/seqbench_sweeper`) drives this
module, so every Hydra launcher (basic, joblib, submitit local or SLURM) can run it.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqbench.config import NON_EXPERIMENT_KEYS

TERMINAL = ("completed", "diverged")


_SAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
MAX_NAME = 160


@dataclass(frozen=True)
class Job:
    name: str
    overrides: tuple[str, ...]


@dataclass
class SweepOutcome:
    """What happened to every job of a sweep (read by the CLI for its exit status)."""

    jobs: int = 0
    completed: int = 0
    diverged: int = 0
    error: int = 0
    skipped: int = 0
    other: int = 0
    errors: list[str] = field(default_factory=list)
    report_dir: str | None = None

    def line(self) -> str:
        return (f"{self.jobs} jobs: {self.completed} completed, {self.diverged} diverged, "
                f"{self.error} error, {self.skipped} skipped (already finished)")


LAST_OUTCOME: SweepOutcome | None = None


def format_value(value: Any) -> str:
    """A YAML value as Hydra override text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def _values(v: Any) -> list[Any]:
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def split_cli_overrides(arguments: Sequence[str]) -> dict[str, list[str]]:
    """Command-line overrides as key -> override strings; `key=a,b` sweeps the values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(list(arguments)):
        key = o.get_key_element()
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                raise ValueError(f"{key}: only comma-separated value lists can be swept here")
            out[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            out[key] = [o.input_line]
    return out


def expand(grids: Iterable[Mapping[str, Any]], cli: Mapping[str, list[str]] | None = None
           ) -> list[Job]:
    """Union of the grids' cartesian products; command-line values replace grid values.

    Jobs are named from their own grid keys (never from the other jobs), so a name is
    stable when grids are added or removed. Exact duplicate override sets are dropped
    here; jobs that compose to the same config are dropped after composition.
    """
    cli = dict(cli or {})
    jobs: list[Job] = []
    seen: set[tuple[str, ...]] = set()
    for grid in grids:
        axes = {k: [f"{k}={format_value(v)}" for v in _values(vals)] for k, vals in grid.items()}
        axes.update(cli)
        keys = _ordered(axes)
        for combo in itertools.product(*(axes[k] for k in keys)):
            identity = tuple(sorted(combo))
            if identity in seen:
                continue
            seen.add(identity)
            named = [o.lstrip("+~") for k, o in zip(keys, combo) if k in grid or len(axes[k]) > 1]
            jobs.append(Job(job_name(named), tuple(combo)))
    return jobs


def _ordered(axes: Mapping[str, list[str]]) -> list[str]:
    """Group choices first (optim before optim.lr), then other keys, seed last."""
    order = ("task", "model", "optim", "clip", "trainer")

    def rank(k: str) -> tuple[int, str]:
        bare = k.lstrip("+~")
        if bare == "seed":
            return (len(order) + 1, bare)
        group = bare.split(".")[0]
        return (order.index(group) if group in order else len(order), bare)

    return sorted(axes, key=rank)


def job_name(overrides: Sequence[str]) -> str:
    """A readable, filesystem-safe directory name: `optim=sgd,optim.lr=0.5,seed=0`.

    One path component of at most MAX_NAME ASCII characters. Characters outside
    [A-Za-z0-9._=,+-] (a `/`, `..`, a NUL, spaces, non-ASCII) become `_`; a name that was
    changed so, or shortened, ends in a hash of the full text, so that two jobs never share
    a directory (`task.path=a/b` and `task.path=a_b` would otherwise both be `...a_b`).
    """
    text = ",".join(overrides) or "default"
    name = _SAFE.sub("_", text).lstrip(".-") or "job"
    if name != text or len(name) > MAX_NAME:
        import hashlib

        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        name = name[: MAX_NAME - 11] + "-" + digest
    return name


def experiment_config(flat_config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flat_config.items() if k not in NON_EXPERIMENT_KEYS}


def read_summary(job_dir: Path) -> dict | None:
    try:
        return json.loads((job_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def finished(job_dir: Path, flat_config: Mapping[str, Any]) -> bool:
    """True when the job already ended completed/diverged with this very config."""
    summary = read_summary(job_dir)
    if not summary or summary.get("status") not in TERMINAL:
        return False
    return same_experiment(summary.get("config") or {}, flat_config)


_OFF = (None, False, 0, "", (), [], {})


def same_experiment(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal experiment configs. A key only one side has matches when its value there is
    an off-state (null, false, 0, empty): options are added switched off, so a run
    recorded before an option existed is the same experiment as one with it off."""
    a, b = experiment_config(a), experiment_config(b)
    for k in a.keys() | b.keys():
        if k in a and k in b:
            if a[k] != b[k]:
                return False
        elif (a[k] if k in a else b[k]) not in _OFF:
            return False
    return True


def config_identity(flat_config: Mapping[str, Any]) -> str:
    return json.dumps(experiment_config(flat_config), sort_keys=True, default=str)
