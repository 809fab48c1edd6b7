# shellcheck shell=sh
# Source me (do not run me): sets SLURM_CONF to the test cluster of scripts/slurm/up.sh,
# so that sinfo, squeue, sacct, scancel and `seqbench sweep ... hydra/launcher=slurm_local`
# talk to it:   source scripts/slurm/env.sh
export SLURM_CONF="${SEQBENCH_SLURM_DIR:-/tmp/seqbench-slurm}/etc/slurm.conf"
if [ ! -r "$SLURM_CONF" ]; then
  echo "env.sh: $SLURM_CONF does not exist yet; start the cluster: scripts/slurm/up.sh" >&2
fi
