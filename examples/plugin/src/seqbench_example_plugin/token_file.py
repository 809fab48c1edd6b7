"""A task over your own token ids: a text file of whitespace-separated integers.

    python -m seqbench train task=token_file task.path=ids.txt

The file holds non-negative integer ids (any tokenizer's output, one document after the
other); the vocabulary is 0 .. the largest id. The last `val_fraction` of the tokens is
the validation split, the rest the training split (contiguous, in file order). Training
is next-token prediction with truncated back-propagation through time, as seqbench's
text tasks do: the split is cut into `batch_size` parallel streams, each step reads the
next window of `seq_len` tokens of every stream, and the hidden state is carried
(detached) from one window to the next. Quality is bits per token on the validation
split; the baseline is the unigram model of the text tasks -- the training split's token
frequencies, add-one smoothed over the vocabulary -- scored on exactly the validation
targets `evaluate` scores, so a run is called trained only when it beats a predictor that
ignores its input.

This module implements seqbench's task interface (seqbench.data.tasks) with torch and
numpy only; `recurrent_stack` is whichever recurrent model `model=` selected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqbench.plugins import ConfigError, MetricSpec, at_least, recurrent_stack, rule

BITS_PER_TOKEN = MetricSpec("bits_per_token", "bits/token")


@dataclass
class TokenFileConfig:
    # no `name` field: seqbench adds it (name: token_file) when the option registers
    path: str | None = None
    seq_len: int = at_least(64, 1)
    batch_size: int = at_least(16, 1)
    val_fraction: float = rule(0.1, "must be in (0, 0.5]",
                               lambda v: v is not None and 0 < v <= 0.5)


def read_ids(path: str | None) -> np.ndarray:
    """The file's ids as int64; a ConfigError (one line) for anything else."""
    if path is None:
        raise ConfigError("task.path", None, "the path of a text file of "
                          "whitespace-separated integer token ids")
    words = Path(path).read_bytes().split()
    if not words:
        raise ConfigError("task.path", path, "holds no token ids")
    try:
        ids = np.array(words).astype(np.int64)
    except (ValueError, OverflowError):
        ids = None
    bad = [i for i, w in enumerate(words) if not w.isdigit()] if ids is None \
        else np.flatnonzero(ids < 0).tolist()
    if bad:
        word = words[bad[0]].decode("utf-8", "replace")
        raise ConfigError("task.path", path, f"token {bad[0] + 1} ({word!r}) is not a "
                          "non-negative integer id")
    return ids


