"""Your own clipping method, model or task, as an installed plugin.

Why plugins: the question seqbench answers (which clipping keeps training stable, at what
cost) is asked about *your* method, model and data, and editing seqbench's source to add
them would fork it. Configs stay data: a plugin is code because you installed it, never
because a config string names something to import (there is no `_target_`).

**Discovery.** A distribution declares entry points in the group `seqbench.plugins`, each
naming a module (pytest's and Hydra's convention)::

    [project.entry-points."seqbench.plugins"]
    example = "seqbench_example_plugin.plugin"

Every process that composes configs or trains imports every such module once, when
`seqbench.config.ensure_registered()` first runs (the CLI, the sweeper, Hydra's job
processes, `Clipper`, `compose` and `validate` call it), before the config schemas are
stored with Hydra (a script that composes with Hydra's own API calls it first). The
module registers what it brings with the decorators below. `python -m seqbench plugins`
lists what is installed and what each plugin registered.
`SEQBENCH_DISABLE_PLUGIN_AUTOLOAD=1` skips discovery (as pytest's
PYTEST_DISABLE_PLUGIN_AUTOLOAD does); seqbench's own test suite sets it.

**What a registration gives.** `register_clip("mine", MineConfig)` makes `clip=mine` a
config group option whose keys and defaults are MineConfig's fields (no YAML file is
needed; the schema is stored as `schema/clip/mine` too, so a YAML preset can extend it),
so `clip=mine clip.<key>=<value>` works in `train`, in sweeps and grids, in `train
--help`, in validation (types and the fields' declared rules, with the built-ins'
one-line errors), and in `seqbench.Clipper("mine")`. Models and tasks alike.

**Failures.** A plugin that fails to import, takes a name that is taken (by seqbench or
another plugin), or declares a config that is not a dataclass schema stops seqbench
before anything runs: one line naming the plugin (entry point and distribution) and the
problem, exit status 2 (`seqbench.errors.PluginError`). Plugins load all or nothing.

Config dataclasses
------------------
Fields with defaults; their types are OmegaConf's (int, float, bool, str, Optional,
lists, dicts, nested dataclasses). Ranges are declared with the same helpers the
built-ins use, re-exported here: `positive`, `nonnegative`, `at_least`, `in_range`,
`one_of`, `optional_above`, `rule(default, text, ok)` -- `validate` enforces them and
prints `clip.<key>=<value>: <text>`. The selector field (`method` for a clip method,
`cell` for a model, `name` for a task) is added with the option's name when the dataclass
lacks it; declared with another default it is an error. Builders receive the composed
config node (attribute access: `cfg.beta`), not a dataclass instance.

Clipping methods: `register_clip(name, Config)` over `build(cfg, named_params) -> clip`
----------------------------------------------------------------------------------------
`build` is called once per run with the run's trainable parameters, `named_params`, a
list of `(name, parameter)` as `model.named_parameters()` gives them, frozen ones left
out. It must be cheap and pure: `Clipper` also builds once with `[]` to learn whether the
method keeps state. Then, once per optimizer step (after gradient accumulation, after
the AMP unscale), the trainer calls::

    post_norm, changed = clip(params, grads, pre_norm)

- `params`: the trainable parameters that have a gradient this step, in `named_params`
  order (usually all of them); `grads[i]` is `params[i].grad`;
- `pre_norm`: the global L2 norm of `grads`, a 0-d float32 tensor on their device,
  already computed with the fused kernels (reuse it rather than recompute it);
- clip **in place** (`torch._foreach_mul_(grads, coef)`, `g.mul_(...)`, clamps);
- return `post_norm`, the global L2 norm of the clipped gradients (so that methods are
  comparable whatever norm they clip by), and `changed`, a 0-d bool tensor "some
  gradient was changed", both on the device.

No host syncs: no `.item()`, `float(t)`, `bool(t)`, `.cpu()` or Python `if` on a tensor
value; keep state in device tensors and decide with `torch.where`. Python counters of
steps are fine. A non-finite `pre_norm` reaches the trainer, which handles it; keep NaN
and Inf out of the method's own statistics. Optional:

- `state_dict() -> dict` of tensors and plain values, and `load_state_dict(state)`, for
  a stateful method: checkpoints (and so resume after pre-emption) save and restore it,
  and a run writes it to `clip_state.pt` at its end. Tensors come back on the run's
  device; a method built for a run must accept its own `state_dict()`;
- `summary() -> dict` of plain values (JSON), written once at the end to summary.json's
  `clip` (a host sync there is fine);
- `warnings`: a list of strings `Clipper` shows (e.g. a pattern that matched nothing).

Models: `register_model(name, Config)` over `build(cfg, input_size) -> module`
-----------------------------------------------------------------------------
A model is a recurrent stack, as `nn.LSTM` is in `model=lstm`: every recurrent task
(text, synthetic and plugin tasks) builds its own input layer (an embedding of
`cfg.embed_dim` or a projection to it) and readout (from `cfg.hidden_size`) around it,
so `model=name` works with all of them. `Config` extends `RecurrentConfig` (embed_dim,
hidden_size, num_layers, dropout; `cell` is filled in). The module is called as

    out, hidden = module(x, hidden=None)

with `x` of shape (batch, time, input_size) (batch_first), `out` of shape (batch, time,
cfg.hidden_size), and `hidden` whatever state the stack carries -- a tensor or a tuple of
tensors: text tasks pass it back with the next window (detached) and checkpoint it;
`None` means a zero state. Building must work under `torch.device("meta")` (validation
builds every model there and checks that its weights fit the device). seqbench's
closed-form size estimate (activations) knows only nn's cells, so it is skipped for a
plugin's; `model.num_layers` is capped at 1,024 as for them.

Tasks: `register_task(name, Config, model="char_rnn")` over `build(cfg) -> task`
-------------------------------------------------------------------------------
`Config` must have a `batch_size` field (the trainer splits it into
`trainer.accum_steps` micro-batches). The task object follows the interface in
`seqbench.data.tasks` (what the trainer uses, nothing else): `name`, `metric`
(`MetricSpec`), `setup(device, accum_steps)`, `build_model(model_cfg)` (recurrent
models: `recurrent_stack(model_cfg, input_size)` is the stack `model=` selected,
built-in or plugin), `tokens_per_step`, `train_loss(model, j)` (on the device, no host
reads), `advance()`, `reset_state()`, `evaluate(model, max_batches)` -> `val_loss`,
`val_metric` floats, `baseline(max_batches)` -> `val_metric`, `description` (what an
input-independent predictor scores on exactly what `evaluate` scores), `describe()`,
`state_dict()`/`load_state_dict()` (the data position and carried state), optional
`success(model)`. Building checks the data: raise `ConfigError(key, value, allowed)` for
a value the data cannot take; validation shows it as one line. `model="mlp"` declares a
task that builds `model=mlp` instead of a recurrent model.
"""

