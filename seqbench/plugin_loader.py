"""Discovery and registration of plugins; the public side is `seqbench.plugins`.

Why registrations are staged: a plugin module's decorators run while it is imported. If
a later plugin then fails, nothing of the earlier ones may stay registered, or a run
could start with half the plugins. So registrations made during `load()` are collected
and committed -- to the registries and to Hydra's ConfigStore -- only once every entry
point has imported cleanly. The outcome, the plugins or the error, is kept for the
process: loading again after a failure (`seqbench.config.ensure_registered()` at the
next entry point) raises the same error instead of quietly loading fewer plugins.

This module never imports `seqbench.config`: the config imports it to register, so an
import back would be a circle (and was, with the config half-imported at that moment).

A decorator called outside `load()` (a script registering its own method before using
`Clipper`) is committed at once, after the installed plugins have loaded.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from seqbench.errors import PluginError

ENTRY_POINT_GROUP = "seqbench.plugins"
DISABLE_ENV = "SEQBENCH_DISABLE_PLUGIN_AUTOLOAD"  # set (not 0): discover nothing
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
SELECTOR = {"clip": "method", "model": "cell", "task": "name"}  # the key naming the entry
MODEL_FIELDS = ("embed_dim", "hidden_size", "num_layers", "dropout")
FAMILIES = ("char_rnn", "mlp")  # seqbench.models.MODEL_SCHEMAS' families
SCHEMA_PREFIX = "Schema_"  # filled-in schemas live in this module under this prefix


@dataclass
class Plugin:
    """One entry point of the group, and what importing it registered."""

    entry_point: str
    module: str
    dist: str
    version: str
    registered: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)

    @property
    def label(self) -> str:
        return f"plugin {self.entry_point} ({self.dist} {self.version})"


@dataclass
class Registration:
    kind: str  # clip | model | task
    name: str
    schema: type
    build: Callable
    meta: dict
    owner: Plugin | None  # None: registered by the running program itself

    @property
    def by(self) -> str:
        if self.owner is not None:
            return self.owner.label
        return f"module {getattr(self.build, '__module__', '?')}"


_outcome: list[Plugin] | PluginError | None = None
_disabled = False
_loading: tuple[Plugin, list[Registration]] | None = None  # the entry point being imported
_direct: list[Registration] = []


def load() -> list[Plugin]:
    """Import every `seqbench.plugins` entry point, once per process; raise PluginError
    (the same one every time) when one cannot be used."""
    global _outcome, _disabled
    if _loading is not None:  # a plugin module's registration asks: already loading
        return []
    if _outcome is None:
        if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
            _outcome, _disabled = [], True
        else:
            try:
                _outcome = load_entry_points(
                    importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
            except PluginError as e:
                _outcome = e
    if isinstance(_outcome, PluginError):
        raise PluginError(str(_outcome)) from None
    return _outcome


def load_entry_points(entry_points: Iterable[importlib.metadata.EntryPoint]) -> list[Plugin]:
    """Import the entry points' modules (sorted by name, so a clash between two plugins
    is always reported against the same one) and commit what they registered; on any
    problem raise PluginError and register nothing."""
    global _loading
    plugins: list[Plugin] = []
    staged: list[Registration] = []
    for ep in sorted(entry_points, key=lambda ep: (ep.name, _dist(ep)[0])):
        dist, version = _dist(ep)
        module = ep.value.split(":", 1)[0].strip()
        plugin = Plugin(ep.name, module, dist, version)
        _loading = (plugin, staged)
        try:
            ep.load()
        except PluginError as e:
            raise PluginError(f"{plugin.label}: {e}") from None
        except (Exception, SystemExit) as e:  # its own bug or a missing dependency
            raise PluginError(f"{plugin.label}: cannot import {ep.value}: "
                              f"{type(e).__name__}: {_first_line(e)}") from None
        finally:
            _loading = None
        # registrations the program made by importing the module itself, before loading
        plugin.registered += [(r.kind, r.name) for r in _direct if (
            (getattr(r.build, "__module__", None) or "") + ".").startswith(module + ".")]
        plugins.append(plugin)
    for reg in staged:
        _commit(reg)
    return plugins


def _dist(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or "?", dist.version or "?"


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else "(no message)"


def register(kind: str, name: str, config: type, **meta: Any) -> Callable[[Callable], Callable]:
    """The decorator behind register_clip / register_model / register_task."""
    load()  # the installed plugins come first: a name they take is taken

    shown = config.__name__ if isinstance(config, type) else repr(config)[:60]
    call = f"register_{kind}({name!r}, {shown})"
    if not (isinstance(name, str) and NAME.fullmatch(name)):
        raise PluginError(f"{call}: the name must be letters, digits and _, starting with "
                          "a letter (it is typed as GROUP=NAME and names run directories)")
    _check_free(kind, name, call)
    schema = _schema(kind, name, config, call, meta)
    loading = _loading

    def deco(build: Callable) -> Callable:
        if not callable(build):
            raise PluginError(f"{call}: decorates {build!r}, which is not callable")
        if loading is None:
            reg = Registration(kind, name, schema, build, meta, None)
            _check_free(kind, name, call)
            _commit(reg)
            _direct.append(reg)
        else:
            plugin, staged = loading
            staged.append(Registration(kind, name, schema, build, meta, plugin))
            plugin.registered.append((kind, name))
        return build

    return deco


def _schema(kind: str, name: str, config: Any, call: str, meta: dict) -> type:
    """The config dataclass as it is stored: checked, with its selector field filled."""
    from omegaconf import OmegaConf

    if meta.get("model", "char_rnn") not in FAMILIES:
        raise PluginError(f"{call}: model={meta['model']!r} must be one of "
                          + ", ".join(FAMILIES))
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        raise PluginError(f"{call}: pass the dataclass {type(config).__name__}, not an "
                          "instance of it")
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise PluginError(f"{call}: {getattr(config, '__name__', repr(config))} is not a "
                          "dataclass (the config is a @dataclass whose fields are the "
                          "option's keys)")
    cls = config.__name__
    fields = {f.name: f for f in dataclasses.fields(config)}
    if kind == "model":
        missing = [f for f in MODEL_FIELDS if f not in fields]
        if missing:
            raise PluginError(f"{call}: {cls} lacks {', '.join(missing)} (a model config "
                              "extends seqbench.plugins.RecurrentConfig)")
    if kind == "task" and "batch_size" not in fields:
        raise PluginError(f"{call}: {cls} has no batch_size field (the trainer splits "
                          "task.batch_size into trainer.accum_steps micro-batches)")
    key = SELECTOR[kind]
    schema = config
    selector = fields.get(key)
    if selector is None or selector.default == "":
        schema = _with_selector(config, kind, key, name)
    elif selector.default != name:
        had = ("no default" if selector.default is dataclasses.MISSING
               else f"the default {selector.default!r}")
        raise PluginError(f"{call}: {cls}.{key} has {had}; leave the field out (it is "
                          f"filled in) or make its default {name!r}")
    try:
        node = OmegaConf.structured(schema)
    except Exception as e:  # a field type OmegaConf cannot hold (a tensor, a callable...)
        raise PluginError(f"{call}: {cls} cannot be a config: {_first_line(e)}") from None
    if node.get(key) != name:
        raise PluginError(f"{call}: {cls}.{key} must be a str field")
    return schema


def _with_selector(config: type, kind: str, key: str, name: str) -> type:
    """A subclass of `config` whose `key` field defaults to `name`: the option selects
    its own builder (a redefined inherited field keeps its place).

    Configs are pickled (a sweep's job configs; Hydra's ConfigStore, sent to job
    processes), and pickle finds a class by module and qualified name. So the subclass
    is `seqbench.plugin_loader.Schema_<kind>_<name>`, set there when it is committed;
    a new process that unpickles one before loading the plugins loads them first
    (`__getattr__` below). Its __name__ stays the plugin's, for error messages."""
    params = config.__dataclass_params__  # type: ignore[attr-defined]
    schema = dataclasses.make_dataclass(config.__name__,
                                        [(key, str, dataclasses.field(default=name))],
                                        bases=(config,), frozen=params.frozen)
    schema.__module__, schema.__qualname__ = __name__, f"{SCHEMA_PREFIX}{kind}_{name}"
    schema.__doc__ = config.__doc__
    return schema


