"""Sweeps: a preset is a union of grids; every job is validated before any is launched.

A grid is a mapping `override key -> list of values`; within a grid the jobs are the
cartesian product, across grids the union, and jobs whose experiment config is the same
are launched once. This is what comparisons of clipping need: `clip=none` must not be
crossed with thresholds, and SGD and Adam need different learning-rate ranges.

Where runs go: a sweep's directory is keyed by the preset *and* the command-line values
that change every job's experiment (`runs/demo/` for the preset as it is,
`runs/demo+task=text_file,trainer.max_steps=150/` with those globals; `sweep_dir_name`).
Within it, each job's directory name is derived from its own overrides only, so it is
the same on every re-run and a finished job (terminal `summary.json` for the same config)
is skipped. A directory that holds a run of *another* experiment (a changed preset file,
a changed default) is never overwritten: the sweep refuses before launching anything
(`conflict`), unless `--force` says to replace it. The Hydra sweeper plugin
(`hydra_plugins/seqbench_sweeper`) drives this module, so every Hydra launcher (basic,
joblib, submitit local or SLURM) can run it.
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

from seqbench.rundir import (
    KEEP,
    NON_EXPERIMENT_KEYS,
    SWEEP_FILE,
    TERMINAL,
    atomic_write_text,
    differences,
    experiment_config,
    read_summary,
    same_experiment,
)

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
    """A YAML value as Hydra override text (parsed back by Hydra to the same value).

    A string that Hydra's override grammar would split or misread (one containing `=`,
    `,`, a quote, a bracket or a parenthesis, such as a fork's parent
    `runs/p/seed=0@500`, or blank at either end) is quoted; any other is written as it is,
    so job names of ordinary grids do not change.
    """
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
    text = str(value)
    if isinstance(value, str) and (_NEEDS_QUOTES.search(text) or text != text.strip()
                                   or not text):
        return _quoted(text)
    return text


_NEEDS_QUOTES = re.compile(r"[=,'\"\[\]()\\]")


def _quoted(text: str) -> str:
    """`text` in single quotes, as Hydra's grammar reads it back: a quote is escaped with
    a backslash, and a run of backslashes is doubled where it precedes a quote or the
    closing quote (elsewhere backslashes are literal)."""
    body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    return f"'{body}'"


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

    A grid key that starts with `_` is not a config key but an axis of *linked settings*:
    its value is a list of mappings, each a set of overrides that go together (a clip
    method with its own threshold; a fork's parent with the parent's seed; `{}`: none).
    Without it, settings that only make sense together would need one grid per
    combination. A command-line value replaces the same key inside linked settings too.

    Jobs are named from their own grid keys (never from the other jobs), so a name is
    stable when grids are added or removed. Exact duplicate override sets are dropped
    here; jobs that compose to the same config are dropped after composition.
    """
    cli = dict(cli or {})
    jobs: list[Job] = []
    seen: set[tuple[str, ...]] = set()
    names: dict[str, tuple[str, ...]] = {}
    for grid in grids:
        # each axis: a list of choices; a choice: items (key, override or None, name or None)
        axes: dict[str, list[tuple[tuple[str, str | None, str | None], ...]]] = {}
        for k, vals in grid.items():
            if k.startswith("_"):
                axes[k] = [_linked(k, choice, cli) for choice in _values(vals)]
            elif k not in cli:
                axes[k] = [((k, o, o),) for o in (f"{k}={format_value(v)}" for v in _values(vals))]
        in_grid = {k for k in grid if not k.startswith("_")} | {
            kk for k in grid if k.startswith("_") for c in _values(grid[k])
            if isinstance(c, Mapping) for kk in c}
        for k, overrides in cli.items():  # named where the grid has the key, or swept
            shown = k in in_grid or len(overrides) > 1
            axes[k] = [((k, o, o if shown else None),) for o in overrides]
        for combo in itertools.product(*(axes[k] for k in _ordered(axes))):
            chosen = sorted((item for choice in combo for item in choice),
                            key=lambda item: _rank(item[0]))
            overrides = tuple(o for _, o, _ in chosen if o is not None)
            identity = tuple(sorted(overrides))
            if identity in seen:
                continue
            seen.add(identity)
            name = job_name([n.lstrip("+~") for _, _, n in chosen if n is not None])
            if names.setdefault(name, identity) != identity:
                raise ValueError(f"_name: two different jobs would both be named {name!r}; "
                                 "give linked settings names that tell them apart")
            jobs.append(Job(name, overrides))
    return jobs


def _linked(key: str, choice: Any, cli: Mapping[str, list[str]]
            ) -> tuple[tuple[str, str | None, str | None], ...]:
    """One choice of a linked-settings axis as items (key, override, name). `_name: TEXT`
    names the choice in job directory names instead of its overrides (a fork's parent
    path would make the name unreadable)."""
    if not isinstance(choice, Mapping) or any(
            str(k).startswith("_") and k != "_name" for k in choice):
        raise ValueError(f"{key}: linked settings are a list of mappings of override keys to "
                         f"values (`{{}}` for none; `_name: TEXT` to name one), got {choice!r}")
    label = choice.get("_name")
    items = [(k, f"{k}={format_value(v)}", None) for k, v in choice.items()
             if k != "_name" and k not in cli]
    if label is None:
        return tuple((k, o, o) for k, o, _ in items)
    return (*items, (key, None, str(label)))


def _ordered(axes: Iterable[str]) -> list[str]:
    return sorted(axes, key=_rank)


