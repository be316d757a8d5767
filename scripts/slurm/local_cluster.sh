#!/bin/bash
# A one-machine Slurm cluster (munged + slurmctld + slurmd, as root) whose whole state lives in one folder: to try
# scripts/slurm/*.sbatch before a real cluster, and for the tests (tests/test_slurm.py).
#   scripts/slurm/local_cluster.sh start [DIR]    # DIR (default .cache/slurm): slurm.conf, munge key and socket,
#                                                 # state, spool, logs; prints the SLURM_CONF to export
#   export SLURM_CONF=DIR/slurm.conf; sbatch ...; squeue; sinfo; scontrol show job J
#   scripts/slurm/local_cluster.sh stop [DIR]     # cancels its jobs, stops the daemons
#   scripts/slurm/local_cluster.sh status [DIR]   # "up" (exit 0) or "down" (exit 1)
# Needs root and Debian's slurmctld, slurmd, slurm-client and munge packages (`make test` installs them as root:
# apt-get install slurmctld slurmd slurm-client munge). One node named after this host, with all its CPUs, one
# partition `debug`, no time limit, requeue allowed; ports chosen free at start. Nothing system-wide is used
# (no /etc/slurm, no /etc/munge, no systemd), so it can run beside another cluster.
set -euo pipefail
CMD=${1:-}
DIR=$(mkdir -p "${2:-.cache/slurm}" && cd "${2:-.cache/slurm}" && pwd)
CONF=$DIR/slurm.conf
export SLURM_CONF=$CONF

die() { echo "local_cluster: $*" >&2; exit 1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
up() { alive "$DIR/slurmctld.pid" && alive "$DIR/slurmd.pid" && sinfo -h -o %t 2>/dev/null | grep -qE 'idle|alloc|mix'; }
free_port() {  # a port nobody listens on, in 16000-17999 (after the check a race is possible but unlikely)
  local p
  for _ in $(seq 50); do
    p=$((16000 + RANDOM % 2000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null \
      || { echo "$p"; return; }
  done
  die "no free port pair in 16000-17999"
}
stop_pid() {  # SIGTERM, then SIGKILL after 10 s
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (slurmd starts jobs as their users)"
  for b in munged slurmctld slurmd sbatch; do
    command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] \
      || die "$b not found: apt-get install slurmctld slurmd slurm-client munge"
  done
  if up; then echo "export SLURM_CONF=$CONF  # already running"; return; fi
  stop 2>/dev/null || true
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge" "$DIR/log"
  chmod 700 "$DIR/munge"
  local host cp
  host=$(hostname -s)
  cp=$(free_port)
  cat >"$CONF" <<CONF
ClusterName=kamado-local
SlurmctldHost=$host
SlurmctldPort=$cp
SlurmdPort=$((cp + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
KillWait=60
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
NodeName=$host CPUs=$(nproc) RealMemory=$(($(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) / 2)) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  [ -f "$DIR/munge/munge.key" ] || { dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge/munge.key" 2>/dev/null; }
  chmod 400 "$DIR/munge/munge.key"
  /usr/sbin/munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
    || die "munged did not start: $(tail -n 1 "$DIR/log/munged.log" 2>/dev/null)"
  setsid /usr/sbin/slurmctld -D -f "$CONF" >"$DIR/log/slurmctld.out" 2>&1 </dev/null &
  for _ in $(seq 50); do [ -f "$DIR/slurmctld.pid" ] && break; sleep 0.2; done
  setsid /usr/sbin/slurmd -D -f "$CONF" >"$DIR/log/slurmd.out" 2>&1 </dev/null &
  for _ in $(seq 60); do up && break; sleep 0.5; done
  if ! up; then
    local why
    why=$(tail -n 2 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" 2>/dev/null | tr '\n' ' ')
    stop >/dev/null 2>&1 || true
    die "the cluster did not come up: $why"
  fi
  echo "export SLURM_CONF=$CONF"
}

stop() {
  if alive "$DIR/slurmctld.pid"; then
    scancel --full --quiet --partition debug 2>/dev/null || true
    for _ in $(seq 60); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  stop_pid "$DIR/slurmd.pid"
  stop_pid "$DIR/slurmctld.pid"
  stop_pid "$DIR/munge/munged.pid"
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  status) if up; then echo up; else echo down; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac
