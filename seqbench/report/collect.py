"""Collect run directories into tables.

Why: a report is a pure function of run directories, so this is the only place that
touches the file system on the way in. It must survive whatever a sweep leaves
behind - jobs still running, jobs killed mid-write, files from an older writer -
without failing the whole report: such directories are listed (``corrupt`` with the
reason, ``incomplete`` with their status) and everything else is still reported.

Reads are columnar (pyarrow, only the needed columns); there are no per-row Python
loops, only one small loop per run directory.

``param_metrics.parquet`` (per-parameter norms, written when ``trainer.param_log_every``
> 0) is optional: most runs have none, and its absence means "no per-parameter data",
never a problem. A run whose file exists but cannot be read keeps its place in every
table and rate - its summary and main metrics are fine, only the per-layer figure
lacks it - and is listed in ``CollectResult.damaged`` with the reason, so the report
names it beside the corrupt runs instead of silently drawing fewer seeds.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqbench.report.task_groups import BPC, METRIC_COLUMNS
from seqbench.rundir import (
    GRAD_NORM_STATS,
    INCOMPLETE,
    METRICS_FILE,
    NUMERIC_FIELDS,
    PARAM_METRICS_FILE,
    SUMMARY_FILE,
    TERMINAL,
    SummaryError,
    validate_summary,
)

#: Runs with these statuses have an outcome (the run finished or it diverged).
VERDICT_STATUSES = frozenset(TERMINAL)
#: Runs with these statuses are listed as incomplete and excluded from rates.
INCOMPLETE_STATUSES = frozenset(INCOMPLETE)
#: The report's name for `clip=norm clip.relative=true` (threshold = multiple of median).
RELATIVE_NORM = "norm_relative"
#: The report's name for `clip=norm clip.scope=per_tensor` (Keras' `clipnorm`: each
#: tensor by its own norm), so sentences and legends never call it global norm clipping.
PER_TENSOR_NORM = "norm_per_tensor"

#: Run-level columns of the runs table; every other column is a config key.
#: ``metric``, ``metric_unit``, ``metric_lower_is_better`` name the task's quality measure
#: (bpc, bits/char, True for summaries written before tasks named theirs);
#: ``task_success`` is True/False where the task has a success criterion and the run
#: completed, else None; ``task_metrics`` is the numbers behind it, as JSON text.
RUN_COLUMNS: tuple[str, ...] = (
    "run_dir",
    "status",
    "divergence",
    *METRIC_COLUMNS,
    *NUMERIC_FIELDS,
    "task_success",
    "outcome",
    *(f"grad_norm_pre_{s}" for s in GRAD_NORM_STATS),
    "error",
    "metrics_rows",
    "param_metrics_rows",
    "schema_version",
    "task_metrics",
)

#: Columns the report adds to a runs table (stats.threshold, stats.cell_index).
DERIVED_COLUMNS: tuple[str, ...] = ("threshold", "cell")

#: Per-step columns used by the figures.
CURVE_COLUMNS: tuple[str, ...] = (
    "step",
    "train_loss",
    "grad_norm_pre",
    "grad_norm_post",
    "val_loss",
    "val_bpc",
    "val_metric",
)
#: metrics.parquet columns without which the file is not a metrics file.
REQUIRED_METRICS_COLUMNS: tuple[str, ...] = ("step", "train_loss")
#: param_metrics.parquet value columns (besides ``step`` and ``name``), as the trainer
#: writes them (``seqbench.metrics.PARAM_SCHEMA``).
PARAM_VALUE_COLUMNS: tuple[str, ...] = (
    "grad_norm",
    "grad_norm_post",
    "weight_norm",
    "update_ratio",
)
#: param_metrics.parquet columns without which the file cannot be used at all.
REQUIRED_PARAM_COLUMNS: tuple[str, ...] = ("step", "name")
#: Column types the footer check accepts (``seqbench.metrics.METRICS_SCHEMA`` writes
#: int64 steps, float64 values and booleans; any integer / float / boolean reads the
#: same). Columns not named here are not read and not checked.
METRICS_COLUMN_KINDS: dict[str, Callable[[pa.DataType], bool]] = {
    "step": pa.types.is_integer,
    **{
        c: (lambda t: is_numeric_type(t))
        for c in (
            "tokens", "train_loss", "grad_norm_pre", "grad_norm_post", "clipped", "lr",
            "nonfinite", "skipped", "wall_s", "val_loss", "val_bpc", "val_metric",
        )
    },
}
PARAM_COLUMN_KINDS: dict[str, Callable[[pa.DataType], bool]] = {
    "step": pa.types.is_integer,
    "name": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    **{c: (lambda t: is_numeric_type(t)) for c in PARAM_VALUE_COLUMNS},
}


class ReportInputError(ValueError):
    """RUNS_DIR cannot be reported on (missing, not a directory, no run directories).

    The message names the path and the problem; the CLI maps it to exit status 2.
    """


@dataclass
class CollectResult:
    """What :func:`collect_runs` found.

    ``runs``: one row per readable run (incomplete ones included, with their status).
    ``corrupt``: ``run_dir``, ``reason``. ``incomplete``: ``run_dir``, ``status``, ``error``.
    ``damaged``: ``run_dir``, ``reason`` for runs kept in ``runs`` whose optional
    param_metrics.parquet cannot be read (their ``param_metrics_rows`` is NaN).
    """

    runs_dir: Path
    runs: pd.DataFrame
    corrupt: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["run_dir", "reason"])
    )
    incomplete: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["run_dir", "status", "error"])
    )
    damaged: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["run_dir", "reason"])
    )
    #: what the report derived for runs written before runs recorded their outcome
    #: (``seqbench.report.outcomes.Derived``); None until ``fill_outcomes`` ran
    derived: object = None

    @property
    def n_found(self) -> int:
        """Run directories found (readable or not)."""
        return len(self.runs) + len(self.corrupt)


class _Corrupt(Exception):
    pass


#: Why a run directory whose name is not UTF-8 is listed as corrupt.
BAD_NAME_REASON = (
    "the directory name is not valid UTF-8, so it cannot be a cell of the report's tables "
    "(rename the directory)"
)


def _is_utf8(text: str) -> bool:
    """False for names with undecodable bytes (Python keeps them as surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_text(text: str) -> str:
    """``text`` with undecodable bytes shown as ``\\xNN`` escapes (always valid UTF-8)."""
    return os.fsencode(text).decode("utf-8", "backslashreplace") if not _is_utf8(text) else text


@contextlib.contextmanager
def _source(path: Path) -> Iterator[str | BinaryIO]:
    """``path`` in a form Arrow can open.

    Arrow encodes path strings as UTF-8, so a run directory whose name holds bytes that
    are not UTF-8 (Python keeps them as surrogate escapes) cannot be opened by name;
    Python opens it and hands Arrow the file instead. Other paths go to Arrow as they
    are (its own file reads release the GIL, which the reader threads rely on).
    """
    text = str(path)
    if _is_utf8(text):
        yield text
        return
    with open(path, "rb") as f:
        yield f


def find_run_dirs(runs_dir: str | os.PathLike[str]) -> list[Path]:
    """Every directory under ``runs_dir`` (itself included) that holds a summary.json.

    Does not descend into a run directory or into hidden directories (``.hydra``),
    which keeps the walk cheap on large sweeps. Sorted for deterministic output.
    """
    root = Path(runs_dir)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if SUMMARY_FILE in filenames or SUMMARY_FILE in dirnames:  # a directory: corrupt
            found.append(Path(dirpath))
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


#: Largest summary.json read, in bytes: a real one is a few kB, and a huge file is not
#: a summary (nor worth holding in memory a thousand times).
MAX_SUMMARY_BYTES = 16 * 2**20
#: int64 range: a config integer beyond it is kept as text (a table cell must not overflow).
_INT64 = 2**63


def _hashable(value: object) -> object:
    """Config values become table cells; lists/dicts are kept as canonical JSON text.

    Integers beyond int64 (only a hand-edited or foreign file has them) become floats,
    or text beyond float range, so no numeric column of the report can overflow.
    """
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _INT64:
        try:
            return float(value)
        except OverflowError:
            return str(value)
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _parse_summary(path: Path) -> object:
    """The decoded JSON of a summary file; :class:`_Corrupt` for anything else.

    Strict JSON: ``NaN``/``Infinity`` (which Python's json writes but the trainer never
    does) are rejected, as are lone UTF-16 surrogates, which would make every text file
    of the report unwritable as UTF-8.
    """
    try:
        if path.stat().st_size > MAX_SUMMARY_BYTES:
            raise _Corrupt(f"summary.json is larger than {MAX_SUMMARY_BYTES // 2**20} MiB")
        raw = path.read_bytes()
    except OSError as exc:
        raise _Corrupt(f"summary.json unreadable: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Corrupt(f"summary.json is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    try:
        data = json.loads(text, parse_constant=_reject_constant)
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as exc:
        raise _Corrupt(f"summary.json is not valid JSON: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise _Corrupt("summary.json holds text that is not valid Unicode") from exc
    except (ValueError, RecursionError) as exc:  # NaN, 5,000-digit integers, deep nesting
        raise _Corrupt(f"summary.json is not valid JSON: {type(exc).__name__}: {exc}") from exc
    return data



def _read_summary(path: Path) -> dict:
    """A validated summary (the contract's validator, ``seqbench.rundir``): any deviation
    is :class:`_Corrupt` with a reason; nothing here raises anything else, whatever the
    file holds (fuzzed by tests/report/test_report_hostile.py)."""
    try:
        return validate_summary(_parse_summary(path))
    except SummaryError as exc:
        raise _Corrupt(str(exc)) from exc


def is_numeric_type(t: pa.DataType) -> bool:
    """A column type whose values read as numbers: integers, floats, booleans, all-null."""
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_null(t)
    )


def _footer_rows(
    path: Path, required: Sequence[str], kinds: dict[str, Callable[[pa.DataType], bool]]
) -> int:
    """Validate a Parquet file from its footer (cheap) and return its row count.

    ``required`` columns must be present; a present column named in ``kinds`` must have
    a type its predicate accepts (a ``train_loss`` of strings is not a metrics file).
    """
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "is missing"
        raise _Corrupt(f"{path.name} {what}")
    try:
        with _source(path) as src:
            meta = pq.read_metadata(src)
        schema = meta.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise _Corrupt(f"{path.name} unreadable: {exc}") from exc
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise _Corrupt(f"{path.name} lacks columns: {', '.join(missing)}")
    if len(set(schema.names)) != len(schema.names):
        raise _Corrupt(f"{path.name} has duplicate column names")
    for f in schema:
        ok = kinds.get(f.name)
        if ok is not None and not ok(f.type):
            raise _Corrupt(f"{path.name} column {f.name} has type {f.type}")
    return int(meta.num_rows)


def _metrics_rows(path: Path) -> int:
    return _footer_rows(path, REQUIRED_METRICS_COLUMNS, METRICS_COLUMN_KINDS)


def _param_rows(path: Path) -> float:
    """Rows of param_metrics.parquet: 0 when there is no such file (nothing was logged)."""
    if not os.path.lexists(path):
        return 0.0
    return float(_footer_rows(path, REQUIRED_PARAM_COLUMNS, PARAM_COLUMN_KINDS))


def _row(rel: str, data: dict, metrics_rows: float) -> dict:
    row: dict[str, object] = {
        "run_dir": rel,
        "status": data["status"],
        "divergence": data["divergence"],
        "schema_version": data["schema_version"],
        "error": data.get("error"),
        "metrics_rows": metrics_rows,
    }
    for k in NUMERIC_FIELDS:
        v = data.get(k)
        row[k] = math.nan if v is None else float(v)
    metric = data.get("metric")
    if metric is None:
        # written before tasks named their metric: a text run, its metric is bpc
        row.update(metric=BPC.name, metric_unit=BPC.unit, metric_lower_is_better=True)
        if "final_val_metric" not in data:
            row["final_val_metric"] = row["final_val_bpc"]
        if "best_val_metric" not in data:
            row["best_val_metric"] = row["best_val_bpc"]
    else:
        row.update(
            metric=metric["name"],
            metric_unit=metric["unit"],
            metric_lower_is_better=metric["lower_is_better"],
        )
    row["task_success"] = data.get("task_success")
    # null for runs written before outcomes existed: the report derives it (outcomes.py)
    row["outcome"] = data.get("outcome")
    tm = data.get("task_metrics")
    row["task_metrics"] = None if tm is None else _hashable(tm)
    gn = data.get("grad_norm_pre") or {}
    for s in GRAD_NORM_STATS:
        v = gn.get(s)
        row[f"grad_norm_pre_{s}"] = math.nan if v is None else float(v)
    for k, v in data["config"].items():
        if k in row or k in DERIVED_COLUMNS or ("." not in k and k != "seed"):
            # a config key may never shadow a run field or a column the report adds
            # (the contract's keys are dotted, e.g. clip.method, and seed)
            k = f"config.{k}"
        row[k] = _hashable(v)
    return row


def collect_runs(runs_dir: str | os.PathLike[str]) -> CollectResult:
    """Read every run directory under ``runs_dir`` into a :class:`CollectResult`.

    Raises :class:`ReportInputError` when ``runs_dir`` does not exist, is not a
    directory, or holds no run directory at all. Corrupt and incomplete runs are
    listed, never fatal. A run with status running/interrupted/error is incomplete
    even if its metrics file is missing or damaged (it may still be writing);
    a completed or diverged run with a damaged metrics file is corrupt. A damaged
    param_metrics.parquet does not drop a run: it is listed in ``damaged``.
    """
    root = Path(runs_dir)
    if not root.exists():
        raise ReportInputError(f"{root}: runs directory does not exist")
    if not root.is_dir():
        raise ReportInputError(f"{root}: not a directory")
    dirs = find_run_dirs(root)
    if not dirs:
        raise ReportInputError(f"{root}: no run directories (no {SUMMARY_FILE} found below it)")

    rows: list[dict] = []
    corrupt: list[dict] = []
    incomplete: list[dict] = []
    damaged: list[dict] = []
    for d in dirs:
        rel = d.relative_to(root).as_posix() or "."
        if not _is_utf8(rel):
            corrupt.append({"run_dir": _utf8_text(rel), "reason": BAD_NAME_REASON})
            continue
        try:
            data = _read_summary(d / SUMMARY_FILE)
        except _Corrupt as exc:
            corrupt.append({"run_dir": rel, "reason": _utf8_text(str(exc))})
            continue
        status = data["status"]
        try:
            n_rows: float = _metrics_rows(d / METRICS_FILE)
        except _Corrupt as exc:
            if status not in INCOMPLETE_STATUSES:
                corrupt.append({"run_dir": rel, "reason": _utf8_text(str(exc))})
                continue
            n_rows = math.nan
        if status in INCOMPLETE_STATUSES:
            incomplete.append({"run_dir": rel, "status": status, "error": data.get("error")})
        row = _row(rel, data, n_rows)
        try:
            row["param_metrics_rows"] = _param_rows(d / PARAM_METRICS_FILE)
        except _Corrupt as exc:
            row["param_metrics_rows"] = math.nan
            if status not in INCOMPLETE_STATUSES:  # a running job may be mid-write
                damaged.append({"run_dir": rel, "reason": _utf8_text(str(exc))})
        rows.append(row)

    runs = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=list(RUN_COLUMNS))
    lead = [c for c in RUN_COLUMNS if c in runs.columns]
    config_cols = sorted(c for c in runs.columns if c not in RUN_COLUMNS)
    runs = runs[lead + config_cols]
    numeric = (*NUMERIC_FIELDS, *(f"grad_norm_pre_{s}" for s in GRAD_NORM_STATS))
    for c in (*numeric, "metrics_rows", "param_metrics_rows"):
        runs[c] = pd.to_numeric(runs[c], errors="coerce").astype(float)
    runs["task_success"] = runs["task_success"].astype(object)  # True / False / None
    runs["metric_lower_is_better"] = runs["metric_lower_is_better"].astype(bool)
    if "clip.relative" in runs.columns and "clip.method" in runs.columns:
        # norm clipping at a multiple of the calibrated median is its own method in a
        # report: its threshold (clip.max_norm) is a multiple, not a norm
        relative = (runs["clip.relative"] == True) & (runs["clip.method"] == "norm")  # noqa: E712
        runs["clip.method"] = runs["clip.method"].astype(object).mask(relative, RELATIVE_NORM)
    if "clip.scope" in runs.columns and "clip.method" in runs.columns:
        per_tensor = (runs["clip.scope"] == "per_tensor") & (runs["clip.method"] == "norm")
        runs["clip.method"] = runs["clip.method"].astype(object).mask(per_tensor,
                                                                      PER_TENSOR_NORM)
    return CollectResult(
        runs_dir=root,
        runs=runs.reset_index(drop=True),
        corrupt=pd.DataFrame(corrupt, columns=["run_dir", "reason"]),
        incomplete=pd.DataFrame(incomplete, columns=["run_dir", "status", "error"]),
        damaged=pd.DataFrame(damaged, columns=["run_dir", "reason"]),
    )


@dataclass
class RunColumns:
    """Per-step columns of several runs as flat arrays: no per-row Python objects.

    ``ids``: the runs read, in order; ``run``: for each row, its index into ``ids``
    (int32); ``step``: int64 (empty when read with ``steps=False``); ``values``: column
    -> float64 (NaN where the file has a null or lacks the column; booleans as 0/1).
    Why arrays and not a DataFrame: a 1,000-run sweep of 10,000 steps is ten million
    rows, and a string ``run_dir`` per row (or a merge on it) costs more than reading
    the files.
    """

    ids: list[str]
    run: np.ndarray
    step: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.run)


