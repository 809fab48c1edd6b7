"""The training loop: one run, from a validated config to summary.json.

Per optimizer step: forward/backward over `accum_steps` micro-batches -> [fp16: unscale]
-> pre-clip global L2 norm -> clip -> optimizer step. Per-step numbers stay on the
device; every `log_every` steps one host read flushes them to metrics.parquet (encoded
and written on a background thread: seqbench.writer) and checks the non-finite and
explosion flags, so a divergence is found at its exact step without a host sync per
step. Divergence is a result: the run ends `diverged` and returns normally. Only an
unexpected error is an error, and it is written to summary.json before it propagates.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from seqbench import checkpoint as ckpt
from seqbench.checkpoint import CHECKPOINT_FILE
from seqbench.clipping import build_clipper, global_norm
from seqbench.config import flat, frozen_names
from seqbench.data.tasks import build_task
from seqbench.metrics import (
    EVAL_COLUMNS,
    MetricsFile,
    ParamLog,
    StepBuffer,
    env_info,
    grad_norm_stats,
)
from seqbench.models import count_parameters
from seqbench.optim import build_optimizer, build_schedule
from seqbench.outcome import outcome
from seqbench.rundir import SCHEMA_VERSION, TERMINAL, differences, experiment_config, write_json
from seqbench.tblog import TensorBoardLog
from seqbench.writer import MetricsWriter

log = logging.getLogger("seqbench.train")


# A running run's summary.json (status, steps so far) is rewritten at a flush at most this
# often: at every flush it cost ~1.5 ms, 2% of a small CPU model's step time.
SUMMARY_EVERY_S = 2.0


class NonFiniteError(RuntimeError):
    """Raised under on_nonfinite=raise: the run is recorded as an error."""


class Interrupted(Exception):
    """SIGTERM/SIGUSR1/SIGUSR2 (cluster pre-emption or time limit): the run stopped
    after saving a checkpoint."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


