"""`seqbench bench smoothness`: what the smoothness probe costs a run, measured.

Why: `trainer.smoothness_every=N` (seqbench/smoothness.py) runs, every N optimizer
steps, two extra forward/backward passes of a fixed probe batch (batch_size/accum_steps
rows) and a handful of parameter-sized copies. A sweep that turns it on pays for that in
wall time; this says how much (issue 23), next to what first principles expect.

Variants, per size (the same config otherwise: clip=norm, seed 0, eval off, as
`seqbench bench`'s trainer variants, and the same `seqbench.bench.step.trainer_loop`,
flushes and metrics files included):

  (off)  the trainer with the probe off (`trainer.smoothness_every=0`, the default);
  (N)    the same with `trainer.smoothness_every=N`, for each N of `--every` (100, 10).

They are timed interleaved (off N1 N2, N1 N2 off, N2 off N1, ...: the order rotates each
repeat) after a warm-up, so drift in the machine's speed hits every variant alike, and
each repeat's ratio probe-on time / probe-off time is taken within that repeat (median,
quartiles and range over repeats). Every block and the warm-up are a whole number of
both the flush window and every N, so each block holds the same number of probes
(steps/N) and the same flushes. Blocks are short (the least such number by default) and
repeats many: a burst of load elsewhere then falls on both sides of more ratios.

Expected, from first principles: one probe is two forward+backward passes of
batch_size/accum_steps rows, i.e. 2/accum_steps of a step's forward+backward work; a
step is that work plus the optimizer and clipping, which the probe does not do, so

    slowdown(N) <= 1 + 2 / (N * accum_steps)        (plus the copies and the file)

The copies (x saved, x + Δ saved, ½Δ, three restores, two gradient lists, a difference)
touch about ten parameter-sized tensors per probe: P parameters × 4 bytes × ~10, small
beside the passes for these recurrent models; smoothness.parquet is rewritten at each
flush that has new probe rows, on the metrics writer's background thread. The measured
cost of one probe, in steps, is (slowdown − 1) × N; first principles say about
2/accum_steps.

The probe-off variant is the trainer as every run without the probe uses it (one
attribute test per step is all the probe adds there). The benchmark also checks that
the probe variants trained the same model: their train_loss rows must equal the probe-off
variant's (the probe restores the parameters and the RNG states bit for bit).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import os
import platform
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqbench.bench import positive_int
from seqbench.errors import ArgumentParser, parse_args

SIZES_DEFAULT = ("demo", "default")
EVERY_DEFAULT = (100, 10)
# steps per timed block when --steps is not given (rounded up to a whole unit, 100 at
# N = 10 and 100). Short blocks and many repeats: each ratio pairs blocks run seconds
# apart, so a burst of load elsewhere hits both sides of more of them.
STEPS_DEFAULT: dict[str, int] = {}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def code_state() -> dict[str, Any]:
    """The commit measured and the files under seqbench/ that differ from it (a shared
    checkout may hold someone's uncommitted work); empty values outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                 timeout=10)
            if out.returncode == 0:
                return out.stdout
        return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "seqbench").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or None,
            "uncommitted": changed}


def unit(log_every: int, everies: list[int]) -> int:
    """The least block length that is a whole number of flush windows and of every N."""
    return math.lcm(log_every, *everies)