from __future__ import annotations

from seqbench.checks import at_least, in_range, nonnegative, one_of, optional_above, positive, rule
from seqbench.data.tasks import MetricSpec
from seqbench.errors import ConfigError, PluginError
from seqbench.models import RecurrentConfig
from seqbench.models import make_recurrent as recurrent_stack
from seqbench.plugin_loader import register

__all__ = [
    "ConfigError", "MetricSpec", "PluginError", "RecurrentConfig", "at_least", "in_range",
    "nonnegative", "one_of", "optional_above", "positive", "recurrent_stack",
    "register_clip", "register_model", "register_task", "rule",
]


def register_clip(name: str, config: type):
    """Decorator: `clip=name` builds clipping with the decorated `build(cfg, named_params)`
    (the contract is in this module's docstring)."""
    return register("clip", name, config)


def register_model(name: str, config: type):
    """Decorator: `model=name` builds the recurrent stack with the decorated
    `build(cfg, input_size)`; `config` extends RecurrentConfig."""
    return register("model", name, config)


def register_task(name: str, config: type, *, model: str = "char_rnn"):
    """Decorator: `task=name` builds the task with the decorated `build(cfg)`; `model` is
    the family of models it builds (`char_rnn`: every recurrent model; `mlp`)."""
    return register("task", name, config, model=model)
