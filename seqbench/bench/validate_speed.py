"""`seqbench bench validate`: how long a sweep of N jobs waits before its first launch.

Why: a sweep validates every job before launching any, and skips the jobs that already
finished (the resume scan). Both grow with the number of jobs, and at cluster scale
(tens of thousands of jobs) they decide whether a sweep starts in seconds or in half an
hour. This times, as a user would run them, in a child process each:

  (1) `sweep PRESET seed=range(0,K) --dry-run` into an empty directory: composing and
      validating every job;
  (2) the same after every job's directory holds a finished run of its experiment:
      validation plus the resume scan (one summary.json read and compared per job);

and the child's peak memory (RSS) for each, so a run over several N shows whether memory
stays flat. The preset's grid is crossed with K seeds to reach N jobs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from seqbench.bench import machine, positive_int, write_result
from seqbench.errors import ArgumentParser, parse_args

TARGETS_S = {10_000: 15.0, 100_000: 150.0}  # issue 13, on 2 cores


def dry_run(preset: str, seeds: int, sweep_dir: Path, cwd: Path) -> dict[str, Any]:
    """One `sweep --dry-run` in a child process: wall time, the sweep's own validation
    time (its "validated in" line), the job counts it printed and its peak RSS."""
    cmd = [sys.executable, "-m", "seqbench", "sweep", preset, f"seed=range(0,{seeds})",
           f"hydra.sweep.dir={sweep_dir}", "--dry-run"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    head = proc.stdout.readline()  # the summary line; the job list that follows is drained
    for _ in proc.stdout:
        pass
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    m = re.search(r"(\d+) jobs \((\d+) already finished\), validated in ([\d.]+) s", head)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"the dry run failed ({proc.returncode}): {head}{err[-2000:]}")
    return {"jobs": int(m.group(1)), "finished": int(m.group(2)),
            "validate_s": float(m.group(3)), "wall_s": round(wall, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}  # ru_maxrss is in KiB


def write_finished_runs(preset: str, seeds: int, sweep_dir: Path) -> int:
    """A completed summary.json of its own experiment in every job's directory, with the
    configs the sweeper composes (the same code path), so the scan finds all finished."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    import seqbench.sweep as sw
    from seqbench.confdir import conf_dir
    from seqbench.config import ensure_registered, flatten, validate
    from seqbench.jobconfigs import JobConfigs

    ensure_registered()  # Hydra composes from the schemas stored with it
    args = [f"+sweep={preset}", f"seed=range(0,{seeds})"]  # as the sweeper gets them
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        master = compose("train", overrides=[f"+sweep={preset}"], return_hydra_config=True)
        configs = JobConfigs(GlobalHydra.instance().config_loader(), master)
        grids = OmegaConf.to_container(master.hydra.sweeper.grids, resolve=True)
        cache: dict = {}
        n = 0
        for job in sw.expand(grids, sw.split_cli_overrides(args)):
            config = flatten(validate(configs(job.overrides), cache=cache))
            job_dir = sweep_dir / job.name
            job_dir.mkdir(parents=True, exist_ok=True)
            (job_dir / "summary.json").write_text(json.dumps(
                {"status": "completed", "config": config}, default=str))
            n += 1
    return n


def measure(preset: str, jobs: int, per_seed: int) -> dict[str, Any]:
    seeds = max(1, math.ceil(jobs / per_seed))
    with tempfile.TemporaryDirectory(prefix="seqbench-bench-validate-") as tmp:
        cwd = Path(tmp)
        sweep_dir = cwd / "runs" / preset
        empty = dry_run(preset, seeds, sweep_dir, cwd)
        t0 = time.perf_counter()
        written = write_finished_runs(preset, seeds, sweep_dir)
        populate_s = time.perf_counter() - t0
        full = dry_run(preset, seeds, sweep_dir, cwd)
    if full["finished"] != written:
        raise RuntimeError(f"the scan found {full['finished']} of {written} finished runs")
    return {"requested": jobs, "seeds": seeds, "empty": empty, "all_finished": full,
            "populate_s": round(populate_s, 1)}


