"""The training loop: one run, from a validated config to summary.json.

Per optimizer step: forward/backward over `accum_steps` micro-batches -> [fp16: unscale]
-> pre-clip global L2 norm -> clip -> optimizer step. Per-step numbers stay on the
device; every `log_every` steps one host read flushes them to metrics.parquet (encoded
and written on a background thread: seqbench.writer) and checks the non-finite and
explosion flags, so a divergence is found at its exact step without a host sync per
step. Divergence is a result: the run ends `diverged` and returns normally. Only an
unexpected error is an error, and it is written to summary.json before it propagates.

The Trainer reads in the order a run executes: set-up, `run`, then one step
(`loop_step` -> `step` -> `flush` -> `end_window`). What the loop records lives beside
it, so that this file stays the loop: seqbench.summary (summary.json from the run's
state), seqbench.checkpoint (capture and restore), seqbench.metrics (the device buffer,
the flags and the files), seqbench.progress (the bar or log lines).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from seqbench import checkpoint as ckpt
from seqbench import fork
from seqbench.clipping import build_clipper, global_norm
from seqbench.config import flat, frozen_names
from seqbench.data.tasks import HasSuccess, Task, build_task
from seqbench.metrics import (
    EVAL_COLUMNS,
    METRICS_SCHEMA,
    MetricsFile,
    ParamLog,
    StepBuffer,
    env_info,
    step_flags,
    window_columns,
)
from seqbench.models import count_parameters
from seqbench.optim import build_optimizer, build_schedule
from seqbench.process import (
    Interrupted,
    catch_stop_signals,
    resolve_device,
    restore_handlers,
    seed_everything,
    torch_threads,
)
from seqbench.progress import Progress
from seqbench.rundir import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    PARAM_METRICS_FILE,
    SUMMARY_FILE,
    TERMINAL,
    experiment_config,
    write_json,
)
from seqbench.smoothness import SMOOTHNESS_FILE, SmoothnessProbe
from seqbench.spike import SPIKE_COLUMN, SPIKE_FIELD, SpikePlan
from seqbench.summary import RunState, summarize, summary_line
from seqbench.tblog import TensorBoardLog
from seqbench.writer import MetricsWriter

log = logging.getLogger("seqbench.train")


# A running run's summary.json (status, steps so far) is rewritten at a flush at most this
# often: at every flush it cost ~1.5 ms, 2% of a small CPU model's step time.
SUMMARY_EVERY_S = 2.0


class NonFiniteError(RuntimeError):
    """Raised under on_nonfinite=raise: the run is recorded as an error."""


class Trainer:
    # what a run writes into its directory: a fresh start removes an earlier run's, so
    # a replaced run (--force) never leaves a file of another experiment beside this one's
    RUN_FILES = (SUMMARY_FILE, METRICS_FILE, PARAM_METRICS_FILE, SMOOTHNESS_FILE,
                 "clip_state.pt")

    def __init__(self, cfg: DictConfig, run_dir: Path, task: Task | None = None):
        # wall-clock instants (Unix time) for the sweep benchmark's per-job overhead
        self.times: dict[str, float | None] = {"created_at": time.time(),
                                               "first_step_at": None, "ended_at": None}
        self.cfg, self.run_dir = cfg, Path(run_dir)
        # plain Python values: an OmegaConf attribute read costs ~20-40 us, several a step
        t = self.t = SimpleNamespace(**OmegaConf.to_container(cfg.trainer, resolve=True))
        t.init_from = getattr(t, "init_from", None)
        # a fork never runs in its parent's directory: its start would replace the parent
        problem = fork.own_dir_error(t.init_from, self.run_dir)
        if problem is not None:
            raise problem
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.flat_config = flat(cfg)  # ~0.5 ms to build; summary.json is written per flush
        self.task_given = task
        # metrics.parquet and param_metrics.parquet are encoded and written off this
        # thread, at most one write pending (seqbench.writer states what a kill loses)
        self.writer = MetricsWriter()
        self._build()
        # the input-independent score to beat, on exactly the validation data evaluate()
        # scores: a run that ends no better did not learn (seqbench.outcome)
        self.baseline = self.task.baseline(int(t.eval_batches))
        path = self.run_dir / CHECKPOINT_FILE
        if t.resume == "auto" and path.exists():
            try:
                ckpt.restore(self, ckpt.load(path))
                log.info("resuming from the checkpoint at step %d", self.checkpointed_at)
            except (ckpt.CheckpointError, KeyError, ValueError, RuntimeError, TypeError) as e:
                log.warning("not resuming: %s; starting at step 1", e)
                path.unlink(missing_ok=True)
                self._build()  # fresh objects, seeded as a run that never stopped
        elif path.exists():
            path.unlink()  # resume=never: start over
        resumed = bool(self.state.resumed_from)
        if not resumed and t.init_from is not None:
            # a fork: the parent's kept checkpoint (seqbench.fork); its directory is only
            # read, and a resumed fork continues from its own checkpoint above instead
            ckpt.start_fork(self, fork.find(t.init_from))
            log.info("starting from %s at step %d", self.state.parent["dir"],
                     self.state.steps_completed)
        if not resumed:
            for name in self.RUN_FILES:
                (self.run_dir / name).unlink(missing_ok=True)
            fork.remove_kept(self.run_dir)  # the replaced run's kept checkpoints
            for events in self.run_dir.glob("events.out.tfevents.*"):
                events.unlink()
        # TensorBoard (trainer.tensorboard): a resumed run's new event file tells
        # TensorBoard to drop the old one's steps after the checkpoint (purge_step)
        self.tb = TensorBoardLog(self.run_dir, self.experiment_config(),
                                 self.task.metric.name,
                                 purge_step=self.start_step if resumed else None
                                 ) if getattr(t, "tensorboard", False) else None

    def _build(self) -> None:
        """Seed, data, model, optimizer, clipper and run state, as at step 0."""
        t, cfg, task = self.t, self.cfg, self.task_given
        torch.set_num_threads(torch_threads(t.threads))
        seed_everything(int(cfg.seed), bool(t.deterministic))
        self.device = resolve_device(t.device)
        if self.device.type == "cpu":
            torch.set_flush_denormal(bool(t.flush_denormal))
        self.task: Task = task if task is not None else build_task(cfg.task)
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
        # trainer.spike: the disturbed steps, known here (seqbench.spike); None: off
        self.spike = SpikePlan.for_run(getattr(t, "spike", None), int(cfg.seed))
        self.metrics = MetricsFile(self.run_dir / METRICS_FILE,
                                   METRICS_SCHEMA.append(SPIKE_FIELD) if self.spike
                                   else METRICS_SCHEMA)
        self.host_spike: list[str | None] = []  # per step since the last flush (spike on)
        # trainer.keep_checkpoints: a flush, then checkpoint-STEP.pt, at these steps
        self.keep_at = frozenset(int(s) for s in getattr(t, "keep_checkpoints", ()))
        self.state = RunState()
        self.host_lr: list[float] = []  # per step since the last flush, on the host
        self.host_wall: list[float] = []
        self.t_start = time.perf_counter()
        self.summary_written = 0.0
        every = int(t.param_log_every)
        self.param_log = ParamLog(
            self.run_dir / PARAM_METRICS_FILE, every,
            {id(p): n for n, p in self.named_params},
        ) if every > 0 else None
        self.smooth = SmoothnessProbe.for_run(self)  # trainer.smoothness_every; None: off
        self.env = env_info(self.device)
        self.step_count = 0
        self.checkpointed_at = 0
        self.pending_signal: int | None = None
        self.start_step = 1

    # ---- the run --------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        max_steps = int(self.t.max_steps)
        self.write_summary()
        log.info(
            "run %s: %s, %s params, device %s (%s), %d steps of %d tokens%s",
            self.run_dir, self.task.name, f"{count_parameters(self.model):,}", self.device,
            self.env["device_name"], max_steps, self.tokens_per_step,
            f", resumed at step {self.start_step}" if self.state.resumed_from else "",
        )

        def record(signum: int) -> None:  # the loop stops, checkpointed, after this step
            self.pending_signal = signum

        previous = catch_stop_signals(record)
        st = self.state
        try:
            stopped_by = self._train(max_steps)
            # the last hand-over on disk before anything is reported (a write's error
            # is raised here, and recorded below as the run's error)
            self.writer.drain()
            if stopped_by is not None:
                st.status = "interrupted"
                st.error = f"stopped by {signal.Signals(stopped_by).name} at step " \
                    f"{st.steps_completed}; checkpoint saved, resume continues there"
                self.write_summary()
            elif st.status == "running":
                st.status = "completed"
        except BaseException as e:  # Ctrl-C included: recorded, then raised again
            self._flush_partial()
            st.status = "interrupted" if isinstance(e, KeyboardInterrupt) else "error"
            st.error = "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) \
                else f"{type(e).__name__}: {e}"
            self.write_summary()
            raise
        finally:
            self.writer.close()
            restore_handlers(previous)
            if self.tb is not None:  # after the last rows; an ended run closes its session
                self.tb.close(st.evals.get(st.steps_completed), st.steps_completed,
                              ended=st.status in TERMINAL)
        if stopped_by is not None:
            log.info("stopped by signal %s at step %d; checkpoint saved",
                     signal.Signals(stopped_by).name, st.steps_completed)
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

    def _train(self, max_steps: int) -> int | None:
        """The steps from `start_step` on; the signal that stopped them, if one did."""
        with Progress(self.t.progress, max_steps, self.task.metric.name) as progress:
            self.model.train()
            self.times["first_step_at"] = time.time()
            for step in range(self.start_step, max_steps + 1):
                if self.loop_step(step, max_steps):
                    return None  # diverged: a result
                if self.buffer.n == 0:  # a flush just wrote this step's row: report it
                    progress.update(step, self.metrics, self.state)
                if self.pending_signal is not None and step < max_steps:
                    # pre-emption or a time limit: save where we are, then stop
                    if self.buffer.n and self.end_window(step, max_steps):
                        return None  # the partial window showed a divergence: a result
                    self.save_checkpoint(step)
                    return self.pending_signal
        return None

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
        return (self.buffer.full or step == max_steps or step in self.keep_at) \
            and self.end_window(step, max_steps)

    # ---- one step, on the device ----------------------------------------------------
    def step(self) -> None:
        """One optimizer step; records its numbers into the device buffer, no host read."""
        # trainer.spike's disturbance of this step, if any (a host-side lookup)
        spike = self.spike.get(self.step_count + 1) if self.spike is not None else None
        if spike is not None and spike.corrupt:  # this step reads random tokens
            self.task.corrupt(self.spike.generator(self.step_count + 1))
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
        if spike is not None and spike.grad_factor is not None:  # before clipping
            torch._foreach_mul_(grads, spike.grad_factor)
        pre = global_norm(grads, 2.0)
        plog = self.param_log if self.param_log and self.param_log.active(self.step_count) \
            else None
        if plog:
            plog.before_clip(self.step_count, params, grads)
        post, clipped = self.clip(params, grads, pre)
        if plog:
            plog.before_update(grads)
        probe = self.smooth if self.smooth and self.smooth.active(self.step_count) else None
        if probe:
            probe.before_update()
        if spike is not None and spike.lr_factor is not None:
            groups = self.optimizer.param_groups
            lrs = [g["lr"] for g in groups]
            for g in groups:
                g["lr"] = g["lr"] * spike.lr_factor
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
        if probe:  # L̂ along the update just applied; leaves parameters and RNGs as they are
            probe.after_update(self.step_count)
        self.host_lr.append(self.optimizer.param_groups[0]["lr"])
        if spike is not None and spike.lr_factor is not None:
            for g, lr in zip(groups, lrs):
                g["lr"] = lr  # the value itself back, never divided
        if self.spike is not None:
            self.host_spike.append(None if spike is None else spike.label)
        if self.schedule is not None:
            self.schedule.step()
        # Only the four raw numbers go to the buffer; the flags (non-finite, exploded,
        # skipped) are derived from them on the host at the flush, so they cost no
        # kernels here.
        self.buffer.record(loss, pre, post, clipped)
        self.host_wall.append(time.perf_counter() - self.t_start)

    # ---- the window's end, on the host ----------------------------------------------
    def flush(self, first_step: int) -> bool:
        """Write buffered steps; return True when the run must stop (diverged).

        The window's one host read. A divergence ends the rows at its step: the steps
        the device ran after it (up to a window's worth) belong to no run."""
        st, rows = self.state, self.buffer.drain()
        loss = rows["train_loss"]
        steps = np.arange(first_step, first_step + len(loss), dtype=np.int64)
        if st.initial_loss is None and loss.size:
            st.initial_loss = float(loss[0])
        factor = self.t.explode_factor
        f = step_flags(loss, rows["grad_norm_pre"], amp=self.scaler is not None,
                       skip=self.policy == "skip",
                       explode_above=None if factor is None or st.initial_loss is None
                       else factor * st.initial_loss)
        if st.first_nonfinite_step is None and f["nonfinite"].any():
            first = int(np.argmax(f["nonfinite"]))
            # under fp16 a finite loss with non-finite gradients is GradScaler's skip
            if self.scaler is None or not np.isfinite(loss[first]):
                st.first_nonfinite_step = int(steps[first])
        bad = f["diverging"] | f["exploded"]
        stop_at = len(steps)
        if bad.any():
            i = int(np.argmax(bad))
            stop_at = i + 1
            st.divergence = "nonfinite" if f["diverging"][i] else "exploded"
            st.divergence_step = int(steps[i])
            if st.divergence == "nonfinite":
                st.first_nonfinite_step = int(steps[i])
        cols = window_columns(steps[:stop_at], rows, f, self.host_lr, self.host_wall,
                              self.tokens_per_step, st.evals)
        if self.spike is not None:
            cols[SPIKE_COLUMN] = np.array(self.host_spike[:stop_at], dtype=object)
        self.host_lr, self.host_wall, self.host_spike = [], [], []
        changed = [self.metrics] if self.metrics.add(cols) else []
        last = int(steps[stop_at - 1]) if stop_at else first_step - 1
        changed += [x.file for x in (self.param_log, self.smooth) if x and x.flush(last)]
        st.skipped_steps += int(f["skipped"][:stop_at].sum())
        st.steps_completed = int(steps[stop_at - 1]) if stop_at else st.steps_completed
        st.tokens_seen = st.steps_completed * self.tokens_per_step
        # last, so that the state above is current even when a failed earlier write is
        # raised here; the files are encoded and written on the writer thread
        jobs = [f.snapshot().write for f in changed]
        if self.tb is not None and stop_at:
            jobs.append(functools.partial(self.tb.rows, cols))
        self.writer.submit(*jobs)
        return bool(bad.any())

    def end_window(self, step: int, max_steps: int) -> bool:
        """Flush the buffered steps; True when the run must stop here (it diverged).
        Then the last step's final evaluation, or a due checkpoint and summary."""
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
            if isinstance(self.task, HasSuccess):  # e.g. error rate on fresh sequences
                t0 = time.perf_counter()
                st.success = self.task.success(self.model)
                st.eval_seconds += time.perf_counter() - t0
            self.metrics.set_last(**{k: v for k, v in st.evals[step].items()
                                     if k in EVAL_COLUMNS})
        else:
            every = int(self.t.checkpoint_every)
            if every and step - self.checkpointed_at >= every:
                self.save_checkpoint(step)
            if time.perf_counter() - self.summary_written >= SUMMARY_EVERY_S:
                self.write_summary()  # progress for a reader; the metrics file is per flush
        if step in self.keep_at:  # a point other runs can start from (seqbench.fork)
            ckpt.save(self.run_dir / fork.kept_name(step), ckpt.capture_kept(self, step))
            log.info("kept the checkpoint at step %d", step)
        return False

    def evaluate(self, step: int) -> None:
        t0 = time.perf_counter()
        self.state.evals[step] = self.task.evaluate(self.model, self.t.eval_batches)
        self.state.eval_seconds += time.perf_counter() - t0

    # ---- what the run leaves behind -------------------------------------------------
    def save_checkpoint(self, step: int) -> None:
        """A checkpoint at `step`, a flush boundary, once the pending write has landed
        (the metrics file must hold exactly the checkpoint's rows)."""
        self.writer.drain()
        ckpt.save(self.run_dir / CHECKPOINT_FILE, ckpt.capture(self, step))
        self.checkpointed_at = step
        log.info("checkpoint at step %d", step)

    def experiment_config(self) -> dict[str, Any]:
        """The config that defines what is measured: a checkpoint of another is not ours."""
        return experiment_config(self.flat_config)

    def write_summary(self) -> dict[str, Any]:
        """summary.json now; fsynced once the run has ended."""
        ended = self.state.status != "running"
        # a stateful clipper (e.g. a calibrated threshold) reports its state once, at the end
        clip = self.clip.summary() if ended and hasattr(self.clip, "summary") else None
        if ended:
            self.times["ended_at"] = time.time()
        summary = summarize(
            self.state, self.metrics, log_every=int(self.t.log_every),
            metric=self.task.metric, baseline=self.baseline, elapsed=self.elapsed(),
            timing=self.times, clip=clip, task=self.task.describe(),
            parameters=count_parameters(self.model), frozen=self.frozen,
            config=self.flat_config, env=self.env,
            smoothness=self.smooth.file if self.smooth else None,
            spike=self.spike.summary(self.state.steps_completed) if self.spike else None)
        write_json(self.run_dir / SUMMARY_FILE, summary, durable=ended)
        self.summary_written = time.perf_counter()
        return summary

    def save_clip_state(self) -> None:
        """A stateful clipper's state (history, EMA, threshold) goes with the run."""
        if hasattr(self.clip, "state_dict"):
            ckpt.write_tensors(self.run_dir / "clip_state.pt", self.clip.state_dict())

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def _flush_partial(self) -> None:
        """After an error or Ctrl-C: the buffered steps, else every file whole again."""
        first = functools.partial(self.flush, self.state.steps_completed + 1) \
            if self.buffer.n else lambda: self.writer.submit(*self._rewrite_jobs())
        self.writer.salvage(first, self._rewrite_jobs)

    def _rewrite_jobs(self) -> list:
        """The writes of every metrics file that holds rows, whole (the error path)."""
        files = [self.metrics, *(x.file for x in (self.param_log, self.smooth) if x)]
        return [f.snapshot().write for f in files if f.rows]

    def close(self) -> None:
        """Wait for the pending metrics write (raising its error) and stop the writer
        thread. `run` does this itself; code that drives `loop_step` directly (the
        benchmark) calls it when done."""
        try:
            self.writer.drain()
        finally:
            self.writer.close()


def train(cfg: DictConfig, run_dir: Path | str) -> dict[str, Any]:
    return Trainer(cfg, Path(run_dir)).run()