def _rank(key: str) -> tuple[int, str]:
    """Group choices first (optim before optim.lr), then other keys, seed last."""
    order = ("task", "model", "optim", "clip", "trainer")
    bare = key.lstrip("+~")
    if bare == "seed":
        return (len(order) + 1, bare)
    group = bare.split(".")[0]
    return (order.index(group) if group in order else len(order), bare)


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


def finished(job_dir: Path, flat_config: Mapping[str, Any]) -> bool:
    """True when the job already ended completed/diverged with this very config."""
    summary = read_summary(job_dir)
    if not summary or summary.get("status") not in TERMINAL:
        return False
    return same_experiment(summary.get("config") or {}, flat_config)


def config_identity(flat_config: Mapping[str, Any]) -> str:
    return json.dumps(experiment_config(flat_config), sort_keys=True, default=str)


# ---- where a sweep's runs go ------------------------------------------------------------

def experiment_globals(arguments: Sequence[str]) -> list[str]:
    """The command-line overrides that set one value for every job and can change what
    a run measures: not swept (`k=a,b` becomes a job axis, named in the job directories),
    not Hydra's own settings (`hydra.*`, `hydra/launcher=...`), not a non-experiment key
    (threads, device, progress, ...). In the order job names use (groups first, seed last).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    picked: dict[str, str] = {}
    for text in arguments:
        try:
            o = parser.parse_override(text)
        except Exception:  # malformed: the sweep's own validation names it
            continue
        key = o.get_key_element().lstrip("+~")
        if o.is_sweep_override() or key.startswith("hydra") or key in NON_EXPERIMENT_KEYS \
                or key == "sweep":
            continue
        picked[o.get_key_element()] = text.lstrip("+")
    return [picked[k] for k in _ordered(picked)]


def sweep_dir_name(preset: str, arguments: Sequence[str]) -> str:
    """`preset` alone, or `preset+<globals>` (`demo+seed=0,trainer.max_steps=20`).

    Readable because people find runs by reading names; made safe (and given a hash of
    the full text when characters were replaced or it was too long) like a job name.
    """
    found = experiment_globals(arguments)
    if not found:
        return preset
    return job_name([f"{preset}+{found[0]}", *found[1:]])


def write_sweep_file(sweep_dir: Path, preset: str, arguments: Sequence[str]) -> None:
    """`sweep.json`: what the directory's name stands for, for people and for tools."""
    info = {"preset": preset, "globals": experiment_globals(arguments),
            "overrides": list(arguments)}
    atomic_write_text(sweep_dir / SWEEP_FILE, json.dumps(info, indent=2) + "\n")


@dataclass(frozen=True)
class Conflict:
    """A run directory holding a run of another experiment than the job meant for it."""

    directory: Path
    status: str
    differ: list[tuple[str, Any, Any]]

    def line(self, how: str) -> str:
        shown = ", ".join(f"{k} is {_short(o)} there, {_short(n)} here"
                          for k, o, n in self.differ[:3])
        more = f" and {len(self.differ) - 3} more keys" if len(self.differ) > 3 else ""
        return (f"{self.directory}: holds a {self.status} run of another experiment "
                f"({shown}{more}); {how}")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def conflict(job_dir: Path, flat_config: Mapping[str, Any]) -> Conflict | None:
    """The run in `job_dir` when it is one to keep (finished, interrupted or running) and
    of another experiment than `flat_config`; None when the directory is free or ours."""
    summary = read_summary(job_dir)
    if not isinstance(summary, dict) or summary.get("status") not in KEEP:
        return None
    config = summary.get("config")
    if not isinstance(config, dict):
        return None
    differ = differences(config, flat_config)
    return Conflict(job_dir, str(summary["status"]), differ) if differ else None


def job_state(job_dir: Path, flat_config: Mapping[str, Any]) -> tuple[bool, Conflict | None]:
    """(`finished(job_dir, flat_config)`, `conflict(job_dir, flat_config)`) from one read
    of the job's summary.json: the resume scan of a 10,000-job sweep reads each once."""
    summary = read_summary(job_dir)
    if not isinstance(summary, dict) or summary.get("status") not in KEEP:
        return False, None
    config = summary.get("config")
    if not isinstance(config, dict):
        return False, None
    differ = differences(config, flat_config)
    if differ:
        return False, Conflict(job_dir, str(summary["status"]), differ)
    return summary["status"] in TERMINAL, None


def conflict_lines(conflicts: Sequence[Conflict], how: str, first: int = 5) -> list[str]:
    """One line per conflict for the first few, then one line counting the rest."""
    lines = [c.line(how) for c in conflicts[:first]]
    if len(conflicts) > first:
        lines.append(f"... and {len(conflicts) - first} more run directories of other "
                     "experiments")
    return lines


def reuse(source_dir: Path, job_dir: Path, flat_config: Mapping[str, Any]) -> bool:
    """Bring a finished run of this very experiment from `source_dir` into `job_dir`.

    Runs written before sweep directories were keyed by their globals sit in
    `runs/<preset>/<job>/`; a sweep with globals looks there before re-running a job. The
    run is copied, never moved (the preset's own directory keeps its runs): the Parquet
    files as hard links (they are only ever replaced by a rename, so a later run there
    cannot change them), the rest as copies.
    """
    import os
    import shutil

    if job_dir.exists() or not finished(source_dir, flat_config):
        return False

    def link_or_copy(src: str, dst: str) -> None:
        if src.endswith(".parquet"):
            try:
                os.link(src, dst)
                return
            except OSError:
                pass
        shutil.copy2(src, dst)

    tmp = job_dir.with_name(job_dir.name + ".reuse-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source_dir, tmp, copy_function=link_or_copy)
    tmp.rename(job_dir)
    return True
