"""summary.json: what a run reports, built from what the trainer knows on the host.

Why a pure function: summary.json is the contract every reader depends on (the sweep
skips finished runs by it, the report reads nothing else per run), and the trainer
writes it from four places: at the start, now and then while training, at the end and on
every error path. Built by one function of plain inputs, its keys and values are the
same whichever path wrote them, and can be checked without a run; the trainer only
decides when to write (`seqbench.rundir.write_json`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from seqbench.early_warning import warning_stats
from seqbench.outcome import outcome
from seqbench.rundir import SCHEMA_VERSION

if TYPE_CHECKING:
    from seqbench.data.tasks import MetricSpec
    from seqbench.metrics import MetricsFile


@dataclass
class RunState:
    """What the loop knows on the host. summary.json reports it and a checkpoint carries
    it over, so a resumed run reports as if it had never stopped."""

    status: str = "running"
    divergence: str | None = None
    first_nonfinite_step: int | None = None
    divergence_step: int | None = None
    steps_completed: int = 0
    tokens_seen: int = 0
    skipped_steps: int = 0
    evals: dict[int, dict[str, float]] = field(default_factory=dict)
    error: str | None = None
    # the first step's loss: what the explosion test compares with, and the reference a
    # diverged run counts at in the report's LR sensitivity
    initial_loss: float | None = None
    # time spent evaluating, kept out of train_seconds and tokens_per_second
    eval_seconds: float = 0.0
    # the task's success() (e.g. error rate on fresh test sequences), at the end of a run
    success: dict[str, Any] | None = None
    resumed_from: list[int] = field(default_factory=list)  # steps continued from a checkpoint
    # a fork's parent, {dir, step, digest} (seqbench.fork); None for a run from scratch
    parent: dict[str, Any] | None = None
    # tokens_seen when this run's own steps began (a fork's: its parent's), so that
    # tokens_per_second counts the steps this run made
    start_tokens: int = 0


def grad_norm_stats(pre: np.ndarray) -> dict[str, float] | None:
    finite = pre[np.isfinite(pre)]
    if finite.size == 0:
        return None
    return {
        "median": float(np.median(finite)),
        "p99": float(np.percentile(finite, 99)),
        "max": float(finite.max()),
    }


# The Theil-Sen fit uses all pairs of probes: at most this many (evenly spaced) probes
# enter it, so the fit stays ~0.05 s however long the run (the summary is rewritten
# every 2 s); the correlation and the median use every probe.
SMOOTHNESS_FIT_MAX = 1000


def _num(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def smoothness_stats(grad_norm: np.ndarray, smooth: np.ndarray) -> dict[str, Any]:
    """summary.json's `smoothness` from the probes (seqbench.smoothness): L̂ against the
    probe gradient norm ‖∇f‖, over the probes where both are finite and > 0.

    `n`: probes recorded; `median_L`; `spearman_log`: Spearman's rank correlation of
    log L̂ with log ‖∇f‖ (ranks ignore the log; Zhang et al. plot both on log axes) and
    its `n`; `fit`: L̂ ≈ L0 + L1·‖∇f‖ by the Theil-Sen estimator (L1 = median of the
    pairwise slopes, L0 = median of L̂ − L1·‖∇f‖: scipy.stats.theilslopes, method
    "joint") with Sen's nonparametric 95% interval for L1 (from Kendall's tau's normal
    approximation), on `n` probes (at most SMOOTHNESS_FIT_MAX, evenly spaced). Null
    where too few probes (spearman: 3 with varying values; fit: 2 distinct ‖∇f‖)."""
    from scipy import stats  # only runs with the probe pay for importing scipy

    g, s = np.asarray(grad_norm, dtype=np.float64), np.asarray(smooth, dtype=np.float64)
    ok = np.isfinite(g) & np.isfinite(s) & (g > 0) & (s > 0)
    g, s = g[ok], s[ok]
    out: dict[str, Any] = {"n": int(len(ok)), "n_used": int(len(g)),
                           "median_L": float(np.median(s)) if len(s) else None,
                           "spearman_log": None, "fit": None}
    if len(g) >= 3 and np.ptp(g) > 0 and np.ptp(s) > 0:
        rho = stats.spearmanr(np.log(g), np.log(s)).statistic
        out["spearman_log"] = {"rho": _num(rho), "n": int(len(g))}
    if len(np.unique(g)) >= 2:
        if len(g) > SMOOTHNESS_FIT_MAX:
            pick = np.unique(np.linspace(0, len(g) - 1, SMOOTHNESS_FIT_MAX).round().astype(int))
            g, s = g[pick], s[pick]
        slope, intercept, low, high = stats.theilslopes(s, g, 0.95, method="joint")
        out["fit"] = {"method": "theil_sen", "L0": _num(intercept), "L1": _num(slope),
                      "L1_ci95": [_num(low), _num(high)], "ci": "sen", "n": int(len(g))}
    return out


def summarize(state: RunState, metrics: MetricsFile, *, log_every: int, metric: MetricSpec,
              baseline: dict[str, Any], elapsed: float, timing: dict[str, float | None],
              clip: dict[str, Any] | None, task: dict[str, Any], parameters: int,
              frozen: list[str], config: dict[str, Any], env: dict[str, Any],
              smoothness: MetricsFile | None = None,
              spike: dict[str, Any] | None = None) -> dict[str, Any]:
    """summary.json's contents. `elapsed` is the run's wall clock so far (a resumed run's
    includes its earlier part); `clip` is a stateful clipper's own summary, or None;
    `smoothness` the probe's rows (trainer.smoothness_every), None when it is off;
    `spike` the disturbances (seqbench.spike.SpikePlan.summary), None when off."""
    st = state
    losses = metrics.column("train_loss")
    pre = metrics.column("grad_norm_pre")
    clipped = metrics.column("clipped")
    finished = st.status == "completed"
    window = losses[-int(log_every):]
    window = window[np.isfinite(window)]
    last_eval = st.evals.get(st.steps_completed) if finished else None
    before = [e for s, e in st.evals.items() if s <= st.steps_completed]
    scores = [e["val_metric"] for e in before if np.isfinite(e.get("val_metric", np.nan))]
    bpcs = [e["val_bpc"] for e in before if np.isfinite(e.get("val_bpc", np.nan))]
    best = (min if metric.lower_is_better else max)(scores) if scores else None
    train_s = elapsed - st.eval_seconds
    return {
        "schema_version": SCHEMA_VERSION,
        "status": st.status,
        "divergence": st.divergence,
        "first_nonfinite_step": st.first_nonfinite_step,
        "divergence_step": st.divergence_step,
        "steps_completed": st.steps_completed,
        "tokens_seen": st.tokens_seen,
        "final_train_loss": float(window.mean()) if finished and window.size else None,
        "final_val_loss": last_eval["val_loss"] if last_eval else None,
        "final_val_bpc": last_eval.get("val_bpc") if last_eval else None,
        "best_val_bpc": min(bpcs) if bpcs else None,
        # the task's own quality measure (bpc for text, error rate, MSE, ...)
        "metric": {"name": metric.name, "unit": metric.unit,
                   "lower_is_better": metric.lower_is_better},
        "final_val_metric": last_eval.get("val_metric") if last_eval else None,
        "best_val_metric": best,
        # trained / no_progress / diverged: the final metric against the baseline
        "outcome": outcome(st.status, last_eval.get("val_metric") if last_eval else None,
                           baseline["val_metric"], metric.lower_is_better),
        "baseline_val_metric": baseline["val_metric"],
        "baseline": baseline["description"],
        "baseline_val_loss": baseline.get("val_loss"),
        "initial_loss": st.initial_loss,
        # whether the task's stated success criterion was met (null: none, or not run)
        "task_success": st.success.get("task_success") if st.success else None,
        "task_metrics": st.success or None,
        "grad_norm_pre": grad_norm_stats(pre),
        "clip_fraction": float(clipped.mean()) if clipped.size else None,
        "skipped_steps": st.skipped_steps,
        "wall_seconds": elapsed,
        "train_seconds": train_s,
        # this process's own instants: created, first step, summary of the end
        "timing": dict(timing),
        "tokens_per_second": (st.tokens_seen - st.start_tokens) / train_s
        if train_s > 0 else None,
        "clip": clip,
        "smoothness": None if smoothness is None else {
            **smoothness_stats(smoothness.column("probe_grad_norm"),
                               smoothness.column("smoothness")),
            "warning": warning_stats(smoothness.column("step"),
                                     smoothness.column("probe_grad_norm"),
                                     smoothness.column("smoothness"), st.status,
                                     st.divergence_step)},
        "resumed_from": st.resumed_from,
        "parent": st.parent,
        "spike": spike,
        "task": task,
        "parameters": parameters,
        "frozen": frozen,
        "config": config,
        "env": env,
        "error": st.error,
    }


def summary_line(s: dict[str, Any]) -> str:
    """The one line a finished run logs: what a person checks first."""
    def num(v, fmt):
        return "—" if v is None else format(v, fmt)

    parts = [f"status={s['status']}"]
    if s.get("outcome"):
        parts.append(f"outcome={s['outcome']} (baseline "
                     f"{num(s.get('baseline_val_metric'), '.4g')})")
    if s["divergence"]:
        parts.append(f"divergence={s['divergence']} at step {s['divergence_step']}")
    if s.get("task_success") is not None:
        parts.append(f"task_success={s['task_success']}")
    parts += [
        f"steps={s['steps_completed']}",
        f"final_val_{s['metric']['name']}={num(s['final_val_metric'], '.4g')}",
        f"best_val_{s['metric']['name']}={num(s['best_val_metric'], '.4g')}",
        f"clip_fraction={num(s['clip_fraction'], '.2f')}",
        f"tokens/s={num(s['tokens_per_second'], ',.0f')}",
    ]
    return " ".join(parts)