def round_up(n: int, step: int) -> int:
    return max(step, -(-n // step) * step)


def measure_rotated(variants: list, device, steps: int, repeats: int, warmup: int,
                    progress: Callable[[str], None] = print
                    ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall seconds and process CPU seconds per block of `steps`, per variant,
    interleaved as `bench.step.measure` does, but with the order rotated each repeat
    (off N1 N2, N1 N2 off, N2 off N1, ...): whatever a block leaves behind for the next
    (the metrics write the last flush handed to its background thread, caches) then
    falls on every variant alike. CPU time (all the process's threads) is what the work
    took whether or not other processes held the cores meanwhile."""
    import time

    from seqbench.bench.step import _sync

    for v in variants:
        v.run(warmup)
    _sync(device)
    wall: dict[str, list[float]] = {v.key: [] for v in variants}
    cpu: dict[str, list[float]] = {v.key: [] for v in variants}
    for r in range(repeats):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            v.run(steps)
            _sync(device)
            wall[v.key].append(time.perf_counter() - t0)
            cpu[v.key].append(time.process_time() - c0)
        progress(f"repeat {r + 1}/{repeats}: " + "  ".join(
            f"({k}) {wall[k][-1]:.3f}s ({cpu[k][-1]:.3f} CPU)" for k in wall))
    return wall, cpu


def slowdown(times: list[float], off: list[float], n: int) -> dict[str, Any]:
    """Each repeat's probe-on / probe-off ratio: median, quartiles, range, and the cost
    of one probe in steps, (median - 1) x N."""
    per_repeat = [t / o for t, o in zip(times, off, strict=True)]
    med = statistics.median(per_repeat)
    q1, _, q3 = (statistics.quantiles(per_repeat, n=4, method="inclusive")
                 if len(per_repeat) > 1 else [med] * 3)
    return {"per_repeat": per_repeat, "median": med, "q1": q1, "q3": q3,
            "min": min(per_repeat), "max": max(per_repeat), "probe_cost_steps": (med - 1) * n}


def variant_overrides(everies: list[int]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """key -> (label, overrides) of the variants, probe off first."""
    out = {"off": ("trainer, clip=norm, probe off", ())}
    for n in everies:
        out[f"N={n}"] = (f"trainer, clip=norm, smoothness_every={n}",
                         (f"trainer.smoothness_every={n}",))
    return out


def bench_size(size: str, device, steps: int | None, repeats: int, warmup: int,
               threads: int, everies: list[int], extra: tuple[str, ...] = (),
               progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Time the probe-off and probe-on trainers at one size; the entry of the result."""
    import pyarrow.parquet as pq

    from seqbench.bench.step import SIZES, Variant, trainer_loop
    from seqbench.config import compose, validate

    common = (*SIZES[size], f"trainer.device={device.type}", "trainer.eval_every=0",
              "trainer.progress=off", f"trainer.threads={threads}", "seed=0", "clip=norm",
              *extra)
    base = compose(list(common))
    validate(base)
    log_every, accum = int(base.trainer.log_every), int(base.trainer.accum_steps)
    batch, seq_len = int(base.task.batch_size), int(base.task.seq_len)
    block_unit = unit(log_every, everies)
    steps = round_up(steps or STEPS_DEFAULT.get(size, 1), block_unit)
    warmup = round_up(warmup, block_unit)
    labels = variant_overrides(everies)
    progress(f"size {size}: blocks of {steps} steps, {repeats} repeats after {warmup} "
             f"warm-up steps, variants {', '.join(labels)}")
    loads, code = [load_average()], code_state()
    with tempfile.TemporaryDirectory(prefix="seqbench-bench-smooth-") as tmp:
        variants, trainers = [], {}
        for key, (label, overrides) in labels.items():
            cfg = compose([*common, *overrides])
            validate(cfg)
            run, trainer = trainer_loop(cfg, Path(tmp) / key.replace("=", ""))
            variants.append(Variant(key, label, run, trainer.close))
            trainers[key] = trainer
        params = sum(p.numel() for p in trainers["off"].params)

        def log(line: str) -> None:
            loads.append(load_average())
            progress(line)

        wall, cpu = measure_rotated(variants, device, steps, repeats, warmup, log)
        for v in variants:  # the metrics writes land before the files are read
            v.close()
        off_loss = trainers["off"].metrics.column("train_loss")
        checks = {}
        for key, trainer in trainers.items():
            path = trainer.run_dir / "smoothness.parquet"
            rows = pq.read_table(path).num_rows if path.exists() else 0
            loss = trainer.metrics.column("train_loss")
            checks[key] = {"steps_run": int(trainer.state.steps_completed),
                           "smoothness_rows": rows,
                           "same_train_loss_as_off": bool(len(loss) == len(off_loss)
                                                          and (loss == off_loss).all())}
    tokens_per_block = batch * seq_len * steps
    rows: dict[str, dict[str, Any]] = {}
    for key, ts in wall.items():
        med = statistics.median(ts)
        row = {"label": labels[key][0], "median_s": med, "min_s": min(ts), "max_s": max(ts),
               "cpu_median_s": statistics.median(cpu[key]),
               "tokens_per_s": tokens_per_block / med, **checks[key]}
        if key != "off":
            n = int(key.split("=")[1])
            row.update({
                "every": n, "probes_per_block": steps // n,
                "slowdown": slowdown(ts, wall["off"], n),
                "cpu_slowdown": slowdown(cpu[key], cpu["off"], n),
                "expected_slowdown": 1 + 2 / (n * accum),
                "expected_probe_cost_steps": 2 / accum,
            })
        rows[key] = row
    return {
        "size": size, "overrides": list(SIZES[size]) + list(extra),
        "tokens_per_step": batch * seq_len, "batch_size": batch, "seq_len": seq_len,
        "accum_steps": accum, "probe_rows": batch // accum, "parameters": params,
        "steps_per_block": steps, "repeats": repeats, "warmup_steps": warmup,
        "log_every": log_every, "variants": rows, "code": code,
        "load_average": {"start": loads[0], "end": loads[-1],
                         "max_1min": max((x[0] for x in loads if x), default=None)},
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }


def machine(device) -> dict[str, Any]:
    from seqbench.bench.step import machine as step_machine

    return {**step_machine(device), "cpu_model": cpu_model()}


def _code_words(code: dict[str, Any] | None) -> str:
    if not code or not code.get("commit"):
        return ""
    words = f" Code: commit `{code['commit']}`"
    if code.get("uncommitted"):
        words += (", with uncommitted changes under seqbench/ ("
                  + ", ".join(f"`{f}`" for f in code["uncommitted"]) + ")")
    return words + (f"; {code['remark']}" if code.get("remark") else "") + "."


def _against_expected(row: dict[str, Any]) -> str:
    """One clause: where the first-principles bound falls in the measured quartiles."""
    c, bound = row["cpu_slowdown"], row["expected_slowdown"]
    if c["q1"] <= bound <= c["q3"]:
        where = "within the quartiles"
    elif bound < c["q1"]:
        where = "below the lower quartile: the probe cost more than expected"
    else:
        where = "above the upper quartile: the probe cost less than expected"
    return (f"at N = {row['every']} the median slowdown is {c['median']:.3f} "
            f"(quartiles {c['q1']:.3f}–{c['q3']:.3f}) and the bound {bound:.3f} lies {where}")


def _spread(sd: dict[str, Any]) -> str:
    return (f"{sd['median']:.3f} [{sd['q1']:.3f}–{sd['q3']:.3f}] "
            f"({sd['min']:.3f}–{sd['max']:.3f})")


def render_markdown(doc: dict[str, Any]) -> str:
    from seqbench.bench.step import page_header

    m = doc["machine"]
    lines = [
        *page_header(m, "seqbench bench smoothness"),
        "Produced by `python -m seqbench bench smoothness` (see `--help`; "
        "seqbench/bench/smoothness_cost.py). What the smoothness probe "
        "(`trainer.smoothness_every=N`: two extra forward+backward passes of a fixed probe "
        "batch every N steps) costs a run: the trainer with clip=norm, seed 0 and "
        "evaluation off, with the probe off and with N = "
        + ", ".join(str(e) for e in doc["every"]) + ", the same config otherwise, timed "
        "interleaved after a warm-up (the order rotated each repeat). Tokens per second "
        "are the median over repeats of wall time. The slowdown is probe-on time / "
        "probe-off time within each repeat (the median over repeats, [its quartiles] and "
        "(its range)), in wall time and in the process's CPU time (all its threads): on an "
        "idle machine with one torch thread the two agree; on a shared one, CPU time is "
        "the work itself and wall time adds whatever the other processes took. Blocks and "
        "warm-up are whole numbers of flush windows and of every N, so every block holds "
        "the same number of probes.",
        "",
        "Expected from first principles: a probe is two forward+backward passes of "
        "batch_size/accum_steps rows, i.e. 2/accum_steps of a step's forward+backward "
        "work; a step is that work plus the optimizer step and clipping, which the probe "
        "does not do, so the slowdown should be at most 1 + 2/(N·accum_steps), plus the "
        "parameter copies (about ten parameter-sized tensors per probe) and the rewrite "
        "of smoothness.parquet at the flushes with new probe rows. *Probe cost* is the "
        "measured cost of one probe in training steps, (slowdown − 1) × N, against "
        "≈ 2/accum_steps from first principles.",
    ]
    if doc.get("note"):
        lines += ["", f"**Conditions.** {doc['note']}"]
    for entry in doc["sizes"].values():
        load = entry["load_average"]
        ld = (f"load average (1, 5, 15 min) {', '.join(f'{x:.2f}' for x in load['start'])} "
              f"at the start, {', '.join(f'{x:.2f}' for x in load['end'])} at the end, "
              f"at most {load['max_1min']:.2f} (1 min) between repeats, on "
              f"{m['cpu_count']} cores (this benchmark adds about {m['threads']})"
              if load["start"] else "load average unknown")
        # this benchmark itself keeps `threads` cores busy; more than that is someone else
        busy = load["max_1min"] is not None and load["max_1min"] > m["threads"] + 0.5
        lines += [
            "", f"## size `{entry['size']}`", "",
            f"Overrides: `{' '.join(entry['overrides']) or '(the train defaults)'}`; "
            f"{entry['tokens_per_step']:,} tokens per step ({entry['batch_size']} × "
            f"{entry['seq_len']}, accum_steps {entry['accum_steps']}: probe batch "
            f"{entry['probe_rows']} rows), {entry['parameters']:,} parameters; blocks of "
            f"{entry['steps_per_block']} steps (flush every {entry['log_every']}), "
            f"{entry['repeats']} repeats after {entry['warmup_steps']} warm-up steps; "
            f"measured {entry['date']}; {ld}"
            + (" — **the machine was shared** (other processes were running)." if busy
               else ".") + _code_words(entry.get("code")),
            "",
            "| variant | tokens/s (median) | block wall time min–max (s) | probes per "
            "block | slowdown, wall time | slowdown, CPU time | expected ≤ | probe cost in "
            "steps: wall, CPU (expected) | smoothness rows | train_loss as (off) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for key, row in entry["variants"].items():
            head = (f"| ({key}) {row['label']} | {row['tokens_per_s']:,.0f} | "
                    f"{row['min_s']:.3f}–{row['max_s']:.3f} | ")
            if key == "off":
                lines.append(head + f"0 | 1 | 1 | 1 | – | {row['smoothness_rows']} | – |")
                continue
            w, c = row["slowdown"], row["cpu_slowdown"]
            lines.append(
                head + f"{row['probes_per_block']} | {_spread(w)} | {_spread(c)} | "
                f"{row['expected_slowdown']:.3f} | {w['probe_cost_steps']:.2f}, "
                f"{c['probe_cost_steps']:.2f} ({row['expected_probe_cost_steps']:.0f}) | "
                f"{row['smoothness_rows']} | "
                f"{'same' if row['same_train_loss_as_off'] else '**differs**'} |")
        words = [_against_expected(row) for key, row in entry["variants"].items()
                 if key != "off"]
        lines += ["", "Measured against expected (CPU time): " + "; ".join(words) + "."]
    return "\n".join(lines) + "\n"


def write_results(doc: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Merge this run's sizes into smoothness-<device>.json and re-render the .md."""
    from seqbench.bench.step import write_results as write

    return write(doc, out_dir, prefix="smoothness-", render=render_markdown)


def table(entry: dict[str, Any]) -> str:
    out = [f"size {entry['size']}: {entry['tokens_per_step']:,} tokens/step, blocks of "
           f"{entry['steps_per_block']} steps"]
    for key, row in entry["variants"].items():
        line = f"  ({key}) {row['label']:<42} {row['tokens_per_s']:>10,.0f} tokens/s"
        if key != "off":
            w, c = row["slowdown"], row["cpu_slowdown"]
            line += (f"  slowdown wall {w['median']:.3f} [{w['q1']:.3f}–{w['q3']:.3f}], "
                     f"CPU {c['median']:.3f} [{c['q1']:.3f}–{c['q3']:.3f}], expected <= "
                     f"{row['expected_slowdown']:.3f}")
        out.append(line)
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m seqbench bench smoothness",
        description=(
            "Time the trainer (clip=norm, seed 0, eval off) with the smoothness probe off "
            "and with trainer.smoothness_every=N for each N, interleaved; print tokens/s "
            "and the slowdown probe-on / probe-off beside the first-principles bound "
            "1 + 2/(N * accum_steps); write reports/bench/smoothness-<device>.md and .json."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from seqbench.bench.step import SIZES

    p.add_argument("--sizes", nargs="+", default=list(SIZES_DEFAULT), choices=list(SIZES),
                   help="model/data sizes (as `seqbench bench --size`)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--every", nargs="+", type=positive_int, default=list(EVERY_DEFAULT),
                   help="probe intervals N to time against the probe off")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="steps per timed block, rounded up to a whole number of flush "
                        "windows and of every N (None: that least whole number)")
    p.add_argument("--repeats", type=positive_int, default=20, help="timed blocks per variant")
    p.add_argument("--warmup", type=positive_int, default=100,
                   help="warm-up steps per variant, rounded up as --steps")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads on CPU")
    p.add_argument("--note", default="",
                   help="a sentence on the conditions, written into the .md")
    p.add_argument("--out", type=Path, default=Path("reports/bench"),
                   help="where smoothness-<device>.md and .json go")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p


def main(argv: list[str]) -> int:
    args = parse_args(parser(), argv)
    if isinstance(args, int):  # --help, or a usage error already printed
        return args
    import torch

    from seqbench.bench.step import pick_device

    device = pick_device(args.device)
    if device is None:
        return 2
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    everies = sorted(set(args.every), reverse=True)
    doc: dict[str, Any] = {"machine": machine(device), "every": everies, "note": args.note,
                           "sizes": {}}
    print(f"seqbench bench smoothness on {doc['machine'].get('device_name', device)}: torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s), load average "
          f"{load_average()}")
    for size in args.sizes:
        entry = bench_size(size, device, args.steps, args.repeats, args.warmup,
                           args.threads if device.type == "cpu" else 0, everies)
        doc["sizes"][size] = entry
        print(table(entry), flush=True)
    if not args.no_write:
        paths = write_results(doc, args.out)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0
