"""What a training run shows while it runs: a bar on a terminal, log lines otherwise.

Why both: a person at a terminal wants one line that updates in place, while a cluster
job's log file needs a plain line per flush (`step N/M ...`), which a bar's control
characters would garble; tests and tools read those lines to see how far a run got.
Updated only at flushes, from numbers already on the host, so it costs no sync.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqbench.metrics import MetricsFile
    from seqbench.summary import RunState

# the trainer's logger: the lines read as the run's own, whichever module writes them
log = logging.getLogger("seqbench.train")


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
