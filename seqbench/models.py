"""Recurrent character models: embedding -> recurrent stack -> linear decoder.

The recurrent stack is PyTorch's own `nn.LSTM` / `nn.GRU` / `nn.RNN`, so on CUDA it runs
cuDNN's fused kernels; the cell type is a registry entry like every other named choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from torch import Tensor, nn

from seqbench.checks import at_least, in_range, one_of
from seqbench.registry import Registry

CELLS: Registry = Registry("cell", "model.cell")
CELLS.register("lstm", object)(nn.LSTM)
CELLS.register("gru", object)(nn.GRU)
CELLS.register("rnn_tanh", object)(partial(nn.RNN, nonlinearity="tanh"))


@dataclass
class CharRNNConfig:
    cell: str = one_of("lstm", CELLS.names())
    embed_dim: int = at_least(64, 1)
    hidden_size: int = at_least(256, 1)
    num_layers: int = at_least(1, 1)
    dropout: float = in_range(0.0, 0.0, 1.0, high_open=True)


Hidden = Tensor | tuple[Tensor, Tensor]


class CharRNN(nn.Module):
    def __init__(self, vocab_size: int, cfg: CharRNNConfig):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.embed_dim)
        make = CELLS.get(cfg.cell).build
        self.rnn = make(
            cfg.embed_dim,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
            batch_first=True,
        )
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


