"""task=regression_mlp and model=mlp: the generator, the MLP, batching, evaluation, a run."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seqbench.config import compose, validate
from seqbench.data.regression import (
    RegressionTask,
    RegressionTaskConfig,
    epoch_batches,
    make_regression,
    regression_mlp_task,
)
from seqbench.data.tasks import build_task
from seqbench.errors import ConfigError, ConfigErrors
from seqbench.models import MLP, MLPConfig
from seqbench.train import Trainer

BASE = ["task=regression_mlp", "model=mlp", "optim=sgd", "optim.lr=0.01", "optim.momentum=0.9",
        "trainer.progress=off", "trainer.threads=1", "trainer.device=cpu"]


def sklearn_make_regression():
    datasets = pytest.importorskip(
        "sklearn.datasets",
        reason="scikit-learn is not installed (it is in the dev extra): the generator "
               "cannot be compared with sklearn's make_regression here",
    )
    return datasets.make_regression


# ---- the generator -------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(n_samples=1000, n_features=20, noise=0.1, random_state=1),  # the tutorial's call
    dict(n_samples=1000, n_features=20, noise=0.1, random_state=7),
    dict(n_samples=37, n_features=5, n_informative=3, noise=2.5, bias=4.0, random_state=0),
    dict(n_samples=50, n_features=8, n_informative=8, n_targets=3, random_state=123),
    dict(n_samples=40, n_features=6, shuffle=False, noise=0.5, random_state=2),
    dict(n_samples=60, n_features=30, effective_rank=5, tail_strength=0.2, noise=1.0,
         random_state=3),
    dict(n_samples=10, n_features=4, n_informative=0, random_state=4),
    dict(n_samples=12, n_features=3, n_informative=10, random_state=5),  # capped at 3
])
def test_generator_is_identical_to_sklearn(kwargs):
    reference = sklearn_make_regression()
    ours = make_regression(coef=True, **kwargs)
    theirs = reference(coef=True, **kwargs)
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@settings(max_examples=30, deadline=None)
@given(n_samples=st.integers(1, 60), n_features=st.integers(1, 12), data=st.data(),
       noise=st.sampled_from([0.0, 0.1, 3.0]), shuffle=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_generator_matches_sklearn_for_any_shape_and_seed(n_samples, n_features, data, noise,
                                                          shuffle, seed):
    reference = sklearn_make_regression()
    n_informative = data.draw(st.integers(0, n_features))
    kw = dict(n_samples=n_samples, n_features=n_features, n_informative=n_informative,
              noise=noise, shuffle=shuffle, random_state=seed)
    for a, b in zip(make_regression(coef=True, **kw), reference(coef=True, **kw)):
        np.testing.assert_array_equal(a, b)


def test_generator_accepts_a_random_state_and_continues_its_stream():
    reference = sklearn_make_regression()
    ours_rs, theirs_rs = np.random.RandomState(5), np.random.RandomState(5)
    for _ in range(2):  # the second call continues each generator's stream
        a = make_regression(n_samples=20, n_features=3, random_state=ours_rs)
        b = reference(n_samples=20, n_features=3, random_state=theirs_rs)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_generated_targets_are_the_linear_model_plus_noise():
    """Independent of sklearn: y = X @ coef + bias exactly up to the noise level."""
    X, y, coef = make_regression(n_samples=500, n_features=20, n_informative=10, bias=3.0,
                                 noise=0.0, coef=True, random_state=11)
    np.testing.assert_allclose(y, X @ coef + 3.0, rtol=1e-12, atol=1e-9)
    assert np.count_nonzero(coef) == 10 and np.all((coef >= 0) & (coef < 100))
    X2, y2, coef2 = make_regression(n_samples=500, n_features=20, n_informative=10,
                                    noise=0.1, coef=True, random_state=11)
    residual = y2 - X2 @ coef2
    assert 0.08 < residual.std() < 0.12  # the noise's standard deviation, 0.1
    assert abs(X.mean()) < 0.05 and abs(X.std() - 1) < 0.05


# ---- the task's data and batches -----------------------------------------------------
def make_task(**overrides) -> RegressionTask:
    return regression_mlp_task(RegressionTaskConfig(**overrides))


def test_task_data_are_the_tutorials_split():
    X, y = make_regression(n_samples=1000, n_features=20, noise=0.1, random_state=1)
    task = make_task()
    np.testing.assert_array_equal(task.arrays["train"][0], X[:500])
    np.testing.assert_array_equal(task.arrays["test"][1], y[500:])
    info = task.describe()
    assert info["samples"] == {"train": 500, "test": 500}
    assert info["steps_per_epoch"] == 16 and info["last_batch_size"] == 20
    assert 100 < info["target_std"]["train"] < 200  # unscaled targets


def test_epoch_batches_are_kerass_slices():
    assert epoch_batches(500, 32)[-1] == slice(480, 500)
    assert [s.stop - s.start for s in epoch_batches(500, 32)] == [32] * 15 + [20]
    assert [s.stop - s.start for s in epoch_batches(64, 32)] == [32, 32]


def epochs_of_rows(task: RegressionTask, epochs: int) -> list[list[np.ndarray]]:
    out = []
    for _ in range(epochs):
        batches = []
        for _ in range(len(task.batches)):
            batches.append(torch.cat([rows for rows, _ in task.micro]).numpy())
            task.advance()
        out.append(batches)
    return out


@pytest.mark.parametrize("accum", [1, 4])
def test_every_epoch_visits_every_training_sample_once(accum):
    torch.manual_seed(0)
    task = make_task()
    task.setup(torch.device("cpu"), accum)
    epochs = epochs_of_rows(task, 3)
    for batches in epochs:
        assert [len(b) for b in batches] == [32] * 15 + [20]
        assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    orders = [np.concatenate(b) for b in epochs]
    assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch
    assert not np.array_equal(orders[0], np.arange(500))
    # the run's seed (torch's global RNG at setup) fixes the order; another seed changes it
    torch.manual_seed(0)
    again = make_task()
    again.setup(torch.device("cpu"), accum)
    np.testing.assert_array_equal(np.concatenate(epochs_of_rows(again, 1)[0]), orders[0])
    torch.manual_seed(1)
    other = make_task()
    other.setup(torch.device("cpu"), accum)
    assert not np.array_equal(np.concatenate(epochs_of_rows(other, 1)[0]), orders[0])


@pytest.mark.parametrize("accum", [1, 2, 8])
def test_accumulated_micro_batches_give_the_batch_mean_loss_and_gradient(accum):
    """Also on the 20-sample last batch, which 8 micro-batches split unevenly."""
    torch.manual_seed(3)
    task = make_task()
    task.setup(torch.device("cpu"), accum)
    model = task.build_model(compose(BASE).model)
    for step in range(16):
        rows = torch.cat([r for r, _ in task.micro])
        model.zero_grad()
        total = sum(task.train_loss(model, j) for j in range(accum)) / accum
        total.backward()
        ours = [p.grad.clone() for p in model.parameters()]
        # reference: the mean squared error of the whole batch, in float64
        x = torch.as_tensor(task.arrays["train"][0][rows.numpy()])
        y = torch.as_tensor(task.arrays["train"][1][rows.numpy()])
        ref_model = MLP(20, 1, MLPConfig()).double()
        ref_model.load_state_dict(model.state_dict())
        loss = ((ref_model(x).squeeze(-1) - y) ** 2).mean()
        grads = torch.autograd.grad(loss, list(ref_model.parameters()))
        assert total.item() == pytest.approx(loss.item(), rel=1e-5)
        for a, b in zip(ours, grads):
            torch.testing.assert_close(a.double(), b, rtol=2e-4, atol=1e-3)
        assert len(rows) == (20 if step == 15 else 32)
        task.advance()


# ---- the model -----------------------------------------------------------------------
def test_mlp_shapes_and_keras_initialisation():
    torch.manual_seed(0)
    model = MLP(20, 1, MLPConfig())
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(25, 20), (25,), (1, 25), (1,)]
    hidden, out = model.hidden[0], model.out
    assert torch.all(hidden.bias == 0) and torch.all(out.bias == 0)
    assert hidden.weight.abs().max() <= math.sqrt(6 / 20)  # he_uniform limit
    assert out.weight.abs().max() <= math.sqrt(6 / 26)  # glorot_uniform limit
    assert model(torch.zeros(7, 20)).shape == (7, 1)


@pytest.mark.parametrize("kernel,limit", [
    ("he_uniform", lambda fi, fo: math.sqrt(6 / fi)),
    ("glorot_uniform", lambda fi, fo: math.sqrt(6 / (fi + fo))),
])
def test_keras_kernel_initialisers_have_their_uniform_distribution(kernel, limit):
    torch.manual_seed(1)
    model = MLP(400, 1, MLPConfig(hidden_sizes=[300], kernel_initializer=kernel))
    w = model.hidden[0].weight.detach().numpy().ravel()
    a = limit(400, 300)
    assert np.abs(w).max() <= a and np.abs(w).max() > 0.99 * a
    assert w.var() == pytest.approx(a * a / 3, rel=0.02)  # var of U(-a, a)
    w_out = model.out.weight.detach().numpy().ravel()
    assert np.abs(w_out).max() <= math.sqrt(6 / 301)


def test_torch_initialisation_keeps_nn_linear_defaults():
    torch.manual_seed(2)
    model = MLP(20, 1, MLPConfig(init="torch", hidden_sizes=[25, 10]))
    assert [tuple(p.shape) for p in model.parameters()] == [(25, 20), (25,), (10, 25), (10,),
                                                             (1, 10), (1,)]
    assert model.hidden[0].bias.abs().max() > 0
    assert model.hidden[0].bias.abs().max() <= 1 / math.sqrt(20)


def numpy_forward(model: MLP, x: np.ndarray, act) -> np.ndarray:
    h = x
    for layer in model.hidden:
        h = act(h @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy())
    return (h @ model.out.weight.detach().double().numpy().T
            + model.out.bias.detach().double().numpy())


@pytest.mark.parametrize("activation,act", [
    ("relu", lambda z: np.maximum(z, 0)), ("tanh", np.tanh),
    ("sigmoid", lambda z: 1 / (1 + np.exp(-z))),
])
def test_mlp_forward_equals_a_numpy_reference(activation, act):
    torch.manual_seed(4)
    model = MLP(6, 2, MLPConfig(hidden_sizes=[5, 4], activation=activation, init="torch"))
    x = np.random.default_rng(0).normal(size=(9, 6))
    ours = model(torch.as_tensor(x, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(ours, numpy_forward(model, x, act), rtol=1e-5, atol=1e-5)


# ---- evaluation ----------------------------------------------------------------------
def test_evaluate_equals_an_independent_numpy_mse():
    torch.manual_seed(5)
    task = make_task()
    task.setup(torch.device("cpu"), 1)
    model = MLP(20, 1, MLPConfig())
    relu = lambda z: np.maximum(z, 0)  # noqa: E731
    out = task.evaluate(model)
    (xt, yt), (xs, ys) = task.arrays["train"], task.arrays["test"]
    test_mse = np.mean((numpy_forward(model, xs.astype(np.float32), relu)[:, 0] - ys) ** 2)
    train_mse = np.mean((numpy_forward(model, xt.astype(np.float32), relu)[:, 0] - yt) ** 2)
    assert out["val_loss"] == out["val_metric"] == pytest.approx(test_mse, rel=1e-5)
    assert out["train_mse"] == pytest.approx(train_mse, rel=1e-5)
    assert 15000 < test_mse < 40000  # an untrained model: about the targets' variance
    limited = task.evaluate(model, max_batches=2)  # the first 2 x 32 samples
    ref = np.mean((numpy_forward(model, xs[:64].astype(np.float32), relu)[:, 0] - ys[:64]) ** 2)
    assert limited["val_loss"] == pytest.approx(ref, rel=1e-5)
    success = task.success(model)
    assert success["task_success"] is False and success["test_mse"] == out["val_loss"]


# ---- configuration -------------------------------------------------------------------
@pytest.mark.parametrize("override,key", [
    ("task.n_train=1000", "task.n_train"),
    ("task.n_informative=21", "task.n_informative"),
    ("task.noise=-1", "task.noise"),
    ("model.hidden_sizes=[]", "model.hidden_sizes"),
    ("model.activation=gelu", "model.activation"),
    ("model.kernel_initializer=zeros", "model.kernel_initializer"),
])
def test_bad_values_name_their_key(override, key):
    with pytest.raises(ConfigErrors) as info:
        validate(compose([*BASE, override]))
    assert [e.key for e in info.value.errors] == [key]


def test_a_char_model_for_the_regression_task_is_a_config_error():
    cfg = compose(["task=regression_mlp", "model=lstm"])
    task = build_task(cfg.task)
    with pytest.raises(ConfigError, match="model=mlp"):
        task.build_model(cfg.model)


def test_the_preset_is_the_tutorials_setup():
    cfg = compose(["+sweep=repro_mlp"])
    assert cfg.task.name == "regression_mlp" and list(cfg.model.hidden_sizes) == [25]
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum) == ("sgd", 0.01, 0.9)
    steps = len(build_task(cfg.task).batches)
    assert cfg.trainer.max_steps == 100 * steps and cfg.trainer.eval_every == steps
    assert cfg.trainer.explode_factor is None
    validate(cfg)


# ---- end to end ----------------------------------------------------------------------
def test_trainer_runs_the_task_end_to_end(tmp_path):
    cfg = compose([*BASE, "clip=norm", "clip.max_norm=1.0", "trainer.max_steps=40",
                   "trainer.log_every=8", "trainer.eval_every=16", "seed=3"])
    summary = Trainer(cfg, tmp_path).run()
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_completed"] == 40
    assert summary["metric"] == {"name": "mse", "unit": "squared target units",
                                 "lower_is_better": True}
    assert summary["tokens_seen"] == 40 * 32 and summary["clip_fraction"] == 1.0
    m = pd.read_parquet(tmp_path / "metrics.parquet")
    evals = m.dropna(subset=["val_metric"])
    assert evals.step.tolist() == [16, 32, 40]
    assert evals.val_metric.iloc[-1] == summary["final_val_metric"]
    assert summary["best_val_metric"] == evals.val_metric.min()
    # clipping at 1.0 with lr 0.01: the loss falls, slowly, from about the target variance
    assert evals.val_metric.iloc[-1] < evals.val_metric.iloc[0] < 40000
    tm = summary["task_metrics"]
    assert tm["test_mse"] == summary["final_val_metric"] and tm["train_mse"] > 0
    assert summary["task_success"] is False  # 40 steps are far too few to get below 100
    assert np.all(m.grad_norm_post <= 1.0 + 1e-4) and np.all(m.grad_norm_pre > 1.0)


def test_unclipped_sgd_reaches_nan_and_the_run_records_it(tmp_path):
    """The tutorial's first claim: without clipping the weights overflow to NaN/Inf."""
    cfg = compose([*BASE, "clip=none", "trainer.max_steps=64", "trainer.log_every=16",
                   "trainer.eval_every=0", "trainer.explode_factor=null", "seed=0"])
    summary = Trainer(cfg, tmp_path).run()
    assert summary["status"] == "diverged" and summary["divergence"] == "nonfinite"
    assert summary["first_nonfinite_step"] <= 16  # within the first epoch
    assert summary["final_val_metric"] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (host syncs exist there)")
def test_train_loss_and_advance_never_sync_with_the_gpu():
    torch.manual_seed(0)
    task = make_task()
    device = torch.device("cuda")
    task.setup(device, 2)
    model = task.build_model(compose(BASE).model).to(device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(len(task.batches) + 2):  # across an epoch boundary (a new shuffle)
            for j in range(2):
                task.train_loss(model, j).backward()
            task.advance()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert task.epoch == 1
