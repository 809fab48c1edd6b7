#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the `slurm` tests and for trying
# `seqbench sweep ... hydra/launcher=slurm_local` before using a real cluster.
#
#   sudo scripts/slurm/up.sh          # install (first time), configure, start: ~10 s
#                                     # (25-30 s the first time, with apt-get)
#   source scripts/slurm/env.sh       # sets SLURM_CONF for sinfo, sbatch, seqbench
#   scripts/slurm/down.sh             # stop exactly the daemons started here
#
# Debian/Ubuntu, as root, without systemd: the packages' own services are never used.
# Every daemon (MariaDB, munged, slurmdbd, slurmctld, slurmd) runs in the foreground,
# backgrounded by this script, with its configuration, sockets, logs, spool and PID under
# one state directory, ${SEQBENCH_SLURM_DIR:-/tmp/seqbench-slurm}; nothing is written to
# /etc (the packages' installation itself writes their default files there). Running it
# again while the cluster is up only says so; a daemon that has died is started again.
#
# Why accounting (slurmdbd + MariaDB) and not a lighter set-up: submitit follows its jobs
# with `sacct`; without accounting a job that dies without writing a result is never
# seen to end and the sweep waits forever.
#
# Environment: SEQBENCH_SLURM_DIR (state directory), SEQBENCH_SLURM_CLUSTER (cluster
# name, default seqbench), SEQBENCH_SLURM_PORTS (four free TCP ports for slurmctld,
# slurmd, slurmdbd and MariaDB on 127.0.0.1; default "6817 6818 6819 6820"),
# SEQBENCH_SLURM_TIMEOUT (seconds to wait for each daemon, default 60).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/slurm/common.sh
. "$HERE/common.sh"

CLUSTER=${SEQBENCH_SLURM_CLUSTER:-seqbench}
read -r CTLD_PORT SLURMD_PORT DBD_PORT DB_PORT <<<"${SEQBENCH_SLURM_PORTS:-6817 6818 6819 6820}"
TIMEOUT=${SEQBENCH_SLURM_TIMEOUT:-60}
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
export SLURM_CONF=$ETC/slurm.conf

say() { echo "slurm-up: $*"; }
die() { echo "slurm-up: error: $*" >&2; exit 1; }

# ---- packages -----------------------------------------------------------------------
install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  ((EUID == 0)) || die "packages missing (${missing[*]}); run this script as root"
  command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get"
  say "installing ${missing[*]} (apt-get, about 20 s)"
  # The packages would start their own services through invoke-rc.d; a policy-rc.d that
  # denies it keeps them stopped (Docker images ship one; otherwise it lives only
  # for the duration of the installation).
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  local log=/tmp/seqbench-slurm-apt.log rc=0
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1 || {
    apt-get update -q >>"$log" 2>&1 &&
      apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1
  } || rc=$?
  ((made_policy)) && rm -f "$policy"
  ((rc == 0)) || { tail -20 "$log" >&2; die "apt-get install failed (log: $log)"; }
}

# ---- configuration ------------------------------------------------------------------
write_config() {
  mkdir -p "$ETC" "$RUN" "$PIDS" "$LOGS" "$SLURM_DIR/spool/slurmctld" \
    "$SLURM_DIR/spool/slurmd" "$SLURM_DIR/mysql"
  # readable by every user (slurm.conf, the munge socket); the secrets are 0600
  chmod 755 "$SLURM_DIR" "$ETC" "$RUN"
  chmod 700 "$SLURM_DIR/mysql"
  local host cpus mem node
  host=$(hostname -s)
  # The node as slurmd itself measures it (CPUs, sockets, cores, threads, memory), so
  # that slurmctld never drains it for having less than configured. Memory is not a
  # consumable resource here (CR_Core), so RealMemory only bounds --mem requests.
  node=$(slurmd -C 2>/dev/null | head -1) || node=
  cpus=$(nproc)
  mem=$(free -m | awk '/^Mem:/ {print $2}')
  if [[ $node != NodeName=* ]]; then
    node="NodeName=$host CPUs=$cpus RealMemory=$mem"
  fi
  node=${node/NodeName=* CPUs/NodeName=$host NodeAddr=127.0.0.1 CPUs}
  cat >"$ETC/slurm.conf" <<EOF
# Written by scripts/slurm/up.sh: a one-node test cluster. Rewritten on every start
# from a stopped state; slurmd must be restarted after a change here.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# the munge socket of this cluster; cred_expire is also how long a requeued job waits
# before it may start again (default 120 s)
AuthInfo=socket=$RUN/munge.socket,cred_expire=10
# for slurmdbd connections, the munge socket is named here
AccountingStoragePass=$RUN/munge.socket
StateSaveLocation=$SLURM_DIR/spool/slurmctld
SlurmdSpoolDir=$SLURM_DIR/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups (containers often have none to give): processes tracked through /proc
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
# accounting through slurmdbd: sacct is how submitit sees a job end
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
JobCompType=jobcomp/none
# one job per core, so several 1-CPU runs share the node. A job whose start time has come
# (a requeued one) waits for the next scheduling pass: every 2 s here, not 30-60 s
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# batch jobs can be requeued (scontrol requeue, submitit on pre-emption). KillWait: seconds
# from SIGTERM to SIGKILL; a run checkpoints within a step, but a Python process with torch
# loaded took up to ~4 s more to exit on a busy 2-core machine (measured)
JobRequeue=1
KillWait=10
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
MinJobAge=300
$node State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  [[ -s $ETC/db.password ]] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' \
    >"$ETC/db.password")
  (umask 077 && cat >"$ETC/slurmdbd.conf" <<EOF
# Written by scripts/slurm/up.sh (slurmdbd reads it beside \$SLURM_CONF).
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$RUN/munge.socket
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(<"$ETC/db.password")
StorageLoc=slurm_acct_db
EOF
  )
  if [[ ! -s $ETC/munge.key ]]; then
    mungekey --create --keyfile="$ETC/munge.key" 2>/dev/null ||
      (umask 077 && head -c 1024 /dev/urandom >"$ETC/munge.key")
  fi
  chmod 600 "$ETC/munge.key"
}

