"""Checkpoints and resume: a stopped run continues exactly where it stopped.

The reference is always the same config run without interruption: a resumed run must
give the same metrics rows (every column but the wall clock) and the same final numbers.
CPU, `trainer.deterministic=true`, one thread.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from seqbench.checkpoint import CHECKPOINT_FILE, CheckpointError, load
from seqbench.checkpoint import save as ckpt_save
from seqbench.config import compose
from seqbench.train import Interrupted, Trainer

from .conftest import TINY

RESUMABLE = [*TINY, "trainer.max_steps=40", "trainer.checkpoint_every=10",
             "trainer.eval_every=10", "trainer.deterministic=true", "optim=sgd",
             "optim.lr=1.0", "model.dropout=0.1", "model.num_layers=2"]
TASKS = {
    "charlm": [],
    "adding": ["task=adding", "task.length=10", "model=gru"],
    "regression": ["task=regression_mlp", "model=mlp", "task.batch_size=16"],
}


def cfg_for(task: str, *more: str):
    extra = TASKS[task]
    base = [o for o in RESUMABLE
            if not (task != "charlm" and o.startswith(("task.seq_len", "model.embed_dim",
                                                      "model.num_layers", "task.batch_size",
                                                      "model.hidden_size")))]
    if task == "regression":
        base = [o for o in base if not o.startswith("model.dropout")]
    return compose([*base, *extra, *more])


def metrics(run_dir: Path) -> pd.DataFrame:
    return pq.read_table(run_dir / "metrics.parquet").to_pandas().drop(columns=["wall_s"])


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def assert_same_run(resumed: Path, reference: Path) -> None:
    pd.testing.assert_frame_equal(metrics(resumed), metrics(reference))
    a, b = summary(resumed), summary(reference)
    for key in ("status", "steps_completed", "final_train_loss", "final_val_metric",
                "best_val_metric", "divergence", "divergence_step", "clip_fraction",
                "grad_norm_pre", "task_success"):
        assert a[key] == b[key], key


def stop_at(trainer: Trainer, step: int, signum: int) -> None:
    """Send `signum` to this process while step `step` runs (as a cluster would)."""
    advance = trainer.task.advance

    def advance_and_signal():
        if trainer.step_count + 1 == step:
            os.kill(os.getpid(), signum)
        advance()

    trainer.task.advance = advance_and_signal


@pytest.mark.parametrize("task, signum, at", [
    ("charlm", signal.SIGTERM, 23), ("charlm", signal.SIGUSR1, 10),
    ("charlm", signal.SIGUSR2, 7), ("adding", signal.SIGTERM, 23),
    ("regression", signal.SIGTERM, 23),
])
def test_a_signal_checkpoints_and_the_run_resumes_identically(tmp_path, task, signum, at):
    cfg = cfg_for(task)
    Trainer(cfg, tmp_path / "ref").run()

    run = tmp_path / "run"
    trainer = Trainer(cfg, run)
    stop_at(trainer, at, signum)
    with pytest.raises(Interrupted):
        trainer.run()
    s = summary(run)
    assert s["status"] == "interrupted" and s["steps_completed"] == at
    assert signal.Signals(signum).name in s["error"]
    assert metrics(run)["step"].tolist() == list(range(1, at + 1))  # nothing lost
    assert load(run / CHECKPOINT_FILE)["step"] == at

    Trainer(cfg, run).run()
    assert_same_run(run, tmp_path / "ref")
    assert summary(run)["resumed_from"] == [at]
    assert not (run / CHECKPOINT_FILE).exists()  # a finished run keeps no checkpoint


def test_periodic_checkpoints_and_resume_from_the_last_one(tmp_path):
    """A run that dies without warning resumes from the last periodic checkpoint; the
    rows after it are recomputed once, not duplicated."""
    cfg = cfg_for("charlm")
    Trainer(cfg, tmp_path / "ref").run()
    run = tmp_path / "run"
    trainer = Trainer(cfg, run)
    original = trainer.save_checkpoint
    saved = []

    def save_then_die(step):
        original(step)
        saved.append(step)
        if step == 20:
            raise KeyboardInterrupt  # dies after the checkpoint at step 20 ...

    trainer.save_checkpoint = save_then_die
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert saved == [10, 20]
    Trainer(cfg, run).run()
    assert_same_run(run, tmp_path / "ref")
    assert summary(run)["resumed_from"] == [20]


def test_unusable_checkpoints_mean_a_fresh_start(tmp_path, caplog):
    cfg = cfg_for("charlm")
    Trainer(cfg, tmp_path / "ref").run()
    for name, damage in [
        ("truncated", lambda p: p.write_bytes(p.read_bytes()[:100])),
        ("garbage", lambda p: p.write_bytes(os.urandom(4096))),
        ("other config", None),
    ]:
        run = tmp_path / name.replace(" ", "_")
        trainer = Trainer(cfg_for("charlm", "optim.lr=0.5") if damage is None else cfg, run)
        stop_at(trainer, 15, signal.SIGTERM)
        with pytest.raises(Interrupted):
            trainer.run()
        if damage is not None:
            damage(run / CHECKPOINT_FILE)
        Trainer(cfg, run).run()
        assert summary(run)["resumed_from"] == [], name
        assert_same_run(run, tmp_path / "ref")
    assert "not resuming" in caplog.text


def test_resume_never_starts_over(tmp_path):
    cfg = cfg_for("charlm")
    trainer = Trainer(cfg, tmp_path)
    stop_at(trainer, 15, signal.SIGTERM)
    with pytest.raises(Interrupted):
        trainer.run()
    Trainer(cfg_for("charlm", "trainer.resume=never"), tmp_path).run()
    assert summary(tmp_path)["resumed_from"] == []
    assert metrics(tmp_path)["step"].tolist() == list(range(1, 41))


def _interrupt_and_edit_config(cfg, run: Path, step: int, edit):
    """Stop a run with SIGTERM at `step`, then apply `edit` to its checkpoint's config (as
    another version of seqbench would have written it); `edit`'s result is returned."""
    trainer = Trainer(cfg, run)
    stop_at(trainer, step, signal.SIGTERM)
    with pytest.raises(Interrupted):
        trainer.run()
    data = load(run / CHECKPOINT_FILE)
    out = edit(data["config"])
    data.pop("version")
    ckpt_save(run / CHECKPOINT_FILE, data)
    return out


