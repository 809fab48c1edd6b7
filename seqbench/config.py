"""Config schemas, their registration with Hydra, and validation.

Types and unknown keys are caught by Hydra/OmegaConf, because every group option
extends a dataclass schema stored here (`/schema/<group>/<name>` in the ConfigStore).
Value ranges are declared on the schema fields (`seqbench.checks`) and enforced by
`validate`, which reports every bad value, not only the first. Data-dependent limits
(a `seq_len` longer than a split allows, a missing file) are checked by building the
task, and sizes by building the model on the meta device (shapes, no memory), so nothing
is launched with a config that would fail a minute later. Interpolations (`${oc.env:X}`)
are resolved before any rule is checked: one that does not resolve is a bad value too.

Importing this module registers nothing: `ensure_registered` does, when called (and
`compose` and `validate` call it). Registration imports the installed plugins, which
import seqbench themselves, so doing it at import time made the plugins see this module
half-imported and made the order of its definitions matter.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from seqbench import fork, precision, sizes, spike, tblog
from seqbench.checks import at_least, broken_rule, one_of, optional_above, rule
from seqbench.clipping import CLIP
from seqbench.confdir import conf_dir
from seqbench.data.tasks import TASKS
from seqbench.errors import ConfigError, ConfigErrors
from seqbench.models import CELLS, MODEL_SCHEMAS, TORCH_CELLS
from seqbench.optim import OPTIM
from seqbench.spike import SpikeConfig


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
    # every N steps, the local smoothness along the update on a fixed probe batch
    # (Zhang et al. 2020; seqbench.smoothness) to smoothness.parquet; 0: off
    smoothness_every: int = at_least(0, 0)
    device: str = one_of("auto", ("auto", "cpu", "cuda"))
    amp: str = one_of("off", ("off", "bf16", "fp16"))
    on_nonfinite: str = one_of("stop", ("stop", "skip", "raise"))
    # a finite loss above explode_factor x the first step's loss ends the run; null: never
    explode_factor: float | None = optional_above(10.0, 1.0)
    deterministic: bool = False
    # torch intra-op threads; 0 (auto): SLURM_CPUS_PER_TASK under SLURM (cores that are
    # the job's own), else 1. torch's own default (one per core) is fast on an idle
    # machine and collapses next to a busy process (reports/bench/threads.md). More than
    # any CPU has cores is a typo: torch raises above 2**31 and segfaulted at 65536
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
    # also write TensorBoard event files into the run directory at every flush (train
    # loss, gradient norms, clipping, lr, validation metric; the config as hparams); needs
    # the tensorboard extra
    tensorboard: bool = False
    # start from another run's kept checkpoint: RUN_DIR (its latest) or RUN_DIR@STEP;
    # steps then count on from the parent's (seqbench.fork); null: from scratch
    init_from: str | None = None
    # with init_from: also take the parent's optimizer state (its hyperparameters stay
    # this run's); false: a fresh optimizer
    init_optimizer: bool = False
    # keep the state at these steps as checkpoint-STEP.pt, the points other runs can start
    # from (trainer.init_from); not part of the experiment
    # (their range, which depends on max_steps and a parent, is checked with the others')
    keep_checkpoints: list[int] = rule([], "a list of steps", lambda v: isinstance(v, list)
                                       and all(isinstance(s, int) and not isinstance(s, bool)
                                               for s in v))
    # exact disturbances at named steps (seqbench.spike); off unless spike.steps is set
    spike: SpikeConfig = dataclasses.field(default_factory=SpikeConfig)


@dataclass
class TrainConfig:
    task: Any = MISSING
    model: Any = MISSING
    optim: Any = MISSING
    clip: Any = MISSING
    trainer: Any = MISSING
    seed: int = at_least(0, 0)


GROUPS = ("task", "model", "optim", "clip", "trainer")

_registered = False


def ensure_registered() -> None:
    """Store every schema with Hydra, once per process: the built-ins', then the
    installed plugins' (imported here). Every entry point that composes a config or
    trains calls it -- the CLI, the Hydra app and sweeper (and so Hydra's job processes),
    `Clipper`, and `compose` and `validate` themselves -- instead of this module doing it
    when imported: plugins import seqbench back, and would find it half-imported.
    A plugin that cannot be used raises PluginError before anything is stored, and again
    at every later call."""
    global _registered
    if _registered:
        return
    # every module that registers tasks or models, so that their schemas are stored too
    from seqbench import plugin_loader
    from seqbench.data import corpora, regression, synthetic  # noqa: F401

    plugin_loader.load()  # registers the plugins' options and stores them with Hydra
    cs = ConfigStore.instance()
    cs.store(name="seqbench_train", node=TrainConfig)
    cs.store(group="schema/trainer", name="default", node=TrainerConfig)
    for entry in MODEL_SCHEMAS.entries():
        cs.store(group="schema/model", name=entry.name, node=entry.schema)
    for group, registry in (("task", TASKS), ("optim", OPTIM), ("clip", CLIP)):
        for entry in registry.entries():
            cs.store(group=f"schema/{group}", name=entry.name, node=entry.schema)
    _registered = True


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "train",
            with_hydra: bool = False) -> DictConfig:
    """The job config exactly as `python -m seqbench train OVERRIDES` would see it
    (`with_hydra`: and Hydra's own settings under `hydra`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    ensure_registered()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides),
                             return_hydra_config=with_hydra)


def validate(cfg: DictConfig, *, check_data: bool = True, cache: dict | None = None) -> dict:
    """Raise ConfigErrors listing every invalid value of a composed config; return the
    config resolved into plain containers (what `flatten` takes).

    `check_data` builds the task (data-dependent limits) and the model on the meta device
    (freeze patterns, size). `cache` keeps, across calls, each built task and the outcome
    of the data checks per distinct (task, model, freeze patterns, device): a sweep of
    10,000 jobs over a few models and tasks builds each once (issue 13: ~1 ms a job
    instead of ~10).
    """
    ensure_registered()  # the registries the selectors are checked against
    resolved, errors = resolve_config(cfg)  # every later check reads resolved values
    if errors:
        raise ConfigErrors(errors)
    schemas = {group: OmegaConf.get_type(cfg, group) for group in GROUPS}
    errors = field_errors(TrainConfig, resolved, "")
    for group in GROUPS:
        errors += field_errors(schemas[group], resolved[group], group + ".")
    errors += _selector_errors(resolved, schemas)
    errors += _cross_errors(resolved, schemas)
    if errors:
        raise ConfigErrors(errors)
    if not check_data:
        return resolved
    cache = {} if cache is None else cache
    t = resolved["trainer"]
    key = ("data", _key([resolved["task"], resolved["model"], t["freeze"], t["device"]]))
    if key not in cache:
        try:
            _check_data(cfg, resolved, cache)
            cache[key] = None
        except ConfigError as e:
            cache[key] = e
    if cache[key] is not None:
        raise ConfigErrors([cache[key]])
    errors = _fork_data_errors(resolved, cache[("task", _key(resolved["task"]))])
    if errors:
        raise ConfigErrors(errors)
    return resolved


def _fork_data_errors(resolved: dict, task) -> list[ConfigError]:
    """What a fork and a spike need of the built task (its vocabulary, its batches)."""
    return fork.data_errors(resolved, task) + spike.data_errors(resolved, task)


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=repr)