def __getattr__(attr: str) -> Any:
    """A filled-in schema looked up by pickle in a process that has not loaded the
    plugins yet (a Hydra job process unpickling the ConfigStore): load them, look again."""
    if attr.startswith(SCHEMA_PREFIX):
        load()  # the plugins' registrations set the attribute
        if attr in globals():
            return globals()[attr]
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def _check_free(kind: str, name: str, call: str) -> None:
    owner = _owner(kind, name)
    if owner is not None:
        raise PluginError(f"{call}: {kind}={name} is taken by {owner}")


def _owner(kind: str, name: str) -> str | None:
    """Who has `name` in the group `kind` already: seqbench, a plugin, or None."""
    from seqbench.confdir import conf_dir

    for entry in _registries(kind):
        if name in entry.names():
            return entry.get(name).meta.get("plugin", "seqbench")
    if _loading is not None:
        for reg in _loading[1]:
            if (reg.kind, reg.name) == (kind, name):
                return reg.by
    if (conf_dir() / kind / f"{name}.yaml").is_file():
        return f"seqbench (conf/{kind}/{name}.yaml)"
    return None


def _registries(kind: str) -> list:
    from seqbench.clipping import CLIP
    from seqbench.data import corpora, regression, synthetic  # noqa: F401 -- built-in tasks
    from seqbench.data.tasks import TASKS
    from seqbench.models import CELLS, MODEL_SCHEMAS

    return {"clip": [CLIP], "model": [CELLS, MODEL_SCHEMAS], "task": [TASKS]}[kind]


