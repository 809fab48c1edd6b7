"""Which quality measure each run reports, and which runs may share a table or a figure.

Why: tasks measure quality in different units - bits per character for text, mean
squared error for a regression, error rate for a classification - and a mean over two
of them means nothing. Every aggregate in a report is therefore taken within one
*task group* (``task.name`` and the metric's name, unit and direction), and every
table and figure says which metric it shows and which direction is better.

Run directories written before tasks named their metric are text runs: their metric
is bpc, read from ``final_val_bpc`` (:func:`with_metric`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqbench.report import _format as fmt
from seqbench.rundir import BPC, Metric

#: Columns of a runs or cells table that say which metric a row's quality is in.
METRIC_COLUMNS: tuple[str, ...] = ("metric", "metric_unit", "metric_lower_is_better")
TASK_COLUMN = "task.name"


#: The report's name for the contract's metric description (``seqbench.rundir.Metric``).
MetricInfo = Metric


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_") or "task"


@dataclass(frozen=True)
class TaskGroup:
    """Runs that may be aggregated together: one task, one metric.

    ``has_success``: some run of the group reported a ``task_success`` verdict, so the
    task has a success criterion. ``slug`` is unique among the groups of one report and
    safe in file names.
    """

    task: str | None
    metric: MetricInfo
    slug: str
    has_success: bool = False

    @property
    def label(self) -> str:
        """The task's name as a report prints it."""
        return self.task if self.task is not None else "all runs"

    @property
    def heading(self) -> str:
        """``adding: MSE (squared target units; lower is better)``."""
        return f"{self.label}: {self.metric.axis(prefix='')}"


def with_metric(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its metric columns filled in, a copy (the input is not modified).

    Rows without a metric (older summaries, hand-made tables) are bpc, and their
    ``final_val_metric`` / ``best_val_metric`` are ``final_val_bpc`` / ``best_val_bpc``:
    the same number under its general name, not an imputed value. ``task_success`` is
    added as missing where absent.
    """
    out = df.copy()
    n = len(out)

    def col(name: str, dtype: object = object) -> pd.Series:
        if name in out.columns:
            return out[name].astype(dtype)
        return pd.Series([None] * n if dtype is object else np.nan, index=out.index, dtype=dtype)

    name = col("metric")
    legacy = name.isna()
    out["metric"] = name.where(~legacy, BPC.name)
    out["metric_unit"] = col("metric_unit").where(~legacy, BPC.unit).fillna("")
    lib = col("metric_lower_is_better")
    out["metric_lower_is_better"] = lib.where(~(legacy | lib.isna()), True).astype(bool)
    is_bpc = out["metric"] == BPC.name
    pairs = (("final_val_metric", "final_val_bpc"), ("best_val_metric", "best_val_bpc"))
    for general, text in pairs:
        g = pd.to_numeric(col(general), errors="coerce").astype(float)
        t = pd.to_numeric(col(text), errors="coerce").astype(float)
        out[general] = g.where(~(is_bpc & g.isna()), t)
    out["task_success"] = col("task_success")
    return out


def task_key_columns(df: pd.DataFrame) -> list[str]:
    """The columns that identify a task group in ``df``."""
    return ([TASK_COLUMN] if TASK_COLUMN in df.columns else []) + list(METRIC_COLUMNS)


def _keys(df: pd.DataFrame) -> pd.Series:
    """One hashable task-group key per row: (task or None, name, unit, lower_is_better)."""
    filled = with_metric(df)
    task = (
        filled[TASK_COLUMN].astype(object)
        if TASK_COLUMN in filled.columns
        else pd.Series(None, index=filled.index, dtype=object)
    )
    task = task.map(lambda v: None if fmt.is_missing(v) else str(v))
    return pd.Series(
        list(
            zip(
                task,
                filled["metric"].astype(str),
                filled["metric_unit"].astype(str),
                filled["metric_lower_is_better"].astype(bool),
                strict=True,
            )
        ),
        index=df.index,
        dtype=object,
    )


def _has_success(df: pd.DataFrame) -> bool:
    if "n_success_trials" in df.columns:
        return bool(df["n_success_trials"].notna().any())
    if "task_success" in df.columns:
        return bool(df["task_success"].notna().any())
    return False


def split_by_task(*frames: pd.DataFrame) -> list[tuple[TaskGroup, list[pd.DataFrame]]]:
    """Split several tables (runs, cells, stable lr) by task group, consistently.

    Returns one entry per group found in any frame, ordered by task name then metric,
    with each frame's rows of that group (empty where a frame has none). A frame that
    is empty contributes no group.
    """
    keyed = [(f, _keys(f) if not f.empty else pd.Series([], dtype=object)) for f in frames]
    found: dict[tuple, None] = {}
    for _, k in keyed:
        found.update(dict.fromkeys(k))
    order = sorted(found, key=lambda k: ("" if k[0] is None else k[0], k[1], k[2], k[3]))
    slugs = [_slug(k[0] if k[0] is not None else "all_runs") for k in order]
    dup = {s for s in slugs if slugs.count(s) > 1}
    out = []
    for key, slug in zip(order, slugs, strict=True):
        if slug in dup:
            slug = f"{slug}_{_slug(key[1])}"
        parts = [f[k == key] if not f.empty else f for f, k in keyed]
        metric = MetricInfo(key[1], key[2], bool(key[3]))
        group = TaskGroup(key[0], metric, slug, any(_has_success(p) for p in parts))
        out.append((group, parts))
    return out


def task_groups(df: pd.DataFrame) -> list[tuple[TaskGroup, pd.DataFrame]]:
    """The task groups of one table with their rows (see :func:`split_by_task`)."""
    return [(g, parts[0]) for g, parts in split_by_task(df)]


class MixedMetricsError(ValueError):
    """A table that mixes metrics was passed where one metric is required."""


def metric_of(df: pd.DataFrame, default: MetricInfo = BPC) -> MetricInfo:
    """The one metric of ``df`` (``default`` when it has no rows).

    Raises :class:`MixedMetricsError` when ``df`` holds several metrics: a figure or a
    sentence about "the best value" must never compare numbers in different units.
    """
    if df.empty:
        return default
    keys: Sequence[tuple] = list(dict.fromkeys(k[1:] for k in _keys(df)))
    if len(keys) > 1:
        names = ", ".join(sorted({fmt.metric(k[0]) for k in keys}))
        raise MixedMetricsError(f"rows hold several metrics ({names}); split them by task first")
    name, unit, lib = keys[0]
    return MetricInfo(name, unit, bool(lib))
