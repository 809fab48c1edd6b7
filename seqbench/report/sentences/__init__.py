"""The sentences a report opens with, per task group: counts, outcomes, learning rates
(``verdicts``), divergence kinds, quality and success. Each is generated from the
tables and states its n."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report.collect import CollectResult
from seqbench.report.layout import Layout
from seqbench.report.paired import paired_against_none, prepare
from seqbench.report.sentences import verdicts
from seqbench.report.stats import wilson_interval
from seqbench.report.tables import row_key
from seqbench.report.task_groups import BPC, MetricInfo, TaskGroup, metric_of, split_by_task


class Heading(str):
    """A heading among a report's sentences: the context (optimizer, model, ...) the
    sentences after it are about, up to the next heading. Renderers make it a heading;
    anything that just reads the sentences sees a plain string."""


def context_name(rec: dict, cols: Sequence[str]) -> str:
    """``SGD``, ``SGD with momentum 0.9 on the tanh RNN``, ``Adam (model.hidden_size=64)``."""
    name = fmt.optimizer(rec.get("optim.name")) if "optim.name" in cols else "the model"
    rest = [c for c in cols if c != "optim.name" and not fmt.is_missing(rec.get(c))]
    if "optim.momentum" in rest:
        rest.remove("optim.momentum")
        if rec["optim.momentum"]:
            name += f" with momentum {fmt.num(rec['optim.momentum'])}"
    if "model.cell" in rest:
        rest.remove("model.cell")
        name += f" on the {fmt.setting('model.cell', rec['model.cell'])}"
    extra = [fmt.setting(c, rec[c]) for c in rest]
    return name + (f" ({', '.join(extra)})" if extra else "")


def _setting_phrase(rec: dict, extra: Sequence[str] = ()) -> str:
    """``SGD, lr 0.1, norm clipping at 1`` (+ any distinguishing setting)."""
    parts = []
    if "optim.name" in rec:
        parts.append(fmt.optimizer(rec["optim.name"]))
    if "optim.lr" in rec:
        parts.append(f"lr {fmt.lr(rec['optim.lr'])}")
    if "clip.method" in rec:
        parts.append(fmt.clip_phrase(rec["clip.method"], rec.get("threshold")))
    for c in extra:
        v = rec[c]
        if fmt.is_missing(v):  # a key this configuration does not have
            continue
        if c != "optim.momentum" or v:  # plain SGD is named by the absence of momentum
            parts.append(fmt.setting(c, v))
    return ", ".join(parts) if parts else "every run"


def _ci_words(mean: object, lo: object, hi: object) -> str:
    """``1.49 (95% CI 1.35–1.62)``, or the mean alone where there is no interval."""
    text = fmt.interval(mean, lo, hi)
    if "[" in text:  # "1.49 [1.35, 1.62]" -> "1.49 (95% CI 1.35–1.62)"
        m, rest = text.split(" [", 1)
        a, b = rest.rstrip("]").split(", ")
        text = f"{m} (95% CI {a}–{b})"
    return text


def _quality_sentence(cells_df: pd.DataFrame, n_completed: int, metric: MetricInfo = BPC,
                      layout: Layout | None = None) -> str:
    """The best mean final metric (lowest or highest, as the metric says) and where."""
    label = metric.label
    col = "final_val_metric_mean"
    fin = cells_df[cells_df["n_finished"] > 0] if not cells_df.empty else cells_df
    if fin.empty or not fin[col].notna().any():
        if n_completed == 0:
            return f"No run finished, so there is no final validation {label} to compare."
        return (
            f"None of the {n_completed} finished runs recorded a final validation {label} "
            "(was evaluation off?), so quality cannot be compared."
        )
    best = int(np.argmin(metric.score(fin[col])))
    rec = fin.iloc[best].to_dict()
    text = _ci_words(rec[col], rec["final_val_metric_lo"], rec["final_val_metric_hi"])
    caveat = (
        f"; {int(rec['n_diverged'])} of its {int(rec['n'])} seeds diverged"
        if rec["n_diverged"]
        else ""
    )
    word = "lowest" if metric.lower_is_better else "highest"
    facets = _layout(cells_df, layout).facets
    tied = [r for i, r in enumerate(fin.to_dict("records"))
            if i != best and r[col] == rec[col]]
    if tied:  # the very same mean (the same runs: a threshold that never triggered)
        names = fmt.join([_setting_phrase(r, facets) for r in [rec, *tied]])
        return (f"The {word} mean final validation {label}, {text}, was shared exactly by "
                f"{names} ({int(rec['n_finished'])} of {int(rec['n'])} seeds finished "
                f"each{caveat}): the same result, so neither is the winner.")
    return (
        f"The {word} mean final validation {label} was {text}, with "
        f"{_setting_phrase(rec, facets)} "
        f"({int(rec['n_finished'])} of {int(rec['n'])} seeds finished{caveat})."
    )


def _paired_quality(cells_df: pd.DataFrame, runs: pd.DataFrame, metric: MetricInfo,
                    layout: Layout) -> str | None:
    """The paired comparison of :func:`_quality_sentence`'s best configuration with no
    clipping at its learning rate (:func:`verdicts.paired_vs_none`), where it is a clip
    setting, not tied, and pairs with unclipped runs there; else None."""
    col = "final_val_metric_mean"
    if cells_df.empty or runs.empty or "cell" not in cells_df.columns \
            or "cell" not in runs.columns:  # cell ids numbered over the whole table only
        return None
    fin = cells_df[cells_df["n_finished"] > 0]
    if fin.empty or not fin[col].notna().any():
        return None
    rec = fin.iloc[int(np.argmin(metric.score(fin[col])))].to_dict()
    if rec.get("clip.method") in (None, "none") or int((fin[col] == rec[col]).sum()) > 1:
        return None
    got = paired_against_none(prepare(runs, layout), rec["cell"])
    return verdicts.paired_vs_none(fmt.clip_phrase(rec["clip.method"], rec.get("threshold")),
                                   got, metric)


def _task_name(group: TaskGroup | None) -> str:
    return "The task" if group is None or group.task is None else f"Task {group.task}"


def _layout(cells_df: pd.DataFrame, layout: Layout | None) -> Layout:
    return layout if layout is not None else Layout.of(None, cells_df)


def _success_sentence(cells_df: pd.DataFrame, group: TaskGroup | None,
                      layout: Layout | None = None) -> str | None:
    """How often the task's success criterion was met: the best configuration and overall."""
    if cells_df.empty or "n_success_trials" not in cells_df:
        return None
    trials = pd.to_numeric(cells_df["n_success_trials"], errors="coerce")
    if not trials.notna().any():
        return None  # the task has no success criterion
    name = _task_name(group)
    tried = cells_df[trials.fillna(0) > 0]
    if tried.empty:
        return f"{name} has a success criterion, but no run has been checked against it yet."
    k_all = int(pd.to_numeric(tried["n_success"]).sum())
    n_all = int(pd.to_numeric(tried["n_success_trials"]).sum())
    n_cfg = len(tried)
    cfgs = f"{n_cfg} configuration{'s' if n_cfg != 1 else ''}"
    if k_all == 0:
        return (
            f"{name} never met its success criterion: 0 of {n_all} runs across {cfgs} "
            "(diverged runs count as not met)."
        )
    metric = metric_of(cells_df)
    order = np.lexsort(
        (
            metric.score(tried["final_val_metric_mean"]),
            -pd.to_numeric(tried["n_success_trials"]).to_numpy(dtype=float),
            -pd.to_numeric(tried["success_rate"]).to_numpy(dtype=float),
        )
    )
    rec = tried.iloc[int(order[0])].to_dict()
    k, n = int(rec["n_success"]), int(rec["n_success_trials"])
    lo, hi = float(rec["success_rate_lo"]), float(rec["success_rate_hi"])
    same = int(
        (
            (pd.to_numeric(tried["n_success"]) == k)
            & (pd.to_numeric(tried["n_success_trials"]) == n)
        ).sum()
    )
    ties = ""
    if same > 1:
        ties = f" ({same - 1} other configuration{'s' if same > 2 else ''} did as well)"
    overall = (
        f"over all {cfgs}, {k_all} of {n_all} runs met it"
        if n_cfg > 1
        else "the only configuration checked"
    )
    return (
        f"{name} met its success criterion in {k} of {n} runs with "
        f"{_setting_phrase(rec, _layout(cells_df, layout).facets)} (95% Wilson interval "
        f"{lo:.2f}–{hi:.2f}), the highest success rate{ties}; {overall} "
        "(diverged runs count as not met)."
    )


