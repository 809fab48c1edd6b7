"""The one registry of report figures: kind -> title, file name, builder.

A figure is one module that registers its builder::

    from seqbench.report.figures.registry import FigureInput, register

    @register("my_figure", title="My figure")
    def build(inp: FigureInput) -> Plot:
        ...  # draw from inp.cells_df, inp.runs_df, ...; raise FigureSkipped("why") if it cannot

plus its import line in ``figures/__init__.py``. The order of registration is the order
of the report. :func:`~seqbench.report.figures.driver.make_figures` calls every builder
the same way, once per task group, and turns :class:`FigureSkipped` into a note.

``title`` is the heading a document gives the figure: a string, or a function of the
task's :class:`~seqbench.report.task_groups.MetricInfo`. ``file`` is the PNG's stem (default:
the kind); ``{metric}`` in it stands for the metric's name (``{metric}_heatmap`` ->
``bpc_heatmap``), and any metric's name matches it when a re-render looks for stale
figures to remove.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from seqbench.report.figures._common import Plot
from seqbench.report.layout import Layout
from seqbench.report.task_groups import BPC, MetricInfo, TaskGroup

#: The placeholder of a file name that stands for the task metric's name.
METRIC_FIELD = "{metric}"


@dataclass(frozen=True)
class FigureInput:
    """What every figure builder gets: one task group's tables and where its runs are.

    ``runs_df`` carries a ``cell`` column numbered over the whole runs table (so its
    rows match ``cells_df``'s cells); ``metric`` is ``group.metric``; ``layout`` is the
    report's for this group's cells (derived from them when not given).
    """

    runs_df: pd.DataFrame
    cells_df: pd.DataFrame
    stable_df: pd.DataFrame
    runs_dir: str | os.PathLike[str]
    metric: MetricInfo
    group: TaskGroup
    layout: Layout = None  # type: ignore[assignment]  # filled in by __post_init__

    def __post_init__(self) -> None:
        if self.layout is None:
            object.__setattr__(self, "layout", Layout.of(self.runs_df, self.cells_df))


@dataclass(frozen=True)
class FigureSpec:
    """One registered figure: its kind, heading, file-name template and builder."""

    kind: str
    title: str | Callable[[MetricInfo], str]
    build: Callable[[FigureInput], Plot]
    file: str

    def title_for(self, metric: MetricInfo) -> str:
        return self.title(metric) if callable(self.title) else self.title

    def file_stem(self, metric: MetricInfo) -> str:
        """The PNG's stem for a task with this metric (before any ``-<task>`` suffix)."""
        return self.file.replace(METRIC_FIELD, _file_part(metric.name))

    def owns(self, base: str) -> bool:
        """Whether ``base`` (a stem without its ``-<task>`` suffix) is this figure's file."""
        prefix, field, suffix = self.file.partition(METRIC_FIELD)
        if not field:
            return base == self.file
        return (
            len(base) >= len(prefix) + len(suffix)
            and base.startswith(prefix)
            and base.endswith(suffix)
        )


_FIGURES: dict[str, FigureSpec] = {}


def _file_part(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._" else "_" for ch in text) or "metric"


def register(
    kind: str,
    *,
    title: str | Callable[[MetricInfo], str],
    file: str | None = None,
    build: Callable[[FigureInput], Plot] | None = None,
) -> Callable:
    """Add a figure after those registered so far; as a decorator of its builder, or with ``build``.

    Returns the builder unchanged (the decorator form) or it, registered. A kind or a file
    name registered twice is an error, and so is a file name that a task suffix or a
    path would break (only letters, digits, ``_``, ``.`` and one ``{metric}``).
    """
    stem = kind if file is None else file
    plain = stem.replace(METRIC_FIELD, "", 1)
    if not kind or not plain or not all(ch.isalnum() or ch in "._" for ch in plain):
        raise ValueError(f"figure {kind!r}: file name {stem!r} is not a plain file stem")

    def add(fn: Callable[[FigureInput], Plot]) -> Callable[[FigureInput], Plot]:
        if kind in _FIGURES:
            raise ValueError(f"figure kind {kind!r} is already registered")
        if any(spec.file == stem for spec in _FIGURES.values()):
            raise ValueError(f"figure file name {stem!r} is already registered")
        _FIGURES[kind] = FigureSpec(kind, title, fn, stem)
        return fn

    return add if build is None else add(build)


def unregister(kind: str) -> FigureSpec:
    """Remove a registered figure (tests register temporary ones); its spec."""
    return _FIGURES.pop(kind)


def get(kind: str) -> FigureSpec:
    """The registered figure ``kind``; :class:`KeyError` if there is none."""
    return _FIGURES[kind]


def specs() -> tuple[FigureSpec, ...]:
    """Every registered figure, in report order."""
    return tuple(_FIGURES.values())


def kinds() -> tuple[str, ...]:
    """The registered kinds, in report order."""
    return tuple(_FIGURES)


def figure_name(kind: str, group: TaskGroup | None = None, multi: bool = False) -> str:
    """File stem of a figure: its registered file name, the task if several.

    ``figure_name("quality_heatmap", adding_group, multi=True)`` -> ``mse_heatmap-adding``.
    """
    metric = group.metric if group is not None else BPC
    spec = _FIGURES.get(kind)
    stem = spec.file_stem(metric) if spec is not None else kind
    return f"{stem}-{group.slug}" if multi and group is not None else stem


def figure_title(kind: str, metric: MetricInfo) -> str:
    """The heading a document gives a figure."""
    return get(kind).title_for(metric)
