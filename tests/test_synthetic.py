"""Synthetic long-range tasks: generators checked against re-derivations written from the
papers' wording, fixed and fresh sequences, the success criterion on hand-made
predictors, the length bounds, and whole training runs."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from seqbench.config import compose, validate
from seqbench.data import synthetic as syn
from seqbench.data.tasks import TASKS
from seqbench.errors import ConfigError, ConfigErrors
from seqbench.models import CharRNNConfig
from seqbench.train import Trainer

A, B, C, D, X, Y, E, TRIGGER = range(8)  # Hochreiter's eight local input symbols
# Hochreiter & Schmidhuber 1997, sec. 5.6, the class rules as printed
RULES = {2: {"XX": "Q", "XY": "R", "YX": "S", "YY": "U"},
         3: {"XXX": "Q", "XXY": "R", "XYX": "S", "XYY": "U",
             "YXX": "V", "YXY": "A", "YYX": "B", "YYY": "C"}}


def gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def make_task(name, **kw):
    entry = TASKS.get(name)
    return entry.build(entry.schema(**kw))


def small_model(cell="lstm", hidden=16, embed=8):
    return CharRNNConfig(cell=cell, embed_dim=embed, hidden_size=hidden)


# ---- the adding problem -------------------------------------------------------------------

def adding_reference(x):
    """Target and checks from the inputs alone, following sec. 5.4's wording."""
    x = np.asarray(x, dtype=np.float64)
    n, length, _ = x.shape
    targets = []
    for values, markers in zip(x[..., 0], x[..., 1]):
        marked = np.flatnonzero(markers == 1.0)
        assert len(marked) == 2, markers
        a, b = marked
        # one of them among the first ten pairs, the other among the first T/2 - 1 pairs
        # that were still unmarked, i.e. before position T/2 (counting the first mark)
        assert (a < 10 and b < length // 2) or (b < 10 and a < length // 2)
        others = np.ones(length, bool)
        others[marked] = False
        expected = np.zeros(length)
        expected[[0, -1]] = -1.0
        assert np.array_equal(markers[others], expected[others])
        assert np.all((values >= -1) & (values <= 1))
        if 0 in marked:
            assert values[0] == 0.0  # "we set X1 to zero"
        targets.append(0.5 + values[marked].sum() / 4.0)
    return np.array(targets)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(10, 300), seed=st.integers(0, 2**32 - 1))
def test_adding_targets_follow_the_inputs(length, seed):
    x, target = syn.adding_batch(16, length, gen(seed))
    assert x.shape == (16, length, 2) and target.shape == (16,)
    assert x.dtype == target.dtype == torch.float32
    np.testing.assert_allclose(target.numpy(), adding_reference(x), rtol=0, atol=1e-6)


def halves_reference(x):
    """Arjovsky et al. 2016: one mark in each half, values U[0,1], target the sum."""
    x = np.asarray(x, dtype=np.float64)
    half = x.shape[1] // 2
    targets = []
    for values, markers in zip(x[..., 0], x[..., 1]):
        marked = np.flatnonzero(markers)
        assert len(marked) == 2 and np.all(markers[marked] == 1.0)
        assert marked[0] < half <= marked[1]
        assert np.all((values >= 0) & (values <= 1))
        targets.append(values[marked].sum())
    return np.array(targets)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(10, 300), seed=st.integers(0, 2**32 - 1))
def test_halves_targets_follow_the_inputs(length, seed):
    x, target = syn.halves_batch(16, length, gen(seed))
    assert x.shape == (16, length, 2) and target.shape == (16,)
    np.testing.assert_allclose(target.numpy(), halves_reference(x), rtol=0, atol=1e-6)


def test_halves_marks_are_uniform_in_each_half():
    x, _ = syn.halves_batch(40_000, 20, gen(3))
    observed = (x[..., 1] == 1).double().mean(0).numpy()
    np.testing.assert_allclose(observed, np.full(20, 0.1), atol=5 * np.sqrt(0.09 / 40_000))


