"""Synthetic run directories that follow the run-directory contract.

Why: report code must be tested (and benchmarked on ~1,000 runs) without training
anything. The generator writes exactly what a sweep writes - ``summary.json``,
``metrics.parquet``, ``.hydra/`` - for a grid of optimizers x clip settings x learning
rates x seeds, with a simple stability model so that divergence depends on the
learning rate and on clipping the way it does in practice (clipping raises the largest
stable learning rate; tighter thresholds cost a little quality). It is deterministic
for a given ``seed`` and vectorised over runs and steps; the only Python loop is the
one that writes files.

``defects=True`` adds the broken directories a real sweep leaves behind: a
``summary.json`` that is not JSON, one missing required keys, a truncated
``metrics.parquet``, a run still ``running`` and one that stopped with ``error``.

``task`` picks what the runs measure (:data:`SYNTHETIC_TASKS`): character modelling
in bits per character (the default), an adding problem scored by mean squared error
with a success criterion, or a copy task scored by accuracy (higher is better), so the
report can be tested on every kind of metric. ``legacy=True`` writes summaries as they
were before tasks named their metric (no ``metric``, ``final_val_metric``,
``task_success`` keys, no ``val_metric`` column).

``param_every=k`` also writes ``param_metrics.parquet`` (per-parameter norms every k
steps, as ``trainer.param_log_every=k`` does): the tensors' gradient norms split each
step's global norm (their squares sum to it, before and after clipping), so the
per-layer figure can be checked against the global one; with ``defects`` one run's
file is truncated (``SyntheticSweep.damaged``) while its main files stay intact.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from seqbench.outcome import outcome

DEFAULT_LRS: dict[str, tuple[float, ...]] = {
    "sgd": (0.1, 0.5, 2.0, 8.0),
    "adam": (0.001, 0.01, 0.1),
}
#: (method, threshold); the method sizes differ (1, 2, 3) on purpose, so a figure that
#: mixes up groups shows different counts.
DEFAULT_CLIPS: tuple[tuple[str, float | None], ...] = (
    ("none", None),
    ("value", 0.5),
    ("value", 2.0),
    ("norm", 0.25),
    ("norm", 1.0),
    ("norm", 4.0),
)
#: Learning rate above which an unclipped run diverges (before per-seed jitter).
_CRITICAL_LR = {"sgd": 0.6, "adam": 0.015}
#: Learning rate of the best final quality.
_BEST_LR = {"sgd": 1.0, "adam": 0.01}
_VOCAB = 65
#: The parameter tensors of the synthetic model, in ``named_parameters()`` order, with
#: each one's share of the squared global gradient norm (the shares sum to 1).
PARAM_NAMES: tuple[str, ...] = (
    "embed.weight",
    "rnn.weight_ih_l0",
    "rnn.weight_hh_l0",
    "rnn.bias_ih_l0",
    "rnn.bias_hh_l0",
    "decoder.weight",
    "decoder.bias",
)
_PARAM_SHARE = np.array([0.05, 0.15, 0.45, 0.02, 0.02, 0.3, 0.01])
_PARAM_WEIGHT = np.array([8.0, 4.0, 6.0, 0.5, 0.5, 3.0, 0.3])


@dataclass(frozen=True)
class FakeTask:
    """What the synthetic runs of one task measure, and how.

    ``success_at``: the task's success criterion on the final validation metric
    (below it when lower is better, at or above it otherwise); None: no criterion.
    ``baseline``: the task's input-independent baseline (``baseline_val_metric``), set
    so that the slowest-learning configurations end no better than it (``no_progress``).
    """

    name: str
    metric: str
    unit: str
    lower_is_better: bool
    seq_len: int
    batch: int
    success_at: float | None = None
    baseline: float = math.nan

    @property
    def text(self) -> bool:
        return self.metric == "bpc"


SYNTHETIC_TASKS: dict[str, FakeTask] = {
    "synthetic-chars": FakeTask("synthetic-chars", "bpc", "bits/char", True, 64, 16,
                                     baseline=1.85),
    "adding": FakeTask("adding", "mse", "squared target units", True, 100, 32, 0.01,
                            baseline=0.17),
    "copy": FakeTask("copy", "accuracy", "fraction of symbols", False, 50, 32, 0.9,
                          baseline=0.6),
}


@dataclass
class SyntheticSweep:
    """What :func:`write_synthetic_sweep` wrote.

    ``truth``: one row per well-formed finished run (completed or diverged) with the
    summary fields and the flat config, as a reader should find them.
    ``corrupt``: relative dir -> defect kind. ``incomplete``: relative dir -> status.
    ``damaged``: relative dir -> defect kind, for well-formed runs (in ``truth``) whose
    optional param_metrics.parquet is broken.
    """

    root: Path
    truth: pd.DataFrame
    corrupt: dict[str, str] = field(default_factory=dict)
    incomplete: dict[str, str] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)


def _clip_factor(method: str, thr: float | None) -> float:
    if method == "norm" and thr:
        return 8.0 / thr
    if method == "value" and thr:
        return 4.0 / thr
    return 1.0


def _config(
    task: FakeTask,
    opt: str,
    lr: float,
    method: str,
    thr: float | None,
    seed: int,
    steps: int,
    eval_every: int,
) -> dict:
    cfg: dict[str, object] = {
        "task.name": task.name,
        "task.seq_len": task.seq_len,
        "task.batch_size": task.batch,
        "model.cell": "lstm",
        "model.hidden_size": 32,
        "model.num_layers": 1,
        "optim.name": opt,
        "optim.lr": lr,
        "clip.method": method,
        "trainer.max_steps": steps,
        "trainer.eval_every": eval_every,
        "trainer.log_every": 10,
        "trainer.device": "cpu",
        "seed": seed,
    }
    if opt == "sgd":
        cfg["optim.momentum"] = 0.9
    if method == "value":
        cfg["clip.clip_value"] = thr
    if method == "norm":
        cfg["clip.max_norm"] = thr
        cfg["clip.norm_type"] = 2.0
        cfg["clip.scope"] = "global"
    return cfg


def _none_if_nan(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1, allow_nan=False), encoding="utf-8")


def _metrics_table(
    cols: dict[str, np.ndarray], is_eval: np.ndarray, task: FakeTask, legacy: bool
) -> pa.Table:
    arrays = {
        "step": pa.array(cols["step"], pa.int64()),
        "tokens": pa.array(cols["tokens"], pa.int64()),
        "train_loss": pa.array(cols["train_loss"], pa.float32()),
        "grad_norm_pre": pa.array(cols["grad_norm_pre"], pa.float32()),
        "grad_norm_post": pa.array(cols["grad_norm_post"], pa.float32()),
        "clipped": pa.array(cols["clipped"], pa.bool_()),
        "lr": pa.array(cols["lr"], pa.float32()),
        "nonfinite": pa.array(cols["nonfinite"], pa.bool_()),
        "wall_s": pa.array(cols["wall_s"], pa.float32()),
        "val_loss": pa.array(cols["val_loss"], pa.float32(), mask=~is_eval),
        "val_bpc": pa.array(cols["val_bpc"], pa.float32(), mask=~is_eval | (not task.text)),
    }
    if not legacy:
        arrays["val_metric"] = pa.array(cols["val_metric"], pa.float32(), mask=~is_eval)
    return pa.table(arrays)


def _curves(task: FakeTask, excess: np.ndarray, T: int, noise: np.ndarray) -> np.ndarray:
    """The (runs, steps) training-loss curves: from the initial loss down to each run's final.

    ``excess`` >= 0 is how far each run is from the best quality it could reach; its
    meaning per task: bits per character above 1.45, decades of MSE above 1e-3,
    nats of cross-entropy above 0.02 (copy task).
    """
    s = np.arange(1, T + 1, dtype=float)[None, :]
    tau = max(T / 5.0, 1.0)
    if task.name == "adding":
        l0 = 1.0 / 6.0  # the MSE of always answering 1, the mean of the sum
        final = np.minimum(10.0 ** (-3.0 + 8.0 * excess), l0)
        loss = final[:, None] + (l0 - final[:, None]) * np.exp(-s / tau)
        return loss * np.exp(0.05 * noise)
    if task.name == "copy":
        l0 = math.log(10)
        final = 0.02 + 1.5 * excess
        loss = final[:, None] + (l0 - final[:, None]) * np.exp(-s / tau)
        return np.clip(loss + 0.01 * noise, 1e-3, None)
    l0 = math.log(_VOCAB)
    final = (1.45 + excess) * math.log(2)
    loss = final[:, None] + (l0 - final[:, None]) * np.exp(-s / tau)
    return loss + 0.04 * noise


def _validation(task: FakeTask, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validation loss and metric from the training-loss curves."""
    if task.name == "adding":
        val_loss = loss * 1.05
        return val_loss, val_loss  # the loss is the metric
    if task.name == "copy":
        val_loss = loss + 0.01
        return val_loss, np.exp(-val_loss)  # a monotone stand-in for accuracy
    val_loss = loss + 0.03
    return val_loss, val_loss / math.log(2)


