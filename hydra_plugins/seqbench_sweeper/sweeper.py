"""The `seqbench` Hydra sweeper: union of grids, validate all, skip finished, report.

Selected by `hydra/sweeper=seqbench` (the sweep presets in conf/sweep/ do this). It
expands the preset's grids (`hydra.sweeper.grids`), composes and validates every job
before launching any (exit 2 listing the invalid ones), refuses (exit 2) when a job's
directory holds a run of another experiment unless `force`, skips jobs that already ended
for the same config (looking in `reuse_dir` too, the preset's directory before sweep
directories were keyed by their globals), launches the rest through whichever Hydra
launcher is configured, shows one progress bar over the whole sweep, and writes the
report at the end. Under submitit with `hydra.launcher.runs_per_gpu=K` (K > 1) it sends
the jobs in bundles of K, one array task per bundle (seqbench/bundles.py).
"""

# No `from __future__ import annotations` here: Hydra imports plugin modules without
# registering them in sys.modules, and dataclasses then cannot resolve string annotations.
import hashlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

import seqbench.sweep as sw
from seqbench import bundles
from seqbench.errors import one_line
from seqbench.jobconfigs import JobConfigs

log = logging.getLogger("seqbench.sweep")
#: The "job" an error of the grids themselves is listed under (no job exists yet).
GRIDS_ERROR = "the preset's grids"


@dataclass
class SeqbenchSweeperConf:
    _target_: str = "hydra_plugins.seqbench_sweeper.sweeper.SeqbenchSweeper"
    preset: str = "sweep"
    # list of grids: each maps an override key to a value or a list of values
    grids: list[Any] = field(default_factory=list)
    force: bool = False  # re-run finished jobs too, and replace runs of other experiments
    dry_run: bool = False  # list the jobs and launch nothing
    max_batch_size: int | None = None  # jobs per launcher call; null: chosen per launcher
    report: bool = True
    report_dir: str | None = None  # null: reports/<name of the sweep directory>
    # where finished runs of the same experiments may already be (runs/<preset> when the
    # sweep directory is keyed by globals); they are copied in instead of re-run
    reuse_dir: str | None = None


ConfigStore.instance().store(group="hydra/sweeper", name="seqbench", node=SeqbenchSweeperConf,
                             provider="seqbench")


