"""seqbench: how gradient clipping and optimizers change the stability of RNN training."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["ClipStats", "Clipper", "__version__"]

if TYPE_CHECKING:
    from seqbench.clipper import Clipper, ClipStats


def __getattr__(name: str):
    # Imported on first use: `import seqbench` (the CLI, its --help) stays free of torch,
    # Hydra and the config schemas until a Clipper is asked for.
    if name in ("Clipper", "ClipStats"):
        from seqbench import clipper

        return getattr(clipper, name)
    raise AttributeError(f"module 'seqbench' has no attribute {name!r}")
