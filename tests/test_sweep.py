"""Sweeps: grid expansion, job names, skipping finished jobs, and real sweeps."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from seqbench import sweep as sw
from seqbench.cli import main

GRIDS = [
    {"optim": "sgd", "optim.lr": [0.5, 2], "clip": "none", "seed": [0, 1]},
    {"optim": "sgd", "optim.lr": [0.5, 2], "clip": "norm", "clip.max_norm": [0.25, 1.0],
     "seed": [0, 1]},
    {"optim": "adam", "optim.lr": [0.001], "clip": "none", "seed": [0, 1]},
    {"optim": "sgd", "optim.lr": 0.5, "clip": "none", "seed": 0},  # a duplicate of grid 1
]


def test_union_of_grids_with_per_grid_values_and_no_duplicates():
    jobs = sw.expand(GRIDS)
    assert len(jobs) == 4 + 8 + 2  # the fourth grid adds nothing new
    assert len({j.name for j in jobs}) == len(jobs)
    none = [j for j in jobs if "clip=none" in j.overrides and "optim=sgd" in j.overrides]
    assert all(not any(o.startswith("clip.max_norm") for o in j.overrides) for j in none)
    adam = [j for j in jobs if "optim=adam" in j.overrides]
    assert {o for j in adam for o in j.overrides if o.startswith("optim.lr")} == {
        "optim.lr=0.001"}
    assert jobs[0].name == "optim=sgd,optim.lr=0.5,clip=none,seed=0"


def test_command_line_values_replace_or_extend_every_grid():
    cli = sw.split_cli_overrides(["seed=0,1,2", "trainer.max_steps=5"])
    jobs = sw.expand(GRIDS[:1], cli)
    assert len(jobs) == 2 * 3
    assert all("trainer.max_steps=5" in j.overrides for j in jobs)
    # a fixed value that is not a grid key does not appear in the names
    assert all("max_steps" not in j.name for j in jobs)
    assert {j.name.split(",")[-1] for j in jobs} == {"seed=0", "seed=1", "seed=2"}


def test_a_command_line_value_for_a_grid_key_stays_in_the_name():
    """`seed=0` replacing a grid's seeds names the job as the grid's own value would
    (a re-run with the value on the command line finds the same directory)."""
    cli = sw.split_cli_overrides(["seed=0", "optim.lr=0.5"])
    jobs = sw.expand(GRIDS[:1], cli)
    assert [j.name for j in jobs] == ["optim=sgd,optim.lr=0.5,clip=none,seed=0"]
    linked = [{"_clip": [{"clip": "norm", "clip.max_norm": 1.0}], "seed": [0, 1]}]
    assert [j.name for j in sw.expand(linked, sw.split_cli_overrides(["clip.max_norm=2"]))] \
        == ["clip=norm,clip.max_norm=2,seed=0", "clip=norm,clip.max_norm=2,seed=1"]


def test_names_are_stable_when_grids_change():
    alone = {j.name: j.overrides for j in sw.expand(GRIDS[:1])}
    together = {j.name: j.overrides for j in sw.expand(GRIDS)}
    for name, overrides in alone.items():
        assert together[name] == overrides


@pytest.mark.parametrize("value", ["../../etc/passwd", "a/b", "..", "x y", "$(rm -rf)"])
def test_names_cannot_leave_the_sweep_directory(value):
    name = sw.job_name([f"task.path={value}"])
    assert "/" not in name and not name.startswith(".") and " " not in name
    assert (Path("/sweep") / name).resolve().parent == Path("/sweep")


def test_long_names_are_shortened_but_unique():
    a = sw.job_name([f"k{i}={'x' * 20}" for i in range(20)])
    b = sw.job_name([f"k{i}={'x' * 20}" for i in range(19)] + ["k19=y"])
    assert len(a) <= sw.MAX_NAME and a != b


def write_summary(d: Path, status: str, config: dict):
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"status": status, "config": config}))


def test_finished_means_terminal_status_and_the_same_experiment(tmp_path):
    cfg = {"optim.lr": 0.5, "seed": 0, "trainer.threads": 1}
    for status, expected in [("completed", True), ("diverged", True), ("error", False),
                             ("running", False), ("interrupted", False)]:
        write_summary(tmp_path / status, status, cfg)
        assert sw.finished(tmp_path / status, cfg) is expected
    # threads do not change the experiment; the learning rate does
    assert sw.finished(tmp_path / "completed", {**cfg, "trainer.threads": 2})
    assert not sw.finished(tmp_path / "completed", {**cfg, "optim.lr": 1.0})
    assert not sw.finished(tmp_path / "missing", cfg)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{not json")
    assert not sw.finished(tmp_path / "bad", cfg)


# ---- real sweeps (tiny models) ---------------------------------------------------------

TINY_SWEEP = ["seed=0", "trainer.max_steps=6", "task.seq_len=16", "task.batch_size=4",
              "model.hidden_size=8", "model.embed_dim=4", "trainer.eval_batches=2",
              "optim.lr=1,64"]


def sweep(tmp_path, *args, launcher=None):
    cmd = [sys.executable, "-m", "seqbench", "sweep", "demo", *TINY_SWEEP, *args]
    if launcher:
        cmd.append(f"hydra/launcher={launcher}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)


def where(base: Path, *args: str, preset: str = "demo") -> tuple[Path, Path]:
    """(runs, report) directories of `sweep PRESET *TINY_SWEEP *args` run in `base`."""
    name = sw.sweep_dir_name(preset, [*TINY_SWEEP, *args] if preset == "demo" else args)
    return base / "runs" / name, base / "reports" / name


def mtimes(root: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in root.glob("*/summary.json")}


@pytest.mark.slow
def test_sweep_runs_skips_finished_jobs_and_reports(tmp_path):
    first = sweep(tmp_path)
    assert first.returncode == 0, first.stderr
    runs, report = where(tmp_path)
    n = len(list(runs.glob("*/summary.json")))
    assert n == 2 * 4 + 2 * 2  # lrs x (none, norm 0.25, norm 1, value) + lrs x adam clips
    assert f"{n} jobs: " in first.stdout and "0 error" in first.stdout
    for f in ("report.html", "report.md", "runs.csv", "cells.csv", "lr_summary.csv"):
        assert (report / f).is_file()
    assert len(pd.read_csv(report / "runs.csv")) == n
    before = mtimes(runs)
    again = sweep(tmp_path)
    assert again.returncode == 0 and f"{n} skipped" in again.stdout
    assert mtimes(runs) == before  # nothing was launched
    # a changed experiment is re-run; --force re-runs everything
    forced = sweep(tmp_path, "--force")
    assert forced.returncode == 0 and "0 skipped" in forced.stdout
    assert all(after > before[k] for k, after in mtimes(runs).items())


@pytest.mark.slow
def test_an_invalid_job_stops_the_sweep_before_any_job_starts(tmp_path):
    out = sweep(tmp_path, "optim.lr=1,-3")
    assert out.returncode == 2
    assert "optim.lr=-3.0: must be > 0" in out.stderr and "nothing was launched" in out.stderr
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "runs").glob("*/*/summary.json"))


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    # on_nonfinite=raise turns a NaN into an error inside the run (a real runtime failure)
    out = sweep(tmp_path, "optim.lr=0.1,1e38", "trainer.on_nonfinite=raise",
                "trainer.explode_factor=null")
    assert out.returncode == 1, out.stdout + out.stderr
    args = ("optim.lr=0.1,1e38", "trainer.on_nonfinite=raise", "trainer.explode_factor=null")
    runs, report = where(tmp_path, *args)
    summaries = [json.loads(p.read_text()) for p in runs.glob("*/summary.json")]
    statuses = [s["status"] for s in summaries]
    assert "error" in statuses and "completed" in statuses
    assert f"{statuses.count('error')} error" in out.stdout
    assert (report / "report.html").is_file()


@pytest.mark.slow
def test_joblib_gives_the_same_cells_as_the_basic_launcher(tmp_path):
    basic, par = tmp_path / "basic", tmp_path / "joblib"
    basic.mkdir()
    par.mkdir()
    det = "trainer.deterministic=true"
    assert sweep(basic, det, launcher="basic").returncode == 0
    out = sweep(par, det, launcher="joblib")
    assert out.returncode == 0, out.stderr
    a = pd.read_csv(where(basic, det)[1] / "cells.csv")
    b = pd.read_csv(where(par, det)[1] / "cells.csv")
    # wall-clock columns: the speed, and the seconds to the target
    timing = [c for c in a.columns if "tokens_per_second" in c or c.startswith("seconds")]
    pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing),
                                  check_exact=False, rtol=1e-6)
    summary = json.loads(next(where(par, det)[0].glob("*/summary.json")).read_text())
    assert summary["config"]["trainer.threads"] >= 1  # threads split between the jobs


@pytest.mark.slow
def test_sweep_through_submitit_local(tmp_path):
    # one learning rate: 6 jobs (tests/slurm/ exercises submitit on a real cluster)
    out = sweep(tmp_path, "hydra.launcher.timeout_min=10", "optim.lr=1",
                launcher="submitit_local")
    assert out.returncode == 0, out.stdout + out.stderr
    runs, report = where(tmp_path, "optim.lr=1")
    statuses = [json.loads(p.read_text())["status"] for p in runs.glob("*/summary.json")]
    assert len(statuses) == 6 and set(statuses) <= {"completed", "diverged"}
    assert (report / "cells.csv").is_file()


def test_unknown_preset_and_bad_options_are_one_line(capsys):
    assert main(["sweep", "nope"]) == 2
    assert capsys.readouterr().err.strip().startswith("seqbench: error: preset=nope: one of")
    assert main(["sweep", "demo", "--fast"]) == 2
    assert main(["sweep", "demo", "trainer.foo=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("seqbench: error: trainer.foo=1: unknown key")


def test_report_of_a_missing_directory_is_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "RUNS_DIR=" in capsys.readouterr().err


def test_a_new_option_with_a_null_default_keeps_old_runs_finished(tmp_path):
    old = {"optim.lr": 0.5, "seed": 0}
    write_summary(tmp_path / "old", "completed", old)
    assert sw.finished(tmp_path / "old", {**old, "model.forget_bias": None,
                                          "trainer.freeze": [], "trainer.param_log_every": 0})
    assert not sw.finished(tmp_path / "old", {**old, "model.forget_bias": 1.0})
    assert not sw.finished(tmp_path / "old", {**old, "trainer.freeze": ["embed.*"]})


@pytest.mark.slow
def test_clip_zoo_compares_every_method(tmp_path):
    from seqbench.clipping import CLIP

    cmd = [sys.executable, "-m", "seqbench", "sweep", "clip_zoo", "seed=0",
           "trainer.max_steps=60", "task.seq_len=16", "task.batch_size=4",
           "model.hidden_size=8", "model.embed_dim=4", "trainer.eval_batches=2"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = where(tmp_path, *cmd[5:], preset="clip_zoo")[1]
    stable = pd.read_csv(report / "lr_summary.csv")
    methods = set(stable["clip.method"])
    assert set(CLIP.names()) <= methods | {"norm"}  # every registered method is compared
    assert "norm_relative" in methods  # relative norm clipping shows as its own method
    md = (report / "report.md").read_text()
    for name in CLIP.names():
        assert name in md


# ---- values Hydra must read back, and linked settings -----------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _parsed(text: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(text).value()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab/.@=,'\"[]()\\ _-:"), max_size=12))
def test_a_string_with_override_syntax_in_it_is_read_back_by_hydra_as_it_was(text):
    if not any(c in text for c in "=,'\"[]()\\") and text == text.strip() and text:
        return  # written as it is: covered below
    assert _parsed(f"k={sw.format_value(text)}") == text


def test_ordinary_values_are_written_as_they_are():
    # job names of existing presets must not change
    for value, text in [("none", "none"), ("runs/p/a@500", "runs/p/a@500"), (0.5, "0.5"),
                        (True, "true"), (None, "null"), ([1, "embed.*"], "[1,embed.*]")]:
        assert sw.format_value(value) == text
    assert sw.format_value("runs/p/seed=0@500") == "'runs/p/seed=0@500'"


def test_linked_settings_go_together_and_name_the_job():
    grid = {"model": "lstm",
            "_clip": [{"clip": "none"}, {"clip": "norm", "clip.max_norm": 0.5}],
            "_parent": [{"trainer.init_from": "runs/p/seed=0@500", "seed": 0},
                        {"trainer.init_from": "runs/p/seed=1@500", "seed": 1}],
            "_spike": [{}, {"trainer.spike.steps": [600], "trainer.spike.grad_factor": 10}]}
    jobs = sw.expand([grid])
    assert len(jobs) == 2 * 2 * 2
    for job in jobs:
        o = job.overrides
        seed = [x for x in o if x.startswith("seed=")]
        parent = [x for x in o if x.startswith("trainer.init_from=")]
        assert parent == [f"trainer.init_from='runs/p/seed={seed[0][5:]}@500'"]
        assert ("clip.max_norm=0.5" in o) == ("clip=norm" in o)
        assert ("trainer.spike.grad_factor=10" in o) == ("trainer.spike.steps=[600]" in o)
        assert o.index("clip=norm" if "clip=norm" in o else "clip=none") < len(o) - 1
        assert o[-1] == seed[0]  # seed last, group choices before their keys
    control = [j for j in jobs if not any("spike" in x for x in j.overrides)]
    assert len(control) == 4 and all("spike" not in j.name for j in control)
    assert len({j.name for j in jobs}) == len(jobs)
    # a command-line value replaces the same key inside linked settings
    cli = sw.split_cli_overrides(["clip.max_norm=2"])
    assert {x for j in sw.expand([grid], cli) for x in j.overrides
            if x.startswith("clip.max_norm")} == {"clip.max_norm=2"}


@pytest.mark.parametrize("bad", [["clip=none"], [{"_x": 1}], "none"])
def test_linked_settings_that_are_not_mappings_are_refused_with_the_key(bad):
    with pytest.raises(ValueError, match="_clip: linked settings"):
        sw.expand([{"_clip": bad}])


def test_a_linked_choice_with_a_name_is_named_by_it_and_names_must_differ():
    parents = [{"_name": f"parent=s{s}", "trainer.init_from": f"runs/p/seed={s}@500",
                "seed": s} for s in (0, 1)]
    jobs = sw.expand([{"clip": ["none", "value"], "_parent": parents}])
    assert sorted(j.name for j in jobs) == ["clip=none,parent=s0", "clip=none,parent=s1",
                                            "clip=value,parent=s0", "clip=value,parent=s1"]
    assert all(any(o.startswith("trainer.init_from='runs/p/seed=") for o in j.overrides)
               and not any("parent=" in o for o in j.overrides) for j in jobs)
    same = [dict(p, _name="parent") for p in parents]
    with pytest.raises(ValueError, match="both be named 'clip=none,parent'"):
        sw.expand([{"clip": ["none", "value"], "_parent": same}])