#: Threads that read metrics files at once. Arrow releases the GIL while it reads and
#: decodes, so a few threads overlap file opening, I/O and decoding even on 2 cores.
READ_THREADS = 4


def _read_metrics_file(
    path: Path, values: Sequence[str], steps: bool = True
) -> tuple[int, np.ndarray | None, list] | str:
    """``(rows, step, [value arrays])`` of one metrics file, or why it cannot be used.

    ``steps=False`` checks the step column's type in the footer but does not read it.
    """
    try:
        with _source(path) as src, pq.ParquetFile(src) as pf:
            schema = pf.schema_arrow
            if "step" not in schema.names:
                return f"{METRICS_FILE} lacks columns: step"
            if not pa.types.is_integer(schema.field("step").type):
                return f"{METRICS_FILE} step column is not integers"
            present = [c for c in values if c in schema.names]
            table = pf.read(columns=(["step"] if steps else []) + present, use_threads=False)
            n = pf.metadata.num_rows
        step = None
        if steps:
            col = table.column("step")
            if col.null_count:
                return f"{METRICS_FILE} step column has nulls"
            step = np.asarray(col.to_numpy(), dtype=np.int64)
        out = []
        for c in values:
            if c not in present:
                out.append(np.full(n, np.nan))
                continue
            col = table.column(c)
            if not is_numeric_type(col.type):  # a cast would parse numeric strings
                return f"{METRICS_FILE} column {c} is {col.type}, not numbers"
            # float columns: nulls become NaN; booleans 0/1
            out.append(np.asarray(col.cast(pa.float64()).to_numpy(), dtype=np.float64))
        return n, step, out
    except (OSError, pa.ArrowException) as exc:
        return f"{METRICS_FILE} unreadable: {exc}"


