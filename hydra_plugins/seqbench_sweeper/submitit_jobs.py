"""hydra-submitit-launcher's launch, waiting for every job and returning per-job failures.

Its own `launch` ends with `[j.results()[0] for j in jobs]`: the first job that ended
without a result (scancel, killed, node failure) raises out of it while the later jobs
are still running, and the sweep dies without its counts or report. This follows
hydra-submitit-launcher 1.2's `launch` step by step (one job array for the batch, the
same parameters and per-job arguments; pinned <1.3 in pyproject.toml because it reads the
launcher's attributes) and differs only in collecting each job's result on its own: a
job with none becomes a failed JobReturn, which the sweeper then reads from the run's
summary.json (`interrupted`, `error`, or `running` if it was killed without warning).
`launch_bundles` does the same with one array task per bundle of runs
(`hydra.launcher.runs_per_gpu`, seqbench/bundles.py).
"""
import logging
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def _executor(launcher):
    """The submitit executor hydra-submitit-launcher 1.2's `launch` builds."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = launcher.params
    init_params = {"folder": params["submitit_folder"]}
    specific_init_keys = {"max_num_timeout"}
    init_params.update(**{f"{launcher._EXECUTOR}_{x}": y for x, y in params.items()
                          if x in specific_init_keys})
    init_keys = specific_init_keys | {"submitit_folder"}
    executor = submitit.AutoExecutor(cluster=launcher._EXECUTOR, **init_params)
    baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{
        x if x in baseparams else f"{launcher._EXECUTOR}_{x}": y
        for x, y in params.items() if x not in init_keys})
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    return executor


def launch_all(launcher, job_overrides, initial_job_idx):
    executor = _executor(launcher)
    job_params = []
    for idx, overrides in enumerate(job_overrides):
        idx = initial_job_idx + idx
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                           Singleton.get_state()))
    jobs = executor.map_array(launcher, *zip(*job_params))
    returns = []
    for job, overrides in zip(jobs, job_overrides):
        try:
            returns.append(job.results()[0])
        except Exception as e:  # no result: cancelled, killed, node failure
            ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
            ret.return_value = e
            returns.append(ret)
    return returns


def launch_bundles(launcher, bundles, initial_job_idx):
    """One array task per bundle (a list of job overrides) running its jobs side by side
    (seqbench.bundles.BundleTask); one JobReturn per job, in order. A task without a
    result (cancelled, killed) gives each of its jobs a failed JobReturn, as above."""
    from seqbench.bundles import BundleTask

    executor = _executor(launcher)
    members, idx = [], initial_job_idx
    for bundle in bundles:
        members.append([(list(overrides), idx + i) for i, overrides in enumerate(bundle)])
        for i, overrides in enumerate(bundle):
            log.info(f"\t#{idx + i} : {' '.join(filter_overrides(overrides))}")
        idx += len(bundle)
    state = Singleton.get_state()
    jobs = executor.map_array(BundleTask(launcher), members, [state] * len(members))
    returns = []
    for job, bundle in zip(jobs, bundles):
        try:
            results = job.results()[0]
        except Exception as e:  # no result: cancelled, killed, node failure
            results = [e] * len(bundle)
        for overrides, result in zip(bundle, results):
            ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
            if isinstance(result, BaseException):
                ret.return_value = result
            elif result.get("error"):
                ret.return_value = RuntimeError(result["error"])
            else:
                ret.status = JobStatus.COMPLETED
            returns.append(ret)
    return returns
