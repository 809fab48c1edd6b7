"""`seqbench bench`: the trainer's step against a bare PyTorch loop, in one process.

Why: a benchmark of clipping methods is only worth running at scale if its own
bookkeeping (per-step gradient norms, divergence flags, metrics files) costs next to
nothing. This measures that cost directly: the same model, data, optimizer and seed as

  (a) a bare loop written here: forward, loss, backward, optimizer step; nothing else;
  (a2) that loop with `torch.nn.utils.clip_grad_norm_` every step: the loop a user
       writes to get the number seqbench records on every step, the gradient norm;
  (b) seqbench's trainer with clip=none (norms, flags, flushes, metrics.parquet);
  (c) clip=value, (d) clip=norm, (e) an adaptive method (autoclip),
  (f) clip=norm with per-parameter logging on,

timed interleaved (a b c ... a b c ...) after a warm-up, so drift in the machine's
speed (other processes, thermal, turbo) hits every variant alike, and reported as the
median over repeats of tokens per second and as ratios to (a). The targets are ratios:
(b)/(a), the bookkeeping against a loop that computes nothing; (d)/(a2), the trainer
against the fair anchor, a loop that computes the same norm and clips by it; (d)/(b),
what clipping adds inside the trainer.
Each timed block is a whole number of flush windows, so the trainer's host reads and
file writes are inside the measurement, as they are in a run. On CUDA every block of
steps between flushes runs under `torch.cuda.set_sync_debug_mode("error")`: a host sync
there fails the benchmark instead of silently slowing it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from seqbench.errors import ArgumentParser, parse_args

# Model and data sizes. `demo` is the demo sweep's model (CPU); `default` is what
# `python -m seqbench train` trains; the lstm512 sizes are the lstm_clipping preset's.
SIZES: dict[str, tuple[str, ...]] = {
    "demo": ("task.seq_len=64", "task.batch_size=16", "model.embed_dim=32",
             "model.hidden_size=64", "model.num_layers=1"),
    "default": (),
    "lstm512-256": ("task.seq_len=256", "task.batch_size=32", "model.embed_dim=128",
                    "model.hidden_size=512", "model.num_layers=2", "model.dropout=0.1"),
    "lstm512-1024": ("task.seq_len=1024", "task.batch_size=32", "model.embed_dim=128",
                     "model.hidden_size=512", "model.num_layers=2", "model.dropout=0.1"),
}

# name -> (label, overrides); the bare loop is built separately
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "b": ("trainer, clip=none", ("clip=none",)),
    "c": ("trainer, clip=value", ("clip=value",)),
    "d": ("trainer, clip=norm", ("clip=norm",)),
    "e": ("trainer, clip=autoclip", ("clip=autoclip",)),
    "f": ("trainer, clip=norm + per-parameter log", ("clip=norm",)),
}
# numerator/denominator variant -> the least ratio of their tokens per second
TARGETS = {"cpu": {"b/a": 0.97, "d/a2": 0.97, "d/b": 0.98},
           "cuda": {"b/a": 0.95, "d/a2": 0.95, "d/b": 0.97}}


@dataclass
class Variant:
    key: str
    label: str
    run: Callable[[int], None]  # run n steps (n a multiple of the flush window)
    close: Callable[[], None] = lambda: None  # after timing: the trainer's last write lands


def device_slug(device: torch.device) -> str:
    """A file name for the machine: `cpu-x86_64`, `cuda-NVIDIA_H100_80GB_HBM3`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.machine() or "unknown"
    return f"{device.type}-" + "".join(c if c.isalnum() or c in "-." else "_" for c in name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def no_sync_allowed(device: torch.device) -> Iterator[None]:
    """On CUDA, any host sync inside raises (the proof the step path has none)."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def bare_loop(cfg, device: torch.device, compile_model: bool = False,
              clip_grad_norm: bool = False) -> tuple[Callable[[int], None], torch.nn.Module]:
    """What a user would write by hand: the same task, model, optimizer and seed; with
    `clip_grad_norm`, `torch.nn.utils.clip_grad_norm_` at cfg.clip's max_norm and
    norm_type after every backward, which computes the norm as the trainer does.

    Returns the loop and its model (tests check it trains exactly as the trainer does)."""
    from seqbench.data.tasks import build_task
    from seqbench.optim import build_optimizer

    torch.manual_seed(int(cfg.seed))
    task = build_task(cfg.task)
    task.setup(device, 1)
    model = task.build_model(cfg.model).to(device)
    model.train()
    params = list(model.parameters())
    optimizer = build_optimizer(params, cfg.optim)
    forward = torch.compile(model) if compile_model else model
    stream = task.train_stream
    state: dict[str, Any] = {"hidden": None, "norm": None, "warm": False}
    max_norm, norm_type = (float(cfg.clip.max_norm), float(cfg.clip.norm_type)) \
        if clip_grad_norm else (None, None)

    def run(n: int) -> None:
        if not state["warm"]:  # the first step sets cuDNN up (it syncs once): unchecked
            state["warm"] = True
            run_steps(1)
            n -= 1
        with no_sync_allowed(device):
            run_steps(n)

    def run_steps(n: int) -> None:
        for _ in range(n):
            x, y = stream.current()
            logits, hidden = forward(x, state["hidden"])
            state["hidden"] = tuple(h.detach() for h in hidden) \
                if isinstance(hidden, tuple) else hidden.detach()
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            loss.backward()
            if max_norm is not None:  # the norm stays on the device, as the trainer's
                state["norm"] = torch.nn.utils.clip_grad_norm_(params, max_norm,
                                                               norm_type)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if stream.advance():
                state["hidden"] = None

    return run, model


def trainer_loop(cfg, run_dir: Path) -> tuple[Callable[[int], None], Any]:
    """The trainer's own loop (`Trainer.loop_step`), flushes and metrics files included."""
    from seqbench.train import Trainer

    trainer = Trainer(cfg, run_dir)
    trainer.model.train()
    window = int(cfg.trainer.log_every)
    device = trainer.device
    big = 10**9  # never the last step: no final evaluation inside the timing
    counter = {"step": 0}

    def run(n: int) -> None:
        for _ in range(n // window):
            first = counter["step"] == 0  # the first step sets cuDNN up (it syncs once)
            if first:
                counter["step"] += 1
                trainer.loop_step(counter["step"], big)
            with no_sync_allowed(device):
                for _ in range(window - 1 - first):
                    counter["step"] += 1
                    trainer.loop_step(counter["step"], big)
            counter["step"] += 1
            trainer.loop_step(counter["step"], big)  # the window's last step flushes
            if trainer.state.status == "diverged":
                raise RuntimeError(f"benchmark run diverged: {trainer.run_dir}")

    return run, trainer


def build_variants(size: str, device: torch.device, workdir: Path, threads: int,
                   param_every: int, extra: tuple[str, ...] = (),
                   compile_model: bool = False) -> list[Variant]:
    from seqbench.config import compose, validate

    common = (*SIZES[size], f"trainer.device={device.type}", "trainer.eval_every=0",
              "trainer.progress=off", f"trainer.threads={threads}", "seed=0", *extra)
    base = compose(list(common))
    validate(base)
    variants = [Variant("a", "bare PyTorch loop", bare_loop(base, device)[0])]
    norm = compose([*common, "clip=norm"])
    variants.append(Variant("a2", "bare loop + clip_grad_norm_",
                            bare_loop(norm, device, clip_grad_norm=True)[0]))
    if compile_model:  # is torch.compile worth offering? (on CPU it was not: docs)
        variants.append(Variant("a+compile", "bare loop, torch.compile(model)",
                                bare_loop(base, device, compile_model=True)[0]))
    for key, (label, overrides) in VARIANTS.items():
        more = (f"trainer.param_log_every={param_every}",) if key == "f" else ()
        cfg = compose([*common, *overrides, *more])
        validate(cfg)
        run, trainer = trainer_loop(cfg, workdir / key)
        variants.append(Variant(key, label, run, trainer.close))
    return variants


def measure(variants: list[Variant], device: torch.device, steps: int, repeats: int,
            warmup: int, progress: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Seconds per block of `steps`, per variant, interleaved."""
    for v in variants:
        v.run(warmup)
    _sync(device)
    times: dict[str, list[float]] = {v.key: [] for v in variants}
    for r in range(repeats):
        for v in variants:
            _sync(device)
            t0 = time.perf_counter()
            v.run(steps)
            _sync(device)
            times[v.key].append(time.perf_counter() - t0)
        progress(f"repeat {r + 1}/{repeats}: " + "  ".join(
            f"({k}) {times[k][-1]:.3f}s" for k in times))
    return times


def summarise(times: dict[str, list[float]], labels: dict[str, str],
              tokens_per_block: int) -> dict[str, Any]:
    rows = {}
    for key, ts in times.items():
        med = statistics.median(ts)
        rows[key] = {"label": labels[key], "median_s": med, "min_s": min(ts), "max_s": max(ts),
                     "tokens_per_s": tokens_per_block / med}
    a = rows["a"]["tokens_per_s"]
    for row in rows.values():
        row["ratio_to_a"] = row["tokens_per_s"] / a
    return rows


def bench_size(size: str, device: torch.device, steps: int, repeats: int, warmup: int,
               threads: int, param_every: int, progress: Callable[[str], None] = print,
               extra: tuple[str, ...] = (), compile_model: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="seqbench-bench-") as tmp:
        variants = build_variants(size, device, Path(tmp), threads, param_every, extra,
                                  compile_model)
        from seqbench.config import compose

        cfg = compose(list(SIZES[size]))
        tokens_per_step = int(cfg.task.batch_size) * int(cfg.task.seq_len)
        log_every = int(cfg.trainer.log_every)
        steps = max(log_every, steps // log_every * log_every)
        warmup = max(log_every, warmup // log_every * log_every)
        times = measure(variants, device, steps, repeats, warmup, progress)
        for v in variants:  # metrics writes run on a thread: done before tmp is removed
            v.close()
    rows = summarise(times, {v.key: v.label for v in variants}, tokens_per_step * steps)
    targets = TARGETS["cuda" if device.type == "cuda" else "cpu"]
    ratios = {}
    for k in targets:
        top, bottom = k.split("/")
        ratios[k] = rows[top]["tokens_per_s"] / rows[bottom]["tokens_per_s"]
    return {
        "size": size, "overrides": list(SIZES[size]) + list(extra),
        "tokens_per_step": tokens_per_step, "steps_per_block": steps, "repeats": repeats,
        "warmup_steps": warmup, "param_log_every": param_every, "log_every": log_every,
        "variants": rows, "ratios": ratios,
        "targets": {k: {"target": t, "measured": ratios[k], "met": ratios[k] >= t}
                    for k, t in targets.items()},
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }


def machine(device: torch.device) -> dict[str, Any]:
    import os

    info = {"device": str(device), "slug": device_slug(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def page_header(m: dict[str, Any], title: str) -> list[str]:
    """A result page's first lines: the title with the device, then torch and the
    machine (`m` as `machine` returns it; a `cpu_model` is named instead of the
    processor)."""
    cpu = m.get("cpu_model") or m["processor"]
    name = m.get("device_name", f"CPU ({cpu}, {m['cpu_count']} cores)")
    return [
        f"# {title}: {name}",
        "",
        f"torch {m['torch']}, Python {m['python']}, {m['threads']} torch thread(s), "
        f"{m['platform']}" + (f", CUDA {m['cuda']}, cuDNN {m['cudnn']}" if "cuda" in m else ""),
        "",
    ]


def render_markdown(doc: dict[str, Any]) -> str:
    lines = [
        *page_header(doc["machine"], "seqbench bench"),
        "Produced by `python -m seqbench bench` (see `--help`). Tokens per second are the "
        "median over interleaved repeats; every variant trains the same model on the same "
        "data with the same optimizer and seed. (a) is a bare PyTorch loop with no metrics "
        "and no clipping; (a2) is that loop calling `torch.nn.utils.clip_grad_norm_` every "
        "step, so it computes the gradient norm the trainer records (the fair anchor for "
        "(d)); (b)–(f) are seqbench's trainer loop, flushes to metrics.parquet and "
        "summary.json included.",
    ]
    for entry in doc["sizes"].values():
        lines += ["", f"## size `{entry['size']}`", "",
                  f"Overrides: `{' '.join(entry['overrides']) or '(the train defaults)'}`; "
                  f"{entry['tokens_per_step']:,} tokens per step, blocks of "
                  f"{entry['steps_per_block']} steps (flush every {entry['log_every']}), "
                  f"{entry['repeats']} repeats after {entry['warmup_steps']} warm-up steps; "
                  f"per-parameter log every {entry['param_log_every']} steps in (f); "
                  f"measured {entry['date']}.", "",
                  "| variant | tokens/s (median) | ratio to (a) | block time min–max (s) |",
                  "|---|---:|---:|---:|"]
        for key, row in entry["variants"].items():
            lines.append(f"| ({key}) {row['label']} | {row['tokens_per_s']:,.0f} | "
                         f"{row['ratio_to_a']:.3f} | {row['min_s']:.3f}–{row['max_s']:.3f} |")
        lines += ["", "| target | measured | met |", "|---|---:|---|"]
        for k, t in entry["targets"].items():
            lines.append(f"| {k} ≥ {t['target']} | {t['measured']:.3f} | "
                         f"{'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def write_results(doc: dict[str, Any], out_dir: Path, prefix: str = "",
                  render: Callable[[dict[str, Any]], str] | None = None
                  ) -> tuple[Path, Path]:
    """Merge this run's sizes into reports/bench/<prefix><device>.json and re-render the
    .md (with `render`, this module's page by default)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = prefix + doc["machine"]["slug"]
    json_path, md_path = out_dir / f"{slug}.json", out_dir / f"{slug}.md"
    if json_path.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            old = json.loads(json_path.read_text())
            doc = {**doc, "sizes": {**old["sizes"], **doc["sizes"]}}
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    md_path.write_text((render or render_markdown)(doc))
    return json_path, md_path


def table(entry: dict[str, Any]) -> str:
    out = [f"size {entry['size']}: {entry['tokens_per_step']:,} tokens/step"]
    for key, row in entry["variants"].items():
        out.append(f"  ({key}) {row['label']:<40} {row['tokens_per_s']:>12,.0f} tokens/s"
                   f"  {row['ratio_to_a']:.3f}")
    for k, t in entry["targets"].items():
        out.append(f"  {k} = {t['measured']:.3f} (target >= {t['target']}: "
                   f"{'met' if t['met'] else 'MISSED'})")
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m seqbench bench",
        description=(
            "Time seqbench's training step against a bare PyTorch loop on the same model, "
            "data, optimizer (Adam) and seed: (a) bare loop, (a2) bare loop with "
            "clip_grad_norm_ every step, (b) trainer clip=none, (c) clip=value, "
            "(d) clip=norm, (e) clip=autoclip, (f) clip=norm with per-parameter logging. "
            "Interleaved repeats after a warm-up; prints tokens/s and ratios to (a), "
            "writes reports/bench/<device>.md and .json. Targets: CPU (b)/(a) >= 0.97, "
            "(d)/(a2) >= 0.97 and (d)/(b) >= 0.98; CUDA 0.95, 0.95 and 0.97, with no host "
            "sync between flushes (checked with torch.cuda.set_sync_debug_mode). "
            "`bench report` benchmarks the report instead (see bench report --help)."),
    )
    p.add_argument("--size", action="append", choices=list(SIZES),
                   help="model/data size, repeatable (default: demo on CPU, "
                        "lstm512-256 and lstm512-1024 on CUDA)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--steps", type=int, default=100,
                   help="steps per timed block, rounded to whole flush windows (default 100)")
    p.add_argument("--repeats", type=int, default=7, help="timed blocks per variant (7)")
    p.add_argument("--warmup", type=int, default=50, help="warm-up steps per variant (50)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads on CPU (default 1, as the CPU presets; 0: torch's "
                        "default)")
    p.add_argument("--param-every", type=int, default=10,
                   help="per-parameter log interval in variant (f) (default 10)")
    p.add_argument("--out", type=Path, default=Path("reports/bench"),
                   help="where <device>.md and .json go (default reports/bench)")
    p.add_argument("--compile", action="store_true",
                   help="also time the bare loop with torch.compile(model)")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p


def pick_device(choice: str) -> torch.device | None:
    """`--device auto|cpu|cuda` (auto: CUDA where there is one); None, after one line on
    stderr, for cuda where there is none."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        print("seqbench: error: --device=cuda: CUDA is not available here (cpu, auto)",
              file=sys.stderr)
        return None
    return torch.device(choice)


def main(argv: list[str]) -> int:
    args = parse_args(parser(), argv)
    if isinstance(args, int):
        return args
    for name in ("steps", "repeats", "warmup"):
        if getattr(args, name) < 1:
            print(f"seqbench: error: --{name}={getattr(args, name)}: a positive integer",
                  file=sys.stderr)
            return 2
    device = pick_device(args.device)
    if device is None:
        return 2
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)
    sizes = args.size or (["lstm512-256", "lstm512-1024"] if device.type == "cuda"
                          else ["demo"])
    doc: dict[str, Any] = {"machine": machine(device), "sizes": {}}
    print(f"seqbench bench on {doc['machine'].get('device_name', device)}: torch "
          f"{torch.__version__}, {torch.get_num_threads()} thread(s)")
    for size in sizes:
        entry = bench_size(size, device, args.steps, args.repeats, args.warmup,
                           args.threads if device.type == "cpu" else 0, args.param_every,
                           compile_model=args.compile)
        doc["sizes"][size] = entry
        print(table(entry))
    if not args.no_write:
        paths = write_results(doc, args.out)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0
