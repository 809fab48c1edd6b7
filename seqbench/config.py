"""Config schemas, their registration with Hydra, and validation.

Types and unknown keys are caught by Hydra/OmegaConf, because every group option
extends a dataclass schema stored here (`/schema/<group>/<name>` in the ConfigStore).
Value ranges are declared on the schema fields (`seqbench.checks`) and enforced by
`validate`, which reports every bad value, not only the first. Data-dependent limits
(a `seq_len` longer than a split allows, a missing file) are checked by building the
task, and sizes by building the model on the meta device (shapes, no memory), so nothing
is launched with a config that would fail a minute later. Interpolations (`${oc.env:X}`)
are resolved before any rule is checked: one that does not resolve is a bad value too.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from seqbench import sizes
from seqbench.checks import at_least, one_of, optional_above, rule
from seqbench.clipping import CLIP
from seqbench.data.tasks import TASKS
from seqbench.errors import ConfigError, ConfigErrors
from seqbench.experiment import NON_EXPERIMENT_KEYS  # noqa: F401 (re-exported)
from seqbench.models import MODEL_SCHEMAS
from seqbench.optim import OPTIM


@dataclass
class TrainerConfig:
    max_steps: int = at_least(600, 1)
    # micro-batches per optimizer step: task.batch_size streams are split into this many
    accum_steps: int = at_least(1, 1)
    # per-step numbers stay on the device and are read once every log_every steps
    # (a buffer of log_every rows lives on the device: bounded so that it always fits)
    log_every: int = rule(25, "must be in [1, 1000000]", lambda v: 1 <= v <= 1_000_000)
    eval_every: int = at_least(200, 0)  # 0: evaluate only at the end
    eval_batches: int = at_least(0, 0)  # validation windows per evaluation; 0: whole split
    # every N steps, per-parameter gradient/weight norms to param_metrics.parquet; 0: off
    param_log_every: int = at_least(0, 0)
    device: str = one_of("auto", ("auto", "cpu", "cuda"))
    amp: str = one_of("off", ("off", "bf16", "fp16"))
    on_nonfinite: str = one_of("stop", ("stop", "skip", "raise"))
    # a finite loss above explode_factor x the first step's loss ends the run; null: never
    explode_factor: float | None = optional_above(10.0, 1.0)
    deterministic: bool = False
    # torch intra-op threads; 0: torch's default. More than any CPU has cores is a typo:
    # torch raises above 2**31 and crashed with a segfault at 65536 (measured)
    threads: int = rule(0, "must be in [0, 1024]", lambda v: 0 <= v <= 1024)
    # parameter-name patterns (fnmatch globs, e.g. "embed.*") whose parameters are frozen:
    # no gradient, not in the optimizer, in no gradient norm
    freeze: list[str] = rule([], "a list of parameter-name patterns",
                             lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v))
    # CPU only: treat denormal floats as zero. Saturated LSTM gates at high learning rates
    # produce denormals, which x86 CPUs compute several times slower (measured 3.4x).
    flush_denormal: bool = True
    progress: str = one_of("auto", ("auto", "bar", "log", "off"))
    # a checkpoint (model, optimizer, RNGs, data position, ...) at the first flush at
    # least this many steps after the last one, and on SIGTERM/SIGUSR1/SIGUSR2; 0: only
    # on those signals
    checkpoint_every: int = at_least(1000, 0)
    # auto: continue from the run directory's checkpoint.pt when it is of the same
    # experiment; never: always start at step 0 (an old checkpoint is replaced)
    resume: str = one_of("auto", ("auto", "never"))


@dataclass
class TrainConfig:
    task: Any = MISSING
    model: Any = MISSING
    optim: Any = MISSING
    clip: Any = MISSING
    trainer: Any = MISSING
    seed: int = at_least(0, 0)


GROUPS = ("task", "model", "optim", "clip", "trainer")



def register_schemas() -> None:
    # every module that registers tasks or models, so that their schemas are stored too
    from seqbench.data import corpora, regression, synthetic  # noqa: F401

    cs = ConfigStore.instance()
    cs.store(name="seqbench_train", node=TrainConfig)
    cs.store(group="schema/trainer", name="default", node=TrainerConfig)
    for entry in MODEL_SCHEMAS.entries():
        cs.store(group="schema/model", name=entry.name, node=entry.schema)
    for group, registry in (("task", TASKS), ("optim", OPTIM), ("clip", CLIP)):
        for entry in registry.entries():
            cs.store(group=f"schema/{group}", name=entry.name, node=entry.schema)


register_schemas()


def conf_dir() -> Path:
    """conf/ inside an installed wheel, else the repository's top-level conf/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError("seqbench's conf/ directory is missing from this installation")


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "train",
            with_hydra: bool = False) -> DictConfig:
    """The job config exactly as `python -m seqbench train OVERRIDES` would see it
    (`with_hydra`: and Hydra's own settings under `hydra`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides),
                             return_hydra_config=with_hydra)


def group_options(group: str) -> list[str]:
    """The options of a config group (`optim`, `hydra/launcher`); empty for a plain key."""
    return list(_group_options(group))


@functools.cache  # the files of conf/ and the installed plugins do not change while we run
def _group_options(group: str) -> tuple[str, ...]:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return tuple(sorted(GlobalHydra.instance().config_loader().get_group_options(group)))


def validate(cfg: DictConfig, *, check_data: bool = True, tasks: dict | None = None) -> None:
    """Raise ConfigErrors listing every invalid value of a composed config.

    `check_data` builds the task (data-dependent limits) and the model on the meta device
    (freeze patterns, size); `tasks` caches built tasks by task config across calls, so a
    sweep builds each distinct task once and still checks every job's model.
    """
    errors = _resolution_errors(cfg)  # every later check reads resolved values
    if errors:
        raise ConfigErrors(errors)
    errors = list(_field_errors(cfg, ""))
    for group in GROUPS:
        errors += _field_errors(cfg[group], group + ".")
    errors += _selector_errors(cfg)
    errors += _cross_errors(cfg)
    if errors:
        raise ConfigErrors(errors)
    if check_data:
        try:
            key = OmegaConf.to_yaml(cfg.task, resolve=True)
            task = tasks.get(key) if tasks is not None else None
            if task is None:
                task = _build_task(cfg.task)
                if tasks is not None:
                    tasks[key] = task
            where, memory = _device_memory(cfg)
            sizes.check(cfg, task, memory, where)  # before building: some sizes never build
            with torch.device("meta"):  # shapes only: no memory, no initialisation cost
                model = _build_model(task, cfg.model)
            if cfg.trainer.freeze:
                frozen_names([n for n, _ in model.named_parameters()], list(cfg.trainer.freeze))
            _check_model_fits(cfg, model)
        except ConfigError as e:
            raise ConfigErrors([e]) from None


def _build_task(task_cfg: DictConfig):
    """The task; a size that cannot be allocated is the config's fault, not a bug."""
    from seqbench.data.tasks import build_task

    try:
        return build_task(task_cfg)
    except (MemoryError, OverflowError) as e:
        raise ConfigError("task", task_cfg.name, "cannot be built with these sizes "
                          f"({type(e).__name__}: {_first_line(e)})") from None
    except OSError as e:  # a file the task reads: a name too long, a device, no permission
        key, value = ("task.path", task_cfg.path) if "path" in task_cfg else ("task",
                                                                              task_cfg.name)
        raise ConfigError(key, value, f"cannot be read ({e.strerror or type(e).__name__})"
                          ) from None


