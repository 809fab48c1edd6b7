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

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqbench.report.tasks import BPC, METRIC_COLUMNS

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.parquet"
PARAM_METRICS_FILE = "param_metrics.parquet"

#: summary.json schema versions this reader understands.
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
STATUSES = frozenset({"running", "completed", "diverged", "error", "interrupted"})
#: Runs with these statuses have an outcome (the run finished or it diverged).
VERDICT_STATUSES = frozenset({"completed", "diverged"})
#: Runs with these statuses are listed as incomplete and excluded from rates.
INCOMPLETE_STATUSES = frozenset({"running", "interrupted", "error"})
DIVERGENCE_KINDS = frozenset({"nonfinite", "exploded"})
#: The report's name for `clip=norm clip.relative=true` (threshold = multiple of median).
RELATIVE_NORM = "norm_relative"

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
    "clip_fraction",
    "skipped_steps",
    "wall_seconds",
    "tokens_per_second",
)
GRAD_NORM_STATS: tuple[str, ...] = ("median", "p99", "max")

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
    *(f"grad_norm_pre_{s}" for s in GRAD_NORM_STATS),
    "error",
    "metrics_rows",
    "param_metrics_rows",
    "schema_version",
    "task_metrics",
)

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
REQUIRED_METRICS_COLUMNS: tuple[str, ...] = ("step",)
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

    @property
    def n_found(self) -> int:
        """Run directories found (readable or not)."""
        return len(self.runs) + len(self.corrupt)


class _Corrupt(Exception):
    pass


def find_run_dirs(runs_dir: str | os.PathLike[str]) -> list[Path]:
    """Every directory under ``runs_dir`` (itself included) that holds a summary.json.

    Does not descend into a run directory or into hidden directories (``.hydra``),
    which keeps the walk cheap on large sweeps. Sorted for deterministic output.
    """
    root = Path(runs_dir)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if SUMMARY_FILE in filenames:
            found.append(Path(dirpath))
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _hashable(value: object) -> object:
    """Config values become table cells; lists/dicts are kept as canonical JSON text."""
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value, sort_keys=True)
    return value


