"""Command line: `python -m seqbench <command> [...]`.

A bad value never reaches a run: the config is composed and validated first, and any
problem is printed as one line (key, value, what is allowed) with exit status 2 and no
traceback, unless HYDRA_FULL_ERROR=1 asks for one. The checks of what reaches Hydra
live in `seqbench.hydra_input`, which the Hydra sweeper shares; this module parses the
command line and dispatches.

A command registers the schemas and installed plugins (`seqbench.config.ensure_registered`)
just before its first look at a config, not here for every command: `python -m seqbench
--help` and `data` need no plugin, and one that cannot be used must not stop them; for
the others it is reported before any config problem (one line, exit 2).
"""

from __future__ import annotations

import os
import re
import sys
import textwrap

from seqbench.errors import PluginError, one_line

USAGE = """\
usage: python -m seqbench <command> [args]

Benchmark gradient clipping and optimizers for recurrent networks on long sequences.

commands:
  train [KEY=VALUE ...] [--force]
                          train one model; Hydra overrides select the task, model,
                          optimizer, clipping method and trainer settings
                          (python -m seqbench train --help lists them all). A
                          hydra.run.dir holding a run of another experiment is
                          refused (exit 2) unless --force replaces it
  sweep [PRESET] [KEY=VALUE ...] [--force] [--dry-run]
                          run a preset's grid of runs (default preset: demo) into
                          runs/PRESET/ and write reports/PRESET/; finished runs are
                          skipped. KEY=VALUE settings for every job key the sweep
                          apart: runs/PRESET+KEY=VALUE/, reports/PRESET+KEY=VALUE/.
                          A directory holding a run of another experiment is never
                          overwritten (exit 2) unless --force. Presets: conf/sweep/.
                          KEY=a,b sweeps a key over values; hydra/launcher=joblib|
                          submitit_local|slurm picks where the runs execute
  report RUNS_DIR [--out DIR]
                          (re)write the report of a directory of runs
                          (default --out: reports/<name of RUNS_DIR>)
  data list | fetch NAME... | verify [NAME...]
                          download, check and cache corpora (enwik8, text8,
                          ptb_char, war_and_peace; tinyshakespeare is bundled)
  plugins                 list the installed plugins (entry point group
                          seqbench.plugins) and the clip methods, models and
                          tasks each one adds

  bench [--size SIZE] [--device cpu|cuda] | bench report | bench sweep |
  bench validate [--jobs N...] | bench threads | bench packing |
  bench smoothness [--every N...]
                          time the training step against a bare PyTorch loop, the
                          report on 1,000 synthetic runs, a whole sweep under each
                          local launcher, a sweep's validation and resume scan at N
                          jobs, train next to a busy process per thread setting,
                          K concurrent runs on one device (runs per hour per K), or
                          the smoothness probe's slowdown at N = 100 and 10;
                          writes reports/bench/

exit status: 0 done (a diverged run is a result), 2 invalid input, 1 unexpected error
"""

# Hydra flags that only print information; they skip validation and never train.
INFO_FLAGS = {"-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--version"}
# Flags passed through to Hydra unchanged (the value of --cfg/--package follows them).
PASS_FLAGS = INFO_FLAGS | {"--resolve", "--package", "-p", "--config-dir", "-cd"}