@dataclass
class RunState:
    """What the loop knows on the host; becomes summary.json."""

    status: str = "running"
    divergence: str | None = None
    first_nonfinite_step: int | None = None
    divergence_step: int | None = None
    steps_completed: int = 0
    tokens_seen: int = 0
    skipped_steps: int = 0
    evals: dict[int, dict[str, float]] = field(default_factory=dict)
    error: str | None = None


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, task=None):
        # wall-clock instants (Unix time) for the sweep benchmark's per-job overhead
        self.times: dict[str, float | None] = {"created_at": time.time(),
                                               "first_step_at": None, "ended_at": None}
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # plain Python values: an OmegaConf attribute read costs ~20-40 us, several a step
        t = self.t = SimpleNamespace(**OmegaConf.to_container(cfg.trainer, resolve=True))
        self.flat_config = flat(cfg)  # ~0.5 ms to build; summary.json is written per flush
        self.task_given = task
        # metrics.parquet and param_metrics.parquet are encoded and written off this
        # thread, at most one write pending (seqbench.writer states what a kill loses)
        self.writer = MetricsWriter()
        self._build()
        # the input-independent score to beat, on exactly the validation data evaluate()
        # scores: a run that ends no better did not learn (seqbench.outcome)
        self.baseline = self.task.baseline(int(t.eval_batches))
        if t.resume == "auto" and (self.run_dir / CHECKPOINT_FILE).exists():
            try:
                self._restore(ckpt.load(self.run_dir / CHECKPOINT_FILE))
            except (ckpt.CheckpointError, KeyError, ValueError, RuntimeError, TypeError) as e:
                log.warning("not resuming: %s; starting at step 1", e)
                (self.run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
                self._build()  # fresh objects, seeded as a run that never stopped
        elif (self.run_dir / CHECKPOINT_FILE).exists():
            (self.run_dir / CHECKPOINT_FILE).unlink()  # resume=never: start over
        if not self.resumed_from:
            self._clear_previous_run()
        # TensorBoard (trainer.tensorboard): a resumed run's new event file tells
        # TensorBoard to drop the old one's steps after the checkpoint (purge_step)
        self.tb = TensorBoardLog(self.run_dir, self.experiment_config(),
                                 self.task.metric.name,
                                 purge_step=self.start_step if self.resumed_from else None
                                 ) if getattr(t, "tensorboard", False) else None

    # what a run writes into its directory: a fresh start removes an earlier run's, so
    # a replaced run (--force) never leaves a file of another experiment beside this one's
    RUN_FILES = ("summary.json", "metrics.parquet", "param_metrics.parquet", "clip_state.pt")

    def _clear_previous_run(self) -> None:
        for name in self.RUN_FILES:
            (self.run_dir / name).unlink(missing_ok=True)
        for events in self.run_dir.glob("events.out.tfevents.*"):
            events.unlink()

    def _build(self) -> None:
        """Seed, data, model, optimizer, clipper and run state, as at step 0."""
        t, cfg, task = self.t, self.cfg, self.task_given
        # 0: the SLURM allocation's CPUs (cores of the job's own), else one thread: with
        # torch's default of one per core, `train` next to one busy process ran 3.15x
        # slower, with one thread 1.03x (reports/bench/threads.md)
        torch.set_num_threads(int(t.threads) or _slurm_cpus() or 1)
        seed_everything(int(cfg.seed), bool(t.deterministic))
        self.device = resolve_device(t.device)
        if self.device.type == "cpu":
            torch.set_flush_denormal(bool(t.flush_denormal))
        self.task = task if task is not None else build_task(cfg.task)
        self.accum = int(t.accum_steps)
        self.task.setup(self.device, self.accum)
        # read once: on a config-backed task each read costs ~0.1 ms of OmegaConf lookups
        self.tokens_per_step = int(self.task.tokens_per_step)
        self.model = self.task.build_model(cfg.model).to(self.device)
        names = [n for n, _ in self.model.named_parameters()]
        self.frozen = frozen_names(names, list(t.freeze)) if t.freeze else []
        for n, p in self.model.named_parameters():
            if n in self.frozen:
                p.requires_grad_(False)
        self.named_params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named_params]
        self.optimizer = build_optimizer(self.params, cfg.optim)
        # a constant lr needs no scheduler call per step
        self.schedule = None if cfg.optim.get("schedule", "constant") == "constant" \
            else build_schedule(self.optimizer, cfg.optim, int(t.max_steps))
        self.clip = build_clipper(cfg.clip, self.named_params)
        # torch's clip_grad_norm_(error_if_nonfinite=True) is this run's `raise` policy
        if cfg.clip.get("error_if_nonfinite"):
            self.policy, self.policy_source = "raise", "clip.error_if_nonfinite=true"
        else:
            self.policy = t.on_nonfinite
            self.policy_source = f"trainer.on_nonfinite={t.on_nonfinite}"
        amp_dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[t.amp]
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=amp_dtype))
            if amp_dtype is not None else contextlib.nullcontext
        )
        self.scaler = torch.amp.GradScaler(self.device.type) if t.amp == "fp16" else None
        self.buffer = StepBuffer(int(t.log_every), self.device)
        self.metrics = MetricsFile(self.run_dir / "metrics.parquet")
        self.state = RunState()
        self.host_lr: list[float] = []
        self.host_wall: list[float] = []
        self.initial_loss: float | None = None  # the first step's loss, on the host
        self.t_start = time.perf_counter()
        self.summary_written = 0.0
        self.eval_seconds = 0.0
        self.success: dict[str, Any] | None = None
        self.step_count = 0
        every = int(t.param_log_every)
        self.param_log = ParamLog(
            self.run_dir / "param_metrics.parquet", every,
            {id(p): n for n, p in self.named_params},
        ) if every > 0 else None
        self.env = env_info(self.device)
        self.resumed_from: list[int] = []  # steps this run continued from a checkpoint
        self.checkpointed_at = 0
        self.pending_signal: int | None = None
        self.start_step = 1

    # ---- the step -------------------------------------------------------------------
    def step(self) -> None:
        """One optimizer step; records its numbers into the device buffer, no host read."""
        if self.accum == 1:  # the common case: no accumulator, no division kernels
            with self.autocast():
                loss = self.task.train_loss(self.model, 0)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss = loss.detach().float()
        else:
            loss_sum = torch.zeros((), device=self.device)
            for j in range(self.accum):
                with self.autocast():
                    loss = self.task.train_loss(self.model, j)
                scaled = loss / self.accum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                loss_sum += loss.detach().float()
            loss = loss_sum / self.accum
        self.task.advance()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        self.step_count += 1
        params = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in params]
        pre = global_norm(grads, 2.0)
        plog = self.param_log if self.param_log and self.param_log.active(self.step_count) \
            else None
        if plog:
            plog.before_clip(self.step_count, params, grads)
        post, clipped = self.clip(params, grads, pre)
        if plog:
            plog.before_update(grads)
        if self.scaler is not None:
            # GradScaler skips steps whose unscaled gradients hold inf/NaN (it reads that
            # flag on the host itself); those are AMP's normal operation, not divergence.
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif self.policy == "skip":
            # Skipping needs the decision on the host: this policy costs one sync a step.
            if not bool(torch.isfinite(loss) & torch.isfinite(pre)):
                self.task.reset_state()
            else:
                self.optimizer.step()
        else:
            self.optimizer.step()
        if plog:
            plog.after_update()
        self.optimizer.zero_grad(set_to_none=True)
        self.host_lr.append(self.optimizer.param_groups[0]["lr"])
        if self.schedule is not None:
            self.schedule.step()
        # Only the four raw numbers go to the buffer; the flags (non-finite, exploded,
        # skipped) are derived from them on the host at the flush, so they cost no
        # kernels here.
        self.buffer.record(loss, pre, post, clipped)
        self.host_wall.append(time.perf_counter() - self.t_start)

    # ---- flush ----------------------------------------------------------------------
    def flags(self, loss: np.ndarray, pre: np.ndarray) -> dict[str, np.ndarray]:
        """Per-step flags from the recorded loss and pre-clip norm (float32 values).

        `nonfinite`: the loss or the gradient norm is NaN/Inf (the raw fact, a column).
        `diverging`: what ends the run: non-finite, except under fp16 (a finite loss with
        inf/NaN gradients is GradScaler skipping a step, AMP's normal operation) and
        under `skip` (the step was skipped instead). `exploded`: a finite loss above
        explode_factor x the run's first loss. `skipped`: the update was not applied.
        """
        loss_ok, grad_ok = np.isfinite(loss), np.isfinite(pre)
        nonfinite = ~(loss_ok & grad_ok)
        none = np.zeros_like(nonfinite)
        if self.scaler is not None:
            diverging, skipped = ~loss_ok, loss_ok & ~grad_ok
        elif self.policy == "skip":
            diverging, skipped = none, nonfinite
        else:
            diverging, skipped = nonfinite, none
        if self.initial_loss is None and loss.size:
            self.initial_loss = float(loss[0])
        factor = self.t.explode_factor
        if factor is None or self.initial_loss is None:
            exploded = none
        else:
            with np.errstate(invalid="ignore"):
                exploded = loss_ok & (loss > factor * self.initial_loss)
        return {"nonfinite": nonfinite, "diverging": diverging, "exploded": exploded,
                "skipped": skipped}

    def flush(self, first_step: int) -> bool:
        """Write buffered steps; return True when the run must stop (diverged)."""
        rows = self.buffer.drain()
        n = len(rows["train_loss"])
        steps = np.arange(first_step, first_step + n, dtype=np.int64)
        f = self.flags(rows["train_loss"], rows["grad_norm_pre"])
        bad = f["diverging"] | f["exploded"]
        raw_nonfinite = f["nonfinite"]
        stop_at = n
        st = self.state
        if self.state.first_nonfinite_step is None and raw_nonfinite.any():
            first = int(np.argmax(raw_nonfinite))
            if self.scaler is None or not np.isfinite(rows["train_loss"][first]):
                st.first_nonfinite_step = int(steps[first])
        if bad.any():
            i = int(np.argmax(bad))
            stop_at = i + 1
            st.divergence = "nonfinite" if f["diverging"][i] else "exploded"
            st.divergence_step = int(steps[i])
            if st.divergence == "nonfinite":
                st.first_nonfinite_step = int(steps[i])
        tpt = self.tokens_per_step
        cols = {
            "step": steps[:stop_at],
            "tokens": steps[:stop_at] * tpt,
            "train_loss": rows["train_loss"][:stop_at],
            "grad_norm_pre": rows["grad_norm_pre"][:stop_at],
            "grad_norm_post": rows["grad_norm_post"][:stop_at],
            "clipped": rows["clipped"][:stop_at],
            "lr": np.asarray(self.host_lr[:stop_at], dtype=np.float64),
            "nonfinite": raw_nonfinite[:stop_at],
            "skipped": f["skipped"][:stop_at],
            "wall_s": np.asarray(self.host_wall[:stop_at], dtype=np.float64),
        }
        self.host_lr, self.host_wall = [], []
        for name in EVAL_COLUMNS:  # null except on evaluation steps
            col = np.full(stop_at, np.nan)
            for s, e in st.evals.items():
                if first_step <= s < first_step + stop_at:
                    col[s - first_step] = e.get(name, np.nan)
            cols[name] = col
        changed = [self.metrics] if self.metrics.add(cols) else []
        if self.param_log is not None and self.param_log.flush(
                int(cols["step"][-1]) if stop_at else first_step - 1):
            changed.append(self.param_log.file)
        st.skipped_steps += int(f["skipped"][:stop_at].sum())
        st.steps_completed = int(steps[stop_at - 1]) if stop_at else st.steps_completed
        st.tokens_seen = st.steps_completed * tpt
        # last, so that the state above is current even when a failed earlier write is
        # raised here; the files are encoded and written on the writer thread
        jobs = [f.snapshot().write for f in changed]
        if self.tb is not None and stop_at:
            jobs.append(functools.partial(self.tb.rows, cols))
        self.writer.submit(*jobs)
        return bool(bad.any())

    def _rewrite_jobs(self) -> list:
        """The writes of every metrics file that holds rows, whole (the error path)."""
        files = [self.metrics, *([self.param_log.file] if self.param_log else [])]
        return [f.snapshot().write for f in files if f.rows]

    def close(self) -> None:
        """Wait for the pending metrics write (raising its error) and stop the writer
        thread. `run` does this itself; code that drives `loop_step` directly (the
        benchmark) calls it when done."""
        try:
            self.writer.drain()
        finally:
            self.writer.close()

    # ---- the run --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t = self.t
        max_steps = int(t.max_steps)
        self.write_summary()
        log.info(
            "run %s: %s, %s params, device %s (%s), %d steps of %d tokens%s",
            self.run_dir, self.task.name, f"{count_parameters(self.model):,}", self.device,
            self.env["device_name"], max_steps, self.task.tokens_per_step,
            f", resumed at step {self.start_step}" if self.resumed_from else "",
        )
        progress = Progress(t.progress, max_steps, self.task.metric.name)
        previous = _install_signal_handlers(self)
        stopped_by: int | None = None
        try:
            with progress:
                self.model.train()
                self.times["first_step_at"] = time.time()
                for step in range(self.start_step, max_steps + 1):
                    if self.loop_step(step, max_steps):
                        break
                    if step % int(t.log_every) == 0 or step == max_steps:
                        progress.update(step, self.metrics, self.state)
                    if self.pending_signal is not None and step < max_steps:
                        # pre-emption or a time limit: save where we are, then stop
                        if self.buffer.n and self.end_window(step, max_steps):
                            break  # the partial window showed a divergence: a result
                        self.save_checkpoint(step)
                        stopped_by = self.pending_signal
                        break
            # the last hand-over on disk before anything is reported (a write's error
            # is raised here, and recorded below as the run's error)
            self.writer.drain()
            if stopped_by is not None:
                self.state.status = "interrupted"
                self.state.error = f"stopped by {signal.Signals(stopped_by).name} at step " \
                    f"{self.state.steps_completed}; checkpoint saved, resume continues there"
                self.write_summary()
            elif self.state.status == "running":
                self.state.status = "completed"
        except KeyboardInterrupt:
            self._flush_partial()
            self.state.status = "interrupted"
            self.state.error = "interrupted (Ctrl-C)"
            self.write_summary()
            raise
        except BaseException as e:
            self._flush_partial()
            self.state.status = "error"
            self.state.error = f"{type(e).__name__}: {e}"
            self.write_summary()
            raise
        finally:
            self.writer.close()
            _restore_signal_handlers(previous)
            if self.tb is not None:  # after the last rows; an ended run closes its session
                st = self.state
                self.tb.close(st.evals.get(st.steps_completed), st.steps_completed,
                              ended=st.status in TERMINAL)
        if stopped_by is not None:
            log.info("stopped by signal %s at step %d; checkpoint saved",
                     signal.Signals(stopped_by).name, self.state.steps_completed)
            # a handler installed before ours (submitit's, which requeues the job and
            # exits) gets the signal now that the checkpoint is safe
            handler = previous.get(stopped_by)
            if callable(handler):
                handler(stopped_by, None)
            raise Interrupted(stopped_by)
        # the final rows (and evaluation), fsynced, on this thread: the writer is closed
        self.metrics.write(durable=True)
        self.save_clip_state()
        (self.run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)  # the run is over
        summary = self.write_summary()
        log.info(summary_line(summary))
        return summary

    # ---- checkpoints ----------------------------------------------------------------
    def save_checkpoint(self, step: int) -> None:
        """Everything needed to continue after `step` (a flush boundary: the metrics file
        holds exactly the rows up to it, once the pending write has landed)."""
        self.writer.drain()
        st = self.state
        ckpt.save(self.run_dir / CHECKPOINT_FILE, {
            "step": step,
            "config": self.experiment_config(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict() if self.schedule is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "clip": self.clip.state_dict() if hasattr(self.clip, "state_dict") else None,
            "task": self.task.state_dict(),
            "rng": ckpt.rng_state(),
            "run": {
                "first_nonfinite_step": st.first_nonfinite_step,
                "steps_completed": st.steps_completed, "tokens_seen": st.tokens_seen,
                "skipped_steps": st.skipped_steps,
                "evals": {int(k): dict(v) for k, v in st.evals.items()},
                "initial_loss": self.initial_loss, "step_count": self.step_count,
                "elapsed": self.elapsed(), "eval_seconds": self.eval_seconds,
                "resumed_from": list(self.resumed_from),
                "metrics_rows": self.metrics.rows,
            },
        })
        self.checkpointed_at = step
        log.info("checkpoint at step %d", step)

    def experiment_config(self) -> dict[str, Any]:
        """The config that defines what is measured: a checkpoint of another is not ours."""
        return experiment_config(self.flat_config)

    def _restore(self, data: dict[str, Any]) -> None:
        """Continue from a checkpoint of this experiment (raises if it is not one)."""
        differ = differences(data["config"], self.experiment_config())
        if differ:  # the sweep's rule: options added since, switched off, are no change
            raise ckpt.CheckpointError(
                "the checkpoint belongs to another config ("
                + ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in differ[:3]) + ")")
        step, run = int(data["step"]), data["run"]
        rows = MetricsFile.read_upto(self.run_dir / "metrics.parquet", step)
        if rows is None or len(rows["step"]) != int(run["metrics_rows"]):
            raise ckpt.CheckpointError("metrics.parquet does not hold the checkpoint's rows")
        self.model.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        if self.schedule is not None and data["schedule"] is not None:
            self.schedule.load_state_dict(data["schedule"])
        if self.scaler is not None and data["scaler"] is not None:
            self.scaler.load_state_dict(data["scaler"])
        if data["clip"] is not None and hasattr(self.clip, "load_state_dict"):
            self.clip.load_state_dict(ckpt.to_device(data["clip"], self.device))
        self.task.load_state_dict(data["task"])
        self.metrics.load(rows)
        if self.param_log is not None:
            prows = MetricsFile.read_upto(self.param_log.file.path, step,
                                          self.param_log.file.schema)
            if prows is not None:
                self.param_log.file.load(prows)
        st = self.state
        st.first_nonfinite_step = run["first_nonfinite_step"]
        st.steps_completed, st.tokens_seen = int(run["steps_completed"]), int(run["tokens_seen"])
        st.skipped_steps = int(run["skipped_steps"])
        st.evals = {int(k): dict(v) for k, v in run["evals"].items()}
        self.initial_loss = run["initial_loss"]
        self.step_count = int(run["step_count"])
        self.t_start = time.perf_counter() - float(run["elapsed"])
        self.eval_seconds = float(run["eval_seconds"])
        self.resumed_from = [*run["resumed_from"], step]
        self.checkpointed_at = step
        self.start_step = step + 1
        ckpt.set_rng_state(data["rng"])  # last: building the objects above drew from it
        log.info("resuming from the checkpoint at step %d", step)

    def loop_step(self, step: int, max_steps: int) -> bool:
        """Step `step` of the run: train, a due evaluation, and the flush that ends a
        window; True when the run must stop (it diverged). `seqbench bench` times exactly
        this, so the benchmark measures the loop a run executes."""
        self.step()
        if self.buffer.n == 1:
            # the previous flush's write ran beside this step; it lands before the run
            # goes further, so a kill never loses more than one window (seqbench.writer)
            self.writer.drain()
        every = self.t.eval_every
        if every and step % every == 0 and step != max_steps:
            self.evaluate(step)
        return (self.buffer.full or step == max_steps) and self.end_window(step, max_steps)

    def save_clip_state(self) -> None:
        """A stateful clipper's state (history, EMA, threshold) goes with the run."""
        if hasattr(self.clip, "state_dict"):
            ckpt.write_tensors(self.run_dir / "clip_state.pt", self.clip.state_dict())

    def evaluate(self, step: int) -> None:
        t0 = time.perf_counter()
        self.state.evals[step] = self.task.evaluate(self.model, self.t.eval_batches)
        self.eval_seconds += time.perf_counter() - t0

    def end_window(self, step: int, max_steps: int) -> bool:
        """Flush the buffered steps; True when the run must stop here (it diverged)."""
        st = self.state
        if self.flush(st.steps_completed + 1):
            if self.policy == "raise" and st.divergence == "nonfinite":
                raise NonFiniteError(
                    f"non-finite loss or gradient at step {st.first_nonfinite_step} "
                    f"({self.policy_source})"
                )
            st.status = "diverged"
            return True
        if step == max_steps:  # the final evaluation
            self.evaluate(step)
            if hasattr(self.task, "success"):  # e.g. error rate on fresh test sequences
                t0 = time.perf_counter()
                self.success = self.task.success(self.model)
                self.eval_seconds += time.perf_counter() - t0
            self.metrics.set_last(**{k: v for k, v in st.evals[step].items()
                                     if k in EVAL_COLUMNS})
        else:
            every = int(self.t.checkpoint_every)
            if every and step - self.checkpointed_at >= every:
                self.save_checkpoint(step)
            if time.perf_counter() - self.summary_written >= SUMMARY_EVERY_S:
                self.write_summary()  # progress for a reader; the metrics file is per flush
        return False

    def _flush_partial(self) -> None:
        """After an error or Ctrl-C: every row in memory to disk, as far as that still works.

        Without buffered steps the whole files are handed over again, since the last
        hand-over may have been cut short (the error raised by `submit` was the previous
        write's, or Ctrl-C came while waiting for it); after a failure, once more. A failure
        here is logged, not raised: summary.json records the error that ended the run."""
        try:
            if self.buffer.n:
                self.flush(self.state.steps_completed + 1)
            else:
                self.writer.submit(*self._rewrite_jobs())
            self.writer.drain()
            return
        except Exception as e:
            log.warning("writing the last metrics rows failed (%s: %s); trying again",
                        type(e).__name__, e)
        try:
            self.writer.submit(*self._rewrite_jobs())
            self.writer.drain()
        except Exception as e:
            log.error("the metrics files lack the last rows: %s: %s", type(e).__name__, e)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    # ---- summary --------------------------------------------------------------------
    def write_summary(self) -> dict[str, Any]:
        st = self.state
        losses = self.metrics.column("train_loss")
        pre = self.metrics.column("grad_norm_pre")
        clipped = self.metrics.column("clipped")
        finished = st.status == "completed"
        window = losses[-int(self.t.log_every):]
        window = window[np.isfinite(window)]
        last_eval = st.evals.get(st.steps_completed) if finished else None
        before = [e for s, e in st.evals.items() if s <= st.steps_completed]
        metric = self.task.metric
        scores = [e["val_metric"] for e in before if np.isfinite(e.get("val_metric", np.nan))]
        bpcs = [e["val_bpc"] for e in before if np.isfinite(e.get("val_bpc", np.nan))]
        best = (min if metric.lower_is_better else max)(scores) if scores else None
        train_s = self.elapsed() - self.eval_seconds
        # a stateful clipper (e.g. a calibrated threshold) reports its state once, at the end
        ended = st.status != "running"
        clip_info = self.clip.summary() if ended and hasattr(self.clip, "summary") else None
        if ended:
            self.times["ended_at"] = time.time()
        summary = {
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
                               self.baseline["val_metric"], metric.lower_is_better),
            "baseline_val_metric": self.baseline["val_metric"],
            "baseline": self.baseline["description"],
            "baseline_val_loss": self.baseline.get("val_loss"),
            # the loss at initialization (the first step's training loss): the reference
            # a diverged run counts at in the report's LR sensitivity
            "initial_loss": self.initial_loss,
            # whether the task's stated success criterion was met (null: none, or not run)
            "task_success": self.success.get("task_success") if self.success else None,
            "task_metrics": self.success or None,
            "grad_norm_pre": grad_norm_stats(pre),
            "clip_fraction": float(clipped.mean()) if clipped.size else None,
            "skipped_steps": st.skipped_steps,
            "wall_seconds": self.elapsed(),
            "train_seconds": train_s,
            # this process's own instants: created, first step, summary of the end
            "timing": dict(self.times),
            "tokens_per_second": st.tokens_seen / train_s if train_s > 0 else None,
            "clip": clip_info,
            "resumed_from": self.resumed_from,
            "task": self.task.describe(),
            "parameters": count_parameters(self.model),
            "frozen": self.frozen,
            "config": self.flat_config,
            "env": self.env,
            "error": st.error,
        }
        write_json(self.run_dir / "summary.json", summary, durable=ended)
        self.summary_written = time.perf_counter()
        return summary