def _is_number(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _read_summary(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Corrupt(f"summary.json unreadable: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Corrupt(f"summary.json is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _Corrupt("summary.json is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise _Corrupt(f"summary.json lacks required keys: {', '.join(missing)}")
    version = data["schema_version"]
    if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
        raise _Corrupt(
            f"summary.json schema_version {version!r} is not supported "
            f"(supported: {sorted(SUPPORTED_SCHEMA_VERSIONS)})"
        )
    if data["status"] not in STATUSES:
        raise _Corrupt(f"summary.json status {data['status']!r} is not one of {sorted(STATUSES)}")
    if data["divergence"] is not None and data["divergence"] not in DIVERGENCE_KINDS:
        raise _Corrupt(
            f"summary.json divergence {data['divergence']!r} is not null, nonfinite or exploded"
        )
    if not isinstance(data["config"], dict):
        raise _Corrupt("summary.json config is not an object")
    bad = [k for k in NUMERIC_FIELDS if not _is_number(data.get(k))]
    if bad:
        raise _Corrupt(f"summary.json fields are not numbers: {', '.join(bad)}")
    metric = data.get("metric")
    if metric is not None and not (
        isinstance(metric, dict)
        and isinstance(metric.get("name"), str)
        and metric["name"]
        and isinstance(metric.get("unit"), str)
        and isinstance(metric.get("lower_is_better"), bool)
    ):
        raise _Corrupt(
            "summary.json metric is not null or {name, unit, lower_is_better} "
            "(a non-empty string, a string and a boolean)"
        )
    if not isinstance(data.get("task_success"), (bool, type(None))):  # 0/1 are not verdicts
        raise _Corrupt("summary.json task_success is not null, true or false")
    if not isinstance(data.get("task_metrics"), (dict, type(None))):
        raise _Corrupt("summary.json task_metrics is not null or an object")
    gn = data.get("grad_norm_pre")
    if gn is not None and (
        not isinstance(gn, dict) or not all(_is_number(gn.get(s)) for s in GRAD_NORM_STATS)
    ):
        raise _Corrupt("summary.json grad_norm_pre is not null or {median, p99, max} numbers")
    return data


def _footer_rows(path: Path, required: Sequence[str]) -> int:
    """Validate a Parquet file from its footer (cheap) and return its row count."""
    try:
        meta = pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise _Corrupt(f"{path.name} unreadable: {exc}") from exc
    names = set(meta.schema.to_arrow_schema().names)
    missing = [c for c in required if c not in names]
    if missing:
        raise _Corrupt(f"{path.name} lacks columns: {', '.join(missing)}")
    return int(meta.num_rows)


def _metrics_rows(path: Path) -> int:
    if not path.is_file():
        raise _Corrupt("metrics.parquet is missing")
    return _footer_rows(path, REQUIRED_METRICS_COLUMNS)


def _param_rows(path: Path) -> float:
    """Rows of param_metrics.parquet: 0 when there is no such file (nothing was logged)."""
    return float(_footer_rows(path, REQUIRED_PARAM_COLUMNS)) if path.exists() else 0.0


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
    tm = data.get("task_metrics")
    row["task_metrics"] = None if tm is None else _hashable(tm)
    gn = data.get("grad_norm_pre") or {}
    for s in GRAD_NORM_STATS:
        v = gn.get(s)
        row[f"grad_norm_pre_{s}"] = math.nan if v is None else float(v)
    for k, v in data["config"].items():
        if k in row:  # a config key may never shadow a run field
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
        try:
            data = _read_summary(d / SUMMARY_FILE)
        except _Corrupt as exc:
            corrupt.append({"run_dir": rel, "reason": str(exc)})
            continue
        status = data["status"]
        try:
            n_rows: float = _metrics_rows(d / METRICS_FILE)
        except _Corrupt as exc:
            if status not in INCOMPLETE_STATUSES:
                corrupt.append({"run_dir": rel, "reason": str(exc)})
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
                damaged.append({"run_dir": rel, "reason": str(exc)})
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
    return CollectResult(
        runs_dir=root,
        runs=runs.reset_index(drop=True),
        corrupt=pd.DataFrame(corrupt, columns=["run_dir", "reason"]),
        incomplete=pd.DataFrame(incomplete, columns=["run_dir", "status", "error"]),
        damaged=pd.DataFrame(damaged, columns=["run_dir", "reason"]),
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
    ``(run_dir, reason)``.
    """
    root = Path(runs_dir)
    run_dirs = list(dict.fromkeys(str(r) for r in run_dirs))
    wanted = list(dict.fromkeys(["step", *columns]))
    tables: list[pa.Table] = []
    ids: list[str] = []
    for rel in run_dirs:
        path = root / rel / METRICS_FILE
        try:
            with pq.ParquetFile(path) as pf:
                present = [c for c in wanted if c in pf.schema_arrow.names]
                table = pf.read(columns=present)
        except (OSError, pa.ArrowException) as exc:
            if errors is not None:
                errors.append((str(rel), f"metrics.parquet unreadable: {exc}"))
            continue
        n = table.num_rows
        arrays = []
        for c in wanted:
            if c in table.column_names:
                target = pa.int64() if c == "step" else pa.float64()
                arrays.append(table.column(c).cast(target))
            else:
                arrays.append(pa.nulls(n, pa.int64() if c == "step" else pa.float64()))
        arrays.append(pa.array(np.full(n, len(ids), dtype=np.int32)))
        tables.append(pa.Table.from_arrays(arrays, names=[*wanted, "__run"]))
        ids.append(str(rel))
    if not tables:
        empty = {c: pd.Series(dtype="int64" if c == "step" else float) for c in wanted}
        return pd.DataFrame({"run_dir": pd.Series(dtype=object), **empty})
    frame = pa.concat_tables(tables).to_pandas()
    for c in wanted:
        if c != "step":
            frame[c] = frame[c].astype(float)
    codes = frame.pop("__run").to_numpy()
    frame.insert(0, "run_dir", pd.Categorical.from_codes(codes, categories=ids).astype(object))
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
            with pq.ParquetFile(path) as pf:
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
