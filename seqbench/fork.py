"""Forks: a run that starts from another run's kept checkpoint (`trainer.init_from`).

Why: a trained model hit by a late spike is the case clipping is meant for, and forks of
one parent differ only in what is compared (the clipping, the spike), so they pair.

Where forks start from. A run keeps its state at chosen steps with
`trainer.keep_checkpoints=[S, ...]`: `checkpoint-S.pt` in its directory (the payload of
seqbench.checkpoint plus the task's vocabulary fingerprint), written at the end of step
S (a flush is forced there: the rows are the same, only a window boundary moves; a run
that diverges at or before S keeps none) and never removed by the run itself.
`checkpoint.pt` is not a fork point: it is the run's own resume point, overwritten while
it trains and removed when it ends. A fresh start (not a resume) removes the
`checkpoint-*.pt` of the run it replaces. `trainer.keep_checkpoints` is not part of the
experiment: it changes what is left on disk, not what is measured.

`trainer.init_from=RUN_DIR` starts from the parent's latest kept checkpoint,
`RUN_DIR@STEP` from the one at STEP (a path containing `=` or `,`, as a sweep's job
directory does, is quoted: `trainer.init_from='runs/p/seed=0@500'`). The child takes:

- the model's weights and the task's data position and carried state (hidden states,
  a synthetic task's generator), so it reads on where the parent stopped;
- the random streams (Python, NumPy, torch CPU and CUDA), so dropout continues as it
  would have in the parent;
- the first step's loss, the reference of `trainer.explode_factor` (the parent's step 1:
  a fork counts as exploded under the same criterion as a run from scratch);
- with `trainer.init_optimizer=true`, the optimizer's state (momentum, Adam's moments and
  step count); its hyperparameters (lr, betas, ...) stay the child's own. Default false:
  a fresh optimizer.

and keeps its own config for everything else: clipping (a fresh clipper: a calibrating or
warming-up method calibrates on the fork), learning rate and schedule, steps, spikes.
A fork whose config equals its parent's, with init_optimizer=true, continues exactly as
the parent did (tests/test_fork.py).

**Steps count on from the parent's.** A fork from step S runs steps S+1 ... max_steps:
`trainer.max_steps` (> S), `trainer.spike.steps`, `eval_every`, the metrics rows,
`steps_completed` and `tokens_seen` are all on the parent's step axis, so the curves of
a parent and its forks align and a spike at step 510 is the same global step in every
fork. A schedule is positioned at step S (warm-up and cosine as the parent's axis says).
metrics.parquet holds the child's own rows only (from S+1); `tokens_per_second` counts
the tokens of the child's own steps.

What must match, checked before anything is built (one line, exit 2): the parent exists
and keeps a checkpoint at the step; every `task.*` and `model.*` key, `seed` (a fork
continues the parent's data and random streams: the seed is the parent's) and
`trainer.accum_steps` (the task's carried state is split by micro-batch) equal the
parent's; the task's vocabulary (and split sizes) equal the parent's, so a text file that
changed is refused; with init_optimizer=true, `optim.name` and `trainer.freeze` too. The
parent's directory is only read.

**Identity.** `trainer.init_from` is an experiment key, and the flat config (summary.json's
`config`, what the sweep and resume compare) also holds `parent.step` (the step started
from, resolved when `@STEP` is not given) and `parent.digest` (a digest of the parent's
experiment config, `seqbench.rundir.experiment_digest`). A parent re-trained under another
config makes its forks other experiments: a sweep re-runs them only with --force, and a
fork's own checkpoint of the old parent is not resumed. summary.json's `parent` is
`{dir, step, digest}` (null for a run from scratch).

**Resume.** An interrupted fork resumes from its own checkpoint.pt (trainer.resume=auto),
like any run, never from the parent again.

This module is what validation and identity need (finding and reading a parent, the
checks); setting a trainer to a parent's state is `seqbench.checkpoint.start_fork`, beside
`restore`, and writing a kept checkpoint is `seqbench.checkpoint.capture_kept`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqbench.errors import ConfigError
from seqbench.rundir import REPLICATE_KEYS, differences, experiment_digest

KEY = "trainer.init_from"
_KEPT = re.compile(r"checkpoint-([0-9]+)\.pt")
#: keys a fork must share with its parent (prefixes, and whole keys)
MATCH_PREFIXES = ("task.", "model.")
MATCH_KEYS = ("seed", "trainer.accum_steps")
#: ... and with trainer.init_optimizer=true
OPTIMIZER_KEYS = ("optim.name", "trainer.freeze")


def kept_name(step: int) -> str:
    return f"checkpoint-{int(step)}.pt"


def kept_steps(run_dir: Path) -> list[int]:
    """The steps of a run directory's kept checkpoints, in order."""
    try:
        names = [p.name for p in Path(run_dir).iterdir()]
    except (OSError, ValueError):
        return []
    return sorted(int(m.group(1)) for n in names if (m := _KEPT.fullmatch(n)))


