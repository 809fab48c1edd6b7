"""`seqbench bench sweep`: a preset's whole sweep under each local launcher, timed.

Why: on a workstation the question is not how fast one step is but how long the sweep
takes end to end, and whether running jobs side by side (joblib, torch threads split
between them) beats one job after another with all threads (basic). The same preset runs
once per launcher, from scratch (`--force`, a fresh directory), in a child process, as a
user would run it.

Per-job overhead ("launch to first step") is measured from the runs' own clocks under
the basic launcher, where jobs run one after another: the time between one run writing
its final summary and the next run taking its first step covers everything a job costs
besides training (Hydra's job set-up, building the data and the model, the summary).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from seqbench.errors import ArgumentParser, parse_args

LAUNCHERS = ("basic", "joblib")
TARGET_OVERHEAD_S = 2.0


def run_sweep(preset: str, launcher: str, overrides: list[str], workdir: Path) -> dict:
    cmd = [sys.executable, "-m", "seqbench", "sweep", preset, "--force", *overrides,
           f"hydra/launcher={launcher}"]
    t0 = time.time()
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.time() - t0
    if out.returncode not in (0, 1):
        raise RuntimeError(f"sweep failed ({out.returncode}): {out.stderr[-2000:]}")
    summaries = []
    from seqbench.sweep import sweep_dir_name

    for p in sorted((workdir / "runs" / sweep_dir_name(preset, overrides))
                    .glob("*/summary.json")):
        s = json.loads(p.read_text())
        if s.get("timing", {}).get("first_step_at") is not None:
            summaries.append(s)
    loop = sum(s["timing"]["ended_at"] - s["timing"]["first_step_at"] for s in summaries)
    result = {"launcher": launcher, "wall_s": wall, "jobs": len(summaries),
              "run_loop_s": loop, "statuses": _count([s["status"] for s in summaries]),
              "threads_per_run": sorted({s["config"].get("trainer.threads") for s in summaries})}
    if launcher == "basic" and len(summaries) > 1:
        result["overhead"] = job_overhead(summaries, t0)
    return result


def job_overhead(summaries: list[dict], started: float) -> dict[str, float]:
    """Launch-to-first-step per job, from consecutive runs of a one-at-a-time sweep."""
    runs = sorted(summaries, key=lambda s: s["timing"]["first_step_at"])
    gaps = [b["timing"]["first_step_at"] - a["timing"]["ended_at"]
            for a, b in zip(runs, runs[1:])]
    setup = [s["timing"]["first_step_at"] - s["timing"]["created_at"] for s in runs]
    return {"median_s": statistics.median(gaps), "max_s": max(gaps),
            "p90_s": sorted(gaps)[int(0.9 * (len(gaps) - 1))],
            "trainer_setup_median_s": statistics.median(setup),
            "first_job_s": runs[0]["timing"]["first_step_at"] - started,
            "met": statistics.median(gaps) <= TARGET_OVERHEAD_S}


def _count(values: list[str]) -> dict[str, int]:
    return {v: values.count(v) for v in sorted(set(values))}


def render_markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [f"# seqbench bench sweep: preset `{doc['preset']}`", "",
             f"{m['cpu_count']} CPU cores ({m['processor']}), torch {m['torch']}, Python "
             f"{m['python']}, {m['platform']}; measured {doc['date']}.", "",
             f"Produced by `python -m seqbench bench sweep --preset {doc['preset']}"
             + (" " + " ".join(doc["overrides"]) if doc["overrides"] else "") + "`: the "
             "whole sweep from scratch once per launcher (`--force`, fresh directory), "
             "validation and report included.", "",
             "| launcher | jobs | wall time (s) | time in the runs' loops (s) | torch threads "
             "per run | outcomes |", "|---|---:|---:|---:|---|---|"]
    for r in doc["launchers"].values():
        lines.append(f"| {r['launcher']} | {r['jobs']} | {r['wall_s']:.1f} | "
                     f"{r['run_loop_s']:.1f} | {r['threads_per_run']} | "
                     f"{', '.join(f'{k} {v}' for k, v in r['statuses'].items())} |")
    if "speedup" in doc:
        lines += ["", f"joblib / basic speed-up: **{doc['speedup']:.2f}x** "
                  f"(faster: `{doc['faster']}`)."]
    o = doc["launchers"].get("basic", {}).get("overhead")
    if o:
        lines += ["", "Per-job overhead under `basic` (one run's final summary to the next "
                  "run's first step):", "",
                  f"- median {o['median_s']:.2f} s, p90 {o['p90_s']:.2f} s, max "
                  f"{o['max_s']:.2f} s (target ≤ {TARGET_OVERHEAD_S:g} s: "
                  f"{'met' if o['met'] else '**missed**'});",
                  f"- of which building data and model in the trainer: median "
                  f"{o['trainer_setup_median_s']:.2f} s;",
                  f"- the first job (process start, imports, validating every job, "
                  f"set-up): {o['first_job_s']:.1f} s."]
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m seqbench bench sweep",
        description="Run a preset's sweep from scratch under the basic launcher (one run "
                    "after another) and under joblib (runs side by side, torch threads "
                    "split between them); print and write the wall times, the faster "
                    "launcher, and the per-job overhead (target: launch to first step "
                    "<= 2 s on CPU) to reports/bench/sweep-<preset>.md and .json.")
    p.add_argument("--preset", default="demo", help="sweep preset (default demo)")
    p.add_argument("--launcher", action="append", choices=LAUNCHERS,
                   help="launchers to time, repeatable (default: both)")
    p.add_argument("--out", type=Path, default=Path("reports/bench"))
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides for every job")
    return p


def main_sweep(argv: list[str]) -> int:
    args = parse_args(parser(), argv)
    if isinstance(args, int):
        return args
    launchers = args.launcher or list(LAUNCHERS)
    doc: dict[str, Any] = {
        "preset": args.preset, "overrides": args.overrides, "launchers": {},
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
    }
    for launcher in launchers:
        with tempfile.TemporaryDirectory(prefix="seqbench-sweep-bench-") as tmp:
            print(f"sweep {args.preset} with {launcher} ...", flush=True)
            r = run_sweep(args.preset, launcher, args.overrides, Path(tmp))
        doc["launchers"][launcher] = r
        print(f"  {r['jobs']} jobs in {r['wall_s']:.1f} s", flush=True)
    if {"basic", "joblib"} <= set(doc["launchers"]):
        b, j = doc["launchers"]["basic"]["wall_s"], doc["launchers"]["joblib"]["wall_s"]
        doc["speedup"], doc["faster"] = b / j, "joblib" if j < b else "basic"
    text = render_markdown(doc)
    print(text)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"sweep-{args.preset}"
        stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
        stem.with_suffix(".md").write_text(text)
        print(f"wrote {stem}.md, {stem}.json")
    return 0
