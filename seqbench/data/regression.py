"""Regression tasks: the exploding MLP of the gradient-clipping tutorial.

`task=regression_mlp` reproduces the set-up of J. Brownlee, "How to Avoid Exploding
Gradients With Gradient Clipping" (machinelearningmastery.com, 2019): 1,000 samples of
`make_regression(n_samples=1000, n_features=20, noise=0.1, random_state=1)` (10 of the
20 Gaussian features informative, targets left unscaled, standard deviation ~ 150), the
first 500 samples for training and the last 500 for testing (`X[:500]`, `X[500:]`, the
tutorial's split -- not `train_test_split`), an MLP 20 -> 25 (ReLU) -> 1 trained on the
mean squared error with mini-batches of 32. Unscaled targets make the first gradients
hundreds to thousands in size, which is what lets SGD with momentum blow up without
clipping -- the point of the tutorial.

The generator is our own copy of scikit-learn's `sklearn.datasets.make_regression`
(its algorithm, draw for draw on a `numpy.random.RandomState`), so the data are
*identical* to sklearn's for the same `random_state` without sklearn as a dependency;
`tests/test_regression.py` compares the arrays exactly for several seeds and shapes.

Batching follows Keras' `Model.fit(shuffle=True)`: a fresh permutation of the training
samples every epoch, consecutive slices of it as batches, and the last, smaller batch
(500 - 15 x 32 = 20 samples) taken as a step of its own whose loss is the mean over its
20 samples. An epoch is therefore ceil(n_train / batch_size) optimizer steps.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from seqbench.checks import at_least, nonnegative, positive
from seqbench.data.tasks import TASKS, MetricSpec
from seqbench.errors import ConfigError
from seqbench.models import MLP

MSE = MetricSpec("mse", "squared target units", lower_is_better=True)


# ---- the generator (scikit-learn's make_regression, reproduced) ----------------------
def check_random_state(seed) -> np.random.RandomState:
    """sklearn.utils.check_random_state: None -> numpy's global RandomState."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")


def make_low_rank_matrix(n_samples: int = 100, n_features: int = 100, *,
                         effective_rank: int = 10, tail_strength: float = 0.5,
                         random_state=None) -> np.ndarray:
    """sklearn.datasets.make_low_rank_matrix: a bell-shaped singular-value profile."""
    from scipy import linalg

    generator = check_random_state(random_state)
    n = min(n_samples, n_features)
    u, _ = linalg.qr(generator.standard_normal(size=(n_samples, n)),
                     mode="economic", check_finite=False)
    v, _ = linalg.qr(generator.standard_normal(size=(n_features, n)),
                     mode="economic", check_finite=False)
    singular_ind = np.arange(n, dtype=np.float64)
    low_rank = (1 - tail_strength) * np.exp(-1.0 * (singular_ind / effective_rank) ** 2)
    tail = tail_strength * np.exp(-0.1 * singular_ind / effective_rank)
    s = np.identity(n) * (low_rank + tail)
    return np.dot(np.dot(u, s), v.T)


def make_regression(n_samples: int = 100, n_features: int = 100, *, n_informative: int = 10,
                    n_targets: int = 1, bias: float = 0.0, effective_rank: int | None = None,
                    tail_strength: float = 0.5, noise: float = 0.0, shuffle: bool = True,
                    coef: bool = False, random_state=None):
    """A random linear regression problem, equal to `sklearn.datasets.make_regression`.

    Same signature, defaults and draws, in the same order, from the same RandomState:
    X ~ N(0, 1) of shape (n_samples, n_features) (or a low-rank matrix when
    `effective_rank` is set); coefficients 100 * U(0, 1) on the first `n_informative`
    features (capped at n_features, as sklearn does), zero on the rest;
    y = X @ coef + bias + N(0, noise^2); then, if `shuffle`, a permutation of the samples
    (sklearn.utils.shuffle: `RandomState.shuffle` of an index array) followed by one of
    the features. sklearn < 1.0 spelled the draws
    `randn`/`rand`, which consume the stream exactly as `standard_normal`/`uniform`,
    so the arrays are also those of the sklearn the tutorial ran (2019).

    Returns X (n_samples, n_features), y (n_samples,) or (n_samples, n_targets), and
    the coefficients when `coef` is true.
    """
    for name, value, low in (("n_samples", n_samples, 1), ("n_features", n_features, 1),
                             ("n_informative", n_informative, 0), ("n_targets", n_targets, 1),
                             ("noise", noise, 0)):
        if value < low:  # sklearn's validate_params ranges
            raise ValueError(f"make_regression: {name}={value} must be >= {low}")
    n_informative = min(n_features, n_informative)  # as sklearn: at most every feature
    generator = check_random_state(random_state)
    if effective_rank is None:
        X = generator.standard_normal(size=(n_samples, n_features))
    else:
        X = make_low_rank_matrix(n_samples=n_samples, n_features=n_features,
                                 effective_rank=effective_rank, tail_strength=tail_strength,
                                 random_state=generator)
    ground_truth = np.zeros((n_features, n_targets))
    ground_truth[:n_informative, :] = 100 * generator.uniform(size=(n_informative, n_targets))
    y = np.dot(X, ground_truth) + bias
    if noise > 0.0:
        y += generator.normal(scale=noise, size=y.shape)
    if shuffle:
        order = np.arange(n_samples)
        generator.shuffle(order)
        X, y = X[order], y[order]
        indices = np.arange(n_features)
        generator.shuffle(indices)
        X[:, :] = X[:, indices]
        ground_truth = ground_truth[indices]
    y = np.squeeze(y)
    if coef:
        return X, y, np.squeeze(ground_truth)
    return X, y