# ---- starting and waiting -----------------------------------------------------------
# start NAME ARGS...: run the daemon in the foreground, in its own session (so a Ctrl-C
# in this shell or the end of a CI step does not reach it), output appended to its log.
start() {
  local name=$1
  shift
  setsid "$@" </dev/null >>"$LOGS/$name.out" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}

# wait_for NAME LOG DESCRIPTION COMMAND...: poll COMMAND until it succeeds; fail naming
# the log to read when the daemon exits or TIMEOUT seconds pass.
wait_for() {
  local name=$1 log=$2 what=$3 t0=$SECONDS
  shift 3
  until "$@" >/dev/null 2>&1; do
    # just after `start`, the pid may still be setsid before its exec: alive, but not yet
    # the daemon (live_pid says no). Only a pid that is gone has exited.
    if ! live_pid "$name" >/dev/null && ! kill -0 "$(<"$PIDS/$name.pid")" 2>/dev/null; then
      tail -n 15 "$log" "$LOGS/$name.out" >&2 2>/dev/null || true
      die "$name exited before $what; read $log (and $LOGS/$name.out)"
    fi
    ((SECONDS - t0 < TIMEOUT)) ||
      die "$name: no $what after $TIMEOUT s; read $log (and $LOGS/$name.out)"
    sleep 0.5
  done
}

db() { mariadb --no-defaults --socket="$RUN/mysqld.sock" -u root "$@"; }

start_mariadb() {
  if [[ ! -d $SLURM_DIR/mysql/mysql ]]; then
    mariadb-install-db --no-defaults --datadir="$SLURM_DIR/mysql" --user=root \
      --auth-root-authentication-method=socket --skip-test-db \
      >"$LOGS/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed; read $LOGS/mariadb-install.log"
  fi
  start mariadb /usr/sbin/mariadbd --no-defaults --user=root \
    --datadir="$SLURM_DIR/mysql" --socket="$RUN/mysqld.sock" --pid-file="$RUN/mysqld.pid" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
    --log-error="$LOGS/mariadb.log" --innodb-buffer-pool-size=128M \
    --innodb-lock-wait-timeout=900
  wait_for mariadb "$LOGS/mariadb.log" "connection" db -e "SELECT 1"
  local pass
  pass=$(<"$ETC/db.password")
  db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
         ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

munge_ok() { munge -n -S "$RUN/munge.socket" | unmunge -S "$RUN/munge.socket"; }

start_munged() {
  start munged /usr/sbin/munged --foreground --force --socket="$RUN/munge.socket" \
    --key-file="$ETC/munge.key" --pid-file="$RUN/munged.pid" \
    --seed-file="$RUN/munged.seed" --log-file="$LOGS/munged.log"
  wait_for munged "$LOGS/munged.log" "credential round trip" munge_ok
}

start_slurmdbd() {
  start slurmdbd /usr/sbin/slurmdbd -D
  wait_for slurmdbd "$LOGS/slurmdbd.log" "answer to sacctmgr" sacctmgr -n show cluster
  if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
}

start_slurmctld() {
  start slurmctld /usr/sbin/slurmctld -D -f "$SLURM_CONF"
  wait_for slurmctld "$LOGS/slurmctld.log" "answer to scontrol ping" \
    bash -c 'scontrol ping | grep -q UP'
}

node_idle() { sinfo -h -N -o '%t' | grep -Eq '^(idle|mix|alloc)'; }

# The node is idle as registered by the slurmd started now (slurmctld may still list it
# idle from an earlier slurmd that has since died).
node_registered() {
  local t
  t=$(scontrol show node -o | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)
  [[ -n $t && ! $t < $SLURMD_STARTED ]] && node_idle
}

start_slurmd() {
  SLURMD_STARTED=$(date +%Y-%m-%dT%H:%M:%S)
  start slurmd /usr/sbin/slurmd -D -f "$SLURM_CONF"
  wait_for slurmd "$LOGS/slurmd.log" "idle node in sinfo" node_registered
}

# ---- main ---------------------------------------------------------------------------
main() {
  install_packages
  ((EUID == 0)) || die "the daemons run as root here; run this script as root"
  local running=() stopped=() d
  for d in "${DAEMONS[@]}"; do
    if live_pid "$d" >/dev/null; then running+=("$d"); else stopped+=("$d"); fi
  done
  if ((${#stopped[@]} == 0)); then
    say "already up (state in $SLURM_DIR)"
  else
    if ((${#running[@]} == 0)); then
      write_config
    else
      say "running: ${running[*]}; starting again: ${stopped[*]}"
    fi
    local t0=$SECONDS
    for d in "${stopped[@]}"; do
      "start_$d"
    done
    say "up in $((SECONDS - t0)) s (state, logs and config in $SLURM_DIR)"
  fi
  node_idle || die "node not idle: $(sinfo -h -N -o '%N %t %E'); read $LOGS/slurmd.log"
  sinfo
  echo "export SLURM_CONF=$SLURM_CONF"
}

main "$@"
