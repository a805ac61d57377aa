#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (munged, slurmctld, slurmd), for testing the
# SLURM profile: one node with this machine's CPUs and memory, one default partition, and
# placeholder GPUs (GRES backed by plain files) that the scheduler hands out like real ones.
#
#   slurm/start.sh [STATE_DIR]        # default: $CMGEMS_SLURM_DIR or ${TMPDIR:-/tmp}/cmgems-slurm
#   export SLURM_CONF=STATE_DIR/slurm.conf   (or: . STATE_DIR/env.sh)
#   slurm/stop.sh [STATE_DIR]
#
# Needs root. Installs the Debian packages (slurmctld slurmd slurm-client munge) when the binaries
# are missing and apt-get is there. Everything else (config, keys, sockets, spool, logs, PIDs) lives
# in STATE_DIR (but for a link at the default config path, see below), so the system's own munge is
# left alone. Idempotent: when the cluster of STATE_DIR is already up it prints its settings and exits. Settings (environment):
#   CMGEMS_SLURM_GPUS=2           placeholder GPUs on the node (0: none)
#   CMGEMS_SLURM_PARTITION=local  the partition's name
#   CMGEMS_SLURM_PORT=6817        slurmctld's port (slurmd uses the next one)
#   CMGEMS_SLURM_SYSCONF=/etc/slurm/slurm.conf   linked to STATE_DIR/slurm.conf (see below); the
#                                 start refuses to run where another config is there
# On success prints `SLURM_CONF=...` as its last line.
set -euo pipefail

STARTED=0  # once daemons may be running, a failure stops them again (keeping the logs)
die() {
    echo "slurm/start.sh: error: $*" >&2
    [ "$STARTED" -eq 0 ] || "$(dirname "$0")/stop.sh" --keep "$STATE" >/dev/null 2>&1 || true
    exit 1
}
say() { echo "slurm/start.sh: $*" >&2; }

STATE=${1:-${CMGEMS_SLURM_DIR:-${TMPDIR:-/tmp}/cmgems-slurm}}
GPUS=${CMGEMS_SLURM_GPUS:-2}
PARTITION=${CMGEMS_SLURM_PARTITION:-local}
PORT=${CMGEMS_SLURM_PORT:-6817}
SYSCONF=${CMGEMS_SLURM_SYSCONF:-/etc/slurm/slurm.conf}

[ "$(id -u)" -eq 0 ] || die "must run as root (slurmd starts jobs as their users; munged and the daemons need root here)"

# ------------------------------------------------------------------------------ packages
missing() { for b in munged slurmctld slurmd sbatch squeue scontrol; do command -v "$b" >/dev/null || return 0; done; return 1; }
export PATH="$PATH:/usr/sbin:/sbin"
if missing; then
    command -v apt-get >/dev/null || die "SLURM binaries (slurmctld, slurmd, sbatch, munged) missing and no apt-get to install them"
    say "installing slurmctld slurmd slurm-client munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2 \
        || die "apt-get install of slurmctld slurmd slurm-client munge failed"
    missing && die "SLURM binaries still missing after apt-get install"
fi

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd -P)
CONF=$STATE/slurm.conf
export SLURM_CONF=$CONF