# ---- the task ------------------------------------------------------------------------
@dataclass
class RegressionTaskConfig:
    name: str = "regression_mlp"
    n_samples: int = at_least(1000, 2)
    n_features: int = at_least(20, 1)
    n_informative: int = at_least(10, 0)
    noise: float = nonnegative(0.1)
    data_seed: int = at_least(1, 0)  # make_regression's random_state
    n_train: int = at_least(500, 1)  # the first n_train samples train, the rest test
    batch_size: int = at_least(32, 1)
    # success(): test MSE below this (the tutorial: norm clipping takes the loss from
    # above 20,000 to below 100); the MSE of predicting the mean is about 30,000 here
    success_mse: float = positive(100.0)


def check_config(cfg: RegressionTaskConfig) -> None:
    """The limits one field cannot state alone (raised when the task is built)."""
    if cfg.n_informative > cfg.n_features:
        raise ConfigError("task.n_informative", cfg.n_informative,
                          f"at most task.n_features={cfg.n_features}")
    if cfg.n_train >= cfg.n_samples:
        raise ConfigError("task.n_train", cfg.n_train,
                          f"less than task.n_samples={cfg.n_samples} (the rest is the test set)")
    if cfg.data_seed >= 2**32:
        raise ConfigError("task.data_seed", cfg.data_seed,
                          "below 2**32 (numpy.random.RandomState's seed range)")


