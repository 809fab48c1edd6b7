"""Errors a user can act on, as opposed to bugs.

A `ConfigError` always names the config key, the offending value and what is allowed;
the CLI prints it as one line and exits with status 2, with no traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


class ConfigError(ValueError):
    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={_show(value)}: {allowed}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if (value == "" or any(c.isspace() for c in value)) else value
    return str(value)


def one_line(text: Any) -> str:
    """A message as one line: control characters from a value (a newline, a NUL, an escape
    sequence) are shown escaped, so one problem is always one line on the terminal. Here,
    not in the CLI, because every program that prints seqbench's errors (the CLI, the
    Hydra sweeper in its own process) must print them alike."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


class ConfigErrors(ValueError):
    """Several invalid values found at once (all are reported, not just the first)."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


class UsageError(ValueError):
    """A command-line flag argparse rejected (unknown flag, missing or non-integer value)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse for seqbench's subcommands: a usage error is raised as one `UsageError`
    (the caller prints one line, exit 2) instead of argparse's usage block and exit."""

    def error(self, message: str):
        raise UsageError(message)


def parse_args(parser: argparse.ArgumentParser, argv: list[str], prog: str = "seqbench"
               ) -> argparse.Namespace | int:
    """The parsed arguments, or the exit status to return: 0 after --help, 2 (with one
    line on stderr) after a usage error."""
    try:
        return parser.parse_args(argv)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help printed
        return int(e.code or 0)


class PluginError(Exception):
    """An installed seqbench plugin that cannot be used (it fails to import, takes a name
    that is already taken, or declares a config that is not one). The message is one
    line naming the plugin (entry point and distribution) and the problem; the CLI prints
    it and exits with status 2, and nothing runs with some plugins half loaded."""
