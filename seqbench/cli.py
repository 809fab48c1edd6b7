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
    commands = {"train": cmd_train}
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


def check_config(overrides: list[str]) -> list[str]:
    """Compose and validate; return the error lines (empty when the config is good)."""
    from seqbench.config import compose, explain_hydra_error, validate
    from seqbench.errors import ConfigError, ConfigErrors

    for o in overrides:
        if "=" not in o:
            return [f"override={o}: expected KEY=VALUE or GROUP=OPTION"]
    try:
        cfg = compose(overrides)
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
