"""`seqbench bench packing`: K concurrent `train` processes on one device, per K.

Why: the runs seqbench is made for are small (the study's 1 x 128 LSTM, the 2 x 512 of
`lstm_clipping`), and one of them keeps a GPU busy for a small part of its time: each
time step is a handful of small kernels, launched one after another from Python. A
cluster that gives every run its own GPU pays for the idle rest (issue 25). Packing K runs
onto one GPU as K separate processes is the simplest way to use it, and the baseline
anything cleverer would have to beat. This measures what it buys: for each model size
and K, K `python -m seqbench train` processes start together (seeds 0..K-1, each with
cores / K threads) and the wall time until the last one ends gives

    runs per hour = K x 3600 / wall,

start-up (Python, torch, CUDA context, Hydra) and evaluations included, as a sweep pays
them. Per run it also reads the run's own clock from summary.json: start-up (launch to
first step) and loop (first step to end). On CUDA, `nvidia-smi` is sampled every 0.5 s:
GPU utilisation (the share of time a kernel was running: a busy GPU by that measure can
still be mostly idle lanes) and memory, in all and per process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqbench.bench import machine, write_result
from seqbench.errors import ArgumentParser, parse_args

# The runs of the presets the issue names, as each preset trains them.
SIZES: dict[str, tuple[str, ...]] = {
    # study.yaml: a 1 x 128 LSTM, BPTT 128, 16 streams, 1,000 steps, evaluation at 500, 1000
    "lstm128": ("model=lstm", "task.seq_len=128", "task.batch_size=16", "model.embed_dim=32",
                "model.hidden_size=128", "trainer.log_every=25", "trainer.eval_every=500",
                "trainer.eval_batches=0", "optim=sgd", "optim.lr=1", "clip=norm",
                "clip.max_norm=1.0"),
    # lstm_clipping.yaml: 2 x 512 LSTM, BPTT 256, 32 streams (the preset runs 5,000 steps)
    "lstm512": ("model=lstm", "task.seq_len=256", "task.batch_size=32", "model.embed_dim=128",
                "model.hidden_size=512", "model.num_layers=2", "model.dropout=0.1",
                "trainer.log_every=100", "trainer.eval_every=500", "trainer.eval_batches=0",
                "optim=sgd", "optim.lr=1", "clip=norm", "clip.max_norm=1.0"),
}
PRESET_STEPS = {"lstm128": 1000, "lstm512": 5000}
DEFAULT_PLAN = {"cuda": {"lstm128": [1, 4, 16, 32], "lstm512": [1, 4, 8]},
                "cpu": {"lstm128": [1, 2]}}


class GpuSampler:
    """`nvidia-smi` every `every` s in a thread: utilisation, memory, memory per pid."""

    def __init__(self, every: float = 0.5):
        self.every, self.util, self.mem = every, [], []
        self.per_pid: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _query(self, args: list[str]) -> list[list[str]]:
        out = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
        return [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines()
                if line.strip()]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                for util, mem in self._query(["--query-gpu=utilization.gpu,memory.used"])[:1]:
                    self.util.append(float(util))
                    self.mem.append(float(mem))
                for pid, used in self._query(["--query-compute-apps=pid,used_memory"]):
                    if used.isdigit():
                        self.per_pid[int(pid)] = max(self.per_pid.get(int(pid), 0), int(used))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(self.every)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def launch(size: str, k: int, steps: int, device: str, workdir: Path) -> dict[str, Any]:
    """K runs side by side; their wall time, clocks and statuses."""
    cores = os.cpu_count() or 1
    threads = max(1, cores // k)
    procs, dirs = [], []
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    for seed in range(k):
        run_dir = workdir / f"{size}-k{k}-s{seed}"
        dirs.append(run_dir)
        cmd = [sys.executable, "-m", "seqbench", "train", *SIZES[size], f"seed={seed}",
               f"trainer.max_steps={steps}", f"trainer.device={device}",
               f"trainer.threads={threads}", "trainer.progress=off",
               f"hydra.run.dir={run_dir}"]
        log = open(workdir / f"{size}-k{k}-s{seed}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    codes = []
    for p, log in procs:
        codes.append(p.wait())
        log.close()
    wall = time.time() - started
    startup, loop, statuses = [], [], []
    for run_dir in dirs:
        try:
            s = json.loads((run_dir / "summary.json").read_text())
        except (OSError, ValueError):
            statuses.append("no summary")
            continue
        statuses.append(s.get("status", "?"))
        t = s["timing"]
        if t.get("first_step_at") and t.get("ended_at"):
            startup.append(t["first_step_at"] - started)
            loop.append(t["ended_at"] - t["first_step_at"])
    return {"pids": [p.pid for p, _ in procs], "wall_s": wall, "codes": codes,
            "statuses": statuses, "startup_s": startup, "loop_s": loop, "threads": threads}


def measure(size: str, ks: list[int], steps: int, device: str,
            workdir: Path) -> Iterator[dict[str, Any]]:
    # one short run first: builds the token cache and warms the file system
    launch(size, 1, 20, device, workdir / "warmup")
    base = None
    for k in ks:
        sampler = GpuSampler() if device == "cuda" else None
        if sampler:
            with sampler:
                r = launch(size, k, steps, device, workdir / f"k{k}")
        else:
            r = launch(size, k, steps, device, workdir / f"k{k}")
        rph = k * 3600 / r["wall_s"]
        base = base or rph
        loop = statistics.median(r["loop_s"]) if r["loop_s"] else float("nan")
        start = statistics.median(r["startup_s"]) if r["startup_s"] else float("nan")
        full = PRESET_STEPS[size]
        row = {"size": size, "k": k, "steps": steps, "threads_per_run": r["threads"],
               "wall_s": round(r["wall_s"], 1), "runs_per_hour": round(rph, 1),
               "speedup_vs_k1": round(rph / base, 2),
               "median_startup_s": round(start, 1), "median_loop_s": round(loop, 1),
               # the preset's whole run, from this K's start-up and loop rate
               "preset_steps": full,
               "preset_runs_per_hour_est": round(k * 3600 / (start + loop * full / steps), 1),
               "completed": sum(s == "completed" for s in r["statuses"]),
               "statuses": r["statuses"], "exit_codes": r["codes"]}
        if sampler:
            row.update({
                "gpu_util_mean": round(statistics.fmean(sampler.util), 1) if sampler.util
                else None,
                "gpu_util_max": max(sampler.util, default=None),
                "gpu_mem_max_mib": max(sampler.mem, default=None),
                "per_run_mem_max_mib": max((sampler.per_pid.get(p, 0) for p in r["pids"]),
                                           default=None)})
        print(f"  {size:8s} K={k:3d}  wall {row['wall_s']:7.1f} s  {row['runs_per_hour']:8.1f}"
              f" runs/h ({row['speedup_vs_k1']:.2f}x)  loop {row['median_loop_s']} s  "
              f"startup {row['median_startup_s']} s  completed {row['completed']}/{k}"
              + (f"  util {row.get('gpu_util_mean')}%  mem {row.get('gpu_mem_max_mib')} MiB"
                 if sampler else ""), flush=True)
        yield row


def markdown(result: dict[str, Any]) -> str:
    gpu = result["device"] == "cuda"
    lines = [f"# `seqbench bench packing` on {result['device_name']}", "",
             f"{result['date']}, {result['cpus']} CPU cores, Python {result['python']}, torch "
             f"{result['torch']}. K `python -m seqbench train` processes started together on "
             "one device (seeds 0..K-1, cores / K threads each); *runs per hour* = K × 3600 / "
             "the wall time until the last ended, start-up and evaluations included. *Loop*: "
             "a run's own clock, first step to end; *start-up*: launch to first step (medians "
             "over the K runs). *Preset est.*: runs per hour of the preset's whole run, "
             "from this K's start-up and loop rate (an extrapolation, not a measurement)."
             + (" GPU utilisation and memory: `nvidia-smi` every 0.5 s; utilisation is the "
                "share of time any kernel ran, not how full the GPU was." if gpu else ""), "",
             "| model | K | steps | wall (s) | runs/h | vs K=1 | loop (s) | start-up (s) | "
             "preset est. runs/h | completed |" + (" GPU util mean / max (%) | GPU memory "
                                                   "(MiB) | per run (MiB) |" if gpu else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
             + ("---:|---:|---:|" if gpu else "")]
    for r in result["rows"]:
        line = (f"| {r['size']} | {r['k']} | {r['steps']} | {r['wall_s']} | "
                f"{r['runs_per_hour']} | {r['speedup_vs_k1']:.2f}× | {r['median_loop_s']} | "
                f"{r['median_startup_s']} | {r['preset_runs_per_hour_est']} "
                f"({r['preset_steps']} steps) | {r['completed']}/{r['k']} |")
        if gpu:
            line += (f" {r.get('gpu_util_mean')} / {r.get('gpu_util_max')} | "
                     f"{r.get('gpu_mem_max_mib')} | {r.get('per_run_mem_max_mib')} |")
        lines.append(line)
    lines += ["", "Models: " + "; ".join(f"`{k}`: {' '.join(v)}" for k, v in SIZES.items()
                                         if any(r['size'] == k for r in result["rows"])), ""]
    return "\n".join(lines)


def parse_plan(items: list[str]) -> dict[str, list[int]]:
    plan = {}
    for item in items:
        size, _, ks = item.partition("=")
        if size not in SIZES:
            raise argparse.ArgumentTypeError(f"--plan {item}: size must be one of {list(SIZES)}")
        try:
            plan[size] = [int(k) for k in ks.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"--plan {item}: K must be integers") from None
        if not plan[size] or min(plan[size]) < 1:
            raise argparse.ArgumentTypeError(f"--plan {item}: every K must be >= 1")
    return plan


def main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="python -m seqbench bench packing",
        description="Runs per hour with K concurrent `train` processes on one device; "
                    "writes reports/bench/packing-<device>.{json,md}.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--plan", nargs="+", default=None, metavar="SIZE=K1,K2",
                        help=f"sizes and K values (default on cuda: "
                             f"{DEFAULT_PLAN['cuda']}; on cpu: {DEFAULT_PLAN['cpu']})")
    parser.add_argument("--steps", nargs="+", default=["lstm128=1000", "lstm512=1000"],
                        metavar="SIZE=STEPS", help="training steps per run, per size")
    parser.add_argument("--out", default="reports/bench", help="where to write the results")
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        plan = parse_plan(args.plan) if args.plan else DEFAULT_PLAN[device]
        steps = {k: int(v) for k, _, v in (s.partition("=") for s in args.steps)}
    except (argparse.ArgumentTypeError, ValueError) as e:
        print(f"seqbench: error: {e}", file=sys.stderr)
        return 2
    name = (torch.cuda.get_device_name(0) if device == "cuda"
            else f"CPU ({os.cpu_count()} cores)")
    slug = "-".join("".join(c if c.isalnum() else " " for c in name).lower().split())
    result = {**machine(), "torch": torch.__version__, "device": device, "device_name": name,
              "rows": []}
    with tempfile.TemporaryDirectory(prefix="seqbench-bench-packing-") as tmp:
        for size, ks in plan.items():
            for row in measure(size, ks, steps.get(size, PRESET_STEPS[size]), device,
                               Path(tmp)):
                result["rows"].append(row)  # written after every K: a cut-off run keeps
                write_result(args.out, f"packing-{slug}", result, markdown)  # what it has
    return 0
