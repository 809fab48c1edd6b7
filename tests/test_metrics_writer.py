"""The background metrics writer (seqbench.writer): what it writes, its bound, its errors.

The training thread hands immutable snapshots of the metrics files to one writer thread,
at most one write pending. These tests check that the files hold exactly the rows handed
over, that a slow write blocks the next hand-over instead of queueing it, that a write's
error ends the run as an error with its message, and that the thread always stops. The
SIGKILL test of what a killed run keeps is in tests/test_resume.py.
"""

from __future__ import annotations

import errno
import gc
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from seqbench.metrics import METRICS_SCHEMA, MetricsFile, Snapshot
from seqbench.train import Trainer
from seqbench.writer import MetricsWriter

from .conftest import TINY


def rows(n0: int, n: int) -> dict[str, np.ndarray]:
    steps = np.arange(n0, n0 + n, dtype=np.int64)
    return {"step": steps, "tokens": steps * 64, "train_loss": steps / 10.0,
            "grad_norm_pre": steps * 2.0, "grad_norm_post": steps * 1.0,
            "clipped": steps % 2 == 0, "lr": np.full(n, 0.1), "nonfinite": np.zeros(n, bool),
            "skipped": np.zeros(n, bool), "wall_s": steps * 0.01}


def on_disk(path) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    assert table.schema.equals(METRICS_SCHEMA)
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}


def assert_same_rows(path, f: MetricsFile) -> None:
    disk = on_disk(path)
    for name in METRICS_SCHEMA.names:
        np.testing.assert_array_equal(disk[name], f.column(name), err_msg=name)


def writer_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name]


# ---- the writer on its own -----------------------------------------------------------

def test_rows_written_are_the_rows_handed_over_set_last_included(tmp_path):
    f = MetricsFile(tmp_path / "metrics.parquet")
    w = MetricsWriter()
    try:
        for k in range(6):
            f.add(rows(1 + 5 * k, 5))
            w.submit(f.snapshot().write)
        w.drain()
        assert_same_rows(f.path, f)
        before = f.snapshot()
        f.set_last(val_loss=1.5, val_bpc=2.25, val_metric=2.25)  # the final evaluation
        w.submit(f.snapshot().write)
        w.drain()
    finally:
        w.close()
    assert_same_rows(f.path, f)
    disk = on_disk(f.path)
    assert disk["step"].tolist() == list(range(1, 31))
    assert disk["val_loss"][-1] == 1.5 and np.isnan(disk["val_loss"][:-1]).all()
    # the snapshot taken before set_last still holds the rows as they were then
    before.write()
    assert np.isnan(on_disk(f.path)["val_loss"]).all()


def test_handed_over_chunks_are_read_only(tmp_path):
    f = MetricsFile(tmp_path / "m.parquet")
    f.add(rows(1, 3))
    snap = f.snapshot()
    with pytest.raises(ValueError, match="read-only"):
        snap.chunks["train_loss"][0][0] = 99.0
    f.set_last(val_loss=1.0)  # replaces the chunk with a modified copy
    assert np.isnan(snap.chunks["val_loss"][0]).all()


def test_a_slow_write_blocks_the_next_hand_over_instead_of_queueing_it():
    w = MetricsWriter()
    release, done = threading.Event(), []

    def slow():
        release.wait(10)
        done.append("first")

    w.submit(slow)
    handed = threading.Event()

    def hand_over():
        w.submit(lambda: done.append("second"))
        handed.set()

    t = threading.Thread(target=hand_over)
    t.start()
    try:
        # a bound that held would show here as: still waiting, nothing else queued
        assert not handed.wait(0.3), "the second hand-over did not wait for the first write"
        assert done == [] and w.pending
    finally:
        release.set()
    t.join(10)
    assert handed.is_set()
    w.drain()
    assert done == ["first", "second"]
    w.close()


def test_a_write_error_is_raised_on_the_training_thread_once():
    w = MetricsWriter()
    ran = []

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device")

    w.submit(full_disk)
    with pytest.raises(OSError, match="No space left"):
        w.submit(lambda: ran.append(1))  # the next hand-over raises instead of queueing
    assert ran == []
    w.drain()  # raised once: the writer works again (the error path retries a write)
    w.submit(lambda: ran.append(2))
    w.drain()
    assert ran == [2]
    w.close()


def test_close_is_idempotent_joins_the_thread_and_reports_an_unraised_error(caplog):
    name = "test-writer-close"
    w = MetricsWriter(name=name)
    w.close()  # never started: nothing to do
    w = MetricsWriter(name=name)
    ran = []
    w.submit(lambda: (time.sleep(0.05), ran.append(1)))
    w.close()  # the pending write lands first
    assert ran == [1] and writer_threads(name) == []
    w.close()
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(lambda: None)

    w = MetricsWriter(name=name)
    w.submit(lambda: 1 / 0)
    w.close()
    assert "ZeroDivisionError" in caplog.text and writer_threads(name) == []


def test_a_writer_dropped_without_close_stops_its_thread():
    name = "test-writer-dropped"
    w = MetricsWriter(name=name)
    w.submit(lambda: None)
    (thread,) = writer_threads(name)
    del w
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()


# ---- inside a run --------------------------------------------------------------------

def test_a_run_writes_every_row_and_leaves_no_thread(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.max_steps=23", "trainer.param_log_every=2",
                   "trainer.eval_every=10")
    trainer = Trainer(cfg, tmp_path)
    trainer.run()
    assert_same_rows(tmp_path / "metrics.parquet", trainer.metrics)
    disk = on_disk(tmp_path / "metrics.parquet")
    assert disk["step"].tolist() == list(range(1, 24))
    assert np.isfinite(disk["val_loss"][[9, 19, 22]]).all()  # step 23: the final evaluation
    params = pq.read_table(tmp_path / "param_metrics.parquet").to_pandas()
    assert sorted(set(params["step"])) == list(range(2, 23, 2))
    assert len(params) == trainer.param_log.file.rows
    assert writer_threads(trainer.writer.name) == []


