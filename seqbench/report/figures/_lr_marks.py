"""Where the learning-rate figure may put a mark without it being read as a value.

Why a module of its own: :mod:`.lr_curves` decides *what* to show (which configurations,
which panels, what the caption says); this module holds the geometry of one panel, which
is the part that is easy to get subtly wrong. The shared y axis has a data part and,
above it, a band for diverged runs: their crosses and ``k/n`` counts are placed in axes
coordinates inside the band - never at a y value - and the error bars and y ticks stop
where the band begins. The n labels of points that crowd one learning rate are merged or
pushed apart so each stays readable. The dashed baseline is drawn here too.

Everything is plain matplotlib on the axes it is given; nothing here reads the cells table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import patheffects
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogLocator, MaxNLocator

from seqbench.report import _format as fmt

DIVERGED_MARKER = "x"
BASELINE_COLOR = "0.2"
_BAND_COLOR = "#f6e3e3"
ROW_IN = 0.16  # height of one row of diverged markers, inches
LABEL_PT = 6.5  # font size of the n and count labels
_LABEL_SHIFT_PT = 5.5  # an n label's centre above (or below) its point

#: An n label before placement: ``(lr, mean, text, line colour, side)``, side +1 above
#: the point, -1 below.
NLabel = tuple[float, float, str, tuple, int]


def shade(rgb: Sequence[float], f: float) -> tuple[float, float, float]:
    """``rgb`` towards black (f < 0) or white (f > 0) by ``|f|``."""
    c = np.asarray(rgb[:3], dtype=float)
    out = c * (1 + f) if f < 0 else c + (1 - c) * f
    return tuple(float(v) for v in np.clip(out, 0, 1))  # type: ignore[return-value]


@dataclass(frozen=True)
class Band:
    """The diverged-runs band: ``rows`` rows of markers, the most one lr of a panel needs.

    Each row adds :data:`ROW_IN` inches to a panel, so the data part keeps its height
    however many settings diverged; the fractions are of the axes' height.
    """

    rows: int

    @property
    def panel_h(self) -> float:
        """A panel's height, inches."""
        return 2.8 + ROW_IN * self.rows

    @property
    def ax_h_pt(self) -> float:
        """The axes' height, points (a panel less its title and labels)."""
        return (self.panel_h - 0.8) * 72.0

    @property
    def height(self) -> float:
        return (0.05 + ROW_IN * self.rows) / (self.panel_h - 0.8) if self.rows else 0.0

    @property
    def row_frac(self) -> float:
        return ROW_IN / (self.panel_h - 0.8)

    @property
    def pad(self) -> float:
        """Between the axes' top and the first row."""
        return 0.025 / (self.panel_h - 0.8)


@dataclass(frozen=True)
class YAxis:
    """The y axis all panels share: its data part, then the band on top.

    ``*_t`` limits are in the drawn scale (log10 on a log axis), the others in values.
    """

    log: bool
    has_values: bool
    bottom_t: float
    data_top_t: float
    top_t: float
    bottom: float
    data_top: float
    top: float
    band: Band

    @property
    def data_frac(self) -> float:
        """The top of the data part, in axes fraction."""
        return 1.0 - self.band.height

    def frac(self, y: float) -> float:
        """Where value ``y`` sits, in axes fraction."""
        return float((_scaled(self.log)([y])[0] - self.bottom_t) / (self.top_t - self.bottom_t))


def _scaled(log: bool):
    """Values to the drawn scale: log10 on a log axis."""
    return np.log10 if log else (lambda v: np.asarray(v, dtype=float))


