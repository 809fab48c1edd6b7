#!/usr/bin/env bash
# Which daemons of the test cluster (scripts/slurm/up.sh) run, with their PIDs and logs;
# then sinfo and squeue. Exit status 0 when all five run, 1 otherwise.
#   scripts/slurm/status.sh [--quiet]
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/slurm/common.sh
. "$HERE/common.sh"
export SLURM_CONF=$ETC/slurm.conf
quiet=0
[[ ${1:-} == --quiet ]] && quiet=1
up=0
for d in "${DAEMONS[@]}"; do
  if pid=$(live_pid "$d"); then
    up=$((up + 1))
    ((quiet)) || printf '%-10s running (pid %s)  log: %s\n' "$d" "$pid" "$LOGS/$d.log"
  else
    ((quiet)) || printf '%-10s stopped             log: %s\n' "$d" "$LOGS/$d.log"
  fi
done
if ((!quiet)) && ((up == ${#DAEMONS[@]})); then
  echo "export SLURM_CONF=$SLURM_CONF"
  sinfo
  squeue
fi
((up == ${#DAEMONS[@]}))
