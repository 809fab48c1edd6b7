"""`seqbench bench`: the comparison is fair and the results are written as promised.

No timing is asserted here (speed targets live in the benchmark's own output); these
tests check that the bare loop and the trainer train the very same model on the same
data, and that the command writes its table.
"""

import json

import pytest
import torch

from seqbench.bench.step import SIZES, bare_loop, device_slug, main, trainer_loop
from seqbench.config import compose

CPU = torch.device("cpu")
SMALL = (*SIZES["demo"], "trainer.device=cpu", "trainer.eval_every=0",
         "trainer.progress=off", "trainer.log_every=5", "seed=3")


def test_bare_loop_and_trainer_train_the_same_model(tmp_path):
    """With clip=none, the trainer's bookkeeping must not change what is computed."""
    cfg = compose([*SMALL, "clip=none", "optim=sgd", "optim.lr=0.5"])
    run_bare, bare_model = bare_loop(cfg, CPU)
    run_trainer, trainer = trainer_loop(cfg, tmp_path / "t")
    run_bare(10)
    run_trainer(10)
    for (name, a), (_, b) in zip(bare_model.named_parameters(),
                                 trainer.model.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    assert trainer.state.steps_completed == 10  # two flushes of five steps happened
    assert (tmp_path / "t" / "metrics.parquet").exists()


def test_the_clipping_bare_loop_trains_as_the_trainer_with_clip_norm(tmp_path):
    """(a2), the fair anchor of (d): clip_grad_norm_ every step, at a max_norm that
    clips every step here, gives the trainer's clip=norm model."""
    cfg = compose([*SMALL, "clip=norm", "clip.max_norm=0.05", "optim=sgd", "optim.lr=0.5"])
    run_bare, bare_model = bare_loop(cfg, CPU, clip_grad_norm=True)
    run_trainer, trainer = trainer_loop(cfg, tmp_path / "t")
    run_bare(10)
    run_trainer(10)
    for (name, a), (_, b) in zip(bare_model.named_parameters(),
                                 trainer.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    assert trainer.metrics.column("clipped").all()


def test_trainer_loop_refuses_a_diverged_benchmark(tmp_path):
    cfg = compose([*SMALL, "clip=none", "optim=sgd", "optim.lr=1e6"])
    run, _ = trainer_loop(cfg, tmp_path / "t")
    with pytest.raises(RuntimeError, match="diverged"):
        run(20)


@pytest.mark.slow
def test_bench_writes_its_table(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--size", "demo", "--device", "cpu", "--steps", "25", "--repeats", "2",
            "--warmup", "25", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    slug = device_slug(CPU)
    doc = json.loads((out / f"{slug}.json").read_text())
    entry = doc["sizes"]["demo"]
    assert set(entry["variants"]) == {"a", "a2", "b", "c", "d", "e", "f"}
    assert entry["variants"]["a"]["ratio_to_a"] == pytest.approx(1.0)
    for row in entry["variants"].values():
        assert row["tokens_per_s"] > 0 and row["min_s"] <= row["median_s"] <= row["max_s"]
    assert list(entry["targets"]) == ["b/a", "d/a2", "d/b"]  # (d)/(a2) beside (b)/(a)
    rows = entry["variants"]
    assert entry["ratios"]["d/a2"] == pytest.approx(
        rows["d"]["tokens_per_s"] / rows["a2"]["tokens_per_s"])
    md = (out / f"{slug}.md").read_text()
    assert "bare PyTorch loop" in md and "| (f)" in md and "b/a ≥ 0.97" in md
    assert "| (a2) bare loop + clip_grad_norm_" in md and "d/a2 ≥ 0.97" in md
    assert "b/a =" in printed and "d/a2 =" in printed
    # a second size run merges into the same files instead of replacing them
    doc["sizes"]["other"] = dict(entry, size="other")
    (out / f"{slug}.json").write_text(json.dumps(doc))
    assert main(argv) == 0
    assert set(json.loads((out / f"{slug}.json").read_text())["sizes"]) == {"demo", "other"}


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--repeats", "-1"]])
def test_bad_arguments_are_one_line(argv, capsys):
    assert main([*argv, "--no-write"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seqbench: error: --")


def _run(created, first, ended, threads=1, status="completed"):
    return {"timing": {"created_at": created, "first_step_at": first, "ended_at": ended},
            "status": status, "config": {"trainer.threads": threads}, "wall_seconds": 0}


def test_sweep_overhead_is_the_gap_between_consecutive_runs():
    from seqbench.bench.sweep_speed import job_overhead

    runs = [_run(100.0, 100.5, 110.0), _run(110.2, 111.0, 120.0),  # gap 1.0
            _run(120.1, 123.0, 130.0)]                            # gap 3.0
    o = job_overhead(list(reversed(runs)), started=90.0)  # order on disk does not matter
    assert o["median_s"] == pytest.approx(2.0) and o["max_s"] == pytest.approx(3.0)
    assert o["first_job_s"] == pytest.approx(10.5)
    assert o["trainer_setup_median_s"] == pytest.approx(0.8)
    assert o["met"] is True  # a median of 2.0 s meets "<= 2 s"
