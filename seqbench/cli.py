"""Command line: `python -m seqbench <command> [...]`.

A bad value never reaches a run: the config is composed and validated first, and any
problem is printed as one line (key, value, what is allowed) with exit status 2 and no
traceback, unless HYDRA_FULL_ERROR=1 asks for one.
"""

from __future__ import annotations

import os
import sys

USAGE = """\
usage: python -m seqbench <command> [args]

Benchmark gradient clipping and optimizers for recurrent networks on long sequences.

commands:
  train [KEY=VALUE ...]   train one model; Hydra overrides select the task, model,
                          optimizer, clipping method and trainer settings
                          (python -m seqbench train --help lists them all)
  sweep [PRESET] [KEY=VALUE ...] [--force] [--dry-run]
                          run a preset's grid of runs (default preset: demo) into
                          runs/PRESET/ and write reports/PRESET/; finished runs are
                          skipped. Presets: conf/sweep/. KEY=a,b sweeps a key over
                          values; hydra/launcher=joblib|submitit_local|slurm picks
                          where the runs execute
  report RUNS_DIR [--out DIR]
                          (re)write the report of a directory of runs
                          (default --out: reports/<name of RUNS_DIR>)
  data list | fetch NAME... | verify [NAME...]
                          download, check and cache corpora (enwik8, text8,
                          ptb_char, war_and_peace; tinyshakespeare is bundled)

  bench [--size SIZE] [--device cpu|cuda] | bench report | bench sweep
                          time the training step against a bare PyTorch loop, the
                          report on 1,000 synthetic runs, or a whole sweep under
                          each local launcher; writes reports/bench/

exit status: 0 done (a diverged run is a result), 2 invalid input, 1 unexpected error
"""

# Hydra flags that only print information; they skip validation and never train.
INFO_FLAGS = {"-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--version"}
# Flags passed through to Hydra unchanged (the value of --cfg/--package follows them).
PASS_FLAGS = INFO_FLAGS | {"--resolve", "--package", "-p", "--config-dir", "-cd"}


