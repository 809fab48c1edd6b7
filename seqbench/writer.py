"""The run's file writes, off the training thread, one at a time.

Why: every flush rewrites metrics.parquet (and param_metrics.parquet) whole: a Parquet
encode, a temporary file, a rename. On the demo model on CPU (2-4 ms a step, a flush
every 25 steps) that was 2-3 ms per flush, 3-5% of the run, spent on the thread that
trains. Here the training thread keeps the host read, the flags and the in-memory rows
(summary.json and the progress line read them) and hands immutable snapshots to one
background thread that encodes and writes them.

The hand-over queue holds one item, and the trainer waits for a write to land after the
first step that ran beside it (almost never a wait: a write takes ~1.6 ms, a step of the
demo model 2-4 ms), so at most one write is ever pending, a slow disk slows training
instead of growing a backlog, and a killed run loses what it lost before, give or take
one step (`MetricsWriter` states it exactly).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import weakref
from collections.abc import Callable

log = logging.getLogger("seqbench.writer")

Job = Callable[[], None]
_STOP = object()
_NUMBERS = itertools.count(1)


def _work(jobs: queue.Queue, errors: list[BaseException]) -> None:
    """The thread's loop; it holds no reference to the writer, so an abandoned writer
    can be collected (its finalizer then stops the thread)."""
    while True:
        item = jobs.get()
        try:
            if item is _STOP:
                return
            for job in item:
                job()
        except BaseException as e:  # kept for the training thread, which raises it
            errors.append(e)
        finally:
            del item
            jobs.task_done()


class MetricsWriter:
    """Runs hand-overs (a list of write functions) on one daemon thread, in order.

    Bound: at most one hand-over is pending or running at any time: `submit` waits for the
    previous one to land before it queues the next. The trainer also `drain`s right after
    the first step of each window, so a write overlaps one step of training and never
    more. Checkpoints and the end of a run `drain` first, so a checkpoint's row count and
    the final (fsynced) write see every row.

    What a SIGKILL can lose: metrics.parquet is always a whole, readable file (temp file +
    rename). With synchronous writes, a run killed after completing step s kept the steps
    up to the last flush, at least s - log_every. Here the same holds except in one
    moment: after the first step of a window has completed and before the previous
    flush's write (running beside that step) has landed, the file can lack that flush
    too, and the run keeps at least s - log_every - 1 steps. A slow disk makes training
    wait there instead of running further ahead. Writes during a run are not fsynced
    (docs/decisions.md): a machine crash can lose more, a process kill cannot.

    Errors: an exception in a write is kept and raised on the training thread by the next
    `submit` or `drain`, once; the run then ends with status "error" and the message.
    `close` stops the thread (after the pending write) and logs an error nobody raised.
    """

    def __init__(self, name: str | None = None):
        self.name = name or f"seqbench-metrics-writer-{next(_NUMBERS)}"
        self._jobs: queue.Queue = queue.Queue(maxsize=1)
        self._errors: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize | None = None
        self._closed = False

    def submit(self, *jobs: Job) -> None:
        """Hand over `jobs` (run in order on the writer thread) once the previous hand-over
        has landed; raises that one's error instead, if it failed."""
        if self._closed:
            raise RuntimeError("the metrics writer is closed")
        self.drain()
        if not jobs:
            return
        if self._thread is None:
            self._start()
        self._jobs.put(tuple(jobs))  # never blocks: drain() left the queue empty

    def drain(self) -> None:
        """Wait until everything handed over is on disk; raise a write's error here."""
        if self._thread is not None:
            self._jobs.join()
        if self._errors:
            error = self._errors[0]
            self._errors.clear()
            raise error

    def salvage(self, first: Job, whole: Callable[[], list[Job]]) -> None:
        """After an error or Ctrl-C: every row in memory to disk, as far as that still
        works. `first` hands over what is left (the caller's buffered rows, or every file
        whole again, since the last hand-over may have been cut short: the error raised by
        `submit` was the previous write's, or Ctrl-C came while waiting for it); after a
        failure, `whole()` (every file) is handed over once more. A failure here is
        logged, not raised: summary.json records the error that ended the run."""
        try:
            first()
            self.drain()
            return
        except Exception as e:
            log.warning("writing the last metrics rows failed (%s: %s); trying again",
                        type(e).__name__, e)
        try:
            self.submit(*whole())
            self.drain()
        except Exception as e:
            log.error("the metrics files lack the last rows: %s: %s", type(e).__name__, e)

    @property
    def pending(self) -> bool:
        """Whether a hand-over is queued or being written (for tests and diagnostics)."""
        return self._jobs.unfinished_tasks > 0

    def close(self) -> None:
        """Stop the thread after the pending write and join it. Idempotent; never raises
        (it is called in `finally` blocks): call `drain` first to get a write's error."""
        self._closed = True
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._finalizer.detach()
        self._jobs.put(_STOP)
        thread.join()
        for e in self._errors:
            log.error("a metrics write failed and was not reported: %s: %s",
                      type(e).__name__, e)
        self._errors.clear()

    def _start(self) -> None:
        # daemon: a thread stuck on a hung file system never blocks interpreter exit
        self._thread = threading.Thread(target=_work, args=(self._jobs, self._errors),
                                        name=self.name, daemon=True)
        self._thread.start()
        # a writer dropped without close() (a Trainer driven by hand) stops its thread;
        # not at interpreter exit, where a hung write would hang the exit
        self._finalizer = weakref.finalize(self, self._jobs.put, _STOP)
        self._finalizer.atexit = False
