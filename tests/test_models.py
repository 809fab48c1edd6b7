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
