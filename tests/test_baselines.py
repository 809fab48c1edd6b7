"""Every task's input-independent baseline (`Task.baseline()`), recomputed on an
independent path: the text unigram from the raw text with collections.Counter, the
synthetic tasks' best constants against Monte-Carlo estimates on fresh sequences, the
regression variance with numpy -- and each through the task's own `evaluate`, scored
as a constant model."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from seqbench.data import synthetic as syn
from seqbench.data.corpus import tinyshakespeare
from seqbench.data.regression import RegressionTaskConfig
from seqbench.data.tasks import TASKS, CharLMTask, CorpusTaskConfig, TextFileTaskConfig
from seqbench.data.vocab import ByteVocab, CharVocab

CPU = torch.device("cpu")
MC = 20_000  # fresh sequences per Monte-Carlo estimate
SIGMAS = 4


def make_task(name, **kw):
    entry = TASKS.get(name)
    return entry.build(entry.schema(**kw))


def check_baseline_dict(b: dict) -> None:
    assert isinstance(b["val_metric"], float) and math.isfinite(b["val_metric"])
    assert isinstance(b["description"], str) and b["description"]
    assert "\n" not in b["description"]


# ---- text ---------------------------------------------------------------------------------

def unigram_bits(train, targets, vocab_size: int) -> float:
    """Add-one smoothed cross-entropy of `targets` under `train`'s symbol counts (any
    sequences of hashable symbols), bits per symbol, by Counter and math.fsum."""
    seen, n = Counter(train), len(train)
    counts = Counter(targets)
    total = math.fsum(k * -math.log2((seen[c] + 1) / (n + vocab_size))
                      for c, k in counts.items())
    return total / len(targets)


def scored_targets(val, batch_size: int, seq_len: int, windows: int = 0):
    """The validation symbols evaluate() scores, worked out from batching.py's docstring:
    `batch_size` side-by-side streams of len // batch_size, windows of seq_len, the
    targets one step ahead of the inputs."""
    length = len(val) // batch_size
    full = (length - 1) // seq_len
    windows = full if windows <= 0 else min(windows, full)
    parts = [val[r * length + 1: r * length + 1 + windows * seq_len] for r in range(batch_size)]
    return [symbol for part in parts for symbol in part]


class ConstantLM(nn.Module):
    """The same logits at every step, whatever the input."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, x, hidden=None):
        return self.logits.expand(*x.shape, -1), hidden


def unigram_logits(task: CharLMTask) -> np.ndarray:
    counts = np.bincount(np.asarray(task.ids["train"], dtype=np.int64),
                         minlength=task.vocab.size)
    return np.log((counts + 1) / (counts.sum() + task.vocab.size))


@pytest.mark.parametrize("seq_len, batch_size", [(128, 32), (64, 16)])
def test_tinyshakespeare_unigram_computed_from_the_raw_text(seq_len, batch_size):
    text = tinyshakespeare()
    n = len(text)
    a = int(n * 0.90)
    b = a + int(n * 0.05)
    train, val, test = text[:a], text[a:b], text[b:]
    vocab = set(train)
    size = len(vocab) + int(any(c not in vocab for c in val + test))  # + <unk> if needed
    expected = unigram_bits(train, scored_targets(val, batch_size, seq_len), size)

    task = make_task("tinyshakespeare", seq_len=seq_len, batch_size=batch_size)
    base = task.baseline()
    check_baseline_dict(base)
    assert base["val_metric"] == pytest.approx(expected, rel=1e-9)
    assert base["val_bpc"] == base["val_metric"]
    assert base["val_loss"] == pytest.approx(expected * math.log(2), rel=1e-9)
    assert 4.7 < base["val_metric"] < 4.9  # the unigram entropy of English-like text
    task.setup(CPU, 1)  # the same before and after setup
    assert task.baseline() == base


def test_text_baseline_is_what_a_constant_model_scores_in_evaluate():
    task = make_task("tinyshakespeare", seq_len=64, batch_size=16)
    task.setup(CPU, 1)
    model = ConstantLM(unigram_logits(task))
    for max_batches in (0, 3):
        base = task.baseline(max_batches)
        out = task.evaluate(model, max_batches)
        assert out["val_metric"] == pytest.approx(base["val_metric"], rel=1e-6)
        assert out["val_loss"] == pytest.approx(base["val_loss"], rel=1e-6)
    assert task.baseline(3)["val_metric"] != task.baseline()["val_metric"]


