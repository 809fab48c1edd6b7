"""The cells table in the learning-rate figure's terms, and the words that go with it.

Why a module of its own: :mod:`.lr_curves` draws; this module decides what there is to
draw and what the caption must say about it - which config keys make rows of panels (a
configuration is never averaged with another), which line each configuration is on and
its style, which panels fit, which baselines each panel shows, and the shared y axis
those values need. The caption is written here because every sentence of it reports on
this table (how many configurations diverged entirely, which had no final value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report.figures._common import (
    FigureSkipped,
    _method_sort_key,
    _obj,
    clip_palette,
    facet_columns,
)
from seqbench.report.figures._heatmap import MAX_PANELS
from seqbench.report.figures._lr_marks import Band, YAxis, shade, shared_y
from seqbench.report.task_groups import MetricInfo

#: Line markers by threshold rank within a clip method ('x' is kept for diverged runs).
_MARKERS: tuple[str, ...] = ("o", "s", "D", "^", "v", "P", "p", "h", "<", ">")
#: How each metric's input-independent baseline is made (``Task.baseline()``).
_BASELINE_KIND = {"bpc": "unigram"}
#: A line's colour and marker.
Style = tuple[tuple[float, float, float], str]


def setting_styles(settings: Sequence[tuple[str, float]]) -> dict[str, Style]:
    """Colour and marker of each clip setting ``(method, threshold)``, keyed by its label.

    The colour is the method's (:func:`clip_palette`, as in every figure), darker for
    smaller thresholds (more clipping) and lighter for larger; the marker tells the
    thresholds of one method apart where shades are hard to see.
    """
    methods = list(dict.fromkeys(m for m, _ in settings))
    palette = clip_palette(methods)
    out: dict[str, Style] = {}
    for m in methods:
        thr = sorted({t for mm, t in settings if mm == m and not fmt.is_missing(t)})
        plain = [t for mm, t in settings if mm == m and fmt.is_missing(t)]
        ordered: list[float] = ([math.nan] if plain else []) + thr
        shades = np.linspace(-0.3, 0.35, len(ordered)) if len(ordered) > 1 else [0.0]
        for i, (t, f) in enumerate(zip(ordered, shades, strict=True)):
            out[fmt.clip_short(m, t)] = (shade(palette[m], float(f)), _MARKERS[i % len(_MARKERS)])
    return out


def _setting_key(setting: tuple[str, float]) -> tuple:
    """Legend order: clip methods as in every figure, unclipped first, then by threshold."""
    m, t = setting
    return (_method_sort_key(m), 0 if fmt.is_missing(t) else 1, 0.0 if fmt.is_missing(t) else t)


def _facet_sort_key(values: tuple) -> tuple:
    """Panel rows in reading order: missing first, numbers by value (32 before 256), text."""
    out = []
    for v in values:
        if fmt.is_missing(v):
            out.append((0, 0.0, ""))
        elif isinstance(v, int | float | np.number) and not isinstance(v, bool):
            out.append((1, float(v), ""))
        else:
            out.append((2, 0.0, str(v)))
    return tuple(out)


def _num_col(df: pd.DataFrame, col: str) -> pd.Series:
    """A column as floats, NaN where absent: older cells tables lack some statistics."""
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def config_facets(cells_df: pd.DataFrame) -> list[str]:
    """Config keys beyond (optimizer, clip setting, lr) that vary: a row of panels each."""
    return facet_columns(cells_df)  # the optimizer is a coordinate, never a facet


def figure_table(cells_df: pd.DataFrame, facets: list[str]) -> pd.DataFrame:
    """One row per configuration with a learning rate, in the figure's own column names.

    ``mean`` is kept only where a run completed; ``label`` is the line (clip setting) and
    ``facet`` the panel row. Raises :class:`FigureSkipped` if no such row has a run.
    """
    df = pd.DataFrame(
        {
            "lr": _num_col(cells_df, "optim.lr"),
            "n": _num_col(cells_df, "n").fillna(0).astype(int),
            "n_finished": _num_col(cells_df, "n_finished").fillna(0).astype(int),
            "n_diverged": _num_col(cells_df, "n_diverged").fillna(0).astype(int),
            "mean": _num_col(cells_df, "final_val_metric_mean"),
            "lo": _num_col(cells_df, "final_val_metric_lo"),
            "hi": _num_col(cells_df, "final_val_metric_hi"),
            "baseline": _num_col(cells_df, "baseline_val_metric"),
            "method": _obj(cells_df["clip.method"]).map(str)
            if "clip.method" in cells_df
            else "all runs",
            "threshold": _num_col(cells_df, "threshold"),
            "optim": _obj(cells_df["optim.name"]).map(str)
            if "optim.name" in cells_df
            else "all runs",
        },
        index=cells_df.index,
    )
    for c in facets:
        df[c] = _obj(cells_df[c]).map(lambda v: None if fmt.is_missing(v) else v)
    df = df[df["lr"].notna()]
    if not (df["n"] > 0).any():
        raise FigureSkipped(
            "no configuration with a learning rate has a run with a verdict (completed or diverged)"
        )
    df["mean"] = df["mean"].where((df["n_finished"] > 0) & np.isfinite(df["mean"]))
    df["label"] = [fmt.clip_short(m, t) for m, t in zip(df["method"], df["threshold"], strict=True)]
    # None, not NaN, for a setting a configuration lacks (momentum for Adam): NaN != NaN,
    # so tuples holding NaN would make one panel per row
    df["facet"] = (list(zip(*[df[c].astype(object).where(df[c].notna(), None) for c in facets],
                            strict=True)) if facets else [()] * len(df))
    # never average: configurations a facet cannot tell apart get lines of their own
    dup = df.groupby([df["optim"], df["facet"], df["label"], df["lr"]], sort=False).cumcount()
    df["label"] = [
        lab if d == 0 else f"{lab} #{d + 1}" for lab, d in zip(df["label"], dup, strict=True)
    ]
    return df


def line_styles(df: pd.DataFrame) -> tuple[dict[str, Style], list[str]]:
    """Each line's style, and the lines in legend order (a "#2" line after the settings)."""
    settings = sorted(
        {(m, t) for m, t in zip(df["method"], df["threshold"], strict=True)}, key=_setting_key
    )
    styles = setting_styles(settings)
    order = list(dict.fromkeys(fmt.clip_short(m, t) for m, t in settings))
    order += sorted({lab for lab in df["label"] if lab not in styles})
    for lab in order:
        if lab not in styles:  # a "#2" line: its setting's colour, its own marker
            base_col, _ = styles[lab.rsplit(" #", 1)[0]]
            styles[lab] = (base_col, _MARKERS[(len(styles) + 3) % len(_MARKERS)])
    return styles, order