def test_after_each_hand_over_the_file_holds_the_previous_flush(tiny_cfg, tmp_path,
                                                                monkeypatch):
    """The durability bound, with writes far slower than the steps: when flush k is handed
    over, metrics.parquet already holds every row of flush k-1, never fewer."""
    write = Snapshot.write
    monkeypatch.setattr(Snapshot, "write",
                        lambda self, durable=False: (time.sleep(0.03), write(self, durable)))
    trainer = Trainer(tiny_cfg("trainer.max_steps=40", "trainer.param_log_every=3"),
                      tmp_path)
    flush, handed = trainer.flush, []

    def checked_flush(first_step):
        out = flush(first_step)
        on_file = pq.read_metadata(tmp_path / "metrics.parquet").num_rows \
            if (tmp_path / "metrics.parquet").exists() else 0
        handed.append((trainer.metrics.rows, on_file))
        return out

    trainer.flush = checked_flush
    trainer.run()
    assert [h for h, _ in handed] == list(range(5, 41, 5))
    for (previous, _), (_, on_file) in zip(handed, handed[1:]):
        assert on_file >= previous
    assert any(on_file < h for h, on_file in handed)  # the writes did run behind


def test_after_every_step_the_file_lags_by_at_most_one_window(tiny_cfg, tmp_path,
                                                             monkeypatch):
    """The bound a SIGKILL sees, at every step boundary, with writes far slower than a
    step: after step s the file holds at least s - log_every rows, as with synchronous
    writes (the trainer waits for a write after the one step that ran beside it)."""
    write = Snapshot.write
    monkeypatch.setattr(Snapshot, "write",
                        lambda self, durable=False: (time.sleep(0.03), write(self, durable)))
    trainer = Trainer(tiny_cfg("trainer.max_steps=40"), tmp_path)  # log_every=5
    loop_step, lags = trainer.loop_step, []

    def checked(step, max_steps):
        out = loop_step(step, max_steps)
        path = tmp_path / "metrics.parquet"
        lags.append(step - (pq.read_metadata(path).num_rows if path.exists() else 0))
        return out

    trainer.loop_step = checked
    trainer.run()
    assert len(lags) == 40 and max(lags) <= 5
    assert max(lags) == 5  # the writes did run behind: a window on the device plus none


def test_a_checkpoint_waits_for_the_pending_write(tiny_cfg, tmp_path, monkeypatch):
    write = Snapshot.write
    monkeypatch.setattr(Snapshot, "write",
                        lambda self, durable=False: (time.sleep(0.05), write(self, durable)))
    trainer = Trainer(tiny_cfg("trainer.max_steps=40", "trainer.checkpoint_every=10"),
                      tmp_path)
    saved = trainer.save_checkpoint
    seen = []

    def save(step):
        saved(step)
        seen.append((step, pq.read_metadata(tmp_path / "metrics.parquet").num_rows))

    trainer.save_checkpoint = save
    trainer.run()
    assert seen == [(10, 10), (20, 20), (30, 30)]


def full_disk(self, durable=False):
    raise OSError(errno.ENOSPC, "No space left on device", str(self.path))


def test_a_write_error_ends_the_run_as_an_error_with_its_message(tiny_cfg, tmp_path,
                                                                   monkeypatch, caplog):
    monkeypatch.setattr(Snapshot, "write", full_disk)
    trainer = Trainer(tiny_cfg("trainer.max_steps=30"), tmp_path)
    with pytest.raises(OSError, match="No space left"):
        trainer.run()
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "error"
    assert "OSError" in s["error"] and "No space left on device" in s["error"]
    assert "metrics.parquet" in s["error"]
    # raised right after the step that ran beside the failed write (step 6), whose row
    # the error path still records
    assert s["steps_completed"] == 6
    assert "lack the last rows" in caplog.text  # the error path's own retries, logged
    assert writer_threads(trainer.writer.name) == []


def test_after_a_transient_write_error_the_error_path_writes_every_row(tiny_cfg, tmp_path,
                                                                         monkeypatch):
    write, calls = Snapshot.write, {"n": 0}

    def fails_once(self, durable=False):
        calls["n"] += 1
        if calls["n"] == 2:
            full_disk(self)
        write(self, durable)

    monkeypatch.setattr(Snapshot, "write", fails_once)
    with pytest.raises(OSError):
        Trainer(tiny_cfg("trainer.max_steps=30"), tmp_path).run()
    s = json.loads((tmp_path / "summary.json").read_text())
    # the second write (steps 1-10) fails; it is raised after step 11
    assert s["status"] == "error" and s["steps_completed"] == 11
    steps = pq.read_table(tmp_path / "metrics.parquet")["step"].to_pylist()
    assert steps == list(range(1, 12))  # every row the run had, none lost


FAULTY_TRAIN = """
import errno, runpy
import seqbench.metrics as m
def full_disk(self, durable=False):
    raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
m.Snapshot.write = full_disk
runpy.run_module("seqbench", run_name="__main__")
"""


@pytest.mark.slow
def test_a_write_error_in_seqbench_train_is_recorded_and_exits_1(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", FAULTY_TRAIN, "train", *TINY, "trainer.max_steps=30",
         f"hydra.run.dir={run}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "error" and "No space left on device" in s["error"]
