"""One registry per kind of thing: a config name maps to a schema and a builder.

Config files are data, never code to import (no `_target_`): the YAML names an entry,
and the registry is the only place that turns that name into a Python callable. Each
entry carries the dataclass schema of its options, so the ConfigStore (and therefore
Hydra's type and unknown-key checks) is generated from the same place the behaviour is.

Registries grow while a process runs (an installed plugin, a script registering its own
method), so anything derived from them -- the options of a config group -- must know when
it is stale. Every registration bumps one process-wide `generation`: a cache keyed by it
is invalidated by the registry itself, without its owner having to know who caches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from seqbench.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

_generation = 0


def generation() -> int:
    """A number that changes whenever any registry gains an entry (see the module doc)."""
    return _generation


@dataclass(frozen=True)
class Entry(Generic[F]):
    name: str
    schema: type
    build: F
    meta: dict = field(default_factory=dict)  # e.g. the model family a task needs


class Registry(Generic[F]):
    def __init__(self, kind: str, key: str):
        self.kind = kind  # config group, e.g. "clip"
        self.key = key  # the config key that selects an entry, e.g. "clip.method"
        self._entries: dict[str, Entry[F]] = {}

    def register(self, name: str, schema: type, **meta: Any) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            global _generation
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = Entry(name, schema, fn, dict(meta))
            _generation += 1
            return fn

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry[F]]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry[F]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(self.key, name, "one of " + ", ".join(self.names())) from None