def epoch_batches(n: int, batch_size: int) -> list[slice]:
    """Keras' batches of one epoch: consecutive slices, the last one smaller."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


class RegressionTask:
    """Mini-batch regression of y on X by an MLP, with the mean squared error.

    The data are held on the device as float32 (Keras' dtype); a step's batch is a
    gather of its rows. With `trainer.accum_steps=k` the batch is split into k
    near-equal micro-batches (`torch.tensor_split`), and micro-batch j returns its
    squared-error sum x k / batch rows, so the trainer's mean over the k micro-batch
    losses is the batch mean and the accumulated gradient is exactly the batch's. When
    the split is even (always, for full batches: k divides batch_size) that is simply
    the micro-batch mean; only the smaller last batch of an epoch can split unevenly.
    """

    metric = MSE

    def __init__(self, name: str, cfg: RegressionTaskConfig, X: np.ndarray, y: np.ndarray):
        self.name, self.cfg = name, cfg
        n = int(cfg.n_train)
        self.arrays = {"train": (X[:n], y[:n]), "test": (X[n:], y[n:])}
        self.batches = epoch_batches(n, int(cfg.batch_size))
        self.data: dict[str, tuple[Tensor, Tensor]] = {}
        self.accum = 1
        self.epoch, self.k = 0, 0
        self.perm: Tensor | None = None
        self.micro: list[tuple[Tensor, bool]] = []

    # ---- set-up ---------------------------------------------------------------------
    def setup(self, device: torch.device, accum_steps: int) -> None:
        self.device = torch.device(device)
        self.data = {
            split: (torch.as_tensor(x, dtype=torch.float32, device=self.device),
                    torch.as_tensor(y, dtype=torch.float32, device=self.device))
            for split, (x, y) in self.arrays.items()
        }
        self.accum = int(accum_steps)
        # The epoch shuffles come from a generator of their own, seeded from torch's
        # global RNG, which the trainer has just seeded with the run's `seed`: each seed
        # gets its own, reproducible order, independent of the device.
        seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.k = 0, 0
        self._new_epoch()

    def _new_epoch(self) -> None:
        perm = torch.randperm(len(self.arrays["train"][1]), generator=self.generator)
        if self.device.type == "cuda":  # asynchronous copy: no wait on the GPU queue
            self.perm = perm.pin_memory().to(self.device, non_blocking=True)
        else:
            self.perm = perm.to(self.device)
        self._set_batch()

    def _set_batch(self) -> None:
        rows = self.perm[self.batches[self.k]]
        n = rows.numel()
        # (indices, is an even split) per micro-batch; sizes are known on the host
        self.micro = [(part, part.numel() * self.accum == n)
                      for part in torch.tensor_split(rows, self.accum)]
        self.batch_rows = n

    def build_model(self, model_cfg) -> nn.Module:
        if getattr(model_cfg, "hidden_sizes", None) is None:  # e.g. model=lstm
            raise ConfigError("model", getattr(model_cfg, "cell", "?"),
                              f"task {self.name} needs model=mlp")
        return MLP(self.arrays["train"][0].shape[1], 1, model_cfg)

    @property
    def tokens_per_step(self) -> int:
        """Samples per step: batch_size (the last step of an epoch reads fewer)."""
        return int(self.cfg.batch_size)

    def describe(self) -> dict:
        (xt, yt), (_, ys) = self.arrays["train"], self.arrays["test"]
        return {
            "generator": "sklearn.datasets.make_regression (reproduced)",
            "n_features": int(xt.shape[1]),
            "n_informative": int(self.cfg.n_informative),
            "noise": float(self.cfg.noise),
            "data_seed": int(self.cfg.data_seed),
            "samples": {"train": int(len(yt)), "test": int(len(ys))},
            "split": f"first {len(yt)} train, last {len(ys)} test",
            "steps_per_epoch": len(self.batches),
            "last_batch_size": self.batches[-1].stop - self.batches[-1].start,
            "target_std": {"train": float(yt.std()), "test": float(ys.std())},
        }

    # ---- training -------------------------------------------------------------------
    def train_loss(self, model: nn.Module, j: int) -> Tensor:
        rows, even = self.micro[j]
        x, y = self.data["train"]
        err = model(x[rows]).squeeze(-1) - y[rows]
        if even:
            return (err * err).mean()
        return (err * err).sum() * (self.accum / self.batch_rows)

    def advance(self) -> None:
        self.k += 1
        if self.k == len(self.batches):
            self.epoch, self.k = self.epoch + 1, 0
            self._new_epoch()
        else:
            self._set_batch()

    def reset_state(self) -> None:
        """Nothing to drop: an MLP carries no state from one batch to the next."""

    def state_dict(self) -> dict:
        """Where in which epoch's shuffle the run is, and the shuffling generator."""
        return {"generator": self.generator.get_state(), "epoch": self.epoch, "k": self.k,
                "perm": self.perm}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.k = int(state["epoch"]), int(state["k"])
        self.perm = state["perm"].to(self.device)
        self._set_batch()

    # ---- evaluation -----------------------------------------------------------------
    @torch.no_grad()
    def mse(self, model: nn.Module, split: str, limit: int = 0) -> Tensor:
        """Mean squared error over a split (its first `limit` samples if limit > 0)."""
        x, y = self.data[split]
        if limit > 0:
            x, y = x[:limit], y[:limit]
        was_training = model.training
        model.eval()
        err = model(x).squeeze(-1).double() - y.double()
        model.train(was_training)
        return (err * err).mean()

    def evaluate(self, model: nn.Module, max_batches: int = 0) -> dict[str, float]:
        """Test MSE (val_loss = val_metric) and train MSE, each over the whole split.

        `max_batches` > 0 limits both to their first max_batches x batch_size samples.
        """
        limit = max_batches * int(self.cfg.batch_size) if max_batches > 0 else 0
        both = torch.stack([self.mse(model, "test", limit), self.mse(model, "train", limit)])
        test, train = both.tolist()  # the one host read of an evaluation
        return {"val_loss": test, "val_metric": test, "train_mse": train}

    def baseline(self, max_batches: int = 0) -> dict:
        """The best constant prediction on the samples `evaluate(model, max_batches)`
        scores (the test split, or its first max_batches x batch_size samples): their
        mean, whose MSE is the test targets' variance (ddof 0). No output that ignores X
        does better there, so a run beats it only by reading X. `train_mean_mse` is the
        MSE of predicting the training targets' mean instead (the variance plus the
        squared gap between the two means), the constant a model that learned nothing
        but the bias tends towards."""
        y = np.asarray(self.arrays["test"][1], dtype=np.float64)
        if max_batches > 0:
            y = y[:max_batches * int(self.cfg.batch_size)]
        train_mean = float(np.mean(self.arrays["train"][1], dtype=np.float64))
        var = float(np.var(y))
        train_mean_mse = float(np.mean((y - train_mean) ** 2))
        return {
            "val_metric": var, "val_loss": var, "train_mean_mse": train_mean_mse,
            "description": (
                f"the variance of the {len(y)} test targets: the MSE of predicting their "
                f"mean, the best constant (predicting the training mean: "
                f"{train_mean_mse:,.1f})"
            ),
        }

    def success(self, model: nn.Module) -> dict:
        """Did the model learn the problem: test MSE below `task.success_mse`?"""
        out = self.evaluate(model)
        test = out["val_metric"]
        return {"task_success": bool(math.isfinite(test) and test < self.cfg.success_mse),
                "test_mse": test, "train_mse": out["train_mse"],
                "success_mse": float(self.cfg.success_mse)}


@TASKS.register("regression_mlp", RegressionTaskConfig, model="mlp")
def regression_mlp_task(cfg: RegressionTaskConfig) -> RegressionTask:
    check_config(cfg)
    X, y = make_regression(n_samples=int(cfg.n_samples), n_features=int(cfg.n_features),
                           n_informative=int(cfg.n_informative), noise=float(cfg.noise),
                           random_state=int(cfg.data_seed))
    return RegressionTask("regression_mlp", cfg, X, y)