def _commit(reg: Registration) -> None:
    """Register the builder and store the option (and its schema) with Hydra."""
    from hydra.core.config_store import ConfigStore

    from seqbench.clipping import CLIP
    from seqbench.data.tasks import TASKS
    from seqbench.models import CELLS, MODEL_SCHEMAS

    by = reg.by
    if reg.kind == "clip":
        CLIP.register(reg.name, reg.schema, plugin=by)(reg.build)
    elif reg.kind == "model":
        CELLS.register(reg.name, reg.schema, plugin=by)(reg.build)
        MODEL_SCHEMAS.register(reg.name, reg.schema, family="char_rnn", plugin=by)(reg.schema)
    else:
        TASKS.register(reg.name, reg.schema, model=reg.meta.get("model", "char_rnn"),
                       plugin=by)(reg.build)
    if reg.schema.__module__ == __name__:  # a filled-in schema: where pickle finds it
        globals()[reg.schema.__qualname__] = reg.schema
    provider = reg.owner.dist if reg.owner is not None else "seqbench-plugin"
    cs = ConfigStore.instance()
    cs.store(group=f"schema/{reg.kind}", name=reg.name, node=reg.schema, provider=provider)
    cs.store(group=reg.kind, name=reg.name, node=reg.schema, provider=provider)
    # the group has one option more: the registration above bumped the registry
    # generation that seqbench.confdir.group_options keys its answers by


def report_lines() -> list[str]:
    """What `python -m seqbench plugins` prints."""
    plugins = load()
    if _disabled:
        return [f"plugins are not loaded: {DISABLE_ENV} is set"]
    if not plugins:
        return [f"no plugins installed (entry point group {ENTRY_POINT_GROUP})"]
    n = len(plugins)
    lines = [f"{n} plugin{'s' if n > 1 else ''} (entry point group {ENTRY_POINT_GROUP}):"]
    for p in plugins:
        lines.append(f"  {p.entry_point}: {p.dist} {p.version} (module {p.module})")
        lines += [f"    {kind}={name}" for kind, name in p.registered] or \
            ["    (registered nothing)"]
    return lines
