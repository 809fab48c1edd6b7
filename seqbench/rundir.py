"""The run directory's contract: what a run writes, what its statuses mean, and when two
runs are the same experiment.

One torch-free module because every part reads it: the trainer writes the files, the
sweep skips finished runs and refuses to overwrite another experiment's, the checkpoint
restores only its own experiment, and the report (which must not import torch: ~2 s at
start and ~1 s at exit) reads them back. A rule spelled twice drifts: the trainer once
compared configs strictly while the sweep tolerated options added since, so an upgrade
made every interrupted run start over.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from seqbench.outcome import OUTCOMES

# ---- file names -------------------------------------------------------------------------
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.parquet"
PARAM_METRICS_FILE = "param_metrics.parquet"
CHECKPOINT_FILE = "checkpoint.pt"
SWEEP_FILE = "sweep.json"  # in a sweep directory: the preset and globals it was keyed by

# ---- summary.json -----------------------------------------------------------------------
SCHEMA_VERSION = 1
#: summary.json schema versions the report understands.
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
STATUSES = ("running", "completed", "diverged", "error", "interrupted")
#: The run ended and has a verdict (finished, or diverged): skipped by a re-run sweep.
TERMINAL = ("completed", "diverged")
#: Listed as incomplete by the report and excluded from its rates.
INCOMPLETE = ("running", "interrupted", "error")
#: Statuses whose directory holds results or resumable work: never replaced silently.
KEEP = (*TERMINAL, "interrupted", "running")
DIVERGENCE_KINDS = ("nonfinite", "exploded")

#: Keys without which a summary cannot be interpreted.
REQUIRED_KEYS: tuple[str, ...] = (
    "schema_version",
    "status",
    "divergence",
    "first_nonfinite_step",
    "steps_completed",
    "config",
)
#: Numeric summary fields copied into the runs table (missing -> NaN). ``divergence_step``
#: is not in the contract's minimum but the trainer writes it; it is used when present.
#: ``final_val_metric`` / ``best_val_metric`` are in the task's own metric (see ``metric``).
NUMERIC_FIELDS: tuple[str, ...] = (
    "first_nonfinite_step",
    "divergence_step",
    "steps_completed",
    "tokens_seen",
    "final_train_loss",
    "final_val_loss",
    "final_val_bpc",
    "best_val_bpc",
    "final_val_metric",
    "best_val_metric",
    "baseline_val_metric",
    "initial_loss",
    "clip_fraction",
    "skipped_steps",
    "wall_seconds",
    "tokens_per_second",
)
GRAD_NORM_STATS: tuple[str, ...] = ("median", "p99", "max")


class RunSummary(TypedDict, total=False):
    """summary.json as the trainer writes it and the report reads it (the keys readers
    rely on; a summary may hold more). ``validate_summary`` checks these types."""

    schema_version: int
    status: str                       # STATUSES
    divergence: str | None            # DIVERGENCE_KINDS or None
    first_nonfinite_step: int | None
    divergence_step: int | None
    steps_completed: int
    tokens_seen: int
    final_train_loss: float | None
    final_val_loss: float | None
    final_val_bpc: float | None
    best_val_bpc: float | None
    final_val_metric: float | None
    best_val_metric: float | None
    baseline_val_metric: float | None
    initial_loss: float | None
    metric: dict[str, Any] | None     # {name, unit, lower_is_better}
    outcome: str | None               # seqbench.outcome.OUTCOMES
    task_success: bool | None
    task_metrics: dict[str, Any] | None
    grad_norm_pre: dict[str, float] | None  # {median, p99, max}
    clip_fraction: float | None
    # trainer.smoothness_every's probes, null when off: {n, n_used, median_L,
    # spearman_log: {rho, n} | null, fit: {method, L0, L1, L1_ci95, ci, n} | null,
    # warning: {min_history, default_k, armed_at_step, L: [rule], grad: [rule]} with
    # rule {k, step, lead_steps, outcome} (seqbench.early_warning)}
    smoothness: dict[str, Any] | None
    skipped_steps: int
    wall_seconds: float | None
    tokens_per_second: float | None
    config: dict[str, Any]            # the flat experiment config
    # a fork's parent (trainer.init_from; seqbench.fork), null for a run from scratch
    parent: dict[str, Any] | None     # {dir, step, digest}
    # trainer.spike (seqbench.spike), null when off: its settings and `applied`, a list
    # of {step, what} for the disturbed steps the run reached
    spike: dict[str, Any] | None
    env: dict[str, Any]
    error: str | None


class SummaryError(ValueError):
    """A summary.json that breaks the contract; the message says how."""


def _show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_number(value: object) -> bool:
    """None or a finite JSON number (not a boolean, not beyond float range)."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond float range
        return False


