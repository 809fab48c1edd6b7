"""Config schemas, their registration with Hydra, and validation.

Types and unknown keys are caught by Hydra/OmegaConf, because every group option
extends a dataclass schema stored here (`/schema/<group>/<name>` in the ConfigStore).
Value ranges are declared on the schema fields (`seqbench.checks`) and enforced by
`validate`, which reports every bad value, not only the first. Data-dependent limits
(a `seq_len` longer than a split allows, a missing file) are checked by building the
task, so nothing is launched with a config that would fail a minute later.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from seqbench.checks import at_least, one_of, optional_above, rule
from seqbench.clipping import CLIP
from seqbench.data.tasks import TASKS
from seqbench.errors import ConfigError, ConfigErrors
from seqbench.models import MODEL_SCHEMAS
from seqbench.optim import OPTIM


@dataclass
class TrainerConfig:
    max_steps: int = at_least(600, 1)
    # micro-batches per optimizer step: task.batch_size streams are split into this many
    accum_steps: int = at_least(1, 1)
    # per-step numbers stay on the device and are read once every log_every steps
    log_every: int = at_least(25, 1)
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
    threads: int = at_least(0, 0)  # torch intra-op threads; 0: torch's default
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

# Config keys that change where or how a run executes, not what it measures: runs that
# differ only in these are the same experiment (one report cell, one finished sweep job).
NON_EXPERIMENT_KEYS = ("trainer.progress", "trainer.device", "trainer.threads",
                       "trainer.log_every", "trainer.checkpoint_every", "trainer.resume")


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


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "train") -> DictConfig:
    """The job config exactly as `python -m seqbench train OVERRIDES` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


def validate(cfg: DictConfig, *, check_data: bool = True) -> None:
    """Raise ConfigErrors listing every invalid value of a composed config."""
    errors = list(_field_errors(cfg, ""))
    for group in GROUPS:
        errors += _field_errors(cfg[group], group + ".")
    errors += _cross_errors(cfg)
    if errors:
        raise ConfigErrors(errors)
    if check_data:
        from seqbench.data.tasks import build_task

        try:
            task = build_task(cfg.task)
            if cfg.trainer.freeze:
                with torch.device("meta"):  # names only: no memory, no initialisation cost
                    names = [n for n, _ in task.build_model(cfg.model).named_parameters()]
                frozen_names(names, list(cfg.trainer.freeze))
        except ConfigError as e:
            raise ConfigErrors([e]) from None


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
        rule = f.metadata.get("check")
        if rule is None:
            continue
        text, ok = rule
        value = node[f.name]
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        try:
            good = ok(value)
        except TypeError:
            good = False
        if not good:
            out.append(ConfigError(prefix + f.name, value, text))
    return out


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
    except ConfigError as e:
        return [e]
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
        return str(exc).splitlines()[0]
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
