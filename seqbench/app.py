"""The Hydra application behind `python -m seqbench train`.

Kept apart from the CLI so that the CLI can check a config (and exit 2 with one line)
before Hydra creates a run directory or configures logging.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seqbench.config import conf_dir

log = logging.getLogger("seqbench")


@hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
def train_app(cfg: DictConfig) -> None:
    from seqbench.train import train

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    train(cfg, run_dir)