def test_adding_marker_positions_have_the_papers_distribution():
    """P(position j is marked), enumerated from the wording: first mark uniform over the
    first 10 pairs, second uniform over the first T/2 - 1 pairs not yet marked."""
    length, n = 40, 40_000
    k = length // 2 - 1
    exact = np.zeros(length)
    for a in range(10):
        exact[a] += 1 / 10
        for b in [p for p in range(length) if p != a][:k]:
            exact[b] += 1 / 10 / k
    x, _ = syn.adding_batch(n, length, gen(5))
    observed = (x[..., 1] == 1).double().mean(0).numpy()
    sigma = np.sqrt(exact * (1 - exact) / n)
    assert np.all(np.abs(observed - exact) <= 5 * sigma + 1e-12)
    assert exact[length // 2:].sum() == 0 and observed[length // 2:].sum() == 0


# ---- temporal order -----------------------------------------------------------------------

def order_reference(x, symbols):
    """Class ids from the inputs, with the rule table of sec. 5.6."""
    x = np.asarray(x)
    out = []
    for seq in x:
        assert seq[0] == E and seq[-1] == TRIGGER
        relevant = np.flatnonzero((seq == X) | (seq == Y))
        assert len(relevant) == symbols
        middle = np.delete(seq[1:-1], relevant - 1)
        assert np.all(middle <= D)  # every other element is a distractor a..d
        word = "".join("X" if seq[p] == X else "Y" for p in relevant)
        out.append("QRSUVABC".index(RULES[symbols][word]))
    return np.array(out)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(10, 300), symbols=st.sampled_from([2, 3]),
       seed=st.integers(0, 2**32 - 1))
def test_temporal_order_classes_follow_the_inputs(length, symbols, seed):
    x, label = syn.order_batch(16, length, symbols, gen(seed))
    assert x.shape == (16, length) and x.dtype == torch.long and label.shape == (16,)
    np.testing.assert_array_equal(label.numpy(), order_reference(x, symbols))
    windows = syn.order_windows(length, symbols)
    relevant = [np.flatnonzero((s == X) | (s == Y)) for s in x.numpy()]
    for positions in relevant:
        assert all(lo <= p <= hi for p, (lo, hi) in zip(positions, windows))
    # windows in order, apart, and clear of E and B
    bounds = [b for w in windows for b in w]
    assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds)
    assert bounds[0] >= 1 and bounds[-1] <= length - 2


@pytest.mark.parametrize("length, symbols, windows", [
    (100, 2, [(10, 20), (50, 60)]),  # Hochreiter's task 6a
    (100, 3, [(10, 20), (33, 43), (66, 76)]),  # task 6b
    (10, 2, [(1, 2), (5, 6)]),
    (10, 3, [(1, 2), (3, 4), (7, 8)]),
    (5000, 2, [(500, 1000), (2500, 3000)]),
])
def test_temporal_order_windows(length, symbols, windows):
    assert syn.order_windows(length, symbols) == windows


def test_temporal_order_windows_fit_every_allowed_length():
    for length in range(10, 5001):
        for symbols in (2, 3):
            bounds = [b for w in syn.order_windows(length, symbols) for b in w]
            assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), length
            assert 1 <= bounds[0] and bounds[-1] <= length - 2, length


def test_temporal_order_covers_every_window_position_and_class():
    x, label = syn.order_batch(20_000, 100, 3, gen(2))
    positions = np.sort(np.argwhere(((x == X) | (x == Y)).numpy())[:, 1].reshape(-1, 3), 1)
    for k, (lo, hi) in enumerate([(10, 20), (33, 43), (66, 76)]):
        assert set(positions[:, k]) == set(range(lo, hi + 1))
    counts = np.bincount(label.numpy(), minlength=8) / len(label)
    assert np.all(np.abs(counts - 1 / 8) < 0.015)


# ---- noiseless memorization (copy) ---------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(length=st.integers(10, 200), alphabet=st.integers(2, 12), pattern=st.integers(1, 12),
       seed=st.integers(0, 2**32 - 1))