UNIT = ("Ästhetik der Übung: ab, abc; abcd.\n" * 3)[:100]
# 90 / 5 / 5: training text, then validation and test text with "z" and "Ω" in them
BOOK = UNIT * 18 + ("zΩ " + UNIT)[:100] + UNIT[::-1]


@pytest.mark.parametrize("vocab", ["chars", "bytes"])
def test_text_file_baseline_with_a_character_unseen_in_training(tmp_path, vocab):
    path = tmp_path / "book.txt"
    path.write_text(BOOK, encoding="utf-8")
    cfg = TextFileTaskConfig(path=str(path), seq_len=5, batch_size=3, vocab=vocab)
    task = TASKS.get("text_file").build(cfg)
    seq = BOOK if vocab == "chars" else BOOK.encode("utf-8")
    n = len(seq)
    a = int(n * 0.90)
    train, val = seq[:a], seq[a:a + int(n * 0.05)]
    assert set(val) - set(train)  # "z", "Ω" (or their bytes) never occur in training
    if vocab == "chars":
        assert task.unknown["val"] > 0
        size = len(set(train)) + 1  # <unk>: every unseen character is one symbol ...
        val = "".join(c if c in set(train) else "\0" for c in val)  # ... seen 0 times
    else:
        size = 256
    expected = unigram_bits(train, scored_targets(val, 3, 5), size)
    base = task.baseline()
    check_baseline_dict(base)
    assert base["val_metric"] == pytest.approx(expected, rel=1e-9)
    task.setup(CPU, 1)
    out = task.evaluate(ConstantLM(unigram_logits(task)))
    assert out["val_metric"] == pytest.approx(base["val_metric"], rel=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_memory_mapped_token_ids_give_the_same_baseline(tmp_path, dtype):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 200, 5000).astype(dtype)
    ids[:10] = np.arange(10)
    path = tmp_path / "tokens"
    ids.tofile(path)
    data = np.memmap(path, dtype=dtype, mode="c")
    cfg = CorpusTaskConfig(name="fake", seq_len=7, batch_size=3)
    cuts = {"train": (0, 4500), "val": (4500, 4750), "test": (4750, 5000)}
    mapped = CharLMTask("fake", cfg, ByteVocab(), {k: data[a:b] for k, (a, b) in cuts.items()},
                        dict.fromkeys(cuts, 0))
    plain = CharLMTask("fake", cfg, ByteVocab(),
                       {k: ids[a:b].astype(np.int64) for k, (a, b) in cuts.items()},
                       dict.fromkeys(cuts, 0))
    expected = unigram_bits(ids[:4500].tolist(), scored_targets(ids[4500:4750].tolist(), 3, 7),
                            256)
    assert mapped.baseline()["val_metric"] == plain.baseline()["val_metric"]
    assert mapped.baseline()["val_metric"] == pytest.approx(expected, rel=1e-9)


def test_a_char_vocab_without_unk_counts_only_its_characters():
    vocab = CharVocab.from_text("abcab" * 100, ("abc" * 20,))
    assert vocab.size == 3 and not vocab.has_unk
    text = "abcab" * 100
    cfg = CorpusTaskConfig(name="abc", seq_len=3, batch_size=2)
    task = CharLMTask.from_text("abc", text + "abc" * 60, cfg)
    train, val = (text + "abc" * 60)[:int(680 * 0.9)], (text + "abc" * 60)[612:646]
    assert task.baseline()["val_metric"] == pytest.approx(
        unigram_bits(train, scored_targets(val, 2, 3), 3), rel=1e-9)


# ---- synthetic tasks: Monte-Carlo estimates ------------------------------------------------

def fresh(task, n=MC, seed=20240607):
    """n sequences never seen by the task: drawn with the task's own draw function and a
    generator of another seed."""
    g = torch.Generator()
    g.manual_seed(seed)
    return task.draw(n, g)


def tolerance(p: float, *sizes: int) -> float:
    """SIGMAS binomial standard errors of the difference of independent rates."""
    p = min(max(p, 1 / MC), 1 - 1 / MC)
    return SIGMAS * math.sqrt(sum(p * (1 - p) / n for n in sizes))


def adding_errors(task, y: torch.Tensor, constants: np.ndarray) -> np.ndarray:
    """Error rate of each constant output on targets y, through the task's own score()."""
    return np.array([task.score(torch.full((len(y),), float(c)), y)["error"].double().mean()
                     for c in constants])


