import inspect
import os
from pathlib import Path

# Plugins installed in this environment (make setup installs examples/plugin) must not
# change what the suite sees: option lists, error lines, --help. Set before the schemas
# are registered (that loads plugins); tests/test_plugins.py loads them in subprocesses.
os.environ["SEQBENCH_DISABLE_PLUGIN_AUTOLOAD"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

from seqbench.config import compose, ensure_registered  # noqa: E402

# Registered once, before any test module is collected: several parametrize over the
# registries (every task, every clip method) and some compose with Hydra's own API.
ensure_registered()

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


SEQBENCH_PACKAGE = Path(__file__).resolve().parent.parent / "seqbench"
HOST_READS = ("item", "__bool__", "__float__", "__int__", "tolist", "cpu", "numpy")


@pytest.fixture
def host_reads(monkeypatch):
    """Every host read of a tensor's values (`.item()`, `bool()`, `.cpu()`, ...) made from
    seqbench's own code, as "name at file:line": on CUDA each is a sync, so the step path
    must make none."""
    seen: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def spy(self, *a, __original=original, __name=name, **kw):
            caller = inspect.stack(context=0)[1]
            if Path(caller.filename).resolve().is_relative_to(SEQBENCH_PACKAGE):
                seen.append(f"{__name} at {Path(caller.filename).name}:{caller.lineno}")
            return __original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return seen