def _check_data(cfg: DictConfig, resolved: dict, cache: dict) -> None:
    """The checks that build things: the task, then the model's shapes on the meta device."""
    key = ("task", _key(resolved["task"]))
    task = cache.get(key)
    if task is None:
        task = cache[key] = _build_task(cfg.task)
    where, memory = _device_memory(cfg)
    sizes.check(cfg, task, memory, where)  # before building: some sizes never build
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = _build_model(task, cfg.model)
    if cfg.trainer.freeze:
        frozen_names([n for n, _ in model.named_parameters()], list(cfg.trainer.freeze))
    _check_model_fits(cfg, model)


def _build_task(task_cfg: DictConfig):
    """The task; a size that cannot be allocated is the config's fault, not a bug."""
    from seqbench.data.tasks import build_task

    try:
        return build_task(task_cfg)
    except (MemoryError, OverflowError) as e:
        raise ConfigError("task", task_cfg.name, "cannot be built with these sizes "
                          f"({type(e).__name__}: {first_line(e)})") from None
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
                          f"({type(e).__name__}: {first_line(e)})") from None


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


def first_line(e: BaseException) -> str:
    """An exception's first line: the rest of a Hydra or torch message is a traceback-like
    explanation that would break the one-line-per-problem rule."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def resolve_config(cfg: DictConfig) -> tuple[dict, list[ConfigError]]:
    """(the config as plain resolved containers, []), or ({}, [the error]) when an
    interpolation does not resolve (`${oc.env:UNSET}`, `${nokey}`, a string where a
    number belongs), named by its key and its text as given."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True), []
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raw = _raw_value(cfg, key)
        msg = first_line(e)
        if "could not be converted" in msg or "Non optional" in msg:
            got = re.search(r"Value '(.*?)' of type", msg)
            rule = type_rule(e) + (f" (it resolves to {got.group(1)!r})" if got else "")
        else:
            rule = "cannot be resolved: " + re.sub(r"^\w+ raised while resolving "
                                                  r"interpolation: ", "", msg)
        return {}, [ConfigError(key, raw, rule)]


