"""Where the trainer's time goes at the demo size, on the training thread.

Why: `seqbench bench` times six variants side by side and reports ratios of medians; at
the demo size (2 ms a step) its (b)/(a) moves by several points between runs. This pairs
only (a) the bare loop and (b) the trainer with clip=none, in interleaved blocks of 100
steps, and reports the training thread's CPU time (`time.thread_time`: the metrics
writer thread is not counted) and wall time per step, then profiles the trainer over
1,000 steps. Output committed in reports/bench/profile-demo.txt:

    .venv/bin/python scripts/profile_trainer.py
"""

import cProfile
import io
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch

from seqbench.bench.step import SIZES, bare_loop, trainer_loop
from seqbench.config import compose


def main() -> None:
    torch.set_num_threads(1)
    cfg = compose([*SIZES["demo"], "trainer.device=cpu", "trainer.eval_every=0",
                   "trainer.progress=off", "trainer.threads=1", "seed=0", "clip=none"])
    bare, _ = bare_loop(cfg, torch.device("cpu"))
    loop, trainer = trainer_loop(cfg, Path(tempfile.mkdtemp()) / "b")
    bare(100)
    loop(100)
    cpu: dict[str, list[float]] = {"bare": [], "trainer": []}
    wall: dict[str, list[float]] = {"bare": [], "trainer": []}
    for _ in range(20):
        for name, run in (("bare", bare), ("trainer", loop)):
            t0, w0 = time.thread_time(), time.perf_counter()
            run(100)
            cpu[name].append((time.thread_time() - t0) / 100 * 1e3)
            wall[name].append((time.perf_counter() - w0) / 100 * 1e3)
    for label, times in (("thread CPU", cpu), ("wall", wall)):
        b, t = statistics.median(times["bare"]), statistics.median(times["trainer"])
        print(f"{label + ' ms/step:':20s}bare {b:.3f}  trainer {t:.3f}  ratio {b / t:.3f}")
    profile = cProfile.Profile()
    profile.enable()
    loop(1000)
    profile.disable()
    for order, pattern, n in (("tottime", None, 25),
                              ("cumulative", "train.py|metrics.py|clipping.py|writer.py", 20)):
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out).sort_stats(order)
        stats.print_stats(*([pattern] if pattern else []), n)
        print(out.getvalue()[:6000])
    trainer.close()


if __name__ == "__main__":
    main()