def summary_line(s: dict[str, Any]) -> str:
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


# SIGTERM: SLURM's pre-emption, scancel and time limit; SIGUSR1/SIGUSR2: the early
# warning clusters send on request (`sbatch --signal`); submitit asks for SIGUSR2.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def _install_signal_handlers(trainer: Trainer) -> dict[int, Any]:
    """The handler only records the signal: the loop checkpoints at the end of the
    current step (state mid-step is not worth saving) and then stops."""

    def handler(signum, frame):
        trainer.pending_signal = signum

    previous = {}
    for sig in STOP_SIGNALS:
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not in the main thread (e.g. a joblib worker thread)
            return previous
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(sig, handler)


def _slurm_cpus() -> int:
    """Under SLURM with task/none, `-c N` does not limit torch's threads: use N."""
    try:
        return max(0, int(os.environ.get("SLURM_CPUS_PER_TASK", "0")))
    except ValueError:
        return 0


class Progress:
    """A rich progress bar on a terminal, plain log lines at each flush otherwise."""

    def __init__(self, mode: str, total: int, metric: str):
        self.metric = metric
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        self.mode, self.total = mode, total
        self.bar = None

    def __enter__(self):
        if self.mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            )
            self.bar.__enter__()
            self.task_id = self.bar.add_task("train", total=self.total, info="")
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False

    def update(self, step: int, metrics: MetricsFile, state: RunState) -> None:
        loss = metrics.column("train_loss")[-1]
        pre = metrics.column("grad_norm_pre")[-1]
        info = f"loss {loss:.3f} |g| {pre:.3g}"
        if state.evals:  # the latest evaluation, with the step it was taken at
            at = max(state.evals)
            info += f" val_{self.metric} {state.evals[at]['val_metric']:.4g} (step {at})"
        if self.bar is not None:
            self.bar.update(self.task_id, completed=step, info=info)
        elif self.mode == "log":
            log.info("step %d/%d %s", step, self.total, info)


def train(cfg: DictConfig, run_dir: Path | str) -> dict[str, Any]:
    return Trainer(cfg, Path(run_dir)).run()

