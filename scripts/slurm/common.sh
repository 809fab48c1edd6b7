# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the scripts
# Shared by up.sh, down.sh and status.sh (sourced, not run): where the single-node test
# cluster keeps its state, which daemons it runs, and how to tell that a recorded PID is
# still the daemon this cluster started (a PID can be reused by any program later).

SLURM_DIR=${SEQBENCH_SLURM_DIR:-/tmp/seqbench-slurm}
ETC=$SLURM_DIR/etc          # slurm.conf, slurmdbd.conf, munge.key, database password
RUN=$SLURM_DIR/run          # sockets and the daemons' own PID files
PIDS=$SLURM_DIR/pids        # the PIDs up.sh recorded, one file per daemon
LOGS=$SLURM_DIR/log
# Start order; down.sh stops them in reverse.
DAEMONS=(mariadb munged slurmdbd slurmctld slurmd)

# The program each daemon runs, as /proc/PID/exe names it (Debian's /usr/sbin/slurmctld
# is a link to slurmctld-wlm).
daemon_exe() {
  case $1 in
    mariadb) readlink -f /usr/sbin/mariadbd ;;
    *) readlink -f "/usr/sbin/$1" ;;
  esac
}

# Print the recorded PID of daemon $1 when that process is alive, runs the daemon's
# program, and belongs to this state directory (its command line or its SLURM_CONF
# names $SLURM_DIR); print nothing and fail otherwise.
live_pid() {
  local name=$1 pid exe
  [[ -r $PIDS/$name.pid ]] || return 1
  pid=$(<"$PIDS/$name.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == "$(daemon_exe "$name")" ]] || return 1
  if ! tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$SLURM_DIR" &&
     ! tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$ETC/slurm.conf"
  then
    return 1
  fi
  echo "$pid"
}