def _param_table(
    steps: np.ndarray, gpre: np.ndarray, gpost: np.ndarray, lr: float, rng: np.random.Generator
) -> pa.Table:
    """Rows (step, tensor) for the logged steps; ``gpre``/``gpost`` are the global norms there."""
    k, n = len(PARAM_NAMES), len(steps)
    share = np.sqrt(_PARAM_SHARE)[None, :] * np.exp(0.1 * rng.standard_normal((n, k)))
    share /= np.sqrt((share**2).sum(axis=1, keepdims=True))  # squares sum to 1 again
    pre = gpre[:, None] * share
    post = gpost[:, None] * share
    weight = _PARAM_WEIGHT[None, :] * (1.0 + 0.002 * steps[:, None])
    with np.errstate(all="ignore"):
        ratio = np.minimum(lr, 1.0) * 0.1 * post / weight
    return pa.table(
        {
            "step": pa.array(np.repeat(steps, k), pa.int64()),
            "name": pa.array(np.tile(np.array(PARAM_NAMES, dtype=object), n), pa.string()),
            "grad_norm": pa.array(pre.ravel(), pa.float64()),
            "grad_norm_post": pa.array(post.ravel(), pa.float64()),
            "weight_norm": pa.array(weight.ravel(), pa.float64()),
            "update_ratio": pa.array(ratio.ravel(), pa.float64()),
        }
    )