def _raw_value(cfg: DictConfig, key: str) -> Any:
    """The value at a dotted key (`trainer.freeze[0]`) before interpolation."""
    node: Any = OmegaConf.to_container(cfg, resolve=False)
    for part in re.findall(r"[^.\[\]]+", key):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return "?"
    return node


def _selector_errors(r: dict, schemas: dict[str, Any]) -> list[ConfigError]:
    """`task.name`, `optim.name`, `clip.method` and `model.cell` pick the code that
    builds the group; see `selector_errors`."""
    return [e for group in ("task", "optim", "clip", "model")
            for e in selector_errors(group, r[group], schemas[group])]


def selector_errors(group: str, values: dict, schema: Any) -> list[ConfigError]:
    """The group's selector must name an entry whose schema is the one the group option
    composed; otherwise the builder of one entry would get the settings of another
    (GROUP=OPTION switches). Also used by `seqbench.Clipper`."""
    registry = {"task": TASKS, "optim": OPTIM, "clip": CLIP, "model": CELLS}[group]
    fits = [e.name for e in registry.entries() if e.schema is schema]
    value = values.get(registry.key.split(".", 1)[1])
    if fits and value not in fits:
        return [ConfigError(registry.key, value, f"one of {', '.join(fits)} with these "
                            f"{group} settings (another {group}: {group}=OPTION)")]
    return []


def clip_errors(clip: dict) -> list[ConfigError]:
    """Rules between clip keys that need no trainer (also used by `seqbench.Clipper`)."""
    if clip.get("relative") and clip.get("scope") != "global":
        return [ConfigError("clip.relative", True, "only with clip.scope=global")]
    return []


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


def field_errors(schema: Any, values: dict, prefix: str) -> list[ConfigError]:
    """Unknown keys and every field's declared rule, read from the resolved values."""
    if not dataclasses.is_dataclass(schema):
        return []
    out = []
    fields = _fields(schema)
    nested = _nested(schema)
    for key in values:  # `+group.key=value` can add a key that the schema does not have
        if key not in fields:
            out.append(ConfigError(prefix + str(key), values[key],
                                   "unknown key; known keys here: " + ", ".join(fields)))
    for name, check in fields.items():
        value = values[name]
        if not prefix and name in GROUPS:  # a group's values are checked with its schema
            continue
        if name in nested and isinstance(value, dict):  # a node of its own (trainer.spike)
            out += field_errors(nested[name], value, f"{prefix}{name}.")
            continue
        if not _fits_int64(value):  # torch and numpy hold sizes, steps and seeds in int64
            out.append(ConfigError(prefix + name, value,
                                   "integers must be in [-2**63, 2**63 - 1]"))
            continue
        broken = broken_rule(check, value)
        if broken is not None:
            out.append(ConfigError(prefix + name, value, broken))
    return out


@functools.cache
def _fields(schema: type) -> dict[str, Any]:
    """A schema's field names, in order, with their rules (None: no rule)."""
    return {f.name: f.metadata.get("check") for f in dataclasses.fields(schema)}


@functools.cache
def _nested(schema: type) -> dict[str, type]:
    """A schema's fields that are schemas themselves (a default_factory dataclass)."""
    return {f.name: f.default_factory for f in dataclasses.fields(schema)
            if dataclasses.is_dataclass(f.default_factory)}


