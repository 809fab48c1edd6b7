"""Tasks: what is learned (data stream + model + loss), one registry entry per task.

A task owns its data and its recurrent state, so the trainer stays one loop for every
task: it asks for the loss of micro-batch j, steps, and tells the task to advance. What a
task must provide is the `Task` protocol below: the trainer uses nothing else, so a
plugin's task needs no base class, only these members.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqbench.checks import at_least, one_of
from seqbench.data.batching import StreamBatches, max_seq_len, target_spans, tensors_to, to_device
from seqbench.data.corpus import read_text_file, tinyshakespeare
from seqbench.data.vocab import ByteVocab, CharVocab, token_counts
from seqbench.errors import ConfigError
from seqbench.models import CharRNN, detach
from seqbench.registry import Registry
from seqbench.rundir import BPC, Metric

TASKS: Registry = Registry("task", "task.name")


#: A task's quality measure (the plugin API's name for ``seqbench.rundir.Metric``, the one
#: description the trainer writes and the report reads).
MetricSpec = Metric


class Task(Protocol):
    """What the trainer asks of a task (`seqbench.train.Trainer`), and nothing more."""

    name: str
    metric: MetricSpec  # the task's quality measure, as evaluate() reports it

    @property
    def tokens_per_step(self) -> int:
        """Tokens (or samples) one optimizer step consumes; read once, after setup."""
        ...

    def setup(self, device: torch.device, accum_steps: int) -> None:
        """Put the data on the device; each step is `accum_steps` micro-batches."""
        ...

    def build_model(self, model_cfg: Any) -> nn.Module: ...

    def describe(self) -> dict:
        """Facts for summary.json (sizes, vocabulary, ...)."""
        ...

    def train_loss(self, model: nn.Module, j: int) -> Tensor:
        """Mean loss of micro-batch j of the current step, computed on the device: a host
        read here would be a sync on every step."""
        ...

    def advance(self) -> None:
        """Move to the next step's data."""
        ...

    def reset_state(self) -> None:
        """Drop carried state (hidden states): a skipped step may have poisoned it."""
        ...

    def evaluate(self, model: nn.Module, max_batches: int = 0) -> dict[str, float]:
        """`val_loss`, `val_metric` (and `val_bpc` for text), as Python floats; called
        every `eval_every` steps and at the end."""
        ...

    def state_dict(self) -> dict:
        """The data position and any carried state (hidden states, generator states),
        tensors and plain values only, so a checkpointed run resumes on exactly the data
        it would have seen."""
        ...

    def load_state_dict(self, state: dict) -> None: ...

    def baseline(self, max_batches: int = 0) -> dict:
        """What an input-independent predictor scores on exactly the validation data
        `evaluate(model, max_batches)` scores: `val_metric` (evaluate's unit and
        direction), a one-line `description`, optionally `val_loss` and other numbers.

        A run counts as trained only when its `val_metric` beats it. Computed from the
        data alone (no model, no seed, on the host), cheaply, before or after `setup`,
        so a report can recompute it for an old run."""
        ...


@runtime_checkable
class HasSuccess(Protocol):
    """A task with a stated success criterion (e.g. error rate on fresh sequences): the
    trainer calls `success` once, at the end of a completed run."""

    def success(self, model: nn.Module) -> dict:
        """`task_success: bool` and the numbers behind it."""
        ...


SPLIT = (0.90, 0.05, 0.05)  # contiguous train / validation / test, in that order


@dataclass
class CorpusTaskConfig:
    name: str = "tinyshakespeare"
    seq_len: int = at_least(128, 1)
    batch_size: int = at_least(32, 1)


@dataclass
class TextFileTaskConfig(CorpusTaskConfig):
    name: str = "text_file"
    path: str | None = None
    newline: str = one_of("lf", ("lf", "keep"))
    # chars: one token per Unicode character, vocabulary = the training split's characters
    # (val/test characters outside it become <unk>, counted); bytes: one token per UTF-8
    # byte, vocabulary = all 256 values (nothing is unknown; comparable across languages)
    vocab: str = one_of("chars", ("chars", "bytes"))


def split_text(text: str) -> tuple[str, str, str]:
    n = len(text)
    a = int(n * SPLIT[0])
    b = a + int(n * SPLIT[1])
    return text[:a], text[a:b], text[b:]


