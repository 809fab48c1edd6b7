"""Hostile input that decides where files go, and hostile files on disk.

Sweep job names are made from override values, so a value holding `/`, `..`, a NUL, an
absolute path or 300 characters must still give one directory inside the sweep directory,
and two different values must never share one. A preset name must not leave runs/ or
reports/. The `sweep` command line gets the same treatment as `train` (exit 0 or 2, one
line per problem). Last, the dataset caches: a truncated, bit-flipped or replaced token
file, an edited meta.json and a tampered download are each detected, for every corpus.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import seqbench.app
from seqbench import sweep as sw
from seqbench.cli import main
from seqbench.data import corpora
from seqbench.errors import ConfigError
from tests.test_corpora import NAMES, assert_is, sample, serve
from tests.test_corpora import cache as cache  # noqa: F401 (fixture: an empty cache)
from tests.test_corpora import server as server  # noqa: F401 (fixture: a local server)
from tests.test_hostile import (
    VALUES,
    assert_one_line_errors,
    hostile_overrides,
    leaf_overrides,
)

REPO = Path(__file__).resolve().parents[1]
SWEEP_DIR = Path("/nonexistent/runs/sweep")  # names are checked as paths, not created
HOSTILE_VALUES = ["../../etc/passwd", "/etc/passwd", "..", ".", "a/b", "a_b", "\x00",
                  "a\x00b", "x" * 300, "é" * 200, "🙂", "$(touch PWNED)", "'a b'", "~",
                  "C:\\Windows", "a\\b", "-rf", ".hidden", "\n", ""]


# ---- job names ---------------------------------------------------------------------------

def assert_safe_name(name: str, sweep_dir: Path) -> None:
    assert name and name not in (".", "..") and not name.startswith((".", "-")), name
    assert "/" not in name and "\x00" not in name and name.isascii() and name.isprintable()
    assert len(name.encode()) <= sw.MAX_NAME <= 255  # a file-name limit on every filesystem
    assert (sweep_dir / name).resolve().parent == sweep_dir.resolve()


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(a=st.lists(st.text(max_size=300), min_size=1, max_size=4),
       b=st.lists(st.text(max_size=300), min_size=1, max_size=4))
@example(a=["task.path=a/b"], b=["task.path=a_b"])  # was: both named task.path=a_b
@example(a=["task.path=a b"], b=["task.path=a_b"])
@example(a=["k=" + "x" * 400], b=["k=" + "x" * 401])
def test_job_names_are_one_safe_directory_and_never_shared(a, b):
    for overrides in (a, b):
        assert_safe_name(sw.job_name(overrides), SWEEP_DIR)
    if ",".join(a) != ",".join(b):
        assert sw.job_name(a) != sw.job_name(b)


@pytest.mark.parametrize("text", ["optim=sgd,optim.lr=0.5,clip=none,seed=0",
                                  "clip.max_norm=inf,optim.lr=1e-05", "+trainer.x=1"])
def test_safe_names_stay_readable_and_stable(text):
    assert sw.job_name(text.split(",")) == text


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(values=st.lists(st.one_of(st.sampled_from(HOSTILE_VALUES), st.text(max_size=40)),
                       min_size=2, max_size=5, unique=True))
def test_a_grid_of_hostile_values_gives_distinct_safe_directories(values):
    jobs = sw.expand([{"task.path": values, "seed": [0, 1]}])
    names = [j.name for j in jobs]
    assert len(set(names)) == len(jobs) == 2 * len(values)
    for name in names:
        assert_safe_name(name, SWEEP_DIR)


# ---- the sweep command line ------------------------------------------------------------

@pytest.fixture
def no_sweeping(monkeypatch):
    """Record the Hydra app call instead of running the sweep (the only part replaced)."""
    calls = []
    monkeypatch.setattr(seqbench.app, "train_app", lambda: calls.append(list(sys.argv)))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    return calls


def run_main(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:
        pytest.fail(f"SystemExit({e.code}) escaped main({argv!r})")
    return rc, capsys.readouterr().err


PRESETS = ["demo", "../../x", "/etc/passwd", "", ".", "..", "demo/../demo", "demo.yaml",
           "DEMO", "démo", "demo\x00", "-", "../conf/train", "sweep/demo"]


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(preset=st.one_of(st.just("demo"), st.sampled_from(PRESETS)),
       overrides=st.one_of(hostile_overrides(), leaf_overrides(), st.just([])),
       sweep_value=st.lists(VALUES, min_size=2, max_size=3))
@example(preset="demo", overrides=["optim=sgd,../task/adding"], sweep_value=["1", "2"])
@example(preset="demo", overrides=["hydra.sweeper.preset=../../x"], sweep_value=["1", "2"])
@example(preset="../../x", overrides=[], sweep_value=["1", "2"])
@example(preset="demo", overrides=["trainer=0"], sweep_value=["1", "2"])  # was: ValueError
def test_sweep_command_lines_exit_0_or_2_with_one_line_each(preset, overrides, sweep_value,
                                                            no_sweeping, capsys, tmp_path,
                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    no_sweeping.clear()
    argv = ["sweep", preset, "--dry-run", *overrides,
            f"task.path={','.join(sweep_value)}"]
    rc, err = run_main(argv, capsys)
    event(f"exit {rc}")
    assert_one_line_errors(rc, err, argv)
    assert not list(tmp_path.iterdir()), argv
    assert bool(no_sweeping) == (rc == 0), argv
    if rc == 0:  # what reaches Hydra: the preset is a real one, runs/ and reports/ its name
        assert preset in sw_presets()
        from seqbench.sweep import sweep_dir_name

        name = sweep_dir_name(preset, overrides)
        assert name == preset or name.startswith(f"{preset}+")
        assert f"hydra.sweep.dir='runs/{name}'" in no_sweeping[0]


def sw_presets() -> list[str]:
    from seqbench.confdir import presets

    return presets()


def sweep_process(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "seqbench", "sweep", "demo", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


TINY_SWEEP = ["hydra.sweeper.grids=[{seed:0}]", "task=text_file", "trainer.max_steps=3",
              "task.seq_len=16", "task.batch_size=4", "model.hidden_size=8",
              "model.embed_dim=4", "trainer.eval_batches=2"]
TINY_DIR = ("demo+task=text_file,task.batch_size=4,task.seq_len=16,model.embed_dim=4,"
             "model.hidden_size=8,trainer.eval_batches=2,trainer.max_steps=3")


@pytest.fixture
def books(tmp_path) -> list[str]:
    """Text files whose paths are hostile as names: spaces, unicode, `..`, absolute."""
    text = "the quick brown fox jumps over the lazy dog\n" * 60
    (tmp_path / "data" / "a b").mkdir(parents=True)
    (tmp_path / "data" / "a b" / "ü $(touch PWNED).txt").write_text(text)
    (tmp_path / "work").mkdir()
    (tmp_path / "data" / ("x" * 200 + ".txt")).write_text(text)
    return ["'../data/a b/ü $(touch PWNED).txt'", str(tmp_path / "data" / ("x" * 200 + ".txt"))]


def test_a_dry_run_of_hostile_values_lists_safe_names_and_writes_nothing(books, tmp_path):
    work = tmp_path / "work"
    out = sweep_process(work, *TINY_SWEEP, f"task.path={','.join(books)}", "--dry-run")
    assert out.returncode == 0, out.stderr
    names = [line.strip() for line in out.stdout.splitlines() if line.startswith("  ")]
    assert len(names) == 2
    for name in names:
        assert_safe_name(name, work / "runs" / TINY_DIR)
    assert not list(work.iterdir())
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.slow
def test_a_real_sweep_of_hostile_values_writes_only_inside_its_directories(books, tmp_path):
    work = tmp_path / "work"
    before = {p for p in tmp_path.rglob("*")}
    out = sweep_process(work, *TINY_SWEEP, f"task.path={','.join(books)}")
    assert out.returncode == 0, out.stdout + out.stderr
    created = {p for p in tmp_path.rglob("*")} - before
    roots = {work / "runs", work / "reports"}
    assert created and all(any(p == r or r in p.parents for r in roots) for p in created)
    runs = [p for p in (work / "runs" / TINY_DIR).iterdir() if p.is_dir()]
    assert len(runs) == 2
    for run in runs:
        assert_safe_name(run.name, work / "runs" / TINY_DIR)
        assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert (work / "reports" / TINY_DIR / "report.html").is_file()


@pytest.mark.parametrize("args", [["hydra.sweeper.preset=../../x"],
                                  ["hydra.sweeper.preset=/tmp/x"],
                                  ["hydra.job.name=../x"]])
def test_names_that_become_directories_cannot_be_paths(args, no_sweeping, capsys, tmp_path,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, err = run_main(["sweep", "demo", *args], capsys)
    assert rc == 2 and not no_sweeping
    key, value = args[0].split("=", 1)
    assert err == f"seqbench: error: {key}={value}: a file name (letters, digits, _ . -), " \
                  "not a path\n"


# ---- dataset caches: truncated, bit-flipped, replaced, edited, tampered ------------------

def _quiet(message: str) -> None:
    pass


@pytest.mark.parametrize("name", NAMES)
def test_every_kind_of_damaged_token_cache_is_rebuilt_before_a_run(name, server, monkeypatch,
                                                                   cache):  # noqa: F811
    s = sample(name)
    serve(monkeypatch, server, name, s.good, s.raw)
    tokens = corpora.fetch(name).path
    good, meta = tokens.read_bytes(), (cache / name / "meta.json").read_text()
    flipped = bytearray(good)
    flipped[-1] ^= 0x80  # an id far outside a small vocabulary: a crash, had it been read
    damage = {
        "truncated": lambda: tokens.write_bytes(good[:-1]),
        "bit-flipped": lambda: tokens.write_bytes(bytes(flipped)),
        "replaced": lambda: tokens.write_bytes(bytes(reversed(good))),
        "emptied": lambda: tokens.write_bytes(b""),
        "meta edited": lambda: (cache / name / "meta.json").write_text(
            meta.replace('"unknown": {', '"unknown": {"x": 1, ', 1)),
        "hash swapped": lambda: (cache / name / "meta.json").write_text(json.dumps(
            {**json.loads(meta), "tokens_sha256": "0" * 64})),
    }
    for what, do in damage.items():
        do()
        seen = []
        corpus = corpora.load(name, log=seen.append)
        assert seen and "built the token cache" in seen[0], what
        assert_is(corpus, s)
        assert tokens.read_bytes() == good, what
    assert len(server.hits) == 1  # every rebuild was offline, from the kept download


@pytest.mark.parametrize("name", NAMES)
def test_a_tampered_download_is_never_built_into_a_cache(name, server, monkeypatch, cache):  # noqa: F811
    s = sample(name)
    spec = serve(monkeypatch, server, name, s.good, s.raw)
    corpora.fetch(name)
    source = corpora.source_path(spec)
    raw = bytearray(source.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    source.write_bytes(bytes(raw))
    corpora.corpus_dir(name).joinpath("meta.json").unlink()  # force a rebuild
    with pytest.raises(ConfigError) as e:  # a run refuses it, in one line
        corpora.load(name, log=_quiet)
    message = str(e.value)
    assert "\n" not in message and f"data fetch {name}" in message
    assert str(source) in message and "not usable" in message
    line = None
    with pytest.raises(corpora.DataUnavailableError) as e:  # verify removes it
        line = corpora.verify(name)
    assert line is None and not source.exists() and f"data fetch {name}" in str(e.value)
    assert_is(corpora.fetch(name, log=_quiet), s)  # fetch downloads the published file
    assert len(server.hits) == 2


def test_a_preset_that_is_not_valid_yaml_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    """A hand-written preset with a bad indent (a list item under-indented below its key)
    ended in a YAML parser traceback from inside Hydra."""
    import shutil

    from seqbench import confdir

    conf = tmp_path / "conf"
    shutil.copytree(confdir.conf_dir(), conf)
    (conf / "sweep" / "broken.yaml").write_text(
        "hydra:\n  sweeper:\n    grids:\n      - optim: sgd\n        _parent:\n"
        "      - {seed: 0}\n        _clip:\n          - {clip: none}\n")
    monkeypatch.setattr(confdir, "conf_dir", lambda: conf)
    monkeypatch.chdir(tmp_path)
    rc, err = run_main(["sweep", "broken", "--dry-run"], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "preset=broken:" in err and "is not valid YAML at line 7" in err, err


def test_linked_settings_that_are_not_mappings_are_one_line_and_exit_2(tmp_path):
    """A grid's `_key` must hold mappings; the sweeper says so before any job exists."""
    done = sweep_process(tmp_path, "hydra.sweeper.grids=[{_clip:none}]", "--dry-run")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and len(lines) == 2, done.stderr
    assert lines[0].startswith("seqbench: error: hydra.sweeper.grids._clip: linked settings")
    assert lines[1] == "seqbench: error: the grids cannot be expanded; nothing was launched"
    assert not (tmp_path / "runs").exists()