def _fits_int64(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_fits_int64(v) for v in value)
    if isinstance(value, dict):
        return all(_fits_int64(v) for v in value.values())
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def _cross_errors(r: dict, schemas: dict[str, Any]) -> list[ConfigError]:
    """Rules between keys, read from the resolved values `r`."""
    out = []
    t, task, model, optim, clip = r["trainer"], r["task"], r["model"], r["optim"], r["clip"]
    if t["accum_steps"] >= 1 and task["batch_size"] % t["accum_steps"]:
        out.append(ConfigError(
            "trainer.accum_steps", t["accum_steps"],
            f"must divide task.batch_size={task['batch_size']} (the streams are split into "
            "micro-batches)",
        ))
    if t["amp"] != "off" and t["device"] in ("auto", "cpu", "cuda"):
        device = precision.resolve_device(t["device"])
        if device == "cpu" or torch.cuda.is_available():  # no GPU: trainer.device says so
            reason = precision.autocast_failure(model, device, t["amp"])
            if reason is not None:
                out.append(ConfigError("trainer.amp", t["amp"], precision.amp_error_text(
                    model, device, t["amp"], reason)))
    out += _fork_errors(r)
    out += _model_family_errors(task, schemas["model"])
    if model.get("cell") not in (None, "rnn_tanh") and model.get("init") is not None:
        out.append(ConfigError("model.init", model["init"],
                               "only for model.cell=rnn_tanh (use null otherwise)"))
    if model.get("forget_bias") is not None and model.get("cell") != "lstm":
        out.append(ConfigError("model.forget_bias", model["forget_bias"],
                               "only for model.cell=lstm (use null otherwise)"))
    if optim.get("nesterov") and not optim.get("momentum"):  # torch.optim.SGD's rule
        out.append(ConfigError("optim.nesterov", True, "needs optim.momentum > 0"))
    if clip.get("error_if_nonfinite") and t["on_nonfinite"] == "skip":
        out.append(ConfigError("clip.error_if_nonfinite", True,
                               "contradicts trainer.on_nonfinite=skip; use one of them"))
    out += clip_errors(clip)
    if clip.get("relative") and clip["calibration_steps"] >= t["max_steps"]:
        out.append(ConfigError("clip.calibration_steps", clip["calibration_steps"],
                               f"must be < trainer.max_steps={t['max_steps']}"))
    if t["tensorboard"] and not tblog.available():
        out.append(ConfigError("trainer.tensorboard", True,
                               f"needs the tensorboard extra: {tblog.EXTRA}"))
    if t["device"] == "cuda" and not torch.cuda.is_available():
        out.append(ConfigError("trainer.device", "cuda",
                               "CUDA is not available here; use auto or cpu"))
    return out


def _fork_errors(r: dict) -> list[ConfigError]:
    """trainer.init_from against its parent (read, never built), then trainer.spike
    against the steps the run makes (a fork's count on from its parent's)."""
    errors, parent_step = fork.config_errors(r, flatten(r))
    return errors + spike.config_errors(r["trainer"], parent_step)


def _model_family_errors(task: dict, model_schema: Any) -> list[ConfigError]:
    """A task builds one family of model (char_rnn unless its registration says)."""
    try:
        needs = TASKS.get(task["name"]).meta.get("model", "char_rnn")
    except ConfigError:
        return []  # an unknown task.name is reported by _selector_errors
    entry = next((e for e in MODEL_SCHEMAS.entries() if e.schema is model_schema), None)
    if entry is None or entry.meta.get("family", entry.name) == needs:
        return []
    if needs == "char_rnn":  # the recurrent stacks: nn's own, then the plugins'
        cells = [*TORCH_CELLS, *(n for n in CELLS.names() if n not in TORCH_CELLS)]
        options = ", ".join(cells[:-1]) + " or " + cells[-1]
    else:
        options = needs
    return [ConfigError("model", entry.name, f"task {task['name']} needs model={options}")]


def flat(cfg: DictConfig) -> dict[str, Any]:
    """The run's config as one flat dict with dotted keys (`clip.max_norm`, `seed`)."""
    return flatten(OmegaConf.to_container(cfg, resolve=True))


def flatten(resolved: dict) -> dict[str, Any]:
    """`flat` of a config already resolved into plain containers (`validate` returns it)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(resolved, "")
    trainer = resolved.get("trainer")
    if isinstance(trainer, dict) and trainer.get("init_from") is not None:
        out.update(fork.identity(trainer["init_from"]))  # the parent is part of the experiment
    return out


# The wording shared by every path that reports a bad override -- the CLI's composition
# errors (seqbench.hydra_input), validation and `Clipper` -- so that each reads the same.


def known_keys(cause: BaseException | None) -> str:
    """"; known keys here: ..." for an unknown key under a dataclass schema, else ""."""
    obj = getattr(cause, "object_type", None)
    if obj is not None and dataclasses.is_dataclass(obj):
        names = [f.name for f in dataclasses.fields(obj)]
        return f"; known keys here: {', '.join(names)}"
    return ""


def type_rule(cause: BaseException) -> str:
    """OmegaConf's type refusal as the rule a user can follow ("must be a number")."""
    msg = str(cause).splitlines()[0]
    m = re.search(r"could not be converted to (\w+)", msg)
    if m:
        kind = m.group(1).lower()
        return "must be " + {"float": "a number", "integer": "an integer",
                             "boolean": "true or false"}.get(kind, kind)
    if "not Optional" in msg or "Non optional" in msg:
        return "must not be null"
    if "is not a ListConfig" in msg:
        return "must be a list: [a,b]"
    m = re.search(r"is not a subclass of (\w+)Config", msg)
    if m:  # a node of keys (trainer.spike): its keys are set one by one
        return f"a group of keys ({m.group(1).lower()}); set each: KEY.NAME=VALUE"
    return msg
