"""hydra-submitit-launcher's launchers with seqbench's two keys: `runs_per_gpu` and
`gpu_memory_gib` (issue 25, seqbench/bundles.py).

The plugin's config schemas are structured (dataclasses): a key they do not declare is
refused when Hydra composes, so `hydra.launcher.runs_per_gpu=4` needs a schema that has
it. These subclass the plugin's schemas and launchers and change nothing else: the
launcher drops the two keys before its parameters reach submitit, and the seqbench
sweeper reads them from the config. `conf/hydra/launcher/` builds the presets on them:
`slurm`, `slurm_local`, and `submitit_local` (which therefore replaces the plugin's option
of that name with this superset: same keys, same defaults, plus the two).
"""
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    LocalLauncher,
    SlurmLauncher,
)

from seqbench.bundles import DEFAULT_GPU_MEMORY_GIB

_HERE = "hydra_plugins.seqbench_sweeper.submitit_launchers"


@dataclass
class SeqbenchSlurmQueueConf(SlurmQueueConf):
    _target_: str = f"{_HERE}.SeqbenchSlurmLauncher"
    runs_per_gpu: int = 1  # runs sharing one array task and its GPU (1: a GPU per run)
    gpu_memory_gib: float = DEFAULT_GPU_MEMORY_GIB  # what a bundle may use of that GPU


@dataclass
class SeqbenchLocalQueueConf(LocalQueueConf):
    _target_: str = f"{_HERE}.SeqbenchLocalLauncher"
    runs_per_gpu: int = 1
    gpu_memory_gib: float = DEFAULT_GPU_MEMORY_GIB


class _Bundling:
    """Keeps the two keys off submitit's parameters (it refuses unknown ones)."""

    def __init__(self, runs_per_gpu=1, gpu_memory_gib=DEFAULT_GPU_MEMORY_GIB, **params):
        super().__init__(**params)
        self.runs_per_gpu, self.gpu_memory_gib = runs_per_gpu, gpu_memory_gib


class SeqbenchSlurmLauncher(_Bundling, SlurmLauncher):
    pass


class SeqbenchLocalLauncher(_Bundling, LocalLauncher):
    pass


ConfigStore.instance().store(group="hydra/launcher", name="seqbench_submitit_slurm",
                             node=SeqbenchSlurmQueueConf, provider="seqbench")
ConfigStore.instance().store(group="hydra/launcher", name="seqbench_submitit_local",
                             node=SeqbenchLocalQueueConf, provider="seqbench")
