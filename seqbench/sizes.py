"""A-priori size checks: a run too big to build or to train is refused before anything
is built, with one line that gives the estimate.

Why a priori: validation builds each job's model on the meta device to check its shapes,
but building is not free in every dimension. `nn.LSTM` with `num_layers` layers creates
4 parameter tensors a layer in Python: 1,000 layers took 0.17 s here, 10,000 took 6.9 s,
and a million never finished. Activations are not built at all at validation, and the
synthetic tasks' evaluation sets are drawn only when a run starts. So the sizes are
estimated from the config first, in closed form:

- parameters of a recurrent stack: `g * H * (in + H) + 2 * g * H` per layer (g gates:
  4 for an LSTM, 3 for a GRU, 1 for a tanh RNN; `in` is the embedding, then H), plus the
  input embedding and the output layer (vocabulary-sized; the task's vocabulary when it
  has one);
- weights and gradients: 8 bytes a parameter (optimizer state comes on top);
- activations kept for the backward pass of one step: about `4 * B * T * L * H * (g + 2)`
  bytes (each gate and the two states, per layer, step and stream);
- a synthetic task's validation set, kept on the device: `val_sequences x steps` values;
  its test set is drawn in blocks, so it costs time: at most MAX_TEST_VALUES values.

An estimate is a lower bound of what a run needs; the exact parameter count is still
checked after the meta build (`config._check_model_fits`).
"""

from __future__ import annotations

from dataclasses import dataclass

from seqbench.errors import ConfigError

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1}
#: Layers whose parameters are built one by one in Python: beyond this the build itself
#: takes seconds to hours (measured above). 1,024 layers: about 0.2 s.
MAX_LAYERS = 1024
#: Values a synthetic task's test set may hold (drawn in blocks at the end of a run):
#: 2**31 values of 8 bytes is 16 GiB of random draws, minutes of work at the end.
MAX_TEST_VALUES = 2**31


@dataclass(frozen=True)
class Estimate:
    parameters: int
    activation_bytes: int

    @property
    def weight_bytes(self) -> int:
        return 8 * self.parameters


def recurrent_estimate(model_cfg, vocab: int, streams: int, steps: int) -> Estimate | None:
    """The estimate for a recurrent model config; None for other model families."""
    cell = getattr(model_cfg, "cell", None)
    if cell not in GATES:
        return None
    g, h, e, layers = GATES[cell], int(model_cfg.hidden_size), int(model_cfg.embed_dim), \
        int(model_cfg.num_layers)
    rec = g * h * (e + h) + 2 * g * h + (layers - 1) * (g * h * (2 * h) + 2 * g * h)
    params = vocab * e + rec + h * vocab + vocab
    return Estimate(params, 4 * streams * steps * layers * h * (g + 2))


def check(cfg, task, memory_bytes: int, where: str) -> None:
    """Raise ConfigError (one line: key, value, the estimate) when the run cannot fit."""
    model = cfg.model
    # every recurrent stack, a plugin's too: the layers are built one by one in Python
    if getattr(model, "cell", None) and int(model.num_layers) > MAX_LAYERS:
        raise ConfigError("model.num_layers", model.num_layers,
                          f"at most {MAX_LAYERS}: building {4 * int(model.num_layers):,} "
                          "parameter tensors one by one is slow (10,000 layers took 7 s, "
                          "1,000,000 never finished)")
    vocab = _vocab(task)
    streams, steps = _batch(cfg.task, task)
    est = recurrent_estimate(model, vocab, streams, steps)
    if est is not None:
        need = est.weight_bytes + est.activation_bytes
        if need > memory_bytes:
            key, value = _culprit(cfg, streams * steps)
            raise ConfigError(key, value, f"too large: about {est.parameters:,} parameters "
                              f"({_gib(est.weight_bytes)} for weights and gradients) and "
                              f"{_gib(est.activation_bytes)} of activations a step; {where} "
                              f"has {_gib(memory_bytes)}")
    _check_eval_sets(cfg.task, task, memory_bytes, where)


def _check_eval_sets(task_cfg, task, memory_bytes: int, where: str) -> None:
    steps = getattr(task, "steps", None)
    if not isinstance(steps, int):
        return
    val = int(task_cfg.val_sequences) * steps * 8
    if val > memory_bytes:
        raise ConfigError("task.val_sequences", task_cfg.val_sequences,
                          f"too large: the validation set ({task_cfg.val_sequences:,} x "
                          f"{steps} steps) needs about {_gib(val)} on the device; {where} "
                          f"has {_gib(memory_bytes)}")
    test = int(task_cfg.test_sequences) * steps
    if test > MAX_TEST_VALUES:
        raise ConfigError("task.test_sequences", task_cfg.test_sequences,
                          f"at most {MAX_TEST_VALUES // steps:,} at {steps} steps a sequence "
                          f"(drawing and scoring {test:,} values would take hours)")


def _vocab(task) -> int:
    vocab = getattr(task, "vocab", None)
    return int(getattr(vocab, "size", 0) or 256)


def _batch(task_cfg, task) -> tuple[int, int]:
    streams = int(getattr(task_cfg, "batch_size", 1) or 1)
    steps = getattr(task, "steps", None)
    if not isinstance(steps, int):
        steps = int(getattr(task_cfg, "seq_len", 1) or 1)
    return streams, steps


def _culprit(cfg, tokens: int) -> tuple[str, object]:
    """The dimension furthest beyond a typical size: the likely cause."""
    m = cfg.model
    candidates = [("model.num_layers", m.num_layers, int(m.num_layers) / 4),
                  ("model.hidden_size", m.hidden_size, int(m.hidden_size) / 1024),
                  ("model.embed_dim", m.embed_dim, int(m.embed_dim) / 1024)]
    if "batch_size" in cfg.task:
        candidates.append(("task.batch_size", cfg.task.batch_size, tokens / 65536))
    key, value, _ = max(candidates, key=lambda c: c[2])
    return key, value


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**40 else f"{n / 2**40:,.1f} TiB"
