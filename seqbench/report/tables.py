"""The report's tables as display strings, and what decides their columns.

Every number is shown with its n; a missing value prints as an em dash (never as a
number). Columns that are the same in every row are left out of a table and listed
once as shared settings; config keys beyond the usual coordinates (optimizer, clip
setting, lr) that tell rows apart are shown as columns of their own.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd

from seqbench.report import _format as fmt
from seqbench.report.layout import COORDS, Layout, config_cols, distinguishing
from seqbench.report.task_groups import BPC, MetricInfo, metric_of


def printable(text: object) -> str:
    """``text`` on one printable line: newlines, other control characters and
    undecodable bytes in run-directory names or messages are shown as escapes."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))


LR_HEADING = "Learning rates: finite, trained, sensitivity"
LR_NOTE = (
    "Per setting, over the learning rates it was run at: the largest at which no seed "
    "diverged (finite: it may still have learned nothing), the largest at which every seed "
    "trained (ended better than the task's input-independent baseline; Iyer et al. 2023's "
    "maximal learning rate), and the smallest where that failed, which when below the "
    "largest means the outcome was not monotone in the learning rate. LR sensitivity "
    "(Wortsman et al. 2023): the mean over the grid of min(final validation loss, initial "
    "loss) minus the grid's best, a diverged run counted at its initial loss, with a 95% "
    "bootstrap interval over seeds; 0 means the result did not depend on the learning "
    "rate. Comparable only between settings run over the same grid. seeds: the fewest runs "
    "with a verdict at any of its learning rates."
)




def cells_note(metric: MetricInfo = BPC, success: bool = False) -> str:
    """The sentence above a configurations table: what its numbers are over."""
    unit = f"{metric.unit}; {metric.direction}" if metric.unit else metric.direction
    text = (
        "One row per configuration, aggregated over seeds. Rates are over runs that completed "
        f"or diverged (n), with 95% Wilson intervals: trained = ended better than the task's "
        "input-independent baseline (the baseline column), no progress = completed but not "
        f"better, diverged = non-finite or exploded. The final validation {metric.label} "
        f"({unit}) is a mean over finished runs only, with a 95% t interval."
    )
    if success:
        text += (
            " Success counts the runs that met the task's success criterion, out of the "
            "completed runs checked against it and the runs that diverged (a diverged run did "
            "not meet it), with a 95% Wilson interval."
        )
    text += (
        " Time to target (AlgoPerf-style): the steps and seconds until the validation "
        f"{metric.label} first reached the target column's value (by default 90% of the way "
        "from the baseline to the best configuration of the same optimizer and model; "
        "`report --target`), the median over the n runs, where a run that never reached it "
        "or diverged counts as not reached (never as a number); k/n reached it. Validation "
        "runs every trainer.eval_every steps, so a time is the first evaluation past the "
        "target: the crossing lies within the interval before it."
    )
    return text + " — means no value (nothing is imputed)."


def row_key(rec: dict, cols: Sequence[str]) -> tuple:
    return tuple(None if fmt.is_missing(rec.get(c)) else rec.get(c) for c in cols)


def _facets(table: pd.DataFrame, layout: Layout | None) -> list[str]:
    return list(layout.facets) if layout is not None else distinguishing(table)


def _constant_settings(cells_df: pd.DataFrame,
                       layout: Layout | None = None) -> list[tuple[str, str]]:
    """Config keys with one value wherever they are set ("where set" if some cells lack them)."""
    if cells_df.empty:
        return []
    skip = set(_facets(cells_df, layout)) | set(COORDS)
    out = []
    for c in config_cols(cells_df):
        if c in skip:
            continue
        col = cells_df[c].astype(object)
        vals = col.dropna().unique()
        if len(vals) != 1:
            continue
        v = vals[0]
        text = v if isinstance(v, str) else fmt.num(v)
        out.append((c, text + (" where set" if col.isna().any() else "")))
    return out


def _setting_columns(r: dict, extra: list[str], *, with_lr: bool) -> dict[str, str]:
    """The columns that say which setting a row is: optimizer, clip, [lr], the rest."""
    row = {}
    if "optim.name" in r:
        row["optimizer"] = fmt.optimizer(r["optim.name"])
    if "clip.method" in r:
        row["clip"] = fmt.clip_short(r["clip.method"], r.get("threshold"))
    if with_lr and "optim.lr" in r:
        row["lr"] = fmt.lr(r["optim.lr"])
    for c in extra:
        row[c] = fmt.num(r[c]) if not isinstance(r[c], str) else r[c]
    return row


SENSITIVITY_HEADER = "LR sensitivity [95% CI]"


def stable_table(stable_df: pd.DataFrame, layout: Layout | None = None) -> pd.DataFrame:
    """The learning-rate summary as display strings (constant columns left out)."""
    if stable_df.empty:
        return pd.DataFrame()
    extra = _facets(stable_df, layout)
    rows = []
    for r in stable_df.to_dict("records"):
        row = _setting_columns(r, extra, with_lr=False)
        row["largest finite lr"] = fmt.lr(r["largest_finite_lr"])
        row["smallest diverged lr"] = fmt.lr(r["smallest_diverged_lr"])
        row["largest trained lr"] = fmt.lr(r["largest_trained_lr"])
        row["smallest untrained lr"] = fmt.lr(r["smallest_untrained_lr"])
        row[SENSITIVITY_HEADER] = fmt.interval(r["lr_sensitivity"], r["lr_sensitivity_lo"],
                                               r["lr_sensitivity_hi"])
        row["lrs tried"] = fmt.num(r["n_lrs"])
        row["seeds"] = fmt.num(r["n_seeds"])
        rows.append(row)
    return pd.DataFrame(rows)


