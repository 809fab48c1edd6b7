"""Declarative value checks attached to schema fields.

Hydra and OmegaConf already reject wrong types and unknown keys; these checks add the
ranges a type cannot express (lr > 0, norm_type in {1, 2, inf}). A field declares its
rule once, next to its default, and `seqbench.config.validate` enforces every rule of
every node, so a new option gets validation by declaring it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import field
from typing import Any

Rule = tuple[str, Callable[[Any], bool]]


def _f(default: Any, rule: Rule) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"check": rule})
    return field(default=default, metadata={"check": rule})


def positive(default: Any) -> Any:
    return _f(default, ("must be > 0", lambda v: v is not None and v > 0 and math.isfinite(v)))


def nonnegative(default: Any) -> Any:
    return _f(default, ("must be >= 0", lambda v: v is not None and v >= 0 and math.isfinite(v)))


def at_least(default: Any, low: float) -> Any:
    return _f(default, (f"must be >= {low:g}", lambda v: v is not None and v >= low))


def in_range(default: Any, low: float, high: float, *, high_open: bool = False) -> Any:
    right = ")" if high_open else "]"
    text = f"must be in [{low:g}, {high:g}{right}"
    if high_open:
        return _f(default, (text, lambda v: v is not None and low <= v < high))
    return _f(default, (text, lambda v: v is not None and low <= v <= high))


def one_of(default: Any, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    text = "one of " + ", ".join(_fmt(c) for c in choices)
    return _f(default, (text, lambda v: v in choices))


def optional_above(default: Any, low: float) -> Any:
    return _f(default, (f"must be null or > {low:g}", lambda v: v is None or v > low))


def _fmt(c: Any) -> str:
    if isinstance(c, float) and math.isinf(c):
        return "inf"
    if isinstance(c, float) and c.is_integer():
        return str(int(c))
    return str(c)


def rule(default: Any, text: str, ok: Callable[[Any], bool]) -> Any:
    """A one-off rule: `text` says what is allowed, `ok` decides."""
    return _f(default, (text, ok))


def broken_rule(rule: Rule | None, value: Any) -> str | None:
    """What `value` breaks of a field's declared `rule` (its text), or None when it obeys
    or there is no rule. The one place rules are applied: config validation and a task
    built without it (a test, a script) reject a value with the same words."""
    if rule is None:
        return None
    text, ok = rule
    try:
        good = ok(value)
    except TypeError:  # a value of another type than the rule reads: it breaks it
        good = False
    return None if good else text