class CharLMTask:
    """Next-character prediction with truncated BPTT over parallel streams.

    Built from token ids already split into train/val/test (`ids`, numpy arrays, which
    may be memory-mapped) and the vocabulary they index; `from_text` does the split and
    encoding for a text held in memory.
    """

    metric = BPC

    def __init__(self, name: str, cfg: CorpusTaskConfig, vocab, ids: dict, unknown: dict,
                 path_key: str = "task.name"):
        self.name, self.cfg, self.vocab = name, cfg, vocab
        self.ids, self.unknown = ids, unknown
        self.path_key = path_key
        self._check_lengths()
        self.train_stream: StreamBatches | None = None
        self.val_stream: StreamBatches | None = None
        self.hidden: list = []
        self.corrupted: tuple[Tensor, Tensor] | None = None  # this step's random batch

    @classmethod
    def from_text(cls, name: str, text: str, cfg: CorpusTaskConfig, **kw) -> CharLMTask:
        train, val, test = split_text(text)
        vocab = CharVocab.from_text(train, (val, test))
        ids, unknown = {}, {}
        for split, part in (("train", train), ("val", val), ("test", test)):
            ids[split], unknown[split] = vocab.encode(part)
        return cls(name, cfg, vocab, ids, unknown, **kw)

    def _check_lengths(self) -> None:
        b, t = self.cfg.batch_size, self.cfg.seq_len
        sizes = {split: len(self.ids[split]) for split in ("train", "val")}
        split = min(sizes, key=lambda k: max_seq_len(sizes[k], b))  # the binding split
        n, limit = sizes[split], max_seq_len(sizes[split], b)
        if t <= limit:
            return
        if max_seq_len(n, 1) < 1:
            value = self.cfg.path if self.path_key == "task.path" else self.name
            raise ConfigError(self.path_key, value, f"the {split} split has only {n} characters")
        if limit < 1:
            raise ConfigError(
                "task.batch_size", b,
                f"at most {n // 2} for the {split} split of {self.name} ({n} characters)",
            )
        raise ConfigError(
            "task.seq_len", t,
            f"at most {limit} with task.batch_size={b}: the {split} split of {self.name} "
            f"has {n} characters, cut into {b} streams",
        )

    # ---- set-up ---------------------------------------------------------------------
    def setup(self, device: torch.device, accum_steps: int) -> None:
        b, t = self.cfg.batch_size, self.cfg.seq_len
        self.train_stream = StreamBatches(to_device(self.ids["train"], device), b, t)
        self.val_stream = StreamBatches(to_device(self.ids["val"], device), b, t)
        self.micro = b // accum_steps
        self.hidden = [None] * accum_steps

    def build_model(self, model_cfg) -> nn.Module:
        return CharRNN(self.vocab.size, model_cfg)

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.cfg.seq_len

    def describe(self) -> dict:
        return {
            "vocab_size": self.vocab.size,
            "chars": {k: len(v) for k, v in self.ids.items()},
            "unknown_chars": dict(self.unknown),
        }

    def baseline(self, max_batches: int = 0) -> dict:
        """The unigram baseline: each validation token predicted with the training
        split's token frequencies, add-one smoothed over the whole vocabulary,
        p(c) = (count_train(c) + 1) / (N_train + V), V = `vocab.size` (all 256 values for
        bytes; for characters the training characters plus <unk> when there is one, so a
        validation character unseen in training costs log2(N_train + V) bits).

        Scored on exactly the tokens `evaluate(model, max_batches)` scores -- the
        targets of the validation windows of `batch_size` streams x `seq_len` steps, so
        the first token of each stream and the tail past the last full window are left
        out, as they are for the model -- which makes it depend on seq_len and
        batch_size (by a few thousandths of a bit: the split is the same text). Counts
        are numpy bincounts over the token ids, in chunks (memory-mapped corpora too).
        Returns `val_metric` = `val_bpc` (bits/char) and `val_loss` (nats/char).
        """
        size = self.vocab.size
        train = token_counts(self.ids["train"], size)
        val_ids = self.ids["val"]
        b, t = self.cfg.batch_size, self.cfg.seq_len
        val = np.zeros(size, dtype=np.int64)
        for start, stop in target_spans(len(val_ids), b, t, max_batches):
            val += token_counts(val_ids[start:stop], size)
        n_train, n_val = int(train.sum()), int(val.sum())
        log_p = np.log(train + 1.0) - math.log(n_train + size)
        nats = -float(val @ log_p) / n_val
        bpc = nats / math.log(2)
        unit = "byte" if self.vocab.kind == "bytes" else "character"
        return {
            "val_metric": bpc, "val_bpc": bpc, "val_loss": nats,
            "description": (
                f"unigram: {unit} frequencies of the training split ({n_train:,} {unit}s), "
                f"add-one smoothed over the {size}-token vocabulary, on the {n_val:,} "
                f"validation targets evaluate scores ({n_val // (b * t)} windows of "
                f"batch_size={b} x seq_len={t})"
            ),
        }

    # ---- training -------------------------------------------------------------------
    def train_loss(self, model: nn.Module, j: int) -> Tensor:
        rows = slice(j * self.micro, (j + 1) * self.micro)
        if self.corrupted is None:
            x, y = self.train_stream.current(rows)
        else:
            x, y = self.corrupted[0][rows], self.corrupted[1][rows]
        logits, hidden = model(x, self.hidden[j])
        self.hidden[j] = detach(hidden)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))

    def advance(self) -> None:
        self.corrupted = None
        if self.train_stream.advance():
            self.reset_state()

    def corrupt(self, generator: torch.Generator) -> None:
        """Replace this step's batch (input and target windows of every stream) by
        uniformly random token ids drawn on the CPU from `generator` (trainer.spike's
        corrupt_batch, seqbench.spike); `advance` moves on to the data as usual."""
        b, t = self.cfg.batch_size, self.cfg.seq_len
        tokens = torch.randint(self.vocab.size, (b, t + 1), generator=generator)
        device = self.train_stream.data.device
        if device.type == "cuda":  # pinned: the copy does not wait for the GPU
            tokens = tokens.pin_memory().to(device, non_blocking=True)
        else:
            tokens = tokens.to(device)
        self.corrupted = (tokens[:, :-1], tokens[:, 1:])

    def reset_state(self) -> None:
        self.hidden = [None] * len(self.hidden)

    def state_dict(self) -> dict:
        return {"position": self.train_stream.position, "hidden": list(self.hidden)}

    def load_state_dict(self, state: dict) -> None:
        self.train_stream.position = int(state["position"])
        device = self.train_stream.data.device
        self.hidden = [tensors_to(h, device) for h in state["hidden"]]

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int = 0) -> dict[str, float]:
        """Mean validation loss (nats/char) and bits per character over the split."""
        was_training = model.training
        model.eval()
        stream = self.val_stream
        n = stream.windows if max_batches <= 0 else min(max_batches, stream.windows)
        total = torch.zeros((), dtype=torch.float64, device=stream.data.device)
        hidden = None
        for i in range(n):
            x, y = stream.window(i)
            logits, hidden = model(x, hidden)
            total += F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum"
            )
        model.train(was_training)
        loss = total.item() / (n * stream.tokens_per_window)
        bpc = loss / math.log(2)
        return {"val_loss": loss, "val_bpc": bpc, "val_metric": bpc}


@TASKS.register("tinyshakespeare", CorpusTaskConfig)
def tinyshakespeare_task(cfg: CorpusTaskConfig) -> CharLMTask:
    return CharLMTask.from_text("tinyshakespeare", tinyshakespeare(), cfg)


@TASKS.register("text_file", TextFileTaskConfig)
def text_file_task(cfg: TextFileTaskConfig) -> CharLMTask:
    text = read_text_file(cfg.path, newline=cfg.newline)
    if cfg.vocab == "chars":
        return CharLMTask.from_text("text_file", text, cfg, path_key="task.path")
    vocab = ByteVocab()  # the split is contiguous in bytes, as for enwik8
    ids, unknown = {}, {}
    for split, part in zip(("train", "val", "test"), split_text(text.encode("utf-8"))):
        ids[split], unknown[split] = vocab.encode(part)
    return CharLMTask("text_file", cfg, vocab, ids, unknown, path_key="task.path")


def build_task(cfg) -> Task:
    return TASKS.get(cfg.name).build(cfg)