def test_a_checkpoint_from_before_an_option_existed_still_resumes(tmp_path, caplog):
    """An upgrade adds an option switched off (here `optim.warmup_steps: 0`): a run that
    was interrupted before it must still resume at its checkpoint, as the sweep treats it
    as the same experiment, never start over (the bug: the trainer compared strictly)."""
    cfg = cfg_for("charlm")
    Trainer(cfg, tmp_path / "ref").run()
    run = tmp_path / "run"
    # make it a run of the older version: neither its checkpoint nor its summary knows
    # the option
    dropped = _interrupt_and_edit_config(cfg, run, 23, lambda c: c.pop("optim.warmup_steps"))
    assert dropped == 0
    s = summary(run)
    del s["config"]["optim.warmup_steps"]
    (run / "summary.json").write_text(json.dumps(s))

    # as a user would: the CLI into the same directory, resume=auto (the default)
    overrides = [*RESUMABLE, f"hydra.run.dir={run}"]
    done = subprocess.run([sys.executable, "-m", "seqbench", "train", *overrides],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "not resuming" not in done.stderr + done.stdout
    assert summary(run)["resumed_from"] == [23]
    assert_same_run(run, tmp_path / "ref")

    # a real difference is still refused (the checkpoint is not used)
    run2 = tmp_path / "other"
    _interrupt_and_edit_config(cfg, run2, 7, lambda c: c.update({"optim.warmup_steps": 5}))
    Trainer(cfg, run2).run()
    assert summary(run2)["resumed_from"] == []
    assert "another config (optim.warmup_steps: 5 -> 0)" in caplog.text


def _same(a, b, path="") -> None:
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and torch.equal(a.cpu(), b.cpu()), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize("task", list(TASKS))
def test_capture_restores_to_the_same_capture(tmp_path, task):
    """checkpoint.capture and checkpoint.restore are inverses: a fresh trainer resumed
    from a checkpoint captures exactly the payload that was saved (but the wall clock,
    which restore continues rather than stops)."""
    from seqbench.checkpoint import capture

    # a clipper with state of its own (the others explode under it at lr 1.0)
    cfg = cfg_for(task, *(["clip=autoclip"] if task == "charlm" else []))
    trainer = Trainer(cfg, tmp_path)
    stop_at(trainer, 15, signal.SIGTERM)
    with pytest.raises(Interrupted):
        trainer.run()
    saved = load(tmp_path / CHECKPOINT_FILE)
    resumed = Trainer(cfg, tmp_path)
    assert resumed.start_step == 16 and resumed.state.resumed_from == [15]
    again = capture(resumed, 15)
    for payload in (saved, again):
        payload.pop("version", None)
        payload["run"].pop("elapsed")
    assert again["run"].pop("resumed_from") == [15]
    assert saved["run"].pop("resumed_from") == []
    _same(saved, again)


class _Payload:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["SEQBENCH_TEST_MARKER"]),))