def _counts(runs: pd.DataFrame) -> tuple[int, int]:
    status = runs["status"].astype(object) if not runs.empty else pd.Series(dtype=object)
    return int((status == "completed").sum()), int((status == "diverged").sum())


def _seeds_phrase(with_runs: pd.DataFrame) -> str:
    if with_runs.empty:
        return ""
    lo, hi = int(with_runs["n"].min()), int(with_runs["n"].max())
    seeds = f"{lo}–{hi} seeds" if lo != hi else f"{lo} seed{'s' if lo != 1 else ''}"
    return f", {seeds} per configuration"


def task_sentences(
    runs: pd.DataFrame,
    cells_df: pd.DataFrame,
    stable_df: pd.DataFrame,
    group: TaskGroup | None = None,
    layout: Layout | None = None,
) -> list[str]:
    """What one task group's runs found: stability, divergence kinds, quality, success.

    ``layout``: the report's for these cells (derived from them when not given)."""
    layout = _layout(cells_df, layout)
    out: list[str] = []
    metric = group.metric if group is not None else metric_of(cells_df)
    n_completed, n_diverged = _counts(runs)
    if n_completed + n_diverged == 0:
        return ["No run of it has finished or diverged yet, so there are no rates to report."]
    cells_rec = [c for c in cells_df.to_dict("records") if c["n"] > 0]
    counts = verdicts.outcome_counts(cells_rec, metric)
    if counts:
        out.append(counts)
    grouped: list[str] = []  # a heading per context, its sentences under it; after the rest
    if not stable_df.empty and "clip.method" in stable_df.columns:
        ctx_cols = list(layout.context)
        contexts: dict[tuple, list[dict]] = {}
        for r in stable_df.to_dict("records"):
            contexts.setdefault(row_key(r, ctx_cols), []).append(r)
        cell_cols = [c for c in ctx_cols if c in cells_df.columns]
        for ctx, recs in contexts.items():
            ctx_cells = [c for c in cells_rec if row_key(c, cell_cols) == ctx]
            name = context_name(recs[0], ctx_cols)
            said = any("LR sensitivity is the mean excess" in s for s in grouped)
            said_here = verdicts.context_sentences(name, recs, ctx_cells, metric,
                                                   define=not said)
            if said_here:
                head = name[0].upper() + name[1:]
                grouped += [Heading(head), *said_here]
    dead = verdicts.not_learned(cells_rec, layout.facets, _setting_phrase, metric)
    if dead:
        out.append(dead)
    if n_diverged:
        div = runs.loc[runs["status"].astype(object) == "diverged", "divergence"].astype(object)
        n_nf, n_ex = int((div == "nonfinite").sum()), int((div == "exploded").sum())
        out.append(
            f"Of the {n_diverged} diverged runs, {n_nf} hit a non-finite loss or gradient "
            f"and {n_ex} exploded."
        )
    out.append(_quality_sentence(cells_df, n_completed, metric, layout))
    paired = _paired_quality(cells_df, runs, metric, layout)
    if paired:
        out.append(paired)
    success = _success_sentence(cells_df, group, layout)
    if success:
        out.append(success)
    return out + grouped


