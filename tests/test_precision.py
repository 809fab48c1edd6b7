"""Autocast is asked of the device: a device/dtype pair that cannot run the model is
refused in one line before any directory is made (issue: bf16 LSTM on a CPU whose oneDNN
has no bf16 LSTM primitive failed at the first forward pass, and the suite with it).

The refusal is tested by forcing the probe, so it runs on every machine; the real bf16
and fp16 runs (tests/test_trainer.py) run only where the probe says the device can."""

from __future__ import annotations

import pytest

from seqbench import precision
from seqbench.cli import main
from tests.conftest import TINY

REASON = "could not create a primitive descriptor for the LSTM forward propagation primitive"


@pytest.fixture
def failing_probe(monkeypatch):
    calls = []

    def probe(cell, num_layers, device, amp):
        calls.append((cell, num_layers, device, amp))
        return REASON

    precision._probe.cache_clear()
    monkeypatch.setattr(precision, "try_autocast", probe)
    monkeypatch.setattr(precision, "processor", lambda: "AMD EPYC, AVX2")
    yield calls
    precision._probe.cache_clear()  # the real answers again for later tests


def test_a_failing_probe_refuses_bf16_in_one_line_before_any_directory(
        failing_probe, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "trainer.amp=bf16", "trainer.device=cpu"]) == 2
    assert capsys.readouterr().err == (
        "seqbench: error: trainer.amp=bf16: bf16 autocast of nn.LSTM fails on cpu "
        f"(AMD EPYC, AVX2): {REASON}; use trainer.amp=off, or a CUDA GPU\n")
    assert failing_probe == [("lstm", 1, "cpu", "bf16")]
    assert not any(tmp_path.iterdir())  # no run directory, no runs/


def test_the_probe_names_the_configured_stack(failing_probe, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "model=gru", "model.num_layers=2",
                 "trainer.amp=fp16"]) == 2
    err = capsys.readouterr().err
    assert "trainer.amp=fp16: fp16 autocast of nn.GRU fails on cpu" in err
    assert failing_probe == [("gru", 2, "cpu", "fp16")]


def test_amp_off_never_probes(failing_probe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "trainer.max_steps=1", "hydra.run.dir=run"]) == 0
    assert failing_probe == []


@pytest.fixture
def loggers_kept():
    """An in-process sweep lets Hydra apply the preset's `hydra_logging: disabled`, which
    disables every logger that exists (disable_existing_loggers): later tests that read
    seqbench's log lines (caplog) would see nothing. Put them back as they were."""
    import logging

    before = {name: (lg.disabled, lg.level)
              for name, lg in logging.root.manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}
    root_level, root_handlers = logging.root.level, list(logging.root.handlers)
    yield
    for name, lg in logging.root.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.disabled, lg.level = before.get(name, (False, logging.NOTSET))
    logging.root.setLevel(root_level)
    logging.root.handlers[:] = root_handlers


def test_a_sweep_probes_once_for_all_its_jobs(failing_probe, capsys, tmp_path, monkeypatch,
                                              loggers_kept):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:  # the sweeper exits inside Hydra
        main(["sweep", "demo", "trainer.amp=bf16", "--dry-run"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "trainer.amp=bf16: bf16 autocast of nn.LSTM fails on cpu" in err
    assert failing_probe == [("lstm", 1, "cpu", "bf16")]  # 78 jobs, one probe
    assert not (tmp_path / "runs").exists()


def test_the_real_probe_agrees_with_a_forward_pass_and_is_cached():
    """Whatever this CPU can do, the probe's answer is the answer of a real autocast pass
    (run here independently), and asking again costs nothing."""
    import torch

    for cell, module in (("lstm", torch.nn.LSTM), ("rnn_tanh", torch.nn.RNN)):
        for amp, dtype in precision.AMP_DTYPES.items():
            got = precision.autocast_failure({"cell": cell, "num_layers": 1}, "cpu", amp)
            try:
                with torch.autocast("cpu", dtype=dtype):
                    out, _ = module(8, 8, batch_first=True)(torch.randn(2, 3, 8))
                out.float().sum().backward()
                works = True
            except RuntimeError:
                works = False
            assert (got is None) == works, (cell, amp, got)
    before = precision._probe.cache_info().hits
    precision.autocast_failure({"cell": "lstm", "num_layers": 1}, "cpu", "bf16")
    assert precision._probe.cache_info().hits == before + 1
