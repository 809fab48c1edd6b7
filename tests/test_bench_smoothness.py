"""`seqbench bench smoothness`: the probe variants really probe, and bad input is one line.

No timing is asserted (the slowdown is the benchmark's output, in reports/bench/).
"""

from __future__ import annotations

import json

import pytest
import torch

from seqbench.bench import smoothness_cost
from seqbench.bench.step import device_slug

TINY = ("task.seq_len=16", "task.batch_size=4", "model.embed_dim=8", "model.hidden_size=8",
        "trainer.log_every=5")


def test_tiny_run_measures_probing_variants(tmp_path):
    cpu = torch.device("cpu")
    entry = smoothness_cost.bench_size("demo", cpu, steps=7, repeats=1, warmup=3, threads=1,
                                       everies=[4, 2], extra=TINY, progress=lambda _: None)
    # blocks and warm-up are whole flush windows (5) and whole Ns (4, 2): 20 steps
    assert entry["steps_per_block"] == 20 and entry["warmup_steps"] == 20
    assert entry["tokens_per_step"] == 64 and entry["log_every"] == 5
    rows = entry["variants"]
    assert list(rows) == ["off", "N=4", "N=2"]
    assert rows["off"]["smoothness_rows"] == 0
    for key, n in (("N=4", 4), ("N=2", 2)):
        row = rows[key]
        assert row["steps_run"] == 40
        assert row["smoothness_rows"] == 40 // n  # the variant measured really probed
        assert row["probes_per_block"] == 20 // n
        assert row["expected_slowdown"] == pytest.approx(1 + 2 / n)
        for sd in (row["slowdown"], row["cpu_slowdown"]):  # wall and CPU time
            assert len(sd["per_repeat"]) == 1
            assert sd["min"] <= sd["q1"] <= sd["median"] <= sd["q3"] <= sd["max"]
        assert row["same_train_loss_as_off"]  # the probe leaves the training untouched
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["min_s"] <= row["median_s"] <= row["max_s"]
    doc = {"machine": smoothness_cost.machine(cpu), "every": [4, 2], "note": "a note",
           "sizes": {"demo": entry}}
    json_path, md_path = smoothness_cost.write_results(doc, tmp_path)
    assert json_path.name == f"smoothness-{device_slug(cpu)}.json"
    assert json.loads(json_path.read_text())["sizes"]["demo"]["variants"]["N=2"]["every"] == 2
    md = md_path.read_text()
    assert "| (N=2) trainer, clip=norm, smoothness_every=2 |" in md
    assert "| 20 | same |" in md and "| (off) trainer, clip=norm, probe off |" in md
    assert "load average" in md and "**Conditions.** a note" in md
    assert "Measured against expected (CPU time): at N = 4 the median slowdown is" in md
    assert entry["code"]["commit"] is None or f"Code: commit `{entry['code']['commit']}`" in md


@pytest.mark.parametrize("argv, line", [
    (["--steps", "0"], "seqbench: error: argument --steps: 0 must be >= 1"),
    (["--repeats", "-1"], "seqbench: error: argument --repeats: -1 must be >= 1"),
    (["--every", "x"], "seqbench: error: argument --every: 'x' is not an integer"),
    (["--every", "0"], "seqbench: error: argument --every: 0 must be >= 1"),
    (["--sizes", "huge"], "seqbench: error: argument --sizes: invalid choice"),
    (["--device", "tpu"], "seqbench: error: argument --device: invalid choice"),
    (["--bogus"], "seqbench: error: unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, line, tmp_path, capsys):
    from seqbench.cli import cmd_bench

    assert cmd_bench(["smoothness", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line), err
    assert not list(tmp_path.iterdir())  # nothing written


def test_cuda_asked_for_where_there_is_none(tmp_path, capsys, monkeypatch):
    from seqbench.cli import cmd_bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cmd_bench(["smoothness", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "seqbench: error: --device=cuda: CUDA is not available here (cpu, auto)\n"
    assert not list(tmp_path.iterdir())
