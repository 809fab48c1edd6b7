"""`seqbench bench validate` and `bench threads`: what they measure is what they say.

No timing is asserted (targets live in the benchmarks' own output): these check that the
validation benchmark's second pass really scans finished runs of every job, and that the
threads benchmark compares each option idle against busy with the stated target.
"""

from __future__ import annotations

import json

import pytest

from seqbench.bench import threads, validate_speed


@pytest.mark.slow
def test_validate_bench_scans_a_finished_run_for_every_job(tmp_path):
    per_seed = validate_speed.jobs_per_seed("demo")
    assert per_seed == 26  # the demo preset's grid
    r = validate_speed.measure("demo", 2 * per_seed, per_seed)
    assert r["seeds"] == 2
    assert (r["empty"]["jobs"], r["empty"]["finished"]) == (52, 0)
    assert (r["all_finished"]["jobs"], r["all_finished"]["finished"]) == (52, 52)
    for key in ("empty", "all_finished"):
        assert r[key]["validate_s"] > 0 and r[key]["peak_rss_mib"] > 0


def test_validate_bench_page_states_the_target(tmp_path):
    run = {"jobs": 10_010, "finished": 0, "validate_s": 9.0, "wall_s": 12.0,
           "peak_rss_mib": 400.0}
    result = {"date": "2026-11-30", "machine": "x86_64", "cpus": 2, "python": "3.11",
              "preset": "demo", "runs": [{"requested": 10_000, "empty": run,
                                          "all_finished": {**run, "wall_s": 16.0}}]}
    page = validate_speed.markdown(result)
    assert "| 10,010 | empty | 9.0 | 12.0 | 0.90 | 400 |  |" in page
    assert "| 10,010 | all finished (resume scan) | 9.0 | 16.0 | 0.90 | 400 | ≤ 15 s: MISSED |" \
        in page


def test_threads_bench_compares_each_option_idle_and_busy(tmp_path, monkeypatch):
    calls = []

    def fake_run(overrides, env, steps, workdir):
        busy = threads_running_spinner()
        calls.append((tuple(overrides), env.get("OMP_WAIT_POLICY"), busy))
        collapse = busy and "trainer.threads=1" not in overrides
        return 30.0 if collapse else 10.0

    spinners = []
    real_popen = threads.subprocess.Popen

    def popen(*a, **kw):
        p = real_popen(*a, **kw)
        spinners.append(p)
        return p

    def threads_running_spinner():
        return any(p.poll() is None for p in spinners)

    monkeypatch.setattr(threads, "run_train", fake_run)
    monkeypatch.setattr(threads.subprocess, "Popen", popen)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    rows = threads.measure("demo", steps=5, repeats=1, workdir=tmp_path)
    assert [r["option"] for r in rows] == ["1 thread (the default off SLURM)",
                                          "4 threads (torch's default)",
                                          "4 threads, OMP_WAIT_POLICY=PASSIVE"]
    assert [(r["busy_over_idle"], r["meets_target"]) for r in rows] == [
        (1.0, True), (3.0, False), (3.0, False)]
    assert [busy for *_, busy in calls] == [False, True] * 3  # idle, then next to a spinner
    assert all(p.poll() is not None for p in spinners)  # no neighbour is left running
    assert [env for _, env, _ in calls] == [None, None, None, None, "PASSIVE", "PASSIVE"]
    page = threads.markdown({"date": "d", "machine": "m", "cpus": 4, "python": "3",
                             "torch": "2", "steps": 5, "repeats": 1, "rows": rows})
    assert "| demo | 4 threads (torch's default) | 10.0 | 30.0 | 3.00 | MISSED |" in page
    json.dumps(rows)  # the result file is JSON


@pytest.mark.parametrize("argv, line", [
    (["validate", "--jobs", "0"], "seqbench: error: argument --jobs: 0 must be >= 1"),
    (["validate", "--jobs", "x"], "seqbench: error: argument --jobs: 'x' is not an integer"),
    (["validate", "--preset", "nosuch"], "seqbench: error: --preset=nosuch: one of "),
    (["threads", "--steps", "-3"], "seqbench: error: argument --steps: -3 must be >= 1"),
    (["threads", "--sizes", "huge"], "seqbench: error: argument --sizes: invalid choice"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv, line, tmp_path, capsys):
    from seqbench.cli import cmd_bench

    assert cmd_bench([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line)
    assert not list(tmp_path.iterdir())  # nothing written