def jobs_per_seed(preset: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        r = dry_run(preset, 1, Path(tmp) / "runs", Path(tmp))
    return r["jobs"]


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# `seqbench bench validate` on {result['machine']}", "",
             f"{result['date']}, preset `{result['preset']}` crossed with `seed=range(0,K)`, "
             f"{result['cpus']} CPUs, Python {result['python']}. Each row is one child "
             "process (`sweep ... --dry-run`) as a user runs it; *validate* is the sweep's "
             "own \"validated in\" time (compose, validate, resume scan), *wall* adds "
             "process start-up (imports, Hydra). Target (issue 13): validation plus resume "
             "scan of 10,000 jobs within 15 s, 100,000 within 150 s with flat memory.", "",
             "| jobs | directory | validate (s) | wall (s) | ms per job | peak RSS (MiB) "
             "| target |", "|---:|---|---:|---:|---:|---:|---|"]
    for r in result["runs"]:
        for label, key in (("empty", "empty"), ("all finished (resume scan)", "all_finished")):
            x = r[key]
            target = TARGETS_S.get(r["requested"])
            met = "" if target is None or key == "empty" else (
                f"≤ {target:g} s: {'met' if x['wall_s'] <= target else 'MISSED'}")
            lines.append(f"| {x['jobs']:,} | {label} | {x['validate_s']:.1f} | "
                         f"{x['wall_s']:.1f} | {1000 * x['validate_s'] / x['jobs']:.2f} | "
                         f"{x['peak_rss_mib']:,.0f} | {met} |")
    first, last = result["runs"][0]["all_finished"], result["runs"][-1]["all_finished"]
    if len(result["runs"]) > 1:
        per_job = 1024 * (last["peak_rss_mib"] - first["peak_rss_mib"]) \
            / max(1, last["jobs"] - first["jobs"])
        lines += ["", f"Peak memory from {first['jobs']:,} to {last['jobs']:,} jobs: "
                  f"{first['peak_rss_mib']:,.0f} to {last['peak_rss_mib']:,.0f} MiB "
                  f"({per_job:.2f} KiB a job: its name, overrides and config digest are kept, "
                  "its config is not)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="python -m seqbench bench validate",
        description="Time a sweep's validation and resume scan at N jobs (each N in a "
                    "child process, once into an empty directory and once with every job "
                    "finished); write reports/bench/validate.{json,md}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--jobs", type=positive_int, nargs="+", default=[10_000],
                        help="sweep sizes to time (rounded up to whole seeds of the grid)")
    parser.add_argument("--preset", default="demo", help="the sweep preset to cross with seeds")
    parser.add_argument("--out", default="reports/bench", help="where to write the results")
    args = parse_args(parser, argv)
    if isinstance(args, int):  # --help, or a usage error already printed
        return args
    from seqbench.confdir import presets
    from seqbench.config import ensure_registered

    ensure_registered()  # as `sweep` does before it reads the presets (PluginError: exit 2)
    if args.preset not in presets():
        print(f"seqbench: error: --preset={args.preset}: one of {', '.join(presets())}",
              file=sys.stderr)
        return 2
    per_seed = jobs_per_seed(args.preset)
    runs = []
    for n in args.jobs:
        print(f"bench validate: {n:,} jobs ...", flush=True)
        runs.append(measure(args.preset, n, per_seed))
        r = runs[-1]
        print(f"  empty: validated in {r['empty']['validate_s']:.1f} s "
              f"(wall {r['empty']['wall_s']:.1f} s, {r['empty']['peak_rss_mib']:.0f} MiB); "
              f"all finished: {r['all_finished']['validate_s']:.1f} s (wall "
              f"{r['all_finished']['wall_s']:.1f} s, "
              f"{r['all_finished']['peak_rss_mib']:.0f} MiB)", flush=True)
    result = {**machine(), "preset": args.preset, "jobs_per_seed": per_seed, "runs": runs}
    write_result(args.out, "validate", result, markdown)
    return 0