@dataclass(frozen=True)
class Grid:
    """The panels drawn, (optimizer, facet values) pairs that hold cells, in reading
    order, at most MAX_PANELS; ``slots`` lays them out ``ncols`` a row (None: an empty
    place, so that each optimizer starts a row of its own when it has several)."""

    slots: list[tuple[str, tuple] | None]
    ncols: int
    omitted: int  # panels not drawn

    @property
    def panels(self) -> list[tuple[str, tuple]]:
        return [p for p in self.slots if p is not None]

    @property
    def nrows(self) -> int:
        return -(-len(self.slots) // self.ncols)

    def shows(self, df: pd.DataFrame) -> pd.Series:
        """Which rows of ``df`` are in a drawn panel."""
        keys = pd.Series(list(zip(df["optim"], df["facet"], strict=True)), index=df.index)
        return keys.isin(set(self.panels))


#: A panel title longer than this goes on two or more lines (titles of neighbouring
#: panels ran into each other with the length axis's facets).
TITLE_WIDTH = 34


def panel_title(opt: str, facets: Sequence[str], frow: tuple) -> str:
    """``SGD · LSTM`` / ``task.batch_size=2 · task.seq_len=2048``: the optimizer and the
    facet values, broken between parts so that no line passes TITLE_WIDTH."""
    parts = [fmt.optimizer(opt), *[fmt.setting(k, v) for k, v in zip(facets, frow, strict=True)
                                   if not fmt.is_missing(v)]]
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 3 + len(part) > TITLE_WIDTH:
            lines.append(part)
        else:
            lines[-1] += f" · {part}"
    return "\n".join(lines)


def panel_grid(df: pd.DataFrame) -> Grid:
    """One panel per optimizer and facet values that have cells (an optimizer never gets
    an empty panel for a setting only another optimizer has), optimizer by optimizer, in
    reading order with no empty place between them: as many columns (up to 4, or 5 where
    that fills every row) as leave the fewest empty places at the end. More than
    MAX_PANELS would not be readable: those left out are counted in title and caption."""
    pairs = sorted(set(zip(df["optim"], df["facet"], strict=True)),
                   key=lambda p: (p[0], _facet_sort_key(p[1])))
    shown = pairs[:MAX_PANELS]
    n = len(shown)
    if n <= 4:
        ncols = max(n, 1)
    else:  # the fewest empty places after the last panel; ties: the first of these
        ncols = min((4, 3, 5), key=lambda c: (-n % c, (4, 3, 5).index(c)))
    return Grid(list(shown), ncols, len(pairs) - len(shown))


@dataclass(frozen=True)
class Baselines:
    """The baseline lines of each panel, and what the caption must say about them."""

    per_panel: dict[tuple, list[float]]
    drawn: list[float]
    notes: list[str]

    @property
    def values(self) -> list[float]:
        return sorted(set(self.drawn))


def panel_baselines(df: pd.DataFrame, grid: Grid, log: bool) -> Baselines:
    """A panel's distinct baselines, or their median where more than three would clutter it."""
    per_panel: dict[tuple, list[float]] = {}
    drawn: list[float] = []
    notes: list[str] = []
    for opt, frow in grid.panels:
        sub = df[(df["optim"] == opt) & (df["facet"] == frow) & (df["n"] > 0)]
        vals = sub["baseline"].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        if log:
            if (vals <= 0).any():
                notes.append("a baseline at or below 0 cannot be drawn on the log axis")
            vals = vals[vals > 0]
        distinct = sorted({float(f"{v:.6g}") for v in vals})
        if len(distinct) > 3:
            distinct = [float(np.median(vals))]
            notes.append(
                "where a panel's configurations have more than three different baselines, "
                "the line is their median"
            )
        per_panel[(opt, frow)] = distinct
        drawn += distinct
    return Baselines(per_panel, drawn, notes)


def shared_y_axis(df: pd.DataFrame, grid: Grid, base: Baselines, log: bool) -> YAxis:
    """The shared y axis of the panels shown, with a band row per setting diverged at one lr."""
    div = df[(df["n_diverged"] > 0) & grid.shows(df)]
    rows = int(div.groupby([div["optim"], div["facet"], div["lr"]]).size().max()) if len(div) else 0
    shown = df[grid.shows(df)]
    core = np.concatenate([shown["mean"].dropna().to_numpy(dtype=float), base.drawn])
    lo_v = shown["lo"].where(shown["mean"].notna()).dropna().to_numpy(dtype=float)
    hi_v = shown["hi"].where(shown["mean"].notna()).dropna().to_numpy(dtype=float)
    return shared_y(core, lo_v, hi_v, log, Band(rows))


def baseline_label(metric: MetricInfo, values: list[float]) -> str:
    """The dashed line's legend entry: its value, or where to read the values if several."""
    kind = _BASELINE_KIND.get(metric.name)
    where = (
        f"\n{fmt.num(values[0])} {metric.unit}" if len(values) == 1 else "\n(values on the lines)"
    )
    return "baseline" + (f" ({kind})" if kind else "") + where


def write_caption(
    df: pd.DataFrame,
    metric: MetricInfo,
    facets: list[str],
    y: YAxis,
    base: Baselines,
    cut: bool,
    omitted: int,
) -> str:
    """What is drawn and how to read it; what the figure does not show, and why."""
    values, notes = base.values, base.notes
    panels = "one panel per optimizer" + (
        f" and per {', '.join(facets)} (configurations that differ in it are never averaged)"
        if facets
        else ""
    )
    parts = [
        f"Final validation {metric.long} ({metric.unit}; {metric.direction}"
        f"{'; log scale' if y.log and y.has_values else ''}) against the learning rate (log "
        f"scale), {panels}, one line per clip setting (colour = clip method as in the other "
        "figures, shade and marker = threshold); all panels share the y axis.",
        "A point is the mean over a configuration's completed runs, labelled with its n "
        "(the completed runs in the mean; coinciding points with the same n share one grey "
        "label); bars are 95% t intervals (2+ completed runs"
        f"{'; cut at the edge of the plot' if cut else ''}). A line breaks where no run "
        "completed.",
    ]
    if y.band.rows:
        n_all_div = int(((df["n"] > 0) & (df["n_diverged"] == df["n"])).sum())
        parts.append(
            "Crosses in the shaded band at the top count diverged runs (k/n: k of the "
            "configuration's n runs with a verdict diverged); they are counts, not values, and "
            f"a configuration whose runs all diverged ({n_all_div} here) has no point."
        )
    else:
        parts.append("No run diverged.")
    parts.append(_baseline_sentence(metric, values, notes))
    no_value = int(((df["n_finished"] > 0) & df["mean"].isna()).sum())
    parts.append(
        "Not shown: how runs got there (see the loss curves), runs without a verdict "
        "(still running or stopped), and single runs - a mean on the good side of the "
        "baseline can hide a run on the other"
        + (
            f"; {no_value} configuration(s) whose completed runs recorded no final value"
            if no_value
            else ""
        )
        + (f"; {omitted} more panels" if omitted else "")
        + "."
    )
    return " ".join(parts)


def _baseline_sentence(metric: MetricInfo, values: list[float], notes: list[str]) -> str:
    """How to read the dashed line against the means, or why there is none."""
    if not values:
        return (
            "No baseline is drawn: these runs did not record the task's input-independent "
            "baseline." + (f" ({'; '.join(dict.fromkeys(notes))}.)" if notes else "")
        )
    kind = _BASELINE_KIND.get(metric.name)
    value = (
        f"{fmt.num(values[0])} {metric.unit}"
        if len(values) == 1
        else f"{len(values)} values, one per task configuration, written on the lines"
    )
    better = "below" if metric.lower_is_better else "above"
    return (
        "The dashed line is the task's input-independent baseline ("
        + (f"{kind}; " if kind else "")
        + f"{value}): a "
        f"mean {better} it beat the baseline ({metric.direction}); one on the other side "
        "learned nothing a constant prediction could not."
        + (f" Note: {'; '.join(dict.fromkeys(notes))}." if notes else "")
    )
