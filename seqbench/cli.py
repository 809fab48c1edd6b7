"""Command line: `python -m seqbench <command> [...]`.

A bad value never reaches a run: the config is composed and validated first, and any
problem is printed as one line (key, value, what is allowed) with exit status 2 and no
traceback, unless HYDRA_FULL_ERROR=1 asks for one. Hydra's own settings are checked as
well: a group option must be an option (not a path), output names must be file names, and
nothing may make Hydra or logging import code (`hydra_errors`).
"""

from __future__ import annotations

import os
import re
import sys

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
  bench validate [--jobs N...] | bench threads
                          time the training step against a bare PyTorch loop, the
                          report on 1,000 synthetic runs, a whole sweep under each
                          local launcher, a sweep's validation and resume scan at N
                          jobs, or train next to a busy process per thread setting;
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


def one_line(text: str) -> str:
    """A message as one line: control characters from a value (a newline, a NUL, an escape
    sequence) are shown escaped, so one problem is always one line on the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


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
    from seqbench.errors import PluginError

    try:
        return commands[command](rest)
    except PluginError as e:  # raised where seqbench.config is first imported
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


def check_config(overrides: list[str], values: bool = True,
                 dirs: tuple[str, ...] | None = None, composed: dict | None = None
                 ) -> list[str]:
    """Compose (and with `values`, validate); return the error lines, empty when good.
    `dirs`: the output directories to resolve (default: hydra.run.dir with `values`, else
    hydra.sweep.dir). `composed`, when given and the config is good, receives the run's
    flat config (`config`) and its resolved `hydra.run.dir` (`run_dir`).

    Hydra's own settings are checked too (`hydra_errors`): nothing given on the command
    line or in a config may make Hydra or logging import and call Python code.
    """
    from omegaconf import OmegaConf

    from seqbench.config import compose, explain_hydra_error, validate
    from seqbench.errors import ConfigError, ConfigErrors

    for o in overrides:
        if "=" not in o or not o.split("=", 1)[0].lstrip("+~"):
            return [f"override={one_line(o)}: expected KEY=VALUE or GROUP=OPTION"]
    try:
        problems = group_choice_errors(overrides)
        if problems:
            return problems
        cfg = compose(overrides, with_hydra=True)
        problems = hydra_errors(cfg.hydra)
        if dirs is None:
            dirs = ("run.dir",) if values else ("sweep.dir",)
        problems += hydra_dir_errors(cfg.hydra, dirs)
        if problems:
            return problems
        if values:
            _set_hydra_config(cfg)  # so that ${hydra:...} in a value resolves as in the run
        run_dir = OmegaConf.select(cfg, "hydra.run.dir") if composed is not None else None
        cfg = _without_hydra(cfg)
        if values:
            validate(cfg)
        if composed is not None:
            from seqbench.config import flat

            composed.update(config=flat(cfg), run_dir=run_dir)
    except ConfigErrors as e:
        return [one_line(x) for x in e.errors]
    except ConfigError as e:
        return [one_line(e)]
    except Exception as e:  # Hydra/OmegaConf composition errors
        line = explain_hydra_error(e, overrides)
        if line is None:
            raise
        return [one_line(line)]
    return []


def _set_hydra_config(cfg) -> None:
    """What Hydra sets before a run starts, so that `${hydra:runtime.output_dir}` works."""
    import copy

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    full = copy.deepcopy(cfg)
    with open_dict(full):
        full.hydra.runtime.output_dir = os.path.abspath(str(OmegaConf.select(
            full, "hydra.run.dir", throw_on_resolution_failure=False) or "."))
    HydraConfig.instance().set_config(full)


def _without_hydra(cfg):
    from omegaconf import open_dict

    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


# An option name is a file name in its group's directory, never a path.
_OPTION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# A name Hydra turns into a file or directory name inside the run directory.
_FILE_NAME = re.compile(r"(?!\.\.?$)[A-Za-z0-9_.][A-Za-z0-9_.-]{0,200}")


def group_choice_errors(overrides: list[str]) -> list[str]:
    """GROUP=OPTION must name one of the group's options: Hydra would otherwise follow a
    relative path (`optim=../task/adding` loads conf/task/adding.yaml as the optimizer)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, Glob

    from seqbench.config import group_options
    from seqbench.errors import ConfigError
    from seqbench.sweep import format_value

    parser = OverridesParser.create()
    out = []
    for text in overrides:
        try:
            o = parser.parse_override(text)
        except Exception:  # a malformed override: composing it names the problem
            continue
        group = o.key_or_group
        if group == "hydra.searchpath" and not o.is_delete():  # composing would import
            paths = o.value() if isinstance(o.value(), list) else [o.value()]
            out += [one_line(ConfigError(group, path, "only file:// directories (pkg:// "
                                                      "imports a Python package)"))
                    for path in paths if not str(path).startswith("file://")]
        if "." in group or o.is_delete() or not group_options(group):
            continue
        value = o.value()
        if isinstance(value, Glob):  # selects among the existing options: nothing to check
            values = []
        elif isinstance(value, ChoiceSweep):
            values = list(value.list)
        elif o.is_sweep_override() and o.is_discrete_sweep():
            values = list(o.sweep_iterator())
        else:
            values = [value]
        for v in values:  # `optim=1` or `optim=null` parses to a number or None: no name
            if not (isinstance(v, str) and _OPTION.fullmatch(v) and ".." not in v):
                shown = v if isinstance(v, str) else format_value(v)
                out.append(one_line(ConfigError(group, shown,
                                                "one of " + ", ".join(group_options(group)))))
    return out