def read_columns(
    runs_dir: str | os.PathLike[str],
    run_dirs: Iterable[str],
    columns: Sequence[str],
    *,
    errors: list[tuple[str, str]] | None = None,
    steps: bool = True,
) -> RunColumns:
    """Read ``step`` and ``columns`` of each run's metrics.parquet into :class:`RunColumns`.

    Only those columns are read (columnar), by :data:`READ_THREADS` threads; one small
    loop over files, none over rows. ``steps=False`` leaves the step column unread
    (``step`` is then an empty array), for figures that pool values regardless of step.
    Files that cannot be read (missing, damaged, a ``step`` that is not an integer
    column or has nulls, a value column that is not numeric) are skipped and, if
    ``errors`` is a list, reported into it as ``(run_dir, reason)``, in the order of
    ``run_dirs``.
    """
    root = Path(runs_dir)
    run_dirs = list(dict.fromkeys(str(r) for r in run_dirs))
    values = [c for c in dict.fromkeys(columns) if c != "step"]
    paths = [root / rel / METRICS_FILE for rel in run_dirs]
    if len(paths) > 1:
        with ThreadPoolExecutor(min(READ_THREADS, len(paths))) as pool:
            results = list(pool.map(lambda p: _read_metrics_file(p, values, steps), paths))
    else:
        results = [_read_metrics_file(p, values, steps) for p in paths]
    ids: list[str] = []
    parts: list[tuple[int, np.ndarray | None, list]] = []
    for rel, res in zip(run_dirs, results, strict=True):
        if isinstance(res, str):
            if errors is not None:
                errors.append((rel, res))
            continue
        ids.append(rel)
        parts.append(res)
    if not parts:
        return RunColumns(
            ids,
            np.zeros(0, np.int32),
            np.zeros(0, np.int64),
            {c: np.zeros(0, np.float64) for c in values},
        )
    return RunColumns(
        ids=ids,
        run=np.repeat(np.arange(len(parts), dtype=np.int32), [n for n, _, _ in parts]),
        step=np.concatenate([step for _, step, _ in parts]) if steps else np.zeros(0, np.int64),
        values={
            c: np.concatenate([vals[i] for _, _, vals in parts]) for i, c in enumerate(values)
        },
    )