def remove_kept(run_dir: Path) -> None:
    """A fresh start removes the kept checkpoints of the run it replaces."""
    for step in kept_steps(run_dir):
        (Path(run_dir) / kept_name(step)).unlink(missing_ok=True)


def task_fingerprint(task: Any) -> dict | None:
    """What the weights' meaning depends on beyond the config: the vocabulary (its symbols,
    as a digest) and the split sizes; None for a task without a vocabulary."""
    vocab = getattr(task, "vocab", None)
    if vocab is None:
        return None
    symbols = getattr(vocab, "chars", None)
    text = json.dumps({"kind": getattr(vocab, "kind", None), "size": int(vocab.size),
                       "symbols": None if symbols is None else list(symbols),
                       "unk": bool(getattr(vocab, "has_unk", False))}, ensure_ascii=True)
    describe = task.describe() if hasattr(task, "describe") else {}
    return {"vocab_size": int(vocab.size),
            "vocab_digest": hashlib.blake2b(text.encode(), digest_size=8).hexdigest(),
            "splits": describe.get("chars")}


@dataclass(frozen=True)
class Parent:
    """A kept checkpoint a run can start from, as validation and the trainer read it."""

    text: str  # trainer.init_from as given
    dir: Path  # resolved
    step: int
    path: Path
    config: dict  # the parent's experiment config (flat)
    digest: str
    fingerprint: dict | None

    @property
    def lineage(self) -> str:
        """A digest of the parent's experiment without its seed: the same for the parents
        of one configuration trained under several seeds (the report groups their forks
        into one configuration by it, and pairs them by `parent.digest`)."""
        return experiment_digest({k: v for k, v in self.config.items()
                                  if k not in REPLICATE_KEYS})

    def block(self) -> dict[str, Any]:
        """summary.json's `parent`."""
        return {"dir": str(self.dir), "step": self.step, "digest": self.digest}


def split(text: str) -> tuple[str, int | None]:
    """`RUN_DIR@STEP` -> (RUN_DIR, STEP); a text without a numeric `@STEP` is all path."""
    head, sep, tail = text.rpartition("@")
    if sep and head and tail.isascii() and tail.isdigit():
        return head, int(tail)
    return text, None