# Logging handlers that write to a stream or a file; dictConfig imports any other class.
LOG_CLASSES = ("logging.StreamHandler", "logging.FileHandler", "logging.NullHandler")
LOG_STREAMS = ("ext://sys.stdout", "ext://sys.stderr")
# Environment variables that make a process load code (the dynamic loader, Python, git).
ENV_CODE_PREFIXES = ("LD_", "DYLD_", "PYTHON", "GIT_")
ENV_CODE_NAMES = ("PATH", "BASH_ENV", "ENV", "PERL5LIB", "PERL5OPT")


def hydra_errors(hydra_cfg) -> list[str]:
    """Hydra settings that would import or run code named in a config value.

    Hydra instantiates `hydra.callbacks.*._target_`, logging's dictConfig imports a
    handler's `class`, a `()` factory and any `ext://module.attr`, a `pkg://` search path
    imports that package, and `hydra.job.env_set` can set LD_PRELOAD or PYTHONPATH for the
    processes a run starts. None of these is needed to run seqbench, so none is accepted;
    directories (`hydra.run.dir`, `hydra.sweep.dir`), launcher and sweeper settings are.
    """
    from omegaconf import OmegaConf

    from seqbench.errors import ConfigError

    def raw(key):
        node = OmegaConf.select(hydra_cfg, key, throw_on_resolution_failure=False)
        return OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) \
            else node

    out = []
    for name, value in (raw("callbacks") or {}).items():
        out.append(ConfigError(f"hydra.callbacks.{name}", value,
                               "not allowed: Hydra would import and call its _target_"))
    for path in raw("searchpath") or []:
        if not str(path).startswith("file://"):
            out.append(ConfigError("hydra.searchpath", path, "only file:// directories "
                                   "(pkg:// imports a Python package)"))
    for part in ("job_logging", "hydra_logging"):
        for key, value in _leaves(raw(part), f"hydra.{part}"):
            last = key.rsplit(".", 1)[-1]
            if last == "level" and not (isinstance(value, int) or value in
                                        ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG",
                                         "NOTSET")):
                out.append(ConfigError(key, value, "one of DEBUG, INFO, WARNING, ERROR, "
                                                   "CRITICAL, NOTSET"))
            elif last == "()" or (last == "class" and value not in LOG_CLASSES):
                out.append(ConfigError(key, value, "one of " + ", ".join(LOG_CLASSES) +
                                       " (logging imports the class it names)"))
            elif isinstance(value, str) and value.startswith("ext://") \
                    and value not in LOG_STREAMS:
                out.append(ConfigError(key, value, "one of " + ", ".join(LOG_STREAMS) +
                                       " (logging imports what ext:// names)"))
    for name, value in (raw("job.env_set") or {}).items():
        if str(name).upper().startswith(ENV_CODE_PREFIXES) or str(name) in ENV_CODE_NAMES:
            out.append(ConfigError(f"hydra.job.env_set.{name}", value,
                                   "not allowed: it makes processes load code; set it "
                                   "in the shell if you mean it"))
    for part in ("launcher", "sweeper"):
        target = raw(f"{part}._target_")
        if target is not None and not str(target).startswith(("hydra_plugins.",
                                                              "hydra._internal.")):
            out.append(ConfigError(f"hydra.{part}._target_", target,
                                   f"choose the {part} with hydra/{part}=OPTION"))
    # names that become a file or directory name: the run's log file, its .hydra/ and the
    # sweep's reports/PRESET/ -- a path there would write outside those directories
    for key in ("job.name", "output_subdir", "sweeper.preset"):
        value = raw(key)
        if value is not None and not (isinstance(value, str) and _FILE_NAME.fullmatch(value)):
            out.append(ConfigError(f"hydra.{key}", value,
                                   "a file name (letters, digits, _ . -), not a path"))
    return [one_line(e) for e in out]


