"""The Hydra application behind `python -m seqbench train`.

Kept apart from the CLI so that the CLI can check a config (and exit 2 with one line)
before Hydra creates a run directory or configures logging.

The task function registers the schemas and plugins itself: Hydra's launchers run it in
processes that never ran the CLI (joblib workers, SLURM jobs), and `train` looks its
task, model and clipping method up in the registries.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seqbench.confdir import conf_dir

log = logging.getLogger("seqbench")


@hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
def train_app(cfg: DictConfig) -> None:
    from seqbench.config import ensure_registered
    from seqbench.train import Interrupted, train

    ensure_registered()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        train(cfg, run_dir)
    except Interrupted as e:
        # not an error: a checkpoint is saved. Exit as a signalled process would (143 for
        # SIGTERM); in a local sweep this also stops the sweep, as the signal meant.
        log.warning("%s; checkpoint saved. The same command with hydra.run.dir=%s "
                    "continues from it (a sweep: run the sweep again)", e, run_dir)
        sys.exit(128 + e.signum)