def write_synthetic_sweep(
    root: str | os.PathLike[str],
    *,
    optimizers: Sequence[str] = ("sgd", "adam"),
    lrs: Mapping[str, Sequence[float]] | Sequence[float] | None = None,
    clips: Sequence[tuple[str, float | None]] = DEFAULT_CLIPS,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 60,
    eval_every: int = 20,
    seed: int = 0,
    defects: bool = True,
    hydra: bool = True,
    stability: float = 1.0,
    task: str = "synthetic-chars",
    legacy: bool = False,
    param_every: int = 0,
    max_runs: int | None = None,
) -> SyntheticSweep:
    """Write a synthetic sweep under ``root`` and return what was written.

    Runs are ``root/NNNN/``; defect directories are ``root/extra/<kind>/``.
    ``lrs`` is one list for every optimizer or a mapping optimizer -> list.
    ``stability`` scales every critical learning rate (0.001 makes almost every run
    diverge, 1000 makes none diverge), for degenerate-input tests. ``task`` is a key of
    :data:`SYNTHETIC_TASKS`; ``legacy`` (text task only) writes the older summary format.
    ``param_every`` > 0 writes param_metrics.parquet every that many steps (0: none).
    ``max_runs`` keeps only the first that many runs of the grid (seeds vary fastest, so
    the last configurations lose seeds): a benchmark can ask for exactly 1,000 runs.
    """
    if task not in SYNTHETIC_TASKS:
        raise ValueError(f"task {task!r} is not one of {sorted(SYNTHETIC_TASKS)}")
    spec = SYNTHETIC_TASKS[task]
    if legacy and not spec.text:
        raise ValueError("legacy summaries exist for text tasks only")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if lrs is None:
        lr_map = {o: tuple(DEFAULT_LRS.get(o, (0.01, 0.1))) for o in optimizers}
    elif isinstance(lrs, Mapping):
        lr_map = {o: tuple(lrs[o]) for o in optimizers}
    else:
        lr_map = {o: tuple(lrs) for o in optimizers}

    grid = [
        (o, lr, m, t, s) for o in optimizers for lr in lr_map[o] for (m, t) in clips for s in seeds
    ]
    if max_runs is not None:
        if max_runs < 0:
            raise ValueError(f"max_runs must be >= 0, got {max_runs}")
        grid = grid[:max_runs]
    n_runs, T = len(grid), int(steps)
    rng = np.random.default_rng(seed)
    opt = np.array([g[0] for g in grid], dtype=object)
    lr = np.array([g[1] for g in grid], dtype=float)
    method = np.array([g[2] for g in grid], dtype=object)
    thr = np.array([np.nan if g[3] is None else g[3] for g in grid], dtype=float)

    crit = np.array([_CRITICAL_LR.get(o, 0.1) for o in opt]) * stability
    crit *= np.array([_clip_factor(g[2], g[3]) for g in grid])
    crit *= np.exp(0.8 * rng.standard_normal(n_runs))
    diverged = lr > crit
    nonfinite = diverged & (rng.random(n_runs) < 0.6)
    div_step = np.clip((T * rng.uniform(0.2, 0.9, n_runs)).astype(int), 2, T)
    length = np.where(diverged, div_step, T)

    best_lr = np.array([_BEST_LR.get(o, 0.01) for o in opt])
    tight = np.where(np.isnan(thr), 0.0, 0.02 / np.where(np.isnan(thr), 1.0, thr))
    excess = 0.25 * np.log10(lr / best_lr) ** 2 + tight + 0.02 * rng.standard_normal(n_runs)
    excess = np.clip(excess, 0.0, None) if not spec.text else excess

    s = np.arange(1, T + 1, dtype=float)[None, :]
    tau = max(T / 5.0, 1.0)
    loss = _curves(spec, excess, T, rng.standard_normal((n_runs, T)))
    g0 = np.where(opt == "sgd", 2.0, 1.0)[:, None] * (1.0 + 2.0 * np.exp(-s / tau))
    gpre = g0 * np.exp(0.5 * rng.standard_normal((n_runs, T)))
    gpre = np.where(rng.random((n_runs, T)) < 0.03, gpre * 10.0, gpre)
    # runaway before divergence: loss and gradient norm grow over the last steps
    before = (length[:, None] - s).clip(0, None)
    ramp = np.where(diverged[:, None], np.exp(np.clip(6.0 - before, 0.0, None)), 1.0)
    loss = loss * np.where(diverged[:, None], np.sqrt(ramp), 1.0)
    gpre = gpre * ramp**2
    last = s == length[:, None]
    loss = np.where(nonfinite[:, None] & last, np.nan, loss)
    gpre = np.where(nonfinite[:, None] & last, np.inf, gpre)
    cap = np.where(method == "norm", thr, np.where(method == "value", 3.0 * thr, np.inf))[:, None]
    gpost = np.minimum(gpre, cap)
    gpost = np.where(np.isfinite(gpre), gpost, np.nan)
    clipped = np.isfinite(gpre) & (gpost < gpre)
    nf_step = np.isnan(loss) | ~np.isfinite(gpre)
    is_eval = ((s % eval_every) == 0) | (s == T)
    val_loss, val_metric = _validation(spec, loss)
    val_bpc = val_metric if spec.text else np.full_like(val_loss, np.nan)
    step_time = 0.01 * np.exp(0.1 * rng.standard_normal(n_runs))

    valid = s <= length[:, None]
    finite_g = np.where(valid & np.isfinite(gpre), gpre, np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows are expected
        g_med = np.nanmedian(finite_g, axis=1)
        g_p99 = np.nanpercentile(finite_g, 99, axis=1)
        g_max = np.nanmax(finite_g, axis=1)
        evals_reached = np.where(valid & is_eval & np.isfinite(val_metric), val_metric, np.nan)
        best_metric = (np.nanmin if spec.lower_is_better else np.nanmax)(evals_reached, axis=1)
    clip_frac = (clipped & valid).sum(axis=1) / length

    truth_rows: list[dict] = []
    prng = np.random.default_rng([seed, 1])  # its own stream: the rest stays as it was
    for i, (o, lr_i, m, t, sd) in enumerate(grid):
        rel = f"{i:04d}"
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        n = int(length[i])
        status = "diverged" if diverged[i] else "completed"
        divergence = None if not diverged[i] else ("nonfinite" if nonfinite[i] else "exploded")
        cfg = _config(spec, o, lr_i, m, t, sd, T, eval_every)
        wall = float(n * step_time[i])
        tokens = n * spec.seq_len * spec.batch
        final = None if diverged[i] else float(val_metric[i, T - 1])
        best = _none_if_nan(best_metric[i])
        success = None
        if spec.success_at is not None and final is not None:
            ok = final < spec.success_at if spec.lower_is_better else final >= spec.success_at
            success = bool(ok)
        summary = {
            "schema_version": 1,
            "status": status,
            "divergence": divergence,
            "first_nonfinite_step": n if nonfinite[i] else None,
            "steps_completed": n,
            "tokens_seen": tokens,
            "final_train_loss": None if diverged[i] else float(loss[i, T - 1]),
            "final_val_loss": None if diverged[i] else float(val_loss[i, T - 1]),
            "final_val_bpc": final if spec.text else None,
            "best_val_bpc": best if spec.text else None,
            "metric": {
                "name": spec.metric,
                "unit": spec.unit,
                "lower_is_better": spec.lower_is_better,
            },
            "final_val_metric": final,
            "best_val_metric": best,
            "outcome": outcome(status, final, spec.baseline, spec.lower_is_better),
            "baseline_val_metric": spec.baseline,
            "baseline": "synthetic",
            "initial_loss": float(loss[i, 0]),
            "task_success": success,
            "task_metrics": None
            if success is None
            else {"task_success": success, spec.metric: final, "n_sequences": 1000},
            "grad_norm_pre": None
            if math.isnan(g_med[i])
            else {"median": float(g_med[i]), "p99": float(g_p99[i]), "max": float(g_max[i])},
            "clip_fraction": float(clip_frac[i]),
            "skipped_steps": 0,
            "wall_seconds": wall,
            "tokens_per_second": tokens / wall,
            "config": cfg,
            "env": {"torch": "synthetic", "python": "3", "device": "cpu"},
            "error": None,
        }
        if legacy:
            for k in ("metric", "final_val_metric", "best_val_metric", "task_success",
                      "outcome", "baseline_val_metric", "baseline", "initial_loss"):
                del summary[k]
            del summary["task_metrics"]
        cols = {
            "step": np.arange(1, n + 1),
            "tokens": np.arange(1, n + 1) * spec.seq_len * spec.batch,
            "train_loss": loss[i, :n],
            "grad_norm_pre": gpre[i, :n],
            "grad_norm_post": gpost[i, :n],
            "clipped": clipped[i, :n],
            "lr": np.full(n, lr_i),
            "nonfinite": nf_step[i, :n],
            "wall_s": np.arange(1, n + 1) * step_time[i],
            "val_loss": val_loss[i, :n],
            "val_bpc": val_bpc[i, :n],
            "val_metric": val_metric[i, :n],
        }
        table = _metrics_table(cols, is_eval[0, :n], spec, legacy)
        pq.write_table(table, d / "metrics.parquet")
        if param_every > 0:
            at = np.arange(param_every, n + 1, param_every)
            ptable = _param_table(at, gpre[i, at - 1], gpost[i, at - 1], lr_i, prng)
            pq.write_table(ptable, d / "param_metrics.parquet")
        _write_json(d / "summary.json", summary)
        if hydra:
            (d / ".hydra").mkdir(exist_ok=True)
            overrides = [f"optim={o}", f"optim.lr={lr_i}", f"clip={m}", f"seed={sd}"]
            (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {x}\n" for x in overrides))
        drop = ("config", "env", "grad_norm_pre", "metric", "task_metrics")
        row = {k: v for k, v in summary.items() if k not in drop}
        # what a reader should find, legacy summaries included
        row.update(
            metric=spec.metric,
            metric_unit=spec.unit,
            metric_lower_is_better=spec.lower_is_better,
            final_val_metric=final,
            best_val_metric=best,
            task_success=success,
        )
        for k in ("median", "p99", "max"):
            row[f"grad_norm_pre_{k}"] = (summary["grad_norm_pre"] or {}).get(k)
        truth_rows.append({"run_dir": rel, **row, **cfg})

    sweep = SyntheticSweep(root=root, truth=pd.DataFrame(truth_rows))
    if defects and grid:
        _write_defects(sweep, template=0)
        if param_every > 0 and len(grid) > 1 and length[1] >= param_every:
            path = root / "0001" / "param_metrics.parquet"  # a run that is not the template
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
            sweep.damaged["0001"] = "truncated_param_parquet"
    return sweep


def _write_defects(sweep: SyntheticSweep, template: int) -> None:
    """Copy run ``template`` into the broken shapes a real sweep leaves behind."""
    root = sweep.root
    src = root / f"{template:04d}"
    summary = json.loads((src / "summary.json").read_text())
    metrics = (src / "metrics.parquet").read_bytes()
    summary["config"] = {**summary["config"], "seed": 1000}

    def make(kind: str) -> Path:
        d = root / "extra" / kind
        d.mkdir(parents=True, exist_ok=True)
        return d

    d = make("bad_json")
    (d / "summary.json").write_text(json.dumps(summary)[:80])
    (d / "metrics.parquet").write_bytes(metrics)
    sweep.corrupt["extra/bad_json"] = "bad_json"

    d = make("missing_keys")
    _write_json(
        d / "summary.json", {k: v for k, v in summary.items() if k not in ("status", "config")}
    )
    (d / "metrics.parquet").write_bytes(metrics)
    sweep.corrupt["extra/missing_keys"] = "missing_keys"

    d = make("truncated_parquet")
    _write_json(d / "summary.json", summary)
    (d / "metrics.parquet").write_bytes(metrics[: len(metrics) // 2])
    sweep.corrupt["extra/truncated_parquet"] = "truncated_parquet"

    d = make("running")
    running = {
        **summary,
        "status": "running",
        "divergence": None,
        "first_nonfinite_step": None,
        "final_train_loss": None,
        "final_val_loss": None,
        "final_val_bpc": None,
        "best_val_bpc": None,
        "config": {**summary["config"], "seed": 1001},
    }
    for k in ("final_val_metric", "best_val_metric", "task_success", "task_metrics"):
        if k in running:  # not in legacy summaries
            running[k] = None
    _write_json(d / "summary.json", running)
    table = pq.read_table(src / "metrics.parquet")
    pq.write_table(table.slice(0, max(1, table.num_rows // 2)), d / "metrics.parquet")
    sweep.incomplete["extra/running"] = "running"

    d = make("error")
    error = {
        **running,
        "status": "error",
        "error": "RuntimeError: synthetic failure",
        "config": {**summary["config"], "seed": 1002},
    }
    _write_json(d / "summary.json", error)  # no metrics: it died before the first flush
    sweep.incomplete["extra/error"] = "error"