def windows(n_tokens: int, batch_size: int, seq_len: int) -> int:
    """Full windows per pass over `batch_size` streams (targets need one token more)."""
    return max(0, (n_tokens // batch_size - 1) // seq_len)


def detach(hidden):
    if hidden is None:
        return None
    return tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()


def to_device(obj, device):
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(x, device) for x in obj)
    return obj


class TokenLM(nn.Module):
    """Embedding -> the selected recurrent stack -> dropout -> linear readout."""

    def __init__(self, vocab: int, model_cfg):
        super().__init__()
        self.embed = nn.Embedding(vocab, model_cfg.embed_dim)
        self.rnn = recurrent_stack(model_cfg, model_cfg.embed_dim)
        self.drop = nn.Dropout(model_cfg.dropout)
        self.decoder = nn.Linear(model_cfg.hidden_size, vocab)

    def forward(self, x: Tensor, hidden=None):
        out, hidden = self.rnn(self.embed(x), hidden)
        return self.decoder(self.drop(out)), hidden


class TokenFileTask:
    name = "token_file"
    metric = BITS_PER_TOKEN

    def __init__(self, cfg: TokenFileConfig):
        self.cfg, self.path = cfg, cfg.path
        ids = read_ids(cfg.path)
        self.vocab = int(ids.max()) + 1
        n_val = max(1, int(len(ids) * float(cfg.val_fraction)))
        self.ids = {"train": ids[:len(ids) - n_val], "val": ids[len(ids) - n_val:]}
        self.b, self.t = int(cfg.batch_size), int(cfg.seq_len)
        self._check_lengths()
        self.position, self.hidden = 0, []

    def _check_lengths(self) -> None:
        for split, ids in self.ids.items():  # the validation split binds first, usually
            n = len(ids)
            if windows(n, self.b, self.t) >= 1:
                continue
            if n // self.b < 2:
                raise ConfigError("task.batch_size", self.b, f"at most {n // 2} for the "
                                  f"{split} split of {self.path} ({n} tokens)")
            raise ConfigError("task.seq_len", self.t, f"at most {n // self.b - 1} with "
                              f"task.batch_size={self.b}: the {split} split of {self.path} "
                              f"has {n} tokens, cut into {self.b} streams")

    def _streams(self, split: str, device) -> Tensor:
        ids = self.ids[split]
        length = len(ids) // self.b
        return torch.as_tensor(ids[:self.b * length]).view(self.b, length).to(device)

    # ---- seqbench's task interface --------------------------------------------------
    def setup(self, device, accum_steps: int) -> None:
        self.train, self.val = self._streams("train", device), self._streams("val", device)
        self.train_windows = windows(len(self.ids["train"]), self.b, self.t)
        self.micro, self.hidden = self.b // accum_steps, [None] * accum_steps

    def build_model(self, model_cfg) -> nn.Module:
        return TokenLM(self.vocab, model_cfg)

    @property
    def tokens_per_step(self) -> int:
        return self.b * self.t

    def describe(self) -> dict:
        return {"path": str(self.path), "vocab_size": self.vocab,
                "tokens": {k: len(v) for k, v in self.ids.items()}}

    def train_loss(self, model: nn.Module, j: int) -> Tensor:
        rows = slice(j * self.micro, (j + 1) * self.micro)
        start = self.position * self.t
        x = self.train[rows, start:start + self.t]
        y = self.train[rows, start + 1:start + self.t + 1]
        logits, hidden = model(x, self.hidden[j])
        self.hidden[j] = detach(hidden)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))

    def advance(self) -> None:
        self.position += 1
        if self.position >= self.train_windows:  # a new pass: the streams start over
            self.position = 0
            self.reset_state()

    def reset_state(self) -> None:
        self.hidden = [None] * len(self.hidden)

    def state_dict(self) -> dict:
        return {"position": self.position, "hidden": list(self.hidden)}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        self.hidden = [to_device(h, self.train.device) for h in state["hidden"]]

    def _val_windows(self, max_batches: int) -> int:
        n = windows(len(self.ids["val"]), self.b, self.t)
        return n if max_batches <= 0 else min(n, max_batches)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int = 0) -> dict[str, float]:
        was_training = model.training
        model.eval()
        n = self._val_windows(max_batches)
        total = torch.zeros((), dtype=torch.float64, device=self.val.device)
        hidden = None
        for k in range(n):
            x = self.val[:, k * self.t:(k + 1) * self.t]
            y = self.val[:, k * self.t + 1:(k + 1) * self.t + 1]
            logits, hidden = model(x, hidden)
            total += F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(),
                                     y.reshape(-1), reduction="sum")
        model.train(was_training)
        loss = total.item() / (n * self.b * self.t)
        return {"val_loss": loss, "val_metric": loss / math.log(2)}

    def baseline(self, max_batches: int = 0) -> dict:
        """Unigram: p(k) = (count_train(k) + 1) / (N_train + V), on the validation
        targets evaluate(model, max_batches) scores (every stream's tokens 1 .. n*T)."""
        train = np.bincount(self.ids["train"], minlength=self.vocab)
        n = self._val_windows(max_batches)
        length = len(self.ids["val"]) // self.b
        streams = self.ids["val"][:self.b * length].reshape(self.b, length)
        val = np.bincount(streams[:, 1:1 + n * self.t].ravel(), minlength=self.vocab)
        log_p = np.log(train + 1.0) - math.log(train.sum() + self.vocab)
        nats = -float(val @ log_p) / val.sum()
        return {"val_metric": nats / math.log(2), "val_loss": nats,
                "description": f"unigram: token frequencies of the training split "
                               f"({int(train.sum()):,} tokens), add-one smoothed over the "
                               f"{self.vocab}-token vocabulary, on the {int(val.sum()):,} "
                               "validation targets evaluate scores"}
