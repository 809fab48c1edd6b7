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

`--bundles 1 2` times the preset through the single-node SLURM cluster of
scripts/slurm/up.sh instead (`hydra/launcher=slurm_local`), once per K runs per array
task (`hydra.launcher.runs_per_gpu=K`, issue 25), with K CPUs per task so that every run
has one core and one thread at every K: on a CPU the runs of a bundle cannot share
anything, so what it shows is the cost of bundling (a parent process per task, a child
per run) against one SLURM job per run, not the GPU's gain.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
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


def run_bundles(preset: str, k: int, overrides: list[str], workdir: Path) -> dict:
    """The preset through slurm_local at K runs per array task, K CPUs per task."""
    extra = [f"hydra.launcher.runs_per_gpu={k}", f"hydra.launcher.cpus_per_task={k}"]
    r = run_sweep(preset, "slurm_local", [*overrides, *extra], workdir)
    from seqbench.sweep import sweep_dir_name

    # submitit's folders: one per array task (JOBID_TASK), plus one for the array itself
    runs = workdir / "runs" / sweep_dir_name(preset, overrides)
    folders = (runs / ".submitit").glob("*")
    r.update(k=k, cpus_per_task=k, runs_per_hour=r["jobs"] * 3600 / r["wall_s"],
             tasks=sum(1 for f in folders if re.fullmatch(r"\d+_\d+", f.name)),
             mates_wait_s=bundle_mates_wait(runs))
    return r


def bundle_mates_wait(runs: Path) -> float:
    """Core-seconds the runs' cores sat idle waiting for a slower run of the same task:
    a task (and its cores) ends with its last run. 0 at K=1."""
    from omegaconf import OmegaConf

    ends: dict[str, list[float]] = {}
    for p in runs.glob("*/summary.json"):
        ended = json.loads(p.read_text()).get("timing", {}).get("ended_at")
        task = OmegaConf.load(p.parent / ".hydra" / "hydra.yaml").hydra.job.id
        if ended is not None:
            ends.setdefault(str(task), []).append(ended)
    return sum(max(e) - x for e in ends.values() for x in e)


def render_bundles(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    rows = doc["bundles"]
    lines = [f"# seqbench bench sweep --bundles: preset `{doc['preset']}` on the local SLURM "
             "cluster", "",
             f"{m['cpu_count']} CPU cores ({m['processor']}), torch {m['torch']}, Python "
             f"{m['python']}, {m['platform']}; measured {doc['date']}.", "",
             f"Produced by `python -m seqbench bench sweep --preset {doc['preset']} --bundles "
             + " ".join(str(k) for k in doc["ks"])
             + (f" --repeat {doc['repeat']}" if doc["repeat"] > 1 else "")
             + (" " + " ".join(doc["overrides"]) if doc["overrides"] else "") + "` with "
             "scripts/slurm/up.sh's cluster running: the whole sweep from scratch through "
             "`hydra/launcher=slurm_local` once per K (`hydra.launcher.runs_per_gpu=K`, "
             "`hydra.launcher.cpus_per_task=K`: one core and one thread a run at every K), "
             "validation and report included. On a CPU the runs of a bundle share nothing, "
             "so this measures what bundling costs, not what a GPU gains "
             "(reports/bench/packing-nvidia-h200.md).", "",
             "| K runs per task | jobs | array tasks | wall time (s) | runs per hour | vs K=1 "
             "| time in the runs' loops (s) | cores idle waiting for a bundle-mate (s) "
             "| torch threads per run | outcomes |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    walls: dict[int, list[float]] = {}
    for r in rows:
        walls.setdefault(r["k"], []).append(r["wall_s"])
    base = statistics.median(walls.get(1) or [rows[0]["wall_s"]]) if rows else None
    for r in rows:
        lines.append(f"| {r['k']} | {r['jobs']} | {r['tasks']} | {r['wall_s']:.1f} | "
                     f"{r['runs_per_hour']:.0f} | {base / r['wall_s']:.2f}x | "
                     f"{r['run_loop_s']:.1f} | {r.get('mates_wait_s', 0):.1f} | "
                     f"{r['threads_per_run']} | "
                     f"{', '.join(f'{k} {v}' for k, v in r['statuses'].items())} |")
    if len(rows) > len(walls):
        lines += ["", "Median wall time per K: " + ", ".join(
            f"K={k} {statistics.median(w):.1f} s ({base / statistics.median(w):.2f}x)"
            for k, w in sorted(walls.items())) + "; the rounds ran the K values in "
            "alternating order (first round as given, then reversed)."]
    if doc.get("note"):
        lines += ["", doc["note"]]
    return "\n".join(lines) + "\n"


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
    p.add_argument("--bundles", type=int, nargs="+", metavar="K",
                   help="instead: time the sweep through the local SLURM cluster "
                        "(hydra/launcher=slurm_local) at each K runs per array task, K CPUs "
                        "per task; writes reports/bench/sweep-bundles.md and .json")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="with --bundles: N rounds, the K values in alternating order")
    p.add_argument("--note", default="", help="a sentence for the written report "
                                              "(e.g. what else ran on the machine)")
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
    if args.bundles:
        if min(args.bundles) < 1:
            print("seqbench: error: --bundles: every K must be >= 1", file=sys.stderr)
            return 2
        doc.update(bundles=[], note=args.note, ks=args.bundles, repeat=max(1, args.repeat))
        order = [k for i in range(doc["repeat"])
                 for k in (args.bundles if i % 2 == 0 else args.bundles[::-1])]
        for k in order:
            with tempfile.TemporaryDirectory(prefix="seqbench-sweep-bench-") as tmp:
                print(f"sweep {args.preset} on slurm_local, {k} runs per task ...", flush=True)
                r = run_bundles(args.preset, k, args.overrides, Path(tmp))
            doc["bundles"].append(r)
            print(f"  {r['jobs']} jobs in {r['tasks']} tasks, {r['wall_s']:.1f} s", flush=True)
        del doc["launchers"]
        return _write(doc, render_bundles(doc), args, "sweep-bundles")
    for launcher in launchers:
        with tempfile.TemporaryDirectory(prefix="seqbench-sweep-bench-") as tmp:
            print(f"sweep {args.preset} with {launcher} ...", flush=True)
            r = run_sweep(args.preset, launcher, args.overrides, Path(tmp))
        doc["launchers"][launcher] = r
        print(f"  {r['jobs']} jobs in {r['wall_s']:.1f} s", flush=True)
    if {"basic", "joblib"} <= set(doc["launchers"]):
        b, j = doc["launchers"]["basic"]["wall_s"], doc["launchers"]["joblib"]["wall_s"]
        doc["speedup"], doc["faster"] = b / j, "joblib" if j < b else "basic"
    return _write(doc, render_markdown(doc), args, f"sweep-{args.preset}")


def _write(doc: dict[str, Any], text: str, args: argparse.Namespace, name: str) -> int:
    print(text)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / name
        stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
        stem.with_suffix(".md").write_text(text)
        print(f"wrote {stem}.md, {stem}.json")
    return 0