def find(text: Any) -> Parent:
    """The parent `trainer.init_from` names; ConfigError (one line) when there is none."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(KEY, text, "a run directory: RUN_DIR or RUN_DIR@STEP (or null)")
    where, step = split(text)
    d = Path(where)
    try:
        exists, is_dir = d.exists(), d.is_dir()
    except (OSError, ValueError):  # a NUL, a name too long
        exists = is_dir = False
    if not exists:
        raise ConfigError(KEY, text, "no such run directory")
    if not is_dir:
        raise ConfigError(KEY, text, "not a directory (a run directory: RUN_DIR or "
                                     "RUN_DIR@STEP)")
    kept = kept_steps(d)
    if not kept:
        raise ConfigError(KEY, text, "keeps no checkpoint to start from (a run keeps them "
                                     "with trainer.keep_checkpoints=[STEP, ...])")
    if step is None:
        step = kept[-1]
    elif step not in kept:
        raise ConfigError(KEY, text, f"has no checkpoint at step {step}; kept: "
                                     + ", ".join(map(str, kept)))
    path = d / kept_name(step)
    try:
        st = path.stat()
        meta = _read(str(path.resolve()), st.st_mtime_ns, st.st_size)
    except OSError as e:
        meta = f"cannot be read ({e.strerror or type(e).__name__})"
    if isinstance(meta, str):
        raise ConfigError(KEY, text, f"{kept_name(step)} {meta}")
    if meta["step"] != step:
        raise ConfigError(KEY, text, f"{kept_name(step)} holds step {meta['step']}")
    return Parent(text, d.resolve(), step, path, meta["config"],
                  meta["digest"], meta["fingerprint"])


@functools.lru_cache(maxsize=256)
def _read(path: str, mtime_ns: int, size: int) -> dict | str:
    """The metadata of a kept checkpoint (no tensors kept), or why it cannot be used;
    cached per file version: a sweep validates many forks of few parents."""
    try:  # tensors and plain values only: no code in the file ever runs
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, tampered, not a torch file, unsafe content
        return f"is unreadable ({type(e).__name__})"
    need = ("step", "config", "model", "optimizer", "task", "rng", "run")
    if not isinstance(data, dict) or any(k not in data for k in need) \
            or not isinstance(data["config"], dict) or not isinstance(data["run"], dict):
        return "is not a seqbench checkpoint of a run"
    return {"step": int(data["step"]), "config": dict(data["config"]),
            "digest": experiment_digest(data["config"]),
            "fingerprint": data.get("task_fingerprint")}


def identity(text: Any) -> dict[str, Any]:
    """The flat config's `parent.step`, `parent.digest` and `parent.lineage` for
    `trainer.init_from=text`
    (null when there is no such parent: validation says why)."""
    try:
        parent = find(text)
    except ConfigError:
        return {"parent.step": None, "parent.digest": None, "parent.lineage": None}
    return {"parent.step": parent.step, "parent.digest": parent.digest,
            "parent.lineage": parent.lineage}


def _matching(flat: dict, keys: tuple[str, ...] = (), prefixes: tuple[str, ...] = ()
              ) -> dict:
    return {k: v for k, v in flat.items() if k in keys or k.startswith(prefixes)}


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


def config_errors(resolved: dict, mine: dict) -> tuple[list[ConfigError], int | None]:
    """(the errors of `trainer.init_from`, `init_optimizer` and `keep_checkpoints`
    against the parent and the run's steps, the parent's step or None); `mine` is the
    run's flat config."""
    t = resolved["trainer"]
    text, out = t.get("init_from"), []
    if text is None:
        if t.get("init_optimizer"):
            out.append(ConfigError("trainer.init_optimizer", True,
                                   f"only with {KEY}=RUN_DIR (false for a run from scratch)"))
        out += keep_errors(t, 0)
        return out, None
    try:
        parent = find(text)
    except ConfigError as e:
        return [e], None
    where = f"as in the parent ({KEY}={text})"
    checks = [(MATCH_KEYS, MATCH_PREFIXES, "a fork starts from its weights, data and "
                                           "random streams")]
    if t.get("init_optimizer"):
        checks.append((OPTIMIZER_KEYS, (), "trainer.init_optimizer=true takes its "
                                           "optimizer's state"))
    for keys, prefixes, why in checks:
        for k, old, new in differences(_matching(parent.config, keys, prefixes),
                                       _matching(mine, keys, prefixes)):
            out.append(ConfigError(k, new, f"must be {_show(old)} {where}: {why}"))
    if t["max_steps"] <= parent.step:
        out.append(ConfigError("trainer.max_steps", t["max_steps"],
                               f"must be > {parent.step}, the parent's step ({KEY}={text}): "
                               "a fork's steps count on from its parent's"))
    out += keep_errors(t, parent.step)
    return out, parent.step


def keep_errors(t: dict, start: int) -> list[ConfigError]:
    """`trainer.keep_checkpoints`: steps this run reaches."""
    keep, high = t.get("keep_checkpoints") or [], t["max_steps"]
    if any(not start < s <= high for s in keep):
        after = f" (after the parent's step {start})" if start else ""
        return [ConfigError("trainer.keep_checkpoints", keep,
                            f"each step in [{start + 1}, trainer.max_steps={high}]{after}")]
    return []


def data_errors(resolved: dict, task: Any) -> list[ConfigError]:
    """The built task against the parent's: the same vocabulary and split sizes."""
    text = resolved["trainer"].get("init_from")
    if text is None:
        return []
    try:
        parent = find(text)
    except ConfigError:
        return []  # reported by config_errors
    theirs, mine = parent.fingerprint, task_fingerprint(task)
    if theirs == mine or theirs is None or mine is None:
        return []
    task_cfg = resolved["task"]
    key, value = ("task.path", task_cfg["path"]) if "path" in task_cfg else ("task.name",
                                                                            task_cfg["name"])
    n, m = theirs.get("vocab_size"), mine.get("vocab_size")
    if n != m:
        what = f"a vocabulary of {m} tokens, not the parent's {n}"
    elif theirs.get("vocab_digest") != mine.get("vocab_digest"):
        what = f"a vocabulary of {m} tokens other than the parent's"
    else:
        what = f"splits of {_show(mine['splits'])} characters, not the parent's " \
               f"{_show(theirs['splits'])}"
    return [ConfigError(key, value, f"{what} ({KEY}={text}): the parent was trained on "
                                    "other data")]


def own_dir_error(text: Any, run_dir: Any) -> ConfigError | None:
    """A run cannot start from its own directory (its fresh start would remove the
    checkpoint it starts from)."""
    if text is None or run_dir is None:
        return None
    try:
        same = Path(split(str(text))[0]).resolve() == Path(str(run_dir)).resolve()
    except (OSError, ValueError):
        return None
    if same:
        return ConfigError(KEY, text, "another run's directory, not this run's own "
                                      "(hydra.run.dir)")
    return None