def load_curves(
    runs_dir: str | os.PathLike[str],
    run_dirs: Iterable[str],
    columns: Sequence[str] = CURVE_COLUMNS,
    *,
    errors: list[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Per-step metrics of several runs, concatenated, with a ``run_dir`` column.

    Only ``columns`` are read (columnar). A requested column the file lacks comes
    back as NaN; ``step`` is int64, everything else float64 (booleans as 0/1). Files
    that cannot be read are skipped and, if ``errors`` is a list, reported into it as
    ``(run_dir, reason)``. Figures on large sweeps use :func:`read_columns`, which
    returns the same numbers as arrays without a string per row.
    """
    wanted = list(dict.fromkeys(["step", *columns]))
    cols = read_columns(runs_dir, run_dirs, wanted, errors=errors)
    if not cols.ids:
        empty = {c: pd.Series(dtype="int64" if c == "step" else float) for c in wanted}
        return pd.DataFrame({"run_dir": pd.Series(dtype=object), **empty})
    frame = pd.DataFrame({c: cols.step if c == "step" else cols.values[c] for c in wanted})
    run_dir = pd.Categorical.from_codes(cols.run, categories=cols.ids).astype(object)
    frame.insert(0, "run_dir", run_dir)
    return frame


def load_param_metrics(
    runs_dir: str | os.PathLike[str],
    run_dirs: Iterable[str],
    columns: Sequence[str] = PARAM_VALUE_COLUMNS,
    *,
    errors: list[tuple[str, str]] | None = None,
) -> pd.DataFrame:
    """Per-parameter norms of several runs: ``run_dir``, ``step``, ``name`` and ``columns``.

    Only those columns are read (columnar). A run without param_metrics.parquet has no
    per-parameter data and contributes no rows - not an error. A file that cannot be
    read, or lacks ``step``/``name``, is skipped and, if ``errors`` is a list, reported
    into it as ``(run_dir, reason)``. A value column the file lacks comes back as NaN.
    ``step`` is int64, ``name`` and ``run_dir`` object, values float64.
    """
    root = Path(runs_dir)
    run_dirs = list(dict.fromkeys(str(r) for r in run_dirs))
    values = [c for c in dict.fromkeys(columns) if c not in REQUIRED_PARAM_COLUMNS]
    tables: list[pa.Table] = []
    ids: list[str] = []
    for rel in run_dirs:
        path = root / rel / PARAM_METRICS_FILE
        if not path.exists():
            continue
        try:
            with _source(path) as src, pq.ParquetFile(src) as pf:
                names = pf.schema_arrow.names
                missing = [c for c in REQUIRED_PARAM_COLUMNS if c not in names]
                if missing:
                    raise _Corrupt(f"{PARAM_METRICS_FILE} lacks columns: {', '.join(missing)}")
                want = [*REQUIRED_PARAM_COLUMNS, *(c for c in values if c in names)]
                table = pf.read(columns=want)
        except (OSError, pa.ArrowException) as exc:
            if errors is not None:
                errors.append((rel, f"{PARAM_METRICS_FILE} unreadable: {exc}"))
            continue
        except _Corrupt as exc:
            if errors is not None:
                errors.append((rel, str(exc)))
            continue
        n = table.num_rows
        arrays = [table.column("step").cast(pa.int64()), table.column("name").cast(pa.string())]
        for c in values:
            col = table.column(c).cast(pa.float64()) if c in table.column_names else None
            arrays.append(col if col is not None else pa.nulls(n, pa.float64()))
        arrays.append(pa.array(np.full(n, len(ids), dtype=np.int32)))
        tables.append(pa.Table.from_arrays(arrays, names=["step", "name", *values, "__run"]))
        ids.append(rel)
    if not tables:
        return pd.DataFrame(
            {
                "run_dir": pd.Series(dtype=object),
                "step": pd.Series(dtype="int64"),
                "name": pd.Series(dtype=object),
                **{c: pd.Series(dtype=float) for c in values},
            }
        )
    frame = pa.concat_tables(tables).to_pandas()
    frame["name"] = frame["name"].astype(object)
    for c in values:
        frame[c] = frame[c].astype(float)
    codes = frame.pop("__run").to_numpy()
    frame.insert(0, "run_dir", pd.Categorical.from_codes(codes, categories=ids).astype(object))
    return frame