def shared_y(core: np.ndarray, lo_v: np.ndarray, hi_v: np.ndarray, log: bool, band: Band) -> YAxis:
    """The y axis for means and baselines ``core`` and interval ends ``lo_v``/``hi_v``.

    The means and baselines always fit; intervals widen the axis by half the means' span
    at most and are cut beyond (the caption says so), so one wide interval cannot squash
    every line. The band is added above the data part, not taken from it.
    """
    tf = _scaled(log)
    core = core[np.isfinite(core) & ((core > 0) if log else True)]
    if log:
        lo_v, hi_v = lo_v[lo_v > 0], hi_v[hi_v > 0]
    has_values = core.size > 0
    if has_values:
        a, b = float(np.min(tf(core))), float(np.max(tf(core)))
        span = b - a if b > a else (0.2 if log else (abs(a) * 0.1 or 1.0))
        lo_b = min([a, *tf(lo_v)]) if lo_v.size else a
        hi_b = max([b, *tf(hi_v)]) if hi_v.size else b
        lo_l, hi_l = max(lo_b, a - 0.5 * span), min(hi_b, b + 0.5 * span)
        if not log and a >= 0:  # every value is >= 0: an interval's tail does not make < 0
            lo_l = max(lo_l, 0.0)
        pad = 0.06 * (hi_l - lo_l) if hi_l > lo_l else 0.1 * span
        bottom_t, data_top_t = lo_l - pad, hi_l + pad
    else:
        bottom_t, data_top_t = (0.0, 1.0)
    h = band.height
    top_t = data_top_t + (data_top_t - bottom_t) * h / (1 - h) if h else data_top_t
    inv = (lambda v: 10.0**v) if log and has_values else (lambda v: v)
    return YAxis(
        log, has_values, bottom_t, data_top_t, top_t, *map(inv, (bottom_t, data_top_t, top_t)), band
    )


def y_ticks(bottom: float, top: float, log: bool) -> list[float]:
    """Ticks within the data part of the y axis only (none in the diverged band)."""
    if log:
        for subs in ((1.0,), (1.0, 2.0, 5.0), tuple(float(s) for s in range(1, 10))):
            ticks = [
                t
                for t in LogLocator(base=10, subs=subs).tick_values(bottom, top)
                if bottom <= t <= top
            ]
            if len(ticks) >= 3:
                return ticks
    ticks = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(bottom, top)
    return [float(t) for t in ticks if bottom <= t <= top and (not log or t > 0)]


def draw_error_bars(
    ax, x: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray, colour, yax: YAxis
) -> bool:
    """A line's 95% intervals, clipped below the band; True where one reaches past the axis."""
    ok = np.isfinite(y) & ~np.isnan(lo) & ~np.isnan(hi)
    if not ok.any():
        return False
    ylo, yhi = lo[ok], hi[ok]
    cut = bool((ylo < yax.bottom).any() or (yhi > yax.data_top).any())
    if yax.log:  # a t interval can reach below 0: draw it to the floor
        ylo = np.where(ylo > 0, ylo, yax.bottom / 10.0)
    bars = ax.errorbar(
        x[ok],
        y[ok],
        yerr=np.clip(np.vstack([y[ok] - ylo, yhi - y[ok]]), 0, None),
        fmt="none",
        ecolor=colour,
        elinewidth=0.9,
        capsize=2.0,
        alpha=0.75,
        zorder=2,
    )
    clip_rect = Rectangle((0, 0), 1, yax.data_frac, transform=ax.transAxes)
    for art in [*bars.lines[1], *bars.lines[2]]:
        art.set_clip_path(clip_rect)  # never into the diverged band
    return cut


def draw_diverged(ax, lr: float, row: int, count: str, colour, label: str, band: Band) -> None:
    """A cross and its ``k/n`` count in row ``row`` of the band, at learning rate ``lr``."""
    yy = 1.0 - band.pad - band.row_frac * (row + 0.5)
    tr = ax.get_xaxis_transform()
    ax.plot(
        [lr],
        [yy],
        ls="none",
        marker=DIVERGED_MARKER,
        ms=6,
        mew=1.8,
        color=colour,
        transform=tr,
        clip_on=False,
        gid=f"diverged:{label}",
        zorder=4,
    )
    ax.annotate(
        count,
        xy=(lr, yy),
        xycoords=tr,
        xytext=(5, 0),
        textcoords="offset points",
        fontsize=LABEL_PT,
        va="center",
        ha="left",
        color="0.15",
        gid=f"diverged_count:{label}",
        annotation_clip=False,
    )


def draw_baselines(ax, values: Sequence[float], written: bool) -> None:
    """Dashed lines at the baseline ``values``, each ``written`` on its line if asked."""
    for v in values:
        ax.axhline(v, ls="--", lw=1.2, color=BASELINE_COLOR, gid="baseline", zorder=1.5)
        if written:
            ax.annotate(
                f"baseline {fmt.num(v)}",
                xy=(0.99, v),
                xycoords=ax.get_yaxis_transform(),
                xytext=(0, 2),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=LABEL_PT,
                color=BASELINE_COLOR,
            )


