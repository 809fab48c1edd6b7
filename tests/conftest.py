import os

import pytest
import torch
from hypothesis import settings

from seqbench.config import compose

# The same examples on every run, so CI cannot fail by chance; explore more with
# HYPOTHESIS_PROFILE=explore (random examples, ten times as many).
settings.register_profile("seqbench", derandomize=True, deadline=None)
settings.register_profile("explore", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "seqbench"))

# A model small enough that a test run takes a fraction of a second on one core.
TINY = [
    "model.hidden_size=16",
    "model.embed_dim=8",
    "task.seq_len=16",
    "task.batch_size=4",
    "trainer.max_steps=12",
    "trainer.log_every=5",
    "trainer.eval_every=0",
    "trainer.eval_batches=2",
    "trainer.progress=off",
    "trainer.threads=1",
]


@pytest.fixture
def tiny_cfg():
    def make(*overrides: str):
        return compose([*TINY, *overrides])

    return make


@pytest.fixture(autouse=True)
def _no_flush_denormal_leak():
    """A Trainer on CPU turns on flush-to-zero for the whole process (trainer.
    flush_denormal); later tests in the same process (hypothesis's float strategies)
    must not inherit it."""
    yield
    torch.set_flush_denormal(False)
