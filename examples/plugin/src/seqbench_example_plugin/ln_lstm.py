"""A layer-normalised LSTM (Ba, Kiros & Hinton 2016), in plain torch.

Source: Ba, Kiros & Hinton (2016), "Layer Normalization", arXiv:1607.06450, the
layer-normalised LSTM of its recurrent experiments. Per layer and time step, with
LN(z; alpha, beta) normalising z over its features (mean 0, variance 1) then scaling by
alpha and shifting by beta, each LN with its own alpha and beta:

    (f, i, o, g) = LN(W_h h_{t-1}) + LN(W_x x_t) + b
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(LN(c_t))

W_h h and W_x x are normalised separately, each over all 4H gate pre-activations;
weights are drawn as nn.LSTM's, U(-1/sqrt(H), 1/sqrt(H)), b starts at 0, the LN gains at
1 and shifts at 0. Layers are stacked as in nn.LSTM: dropout on every layer's output but
the last. The input projection W_x x of all time steps is one matrix product; the
recurrence is a Python loop over time (no fused kernel), so it is several times slower
than cuDNN's nn.LSTM -- fine for comparing clipping methods on it, not for speed.

The module has nn.LSTM's batch_first interface, the contract of a seqbench model plugin:
`module(x, hidden=None) -> (out, (h, c))`, x (batch, time, input), out (batch, time, H),
h and c (layers, batch, H).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from seqbench.plugins import RecurrentConfig, positive


@dataclass
class LayerNormLSTMConfig(RecurrentConfig):
    # RecurrentConfig: embed_dim, hidden_size, num_layers, dropout; `cell` is filled in
    ln_eps: float = positive(1e-5)  # LayerNorm's epsilon


class LayerNormLSTMLayer(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, eps: float):
        super().__init__()
        gates = 4 * hidden_size
        self.w_x = nn.Linear(input_size, gates, bias=False)
        self.w_h = nn.Linear(hidden_size, gates, bias=False)
        self.bias = nn.Parameter(torch.zeros(gates))
        self.ln_x = nn.LayerNorm(gates, eps=eps)
        self.ln_h = nn.LayerNorm(gates, eps=eps)
        self.ln_c = nn.LayerNorm(hidden_size, eps=eps)
        bound = 1 / math.sqrt(hidden_size)
        for w in (self.w_x.weight, self.w_h.weight):
            nn.init.uniform_(w, -bound, bound)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        wx = self.ln_x(self.w_x(x)) + self.bias  # every time step at once
        outs = []
        for t in range(x.size(1)):
            f, i, o, g = (wx[:, t] + self.ln_h(self.w_h(h))).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
            outs.append(h)
        return torch.stack(outs, dim=1), h, c


class LayerNormLSTM(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, eps: float = 1e-5):
        super().__init__()
        self.hidden_size = hidden_size
        self.layers = nn.ModuleList(
            LayerNormLSTMLayer(input_size if k == 0 else hidden_size, hidden_size, eps)
            for k in range(num_layers))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, hidden: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if hidden is None:
            zeros = x.new_zeros(len(self.layers), x.size(0), self.hidden_size)
            hidden = (zeros, zeros)
        h0, c0 = hidden
        hs, cs = [], []
        out = x
        for k, layer in enumerate(self.layers):
            out, h, c = layer(out, h0[k], c0[k])
            hs.append(h)
            cs.append(c)
            if k < len(self.layers) - 1:
                out = self.drop(out)
        return out, (torch.stack(hs), torch.stack(cs))
