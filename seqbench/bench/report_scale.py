"""Benchmark: ``seqbench report`` on a large synthetic sweep (1,000 runs x 10,000 steps).

Why: a cluster sweep produces about a thousand runs of ten thousand optimizer steps,
and the report must stay a thing one re-renders at will. Issue 6 sets the targets:
the whole report (collect + stats + figures + render) in at most 30 s on 2 CPU cores,
with a peak resident memory of at most 4 GiB. They are checked here, in a benchmark
that writes its numbers to ``reports/bench/``, never with timed assertions in tests.

How it measures:

- The sweep is written by :func:`seqbench.fake_runs.write_synthetic_sweep`
  (the run-directory contract: summary.json, metrics.parquet, .hydra/) into a
  temporary directory and deleted afterwards unless ``keep``. Writing is timed on
  its own and not counted: it is the sweep's cost, not the report's.
- The report runs in a fresh child Python process, so that its peak RSS (the child's
  own ``ru_maxrss``) is the report's alone, not the generator's, and its time
  includes what a user waits for: interpreter start and imports (``process``), of
  which ``make_report`` itself is ``total`` with one entry per phase.
- The child is pinned to ``cores`` CPUs where the OS allows it (Linux affinity) and
  Arrow's / BLAS thread pools are sized to match, so "2 cores" holds on a bigger
  machine too. It cannot exclude other people's work on the same cores: the Markdown
  says so, and ``repeat`` > 1 shows the spread.
- The targets are judged on the slowest repetition's ``process`` seconds and the
  largest peak RSS, the stricter readings.

The sweep files were just written, so they are in the OS page cache: the numbers are
a warm-cache read, as when a report follows its sweep on the same machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from seqbench.errors import ArgumentParser, ConfigError, parse_args

#: The issue's targets: seconds for the whole report, and peak resident memory.
TARGET_SECONDS = 30.0
TARGET_RSS_MIB = 4096.0
DEFAULT_RUNS = 1000
DEFAULT_STEPS = 10_000
DEFAULT_CORES = 2
DEFAULT_OUT = Path("reports") / "bench"
#: Phases of ``make_report`` (``seqbench.report.PHASES``), repeated here so that the
#: parent process need not import the report stack.
PHASES: tuple[str, ...] = ("collect", "stats", "figures", "render")
#: The synthetic grid: 2 optimizers x 7 learning rates x 6 clip settings = 42
#: configurations; seeds are added until the sweep has ``n_runs`` runs (the last
#: configurations get one seed fewer when 42 does not divide ``n_runs``).
GRID_CONFIGS = 42
VERSION_PACKAGES: tuple[str, ...] = ("pandas", "pyarrow", "matplotlib", "seaborn", "numpy")


def eval_every_for(n_steps: int) -> int:
    """Evaluate 50 times per run, as a long real run would (every 200 of 10,000 steps)."""
    return max(1, n_steps // 50)


def generate_sweep(root: Path, n_runs: int, n_steps: int, seed: int = 0) -> None:
    """Write exactly ``n_runs`` well-formed synthetic runs of ``n_steps`` steps under ``root``.

    No defect directories: ``n_runs`` is the number the report reads. Divergence is part
    of the synthetic model, so some runs stop early and hold fewer rows.
    """
    from seqbench.fake_runs import write_synthetic_sweep

    seeds = range(max(1, math.ceil(n_runs / GRID_CONFIGS)))
    write_synthetic_sweep(
        root,
        seeds=tuple(seeds),
        steps=n_steps,
        eval_every=eval_every_for(n_steps),
        seed=seed,
        defects=False,
        max_runs=n_runs,
    )


def _disk_usage(root: Path) -> tuple[int, int]:
    """(bytes, files) under ``root``."""
    total = files = 0
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            total += os.stat(os.path.join(dirpath, f)).st_size
            files += 1
    return total, files


def _metrics_rows(root: Path) -> int:
    """Rows of every metrics.parquet under ``root``, from the footers (cheap)."""
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in root.rglob("metrics.parquet"))


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def machine_description() -> dict[str, object]:
    """What ran the benchmark: OS, CPU model, logical CPUs, memory (no host name)."""
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
    }


def _available_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _child(argv: list[str]) -> None:
    """Child process: pin, import, run ``make_report`` with timings, write a JSON result.

    ``argv``: runs_dir, out_dir, result_json, cores (0: no pinning).
    """
    start = time.perf_counter()
    runs_dir, out_dir, result_path, cores = argv[0], argv[1], argv[2], int(argv[3])
    cpus = _available_cpus()
    if cores > 0 and hasattr(os, "sched_setaffinity"):
        cpus = cpus[:cores]
        os.sched_setaffinity(0, cpus)
    import resource

    from seqbench.report import make_report

    imported = time.perf_counter()
    timings: dict[str, float] = {}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    result = make_report(runs_dir, out_dir, timings=timings)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss_kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
    out = {
        "phases": {p: timings.get(p, math.nan) for p in PHASES},
        "total_seconds": timings.get("total", math.nan),
        "import_seconds": imported - start,
        "cpu_seconds": (usage.ru_utime - cpu0.ru_utime) + (usage.ru_stime - cpu0.ru_stime),
        "peak_rss_mib": rss_kib / 1024,
        "cpus": cpus,
        "report": {
            "n_found": result.n_found,
            "n_runs": result.n_runs,
            "n_completed": result.n_completed,
            "n_diverged": result.n_diverged,
            "n_corrupt": result.n_corrupt,
            "n_cells": result.n_cells,
            "figures": sorted(result.figures),
            "skipped": dict(sorted(result.skipped.items())),
        },
    }
    Path(result_path).write_text(json.dumps(out), encoding="utf-8")


def _run_child(runs_dir: Path, out_dir: Path, cores: int) -> dict:
    """Run the report once in a fresh interpreter; its numbers plus the process wall time."""
    result_path = out_dir.parent / f"{out_dir.name}.result.json"
    env = dict(os.environ)
    # the child imports the same seqbench as this process, installed or not
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    if cores > 0:  # thread pools sized to the pinned cores (Arrow reads OMP_NUM_THREADS)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(cores)
    code = "import sys; from seqbench.bench.report_scale import _child; _child(sys.argv[1:])"
    cmd = [sys.executable, "-c", code, str(runs_dir), str(out_dir), str(result_path), str(cores)]
    load_before = _load_average()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    load_after = _load_average()
    if proc.returncode != 0:
        raise RuntimeError(
            f"report child process failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    out = json.loads(result_path.read_text(encoding="utf-8"))
    out["process_seconds"] = wall
    out["load_average"] = {"before": load_before, "after": load_after}
    return out


def _load_average() -> float | None:
    """The 1-minute load average: how busy the (shared) machine was, for the record."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def bench_report(
    n_runs: int = DEFAULT_RUNS,
    n_steps: int = DEFAULT_STEPS,
    workdir: Path | None = None,
    keep: bool = False,
    *,
    repeat: int = 1,
    cores: int = DEFAULT_CORES,
) -> dict:
    """Generate a synthetic sweep, time ``make_report`` on it in a child process; the numbers.

    ``workdir``: where the sweep and the report go (a new temporary directory if None);
    it is deleted afterwards unless ``keep`` (a given ``workdir`` itself is kept, its
    ``runs/`` and ``report*/`` contents are removed). ``repeat``: how many times the
    report runs on the same sweep (each in a fresh process). ``cores``: CPUs the child
    is pinned to (0: all). The top-level numbers are those of the slowest repetition;
    every repetition is in ``repeats``. See the module docstring for what is measured.
    """
    if n_runs < 1:
        raise ValueError(f"n_runs must be >= 1, got {n_runs}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    own = workdir is None
    base = Path(tempfile.mkdtemp(prefix="seqbench-report-bench-")) if own else Path(workdir)
    base.mkdir(parents=True, exist_ok=True)
    runs_dir = base / "runs"
    try:
        t0 = time.perf_counter()
        generate_sweep(runs_dir, n_runs, n_steps)
        generate_seconds = time.perf_counter() - t0
        bytes_on_disk, files = _disk_usage(runs_dir)
        rows = _metrics_rows(runs_dir)
        repeats = [_run_child(runs_dir, base / f"report{i}", cores) for i in range(repeat)]
    finally:
        if not keep:
            if own:
                shutil.rmtree(base, ignore_errors=True)
            else:
                shutil.rmtree(runs_dir, ignore_errors=True)
                for i in range(repeat):
                    shutil.rmtree(base / f"report{i}", ignore_errors=True)
                    (base / f"report{i}.result.json").unlink(missing_ok=True)
    worst = max(repeats, key=lambda r: r["process_seconds"])
    peak = max(r["peak_rss_mib"] for r in repeats)
    return {
        "benchmark": "report_scale",
        "n_runs": n_runs,
        "n_steps": n_steps,
        "eval_every": eval_every_for(n_steps),
        "rows_total": rows,
        "bytes_on_disk": bytes_on_disk,
        "files": files,
        "generate_seconds": generate_seconds,
        "phases": dict(worst["phases"]),
        "total_seconds": worst["total_seconds"],
        "process_seconds": worst["process_seconds"],
        "import_seconds": worst["import_seconds"],
        "cpu_seconds": worst["cpu_seconds"],
        "peak_rss_mib": peak,
        "repeats": repeats,
        "cpu_count": os.cpu_count(),
        "cores": cores,
        "cpus_used": len(worst["cpus"]),
        "versions": _versions(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(),
        "command": command_line(n_runs, n_steps, repeat, cores),
        "workdir": str(base) if keep else None,
        "report": worst["report"],
        "targets": {
            "seconds": {
                "limit": TARGET_SECONDS,
                "measured": worst["process_seconds"],
                "pass": worst["process_seconds"] <= TARGET_SECONDS,
            },
            "peak_rss_mib": {
                "limit": TARGET_RSS_MIB,
                "measured": peak,
                "pass": peak <= TARGET_RSS_MIB,
            },
        },
    }


def command_line(n_runs: int, n_steps: int, repeat: int = 1, cores: int = DEFAULT_CORES) -> str:
    """The CLI command that reproduces a measurement."""
    cmd = f"python -m seqbench bench report --runs {n_runs} --steps {n_steps}"
    if repeat != 1:
        cmd += f" --repeat {repeat}"
    if cores != DEFAULT_CORES:
        cmd += f" --cores {cores}"
    return cmd


# --------------------------------------------------------------------------- output


def _s(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def _verdict(t: dict) -> str:
    return "**pass**" if t["pass"] else "**FAIL**"


def format_markdown(result: dict) -> str:
    """The human-readable page of a :func:`bench_report` result (``report_scale.md``)."""
    r = result
    m = r["machine"]
    reps = r["repeats"]
    ts, tm = r["targets"]["seconds"], r["targets"]["peak_rss_mib"]
    lines = [
        "# Benchmark: `seqbench report` at scale",
        "",
        f"{r['n_runs']:,} synthetic runs x {r['n_steps']:,} steps "
        f"({r['rows_total']:,} metrics rows, {r['bytes_on_disk'] / 2**20:,.1f} MiB in "
        f"{r['files']:,} files; evaluation every {r['eval_every']} steps), measured "
        f"{r['date']}.",
        "",
        f"Command: `{r['command']}` (the same arguments work with "
        "`python -m seqbench.bench.report_scale`).",
        "",
        "## Targets",
        "",
        "| target | limit | measured | verdict |",
        "|---|---:|---:|---|",
        f"| whole report, wall seconds (slowest run, process start to exit) | "
        f"{ts['limit']:.0f} s | {ts['measured']:.2f} s | {_verdict(ts)} |",
        f"| peak resident memory (largest run) | {tm['limit']:.0f} MiB | "
        f"{tm['measured']:.0f} MiB | {_verdict(tm)} |",
        "",
        "## Phases (seconds)",
        "",
        "| run | " + " | ".join(PHASES) + " | make_report | imports | process | "
        "CPU seconds | peak RSS MiB | load average before / after |",
        "|---|" + "---:|" * (len(PHASES) + 6),
    ]
    for i, rep in enumerate(reps, 1):
        cells = [_s(rep["phases"].get(p, math.nan)) for p in PHASES]
        load = rep.get("load_average") or {}
        lines.append(
            f"| {i} | " + " | ".join(cells) + f" | {_s(rep['total_seconds'])} | "
            f"{_s(rep['import_seconds'])} | {_s(rep['process_seconds'])} | "
            f"{_s(rep['cpu_seconds'])} | {rep['peak_rss_mib']:.0f} | "
            f"{load.get('before', 'n/a')} / {load.get('after', 'n/a')} |"
        )
    rep = r["report"]
    lines += [
        "",
        f"Writing the sweep (not counted): {_s(r['generate_seconds'])} s. "
        f"The report read {rep['n_runs']:,} runs ({rep['n_completed']:,} completed, "
        f"{rep['n_diverged']:,} diverged, {rep['n_corrupt']} corrupt) in {rep['n_cells']} "
        f"configurations and drew {len(rep['figures'])} figures"
        + (f"; skipped: {', '.join(rep['skipped'])}" if rep["skipped"] else "")
        + ".",
        "",
        "## Machine",
        "",
        f"- {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['memory_gib']} GiB memory; "
        f"{m['platform']}",
        f"- report process pinned to {r['cpus_used']} CPU(s)"
        + (" (the whole machine)" if r["cpus_used"] == m["logical_cpus"] else ""),
        "- " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
        "",
        "## How to read this",
        "",
        "- *process* is what a user waits for: a fresh interpreter, imports (pandas, "
        "pyarrow, matplotlib, seaborn) and `make_report`; *make_report* is the sum of the "
        "phases. Peak RSS is the report process's own `ru_maxrss`.",
        "- The sweep had just been written, so its files were in the OS page cache "
        "(a warm read, as when a report follows its sweep on the same machine).",
        "- The machine is shared: other work may have been running on the same cores "
        "during the measurement, which only makes the numbers slower. The 1-minute load "
        "average before and after each run says how busy the machine was (above the "
        "number of cores, the report waited for CPU; *CPU seconds* is the report's own "
        "work, which contention does not inflate much). Each row is a separate run of the "
        "report on the same sweep; their spread shows the noise.",
        "- Figures draw curves binned to at most 300 points per run and at most 20,000 "
        "sampled gradient norms per ECDF; every statistic (rates, intervals, bin means) is "
        "computed from all rows.",
        "",
    ]
    return "\n".join(lines)


def write_report_bench(result: dict, out_dir: Path) -> dict[str, Path]:
    """Write ``report_scale.md`` and ``report_scale.json`` into ``out_dir``; their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "report_scale.md", "json": out / "report_scale.json"}
    for key, text in (
        ("md", format_markdown(result)),
        ("json", json.dumps(result, indent=2, sort_keys=False, allow_nan=True) + "\n"),
    ):
        tmp = paths[key].with_name(paths[key].name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, paths[key])
    return paths


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m seqbench bench report",
        description=(
            "Measure `seqbench report` at scale. Writes a synthetic sweep of N runs x "
            "M optimizer steps (run-directory contract: summary.json, metrics.parquet) "
            "into a temporary directory (writing is timed but not counted), then runs the "
            "whole report (collect + stats + figures + render) in a fresh process pinned to "
            "C CPUs, timing each phase and the process, and reading its peak resident "
            f"memory. Targets (issue 6): <= {TARGET_SECONDS:.0f} s and <= "
            f"{TARGET_RSS_MIB / 1024:.0f} GiB for {DEFAULT_RUNS:,} x {DEFAULT_STEPS:,} on "
            f"{DEFAULT_CORES} cores. Writes OUT/report_scale.md and OUT/report_scale.json."
        ),
    )
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, metavar="N",
                   help=f"number of runs (default {DEFAULT_RUNS})")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="M",
                   help=f"optimizer steps per run (default {DEFAULT_STEPS})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                   help=f"where the results go (default {DEFAULT_OUT})")
    p.add_argument("--repeat", type=int, default=1, metavar="K",
                   help="run the report K times on the same sweep (default 1)")
    p.add_argument("--cores", type=int, default=DEFAULT_CORES, metavar="C",
                   help=f"CPUs the report process is pinned to, 0 for all (default "
                        f"{DEFAULT_CORES})")
    p.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                   help="where the sweep is written (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true",
                   help="keep the sweep and the reports instead of deleting them")
    return p


def main_report(argv: list[str]) -> int:
    """``python -m seqbench bench report [--runs N] [--steps M] [--out DIR] ...``; exit status."""
    ns = parse_args(_parser(), argv)
    if isinstance(ns, int):
        return ns

    checks = (("--runs", ns.runs, 1), ("--steps", ns.steps, 1), ("--repeat", ns.repeat, 1),
              ("--cores", ns.cores, 0))
    for key, value, low in checks:
        if value < low:
            err = ConfigError(key, value, f"an integer >= {low}")
            print(f"seqbench: error: {err}", file=sys.stderr)
            return 2
    result = bench_report(ns.runs, ns.steps, ns.workdir, ns.keep, repeat=ns.repeat,
                          cores=ns.cores)
    paths = write_report_bench(result, ns.out)
    ts, tm = result["targets"]["seconds"], result["targets"]["peak_rss_mib"]
    print(
        f"report on {ns.runs:,} runs x {ns.steps:,} steps: {ts['measured']:.1f} s "
        f"(target {ts['limit']:.0f}: {'pass' if ts['pass'] else 'FAIL'}), peak "
        f"{tm['measured']:.0f} MiB (target {tm['limit']:.0f}: {'pass' if tm['pass'] else 'FAIL'})"
        f" -> {paths['md']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main_report(sys.argv[1:]))
