"""What the command line gives Hydra, checked before Hydra acts on it.

A bad value never reaches a run: `check_config` composes the config (and validates it),
and every problem comes back as one line (key, value, what is allowed) for the caller to
print with exit status 2. Hydra's own settings are checked as well: a group option must
be an option (not a path), output names must be file names, output directories must be
writable, and nothing may make Hydra or logging import code (`hydra_errors`).

Why a module of its own: these guards are used by the CLI (before `train` and `sweep`
start Hydra) and by the Hydra sweeper (composition errors of each job, in a process that
may not be the CLI's), and neither should import the other to share them.
"""

from __future__ import annotations

import os
import re

from seqbench.errors import ConfigError, ConfigErrors, one_line


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

    from seqbench.config import compose, ensure_registered, flat, validate

    ensure_registered()  # a plugin that cannot be used is the first problem (PluginError)
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
        run_dir = OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=False
                                   ) if values else None
        cfg = _without_hydra(cfg)
        if values:
            validate(cfg)
            from seqbench.fork import own_dir_error

            problem = own_dir_error(cfg.trainer.get("init_from"), run_dir)
            if problem is not None:  # a fork's start would replace its own parent
                raise problem
        if composed is not None:
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

    from seqbench.confdir import group_options
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


def explain_hydra_error(exc: BaseException, overrides: list[str]) -> str | None:
    """One line for a Hydra/OmegaConf composition error, naming key, value and rule."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import ConfigKeyError, ValidationError

    from seqbench.config import first_line, known_keys, type_rule

    given = {o.lstrip("+~").split("=", 1)[0]: o.split("=", 1)[1] for o in overrides if "=" in o}
    if isinstance(exc, MissingConfigException):
        m = re.search(r"Could not find '([^']+)/([^']+)'", str(exc))
        if m:
            group, name = m.groups()
            opts = re.findall(r"^\t(\S+)$", str(exc).split("Config search path")[0], re.M)
            allowed = "one of " + ", ".join(opts) if opts else "an existing option"
            return str(ConfigError(group, name, allowed))
        return str(exc).splitlines()[0]
    if isinstance(exc, OverrideParseException):
        bad = next((o for o in overrides if o in str(exc)), None) or _unparsable(overrides)
        return f"override={bad}: cannot parse ({str(exc).splitlines()[0]})"
    if isinstance(exc, ConfigCompositionException):
        cause = exc.__cause__
        key = getattr(cause, "full_key", None)
        if isinstance(cause, (ConfigKeyError, AttributeError)) or "Could not override" in str(exc):
            key = key or _key_from(str(exc))
            return str(ConfigError(key, given.get(key, "?"), "unknown key" + known_keys(cause)))
        if isinstance(cause, ValidationError) and key:
            return str(ConfigError(key, given.get(key, "?"), type_rule(cause)))
        m = re.match(r"Ambiguous value for argument '([^=]*)=(.*)'$", first_line(exc))
        if m:
            return str(ConfigError(m.group(1), m.group(2), "one value; to sweep values use "
                                   "python -m seqbench sweep, for a list write [a,b], for "
                                   "text quote it: 'a,b'"))
        m = re.match(r"Could not append to config. An item is already at '(.*)'", str(exc))
        if m:
            key = m.group(1)
            return str(ConfigError(key, given.get(key, "?"), f"already set; use "
                                   f"{key}={given.get(key, 'VALUE')} (without +)"))
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        if lines[0].endswith(":") and len(lines) > 1:  # "... raised while composing config:"
            return f"{lines[0]} {lines[1].strip()}"
        return lines[0]
    return None


def _unparsable(overrides: list[str]) -> str:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for o in overrides:
        try:
            parser.parse_overrides([o])
        except Exception:
            return o
    return " ".join(overrides)


def _key_from(msg: str) -> str:
    m = re.search(r"override '([^']+)'", msg)
    return m.group(1) if m else "?"