def test_loading_a_checkpoint_never_runs_code(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    monkeypatch.setenv("SEQBENCH_TEST_MARKER", str(marker))
    torch.save({"version": 1, "model": _Payload()}, tmp_path / CHECKPOINT_FILE)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        load(tmp_path / CHECKPOINT_FILE)
    assert not marker.exists()


# ---- SIGKILL: a real process, killed without warning ---------------------------------

def _train(run_dir: Path, overrides: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "seqbench", "train", *overrides, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _rows(run_dir: Path) -> int:
    try:
        return pq.read_metadata(run_dir / "metrics.parquet").num_rows
    except (OSError, ValueError):
        return 0


def _kill_at(run, proc, rows: int, output) -> None:
    """SIGKILL the training process once its metrics file holds `rows` rows."""
    deadline = time.monotonic() + 120
    while _rows(run) < rows and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, f"finished or failed before the kill: {output()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_gives_the_same_run(tmp_path):
    overrides = [*RESUMABLE, "trainer.max_steps=300", "trainer.checkpoint_every=20",
                 "trainer.eval_every=50"]
    kill_after = random.Random().randrange(30, 250)
    print(f"killing after {kill_after} steps")  # shown if the test fails
    ref = _train(tmp_path / "ref", overrides)
    run = tmp_path / "run"
    proc = _train(run, overrides)
    _kill_at(run, proc, kill_after, lambda: proc.stderr.read())
    # whatever instant it died at, every file left behind is readable
    rows_at_kill = _rows(run)
    assert rows_at_kill >= kill_after
    assert summary(run)["status"] == "running"
    checkpoint_step = load(run / CHECKPOINT_FILE)["step"]
    assert checkpoint_step <= rows_at_kill

    again = _train(run, overrides)
    assert again.wait(timeout=180) == 0, again.stderr.read()
    assert ref.wait(timeout=180) == 0, ref.stderr.read()
    assert_same_run(run, tmp_path / "ref")
    assert summary(run)["resumed_from"] == [checkpoint_step]
    assert np.array_equal(metrics(run)["step"], np.arange(1, 301))


def test_a_handler_installed_before_ours_still_gets_the_signal(tmp_path):
    """submitit handles SIGUSR2 by requeueing the job and exiting: it must run after the
    checkpoint is saved, and the run must be recorded as interrupted, not as an error."""
    calls = []

    def submitit_like(signum, frame):
        calls.append((signum, (tmp_path / CHECKPOINT_FILE).exists()))
        raise SystemExit(-1)

    old = signal.signal(signal.SIGUSR2, submitit_like)
    try:
        trainer = Trainer(cfg_for("charlm"), tmp_path)
        stop_at(trainer, 12, signal.SIGUSR2)
        with pytest.raises(SystemExit):
            trainer.run()
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # ours is gone again
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert calls == [(signal.SIGUSR2, True)]
    assert summary(tmp_path)["status"] == "interrupted"
    assert load(tmp_path / CHECKPOINT_FILE)["step"] == 12


# ---- SIGKILL and the background metrics writer: what a killed run keeps ---------------

# `seqbench train` whose every metrics write first sleeps: far slower than the steps, so
# the writer's bound (one write pending) decides what a kill keeps
SLOW_WRITES_TRAIN = """
import runpy, sys, time
import seqbench.metrics as m
write, delay = m.Snapshot.write, float(sys.argv.pop(1))
def slow(self, durable=False):
    time.sleep(delay)
    write(self, durable)
m.Snapshot.write = slow
runpy.run_module("seqbench", run_name="__main__")
"""


def _train_logging(run_dir: Path, overrides: list[str], log: Path,
                   write_delay: float) -> subprocess.Popen:
    """`seqbench train` with its log lines (one per flush, "step N/M") going to `log`."""
    head = ["-m", "seqbench"] if not write_delay else ["-c", SLOW_WRITES_TRAIN, str(write_delay)]
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, *head, "train", *overrides, f"hydra.run.dir={run_dir}"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _last_logged_step(log: Path) -> int:
    steps = re.findall(r"step (\d+)/\d+", log.read_text())
    return int(steps[-1]) if steps else 0


@pytest.mark.slow
@pytest.mark.parametrize("write_delay", [0.0, 0.03])
def test_sigkill_keeps_a_prefix_within_the_writers_bound_and_resume_completes(tmp_path,
                                                                                write_delay):
    """Killed at several moments, the run's metrics.parquet is always whole and holds the
    steps 1..k for a k at least the flush before the last one the process logged (seqbench/
    writer.py: a hand-over waits for the previous write, and the progress line of a flush is
    logged after its hand-over); the same command then finishes every step exactly once.
    With slow writes (0.03 s each, steps take ~1 ms) a writer that queued hand-overs
    instead of waiting would fall far behind and fail the bound."""
    every = 5
    overrides = [*RESUMABLE, "trainer.max_steps=300", f"trainer.log_every={every}",
                 "trainer.checkpoint_every=40", "trainer.eval_every=100",
                 "trainer.param_log_every=3", "trainer.progress=log"]
    run = tmp_path / "run"
    kept = []
    for i, target in enumerate((20, 120, 220)):  # each above what the last kill left
        log = tmp_path / f"kill{i}.log"
        proc = _train_logging(run, overrides, log, write_delay)
        _kill_at(run, proc, target, log.read_text)
        steps = pq.read_table(run / "metrics.parquet", columns=["step"])["step"].to_pylist()
        k, reached = len(steps), _last_logged_step(log)
        assert steps == list(range(1, k + 1))  # readable, contiguous, nothing twice
        assert reached - every <= k <= reached + every, (k, reached)
        assert k >= target
        kept.append((k, reached))
    print("kept rows, last logged step:", kept)  # shown if the test fails

    log = tmp_path / "final.log"
    again = _train_logging(run, overrides, log, write_delay)
    assert again.wait(timeout=300) == 0, log.read_text()
    assert np.array_equal(metrics(run)["step"], np.arange(1, 301))
    s = summary(run)
    assert s["status"] == "completed" and s["steps_completed"] == 300
    params = pq.read_table(run / "param_metrics.parquet", columns=["step", "name"]).to_pandas()
    assert not params.duplicated().any()
    assert sorted(set(params["step"])) == list(range(3, 301, 3))
