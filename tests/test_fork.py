"""Forks (`trainer.init_from`): a run that starts from another run's kept checkpoint.

The reference is the parent itself: a fork under the parent's own config (and its
optimizer state) must write exactly the parent's rows after the fork step, so every piece
of state a fork takes (weights, data position, random streams, optimizer, schedule, the
explosion reference) is checked at once. CPU, deterministic, one thread, tiny models.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqbench import checkpoint as ckpt
from seqbench import fork
from seqbench.checkpoint import load
from seqbench.config import compose, flat, validate
from seqbench.errors import ConfigError
from seqbench.rundir import experiment_digest
from seqbench.sweep import conflict, finished
from seqbench.train import Interrupted, Trainer

from .conftest import TINY
from .test_resume import metrics, stop_at, summary

# dropout (random streams), two layers, momentum (optimizer state), a schedule (its
# position), evaluations (on the global axis) and a log interval that does not divide
# the fork step (the kept checkpoint forces a flush there)
BASE = [*TINY, "trainer.max_steps=40", "trainer.log_every=7", "trainer.eval_every=10",
        "trainer.deterministic=true", "optim=sgd", "optim.lr=1.0", "optim.momentum=0.9",
        "optim.schedule=warmup_cosine", "optim.warmup_steps=5", "model.dropout=0.1",
        "model.num_layers=2"]
FORK_AT = 20


def files(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `run_dir`: its bytes and its mtime (ns)."""
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def fork_cfg(parent: Path, *more: str):
    cfg = compose([*BASE, f"trainer.init_from={parent}", *more])
    validate(cfg)  # what the CLI and the sweep check first
    return cfg


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("parent") / "run"
    Trainer(compose([*BASE, f"trainer.keep_checkpoints=[{FORK_AT}]"]), run).run()
    return run


def test_keeping_a_checkpoint_changes_no_row(parent, tmp_path):
    Trainer(compose(BASE), tmp_path).run()
    pd.testing.assert_frame_equal(metrics(parent), metrics(tmp_path))
    assert fork.kept_steps(parent) == [FORK_AT]
    assert not (parent / "checkpoint.pt").exists()  # the resume point goes, kept ones stay
    assert load(parent / fork.kept_name(FORK_AT))["task_fingerprint"]["vocab_size"] > 0


def test_a_fork_under_its_parents_config_continues_the_parent_exactly(parent, tmp_path):
    before = files(parent)
    cfg = fork_cfg(parent, "trainer.init_optimizer=true")
    Trainer(cfg, tmp_path).run()
    assert files(parent) == before  # the parent's directory is only read

    rows, theirs = metrics(tmp_path), metrics(parent)
    assert rows["step"].tolist() == list(range(FORK_AT + 1, 41))  # the parent's axis
    pd.testing.assert_frame_equal(
        rows, theirs[theirs["step"] > FORK_AT].reset_index(drop=True))
    s, p = summary(tmp_path), summary(parent)
    for key in ("status", "steps_completed", "tokens_seen", "final_val_metric",
                "initial_loss", "outcome"):
        assert s[key] == p[key], key
    digest = load(parent / fork.kept_name(FORK_AT))["config"]
    assert s["parent"] == {"dir": str(parent.resolve()), "step": FORK_AT,
                           "digest": experiment_digest(digest)}
    assert s["config"]["parent.step"] == FORK_AT
    assert s["config"]["parent.digest"] == s["parent"]["digest"]
    assert s["spike"] is None and summary(parent)["parent"] is None
    # tokens per second counts the fork's own steps
    assert s["tokens_per_second"] == pytest.approx(
        20 * 4 * 16 / s["train_seconds"], rel=1e-9)


def test_a_fork_runs_under_its_own_config(parent, tmp_path):
    theirs = metrics(parent)
    theirs = theirs[theirs["step"] > FORK_AT].reset_index(drop=True)
    # the optimizer's state is taken, its hyperparameters are not: lr x 1/4 at every step
    Trainer(fork_cfg(parent, "trainer.init_optimizer=true", "optim.lr=0.25"),
            tmp_path / "lr").run()
    np.testing.assert_array_equal(metrics(tmp_path / "lr")["lr"], theirs["lr"] * 0.25)
    # a fresh optimizer (the default): the same first loss (weights and data are the
    # parent's), another update (no momentum yet)
    Trainer(fork_cfg(parent), tmp_path / "fresh").run()
    rows = metrics(tmp_path / "fresh")
    assert rows["train_loss"][0] == theirs["train_loss"][0]
    assert rows["train_loss"][1] != theirs["train_loss"][1]