def test_copy_targets_follow_the_inputs(length, alphabet, pattern, seed):
    x, y = syn.copy_batch(8, length, alphabet, pattern, gen(seed))
    blank, delimiter = alphabet, alphabet + 1
    assert x.shape == y.shape == (8, length + 2 * pattern)
    for seq, target in zip(x.tolist(), y.tolist()):
        symbols = seq[:pattern]
        assert all(0 <= s < alphabet for s in symbols)
        assert seq[pattern:] == [blank] * length + [delimiter] + [blank] * (pattern - 1)
        assert target == [blank] * (length + pattern) + symbols


# ---- seeds, fixed sets, fresh batches ------------------------------------------------------

@pytest.mark.parametrize("name", ["adding", "copy", "temporal_order"])
def test_same_seed_same_data_and_a_fixed_validation_set(name):
    tasks = [make_task(name, length=20, batch_size=8, val_sequences=300) for _ in range(3)]
    tasks[0].setup("cpu", 1, seed=1)
    tasks[1].setup("cpu", 1, seed=1)
    tasks[2].setup("cpu", 1, seed=2)
    x0, y0 = tasks[0].batch
    assert torch.equal(x0, tasks[1].batch[0]) and torch.equal(y0, tasks[1].batch[1])
    assert not torch.equal(x0, tasks[2].batch[0])
    for t in tasks[1:]:  # the validation set does not depend on the run's seed
        assert len(t.val) == len(tasks[0].val) == 2  # 250 + 50 sequences
        for (xa, ya), (xb, yb) in zip(tasks[0].val, t.val):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # ... and is not the training stream, nor the test set
    assert not torch.equal(tasks[0].val[0][0][:8], x0)
    test_x = next(tasks[0].fixed_set(syn._TEST, 8))[0]
    assert not torch.equal(test_x, tasks[0].val[0][0][:8])


def test_setup_without_a_seed_uses_the_run_seed():
    """The trainer seeds torch with cfg.seed before it builds and sets up the task."""
    a, b = make_task("adding", length=20), make_task("adding", length=20)
    torch.manual_seed(7)
    a.setup("cpu", 1)
    b.setup("cpu", 1, seed=7)
    assert a.seed == 7 and torch.equal(a.batch[0], b.batch[0])


def test_every_step_draws_fresh_sequences():
    task = make_task("temporal_order", length=30, batch_size=8)
    task.setup("cpu", 1, seed=0)
    seen = set()
    for _ in range(50):
        x, _ = task.batch
        seen.add(x.numpy().tobytes())
        task.advance()
    assert len(seen) == 50


# ---- whole sequences, accumulation ---------------------------------------------------------

def test_whole_sequence_is_backpropagated_from_a_fresh_state():
    task = make_task("adding", length=30, batch_size=4)
    task.setup("cpu", 1, seed=0)
    torch.manual_seed(0)
    model = task.build_model(small_model("rnn_tanh"))
    x, y = task.batch
    x = x.clone().requires_grad_()
    task.loss(model(x), y).mean().backward()
    assert x.grad[:, 0].abs().sum() > 0  # the first step gets a gradient from the last
    # no state is carried between calls: the same batch gives the same loss
    assert torch.equal(task.train_loss(model, 0), task.train_loss(model, 0))