alive() {  # alive NAME: the PID in $STATE/NAME.pid is a running NAME process
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

node_ready() { [ -n "$(sinfo -h -N -o '%T' 2>/dev/null | grep -E '^(idle|mixed|allocated)' || true)" ]; }

if alive munged && alive slurmctld && alive slurmd && node_ready; then
    say "already running in $STATE"
    echo "SLURM_CONF=$CONF"
    exit 0
fi
# Anything half-started from an earlier attempt goes first.
"$(dirname "$0")/stop.sh" --keep "$STATE" >/dev/null 2>&1 || true

for port in "$PORT" "$((PORT + 1))"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use (another SLURM cluster? stop it with slurm/stop.sh ITS_STATE_DIR, or set CMGEMS_SLURM_PORT)"
    fi
done

# ------------------------------------------------------------------------------ munge
mkdir -p "$STATE/munge" && chmod 0700 "$STATE/munge"
if [ ! -s "$STATE/munge/munge.key" ]; then
    dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1 count=1024 status=none
fi
chmod 0600 "$STATE/munge/munge.key"
SOCKET=$STATE/munge/munge.socket
rm -f "$SOCKET" "$SOCKET.lock"
STARTED=1
munged --force --socket="$SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/munged.pid" --log-file="$STATE/munged.log" \
    --seed-file="$STATE/munge/munged.seed" 2>>"$STATE/munged.log" \
    || die "munged did not start (see $STATE/munged.log)"
munge -n -S "$SOCKET" | unmunge -S "$SOCKET" >/dev/null || die "munge does not work (see $STATE/munged.log)"

# ------------------------------------------------------------------------------ config
NODE=$(hostname -s)
read -r CPUS BOARDS SOCKETS CORES THREADS MEM < <(slurmd -C | awk '
    /^NodeName/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { print v["CPUs"], v["Boards"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"] }')
[ -n "$MEM" ] || die "could not read the node's CPUs and memory from 'slurmd -C'"
GRES_NODE=""
mkdir -p "$STATE/spool/ctld" "$STATE/spool/d" "$STATE/gpu"
if [ "$GPUS" -gt 0 ]; then
    : >"$STATE/gres.conf"
    for ((i = 0; i < GPUS; i++)); do
        : >"$STATE/gpu/placeholder$i"
        echo "NodeName=$NODE Name=gpu File=$STATE/gpu/placeholder$i" >>"$STATE/gres.conf"
    done
    GRES_NODE="Gres=gpu:$GPUS"
else
    : >"$STATE/gres.conf"
fi
cat >"$CONF" <<EOF
# Written by slurm/start.sh: a single-node test cluster; see that script.
ClusterName=cmgems
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
ReturnToService=2
# squeue-based status checks need finished jobs kept for a while (the plugin wants >= 3x its
# interval); 30 min also keeps them for 'scontrol show job' after a test run.
MinJobAge=1800
KillWait=5
InactiveLimit=0
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEM $GRES_NODE State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
echo "export SLURM_CONF=$CONF" >"$STATE/env.sh"
# The default config path must lead here too: inside a job, snakemake-executor-plugin-slurm-jobstep
# removes every SLURM_* variable but the job's ids (SLURM_CONF included) before its `srun`, which then
# reads the default path. A link there that is not ours (a real cluster's config) is left alone.
if [ -L "$SYSCONF" ] && { [ ! -e "$SYSCONF" ] || grep -qs '^# Written by slurm/start.sh' "$SYSCONF"; }; then
    rm -f "$SYSCONF"  # a link of ours (this or an earlier state dir), or a dangling one
fi
if [ -e "$SYSCONF" ] || [ -L "$SYSCONF" ]; then
    [ "$(readlink -f "$SYSCONF")" = "$CONF" ] \
        || die "$SYSCONF exists and is not this test cluster's; jobs submitted by the Snakemake plugin would use it (set CMGEMS_SLURM_SYSCONF to your SLURM build's default config path if it differs)"
else
    mkdir -p "$(dirname "$SYSCONF")"
    ln -s "$CONF" "$SYSCONF"
fi

# ------------------------------------------------------------------------------ daemons
slurmctld -c -f "$CONF" || die "slurmctld did not start (see $STATE/slurmctld.log)"
slurmd -c -f "$CONF" -N "$NODE" || die "slurmd did not start (see $STATE/slurmd.log)"
for _ in $(seq 1 60); do
    if node_ready; then
        say "cluster up: node $NODE ($CPUS CPUs, $MEM MB, $GPUS placeholder GPUs), partition $PARTITION, state in $STATE"
        echo "SLURM_CONF=$CONF"
        exit 0
    fi
    alive slurmctld || die "slurmctld exited: $(tail -n 5 "$STATE/slurmctld.log" 2>/dev/null)"
    alive slurmd || die "slurmd exited: $(tail -n 5 "$STATE/slurmd.log" 2>/dev/null)"
    sleep 0.5
done
die "the node did not come up within 30 s: $(sinfo -N 2>&1 | tail -n 3); logs in $STATE"
