"""A sweep killed mid-way (SIGKILL: no handler runs) and started again runs only what is
missing or incomplete, resumes the interrupted job from its checkpoint, and counts
nothing twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

SWEEP = ["seed=0", "trainer.max_steps=400", "trainer.log_every=5",
         "trainer.checkpoint_every=25", "task.seq_len=16", "task.batch_size=4",
         "model.hidden_size=32", "model.embed_dim=8", "trainer.eval_batches=2",
         "trainer.eval_every=100", "trainer.deterministic=true", "optim.lr=1,64"]


def start(cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "seqbench", "sweep", "demo", *SWEEP], cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def statuses(runs: Path) -> dict[str, str]:
    out = {}
    for p in runs.glob("*/summary.json"):
        try:
            out[p.parent.name] = json.loads(p.read_text())["status"]
        except (OSError, ValueError):
            pass
    return out


@pytest.mark.slow
def test_a_killed_sweep_restarts_where_it_stopped(tmp_path):
    from seqbench.sweep import sweep_dir_name

    sweep_name = sweep_dir_name("demo", SWEEP)
    runs = tmp_path / "runs" / sweep_name
    proc = start(tmp_path)
    deadline = time.monotonic() + 300
    caught = None
    while proc.poll() is None and time.monotonic() < deadline:
        st = statuses(runs)
        done = [k for k, v in st.items() if v in ("completed", "diverged")]
        running = [k for k, v in st.items()
                   if v == "running" and (runs / k / "checkpoint.pt").exists()]
        if len(done) >= 3 and running:
            caught = running[0]
            break
        time.sleep(0.02)
    assert caught, f"never caught a job mid-run: {proc.communicate()}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {k for k, v in statuses(runs).items() if v in ("completed", "diverged")}
    checkpoint_step = None
    if (runs / caught / "checkpoint.pt").exists():
        from seqbench.checkpoint import load

        checkpoint_step = load(runs / caught / "checkpoint.pt")["step"]

    again = subprocess.run(
        [sys.executable, "-m", "seqbench", "sweep", "demo", *SWEEP], cwd=tmp_path,
        capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(finished_before)} skipped" in again.stdout
    final = statuses(runs)
    assert len(final) == 12 and set(final.values()) <= {"completed", "diverged"}
    for name in final:  # every step recorded exactly once
        steps = pq.read_table(runs / name / "metrics.parquet", columns=["step"])["step"]
        steps = steps.to_pylist()
        assert steps == list(range(1, len(steps) + 1)), name
    resumed = json.loads((runs / caught / "summary.json").read_text())["resumed_from"]
    assert resumed == ([checkpoint_step] if checkpoint_step else [])
    table = pd.read_csv(tmp_path / "reports" / sweep_name / "runs.csv")
    assert len(table) == 12  # no run counted twice