def error(message: str) -> int:
    print(f"seqbench: error: {one_line(message)}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = argv[0], argv[1:]
    commands = {"train": cmd_train, "sweep": cmd_sweep, "report": cmd_report,
                "data": cmd_data, "bench": cmd_bench, "plugins": cmd_plugins}
    if command not in commands:
        return error(f"command={command}: one of {', '.join(commands)} (see --help)")
    try:
        return commands[command](rest)
    except PluginError as e:  # raised by ensure_registered, where a command first needs it
        return error(str(e))


# Hydra's flags that take a value, and the values Hydra accepts (None: any text)
FLAG_VALUES = {"--cfg": ("job", "hydra", "all"), "-c": ("job", "hydra", "all"),
               "--info": ("all", "config", "defaults", "defaults-tree", "plugins",
                          "searchpath"),
               "-i": ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath"),
               "--package": None, "-p": None, "--config-dir": None, "-cd": None}
OPTIONAL_VALUE = {"--info": "all", "-i": "all"}


def _flags(args: list[str]) -> tuple[list[str], list[str], str | None]:
    """Split Hydra flags from overrides; return (flags as NAME or NAME=VALUE, overrides,
    the problem). Values are checked here: Hydra's argparse would otherwise take an
    override as a flag's value, or print its usage over several lines."""
    flags, overrides = [], []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("-"):
            overrides.append(a)
            continue
        name, eq, value = a.partition("=")
        if name not in PASS_FLAGS:
            return flags, overrides, f"option={a}: unknown; allowed: " \
                                     f"{', '.join(sorted(PASS_FLAGS))}"
        if name not in FLAG_VALUES:
            if eq:
                return flags, overrides, f"option={a}: {name} takes no value"
            flags.append(name)
            continue
        if not eq and i < len(args) and not args[i].startswith("-") and "=" not in args[i]:
            value, eq = args[i], "="
            i += 1
        if not eq and name in OPTIONAL_VALUE:
            value, eq = OPTIONAL_VALUE[name], "="
        choices = FLAG_VALUES[name]
        if not eq or not value:
            allowed = "one of " + ", ".join(choices) if choices else "a value"
            return flags, overrides, f"option={name}: needs {allowed}"
        if choices and value not in choices:
            return flags, overrides, f"{name}={value}: one of {', '.join(choices)}"
        if name in ("--config-dir", "-cd") and not os.path.isdir(value):
            return flags, overrides, f"{name}={value}: an existing directory"
        flags.append(f"{name}={value}")
    return flags, overrides, None


def cmd_train(args: list[str]) -> int:
    for flag in ("-m", "--multirun"):  # Hydra's multirun: what `sweep` is for
        if flag in args:
            rest = " ".join(a for a in args if a not in ("-m", "--multirun"))
            return error(f"option={flag}: train runs one configuration; to run several, "
                         f"use: python -m seqbench sweep [PRESET] {rest} (KEY=A,B sweeps a "
                         "key over values; presets: conf/sweep/)")
    force = "--force" in args
    args = [a for a in args if a != "--force"]
    flags, overrides, bad = _flags(args)
    if bad is not None:
        return error(bad)
    from seqbench.hydra_input import check_config

    info_only = any(f.split("=", 1)[0] in INFO_FLAGS for f in flags)
    if info_only:  # prints, never trains: no value checks, but nothing unsafe either
        problems = check_config(overrides, values=False, dirs=())
        if problems:
            for line in problems:
                print(f"seqbench: error: {line}", file=sys.stderr)
            return 2
    else:
        composed: dict = {}
        problems = check_config(overrides, composed=composed)
        if problems:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for a traceback
                from seqbench.config import compose, validate

                validate(compose(overrides))
            for line in problems:
                print(f"seqbench: error: {line}", file=sys.stderr)
            return 2
        if not force and composed.get("run_dir") is not None:
            from pathlib import Path

            from seqbench.sweep import conflict

            clash = conflict(Path(str(composed["run_dir"])), composed["config"])
            if clash is not None:
                return error(clash.line("choose another hydra.run.dir, or replace it with "
                                        "--force"))
    from seqbench.app import train_app

    saved = sys.argv
    sys.argv = ["seqbench train", *flags, *overrides]
    try:
        train_app()
    finally:
        sys.argv = saved
    return 0


def sweep_help() -> str:
    """`sweep --help`: the usage line and each preset with the first sentence of its
    file's header comment (conf/sweep/PRESET.yaml), which says what it answers."""
    from seqbench.confdir import conf_dir, presets

    lines = ["usage: python -m seqbench sweep [PRESET] [KEY=VALUE ...] [--force] [--dry-run]",
             "", "Run a preset's grid into runs/PRESET/ and write reports/PRESET/; finished",
             "runs are skipped, and a directory holding another experiment is never",
             "overwritten (exit 2) unless --force. --dry-run lists the jobs and runs none.",
             "KEY=VALUE applies to every job (runs/PRESET+KEY=VALUE/); KEY=a,b sweeps it;",
             "hydra/launcher=joblib|submitit_local|slurm picks where the runs execute.",
             "", "presets (conf/sweep/; default demo):"]
    for name in presets():
        text = (conf_dir() / "sweep" / f"{name}.yaml").read_text().splitlines()
        words = " ".join(t.lstrip("# ").strip() for t in text[1:6] if t.startswith("#"))
        words = words.removeprefix(f"{name}:").strip()
        # the first sentence: a full stop or question mark not closing an initial (J.)
        # or an abbreviation (e.g.)
        end = re.search(r"(?<![A-Z])(?<!e\.g)(?<!i\.e)[.?:](\s|$)", words)
        first = words[:end.end()].strip() if end else words
        lines += textwrap.wrap(first, 88, initial_indent=f"  {name:<22}",
                               subsequent_indent=" " * 24)
    return "\n".join(lines) + "\n"


def cmd_sweep(args: list[str]) -> int:
    from seqbench import sweep as sw
    from seqbench.confdir import presets
    from seqbench.config import ensure_registered
    from seqbench.hydra_input import check_config, group_choice_errors

    if {"-h", "--help"} & set(args):
        print(sweep_help(), end="")
        return 0
    preset = "demo"
    if args and not args[0].startswith("-") and "=" not in args[0]:
        preset, args = args[0], args[1:]
    ensure_registered()
    if preset not in presets():
        return error(f"preset={preset}: one of {', '.join(presets())}")
    broken = _preset_yaml_error(preset)
    if broken:
        return error(broken)
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
    base = [f"+sweep={preset}", f"hydra.sweeper.preset={preset}"]
    where = []
    if not any(a.lstrip("+").startswith("hydra.sweep.dir=") for a in args):
        # runs/<preset>, or runs/<preset>+<globals> when command-line values change every
        # job's experiment: a second sweep with other settings never writes over the first
        name = sw.sweep_dir_name(preset, args)
        where.append(f"hydra.sweep.dir='runs/{name}'")
        if name != preset:  # finished runs of the same experiments, from before the keying
            where.append(f"hydra.sweeper.reuse_dir='runs/{preset}'")
    base += where
    fixed = [a for a in args if not _is_sweep(a)]
    problems = group_choice_errors(args) or check_config(
        [f"+sweep={preset}", *where[:1], *fixed], values=False)
    if problems:
        for line in problems:
            print(f"seqbench: error: {line}", file=sys.stderr)
        return 2
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


def _preset_yaml_error(preset: str) -> str | None:
    """One line when a preset file is not valid YAML (a hand-written preset with a bad
    indent would otherwise end in a parser traceback from inside Hydra)."""
    import yaml

    from seqbench.confdir import conf_dir

    path = conf_dir() / "sweep" / f"{preset}.yaml"
    try:
        yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        return f"preset={preset}: {path} is not valid YAML{where}: {problem}"
    except (OSError, UnicodeDecodeError) as e:
        return f"preset={preset}: {path} cannot be read ({type(e).__name__})"
    return None


def cmd_report(args: list[str]) -> int:
    from pathlib import Path

    from seqbench.errors import ArgumentParser, parse_args

    parser = ArgumentParser(prog="python -m seqbench report",
                            description="Write the report of a directory of runs.")
    parser.add_argument("runs_dir", help="directory holding run directories (summary.json)")
    parser.add_argument("--out", help="output directory (default: reports/<name of RUNS_DIR>)")
    parser.add_argument(
        "--target", default="90%",
        help="the time-to-target's target: a value of the task's metric (2.6), or a "
             "percentage of the way from the baseline to the best configuration of each "
             "optimizer and model (default 90%%)")
    ns = parse_args(parser, args)
    if isinstance(ns, int):
        return ns
    from seqbench.report import ReportInputError, make_report
    from seqbench.report.cost import parse_target
    from seqbench.rundir import unwritable

    try:
        target = parse_target(ns.target)
    except ValueError as e:
        return error(f"--target={ns.target}: {e}; allowed: a number, or a percentage in "
                     "(0%, 100%]")

    runs = Path(ns.runs_dir)
    out = Path(ns.out) if ns.out else Path("reports") / runs.resolve().name
    problem = unwritable(out)
    if problem is not None:
        return error(f"--out={out}: cannot be written: {problem}")
    try:
        result = make_report(runs, out, target=target)
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


def cmd_plugins(args: list[str]) -> int:
    """The installed plugins and what each registered; loading them is the check."""
    if args:
        return error(f"option={args[0]}: plugins takes no arguments")
    from seqbench.config import ensure_registered
    from seqbench.plugin_loader import report_lines

    ensure_registered()  # loads the plugins (PluginError: exit 2)
    print("\n".join(report_lines()))
    return 0


def cmd_data(args: list[str]) -> int:
    from seqbench.data.datacli import main as data_main

    return data_main(args)


def cmd_bench(args: list[str]) -> int:
    """`bench` times the step path; `bench report` the report at scale; `bench sweep` a
    preset under each local launcher; `bench validate` a sweep's validation at N jobs;
    `bench threads` `train` idle and next to a busy process per thread setting;
    `bench packing` runs per hour with K concurrent runs on one device; `bench smoothness`
    the slowdown of the smoothness probe (trainer.smoothness_every=N)."""
    if args[:1] == ["report"]:
        from seqbench.bench.report_scale import main_report

        return main_report(args[1:])
    if args[:1] == ["sweep"]:
        from seqbench.bench.sweep_speed import main_sweep

        return main_sweep(args[1:])
    if args[:1] == ["validate"]:
        from seqbench.bench.validate_speed import main as main_validate

        return main_validate(args[1:])
    if args[:1] == ["threads"]:
        from seqbench.bench.threads import main as main_threads

        return main_threads(args[1:])
    if args[:1] == ["packing"]:
        from seqbench.bench.packing import main as main_packing

        return main_packing(args[1:])
    if args[:1] == ["smoothness"]:
        from seqbench.bench.smoothness_cost import main as main_smoothness

        return main_smoothness(args[1:])
    from seqbench.bench.step import main as bench_main

    return bench_main(args)
