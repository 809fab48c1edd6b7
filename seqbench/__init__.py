"""seqbench: how gradient clipping and optimizers change the stability of RNN training."""

__version__ = "0.1.0"
