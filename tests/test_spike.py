"""Spikes (`trainer.spike`): exact disturbances at named steps, recorded where they happen.

Forks of one parent are compared with the unspiked fork (the control): everything before
the spike step is bit-identical, the gradient factor shows in `grad_norm_pre` exactly (a
power of two scales a float without rounding), the lr factor in the `lr` column for
exactly `lr_steps` steps, and a corrupted batch replaces exactly the windows named.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from seqbench import fork
from seqbench.checkpoint import load
from seqbench.config import compose, validate
from seqbench.spike import corrupt_generator
from seqbench.train import Trainer

from .conftest import TINY

BASE = [*TINY, "trainer.deterministic=true", "optim=sgd", "optim.lr=0.5", "clip=norm",
        "clip.max_norm=0.5"]
PARENT_STEPS, FORK_STEPS = 10, 16


def rows(run_dir: Path) -> pd.DataFrame:
    return pq.read_table(run_dir / "metrics.parquet").to_pandas().set_index("step")


def spikes(run_dir: Path) -> list[str | None]:
    """The `spike` column as written (null: no disturbance)."""
    return pq.read_table(run_dir / "metrics.parquet", columns=["spike"])["spike"].to_pylist()


def run(run_dir: Path, *overrides: str) -> Path:
    cfg = compose([*BASE, *overrides])
    validate(cfg)
    Trainer(cfg, run_dir).run()
    return run_dir


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    return run(tmp_path_factory.mktemp("spike") / "parent", f"trainer.max_steps={PARENT_STEPS}",
               f"trainer.keep_checkpoints=[{PARENT_STEPS}]")


def forked(parent: Path, run_dir: Path, *overrides: str) -> Path:
    return run(run_dir, f"trainer.max_steps={FORK_STEPS}", f"trainer.init_from={parent}",
               "trainer.keep_checkpoints=[12]", *overrides)


def test_a_gradient_spike_shows_exactly_and_the_steps_before_are_identical(parent, tmp_path):
    control = forked(parent, tmp_path / "control")
    spiked = forked(parent, tmp_path / "spiked", "trainer.spike.steps=[13]",
                    "trainer.spike.grad_factor=128")
    a, b = rows(control), rows(spiked)
    # the steps before the spike: the same rows and the same parameters, bit for bit
    pd.testing.assert_frame_equal(a.loc[:12].drop(columns="wall_s"),
                                  b.loc[:12].drop(columns=["wall_s", "spike"]))
    for name, value in load(control / fork.kept_name(12))["model"].items():
        assert torch.equal(value, load(spiked / fork.kept_name(12))["model"][name]), name
    # the spike step: the same loss, 128 x the norm before clipping, clipped to max_norm
    assert b.loc[13, "train_loss"] == a.loc[13, "train_loss"]
    assert b.loc[13, "grad_norm_pre"] == 128 * a.loc[13, "grad_norm_pre"]
    assert b.loc[13, "clipped"] and b.loc[13, "grad_norm_post"] == pytest.approx(0.5)
    assert spikes(spiked) == [None, None, "grad_factor=128", None, None, None]
    s = json.loads((spiked / "summary.json").read_text())["spike"]
    assert s["applied"] == [{"step": 13, "what": "grad_factor=128"}]
    assert s["steps"] == [13] and s["grad_factor"] == 128
    assert "spike" not in a.columns  # a run without spikes writes the usual columns
    assert json.loads((control / "summary.json").read_text())["spike"] is None


def test_the_lr_factor_applies_for_lr_steps_steps_once(tmp_path):
    """Two spike steps whose windows overlap multiply the lr once; the schedule goes on."""
    common = ["trainer.max_steps=12", "optim.schedule=warmup_cosine", "optim.warmup_steps=3"]
    a = rows(run(tmp_path / "a", *common))
    b = rows(run(tmp_path / "b", *common, "trainer.spike.steps=[5,6]",
                 "trainer.spike.lr_factor=4", "trainer.spike.lr_steps=2"))
    assert spikes(tmp_path / "b") == [None] * 4 + ["lr_factor=4"] * 3 + [None] * 5
    factor = np.where(np.isin(a.index, [5, 6, 7]), 4.0, 1.0)
    np.testing.assert_array_equal(b["lr"], a["lr"] * factor)
    pd.testing.assert_frame_equal(a.loc[:4].drop(columns="wall_s"),
                                  b.loc[:4].drop(columns=["wall_s", "spike"]))
    for col in ("train_loss", "grad_norm_pre"):  # step 5's come before its update
        assert a.loc[5, col] == b.loc[5, col]
    assert a.loc[6, "train_loss"] != b.loc[6, "train_loss"]


def test_a_corrupted_batch_replaces_exactly_the_windows_named(tmp_path):
    cfg = compose([*BASE, "trainer.max_steps=12", "trainer.spike.steps=[3,9]",
                   "trainer.spike.corrupt_batch=true", "seed=7"])
    validate(cfg)
    trainer = Trainer(cfg, tmp_path)
    seen = []
    trainer.model.register_forward_pre_hook(
        lambda model, args: seen.append(args[0].clone()) if model.training else None)
    trainer.run()
    stream, vocab = trainer.task.train_stream, trainer.task.vocab.size
    assert len(seen) == 12
    for step, x in enumerate(seen, 1):
        if step in (3, 9):  # random tokens from (seed, step) alone
            tokens = torch.randint(vocab, (4, 17), generator=corrupt_generator(7, step))
            assert torch.equal(x, tokens[:, :-1]), step
        else:  # the data, at the position an undisturbed run reads
            assert torch.equal(x, stream.window((step - 1) % stream.windows)[0]), step
    assert spikes(tmp_path) == [None, None, "corrupt_batch"] + [None] * 5 \
        + ["corrupt_batch"] + [None] * 3


def test_the_corrupted_batch_depends_on_seed_and_step_only():
    def draw(seed, step):
        return torch.randint(65, (4, 17), generator=corrupt_generator(seed, step))

    assert torch.equal(draw(0, 510), draw(0, 510))
    assert not torch.equal(draw(0, 510), draw(1, 510))
    assert not torch.equal(draw(0, 510), draw(0, 511))


def test_spike_steps_make_no_host_reads(tiny_cfg, tmp_path, host_reads):
    cfg = tiny_cfg("trainer.spike.steps=[2,3]", "trainer.spike.grad_factor=8",
                   "trainer.spike.lr_factor=2", "trainer.spike.corrupt_batch=true",
                   "trainer.accum_steps=2")
    trainer = Trainer(cfg, tmp_path)
    for _ in range(cfg.trainer.log_every):  # one flush interval, the spikes inside it
        trainer.step()
    assert host_reads == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_spike_steps_make_no_sync(tiny_cfg, tmp_path):
    cfg = tiny_cfg("trainer.device=cuda", "trainer.spike.steps=[2,3]",
                   "trainer.spike.grad_factor=8", "trainer.spike.lr_factor=2",
                   "trainer.spike.corrupt_batch=true")
    trainer = Trainer(cfg, tmp_path)
    trainer.step()  # warm-up: lazy CUDA initialisation is not a per-step cost
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(cfg.trainer.log_every - 1):
            trainer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.flush(1)
    assert trainer.metrics.column("spike").tolist()[1:3] == ["grad_factor=8,lr_factor=2,"
                                                             "corrupt_batch"] * 2


def test_summaries_of_forks_and_spikes_validate_and_bad_shapes_are_refused(parent, tmp_path):
    from seqbench.rundir import SummaryError, validate_summary

    child = forked(parent, tmp_path / "child", "trainer.spike.steps=[13]",
                   "trainer.spike.grad_factor=4")
    data = json.loads((child / "summary.json").read_text())
    assert data["parent"]["step"] == PARENT_STEPS and data["spike"]["applied"][0]["step"] == 13
    validate_summary(json.loads(json.dumps(data)))
    for key, bad in [("parent", {"dir": "x", "step": "10", "digest": "d"}),
                     ("parent", [1]), ("spike", {"applied": [{"step": 13}]}),
                     ("spike", "grad_factor=4")]:
        with pytest.raises(SummaryError, match=key):
            validate_summary({**json.loads(json.dumps(data)), key: bad})
