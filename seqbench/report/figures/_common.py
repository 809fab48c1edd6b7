"""What several figures share: result types, style, palettes, cell selection, saving.

A figure module imports from here and from :mod:`.registry`, never from another figure
module, so each figure can be read (and removed) on its own.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from seqbench.report import _format as fmt
from seqbench.report.layout import distinguishing
from seqbench.report.stats import CLIP_METHOD_ORDER
from seqbench.report.task_groups import MetricInfo, TaskGroup, metric_of
from seqbench.rundir import atomic_write_bytes

DPI = 110
MAX_CURVE_POINTS = 300
MAX_CURVE_CONFIGS = 6
#: A positive quantity whose values span this ratio or more is drawn on a log scale
#: (an MSE falls from 0.17 to 0.002; bits per character never span that much).
LOG_SPAN = 30.0


class FigureSkipped(Exception):
    """The input cannot make this figure (e.g. no run finished); the message says why."""


class FigureNotApplicable(FigureSkipped):
    """The figure does not apply to these runs at all (a length figure for runs that do
    not vary a length): it is left out of the report, with no note, so reports of
    sweeps without that axis read as before."""


@dataclass
class Plot:
    """A drawn figure, the tidy data behind it, and its caption."""

    figure: Figure
    data: pd.DataFrame
    caption: str
    palette: dict[str, tuple[float, float, float]] = field(default_factory=dict)


@dataclass
class FigureResult:
    """One figure of a report: a written PNG, or a note saying why there is none.

    ``kind`` is a registered kind (:func:`~seqbench.report.figures.registry.kinds`);
    ``task`` the task group it shows.
    """

    name: str
    title: str
    caption: str
    path: Path | None = None
    note: str | None = None
    kind: str = ""
    task: TaskGroup | None = None


@contextlib.contextmanager
def _style() -> Iterator[None]:
    rc = {
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "figure.titlesize": 12,
        "legend.fontsize": 8,
        "savefig.dpi": DPI,
    }
    with sns.axes_style("whitegrid"), mpl.rc_context(rc):
        yield


def _obj(s: pd.Series) -> pd.Series:
    """Cast to object dtype (seaborn 0.13.2 + pandas 3 string/categorical hue bug)."""
    return s.astype(object)


def _method_sort_key(m: object) -> tuple[int, str]:
    order = {x: i for i, x in enumerate(CLIP_METHOD_ORDER)}
    return (order.get(str(m), len(order)), str(m))


def _methods(values: Sequence[object] | pd.Series) -> list[str]:
    return sorted({str(v) for v in values if not fmt.is_missing(v)}, key=_method_sort_key)


def clip_palette(methods: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Fixed colours per clip method so every figure uses the same ones."""
    base = {"none": 3, "value": 1, "norm": 0}  # red-ish, orange, blue in 'deep'
    colors = sns.color_palette("deep", 10)
    spare = [i for i in range(10) if i not in base.values()]
    out: dict[str, tuple[float, float, float]] = {}
    k = 0
    for m in methods:
        if m in base:
            out[m] = tuple(colors[base[m]])  # type: ignore[assignment]
        else:  # methods added to the registry later get the remaining colours, cycling
            out[m] = tuple(colors[spare[k % len(spare)]])  # type: ignore[assignment]
            k += 1
    return out


def facet_columns(cells_df: pd.DataFrame) -> list[str]:
    """Config columns that vary among cells with the same optimizer, method and threshold.

    Those must become part of a panel's identity, or two cells would share one heatmap
    square (e.g. a sweep over model sizes), or one line would join configurations that
    differ (SGD with and without momentum, each over its own learning-rate grid: the
    grids need not overlap for the two to be different experiments). The same keys a
    table shows as columns of their own (:func:`seqbench.report.layout.distinguishing`).
    """
    return distinguishing(cells_df)


def select_curve_cells(
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    max_configs: int = MAX_CURVE_CONFIGS,
    metric: MetricInfo | None = None,
    facets: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Pick a legible subset of cells for the loss-curve figure.

    Per optimizer: the largest learning rate at which *some* clip setting kept training finite
    (where clipping makes a difference), or the smallest lr tried if none was; then
    every clip setting at that lr, unclipped first, the most stable and best ones next
    ("best" in ``metric``'s direction), at most ``max_configs``. Returns the chosen cells
    rows with a ``label`` column. ``facets``: :func:`facet_columns` of ``cells_df``, if
    known.
    """
    if cells_df.empty or "optim.lr" not in cells_df.columns:
        return cells_df.iloc[0:0].assign(label=pd.Series(dtype=object))
    metric = metric or metric_of(cells_df)
    opt_col = "optim.name" if "optim.name" in cells_df.columns else None
    groups = cells_df.groupby(_obj(cells_df[opt_col]), sort=True) if opt_col else [(None, cells_df)]
    chosen = []
    for opt, sub in groups:
        sub = sub[sub["n"] > 0]
        if sub.empty:
            continue
        lr_star = math.nan
        if not stable_df.empty and "largest_finite_lr" in stable_df:
            st = (
                stable_df
                if opt_col is None or opt_col not in stable_df
                else stable_df[stable_df[opt_col].astype(object) == opt]
            )
            if st["largest_finite_lr"].notna().any():
                lr_star = float(st["largest_finite_lr"].max())
        if math.isnan(lr_star) or not (sub["optim.lr"] == lr_star).any():
            lr_star = float(sub["optim.lr"].min())
        at = sub[sub["optim.lr"] == lr_star].copy()
        method = (
            _obj(at["clip.method"])
            if "clip.method" in at
            else pd.Series("?", index=at.index, dtype=object)
        )
        at["__none"] = (method != "none").astype(int)
        at["__score"] = metric.score(at["final_val_metric_mean"])
        at = at.sort_values(["__none", "divergence_rate", "__score"], kind="stable")
        chosen.append(at.head(max_configs).drop(columns=["__none", "__score"]))
    if not chosen:
        return cells_df.iloc[0:0].assign(label=pd.Series(dtype=object))
    out = pd.concat(chosen)
    facets = facet_columns(cells_df) if facets is None else facets
    labels = []
    for rec in out.to_dict("records"):
        label = (
            fmt.clip_short(rec["clip.method"], rec.get("threshold"))
            if "clip.method" in rec
            else "all runs"
        )
        extra = [f"{c}={fmt.num(rec[c])}" for c in facets if c != "optim.name"]
        labels.append(", ".join([label, *extra]))
    out["label"] = pd.Series(labels, index=out.index, dtype=object)
    # labels must be unique within an optimizer row
    if opt_col:
        dup = out.groupby([_obj(out[opt_col]), out["label"]]).cumcount()
    else:
        dup = out.groupby(out["label"]).cumcount()
    out["label"] = [
        lab if d == 0 else f"{lab} #{d + 1}" for lab, d in zip(out["label"], dup, strict=True)
    ]
    return out.reset_index(drop=True)


def _log_worthy(values: Sequence[float] | np.ndarray) -> bool:
    """Positive values spanning :data:`LOG_SPAN` or more read better on a log axis."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(v.size) and float(v.min()) > 0 and float(v.max()) / float(v.min()) >= LOG_SPAN


def _save(fig: Figure, path: Path) -> None:
    """The PNG through the contract's one atomic write (a reader never sees half)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    atomic_write_bytes(path, buf.getvalue())