def hydra_dir_errors(hydra_cfg, keys: tuple[str, ...]) -> list[str]:
    """The output directories as Hydra will resolve and create them, each one that
    cannot be created or written refused before anything starts."""
    from omegaconf import OmegaConf

    from seqbench.errors import ConfigError
    from seqbench.rundir import unwritable

    out = []
    for key in keys:
        try:
            value = OmegaConf.select(hydra_cfg, key)
        except Exception as e:  # an interpolation that does not resolve
            raw = OmegaConf.to_container(hydra_cfg, resolve=False)
            for part in key.split("."):
                raw = raw.get(part) if isinstance(raw, dict) else None
            lines = str(e).strip().splitlines() or [type(e).__name__]
            out.append(ConfigError(f"hydra.{key}", raw, "cannot be resolved: " + re.sub(
                r"^\w+ raised while resolving interpolation: ", "", lines[0])))
            continue
        if value is None:
            continue
        text = str(value)
        if "\0" in text or any(len(p.encode()) > 255 for p in text.split("/")):
            out.append(ConfigError(f"hydra.{key}", value, "a directory path without NUL "
                                   "characters, each name at most 255 bytes"))
            continue
        problem = unwritable(text)
        if problem is not None:
            out.append(ConfigError(f"hydra.{key}", value, f"cannot be written: {problem}"))
    return [one_line(e) for e in out]


def _leaves(node, prefix: str):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, node


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


def cmd_report(args: list[str]) -> int:
    from pathlib import Path

    from seqbench.errors import ArgumentParser, parse_args

    parser = ArgumentParser(prog="python -m seqbench report",
                            description="Write the report of a directory of runs.")
    parser.add_argument("runs_dir", help="directory holding run directories (summary.json)")
    parser.add_argument("--out", help="output directory (default: reports/<name of RUNS_DIR>)")
    ns = parse_args(parser, args)
    if isinstance(ns, int):
        return ns
    from seqbench.report import ReportInputError, make_report
    from seqbench.rundir import unwritable

    runs = Path(ns.runs_dir)
    out = Path(ns.out) if ns.out else Path("reports") / runs.resolve().name
    problem = unwritable(out)
    if problem is not None:
        return error(f"--out={out}: cannot be written: {problem}")
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


def cmd_plugins(args: list[str]) -> int:
    """The installed plugins and what each registered; loading them is the check."""
    if args:
        return error(f"option={args[0]}: plugins takes no arguments")
    import seqbench.config  # noqa: F401 -- loads the plugins (PluginError: exit 2)
    from seqbench.plugin_loader import report_lines

    print("\n".join(report_lines()))
    return 0


def cmd_data(args: list[str]) -> int:
    from seqbench.data.datacli import main as data_main

    return data_main(args)


def cmd_bench(args: list[str]) -> int:
    """`bench` times the step path; `bench report` the report at scale; `bench sweep` a
    preset under each local launcher; `bench validate` a sweep's validation at N jobs;
    `bench threads` `train` idle and next to a busy process per thread setting."""
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
    from seqbench.bench.step import main as bench_main

    return bench_main(args)
