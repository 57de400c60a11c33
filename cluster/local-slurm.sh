#!/usr/bin/env bash
# A one-node SLURM on this machine (Debian's slurm 22.05 and munge), for the cluster test and CI.
#
#   cluster/local-slurm.sh install   # apt packages (root)
#   cluster/local-slurm.sh start     # munge, slurmctld, slurmd; waits until the node is idle
#   cluster/local-slurm.sh stop      # stops the three daemons by PID, removes its slurm.conf
#   cluster/local-slurm.sh status
#
# Everything listens on 127.0.0.1. The config must live at /etc/slurm/slurm.conf: the
# Snakemake SLURM plugin drops SLURM_* variables inside jobs, so SLURM_CONF alone fails.
set -euo pipefail

RUN=/run/anodect-slurm
CONF=/etc/slurm/slurm.conf
# First line of the conf this script writes: only such a conf is overwritten or removed.
MARK="# written by anodect cluster/local-slurm.sh"

ours() {
  [ "$(head -n1 "$CONF")" = "$MARK" ] || grep -qx "ClusterName=anodect" "$CONF"
}

install_packages() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
  fi
}

write_conf() {
  local host cpus mem
  host=$(hostname -s)
  cpus=$(nproc)
  # A little under the machine's memory, so slurmd accepts the node.
  mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 90 / 100 ))
  if [ -e "$CONF" ] && ! ours; then
    echo "$CONF exists and is not ours: this machine has a SLURM of its own, use it (profiles/slurm)" >&2
    return 1
  fi
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm "$RUN"
  cat > "$CONF" <<CONF
${MARK}
ClusterName=anodect
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MailProg=/bin/true
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MinJobAge=300
SchedulerType=sched/backfill
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=main Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
  install_packages
  write_conf
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  install -d -o munge -g munge /run/munge
  if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- munged
  fi
  cp /run/munge/munged.pid "$RUN/munged.pid"
  slurmctld -i
  slurmd
  for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^idle'; then
      sinfo
      return 0
    fi
    sleep 1
  done
  echo "local SLURM did not come up; see /var/log/slurm/" >&2
  tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  return 1
}

stop() {
  for name in slurmd slurmctld munged; do
    pidfile="$RUN/$name.pid"
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$pidfile"
  done
  # A conf left behind without its controller makes every SLURM client (and the Snakemake
  # plugin's probe at each start of snakemake) wait about 9 s for an answer that never comes.
  if [ -e "$CONF" ] && ours; then
    rm -f "$CONF"
  fi
}

case "${1:-}" in
  install) install_packages ;;
  start) start ;;
  stop) stop ;;
  status) sinfo && squeue ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
