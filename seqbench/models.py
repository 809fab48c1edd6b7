"""Recurrent character models: embedding -> recurrent stack -> linear decoder.

The recurrent stack is PyTorch's own `nn.LSTM` / `nn.GRU` / `nn.RNN`, so on CUDA it runs
cuDNN's fused kernels; the cell type is a registry entry like every other named choice.
Every `CELLS` entry builds a stack the same way, `build(model_cfg, input_size)`, so a
plugin's recurrent model (`seqbench.plugins.register_model`) is built by every recurrent
task exactly as nn.LSTM is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from seqbench.checks import at_least, in_range, one_of, rule
from seqbench.registry import Registry

# The recurrent stacks: `model.cell` names one; each entry is `build(cfg, input_size)`
# -> a module with nn.LSTM's batch_first interface (see `make_recurrent`). Plugins add
# entries with their own config schema; the built-ins share CharRNNConfig (schema
# `object` here: their `cell` field's own rule already lists them).
CELLS: Registry = Registry("cell", "model.cell")
TORCH_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": partial(nn.RNN, nonlinearity="tanh")}


@dataclass
class RecurrentConfig:
    """The keys every recurrent model has: the tasks build their input and output layers
    from embed_dim and hidden_size, and the size checks read num_layers. `cell` names the
    stack (a CELLS entry); a plugin's option name is filled in when it registers."""

    cell: str = ""
    embed_dim: int = at_least(64, 1)
    hidden_size: int = at_least(256, 1)
    num_layers: int = at_least(1, 1)
    dropout: float = in_range(0.0, 0.0, 1.0, high_open=True)


@dataclass
class CharRNNConfig(RecurrentConfig):
    cell: str = one_of("lstm", sorted(TORCH_CELLS))
    # LSTM only: set the forget-gate bias (null keeps PyTorch's uniform init, which starts
    # the gate near 0.5). A bias of 1 (Gers et al. 2000; Jozefowicz et al. 2015) helps
    # long-range tasks: measured here, temporal order at T=50 learns with it, not without.
    forget_bias: float | None = None
    # rnn_tanh only: `pascanu` is Pascanu, Mikolov & Bengio's (2013) initialisation for
    # their synthetic tasks (null keeps PyTorch's uniform init); see `pascanu_init`.
    init: str | None = rule(None, "null or pascanu", lambda v: v in (None, "pascanu"))


#: Pascanu et al. (2013, sec. 5): weights from a normal with standard deviation 0.1 (their
#: "N(0, 0.01)" read as a variance), the recurrent matrix sparse with 15 non-zero entries
#: per row and rescaled to spectral radius 0.95, biases zero.
PASCANU_STD, PASCANU_NONZERO, PASCANU_RADIUS = 0.1, 15, 0.95


@torch.no_grad()
def pascanu_init(rnn: nn.RNN) -> None:
    """Pascanu's initialisation of an nn.RNN stack, drawn from torch's global generator
    (so `seed` decides it). Why: the synthetic-task results the `pascanu` preset compares
    with were obtained from it, and a sparse recurrent matrix at radius 0.95 starts the
    network just inside the regime where gradients neither vanish fast nor explode."""
    if any(w.is_meta for w in rnn.parameters()):  # the size checks: shapes only
        return
    for name, w in rnn.named_parameters():
        if name.startswith("bias"):
            w.zero_()
        elif name.startswith("weight_ih"):
            w.normal_(0.0, PASCANU_STD)
        elif name.startswith("weight_hh"):
            h = w.shape[0]
            k = min(PASCANU_NONZERO, h)
            dense = torch.randn(h, h, dtype=torch.float64) * PASCANU_STD
            keep = torch.zeros(h, h, dtype=torch.bool)
            for row in range(h):
                keep[row, torch.randperm(h)[:k]] = True
            dense = dense * keep
            radius = torch.linalg.eigvals(dense).abs().max()
            if radius > 0:
                dense = dense * (PASCANU_RADIUS / radius)
            w.copy_(dense.to(w.dtype))


