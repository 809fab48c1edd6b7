"""Which columns of a report's tables identify a configuration, decided in one place.

Why a module of its own: tables, figures, sentences and the learning-rate summary all
need to know which config keys tell rows apart, and when each derived that on its own
(each with its own list of columns to skip) they could disagree about what a
configuration is. :func:`make_report <seqbench.report.make_report>` builds one
:class:`Layout` and one enriched runs table (:func:`enrich`) and hands both to every
stage; a stage called on its own derives the same layout from its input.

The columns that vary are a property of the rows in view: a key that tells two
configurations of one task apart may be constant within another task. A task group's
section and figures therefore read :meth:`Layout.within` of their own rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pandas as pd

from seqbench.report.lr_summary import LR_COLUMNS, group_columns
from seqbench.report.spike_label import add_spike_label
from seqbench.report.stats import (
    NOT_CONFIG_COLUMNS,
    cell_index,
    cell_key_columns,
    config_columns,
    threshold,
    varying_within,
)
from seqbench.report.task_groups import MetricInfo, MixedMetricsError, metric_of

#: The usual coordinates of a configuration: optimizer, clip setting, learning rate.
COORDS: tuple[str, ...] = ("optim.name", "clip.method", "threshold", "optim.lr")
#: The coordinates a row of panels, a table row or a sentence is named by before any
#: other key: every coordinate but the learning rate, along which results are compared.
PLACE: tuple[str, ...] = COORDS[:3]
#: Config keys that ``threshold`` carries, never shown or grouped by on their own.
RAW_THRESHOLD: tuple[str, ...] = ("clip.max_norm", "clip.clip_value")
_NOT_KEYS = frozenset({*NOT_CONFIG_COLUMNS, *LR_COLUMNS, "cell", *RAW_THRESHOLD})


def config_cols(table: pd.DataFrame) -> list[str]:
    """The config keys of a cells or learning-rate summary table: every column that is
    not a statistic (nor a raw threshold key), in the table's order."""
    return [c for c in table.columns if c not in _NOT_KEYS]


#: Keys that name a fork's parent by digest: shown only where they tell apart what the
#: other keys do not (forks of two parent configurations with the same model and lr).
PARENT_KEYS: tuple[str, ...] = ("parent.lineage", "parent.step")


def _readable(table: pd.DataFrame, cols: list[str]) -> list[str]:
    """``cols`` without the parent keys that the others already determine."""
    for key in PARENT_KEYS:
        if key not in cols:
            continue
        rest = [c for c in cols if c != key]
        if not rest or table.groupby(rest, dropna=False)[key].nunique(dropna=False).max() <= 1:
            cols = rest
    return cols


def distinguishing(table: pd.DataFrame) -> list[str]:
    """Config keys beyond the coordinates that tell rows apart: those that take several
    values for one optimizer and clip setting, whatever the lr (SGD with and without
    momentum over learning-rate grids that do not overlap is still two things, and a
    row, a panel or a line must say which)."""
    cols = [c for c in config_cols(table) if c not in COORDS]
    found = varying_within(table, PLACE, cols)
    return _readable(table, [*PLACE, *found])[len(PLACE):] if found else found


def context_columns(table: pd.DataFrame) -> list[str]:
    """What separates comparisons of clip settings: the optimizer and any non-clip
    setting swept within it."""
    cols = [c for c in config_cols(table) if c not in COORDS and not c.startswith("clip.")]
    lead = ["optim.name"] if "optim.name" in table.columns else []
    return _readable(table, lead + varying_within(table, lead, cols))


@dataclass(frozen=True)
class Layout:
    """The roles of a report's columns, for one set of rows (a report or a task group).

    ``config``/``cell_keys``: the runs table's config keys, and those that define a
    cell (not the seed, not keys that do not change what is measured). ``coords``: the
    coordinates the cells have. ``summary_keys``: what defines a row of the
    learning-rate summary. ``facets``: the keys beyond the coordinates that tell
    configurations apart (a column of a table, a row of panels, a part of a label).
    ``context``: what the sentences compare clip settings within. ``metric``: the one
    metric of the rows, None when they mix several.
    """

    config: tuple[str, ...]
    cell_keys: tuple[str, ...]
    coords: tuple[str, ...]
    summary_keys: tuple[str, ...]
    facets: tuple[str, ...]
    context: tuple[str, ...]
    metric: MetricInfo | None

    @classmethod
    def of(cls, runs_df: pd.DataFrame | None, cells_df: pd.DataFrame) -> Layout:
        """The layout of a runs table (if known) and the cells aggregated from it."""
        runs = runs_df if runs_df is not None else pd.DataFrame()
        return cls(
            config=tuple(config_columns(runs)),
            cell_keys=tuple(cell_key_columns(runs)),
            coords=tuple(c for c in COORDS if c in cells_df.columns),
            summary_keys=tuple(group_columns(cells_df)),
            **_varying(cells_df),
        )

    def within(self, cells_df: pd.DataFrame) -> Layout:
        """This layout for a subset of its cells (one task group's)."""
        return replace(self, **_varying(cells_df))


def _varying(cells_df: pd.DataFrame) -> dict:
    """The fields of a layout that depend on which rows are in view."""
    try:
        metric: MetricInfo | None = metric_of(cells_df)
    except MixedMetricsError:
        metric = None
    return {"facets": tuple(distinguishing(cells_df)),
            "context": tuple(context_columns(cells_df)), "metric": metric}


def enrich(runs_df: pd.DataFrame) -> pd.DataFrame:
    """The runs table every stage reads: with its ``threshold`` and its ``cell``, numbered
    over the whole table (so a task group's runs still match the cells table), and the
    ``spike`` label where some run has a spike (``report.spikes.spike_label``)."""
    runs = add_spike_label(runs_df.copy())
    if not runs.empty:
        runs["threshold"] = threshold(runs)
        runs["cell"] = cell_index(runs)
    return runs
