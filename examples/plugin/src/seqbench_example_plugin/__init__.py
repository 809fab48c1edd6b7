"""An example seqbench plugin (see README.md).

The registrations are in `plugin`, the module seqbench's entry point names; the
implementations (`adagc`, `ln_lstm`, `token_file`) register nothing when imported, so they
can be used and tested on their own.
"""

__version__ = "0.1.0"
