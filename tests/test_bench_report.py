"""The report-at-scale benchmark: it measures, and writes what it measured.

The measurement itself (1,000 runs x 10,000 steps) is never timed in tests; here a tiny
sweep checks that every number is there, consistent with the sweep written, and that
both files are written and the sweep is deleted afterwards.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from seqbench.bench import report_scale as B

KEYS = {
    "n_runs", "n_steps", "rows_total", "bytes_on_disk", "files", "generate_seconds", "phases",
    "total_seconds", "process_seconds", "import_seconds", "cpu_seconds", "peak_rss_mib",
    "repeats", "cpu_count", "cores", "cpus_used", "versions", "date", "machine", "command",
    "report", "targets", "eval_every", "benchmark", "workdir",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    return work, B.bench_report(6, 50, workdir=work, keep=True, repeat=2, cores=1)


@pytest.mark.slow
def test_bench_report_returns_every_number(tiny):
    work, r = tiny
    assert set(r) == KEYS
    assert (r["n_runs"], r["n_steps"]) == (6, 50)
    # the rows and bytes are those of the sweep on disk (kept: keep=True)
    files = sorted((work / "runs").rglob("metrics.parquet"))
    assert len(files) == 6
    assert r["rows_total"] == sum(pq.read_metadata(f).num_rows for f in files)
    assert r["bytes_on_disk"] == sum(p.stat().st_size for p in (work / "runs").rglob("*")
                                     if p.is_file())
    assert len(r["repeats"]) == 2
    for rep in r["repeats"]:
        assert set(rep["phases"]) == set(B.PHASES)
        assert rep["total_seconds"] == pytest.approx(sum(rep["phases"].values()), rel=1e-6)
        assert rep["process_seconds"] > rep["total_seconds"] > 0
        assert rep["peak_rss_mib"] > 50  # pandas + matplotlib alone take more
        assert rep["cpus"] and len(rep["cpus"]) == 1  # pinned to one core
    assert r["process_seconds"] == max(x["process_seconds"] for x in r["repeats"])
    assert r["peak_rss_mib"] == max(x["peak_rss_mib"] for x in r["repeats"])
    assert r["report"]["n_runs"] == 6 and r["report"]["n_corrupt"] == 0
    assert set(r["versions"]) >= {"python", "pandas", "pyarrow", "matplotlib"}
    t = r["targets"]
    assert t["seconds"]["pass"] == (r["process_seconds"] <= B.TARGET_SECONDS)
    assert t["peak_rss_mib"]["pass"] == (r["peak_rss_mib"] <= B.TARGET_RSS_MIB)
    assert r["command"] == "python -m seqbench bench report --runs 6 --steps 50 --repeat 2 " \
                           "--cores 1"
    assert (work / "report0" / "report.html").is_file()


@pytest.mark.slow
def test_write_report_bench_writes_markdown_and_json(tiny, tmp_path):
    _, r = tiny
    paths = B.write_report_bench(r, tmp_path / "bench")
    assert paths == {"md": tmp_path / "bench" / "report_scale.md",
                     "json": tmp_path / "bench" / "report_scale.json"}
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(r))
    md = paths["md"].read_text()
    assert r["command"] in md and r["machine"]["cpu"] in md
    assert f"{r['process_seconds']:.2f} s" in md
    for rep in r["repeats"]:  # one table row per repetition, with its phases
        assert f"{rep['phases']['figures']:.2f}" in md
    assert "other work may have been running" in md


@pytest.mark.slow
def test_the_sweep_is_deleted_unless_kept(tmp_path):
    r = B.bench_report(2, 10, workdir=tmp_path, keep=False, cores=0)
    assert r["workdir"] is None and r["report"]["n_runs"] == 2
    assert list(tmp_path.iterdir()) == []


def test_cli_help_names_what_is_measured_and_the_targets(capsys):
    assert B.main_report(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--runs" in out and "--steps" in out and "--out" in out
    assert "30 s" in out and "4 GiB" in out and "collect + stats + figures + render" in out


@pytest.mark.parametrize("args", [["--runs", "0"], ["--steps", "-1"], ["--repeat", "0"],
                                  ["--cores", "-2"]])
def test_cli_rejects_bad_values_with_one_line_and_exit_2(args, capsys):
    assert B.main_report(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and args[0] in err and args[1] in err


def test_cli_rejects_unparsable_values_with_exit_2(capsys):
    assert B.main_report(["--runs", "many"]) == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_bench_report_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_runs"):
        B.bench_report(0, 10)
    with pytest.raises(ValueError, match="n_steps"):
        B.bench_report(1, 0)


def test_evaluation_and_grid_sizes():
    assert B.eval_every_for(10_000) == 200 and B.eval_every_for(10) == 1
    assert B.command_line(1000, 10_000) == "python -m seqbench bench report --runs 1000 " \
                                           "--steps 10000"