def headline(
    collected: CollectResult, cells_df: pd.DataFrame, stable_df: pd.DataFrame,
    layout: Layout | None = None,
) -> list[str]:
    """A few sentences that state what the sweep found, each with its counts.

    With one task group, every finding is here; with several, this holds the counts and
    the list of tasks, and :func:`task_sentences` gives each task's findings.
    """
    runs = collected.runs
    out: list[str] = []
    grouped: list[str] = []
    n_completed, n_diverged = _counts(runs)
    n_incomplete, n_corrupt = len(collected.incomplete), len(collected.corrupt)
    with_runs = cells_df[cells_df["n"] > 0] if not cells_df.empty else cells_df
    out.append(
        f"{collected.n_found} run directories: {n_completed} completed, {n_diverged} diverged, "
        f"{n_incomplete} incomplete and {n_corrupt} corrupt; "
        f"{len(with_runs)} configurations{_seeds_phrase(with_runs)}."
    )
    if n_completed + n_diverged == 0:
        out.append("No run has finished or diverged yet, so there are no rates to report.")
        return out

    groups = split_by_task(runs, cells_df, stable_df)
    if len(groups) > 1:
        listed = [f"{g.label}, scored by {g.metric.axis(prefix='').strip()}" for g, _ in groups]
        out.append(
            f"The runs belong to {len(groups)} tasks, each with its own quality measure, so "
            f"each is reported in its own section and never averaged with another: "
            f"{'; '.join(listed)}."
        )
    else:
        group = groups[0][0] if groups else None
        findings = task_sentences(runs, cells_df, stable_df, group,
                                  layout.within(cells_df) if layout is not None else None)
        first = next((i for i, s in enumerate(findings) if isinstance(s, Heading)),
                     len(findings))
        out += findings[:first]
        grouped = findings[first:]  # the context groups go last, after the general notes

    if not with_runs.empty:
        n_typ = int(with_runs["n"].mode().iloc[0])
        lo, hi = wilson_interval(0, n_typ)
        out.append(
            f"With {n_typ} seed{'s' if n_typ != 1 else ''}, 0 divergences out of {n_typ} "
            "still has a 95% Wilson interval "
            f"of {lo:.2f}–{hi:.2f}: a cell that kept training finite is evidence, not proof, "
            "and so is one where every seed trained."
        )
    derived = getattr(collected, "derived", None)
    if derived is not None and derived.outcomes:
        out.append(
            f"{derived.outcomes} run{'s were' if derived.outcomes != 1 else ' was'} written "
            "before runs recorded their outcome; "
            f"{'their outcomes were' if derived.outcomes != 1 else 'its outcome was'} derived "
            "here from the run's own final metric and its task's baseline, recomputed from "
            "the data."
        )
    for problem in getattr(derived, "problems", []) or []:
        out.append(f"No outcome for some old runs: {problem}.")
    if n_incomplete or n_corrupt:
        out.append(
            f"{n_incomplete} incomplete and {n_corrupt} corrupt run directories are excluded "
            "from every rate; they are listed at the end."
        )
    n_damaged = len(_damaged_items(collected))
    if n_damaged:
        out.append(
            f"{n_damaged} run{'s' if n_damaged != 1 else ''} with an unreadable per-parameter "
            f"file (param_metrics.parquet) still count{'s' if n_damaged == 1 else ''} "
            "everywhere but in the per-layer figure; listed at the end."
        )
    return out + (grouped if len(groups) <= 1 else [])


DAMAGED_HEADING = "Runs with an unreadable per-parameter file"
DAMAGED_NOTE = (
    "These runs are kept in every table, rate and figure except the per-layer one: their "
    "summary and main metrics are fine, only param_metrics.parquet cannot be read."
)


def _damaged_items(collected: CollectResult) -> list[tuple[str, str]]:
    damaged = getattr(collected, "damaged", None)
    if damaged is None or damaged.empty:
        return []
    return [(r["run_dir"], r["reason"]) for r in damaged.to_dict("records")]
