"""Gradient-norm distributions: what a clip threshold actually cuts.

The ECDF of the global gradient norm before and after clipping, per clip method. It
draws at most ``MAX_ECDF_POINTS`` sampled norms per group (deterministically); the
sample only draws the curve - no statistic in a table or a sentence comes from it.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from seqbench.report.collect import read_columns
from seqbench.report.figures._common import (
    FigureSkipped,
    Plot,
    _methods,
    _obj,
    _style,
    clip_palette,
)
from seqbench.report.figures.registry import FigureInput, register
from seqbench.rundir import TERMINAL

MAX_ECDF_POINTS = 20000


def grad_norm_samples(
    runs_df: pd.DataFrame,
    runs_dir: str | os.PathLike[str],
    max_points: int = MAX_ECDF_POINTS,
    seed: int = 0,
) -> pd.DataFrame:
    """Long table (clip_method, kind in {pre, post}, value) of finite positive norms.

    Runs with a verdict only; each (method, kind) group is subsampled without
    replacement to at most ``max_points`` values (deterministic for ``seed``): an ECDF
    of 20,000 points is indistinguishable from one of ten million at figure size.
    Selection is on arrays (one method code per run), never on a string per row.
    """
    cols = ["clip_method", "kind", "value"]
    runs = runs_df[runs_df["status"].isin(TERMINAL)]
    if "clip.method" in runs.columns:
        methods = _obj(runs["clip.method"]).fillna("unknown")
    else:  # a config without clip keys: one group
        methods = pd.Series("all runs", index=runs.index, dtype=object)
    data = read_columns(
        runs_dir, runs["run_dir"], ("grad_norm_pre", "grad_norm_post"), steps=False
    )
    if not len(data):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    method_of = dict(zip(runs["run_dir"].astype(str), methods, strict=True))
    run_code, names = pd.factorize(pd.Series([method_of[i] for i in data.ids], dtype=object))
    small = np.int8 if len(names) < 128 else np.int32  # cheaper passes over 10^7 rows
    row_method = run_code.astype(small)[data.run]
    parts = []
    rng = np.random.default_rng(seed)
    for kind, col in (("pre", "grad_norm_pre"), ("post", "grad_norm_post")):
        v = data.values[col]
        with np.errstate(invalid="ignore"):
            ok = v > 0  # NaN compares False
        ok &= v < np.inf
        v, m = v[ok], row_method[ok]
        for k in pd.unique(m):  # methods in order of first appearance
            idx = np.flatnonzero(m == k)
            if len(idx) > max_points:
                idx = idx[np.sort(rng.choice(len(idx), size=max_points, replace=False))]
            parts.append(
                pd.DataFrame(
                    {"clip_method": np.full(len(idx), names[k], dtype=object),
                     "kind": kind, "value": v[idx]}
                )
            )
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
    out = pd.concat(parts, ignore_index=True)
    out["clip_method"] = _obj(out["clip_method"])
    out["kind"] = _obj(out["kind"])
    return out


def grad_norm_distributions(runs_df: pd.DataFrame, runs_dir: str | os.PathLike[str]) -> Plot:
    """ECDF of pre- and post-clip global gradient norms per clip method (log x)."""
    data = grad_norm_samples(runs_df, runs_dir)
    if data.empty:
        raise FigureSkipped("no finite positive gradient norms were recorded")
    methods = _methods(data["clip_method"])
    palette = clip_palette(methods)
    with _style():
        fig = Figure(figsize=(10.5, 4.0), layout="constrained")
        axes = fig.subplots(1, 2, sharex=True, sharey=True)
        for ax, kind, name in (
            (axes[0], "pre", "before clipping"),
            (axes[1], "post", "after clipping"),
        ):
            sub = data[data["kind"] == kind]
            present = [m for m in methods if (sub["clip_method"] == m).any()]
            if present:
                sns.ecdfplot(
                    data=sub,
                    x="value",
                    hue="clip_method",
                    hue_order=present,
                    palette={m: palette[m] for m in present},
                    log_scale=True,
                    ax=ax,
                )
                leg = ax.get_legend()
                if leg is not None:
                    leg.set_title("clip method")
            ax.set_title(f"Gradient norm {name}")
            ax.set_xlabel("global gradient L2 norm (log scale)")
            ax.set_ylabel("fraction of optimizer steps (ECDF)")
        fig.suptitle("Distribution of per-step gradient norms by clip method")
    caption = (
        "Empirical CDF of the global L2 gradient norm at every logged optimizer step, before "
        "(left) and after (right) clipping, pooled over all runs of each clip method (thresholds, "
        f"learning rates and seeds together; at most {MAX_ECDF_POINTS:,} steps sampled per curve). "
        "Non-finite norms are left out."
    )
    return Plot(fig, data, caption, palette)


@register("grad_norms", title="Gradient-norm distributions")
def build(inp: FigureInput) -> Plot:
    return grad_norm_distributions(inp.runs_df, inp.runs_dir)