def _build_model(task, model_cfg: DictConfig):
    try:
        return task.build_model(model_cfg)
    except ConfigError:
        raise
    except (MemoryError, OverflowError, RuntimeError, ValueError) as e:  # shapes on meta
        key, value = _largest_size(model_cfg)
        raise ConfigError(key, value, "too large: the model cannot be built "
                          f"({type(e).__name__}: {_first_line(e)})") from None


def _check_model_fits(cfg: DictConfig, model: torch.nn.Module) -> None:
    """Weights and gradients (4 bytes each per parameter; optimizer state comes on top)
    must fit in the memory of the device the run will use, or the run dies at its start."""
    n = sum(p.numel() for p in model.parameters())
    where, have = _device_memory(cfg)
    if 8 * n > have:
        key, value = _largest_size(cfg.model)
        raise ConfigError(key, value, f"too large: {n:,} parameters need {8 * n / 2**30:,.0f} "
                                      f"GiB for weights and gradients; {where} has "
                                      f"{have / 2**30:,.0f} GiB")


def _device_memory(cfg: DictConfig) -> tuple[str, int]:
    """(where the run will train, its memory in bytes): the GPU's or this machine's."""
    device = cfg.trainer.device
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return "the GPU", torch.cuda.get_device_properties(0).total_memory
    return "this machine", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _largest_size(model_cfg: DictConfig) -> tuple[str, Any]:
    """The model key with the largest integer value: the likely cause of a size error."""
    best = ("model", None, -1)
    for k, v in OmegaConf.to_container(model_cfg).items():
        ints = [x for x in (v if isinstance(v, list) else [v])
                if isinstance(x, int) and not isinstance(x, bool)]
        if ints and max(ints) > best[2]:
            best = (f"model.{k}", v, max(ints))
    return best[0], best[1]


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _resolution_errors(cfg: DictConfig) -> list[ConfigError]:
    """An interpolation that does not resolve (`${oc.env:UNSET}`, `${nokey}`, a string
    where a number belongs), named by its key and its text as given."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raw = _raw_value(cfg, key)
        msg = _first_line(e)
        if "could not be converted" in msg or "Non optional" in msg:
            got = re.search(r"Value '(.*?)' of type", msg)
            rule = _type_rule(e) + (f" (it resolves to {got.group(1)!r})" if got else "")
        else:
            rule = "cannot be resolved: " + re.sub(r"^\w+ raised while resolving "
                                                  r"interpolation: ", "", msg)
        return [ConfigError(key, raw, rule)]
    return []


def _raw_value(cfg: DictConfig, key: str) -> Any:
    """The value at a dotted key (`trainer.freeze[0]`) before interpolation."""
    node: Any = OmegaConf.to_container(cfg, resolve=False)
    for part in re.findall(r"[^.\[\]]+", key):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return "?"
    return node


def _selector_errors(cfg: DictConfig) -> list[ConfigError]:
    """`task.name`, `optim.name` and `clip.method` pick the code that builds the group.
    Each must name an entry whose schema is the one the group option composed; otherwise
    the builder of one entry would get the settings of another (GROUP=OPTION switches)."""
    out = []
    for group, registry in (("task", TASKS), ("optim", OPTIM), ("clip", CLIP)):
        node, field_name = cfg[group], registry.key.split(".", 1)[1]
        schema = OmegaConf.get_type(node)
        fits = [e.name for e in registry.entries() if e.schema is schema]
        value = node.get(field_name)
        if fits and value not in fits:
            out.append(ConfigError(registry.key, value,
                                   f"one of {', '.join(fits)} with these {group} settings "
                                   f"(another {group}: {group}=OPTION)"))
    return out


def frozen_names(names: list[str], patterns: list[str]) -> list[str]:
    """The parameter names `trainer.freeze` selects; every pattern must select one, and
    something must be left to train."""
    import fnmatch

    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            raise ConfigError("trainer.freeze", pattern,
                              "matches no parameter; parameters: " + ", ".join(names))
    frozen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if len(frozen) == len(names):
        raise ConfigError("trainer.freeze", patterns, "freezes every parameter")
    return frozen


def _field_errors(node: DictConfig, prefix: str) -> list[ConfigError]:
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return []
    out = []
    known = [f.name for f in dataclasses.fields(schema)]
    for key in node:  # `+group.key=value` can add a key that the schema does not have
        if key not in known:
            out.append(ConfigError(prefix + str(key), node[key],
                                   "unknown key; known keys here: " + ", ".join(known)))
    for f in dataclasses.fields(schema):
        value = node[f.name]
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        if not _fits_int64(value):  # torch and numpy hold sizes, steps and seeds in int64
            out.append(ConfigError(prefix + f.name, value,
                                   "integers must be in [-2**63, 2**63 - 1]"))
            continue
        rule = f.metadata.get("check")
        if rule is None:
            continue
        text, ok = rule
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            out.append(ConfigError(prefix + f.name, value, text))
    return out


def _fits_int64(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_fits_int64(v) for v in value)
    if isinstance(value, dict):
        return all(_fits_int64(v) for v in value.values())
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def _cross_errors(cfg: DictConfig) -> list[ConfigError]:
    out = []
    t, task = cfg.trainer, cfg.task
    if t.accum_steps >= 1 and task.batch_size % t.accum_steps:
        out.append(ConfigError(
            "trainer.accum_steps", t.accum_steps,
            f"must divide task.batch_size={task.batch_size} (the streams are split into "
            "micro-batches)",
        ))
    on_cpu = t.device == "cpu" or (t.device == "auto" and not torch.cuda.is_available())
    if t.amp == "fp16" and on_cpu and cfg.model.get("cell") == "lstm":
        out.append(ConfigError(
            "trainer.amp", "fp16",
            "fp16 autocast of nn.LSTM is not supported on CPU; use bf16 or off here, or CUDA",
        ))
    out += _model_family_errors(cfg)
    if cfg.model.get("forget_bias") is not None and cfg.model.get("cell") != "lstm":
        out.append(ConfigError("model.forget_bias", cfg.model.forget_bias,
                               "only for model.cell=lstm (use null otherwise)"))
    if cfg.optim.get("nesterov") and not cfg.optim.get("momentum"):  # torch.optim.SGD's rule
        out.append(ConfigError("optim.nesterov", True, "needs optim.momentum > 0"))
    clip = cfg.clip
    if clip.get("error_if_nonfinite") and t.on_nonfinite == "skip":
        out.append(ConfigError("clip.error_if_nonfinite", True,
                               "contradicts trainer.on_nonfinite=skip; use one of them"))
    if clip.get("relative") and clip.get("scope") != "global":
        out.append(ConfigError("clip.relative", True, "only with clip.scope=global"))
    if clip.get("relative") and clip.calibration_steps >= t.max_steps:
        out.append(ConfigError("clip.calibration_steps", clip.calibration_steps,
                               f"must be < trainer.max_steps={t.max_steps}"))
    if t.device == "cuda" and not torch.cuda.is_available():
        out.append(ConfigError("trainer.device", "cuda",
                               "CUDA is not available here; use auto or cpu"))
    return out


def _model_family_errors(cfg: DictConfig) -> list[ConfigError]:
    """A task builds one family of model (char_rnn unless its registration says)."""
    try:
        needs = TASKS.get(cfg.task.name).meta.get("model", "char_rnn")
    except ConfigError:
        return []  # an unknown task.name is reported by _selector_errors
    schema = OmegaConf.get_type(cfg.model)
    has = next((e.name for e in MODEL_SCHEMAS.entries() if e.schema is schema), None)
    if has is None or has == needs:
        return []
    options = {"char_rnn": "lstm, gru or rnn_tanh", "mlp": "mlp"}.get(needs, needs)
    return [ConfigError("model", has, f"task {cfg.task.name} needs model={options}")]


def flat(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as one flat dict with dotted keys (`clip.max_norm`, `seed`)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def explain_hydra_error(exc: BaseException, overrides: list[str]) -> str | None:
    """One line for a Hydra/OmegaConf composition error, naming key, value and rule."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import ConfigKeyError, ValidationError

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
            return str(ConfigError(key, given.get(key, "?"), "unknown key" + _known_keys(cause)))
        if isinstance(cause, ValidationError) and key:
            return str(ConfigError(key, given.get(key, "?"), _type_rule(cause)))
        m = re.match(r"Ambiguous value for argument '([^=]*)=(.*)'$", _first_line(exc))
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


def _known_keys(cause: BaseException | None) -> str:
    obj = getattr(cause, "object_type", None)
    if obj is not None and dataclasses.is_dataclass(obj):
        names = [f.name for f in dataclasses.fields(obj)]
        return f"; known keys here: {', '.join(names)}"
    return ""


def _type_rule(cause: BaseException) -> str:
    msg = str(cause).splitlines()[0]
    m = re.search(r"could not be converted to (\w+)", msg)
    if m:
        kind = m.group(1).lower()
        return "must be " + {"float": "a number", "integer": "an integer",
                             "boolean": "true or false"}.get(kind, kind)
    if "not Optional" in msg or "Non optional" in msg:
        return "must not be null"
    return msg
