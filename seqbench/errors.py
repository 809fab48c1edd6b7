"""Errors a user can act on, as opposed to bugs.

A `ConfigError` always names the config key, the offending value and what is allowed;
the CLI prints it as one line and exits with status 2, with no traceback.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={_show(value)}: {allowed}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if (value == "" or any(c.isspace() for c in value)) else value
    return str(value)


class ConfigErrors(ValueError):
    """Several invalid values found at once (all are reported, not just the first)."""

    def __init__(self, errors: list[ConfigError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))
