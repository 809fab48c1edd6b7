"""Model construction details that change training dynamics."""

import pytest
import torch
from omegaconf import OmegaConf

from seqbench.models import CharRNN, CharRNNConfig


def model(**kw):
    return CharRNN(10, OmegaConf.structured(CharRNNConfig(hidden_size=6, embed_dim=4, **kw)))


@pytest.mark.parametrize("layers", [1, 2])
def test_forget_bias_sets_only_the_forget_gate(layers):
    torch.manual_seed(0)
    plain = model(num_layers=layers)
    torch.manual_seed(0)
    biased = model(num_layers=layers, forget_bias=1.0)
    h = 6
    for layer in range(layers):
        b_ih = getattr(biased.rnn, f"bias_ih_l{layer}")
        b_hh = getattr(biased.rnn, f"bias_hh_l{layer}")
        # effective forget bias = b_ih + b_hh = 1 exactly; other gates untouched
        assert torch.equal(b_ih[h:2 * h] + b_hh[h:2 * h], torch.ones(h))
        ref_ih = getattr(plain.rnn, f"bias_ih_l{layer}")
        assert torch.equal(b_ih[:h], ref_ih[:h]) and torch.equal(b_ih[2 * h:], ref_ih[2 * h:])


def test_forget_bias_on_a_gru_is_a_config_error(tiny_cfg):
    from seqbench.config import validate
    from seqbench.errors import ConfigErrors

    with pytest.raises(ConfigErrors, match="model.forget_bias"):
        validate(tiny_cfg("model=gru", "+model.forget_bias=1.0"), check_data=False)


def test_pascanu_init_sparsity_radius_and_scale():
    """Pascanu et al. (2013): 15 non-zero recurrent weights per row, the recurrent matrix
    at spectral radius 0.95 (checked with numpy's eigenvalues, independently of torch's),
    input weights from a normal with standard deviation 0.1, zero biases; drawn from the
    seeded generator."""
    import numpy as np

    from seqbench.models import CharRNNConfig, make_recurrent

    cfg = CharRNNConfig(cell="rnn_tanh", embed_dim=40, hidden_size=50, init="pascanu")
    torch.manual_seed(0)
    rnn = make_recurrent(cfg, 40)
    w = rnn.weight_hh_l0.detach().double().numpy()
    assert ((w != 0).sum(axis=1) == 15).all()
    assert np.abs(np.linalg.eigvals(w)).max() == pytest.approx(0.95, rel=1e-6)
    ih = rnn.weight_ih_l0.detach().numpy()
    assert ih.std() == pytest.approx(0.1, rel=0.1) and abs(ih.mean()) < 0.02
    assert all((b == 0).all() for n, b in rnn.named_parameters() if n.startswith("bias"))
    torch.manual_seed(0)
    assert torch.equal(make_recurrent(cfg, 40).weight_hh_l0, rnn.weight_hh_l0)
    torch.manual_seed(1)
    assert not torch.equal(make_recurrent(cfg, 40).weight_hh_l0, rnn.weight_hh_l0)