@pytest.mark.parametrize("name", ["adding", "copy", "temporal_order"])
def test_accumulated_micro_batches_give_the_full_batch_gradient(name):
    def grads(accum):
        task = make_task(name, length=12, batch_size=8)
        task.setup("cpu", accum, seed=4)
        torch.manual_seed(0)
        model = task.build_model(small_model("gru"))
        for j in range(accum):
            (task.train_loss(model, j) / accum).backward()
        return [p.grad.clone() for p in model.parameters()]

    for a, b in zip(grads(1), grads(4)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ---- the success criterion on hand-made predictors -----------------------------------------

class AddingOracle(nn.Module):
    def __init__(self, offset=0.0, halves=False):
        super().__init__()
        self.offset, self.halves = offset, halves

    def forward(self, x):
        total = (x[..., 0] * (x[..., 1] == 1)).sum(-1)
        return (total if self.halves else 0.5 + total / 4) + self.offset


class OrderOracle(nn.Module):
    """Reads the X/Y symbols in order; `flip` marks sequences it answers wrong on."""

    def __init__(self, symbols, flip=None):
        super().__init__()
        self.symbols, self.flip = symbols, flip

    def forward(self, x):
        relevant = (x == X) | (x == Y)
        rank = relevant.long().cumsum(-1)  # 1..symbols at the relevant steps
        weight = torch.where(relevant, 2 ** (self.symbols - rank).clamp(min=0), 0)
        label = ((x == Y).long() * weight).sum(-1)
        if self.flip is not None:
            label = torch.where(self.flip(x), (label + 1) % 2 ** self.symbols, label)
        return 10.0 * nn.functional.one_hot(label, 2 ** self.symbols).float()


class CopyOracle(nn.Module):
    def __init__(self, alphabet, pattern):
        super().__init__()
        self.alphabet, self.pattern = alphabet, pattern

    def forward(self, x):
        y = torch.full_like(x, self.alphabet)
        y[:, -self.pattern:] = x[:, :self.pattern]
        return 10.0 * nn.functional.one_hot(y, self.alphabet + 1).float()


class Constant(nn.Module):
    def __init__(self, shape_of):
        super().__init__()
        self.shape_of = shape_of

    def forward(self, x):
        return self.shape_of(x)


def test_halves_success_uses_hochreiters_precision_on_its_range():
    task = make_task("adding", length=30, variant="halves", test_sequences=2000)
    task.setup("cpu", 1, seed=0)
    oracle = task.success(AddingOracle(halves=True))
    assert oracle["task_success"] is True and oracle["n_sequences"] == 2000
    # 0.04 on Hochreiter's [0, 1] target is 0.08 on this one's [0, 2]
    assert task.success(AddingOracle(0.07, halves=True))["error_rate"] == 0.0
    assert task.success(AddingOracle(0.09, halves=True))["error_rate"] == 1.0
    const = task.success(Constant(lambda x: torch.ones(len(x))))
    assert const["loss"] == pytest.approx(1 / 6, rel=0.1)  # Arjovsky et al.'s 0.167
    assert const["task_success"] is False
    assert task.describe()["baseline"]["val_loss"] == pytest.approx(1 / 6, rel=0.1)


def test_adding_success_perfect_close_and_constant():
    task = make_task("adding", length=60)
    task.setup("cpu", 1, seed=0)
    perfect = task.success(AddingOracle())
    assert perfect["task_success"] is True and perfect["error_rate"] == 0.0
    assert perfect["n_sequences"] == 10_000 and perfect["loss"] < 1e-12
    assert task.success(AddingOracle(0.035))["task_success"] is True  # within 0.04
    off = task.success(AddingOracle(0.045))
    assert off["task_success"] is False and off["error_rate"] == 1.0
    const = task.success(Constant(lambda x: torch.full(x.shape[:1], 0.5)))
    # |X1 + X2| / 4 < 0.04 for a sum of two U[-1,1] (triangular): P = 0.16 - 0.16^2 / 4
    assert const["task_success"] is False
    assert const["error_rate"] == pytest.approx(1 - (0.16 - 0.16**2 / 4), abs=0.02)
    assert const["loss"] == pytest.approx(1 / 24, rel=0.1)  # Var(X1 + X2) / 16
    nan = task.success(Constant(lambda x: torch.full(x.shape[:1], float("nan"))))
    assert nan["error_rate"] == 1.0 and nan["task_success"] is False


@pytest.mark.parametrize("symbols", [2, 3])
def test_temporal_order_success_counts_exactly_the_wrong_sequences(symbols):
    task = make_task("temporal_order", length=100, symbols=symbols)
    task.setup("cpu", 1, seed=0)
    perfect = task.success(OrderOracle(symbols))
    assert perfect == {**perfect, "task_success": True, "error_rate": 0.0, "n_errors": 0,
                       "n_sequences": 10_000, "abs_error": 0.0}
    chance = task.success(Constant(lambda x: torch.zeros(len(x), 2 ** symbols)))
    assert chance["task_success"] is False
    assert chance["error_rate"] == pytest.approx(1 - 2 ** -symbols, abs=0.02)
    assert chance["loss"] == pytest.approx(np.log(2 ** symbols), rel=1e-6)
    # wrong exactly where steps 1..k are all the distractor `a` (before any window)
    test_x = torch.cat([x for x, _ in task.fixed_set(syn._TEST, 10_000)])
    for k, succeeds in [(4, True), (3, False)]:
        def flip(x, k=k):
            return (x[:, 1:k + 1] == A).all(-1)

        expected = int(flip(test_x).sum())
        assert (expected / 10_000 < 0.01) is succeeds  # 1/256 and 1/64 of the sequences
        result = task.success(OrderOracle(symbols, flip))
        assert result["n_errors"] == expected and result["task_success"] is succeeds


def test_copy_success_perfect_and_blank():
    task = make_task("copy", length=40, alphabet=5, pattern=10, test_sequences=2000)
    task.setup("cpu", 1, seed=0)
    perfect = task.success(CopyOracle(5, 10))
    assert perfect["task_success"] is True and perfect["error_rate"] == 0.0
    assert perfect["n_sequences"] == 2000 and perfect["symbol_error"] == 0.0

    def blanks(x):  # the right answer everywhere but the pattern
        return 10.0 * nn.functional.one_hot(torch.full_like(x, 5), 6).float()

    out = task.success(Constant(blanks))
    assert out["task_success"] is False and out["error_rate"] == 1.0
    assert out["symbol_error"] == 1.0


def test_baseline_in_describe_is_the_memoryless_guess():
    task = make_task("copy", length=30, alphabet=4, pattern=5)
    assert "baseline" not in task.describe()  # before setup: nothing measured yet
    task.setup("cpu", 1, seed=0)
    base = task.describe()["baseline"]
    assert base["val_loss"] == pytest.approx(5 * np.log(4) / 40, rel=1e-4)
    assert base["val_metric"] == 1.0


def test_success_is_scored_in_bounded_chunks_at_the_longest_length():
    task = make_task("adding", length=5000, test_sequences=600)
    task.setup("cpu", 1, seed=0)
    task.build_model(small_model(hidden=64, embed=16))
    sizes = []

    def record(x):
        sizes.append(len(x))
        assert x.shape[1:] == (5000, 2)
        return torch.zeros(len(x))

    out = task.success(Constant(record))
    assert out["n_sequences"] == 600 == sum(sizes)
    assert max(sizes) * 5000 * 64 <= syn.EVAL_ELEMENTS and len(sizes) > 1


# ---- configuration ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["adding", "copy", "temporal_order"])
@pytest.mark.parametrize("length", [9, 5001, 0, -3])
def test_length_out_of_bounds_is_a_config_error(name, length):
    with pytest.raises(ConfigError) as e:
        make_task(name, length=length)
    assert e.value.key == "task.length" and "[10, 5000]" in e.value.allowed
    with pytest.raises(ConfigErrors) as e:
        validate(compose([f"task={name}", f"task.length={length}"]), check_data=False)
    assert [err.key for err in e.value.errors] == ["task.length"]


@pytest.mark.parametrize("name", ["adding", "copy", "temporal_order"])
@pytest.mark.parametrize("length", [10, 5000])
def test_length_bounds_are_allowed(name, length):
    validate(compose([f"task={name}", f"task.length={length}"]))
    task = make_task(name, length=length)
    x, y = task.draw(2, gen(0))
    assert x.shape[:2] == (2, task.steps)


@pytest.mark.parametrize("task, override, key", [
    ("temporal_order", "task.symbols=4", "task.symbols"),
    ("adding", "task.batch_size=0", "task.batch_size"),
    ("adding", "task.test_sequences=0", "task.test_sequences"),
    ("copy", "task.alphabet=1", "task.alphabet"),
    ("copy", "task.pattern=0", "task.pattern"),
    ("adding", "task.variant=uniform", "task.variant"),
])
def test_other_bad_values(task, override, key):
    with pytest.raises(ConfigErrors) as e:
        validate(compose([f"task={task}", override]))
    assert [err.key for err in e.value.errors] == [key]


def test_a_non_recurrent_model_is_refused():
    task = make_task("adding")
    with pytest.raises(ConfigError) as e:
        task.build_model(object())
    assert e.value.key == "model"


# ---- runs ---------------------------------------------------------------------------------

TINY = ["task.length=10", "task.batch_size=4", "model.hidden_size=8", "model.embed_dim=4",
        "trainer.max_steps=6", "trainer.log_every=3", "trainer.eval_every=3",
        "trainer.progress=off", "trainer.threads=1"]


@pytest.mark.parametrize("task, model", [
    ("adding", "rnn_tanh"), ("copy", "gru"), ("temporal_order", "lstm"),
])
def test_training_run_writes_task_success(task, model, tmp_path):
    cfg = compose([f"task={task}", f"model={model}", *TINY, "trainer.accum_steps=2"])
    validate(cfg)
    Trainer(cfg, tmp_path).run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_completed"] == 6
    assert summary["metric"] == {"name": "error_rate", "unit": "fraction of sequences",
                                 "lower_is_better": True}
    assert isinstance(summary["task_success"], bool)
    tm = summary["task_metrics"]
    assert tm["task_success"] == summary["task_success"] and tm["n_sequences"] == 10_000
    assert 0 <= tm["error_rate"] <= 1 and tm["n_errors"] == round(tm["error_rate"] * 10_000)
    assert 0 <= summary["final_val_metric"] <= 1
    assert summary["task"]["steps_per_sequence"] * 4 * 6 == summary["tokens_seen"]
    m = pd.read_parquet(tmp_path / "metrics.parquet")
    assert m.loc[m.val_metric.notna(), "step"].tolist() == [3, 6]


@pytest.mark.parametrize("cell", ["rnn_tanh", "gru", "lstm"])
def test_every_cell_learns_temporal_order_at_a_short_length(cell):
    """T=10: 200 Adam steps take each cell from chance (75% wrong) to (measured) 0% on
    seeds 0-2; the bar is 5%."""
    task = make_task("temporal_order", length=10, batch_size=32, val_sequences=500)
    task.setup("cpu", 1, seed=0)
    torch.manual_seed(0)
    model = task.build_model(small_model(cell, hidden=32, embed=8))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    before = task.evaluate(model)["val_metric"]
    for _ in range(200):
        opt.zero_grad()
        task.train_loss(model, 0).backward()
        opt.step()
        task.advance()
    after = task.evaluate(model)
    assert before > 0.6 and after["val_metric"] < 0.05, (before, after)


@pytest.mark.slow
def test_lstm_solves_the_halves_adding_problem_at_length_50(tmp_path):
    """Measured (2 CPU cores, ~10-20 s): the MSE stays at the constant guess's 1/6 for
    750-1250 steps, then falls; at 2000 steps 3 of 3 seeds met the success criterion.
    Hochreiter's variant at the same length did not leave its baseline in 15,000 steps."""
    cfg = compose(["task=adding", "task.variant=halves", "task.length=50", "model=lstm",
                   "model.hidden_size=64", "model.embed_dim=16", "optim=adam", "optim.lr=0.003",
                   "clip=norm", "clip.max_norm=1.0", "trainer.max_steps=2000",
                   "trainer.eval_every=0", "trainer.progress=off", "trainer.threads=1"])
    summary = Trainer(cfg, tmp_path).run()
    baseline = summary["task"]["baseline"]["val_loss"]
    assert baseline == pytest.approx(1 / 6, rel=0.05)
    assert summary["final_val_loss"] < 0.05 * baseline
    assert summary["task_metrics"]["error_rate"] < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["adding", "copy", "temporal_order"])
def test_train_step_does_not_sync_with_the_host(name):
    task = make_task(name, length=50, batch_size=8)
    task.setup(torch.device("cuda"), 2, seed=0)
    model = task.build_model(small_model()).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for j in range(2):
            task.train_loss(model, j).backward()
        task.advance()
    finally:
        torch.cuda.set_sync_debug_mode("default")