def test_an_interrupted_fork_resumes_from_its_own_checkpoint(parent, tmp_path, monkeypatch):
    cfg = fork_cfg(parent, "trainer.init_optimizer=true", "trainer.checkpoint_every=5")
    Trainer(cfg, tmp_path / "ref").run()
    run = tmp_path / "run"
    trainer = Trainer(cfg, run)
    stop_at(trainer, 27, signal.SIGTERM)
    with pytest.raises(Interrupted):
        trainer.run()
    assert load(run / "checkpoint.pt")["step"] == 27

    def never(trainer):
        raise AssertionError("a resumed fork started from its parent again")

    monkeypatch.setattr(ckpt, "start_fork", never)
    Trainer(cfg, run).run()
    pd.testing.assert_frame_equal(metrics(run), metrics(tmp_path / "ref"))
    s = summary(run)
    assert s["resumed_from"] == [27] and s["parent"] == summary(tmp_path / "ref")["parent"]
    assert s["tokens_per_second"] is not None


def test_the_parent_is_part_of_the_forks_experiment(tmp_path):
    """Sweep skip-finished and no-overwrite compare the parent's step and digest."""
    small = [*TINY, "trainer.deterministic=true", "optim=sgd"]
    parent, child = tmp_path / "parent", tmp_path / "child"
    Trainer(compose([*small, "trainer.max_steps=10", "trainer.keep_checkpoints=[5,10]"]),
            parent).run()
    cfg = compose([*small, "trainer.max_steps=14", f"trainer.init_from={parent}"])
    validate(cfg)
    Trainer(cfg, child).run()
    assert finished(child, flat(cfg)) and conflict(child, flat(cfg)) is None
    assert metrics(child)["step"].tolist() == [11, 12, 13, 14]  # the latest kept: 10

    earlier = compose([*small, "trainer.max_steps=14", f"trainer.init_from={parent}@5"])
    assert flat(earlier)["parent.step"] == 5 and not finished(child, flat(earlier))

    # the parent trained again under another config: its forks are other experiments,
    # and the replaced run's kept checkpoints are gone
    Trainer(compose([*small, "optim.lr=0.5", "trainer.max_steps=10", "trainer.resume=never",
                     "trainer.keep_checkpoints=[10]"]), parent).run()
    assert fork.kept_steps(parent) == [10]
    again = flat(compose([*small, "trainer.max_steps=14", f"trainer.init_from={parent}"]))
    assert not finished(child, again)
    clash = conflict(child, again)
    assert clash is not None and [k for k, _, _ in clash.differ] == ["parent.digest",
                                                                    "parent.lineage"]


def test_forks_of_parents_that_differ_only_in_seed_share_a_lineage(tmp_path):
    """The report groups such forks into one configuration (parent.lineage) and pairs
    them by parent (parent.digest); a parent of another config has another lineage."""
    small = [*TINY, "trainer.deterministic=true", "optim=sgd", "trainer.max_steps=6",
             "trainer.keep_checkpoints=[6]"]
    for name, extra in (("s0", ["seed=0"]), ("s1", ["seed=1"]), ("lr", ["optim.lr=0.5"])):
        Trainer(compose([*small, *extra]), tmp_path / name).run()

    def ident(name):
        return fork.identity(str(tmp_path / name))

    assert ident("s0")["parent.digest"] != ident("s1")["parent.digest"]
    assert ident("s0")["parent.lineage"] == ident("s1")["parent.lineage"]
    assert ident("lr")["parent.lineage"] != ident("s0")["parent.lineage"]
    assert fork.identity(str(tmp_path / "missing")) == {
        "parent.step": None, "parent.digest": None, "parent.lineage": None}


def test_a_fork_never_runs_in_its_parents_directory(parent, tmp_path):
    copy = tmp_path / "parent"
    shutil.copytree(parent, copy)
    (copy / "checkpoint.pt").write_bytes(b"the parent's own resume point")
    before = files(copy)
    with pytest.raises(ConfigError, match="not this run's own"):
        Trainer(fork_cfg(copy), copy)
    assert files(copy) == before

