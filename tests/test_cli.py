"""The command line: a real run, a diverged run, and every bad-input case."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqbench.cli import main
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]


def run_cli(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "seqbench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_from_another_directory(tmp_path):
    out = run_cli(["train", *TINY, "hydra.run.dir=run"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert (tmp_path / "run" / "metrics.parquet").is_file()
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()
    assert "status=completed" in out.stdout


def test_a_diverged_run_exits_zero(tmp_path):
    args = ["train", *TINY, "optim=sgd", "optim.lr=1e6", "clip=none", "hydra.run.dir=run"]
    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged"


def test_help_explains_the_command(tmp_path):
    out = run_cli(["train", "--help"], cwd=tmp_path)
    assert out.returncode == 0
    assert "seqbench train" in out.stdout
    clip_line = next(line for line in out.stdout.splitlines() if line.startswith("clip:"))
    assert {"none", "norm", "value"} <= {x.strip() for x in clip_line[5:].split(",")}
    top = run_cli(["--help"], cwd=tmp_path)
    assert top.returncode == 0 and "train" in top.stdout


def test_sweep_help_lists_every_preset_with_what_it_answers(capsys):
    from seqbench.cli import main
    from seqbench.confdir import presets

    assert main(["sweep", "--help"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")
              and not line.startswith("   ")}
    assert listed == set(presets())
    assert "seq_length            does clipping matter more as back-propagation" in out
    assert "J. Brownlee's tutorial" in out  # an initial does not end the sentence
    assert main(["sweep", "study", "-h"]) == 0 and "presets" in capsys.readouterr().out


def test_bad_input_via_the_real_process_has_no_traceback(tmp_path):
    out = run_cli(["train", "optim.lr=-1"], cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == "seqbench: error: optim.lr=-1.0: must be > 0"
    assert not list(tmp_path.iterdir())  # nothing was created


@pytest.fixture
def latin1_file(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9 ".encode("latin-1") * 200)
    return str(p)


BAD = [
    (["trainer.foo=1"], "trainer.foo", "unknown key"),
    (["+trainer.foo=1"], "trainer.foo", "unknown key"),
    (["foo=1"], "foo", "unknown key"),
    (["optim.lr=0"], "optim.lr=0", "must be > 0"),
    (["optim.lr=abc"], "optim.lr=abc", "must be a number"),
    (["trainer.max_steps=1.5"], "trainer.max_steps=1.5", "must be an integer"),
    (["trainer.max_steps=null"], "trainer.max_steps=null", "must not be null"),
    (["trainer.deterministic=maybe"], "trainer.deterministic=maybe", "not a valid bool"),
    (["seed=-1"], "seed=-1", "must be >= 0"),
    (["optim=adam", "optim.betas=[0.9,2]"], "optim.betas=[0.9, 2.0]", "two numbers in [0, 1)"),
    (["trainer.max_steps=0"], "trainer.max_steps=0", ">= 1"),
    (["model.init=pascanu"], "model.init=pascanu", "only for model.cell=rnn_tanh"),
    (["model=rnn_tanh", "model.init=xavier"], "model.init=xavier", "null or pascanu"),
    (["clip=norm", "clip.max_norm=0"], "clip.max_norm=0", "must be > 0"),
    (["clip=norm", "clip.max_norm=-2"], "clip.max_norm=-2", "must be > 0"),
    (["clip=norm", "clip.norm_type=3"], "clip.norm_type=3", "one of 1, 2, inf"),
    (["clip=value", "clip.clip_value=0"], "clip.clip_value=0", "must be > 0"),
    (["clip=none", "clip.max_norm=1"], "clip.max_norm", "unknown key"),
    (["clip=bogus"], "clip=bogus", "one of "),
    (["optim=lbfgs"], "optim=lbfgs", "one of adam, adamw, rmsprop, sgd"),
    (["task.seq_len=100000"], "task.seq_len=100000", "at most"),
    (["task.batch_size=7", "trainer.accum_steps=2"], "trainer.accum_steps=2", "must divide"),
    (["trainer.device=tpu"], "trainer.device=tpu", "one of auto, cpu, cuda"),
    (["trainer.on_nonfinite=ignore"], "trainer.on_nonfinite=ignore", "one of stop, skip"),
    (["model.dropout=1.5"], "model.dropout=1.5", "[0, 1)"),
    (["task=text_file"], "task.path", "required"),
    (["task=text_file", "task.path=/no/such/file.txt"], "task.path=/no/such/file.txt",
     "no such file"),
    (["task=text_file", "task.path=LATIN1"], "task.path=", "must be UTF-8"),
    (["task=regression_mlp"], "model=char_rnn", "task regression_mlp needs model=mlp"),
    (["model=mlp"], "model=mlp", "needs model=lstm, gru or rnn_tanh"),
    (["trainer.freeze=[nope.*]"], "trainer.freeze=nope.*", "matches no parameter"),
    (["trainer.freeze=[*]"], "trainer.freeze=", "freezes every parameter"),
    (["clip=norm", "clip.error_if_nonfinite=true", "trainer.on_nonfinite=skip"],
     "clip.error_if_nonfinite=True", "contradicts trainer.on_nonfinite=skip"),
    (["--bogus"], "--bogus", "unknown"),
    (["optim.lr"], "optim.lr", "KEY=VALUE"),
    (["optim.lr=[1"], "override=optim.lr=[1", "cannot parse"),
]


@pytest.mark.parametrize("overrides, key, allowed", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_one_line_and_exit_2(overrides, key, allowed, capsys, latin1_file,
                                          tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    overrides = [o.replace("LATIN1", latin1_file) for o in overrides]
    assert main(["train", *overrides]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("seqbench: error: ")
    assert key in lines[0] and allowed in lines[0]
    assert not (tmp_path / "runs").exists()


def test_every_bad_value_is_reported_at_once(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "optim.lr=0", "trainer.max_steps=0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2


@pytest.mark.parametrize("flag", ["-m", "--multirun"])
def test_train_multirun_points_to_sweep_with_the_overrides_typed(flag, capsys, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", flag, "optim.lr=1,2", "clip=none"]) == 2
    assert capsys.readouterr().err == (
        f"seqbench: error: option={flag}: train runs one configuration; to run several, use: "
        "python -m seqbench sweep [PRESET] optim.lr=1,2 clip=none (KEY=A,B sweeps a key "
        "over values; presets: conf/sweep/)\n")
    assert not list(tmp_path.iterdir())  # nothing ran, nothing was written


def test_unknown_command_is_an_error(capsys):
    assert main(["trian"]) == 2
    assert "command=trian" in capsys.readouterr().err


def test_sigterm_leaves_an_interrupted_run_on_disk(tmp_path):
    """What SLURM sends before a timeout: the run stops, says so, and keeps its steps."""
    import signal
    import time

    args = [sys.executable, "-m", "seqbench", "train", *TINY, "trainer.max_steps=100000",
            "trainer.log_every=2", "hydra.run.dir=run"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    summary_path = tmp_path / "run" / "summary.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until some steps are on disk
        if summary_path.exists():
            s = json.loads(summary_path.read_text())
            if s["steps_completed"] >= 4:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM  # as a process killed by it, no error
    assert "Traceback" not in out + err and "checkpoint saved" in out + err
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    summary = json.loads(summary_path.read_text())
    assert summary["status"] == "interrupted" and summary["steps_completed"] >= 4
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "run" / "metrics.parquet")) == \
        summary["steps_completed"]


@pytest.mark.parametrize("argv", [
    ["bench", "--bogus"], ["bench", "--steps", "x"], ["bench", "report", "--runs", "abc"],
    ["bench", "sweep", "--launcher", "foo"], ["report"], ["data", "fetch"],
])
def test_flag_errors_of_every_subcommand_are_one_line(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0] and "usage" not in err[0]