@pytest.mark.parametrize("variant, mode", [("hochreiter", 0.5), ("halves", 1.0)])
def test_adding_baseline_against_monte_carlo(variant, mode):
    task = make_task("adding", variant=variant)
    base = task.baseline()
    check_baseline_dict(base)
    n_val = base["val_sequences"]
    assert n_val == 1000

    _, y = fresh(task)
    top = 2 * mode
    grid = np.linspace(0, top, 801)  # steps of 1/400 (or 1/800) of the target range
    mc = adding_errors(task, y, grid)
    at_mode = adding_errors(task, y, [mode])[0]
    # the analytic error rate of the mode, and the mode is the best constant
    assert base["expected_val_metric"] == pytest.approx(at_mode, abs=tolerance(at_mode, MC))
    assert mc.min() >= base["expected_val_metric"] - tolerance(at_mode, MC)
    assert abs(grid[mc.argmin()] - mode) < 0.1 * mode
    # the baseline: the validation set's best constant, within noise of the estimate
    assert base["val_metric"] == pytest.approx(at_mode, abs=tolerance(at_mode, MC, n_val))
    assert 0.8 < base["val_metric"] <= base["expected_val_metric"] + 0.02

    # on the validation set itself no constant does better, and the constant scores it
    task.setup(CPU, 1, seed=5)
    y_val = torch.cat([yb for _, yb in task.val])
    on_val = adding_errors(task, y_val, np.linspace(0, top, 4001))
    assert on_val.min() >= base["val_metric"] - 1e-12
    out = task.evaluate(ConstantOut(torch.tensor([base["constant"]])))
    assert out["val_metric"] == pytest.approx(base["val_metric"], abs=1e-12)
    assert out["val_loss"] == pytest.approx(base["val_loss"], rel=1e-6)
    assert base["val_loss"] == pytest.approx(float(y_val.double().var(unbiased=False)),
                                             abs=0.02)  # close to the mean's MSE
    assert task.baseline() == base  # after setup, any seed