def error(message: str) -> int:
    print(f"seqbench: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = argv[0], argv[1:]
    commands = {"train": cmd_train, "sweep": cmd_sweep, "report": cmd_report,
                "data": cmd_data, "bench": cmd_bench}
    if command not in commands:
        return error(f"command={command}: one of {', '.join(commands)} (see --help)")
    return commands[command](rest)


def _flags(args: list[str]) -> tuple[list[str], list[str], str | None]:
    """Split Hydra flags from overrides; return (flags, overrides, bad flag)."""
    flags, overrides = [], []
    takes_value = {"--cfg", "-c", "--package", "-p", "--config-dir", "-cd", "--info", "-i"}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            name = a.split("=", 1)[0]
            if name not in PASS_FLAGS:
                return flags, overrides, a
            flags.append(a)
            if name in takes_value and "=" not in a and i + 1 < len(args) \
                    and not args[i + 1].startswith("-") and "=" not in args[i + 1]:
                flags.append(args[i + 1])
                i += 1
        else:
            overrides.append(a)
        i += 1
    return flags, overrides, None


def check_config(overrides: list[str], values: bool = True) -> list[str]:
    """Compose (and with `values`, validate); return the error lines, empty when good."""
    from seqbench.config import compose, explain_hydra_error, validate
    from seqbench.errors import ConfigError, ConfigErrors

    for o in overrides:
        if "=" not in o:
            return [f"override={o}: expected KEY=VALUE or GROUP=OPTION"]
    try:
        cfg = compose(overrides)
        if values:
            validate(cfg)
    except ConfigErrors as e:
        return [str(x) for x in e.errors]
    except ConfigError as e:
        return [str(e)]
    except Exception as e:  # Hydra/OmegaConf composition errors
        line = explain_hydra_error(e, overrides)
        if line is None:
            raise
        return [line]
    return []


def cmd_train(args: list[str]) -> int:
    flags, overrides, bad = _flags(args)
    if bad is not None:
        return error(f"option={bad}: unknown; allowed: {', '.join(sorted(PASS_FLAGS))}")
    info_only = any(f.split("=", 1)[0] in INFO_FLAGS for f in flags)
    if not info_only:
        problems = check_config(overrides)
        if problems:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for a traceback
                from seqbench.config import compose, validate

                validate(compose(overrides))
            for line in problems:
                print(f"seqbench: error: {line}", file=sys.stderr)
            return 2
    from seqbench.app import train_app

    saved = sys.argv
    sys.argv = ["seqbench train", *flags, *overrides]
    try:
        train_app()
    finally:
        sys.argv = saved
    return 0


def presets() -> list[str]:
    from seqbench.config import conf_dir

    return sorted(p.stem for p in (conf_dir() / "sweep").glob("*.yaml"))


def cmd_sweep(args: list[str]) -> int:
    from seqbench import sweep as sw

    preset = "demo"
    if args and not args[0].startswith("-") and "=" not in args[0]:
        preset, args = args[0], args[1:]
    if preset not in presets():
        return error(f"preset={preset}: one of {', '.join(presets())}")
    extra = []
    for flag, override in (("--force", "hydra.sweeper.force=true"),
                           ("--dry-run", "hydra.sweeper.dry_run=true")):
        if flag in args:
            args = [a for a in args if a != flag]
            extra.append(override)
    for a in args:
        if a.startswith("-"):
            return error(f"option={a}: unknown; allowed: --force, --dry-run")
        if "=" not in a:
            return error(f"override={a}: expected KEY=VALUE, KEY=A,B or GROUP=OPTION")
    # Hydra composes the sweep's base config with the fixed overrides before any job;
    # check that here so a typo is one line and exit 2. Values are checked per job.
    fixed = [a for a in args if not a.startswith("hydra") and not _is_sweep(a)]
    problems = check_config([f"+sweep={preset}", *fixed], values=False)
    if problems:
        for line in problems:
            print(f"seqbench: error: {line}", file=sys.stderr)
        return 2
    base = [f"+sweep={preset}", f"hydra.sweeper.preset={preset}", f"hydra.sweep.dir=runs/{preset}"]
    from seqbench.app import train_app

    saved = sys.argv
    sys.argv = ["seqbench sweep", "--multirun", *base, *extra, *args]
    sw.LAST_OUTCOME = None
    try:
        train_app()
    finally:
        sys.argv = saved
    outcome = sw.LAST_OUTCOME
    return 1 if outcome is not None and outcome.error else 0


def cmd_report(args: list[str]) -> int:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m seqbench report",
                                     description="Write the report of a directory of runs.")
    parser.add_argument("runs_dir", help="directory holding run directories (summary.json)")
    parser.add_argument("--out", help="output directory (default: reports/<name of RUNS_DIR>)")
    try:
        ns = parser.parse_args(args)
    except SystemExit as e:
        return 2 if e.code else 0
    from seqbench.report import ReportInputError, make_report

    runs = Path(ns.runs_dir)
    out = Path(ns.out) if ns.out else Path("reports") / runs.resolve().name
    try:
        result = make_report(runs, out)
    except ReportInputError as e:
        return error(f"RUNS_DIR={ns.runs_dir}: {e}")
    print(f"report: {result.paths['report_html']} ({result.n_runs} runs: "
          f"{result.n_completed} completed, {result.n_diverged} diverged, "
          f"{result.n_incomplete} incomplete, {result.n_corrupt} corrupt)")
    return 0


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(override).is_sweep_override()
    except Exception:
        return False


def cmd_data(args: list[str]) -> int:
    from seqbench.data.datacli import main as data_main

    return data_main(args)


def cmd_bench(args: list[str]) -> int:
    """`bench` times the step path; `bench report` times the report at scale."""
    if args[:1] == ["report"]:
        from seqbench.bench.report_scale import main_report

        return main_report(args[1:])
    if args[:1] == ["sweep"]:
        from seqbench.bench.sweep_speed import main_sweep

        return main_sweep(args[1:])
    from seqbench.bench.step import main as bench_main

    return bench_main(args)