class SeqbenchSweeper(Sweeper):
    def __init__(self, preset: str, grids: list, force: bool, dry_run: bool,
                 max_batch_size: int | None, report: bool, report_dir: str | None,
                 reuse_dir: str | None = None):
        self.preset, self.force, self.dry_run = preset, force, dry_run
        self.grids = [OmegaConf.to_container(g, resolve=True) if OmegaConf.is_config(g) else g
                      for g in grids]
        self.max_batch_size, self.report, self.report_dir = max_batch_size, report, report_dir
        self.reuse_dir = Path(reuse_dir) if reuse_dir else None
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None
        # runs_per_gpu > 1: each job's GPU memory (MiB), and why K cannot be used
        self.memory: dict[str, float] = {}
        self.k_problem: str | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from seqbench.config import ensure_registered

        # every job is composed and validated here, against the schemas and the plugins'
        # options: Hydra may run this sweeper from a process that is not the CLI's
        ensure_registered()
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # ---- planning -------------------------------------------------------------------
    def _launcher_kind(self) -> str:
        # the class and its module: hydra-submitit-launcher's classes are SlurmLauncher and
        # LocalLauncher, only their module says "submitit"
        cls = type(self.launcher)
        return f"{cls.__module__}.{cls.__name__}".lower()

    def _k(self) -> int:
        """`hydra.launcher.runs_per_gpu` where the launcher has it and it is usable, else 1
        (a bad value is reported after planning, by `_bundle_problem`)."""
        k = self.config.hydra.launcher.get("runs_per_gpu", 1)
        ok = isinstance(k, int) and not isinstance(k, bool) and k > 1
        return k if ok and "submitit" in self._launcher_kind() else 1

    def _bundle_problem(self, n_jobs: int) -> str | None:
        launcher = self.config.hydra.launcher
        if "runs_per_gpu" not in launcher:
            return None
        memory = launcher.get("gpu_memory_gib", bundles.DEFAULT_GPU_MEMORY_GIB)
        return (bundles.k_error(launcher.runs_per_gpu, n_jobs) or bundles.memory_error(memory)
                or (bundles.fit_error(self._k(), self.memory, memory) if self._k() > 1
                    else None))

    def _extra_overrides(self, cli: dict) -> list[str]:
        """Split the CPU between parallel local jobs (joblib): threads = cores / n_jobs;
        between the runs of a bundle (runs_per_gpu K): threads = cpus_per_task // K."""
        if self._k() > 1 and "trainer.threads" not in cli:
            cpus = self.config.hydra.launcher.get("cpus_per_task")
            return [f"trainer.threads={bundles.threads_per_run(cpus, self._k())}"]
        if "joblib" not in self._launcher_kind() or "trainer.threads" in cli:
            return []
        cores = os.cpu_count() or 1
        n_jobs = int(self.config.hydra.launcher.get("n_jobs", -1) or -1)
        n_jobs = cores if n_jobs < 1 else min(n_jobs, cores)
        return [f"trainer.threads={max(1, cores // n_jobs)}"]

    def plan(self, arguments: list[str]):
        """(jobs to launch, jobs already finished, error lines, conflicts, reused), all jobs
        composed. Nothing is written here except reused runs (copies of finished runs of
        the same experiments), and only when there is no error and no conflict."""
        from seqbench.config import flatten, validate
        from seqbench.errors import ConfigError, ConfigErrors
        from seqbench.hydra_input import explain_hydra_error

        try:
            cli = sw.split_cli_overrides(arguments)
        except Exception as e:  # a malformed override or an unsupported sweep
            return [], [], [("command line", f"overrides: {str(e).splitlines()[0]}")], [], 0
        try:
            jobs = sw.expand(self.grids, cli)
        except ValueError as e:  # linked settings that are not mappings
            return [], [], [(GRIDS_ERROR, f"hydra.sweeper.grids.{e}")], [], 0
        extra = self._extra_overrides(cli)
        configs = JobConfigs(self.hydra_context.config_loader, self.config)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        todo, done, errors, seen, cache = [], [], [], set(), {}
        conflicts, reusable = [], []
        for job in jobs:
            overrides = [*job.overrides, *extra]
            try:
                cfg = configs(overrides)  # Hydra composes once per set of group choices
                # each distinct task and model is built once
                resolved = validate(cfg, cache=cache)
            except ConfigErrors as e:
                errors += [(job.name, str(x)) for x in e.errors]
                continue
            except ConfigError as e:
                errors.append((job.name, str(e)))
                continue
            except Exception as e:
                line = explain_hydra_error(e, overrides)
                if line is None:
                    raise
                errors.append((job.name, line))
                continue
            config = flatten(resolved)
            # a digest, not the text: 16 bytes a job instead of ~2 KB keeps memory flat
            identity = hashlib.blake2b(sw.config_identity(config).encode(),
                                       digest_size=16).digest()
            if identity in seen:  # another grid already has this exact experiment
                continue
            seen.add(identity)
            if self._k() > 1:  # what K of them would need on one GPU
                self.memory[job.name] = bundles.run_memory_mib(cfg, resolved, cache)
            job = sw.Job(job.name, tuple(overrides))
            job_dir = sweep_dir / job.name
            finished, clash = sw.job_state(job_dir, config)  # one read of summary.json
            if not self.force and finished:
                done.append(job)
                continue
            if clash is not None and not self.force:
                conflicts.append(clash)
            elif (not self.force and self.reuse_dir is not None and not job_dir.exists()
                  and sw.finished(self.reuse_dir / job.name, config)):
                reusable.append((job, config))
            else:
                todo.append(job)
        if not errors:  # runs_per_gpu: checked before anything is written
            self.k_problem = self._bundle_problem(len(todo) + len(done) + len(reusable))
        reused = 0
        if not errors and not conflicts and not self.k_problem and not self.dry_run:
            for job, config in reusable:
                reused += sw.reuse(self.reuse_dir / job.name, sweep_dir / job.name, config)
        if self.dry_run:
            reused = len(reusable)
        done += [job for job, _ in reusable]
        return todo, done, errors, conflicts, reused

    # ---- running --------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        t0 = time.perf_counter()
        todo, done, errors, conflicts, reused = self.plan(arguments)
        if conflicts and not errors:
            how = ("run the sweep into another directory (hydra.sweep.dir=DIR) or replace "
                   "it with --force")
            for line in sw.conflict_lines(conflicts, how):
                print(f"seqbench: error: {one_line(line)}", file=sys.stderr)
            print(f"seqbench: error: {len(conflicts)} job(s) would overwrite runs of other "
                  "experiments; nothing was launched", file=sys.stderr)
            raise SystemExit(2)
        if errors:
            for line in _group_errors(errors):  # a value's newline must not split a line
                print(f"seqbench: error: {one_line(line)}", file=sys.stderr)
            n_jobs = len({job for job, _ in errors})
            what = ("the grids cannot be expanded" if errors[0][0] == GRIDS_ERROR
                    else f"{n_jobs} invalid job(s)")
            print(f"seqbench: error: {what}; nothing was launched",
                  file=sys.stderr)
            raise SystemExit(2)
        if self.k_problem:
            print(f"seqbench: error: {one_line(self.k_problem)}", file=sys.stderr)
            raise SystemExit(2)
        outcome = sw.SweepOutcome(jobs=len(todo) + len(done), skipped=len(done))
        sw.LAST_OUTCOME = outcome
        sweep_dir = Path(self.config.hydra.sweep.dir)
        print(f"sweep {self.preset}: {outcome.jobs} jobs ({len(done)} already finished), "
              f"validated in {time.perf_counter() - t0:.1f} s; runs in {sweep_dir}/", flush=True)
        k = self._k()
        if k > 1:
            need = sum(sorted(self.memory.values(), reverse=True)[:k]) / 1024
            threads = bundles.threads_per_run(self.config.hydra.launcher.get("cpus_per_task"), k)
            n = -(-len(todo) // k)
            print(f"  {k} runs per GPU: {n} array task{'s' if n != 1 else ''}, each running "
                  f"up to {k} runs side by side ({threads} thread{'s' if threads > 1 else ''} a "
                  f"run, about {need:.1f} GiB of GPU memory a task)", flush=True)
        if reused:
            print(f"  {reused} of them {'would be' if self.dry_run else 'were'} copied from "
                  f"{self.reuse_dir}/ (the same experiments, run before)", flush=True)
        if self.dry_run:
            for job in todo:
                print(f"  {job.name}")
            return []
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        sw.write_sweep_file(sweep_dir, self.preset, arguments)
        batch = self.max_batch_size or self._default_batch(len(todo))
        if k > 1:  # whole bundles per launcher call (submitit: one job array for all)
            batch = -(-batch // k) * k
        returns = []
        with SweepProgress(len(todo)) as progress:
            for start in range(0, len(todo), batch):
                chunk = todo[start:start + batch]
                overrides = [[*j.overrides, f"hydra.sweep.subdir='{j.name}'"] for j in chunk]
                results = self._launch(overrides, start, k)
                returns.append(results)
                for job, ret in zip(chunk, results):
                    self._count(outcome, sweep_dir / job.name, job, ret)
                progress.update(outcome)
        print(f"sweep {self.preset}: {outcome.line()} in {time.perf_counter() - t0:.0f} s",
              flush=True)
        for line in outcome.errors:
            print(f"  error: {line}", file=sys.stderr)
        if self.report:
            self._report(sweep_dir, outcome)
        return returns

    def _launch(self, overrides, start, k=1):
        if k > 1:  # K jobs per array task, side by side
            from hydra_plugins.seqbench_sweeper.submitit_jobs import launch_bundles

            return launch_bundles(self.launcher, bundles.group(overrides, k), start)
        if "submitit" in self._launcher_kind():  # one job's failure must not end the rest
            from hydra_plugins.seqbench_sweeper.submitit_jobs import launch_all

            return launch_all(self.launcher, overrides, start)
        return self.launcher.launch(overrides, initial_job_idx=start)

    def _default_batch(self, n: int) -> int:
        kind = self._launcher_kind()
        if "joblib" in kind:
            return max(1, 4 * (os.cpu_count() or 1))
        if "submitit" in kind:
            return max(1, n)  # one job array for the whole sweep
        return 1  # basic launcher: one job at a time, so the progress bar moves

    @staticmethod
    def _count(outcome: sw.SweepOutcome, job_dir: Path, job: sw.Job, ret) -> None:
        summary = sw.read_summary(job_dir)
        status = (summary or {}).get("status")
        if status == "completed":
            outcome.completed += 1
        elif status == "diverged":
            outcome.diverged += 1
        else:
            outcome.error += 1
            reason = (summary or {}).get("error")
            if reason is None:
                try:
                    ret.return_value  # noqa: B018 -- re-raises the job's exception
                    reason = f"status {status!r}"
                except BaseException as e:  # the job failed before writing a summary
                    reason = f"{type(e).__name__}: {e}"
            outcome.errors.append(f"{job.name}: {reason}")

    def _report(self, sweep_dir: Path, outcome: sw.SweepOutcome) -> None:
        from seqbench.report import make_report

        out = Path(self.report_dir or Path("reports") / sweep_dir.name)
        t0 = time.perf_counter()
        title = f"seqbench sweep: {self.preset}"
        if sweep_dir.name != self.preset:
            title += f" ({sweep_dir.name})"
        result = make_report(sweep_dir, out, title=title)
        outcome.report_dir = str(out)
        print(f"report: {result.paths['report_html']} ({result.n_runs} runs, "
              f"{time.perf_counter() - t0:.1f} s)", flush=True)


def _group_errors(errors: list[tuple]) -> list[str]:
    """One line per distinct problem, naming one job that has it and how many do."""
    by_message: dict = {}
    for job, message in errors:
        by_message.setdefault(message, []).append(job)
    lines = []
    for message, jobs in by_message.items():
        if jobs[0] == GRIDS_ERROR:  # before there are jobs
            lines.append(message)
            continue
        more = f" (and {len(jobs) - 1} more jobs)" if len(jobs) > 1 else ""
        lines.append(f"{message} -- in job {jobs[0]}{more}")
    return lines


class SweepProgress:
    """One bar over the sweep on a terminal (done / diverged / left); lines otherwise."""

    def __init__(self, total: int):
        self.total = total
        self.bar = None

    def __enter__(self):
        if sys.stderr.isatty() and self.total:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                TimeRemainingColumn())
            self.bar.__enter__()
            self.task = self.bar.add_task("sweep", total=self.total, info="")
        return self

    def update(self, o: sw.SweepOutcome) -> None:
        ran = o.completed + o.diverged + o.error
        info = f"diverged {o.diverged}, error {o.error}, left {self.total - ran}"
        if self.bar is not None:
            self.bar.update(self.task, completed=ran, info=info)
        else:
            print(f"[{ran}/{self.total}] completed {o.completed}, {info}", flush=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
