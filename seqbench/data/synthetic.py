"""Synthetic long-range tasks: the adding problem, noiseless memorization, temporal order.

Registered tasks: `adding` (`variant: hochreiter`, the 1997 original, or `halves`, the
later common one of Arjovsky et al. 2016), `copy` (Pascanu et al.'s noiseless
memorization) and `temporal_order` (`symbols: 2 | 3`, Hochreiter's tasks 6a and 6b).

These are the classic problems for exploding and vanishing gradients (Hochreiter &
Schmidhuber 1997, "Long Short-Term Memory", Neural Computation 9(8), sec. 5.4-5.6;
Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural
networks", ICML, sec. 4.1, and the authors' code, github.com/pascanur/trainingRNNs).
Only two or three inputs of a sequence of `length` (T) steps matter, and the answer is
asked for at the end, so the gradient that teaches the model must cross about T/2 steps.

What every task here shares, and why:

- **Whole sequences, no truncation.** Each sequence starts from a zero hidden state and is
  back-propagated end to end; nothing is carried between batches, so `reset_state` has
  nothing to do. Truncation would cut exactly the dependency the task measures.
- **Fresh sequences every step.** `advance()` draws the next batch from a
  `torch.Generator` on the run's device with torch ops only (no per-sample Python loop,
  no host read), so a step never waits for data and never repeats a batch. Its seed is
  derived from the run's seed: `setup(..., seed=None)` reads `torch.initial_seed()`, which
  is `cfg.seed` because the trainer calls `torch.manual_seed(cfg.seed)` before building the
  task; the derivation (`np.random.SeedSequence(seed, spawn_key=(0,))`) keeps the data
  stream apart from the stream that initialises the weights. On CUDA the stream is
  CUDA's own Philox sequence, so the training batches of a seed differ between devices.
- **A fixed yardstick.** The validation set (`val_sequences`, used by `evaluate`) and the
  test set (`test_sequences`, used by `success`) come from fixed seeds that do not depend
  on the run's seed, and are drawn on the CPU in fixed blocks, so every run of one task
  configuration - any seed, device or model - is scored on the same sequences.
- **Success** is Pascanu et al.'s criterion (sec. 4.1.1): "a run is successful if the
  number of misclassified sequences was under 1% out of 10000 freshly random generated
  sequences". What counts as a misclassified sequence is each task's own (below).
- **Fixed length.** Hochreiter draws each sequence's length from [T, T + T/10]; here every
  sequence has exactly `length` steps, so a batch is one dense tensor (cuDNN, no padding)
  and `tokens_per_step` is exact. The minimal time lags that make the problems hard are
  the same.

The model (`build_model`) is the `model` group's recurrent options (`model=lstm|gru|
rnn_tanh`): an input layer (an embedding for symbols, a linear projection of width
`embed_dim` for the adding problem's two real channels), a `seqbench.models.CELLS`
recurrent stack, and a linear readout at the last step (adding, temporal order) or at
every step (memorization).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqbench.checks import at_least, broken_rule, in_range, one_of
from seqbench.data.tasks import TASKS, MetricSpec
from seqbench.errors import ConfigError
from seqbench.models import make_recurrent

ERROR_RATE = MetricSpec("error_rate", "fraction of sequences", lower_is_better=True)

MIN_LENGTH, MAX_LENGTH = 10, 5000
MAX_ERROR_RATE = 0.01  # Pascanu et al. 2013, sec. 4.1.1: under 1% of fresh sequences wrong

# Seeds of the fixed validation and test sets (spawn keys 1 and 2 of entropy 0); the
# training stream is spawn key 0 of the run's seed: distinct streams by construction.
_TRAIN, _VAL, _TEST = 0, 1, 2
GEN_BLOCK = 250  # sequences per draw of the fixed sets: the sets do not depend on the model
EVAL_ELEMENTS = 2**26  # activations (floats) per evaluation chunk: bounded memory at T=5000


def stream_seed(entropy: int, key: int) -> int:
    """A 64-bit generator seed for stream `key` of `entropy` (numpy's SeedSequence)."""
    ss = np.random.SeedSequence(entropy=entropy, spawn_key=(key,))
    return int(ss.generate_state(1, dtype=np.uint64)[0])


def _generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


# ---- generators (pure functions of a generator: the tests rebuild their targets) -------

ADD_FIRST_WINDOW = 10  # Hochreiter: the first marked pair is one of the first ten
# Hochreiter: "processed correctly if the absolute error at the sequence end is below 0.04",
# on a target scaled to [0, 1]; `halves` keeps that precision on its [0, 2] target
ADD_TOLERANCE = {"hochreiter": 0.04, "halves": 0.08}
ADD_EXPECTED = {"hochreiter": 0.5, "halves": 1.0}  # E[target]: the best constant guess


def mark_pairs(markers: Tensor, first: Tensor, second: Tensor) -> None:
    """Set markers[i, first[i]] and markers[i, second[i]] to 1.0 in place.

    Why scatter_ and not `markers[rows, first] = 1.0`: on CUDA the indexed assignment of
    a Python number copies it from the host, a synchronizing copy on every batch drawn
    (found on an H200 by test_train_step_does_not_sync_with_the_host); scatter_ takes
    the number as a kernel argument."""
    markers.scatter_(1, first[:, None], 1.0)
    markers.scatter_(1, second[:, None], 1.0)


def adding_batch(n: int, length: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Hochreiter & Schmidhuber's adding problem (1997, sec. 5.4), `n` sequences.

    Input (n, T, 2): channel 0 a value from U[-1, 1], channel 1 a marker. Exactly two
    pairs are marked with 1.0: the first uniformly among the first 10 pairs, the second
    uniformly among the first T//2 - 1 pairs not yet marked. All other markers are 0,
    except the first and the last pair's, which are -1. When the first pair is marked its
    value is set to 0 (Hochreiter: "we set X1 to zero"; here whichever mark it carries).
    Target (n,): 0.5 + (X1 + X2) / 4, the sum scaled to [0, 1].
    """
    dev = gen.device
    rows = torch.arange(n, device=dev)
    values = torch.rand(n, length, generator=gen, device=dev) * 2 - 1
    first = torch.randint(0, ADD_FIRST_WINDOW, (n,), generator=gen, device=dev)
    q = torch.randint(0, length // 2 - 1, (n,), generator=gen, device=dev)
    second = q + (q >= first).long()  # the q-th unmarked pair, counting from the start
    markers = torch.zeros(n, length, device=dev)
    markers[:, 0] = -1.0
    markers[:, -1] = -1.0
    mark_pairs(markers, first, second)
    values[:, 0] = torch.where(markers[:, 0] > 0, 0.0, values[:, 0])
    target = 0.5 + (values[rows, first] + values[rows, second]) / 4
    return torch.stack([values, markers], dim=-1), target


def halves_batch(n: int, length: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """The later common adding problem (Arjovsky, Shah & Bengio 2016, "Unitary evolution
    recurrent neural networks", ICML), `n` sequences.

    Input (n, T, 2): a value from U[0, 1] and a marker, 1.0 at exactly two steps -- one
    uniform in the first half (steps < T//2), one uniform in the second -- and 0 elsewhere.
    Target (n,): the sum of the two marked values. Unlike Hochreiter's version, the second
    mark can be close to the end, so short lags exist from the start: predicting 1.0 scores
    MSE 1/6, and models get past it far sooner (measured: see conf/task/adding.yaml).
    """
    dev = gen.device
    rows = torch.arange(n, device=dev)
    values = torch.rand(n, length, generator=gen, device=dev)
    first = torch.randint(0, length // 2, (n,), generator=gen, device=dev)
    second = torch.randint(length // 2, length, (n,), generator=gen, device=dev)
    markers = torch.zeros(n, length, device=dev)
    mark_pairs(markers, first, second)
    target = values[rows, first] + values[rows, second]
    return torch.stack([values, markers], dim=-1), target


ADDING_VARIANTS = {"hochreiter": adding_batch, "halves": halves_batch}


def adding_constant_hit(variant: str, length: int) -> float:
    """P(|c - target| < tolerance) for the best constant c, the target's mode (and mean):
    0.5 (hochreiter) or 1.0 (halves). Both targets are symmetric and unimodal about it,
    so the window of width 2 x tolerance centred there holds the most probability.

    halves: target U1 + U2, triangular on [0, 2]: P(|S - 1| < e) = 2e - e^2.
    hochreiter: target 0.5 + (X1 + X2)/4; |.| < e needs |X1 + X2| < 4e, probability
    4e - 4e^2 for two U[-1, 1] values (triangular on [-2, 2]), but 4e when one of the
    two marks sits on the first pair, whose value is zeroed: the first mark is there
    with probability 1/10, else the second with 1/(T//2 - 1) (see adding_batch).
    """
    e = ADD_TOLERANCE[variant]
    if variant == "halves":
        return 2 * e - e * e
    zeroed = 1 / ADD_FIRST_WINDOW + (1 - 1 / ADD_FIRST_WINDOW) / (length // 2 - 1)
    return zeroed * 4 * e + (1 - zeroed) * (4 * e - 4 * e * e)


# Temporal order (Hochreiter & Schmidhuber 1997, sec. 5.6): distractors a, b, c, d; the
# relevant symbols X, Y; E starts every sequence and B (the "trigger") ends it.
ORDER_SYMBOLS = ("a", "b", "c", "d", "X", "Y", "E", "B")
ORDER_X, ORDER_E, ORDER_B = 4, 6, 7
# where the relevant symbols go, in percent of T: at T=100 these are Hochreiter's windows
# t1 in [10, 20], t2 in [50, 60] (task 6a) and [10, 20], [33, 43], [66, 76] (task 6b)
ORDER_WINDOWS = {2: (10, 50), 3: (10, 33, 66)}
ORDER_CLASSES = {2: "QRSU", 3: "QRSUVABC"}  # X,X -> Q; X,Y -> R; Y,X -> S; Y,Y -> U; ...
ORDER_TOLERANCE = 0.3  # Hochreiter: correct if "the final absolute error of all output units
# is below 0.3" -- on softmax outputs that is: the probability of the true class > 0.7


def order_windows(length: int, symbols: int) -> list[tuple[int, int]]:
    """Inclusive position windows of the relevant symbols: f*T rounded, width T//10."""
    width = length // 10
    return [((p * length + 50) // 100, (p * length + 50) // 100 + width)
            for p in ORDER_WINDOWS[symbols]]


def order_batch(n: int, length: int, symbols: int,
                gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Temporal order with 2 (task 6a) or 3 (task 6b) relevant symbols, `n` sequences.

    Input (n, T) symbol ids: E, then distractors drawn uniformly from {a, b, c, d}, then
    B; the k-th relevant symbol (X or Y with probability 1/2) sits at a uniform position
    of the k-th window (`order_windows`). Target (n,): the class of the order, reading X
    as 0 and Y as 1 with the first symbol most significant (XX=Q=0, XY=R=1, YX=S=2, ...).
    """
    dev = gen.device
    rows = torch.arange(n, device=dev)
    x = torch.randint(0, 4, (n, length), generator=gen, device=dev)
    x[:, 0] = ORDER_E
    x[:, -1] = ORDER_B
    label = torch.zeros(n, dtype=torch.long, device=dev)
    for lo, hi in order_windows(length, symbols):  # 2 or 3 symbols, each for all sequences
        pos = torch.randint(lo, hi + 1, (n,), generator=gen, device=dev)
        bit = torch.randint(0, 2, (n,), generator=gen, device=dev)
        x[rows, pos] = ORDER_X + bit
        label = label * 2 + bit
    return x, label


def copy_batch(n: int, length: int, alphabet: int, pattern: int,
               gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Noiseless memorization (Pascanu et al. 2013; `memorization.py` of their code).

    Input (n, T + 2m) symbol ids, m = `pattern`: m symbols drawn uniformly from
    0..alphabet-1, then blanks (id `alphabet`), with the delimiter (id `alphabet + 1`) at
    step m + T. Target (n, T + 2m): blank everywhere except the last m steps, which hold
    the pattern -- the first symbol is due at the step the delimiter is seen.
    """
    dev = gen.device
    blank, delimiter = alphabet, alphabet + 1
    symbols = torch.randint(0, alphabet, (n, pattern), generator=gen, device=dev)
    x = torch.full((n, length + 2 * pattern), blank, dtype=torch.long, device=dev)
    x[:, :pattern] = symbols
    x[:, pattern + length] = delimiter
    y = torch.full_like(x, blank)
    y[:, -pattern:] = symbols
    return x, y


# ---- schemas ----------------------------------------------------------------------------

def _length(default: int):
    return in_range(default, MIN_LENGTH, MAX_LENGTH)


@dataclass
class SequenceTaskConfig:
    """What every synthetic task has; `name` is the task's registry name."""

    name: str = "adding"
    length: int = _length(100)  # T: steps per sequence
    batch_size: int = at_least(20, 1)
    val_sequences: int = at_least(1000, 1)  # fixed validation set, scored by `evaluate`
    test_sequences: int = at_least(10000, 1)  # fresh sequences scored by `success`


@dataclass
class AddingConfig(SequenceTaskConfig):
    name: str = "adding"
    # hochreiter: the original (1997); halves: Arjovsky et al.'s (2016), see halves_batch
    variant: str = one_of("hochreiter", tuple(ADDING_VARIANTS))


@dataclass
class TemporalOrderConfig(SequenceTaskConfig):
    name: str = "temporal_order"
    symbols: int = one_of(2, (2, 3))  # relevant symbols: 2 (4 classes) or 3 (8 classes)


@dataclass
class CopyConfig(SequenceTaskConfig):
    name: str = "copy"
    length: int = _length(100)  # T: blank steps between the pattern and the delimiter
    alphabet: int = in_range(5, 2, 256)  # distinct symbols of the pattern
    pattern: int = in_range(10, 1, 100)  # symbols to remember


def check_fields(cfg, schema: type, prefix: str = "task.") -> None:
    """Apply the schema's declared rules, so a task built without `validate` (a test, a
    script) rejects a bad value with the same ConfigError the CLI prints."""
    for f in dataclasses.fields(schema):
        value = getattr(cfg, f.name)
        broken = broken_rule(f.metadata.get("check"), value)
        if broken is not None:
            raise ConfigError(prefix + f.name, value, broken)


# ---- the model --------------------------------------------------------------------------

class SequenceRNN(nn.Module):
    """Input layer -> recurrent stack (`CELLS`) -> linear readout.

    `vocab` selects an embedding of symbol ids, `n_in` a linear projection of real-valued
    channels; `every_step` reads out every step (memorization), else only the last.
    The hidden state starts at zero for every call: one call is one whole sequence.
    """

    def __init__(self, cfg, n_out: int, *, vocab: int | None = None, n_in: int | None = None,
                 every_step: bool = False):
        super().__init__()
        self.inp = (nn.Embedding(vocab, cfg.embed_dim) if vocab is not None
                    else nn.Linear(n_in, cfg.embed_dim))
        self.rnn = make_recurrent(cfg, cfg.embed_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.readout = nn.Linear(cfg.hidden_size, n_out)
        self.every_step = every_step

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self.inp(x))
        if not self.every_step:
            out = out[:, -1]
        return self.readout(self.drop(out))


# ---- the task ---------------------------------------------------------------------------

class SyntheticTask:
    """The Task interface (see `seqbench.data.tasks`) for freshly generated sequences.

    A subclass says how long a sequence is (`steps`), how to draw a batch (`draw`), which
    model reads it (`make_model`), and how to score each sequence (`loss` for training;
    `score`: loss, error and extras for evaluation; `trivial`: the memoryless baseline).
    """

    metric = ERROR_RATE
    schema: type = SequenceTaskConfig
    criterion = ""  # what makes one sequence correct, with its source (for summary.json)

    def __init__(self, name: str, cfg):
        check_fields(cfg, self.schema)
        self.name, self.cfg = name, cfg
        self.length = int(cfg.length)
        self.batch_size = int(cfg.batch_size)
        self.device = torch.device("cpu")
        self.seed: int | None = None
        self.width = 256  # widest activation per step, set by build_model (chunk sizing)
        self.batch: tuple[Tensor, Tensor] | None = None
        self.val: list[tuple[Tensor, Tensor]] = []
        # `trivial` scored by `evaluate` at setup: describe()'s "baseline" (the method
        # `baseline()` is the Task interface's input-independent baseline)
        self.trivial_scores: dict[str, float] | None = None

    # -- what a subclass provides --
    steps: int  # input steps per sequence

    def draw(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def make_model(self, model_cfg) -> nn.Module:
        raise NotImplementedError

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """Per-sequence training loss, shape (n,)."""
        raise NotImplementedError

    def score(self, out: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Per-sequence `loss` and `error` (bool), and extra per-sequence numbers."""
        raise NotImplementedError

    def trivial(self, x: Tensor) -> Tensor:
        """What a model without memory can best output (the baseline of describe())."""
        raise NotImplementedError

    def constant_baseline(self, y: Tensor) -> dict:
        """The best input-independent output for the error rate on targets `y` (CPU):
        `val_metric`, `expected_val_metric` (its error rate in expectation over the
        task's distribution, worked out analytically), `description`, ..."""
        raise NotImplementedError

    # -- set-up --
    def setup(self, device: torch.device, accum_steps: int, seed: int | None = None) -> None:
        self.device = torch.device(device)
        self.micro = self.batch_size // accum_steps
        self.seed = int(torch.initial_seed() if seed is None else seed)
        self.train_gen = _generator(stream_seed(self.seed, _TRAIN), self.device)
        self.batch = self.draw(self.batch_size, self.train_gen)
        self.val = list(self.fixed_set(_VAL, int(self.cfg.val_sequences)))
        self.trivial_scores = self.evaluate(_Trivial(self))

    def build_model(self, model_cfg) -> nn.Module:
        if getattr(model_cfg, "cell", None) is None:
            raise ConfigError("model", getattr(model_cfg, "name", "?"),
                              f"a recurrent model (lstm, gru, rnn_tanh) for task {self.name}")
        model = self.make_model(model_cfg)
        self.width = max(int(model_cfg.hidden_size), int(model_cfg.embed_dim),
                         model.readout.out_features)
        return model

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.steps

    def describe(self) -> dict:
        out = {
            "length": self.length,
            "steps_per_sequence": self.steps,
            "val_sequences": int(self.cfg.val_sequences),
            "test_sequences": int(self.cfg.test_sequences),
            "sequence_correct_if": self.criterion,
            "success_if": f"error_rate < {MAX_ERROR_RATE:g} on test_sequences fresh "
                          "sequences (Pascanu et al. 2013, sec. 4.1.1)",
            "data_seed": self.seed,
        }
        if self.trivial_scores is not None:
            out["baseline"] = self.trivial_scores  # a memoryless constant predictor, val set
        return out

    # -- training --
    def train_loss(self, model: nn.Module, j: int) -> Tensor:
        rows = slice(j * self.micro, (j + 1) * self.micro)
        x, y = self.batch
        return self.loss(model(x[rows]), y[rows]).mean()

    def advance(self) -> None:
        self.batch = self.draw(self.batch_size, self.train_gen)

    def reset_state(self) -> None:
        """Nothing to drop: every sequence starts from a zero state."""

    def state_dict(self) -> dict:
        """The generator that draws training batches, and the batch drawn for the next
        step (the generator state alone would redraw it from the wrong point)."""
        return {"train_gen": self.train_gen.get_state(), "batch": list(self.batch)}

    def load_state_dict(self, state: dict) -> None:
        self.train_gen.set_state(state["train_gen"])
        self.batch = tuple(t.to(self.device) for t in state["batch"])

    # -- evaluation --
    def fixed_set(self, key: int, n: int,
                  device: torch.device | str | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """The fixed set `key` (validation or test): drawn on the CPU in blocks of
        GEN_BLOCK sequences, moved to the device (the task's unless given) one block at
        a time."""
        device = self.device if device is None else device
        gen = _generator(stream_seed(0, key))
        for start in range(0, n, GEN_BLOCK):
            x, y = self.draw(min(GEN_BLOCK, n - start), gen)
            yield x.to(device), y.to(device)

    def val_count(self, max_batches: int = 0) -> int:
        """How many validation sequences `evaluate(model, max_batches)` scores: all of
        them if max_batches is 0, else those of its first max_batches chunks (chunks
        of `chunk_size()` within blocks of GEN_BLOCK, as `_score_sets` cuts them; the
        chunk size depends on the model's width once `build_model` has run)."""
        total = int(self.cfg.val_sequences)
        if max_batches <= 0:
            return total
        n, batches, chunk = 0, 0, self.chunk_size()
        for start in range(0, total, GEN_BLOCK):
            block = min(GEN_BLOCK, total - start)
            for offset in range(0, block, chunk):
                if batches >= max_batches:
                    return n
                n += min(chunk, block - offset)
                batches += 1
        return n

    def val_targets(self, max_batches: int = 0) -> Tensor:
        """The targets of the validation sequences `evaluate(model, max_batches)`
        scores, drawn afresh on the CPU (the same sequences, before or after setup)."""
        n, ys, have = self.val_count(max_batches), [], 0
        for _, y in self.fixed_set(_VAL, int(self.cfg.val_sequences), device="cpu"):
            ys.append(y)
            have += len(y)
            if have >= n:
                break
        return torch.cat(ys)[:n]

    def baseline(self, max_batches: int = 0) -> dict:
        """The best input-independent predictor on the validation sequences that
        `evaluate(model, max_batches)` scores: the constant output (for copy, one
        constant per step: the length is fixed, so the step index needs no input) with
        the lowest error rate on exactly those sequences, so that no output ignoring the
        input does better there -- a run whose val_metric is below it has learned to
        read its input. Chosen on the validation set itself, it sits slightly below (a
        standard error or two) the error rate the best constant has in expectation,
        `expected_val_metric`, worked out from the task's distribution. Independent of
        the run's seed, device and model, and of `setup` (describe()'s "baseline" is
        another thing: the fixed memoryless `trivial` output scored by `evaluate`)."""
        out = self.constant_baseline(self.val_targets(max_batches))
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in out.items()}

    def chunk_size(self) -> int:
        return max(1, EVAL_ELEMENTS // (self.steps * self.width))

    @torch.no_grad()
    def _score_sets(self, model: nn.Module, blocks, max_batches: int = 0):
        """Sums of the per-sequence scores over `blocks`, in chunks of `chunk_size()`;
        (sums as Python floats, number of sequences). One host read per call."""
        was_training = model.training
        model.eval()
        totals: dict[str, Tensor] = {}
        n, batches, chunk = 0, 0, self.chunk_size()
        for x_block, y_block in blocks:
            for start in range(0, len(x_block), chunk):
                if max_batches and batches >= max_batches:
                    break
                x, y = x_block[start:start + chunk], y_block[start:start + chunk]
                for key, v in self.score(model(x), y).items():
                    v = v.double().sum()
                    totals[key] = totals[key] + v if key in totals else v
                n += len(x)
                batches += 1
            if max_batches and batches >= max_batches:
                break
        model.train(was_training)
        return {k: v.item() for k, v in totals.items()}, n

    def evaluate(self, model: nn.Module, max_batches: int = 0) -> dict[str, float]:
        """Mean loss and error rate on the fixed validation set; `max_batches` > 0 caps
        the evaluation chunks (of up to `chunk_size()` sequences) scored."""
        sums, n = self._score_sets(model, self.val, max_batches)
        means = {k: v / n for k, v in sums.items()}
        out = {"val_loss": means.pop("loss"), "val_metric": means.pop("error")}
        out.update({f"val_{k}": v for k, v in means.items()})
        return out

    def success(self, model: nn.Module) -> dict:
        """Pascanu et al.'s criterion on `test_sequences` fresh sequences."""
        sums, n = self._score_sets(model, self.fixed_set(_TEST, int(self.cfg.test_sequences)))
        errors = int(round(sums.pop("error")))
        rate = errors / n
        return {
            "task_success": bool(rate < MAX_ERROR_RATE),
            "error_rate": rate,
            "n_errors": errors,
            "n_sequences": n,
            "max_error_rate": MAX_ERROR_RATE,
            "loss": sums.pop("loss") / n,
            **{k: v / n for k, v in sums.items()},
        }


class _Trivial(nn.Module):
    """The task's memoryless baseline as a model, so it is scored like any other."""

    def __init__(self, task: SyntheticTask):
        super().__init__()
        self.task = task

    def forward(self, x: Tensor) -> Tensor:
        return self.task.trivial(x)


class AddingTask(SyntheticTask):
    schema = AddingConfig

    def __init__(self, name, cfg):
        super().__init__(name, cfg)
        self.variant = str(cfg.variant)
        self.tolerance = ADD_TOLERANCE[self.variant]
        self.criterion = (f"|output - target| < {self.tolerance:g} at the last step "
                          "(Hochreiter & Schmidhuber 1997, sec. 5.4: 0.04 on [0, 1])")

    @property
    def steps(self) -> int:
        return self.length

    def draw(self, n, gen):
        return ADDING_VARIANTS[self.variant](n, self.length, gen)

    def make_model(self, model_cfg):
        return SequenceRNN(model_cfg, 1, n_in=2)

    def loss(self, out, y):
        return (out.float().reshape(-1) - y).square()

    def score(self, out, y):
        err = out.float().reshape(-1) - y
        return {"loss": err.square(), "error": ~(err.abs() < self.tolerance)}

    def trivial(self, x):
        return torch.full(x.shape[:1], ADD_EXPECTED[self.variant], device=x.device)

    def constant_baseline(self, y):
        """The constant within the tolerance of the most targets: a sliding window of
        width 2 x tolerance over the sorted targets (exact, no grid), its midpoint scored
        by `score` in float32 like a model's output. It is near the mode, where the best
        constant in expectation sits (`adding_constant_hit`); `val_loss` is its MSE."""
        t = np.sort(y.double().numpy())
        n = len(t)
        end = np.searchsorted(t, t + 2 * self.tolerance, side="left")  # t[i:end] covered
        i = int(np.argmax(end - np.arange(n)))
        c = float((t[i] + t[end[i] - 1]) / 2)
        scored = self.score(torch.full((n,), c), y)
        hits = n - int(scored["error"].sum())
        expected = 1 - adding_constant_hit(self.variant, self.length)
        mode = ADD_EXPECTED[self.variant]
        return {
            "val_metric": 1 - hits / n,
            "val_loss": scored["loss"].double().mean().item(),
            "expected_val_metric": expected,
            "constant": c,
            "val_sequences": n,
            "description": (
                f"best constant output {c:.4f}: within {self.tolerance:g} of {hits} of the "
                f"{n} validation targets, more than any other constant (in expectation: "
                f"the mode {mode:g}, error rate {expected:.4f})"
            ),
        }

    def describe(self):
        return {**super().describe(), "variant": self.variant}


class TemporalOrderTask(SyntheticTask):
    schema = TemporalOrderConfig
    criterion = ("argmax of the last step's class scores is the true class (Pascanu et al. "
                 "2013); val_abs_error/abs_error: Hochreiter & Schmidhuber's (1997, sec. "
                 f"5.6) stricter ABS({ORDER_TOLERANCE:g}), p(true class) > "
                 f"{1 - ORDER_TOLERANCE:g}")

    def __init__(self, name, cfg):
        super().__init__(name, cfg)
        self.symbols = int(cfg.symbols)
        self.classes = 2 ** self.symbols

    @property
    def steps(self) -> int:
        return self.length

    def draw(self, n, gen):
        return order_batch(n, self.length, self.symbols, gen)

    def make_model(self, model_cfg):
        return SequenceRNN(model_cfg, self.classes, vocab=len(ORDER_SYMBOLS))

    def loss(self, out, y):
        return F.cross_entropy(out.float(), y, reduction="none")

    def score(self, out, y):
        out = out.float()
        finite = torch.isfinite(out).all(-1)
        p_true = out.softmax(-1).gather(-1, y[:, None])[:, 0]
        return {
            "loss": self.loss(out, y),
            "error": (out.argmax(-1) != y) | ~finite,
            "abs_error": ~(p_true > 1 - ORDER_TOLERANCE),
        }

    def trivial(self, x):
        return torch.zeros(len(x), self.classes, device=x.device)  # uniform over classes

    def constant_baseline(self, y):
        """The majority class of the targets (the lowest class among ties); in
        expectation every class is as good (chance: the classes are uniform).
        `val_loss`: the cross-entropy of outputting the targets' class frequencies,
        whose argmax is that class (their entropy, nats)."""
        counts = np.bincount(y.numpy(), minlength=self.classes)
        n, k = int(counts.sum()), int(np.argmax(counts))
        freq = counts[counts > 0] / n
        expected = 1 - 1 / self.classes
        name = ORDER_CLASSES[self.symbols][k]
        return {
            "val_metric": 1 - counts[k] / n,
            "val_loss": float(-(freq * np.log(freq)).sum()),
            "expected_val_metric": expected,
            "constant": name,
            "val_sequences": n,
            "description": (
                f"majority class {name}: {counts[k]} of the {n} validation sequences, the "
                f"best constant class (in expectation: chance, 1 of {self.classes} "
                f"classes, error rate {expected:.4f})"
            ),
        }

    def describe(self):
        return {**super().describe(), "symbols": self.symbols,
                "classes": ORDER_CLASSES[self.symbols],
                "windows": order_windows(self.length, self.symbols)}


class CopyTask(SyntheticTask):
    schema = CopyConfig

    def __init__(self, name, cfg):
        super().__init__(name, cfg)
        self.alphabet, self.pattern = int(cfg.alphabet), int(cfg.pattern)
        self.criterion = (f"argmax is right at all {self.steps} steps (blank, then the "
                          f"{self.pattern} symbols) (Pascanu et al. 2013, their code)")

    @property
    def steps(self) -> int:
        return self.length + 2 * self.pattern

    def draw(self, n, gen):
        return copy_batch(n, self.length, self.alphabet, self.pattern, gen)

    def make_model(self, model_cfg):
        return SequenceRNN(model_cfg, self.alphabet + 1, vocab=self.alphabet + 2,
                           every_step=True)

    def loss(self, out, y):
        return F.cross_entropy(out.float().transpose(1, 2), y, reduction="none").mean(-1)

    def score(self, out, y):
        out = out.float()
        wrong = (out.argmax(-1) != y) | ~torch.isfinite(out).all(-1)
        return {"loss": self.loss(out, y), "error": wrong.any(-1),
                "symbol_error": wrong[:, -self.pattern:].float().mean(-1)}

    def trivial(self, x):
        """Blank until the delimiter, then a uniform guess: m*ln(alphabet)/steps nats."""
        n, steps = x.shape
        out = torch.zeros(n, steps, self.alphabet + 1, device=x.device)
        out[:, :-self.pattern, -1] = 30.0  # sure of the blank
        out[:, -self.pattern:, -1] = -30.0  # sure it is a symbol, not which
        return out

    def constant_baseline(self, y):
        """Input-independent here means: one constant output per step. The length is
        fixed, so where the delimiter falls (and the pattern is due) is known without
        reading the input; what the pattern is is not. The best such output is blank
        until the last `pattern` steps and then the pattern most frequent among the
        targets (the first in lexicographic order among ties); in expectation any
        pattern is right with probability alphabet^-pattern."""
        patterns = y[:, -self.pattern:].numpy()
        n = len(patterns)
        uniq, counts = np.unique(patterns, axis=0, return_counts=True)
        k = int(np.argmax(counts))
        a, m = self.alphabet, self.pattern
        expected = 1 - float(a) ** -m
        shown = " ".join(str(int(v)) for v in uniq[k])
        return {
            "val_metric": 1 - counts[k] / n,
            "expected_val_metric": expected,
            "constant": [int(v) for v in uniq[k]],
            "val_sequences": n,
            "description": (
                f"blank for {self.steps - m} steps, then the most frequent validation "
                f"pattern ({shown}: {counts[k]} of the {n} sequences), the best output "
                f"per step that ignores the input (in expectation: error rate 1 - {a}^-{m}"
                f" = {expected:.10g})"
            ),
        }

    def describe(self):
        return {**super().describe(), "alphabet": self.alphabet, "pattern": self.pattern}


@TASKS.register("adding", AddingConfig)
def adding_task(cfg: AddingConfig) -> AddingTask:
    return AddingTask("adding", cfg)


@TASKS.register("temporal_order", TemporalOrderConfig)
def temporal_order_task(cfg: TemporalOrderConfig) -> TemporalOrderTask:
    return TemporalOrderTask("temporal_order", cfg)


@TASKS.register("copy", CopyConfig)
def copy_task(cfg: CopyConfig) -> CopyTask:
    return CopyTask("copy", cfg)