def _torch_stack(name: str):
    def build(cfg: CharRNNConfig, input_size: int) -> nn.Module:
        rnn = TORCH_CELLS[name](
            input_size, cfg.hidden_size, num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0, batch_first=True,
        )
        if getattr(cfg, "forget_bias", None) is not None:
            h = cfg.hidden_size
            with torch.no_grad():  # gate order in nn.LSTM: input, forget, cell, output
                for layer in range(cfg.num_layers):
                    getattr(rnn, f"bias_ih_l{layer}")[h:2 * h].fill_(float(cfg.forget_bias))
                    getattr(rnn, f"bias_hh_l{layer}")[h:2 * h].zero_()
        if getattr(cfg, "init", None) == "pascanu":
            pascanu_init(rnn)
        return rnn

    return build


for _name in TORCH_CELLS:
    CELLS.register(_name, object)(_torch_stack(_name))
del _name


def make_recurrent(cfg: RecurrentConfig, input_size: int) -> nn.Module:
    """The recurrent stack a model config describes, from the CELLS registry: a module
    called as `module(x, hidden=None) -> (out, hidden)`, x of shape (batch, time,
    input_size), out (batch, time, cfg.hidden_size)."""
    return CELLS.get(cfg.cell).build(cfg, input_size)


# Model schemas by config option family: the `model` group's YAML files extend one of
# these (`/schema/model/<name>`); tasks decide which model family they build.
MODEL_SCHEMAS: Registry = Registry("model", "model")
MODEL_SCHEMAS.register("char_rnn", CharRNNConfig)(CharRNNConfig)

Hidden = Tensor | tuple[Tensor, Tensor]


class CharRNN(nn.Module):
    def __init__(self, vocab_size: int, cfg: CharRNNConfig):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim)
        self.rnn = make_recurrent(cfg, cfg.embed_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.decoder = nn.Linear(cfg.hidden_size, vocab_size)

    def forward(self, x: Tensor, hidden: Hidden | None = None) -> tuple[Tensor, Hidden]:
        out, hidden = self.rnn(self.embed(x), hidden)
        return self.decoder(self.drop(out)), hidden


def detach(hidden: Hidden | None) -> Hidden | None:
    """Cut the graph at a window boundary (truncated BPTT) but keep the state's values."""
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())




# ---- multilayer perceptron (the regression tasks) -------------------------------------
from seqbench.checks import rule  # noqa: E402  (this section is appended to the module)

ACTIVATIONS: Registry = Registry("activation", "model.activation")
ACTIVATIONS.register("relu", object)(nn.ReLU)
ACTIVATIONS.register("tanh", object)(nn.Tanh)
ACTIVATIONS.register("sigmoid", object)(nn.Sigmoid)

# Keras' uniform initialisers, by name: limit = sqrt(6 / fan_in) for he_uniform,
# sqrt(6 / (fan_in + fan_out)) for glorot_uniform (Keras' Dense default).
KERAS_KERNELS = {
    "he_uniform": lambda w: nn.init.kaiming_uniform_(w, a=0.0, nonlinearity="relu"),
    "glorot_uniform": nn.init.xavier_uniform_,
}


@dataclass
class MLPConfig:
    hidden_sizes: list[int] = rule([25], "a non-empty list of integers >= 1",
                                   lambda v: len(v) > 0 and all(int(x) >= 1 for x in v))
    activation: str = one_of("relu", ACTIVATIONS.names())
    # keras: Keras Dense initialisation -- hidden kernels by `kernel_initializer`, the
    # output kernel glorot_uniform (Keras' default), all biases zero. torch: nn.Linear's
    # own (kaiming_uniform(a=sqrt(5)) weights, U(+-1/sqrt(fan_in)) biases).
    init: str = one_of("keras", ("keras", "torch"))
    kernel_initializer: str = one_of("he_uniform", tuple(KERAS_KERNELS))


MODEL_SCHEMAS.register("mlp", MLPConfig)(MLPConfig)


class MLP(nn.Module):
    """in_features -> hidden_sizes (activation after each) -> out_features, linear output."""

    def __init__(self, in_features: int, out_features: int, cfg: MLPConfig):
        super().__init__()
        sizes = [int(in_features), *(int(h) for h in cfg.hidden_sizes)]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = ACTIVATIONS.get(cfg.activation).build()
        self.out = nn.Linear(sizes[-1], int(out_features))
        if cfg.init == "keras":
            kernel = KERAS_KERNELS[cfg.kernel_initializer]
            for layer in self.hidden:
                kernel(layer.weight)
            nn.init.xavier_uniform_(self.out.weight)
            for layer in (*self.hidden, self.out):
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.hidden:
            x = self.act(layer(x))
        return self.out(x)
