"""A-priori size checks (issue 13, item 4): every dimension that could hang or exhaust
memory is refused with one line and its estimate, before anything is built."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from seqbench import sizes
from seqbench.cli import main
from seqbench.models import CharRNN, CharRNNConfig, count_parameters


@settings(max_examples=40, deadline=None)
@given(cell=st.sampled_from(sorted(sizes.GATES)), layers=st.integers(1, 4),
       hidden=st.integers(1, 48), embed=st.integers(1, 24), vocab=st.integers(2, 80))
def test_the_parameter_estimate_is_exact_for_the_char_models(cell, layers, hidden, embed,
                                                             vocab):
    cfg = OmegaConf.structured(CharRNNConfig(cell=cell, num_layers=layers, hidden_size=hidden,
                                             embed_dim=embed))
    est = sizes.recurrent_estimate(cfg, vocab, streams=2, steps=3)
    assert est.parameters == count_parameters(CharRNN(vocab, cfg))  # torch's own count
    assert est.activation_bytes == 4 * 2 * 3 * layers * hidden * (sizes.GATES[cell] + 2)


@pytest.mark.parametrize(("args", "line"), [
    (["model.num_layers=1000000"],
     "model.num_layers=1000000: at most 1024: building 4,000,000 parameter tensors one by "
     "one is slow (10,000 layers took 7 s, 1,000,000 never finished)"),
    (["model.hidden_size=1000000"], "model.hidden_size=1000000: too large: about "),
    (["model.num_layers=1000", "model.hidden_size=8192"], "model.num_layers=1000: too large: "),
    (["task=adding", "task.batch_size=10000000"], "task.batch_size=10000000: too large: "),
    (["task=adding", "task.val_sequences=100000000000"],
     "task.val_sequences=100000000000: too large: the validation set "
     "(100,000,000,000 x 100 steps) needs about 72.8 TiB on the device"),
    (["task=adding", "task.test_sequences=100000000000"],
     "task.test_sequences=100000000000: at most 21,474,836 at 100 steps a sequence"),
])
def test_sizes_that_cannot_run_are_one_line_and_fast(args, line, capsys, tmp_path,
                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *args]) == 2  # before this check, the first one hung
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"seqbench: error: {line}"), err
    assert not list(tmp_path.iterdir())  # nothing was written