def validate_summary(data: object) -> dict:
    """``data`` (a parsed summary.json) when every field a reader uses has the contract's
    type; :class:`SummaryError` with the reason otherwise, and nothing else, whatever the
    file held (the report's reader; fuzzed by tests/report/test_report_hostile.py)."""
    if not isinstance(data, dict):
        raise SummaryError(f"summary.json is not a JSON object (it is a {type(data).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise SummaryError(f"summary.json lacks required keys: {', '.join(missing)}")
    version = data["schema_version"]
    if (
        isinstance(version, bool)
        or not isinstance(version, int)
        or version not in SUPPORTED_SCHEMA_VERSIONS
    ):
        raise SummaryError(
            f"summary.json schema_version {_show(version)} is not supported "
            f"(supported: {sorted(SUPPORTED_SCHEMA_VERSIONS)})"
        )
    status = data["status"]
    if not isinstance(status, str) or status not in STATUSES:
        raise SummaryError(f"summary.json status {_show(status)} is not one of {sorted(STATUSES)}")
    div = data["divergence"]
    if div is not None and (not isinstance(div, str) or div not in DIVERGENCE_KINDS):
        raise SummaryError(
            f"summary.json divergence {_show(div)} is not null, nonfinite or exploded")
    if not isinstance(data["config"], dict):
        raise SummaryError("summary.json config is not an object")
    bad = [k for k in NUMERIC_FIELDS if not is_number(data.get(k))]
    if bad:
        raise SummaryError(f"summary.json fields are not finite numbers: {', '.join(bad)}")
    metric = data.get("metric")
    if metric is not None and not (
        isinstance(metric, dict)
        and isinstance(metric.get("name"), str)
        and metric["name"]
        and isinstance(metric.get("unit"), str)
        and isinstance(metric.get("lower_is_better"), bool)
    ):
        raise SummaryError(
            "summary.json metric is not null or {name, unit, lower_is_better} "
            "(a non-empty string, a string and a boolean)"
        )
    if data.get("outcome") is not None and data["outcome"] not in OUTCOMES:
        raise SummaryError(f"summary.json outcome {_show(data['outcome'])} is not null or one of "
                       f"{', '.join(OUTCOMES)}")
    if not isinstance(data.get("task_success"), (bool, type(None))):  # 0/1 are not verdicts
        raise SummaryError("summary.json task_success is not null, true or false")
    if not isinstance(data.get("task_metrics"), (dict, type(None))):
        raise SummaryError("summary.json task_metrics is not null or an object")
    gn = data.get("grad_norm_pre")
    if gn is not None and (
        not isinstance(gn, dict) or not all(is_number(gn.get(s)) for s in GRAD_NORM_STATS)
    ):
        raise SummaryError("summary.json grad_norm_pre is not null or {median, p99, max} numbers")
    if not _smoothness_ok(data.get("smoothness")):
        raise SummaryError("summary.json smoothness is not null or {n, median_L, "
                           "spearman_log, fit} with numbers")
    parent = data.get("parent")  # absent before forks existed
    if parent is not None and not (
            isinstance(parent, dict) and isinstance(parent.get("dir"), str)
            and isinstance(parent.get("step"), int) and not isinstance(parent["step"], bool)
            and isinstance(parent.get("digest"), str)):
        raise SummaryError("summary.json parent is not null or {dir, step, digest} (a string, "
                           "an integer and a string)")
    spike = data.get("spike")
    applied = spike.get("applied") if isinstance(spike, dict) else None
    if spike is not None and not (isinstance(applied, list) and all(
            isinstance(a, dict) and isinstance(a.get("step"), int)
            and isinstance(a.get("what"), str) for a in applied)):
        raise SummaryError("summary.json spike is not null or an object whose applied is a "
                           "list of {step, what} (an integer and a string)")
    error = data.get("error")
    if error is not None and not isinstance(error, str):  # a message, whatever wrote it
        data["error"] = json.dumps(error, sort_keys=True)
    return data


#: an early-warning rule's outcome (seqbench.early_warning.OUTCOMES; null: not ended)
RULE_OUTCOMES = (None, "warned", "missed", "too_early", "false_alarm", "quiet")


def _smoothness_ok(sm: object) -> bool:
    """The `smoothness` object's shape (null: the probe was off)."""
    if sm is None:
        return True
    if not isinstance(sm, dict) or isinstance(sm.get("n"), bool) \
            or not isinstance(sm.get("n"), int) or not is_number(sm.get("median_L")):
        return False
    warning = sm.get("warning")  # seqbench.early_warning; absent before it existed
    if warning is not None and not (isinstance(warning, dict) and all(
            isinstance(warning.get(sig), list) and all(
                isinstance(r, dict) and is_number(r.get("k")) and is_number(r.get("step"))
                and is_number(r.get("lead_steps")) and r.get("outcome") in RULE_OUTCOMES
                for r in warning[sig]) for sig in ("L", "grad"))):
        return False
    rho, fit = sm.get("spearman_log"), sm.get("fit")
    if rho is not None and not (isinstance(rho, dict) and is_number(rho.get("rho"))
                                and is_number(rho.get("n"))):
        return False
    if fit is None:
        return True
    ci = fit.get("L1_ci95") if isinstance(fit, dict) else None
    return (isinstance(fit, dict) and is_number(fit.get("L0")) and is_number(fit.get("L1"))
            and isinstance(ci, list) and len(ci) == 2 and all(is_number(v) for v in ci))


# ---- what makes two runs the same experiment --------------------------------------------
#: Config keys that change where or how a run executes, not what it measures: runs that
#: differ only in these are the same experiment (one report cell, one finished sweep job,
#: one resumable checkpoint).
NON_EXPERIMENT_KEYS = ("trainer.progress", "trainer.device", "trainer.threads",
                       "trainer.log_every", "trainer.checkpoint_every", "trainer.resume",
                       "trainer.tensorboard", "trainer.keep_checkpoints")
#: Config keys that tell apart the replicates of one configuration: the seed, and a
#: fork's parent (trained under that seed). The report groups runs that differ only in
#: these into one configuration, and pairs runs of two configurations by them;
#: `parent.lineage` (the parent's experiment without its seed) and `parent.step` stay in
#: the configuration.
REPLICATE_KEYS = ("seed", "trainer.init_from", "parent.digest")

#: Values that mean "switched off". Options are added switched off, so a key that only one
#: side has matches when its value there is one of these.
_OFF = (None, False, 0, "", (), [], {})


def experiment_config(flat_config: Mapping[str, Any]) -> dict[str, Any]:
    """The flat config without the keys that do not change what is measured."""
    return {k: v for k, v in flat_config.items() if k not in NON_EXPERIMENT_KEYS}


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every experiment key where two flat configs differ.

    A key only one side has is no difference when its value there is off (null, false,
    0, empty): a run recorded before an option existed is the same experiment as one with
    the option switched off."""
    a, b = experiment_config(old), experiment_config(new)
    out = []
    missing = object()
    for k in sorted(a.keys() | b.keys()):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va is missing or vb is missing:
            present = vb if va is missing else va
            if _is_off(present):
                continue
        elif va == vb:
            continue
        out.append((k, None if va is missing else va, None if vb is missing else vb))
    return out


def _is_off(value: Any) -> bool:
    try:
        return value in _OFF
    except TypeError:  # an unhashable value compared with a dict member: never off
        return False


def experiment_digest(flat_config: Mapping[str, Any]) -> str:
    """32 hex digits naming an experiment config: equal for configs that `differences`
    finds equal up to options added switched off (those keys are left out), so a fork
    names its parent by it (seqbench.fork) and an upgrade does not rename a parent."""
    kept = {k: v for k, v in experiment_config(flat_config).items() if not _is_off(v)}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def same_experiment(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The one same-experiment rule, used by the sweep (skip finished, refuse to
    overwrite), the trainer (resume only its own checkpoint) and the report."""
    return not differences(a, b)


# ---- writing ----------------------------------------------------------------------------
_TMP_COUNTER = itertools.count()


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write to a temporary file and rename it into place: a reader, or a process killed
    mid-write, never sees half a file. `durable` also fsyncs first, so the file survives a
    machine crash; the per-flush writes of a running run skip that (a few ms each, 5% of
    a small CPU step) because the run's final write and its checkpoints are durable."""
    path = Path(path)
    # a name unique to this process and call (two writers never share a temporary file);
    # created with mode 0666 so the umask applies as for any new file
    tmp = path.parent / f".{path.name}.{os.getpid()}.{next(_TMP_COUNTER)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """UTF-8 text, atomically. Undecodable bytes of a path-derived string (surrogate
    escapes) are written as backslash escapes rather than failing the write."""
    atomic_write_bytes(path, text.encode("utf-8", errors="backslashreplace"), durable)


def json_safe(obj: Any) -> Any:
    """JSON has no NaN/Inf: non-finite numbers become null (never a made-up value).
    numpy scalars become Python numbers (checked by name: this module imports no numpy)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    kind = type(obj).__module__
    if kind == "numpy":
        if type(obj).__name__ == "bool_":
            return bool(obj)
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def write_json(path: Path, obj: Any, durable: bool = True) -> None:
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode(), durable)


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json as a dict; None when it is missing or unreadable."""
    try:
        data = json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def unwritable(path: Path | str) -> str | None:
    """Why seqbench could not create or write the directory `path`, or None when it can.

    Asked of the file system, not guessed from permission bits (root passes every
    `os.access` check, yet cannot make a directory in /proc or on a read-only mount): a
    directory is made and removed again in the nearest part of `path` that exists. Run,
    sweep, report and data directories are checked so before any work starts, and a
    refusal is one line naming the path and the reason."""
    target = Path(os.path.abspath(path))
    here = target
    while not os.path.lexists(here) and here != here.parent:
        here = here.parent
    if not here.is_dir():
        kind = "a file" if here.is_file() else "not a directory"
        return f"{here} is {kind}, not a directory" if kind == "a file" else f"{here} is {kind}"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".seqbench-check-", dir=here))
    except OSError as e:
        reason = e.strerror or type(e).__name__
        if e.errno == 2:  # ENOENT from a directory that exists: a virtual file system
            reason = "this file system does not allow new directories"
        return f"cannot create a directory in {here} ({reason})"
    return None


# ---- a task's quality measure -----------------------------------------------------------
#: Display names of metrics (``mse`` -> ``MSE``); others print with spaces for ``_``.
METRIC_NAMES = {"bpc": "bpc", "mse": "MSE", "rmse": "RMSE", "mae": "MAE", "nll": "NLL",
                "error_rate": "error rate", "accuracy": "accuracy", "ppl": "perplexity",
                "perplexity": "perplexity"}
METRIC_LONG = {"bpc": "bits per character", "mse": "mean squared error"}


@dataclass(frozen=True)
class Metric:
    """A task's quality measure: what a task reports (summary.json's ``metric`` block) and
    how a report names and orders it. One description for both sides, so the trainer
    and the report can never disagree about a metric's unit or direction."""

    name: str  # e.g. "bpc", "error_rate", "mse"
    unit: str  # e.g. "bits/char"
    lower_is_better: bool = True

    @property
    def label(self) -> str:
        """``MSE``, ``error rate``, ``bpc``."""
        return METRIC_NAMES.get(self.name.lower(), self.name.replace("_", " "))

    @property
    def long(self) -> str:
        """``bits per character`` for bpc, else the label (for titles)."""
        return METRIC_LONG.get(self.name.lower(), self.label)

    @property
    def is_text(self) -> bool:
        """bpc: the loss is cross-entropy in nats per character."""
        return self.name == "bpc"

    @property
    def direction(self) -> str:
        return "lower is better" if self.lower_is_better else "higher is better"

    def axis(self, prefix: str = "final validation", suffix: str = "", note: str = "",
             wrap: bool = False) -> str:
        """Axis or colour-bar label: ``final validation MSE (squared target units; lower is
        better)``; ``note`` joins the parenthesis, ``wrap`` puts it on a line of its own."""
        bits = [b for b in (self.unit, self.direction, note) if b]
        sep = "\n" if wrap else " "
        return f"{prefix} {self.label}{suffix}{sep}({'; '.join(bits)})".strip()

    def score(self, values: Any) -> Any:
        """Values mapped so that smaller is better and missing is worst (for sorting)."""
        import numpy as np
        import pandas as pd

        v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
        v = v if self.lower_is_better else -v
        return np.where(np.isnan(v), np.inf, v)


#: The metric of text runs, and of every run directory written before metrics had names.
BPC = Metric("bpc", "bits/char", True)
