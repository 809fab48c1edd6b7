"""The module seqbench's entry point names: it registers what this package brings.

seqbench imports it once per process (pyproject.toml, `[project.entry-points.
"seqbench.plugins"]`). Each decorator makes an option of a config group, with the
dataclass's fields as its keys and defaults:

    clip=adagc      AdaGC, per-tensor clipping against an EMA of each tensor's norm
    model=ln_lstm   a layer-normalised LSTM
    task=token_file next-token prediction on a file of integer token ids
"""

from __future__ import annotations

from seqbench.plugins import register_clip, register_model, register_task
from seqbench_example_plugin.adagc import AdaGC, AdaGCConfig
from seqbench_example_plugin.ln_lstm import LayerNormLSTM, LayerNormLSTMConfig
from seqbench_example_plugin.token_file import TokenFileConfig, TokenFileTask


@register_clip("adagc", AdaGCConfig)
def adagc(cfg, named_params):
    """Built once per run, with the run's trainable (name, parameter) pairs."""
    return AdaGC(cfg, named_params)


@register_model("ln_lstm", LayerNormLSTMConfig)
def ln_lstm(cfg, input_size):
    """The recurrent stack: every recurrent task puts its own input and output layers
    around it."""
    return LayerNormLSTM(input_size, cfg.hidden_size, cfg.num_layers,
                         cfg.dropout if cfg.num_layers > 1 else 0.0, cfg.ln_eps)


@register_task("token_file", TokenFileConfig)
def token_file(cfg):
    return TokenFileTask(cfg)