def draw_band(ax, yax: YAxis) -> None:
    """The shaded band (if any run diverged) and its lower edge."""
    if not yax.band.height:
        return
    ax.add_patch(
        Rectangle(
            (0, yax.data_frac),
            1,
            yax.band.height,
            transform=ax.transAxes,
            facecolor=_BAND_COLOR,
            edgecolor="none",
            zorder=0.5,
        )
    )
    ax.plot(
        [0, 1],
        [yax.data_frac, yax.data_frac],
        transform=ax.transAxes,
        color="#d9b3b3",
        lw=0.6,
        gid="band_edge",
        zorder=0.6,
    )


def draw_no_values_note(ax, yax: YAxis) -> None:
    """Says why the data part is empty, so an empty panel is not read as missing data."""
    ax.text(
        0.5,
        yax.data_frac / 2,
        "no completed run\nwith a final value",
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=8,
        color="0.4",
    )


def draw_n_labels(ax, labels: Sequence[NLabel], yax: YAxis) -> None:
    """The n labels beside their points: one for points that coincide with the same n,
    stacked apart where points crowd one lr, and never into the band."""
    ax_h_pt = yax.band.ax_h_pt
    gap = 8.5 / ax_h_pt
    for xv in sorted({lab_[0] for lab_ in labels}):
        here = _merge_labels(
            [(yax.frac(yv), yv, text, col, sd) for x_, yv, text, col, sd in labels if x_ == xv],
            gap,
        )
        fr = [h[0] + h[4] * _LABEL_SHIFT_PT / ax_h_pt for h in here]
        placed = _place(fr, gap, gap / 2, yax.data_frac - gap / 2)
        for (f0, yv, text, colour, _), f1 in zip(here, placed, strict=True):
            ax.annotate(
                text,
                xy=(xv, yv),
                xytext=(3, (f1 - f0) * ax_h_pt),
                textcoords="offset points",
                fontsize=LABEL_PT,
                ha="left",
                va="center",
                color=colour,
                gid="n",
                zorder=5,  # over the lines, with a white halo
                path_effects=[patheffects.withStroke(linewidth=2, foreground="w")],
            )


def _place(fracs: Sequence[float], gap: float, lo: float, hi: float) -> list[float]:
    """Label heights (axes fraction) near ``fracs``, at least ``gap`` apart, within [lo, hi]."""
    order = np.argsort(fracs, kind="stable")
    placed = np.asarray(fracs, dtype=float)[order].copy()
    for i in range(len(placed)):
        floor = lo if i == 0 else placed[i - 1] + gap
        placed[i] = max(placed[i], floor)
    for i in range(len(placed) - 1, -1, -1):
        ceil = hi if i == len(placed) - 1 else placed[i + 1] - gap
        placed[i] = min(placed[i], ceil)
    out = np.empty_like(placed)
    out[order] = placed
    return [float(v) for v in out]


def _merge_labels(
    points: Sequence[tuple[float, float, str, tuple, int]], gap: float
) -> list[tuple[float, float, str, object, int]]:
    """The n labels of one lr: ``(frac, y, text, colour, side)`` per point, by height.

    Points closer than ``gap`` (axes fraction) that carry the same text share one grey
    label (three coinciding ``n=3`` read once); otherwise each keeps its own, in a darker
    shade of its line's colour. ``side`` (+1 above the point, -1 below) is carried along.
    """
    pts = sorted(points, key=lambda p: p[0])
    clusters: list[list[tuple[float, float, str, tuple, int]]] = []
    for p in pts:
        if clusters and p[0] - clusters[-1][-1][0] < gap:
            clusters[-1].append(p)
        else:
            clusters.append([p])
    out: list[tuple[float, float, str, object, int]] = []
    for cl in clusters:
        if len(cl) > 1 and len({p[2] for p in cl}) == 1:
            side = 1 if sum(p[4] for p in cl) >= 0 else -1
            edge = cl[-1] if side > 0 else cl[0]  # beyond the cluster, not inside it
            out.append((edge[0], edge[1], edge[2], "0.3", side))
        else:
            out += [(f, y, text, shade(colour, -0.35), sd) for f, y, text, colour, sd in cl]
    return out