class ConstantOut(nn.Module):
    """Ignores x; outputs `value` for every sequence (and, for copy, every step)."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value.float()

    def forward(self, x):
        return self.value.expand(len(x), *self.value.shape)


@pytest.mark.parametrize("symbols", [2, 3])
def test_temporal_order_baseline_against_monte_carlo(symbols):
    task = make_task("temporal_order", symbols=symbols, length=40)
    classes = 2 ** symbols
    base = task.baseline()
    check_baseline_dict(base)
    n_val = base["val_sequences"]

    _, y = fresh(task)
    errors = 1 - np.bincount(y.numpy(), minlength=classes) / MC  # each constant class
    chance = 1 - 1 / classes
    assert base["expected_val_metric"] == pytest.approx(chance)
    for e in errors:  # every class is as good as chance, none better
        assert e == pytest.approx(chance, abs=tolerance(chance, MC))
    assert base["val_metric"] == pytest.approx(errors.min(),
                                               abs=tolerance(chance, MC, n_val))
    assert base["val_metric"] <= chance

    task.setup(CPU, 1, seed=7)
    k = syn.ORDER_CLASSES[symbols].index(base["constant"])
    y_val = torch.cat([yb for _, yb in task.val])
    val_errors = [task.evaluate(ConstantOut(torch.eye(classes)[c]))["val_metric"]
                  for c in range(classes)]
    assert min(val_errors) == pytest.approx(base["val_metric"], abs=1e-12)
    assert val_errors[k] == pytest.approx(base["val_metric"], abs=1e-12)
    freq = np.bincount(y_val.numpy(), minlength=classes) / len(y_val)
    out = task.evaluate(ConstantOut(torch.tensor(np.log(freq))))  # no class is absent here
    assert out["val_metric"] == pytest.approx(base["val_metric"], abs=1e-12)
    assert out["val_loss"] == pytest.approx(base["val_loss"], rel=1e-6)
    assert task.baseline() == base


def copy_output(task, pattern) -> torch.Tensor:
    """Per-step logits: blank until the last `pattern` steps, then the given symbols."""
    out = torch.full((task.steps, task.alphabet + 1), -10.0)
    out[:, task.alphabet] = 10.0
    for i, s in enumerate(pattern):
        out[task.steps - task.pattern + i] = -10.0
        out[task.steps - task.pattern + i, s] = 10.0
    return out


def test_copy_baseline_against_monte_carlo():
    task = make_task("copy", length=10, alphabet=2, pattern=3)  # 8 patterns: measurable
    base = task.baseline()
    check_baseline_dict(base)
    n_val = base["val_sequences"]

    _, y = fresh(task)
    blank_steps = y[:, :-3]
    assert (blank_steps == task.alphabet).all()  # the blank is always right there
    counts = Counter(tuple(r) for r in y[:, -3:].tolist())
    assert len(counts) == 8
    errors = np.array([1 - k / MC for k in counts.values()])
    expected = 1 - 2.0 ** -3
    assert base["expected_val_metric"] == pytest.approx(expected)
    for e in errors:
        assert e == pytest.approx(expected, abs=tolerance(expected, MC))
    assert base["val_metric"] == pytest.approx(errors.min(), abs=tolerance(expected, MC, n_val))

    task.setup(CPU, 1, seed=3)
    patterns = [(a, b, c) for a in range(2) for b in range(2) for c in range(2)]
    val_errors = {p: task.evaluate(ConstantOut(copy_output(task, p)))["val_metric"]
                  for p in patterns}
    assert min(val_errors.values()) == pytest.approx(base["val_metric"], abs=1e-12)
    assert val_errors[tuple(base["constant"])] == pytest.approx(base["val_metric"], abs=1e-12)
    assert task.baseline() == base


def test_copy_default_baseline_is_hopeless_for_a_constant():
    task = make_task("copy")
    base = task.baseline()
    check_baseline_dict(base)
    _, y = fresh(task, n=5000)
    best = max(Counter(tuple(r) for r in y[:, -task.pattern:].tolist()).values())
    assert best <= 2  # 5^10 patterns: a constant guess is almost never right
    assert base["expected_val_metric"] == pytest.approx(1 - 5.0 ** -10)
    y_val = torch.cat([yb for _, yb in task.fixed_set(syn._VAL, 1000)])
    top = max(Counter(tuple(r) for r in y_val[:, -task.pattern:].tolist()).values())
    assert base["val_metric"] == pytest.approx(1 - top / 1000)
    assert base["val_metric"] >= 0.997


def test_synthetic_baseline_follows_max_batches():
    task = make_task("temporal_order", length=20, val_sequences=600)
    task.setup(CPU, 1, seed=0)
    chunk = task.chunk_size()
    assert chunk >= syn.GEN_BLOCK  # so each block of 250 is one evaluation chunk
    assert task.val_count(0) == 600 and task.val_count(1) == 250 and task.val_count(3) == 600
    y = torch.cat([yb for _, yb in task.val])[:250]
    top = np.bincount(y.numpy()).max()
    assert task.baseline(1)["val_metric"] == pytest.approx(1 - top / 250)
    assert task.baseline(1)["val_sequences"] == 250


# ---- regression -----------------------------------------------------------------------------

def test_regression_baseline_is_the_test_variance_and_what_evaluate_gives_a_constant():
    task = TASKS.get("regression_mlp").build(RegressionTaskConfig())
    base = task.baseline()
    check_baseline_dict(base)
    y_train, y_test = task.arrays["train"][1], task.arrays["test"][1]
    assert base["val_metric"] == pytest.approx(np.var(y_test), rel=1e-12)
    assert base["val_loss"] == base["val_metric"]
    assert 20_000 < base["val_metric"] < 35_000

    task.setup(CPU, 1)

    class Constant(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c

        def forward(self, x):
            return torch.full((len(x), 1), self.c, dtype=torch.float32)

    out = task.evaluate(Constant(float(np.mean(y_test))))
    assert out["val_metric"] == pytest.approx(base["val_metric"], rel=1e-6)
    train_mean = task.evaluate(Constant(float(np.mean(y_train))))
    assert train_mean["val_metric"] == pytest.approx(base["train_mean_mse"], rel=1e-6)
    assert base["train_mean_mse"] >= base["val_metric"]
    assert base["train_mean_mse"] == pytest.approx(np.var(y_test), rel=0.01)  # means close

    first = task.baseline(max_batches=2)  # the first 2 x 32 test samples
    assert first["val_metric"] == pytest.approx(np.var(y_test[:64]), rel=1e-12)
    assert task.evaluate(Constant(float(np.mean(y_test[:64]))), 2)["val_metric"] == (
        pytest.approx(first["val_metric"], rel=1e-6))
