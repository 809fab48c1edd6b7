#!/usr/bin/env bash
# Stop the single-node test cluster that scripts/slurm/up.sh started: exactly the
# daemons whose PIDs up.sh recorded (each checked to still be that daemon of this state
# directory), in reverse start order. Jobs still in the queue are cancelled first, so
# that no job process outlives its slurmd. Safe to run when nothing runs.
#
#   scripts/slurm/down.sh            # stop; config, logs and accounting database stay
#   scripts/slurm/down.sh --purge    # stop and delete the state directory
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/slurm/common.sh
. "$HERE/common.sh"
export SLURM_CONF=$ETC/slurm.conf
WAIT=${SEQBENCH_SLURM_STOP_WAIT:-20}   # seconds a daemon gets between SIGTERM and SIGKILL

say() { echo "slurm-down: $*"; }

purge=0
case ${1:-} in
  --purge) purge=1 ;;
  "") ;;
  *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac

# Cancel this cluster's jobs while slurmctld and slurmd still run, and give them KillWait
# (+ a margin) to end.
if live_pid slurmctld >/dev/null && live_pid slurmd >/dev/null; then
  ids=$(squeue -h -o %A 2>/dev/null) || ids=
  if [[ -n $ids ]]; then
    say "cancelling $(wc -w <<<"$ids") job(s)"
    # shellcheck disable=SC2086
    scancel $ids 2>/dev/null || true
    for _ in $(seq 1 60); do
      [[ -z $(squeue -h -o %A -t R,CG 2>/dev/null) ]] && break
      sleep 0.5
    done
  fi
fi

stopped=()
for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
  name=${DAEMONS[i]}
  if pid=$(live_pid "$name"); then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((WAIT * 5))); do
      [[ -e /proc/$pid ]] || break
      # a zombie child of an exited up.sh shell is gone for every purpose
      [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
      sleep 0.2
    done
    if live_pid "$name" >/dev/null; then
      say "$name (pid $pid) ignored SIGTERM for $WAIT s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    stopped+=("$name")
  fi
  rm -f "$PIDS/$name.pid"
done

if ((${#stopped[@]})); then
  say "stopped ${stopped[*]}"
else
  say "nothing was running (state in $SLURM_DIR)"
fi
if ((purge)); then
  rm -rf "$SLURM_DIR"
  say "removed $SLURM_DIR"
fi