def quality_header(metric: MetricInfo) -> str:
    """Header of the quality column: ``final val MSE [95% CI]``."""
    return f"final val {metric.label} [95% CI]"


SUCCESS_HEADER = "success k/n (rate [95% CI])"


def cells_table(cells_df: pd.DataFrame, metric: MetricInfo | None = None,
                layout: Layout | None = None) -> pd.DataFrame:
    """The cells table of one task group as display strings; n is shown in every row.

    The quality column is named after the metric (``metric`` defaults to the one metric
    of ``cells_df``; a table that mixes metrics raises). A success column appears where
    the task has a success criterion.
    """
    if cells_df.empty:
        return pd.DataFrame()
    metric = metric or metric_of(cells_df)
    extra = _facets(cells_df, layout)
    show_incomplete = bool((cells_df["n_incomplete"] > 0).any())
    show_success = (
        "n_success_trials" in cells_df and bool(cells_df["n_success_trials"].notna().any())
    )
    rows = []
    for r in cells_df.to_dict("records"):
        row = _setting_columns(r, extra, with_lr=True)
        row["n"] = str(int(r["n"]))
        if show_incomplete:
            row["incomplete"] = str(int(r["n_incomplete"]))
        row["diverged k/n (rate [95% CI])"] = fmt.rate(
            r["n_diverged"], r["n"], r["divergence_rate_lo"], r["divergence_rate_hi"]
        )
        row["trained k/n (rate [95% CI])"] = fmt.rate(
            r.get("n_trained", 0), r["n"], r.get("trained_rate_lo"), r.get("trained_rate_hi")
        )
        row["no progress k/n"] = (f"{int(r.get('n_no_progress', 0))}/{int(r['n'])}"
                                  if r["n"] else fmt.MISSING)
        row["non-finite k/n"] = f"{int(r['n_nonfinite'])}/{int(r['n'])}" if r["n"] else fmt.MISSING
        row["finished"] = str(int(r["n_finished"]))
        row[quality_header(metric)] = fmt.interval(
            r["final_val_metric_mean"], r["final_val_metric_lo"], r["final_val_metric_hi"]
        )
        row["baseline"] = fmt.num(r.get("baseline_val_metric"))
        if show_success:
            trials = r["n_success_trials"]
            row[SUCCESS_HEADER] = (
                fmt.MISSING
                if fmt.is_missing(trials)
                else fmt.rate(r["n_success"], trials, r["success_rate_lo"], r["success_rate_hi"])
            )
        row["median divergence step"] = fmt.num(r["median_divergence_step"])
        row["median grad norm"] = fmt.num(r["grad_norm_pre_median"])
        row["clip fraction"] = fmt.num(r["clip_fraction"], 2)
        row["tokens/s"] = fmt.num(r["tokens_per_second"])
        if "steps_to_target" in r:
            row[TARGET_HEADER] = fmt.num(r.get("target"))
            row[STEPS_HEADER] = _to_target(r, "steps_to_target")
            row["seconds to target (median)"] = _to_target(r, "seconds_to_target", 1)
        rows.append(row)
    return pd.DataFrame(rows)


TARGET_HEADER = "target"
STEPS_HEADER = "steps to target (median, k/n reached)"


def _to_target(r: dict, key: str, digits: int = 3) -> str:
    """``500 (3/3)``; ``not reached (1/3)`` where the median run did not get there."""
    if fmt.is_missing(r.get("target")) or not r["n"]:
        return fmt.MISSING
    k = f"({int(r['n_reached_target'])}/{int(r['n'])})"
    v = r[key]
    if key.startswith("steps"):
        return f"{fmt.num(v)} {k}" if np.isfinite(v) else f"not reached {k}"
    return f"{fmt.num(v, digits)}" if np.isfinite(v) else "not reached"


_NUMERIC_HEADERS = {
    TARGET_HEADER,
    "seconds to target (median)",
    "n",
    "incomplete",
    "finished",
    "lr",
    "largest finite lr",
    "smallest diverged lr",
    "largest trained lr",
    "smallest untrained lr",
    "lrs tried",
    "seeds",
    "baseline",
    "median divergence step",
    "median grad norm",
    "clip fraction",
    "tokens/s",
}


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(none)_\n"

    def esc(x: object) -> str:
        return printable(str(x).replace("\n", " ")).replace("|", "\\|")

    head = "| " + " | ".join(esc(c) for c in df.columns) + " |"
    align = "|" + "|".join("---:" if c in _NUMERIC_HEADERS else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, align, *body]) + "\n"


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>(none)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        tds = "".join(
            f'<td class="num">{html.escape(str(v))}</td>'
            if c in _NUMERIC_HEADERS
            else f"<td>{html.escape(str(v))}</td>"
            for c, v in zip(df.columns, row, strict=True)
        )
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
