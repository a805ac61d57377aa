#!/usr/bin/env bash
# Start a SLURM cluster on this machine (munged, slurmctld, one slurmd per compute node), for testing
# the SLURM profile: by default one node with this machine's CPUs and memory, one default partition,
# and placeholder GPUs (GRES backed by plain files) that the scheduler hands out like real ones.
#
# With CMGEMS_SLURM_NODES=N > 1, N compute nodes cmgems-n1..N, each slurmd in its own network, UTS
# and mount namespace: its own host name, its own address on a private link and an /etc/hosts of
# the cluster's names bind-mounted over the system's (in its mount namespace only). The link: a
# bridge in a namespace of its own (cmgems-net, so the host's firewall never sees bridged traffic),
# one veth from each node to it, and one from the root namespace, which holds the controller's
# address (munged and slurmctld run there as with one node; munge goes through its socket file).
# Nothing is routed beyond that link and loopback. The nodes share this machine's cores; each is
# declared with 1/N of its memory. Jobs on any node see the same file systems.
#
#   slurm/start.sh [STATE_DIR]        # default: $CMGEMS_SLURM_DIR or ${TMPDIR:-/tmp}/cmgems-slurm
#   export SLURM_CONF=STATE_DIR/slurm.conf   (or: . STATE_DIR/env.sh)
#   slurm/stop.sh [STATE_DIR]
#
# Needs root. Installs the Debian packages (slurmctld slurmd slurm-client munge; iproute2 and
# util-linux for several nodes) when the binaries are missing and apt-get is there. Everything else (config, keys, sockets, spool, logs, PIDs) lives
# in STATE_DIR (but for a link at the default config path, see below), so the system's own munge is
# left alone. Idempotent: when the cluster of STATE_DIR is already up it prints its settings and exits. Settings (environment):
#   CMGEMS_SLURM_NODES=1          compute nodes (> 1: in namespaces, as above)
#   CMGEMS_SLURM_CPUS=            CPUs declared per node (default: this machine's; more than it has
#                                 oversubscribes its cores, e.g. to run two multi-node jobs at once)
#   CMGEMS_SLURM_NET=10.201.0     the nodes' /24 (N > 1): the controller .1, node i .(10 + i)
#   CMGEMS_SLURM_GPUS=2           placeholder GPUs on the (first) node (0: none)
#   CMGEMS_SLURM_PARTITION=local  the partition's name
#   CMGEMS_SLURM_PORT=6817        slurmctld's port (slurmd uses the next one)
#   CMGEMS_SLURM_SYSCONF=/etc/slurm/slurm.conf   linked to STATE_DIR/slurm.conf (see below); the
#                                 start refuses to run where another config is there
# On success prints `SLURM_CONF=...` as its last line.
set -euo pipefail

STARTED=0  # once daemons or namespaces may exist, a failure removes them again (keeping the logs)
die() {
    echo "slurm/start.sh: error: $*" >&2
    exit 1
}
trap 'rc=$?; [ "$rc" -eq 0 ] || [ "$STARTED" -eq 0 ] || "$(dirname "$0")/stop.sh" --keep "$STATE" >/dev/null 2>&1 || true' EXIT
trap 'echo "slurm/start.sh: error: line $LINENO failed: $BASH_COMMAND" >&2' ERR
say() { echo "slurm/start.sh: $*" >&2; }
# The daemons must not inherit our caller's descriptors: munged would hold them for ever (e.g. the
# lock of `flock LOCK slurm/start.sh`, so that a later `flock LOCK slurm/stop.sh` waits for ever).
for fd in $(ls /proc/$$/fd); do
    case $fd in 0 | 1 | 2 | 255) ;; *) eval "exec $fd>&-" ;; esac
done

STATE=${1:-${CMGEMS_SLURM_DIR:-${TMPDIR:-/tmp}/cmgems-slurm}}
NODES=${CMGEMS_SLURM_NODES:-1}
NET=${CMGEMS_SLURM_NET:-10.201.0}
GPUS=${CMGEMS_SLURM_GPUS:-2}
PARTITION=${CMGEMS_SLURM_PARTITION:-local}
PORT=${CMGEMS_SLURM_PORT:-6817}
SYSCONF=${CMGEMS_SLURM_SYSCONF:-/etc/slurm/slurm.conf}

[[ "$NODES" =~ ^[1-9][0-9]*$ ]] && [ "$NODES" -le 200 ] || die "CMGEMS_SLURM_NODES must be 1..200, not '$NODES'"
[ "$(id -u)" -eq 0 ] || die "must run as root (slurmd starts jobs as their users; munged and the daemons need root here)"

# ------------------------------------------------------------------------------ packages
missing() {
    for b in munged slurmctld slurmd sbatch squeue scontrol; do command -v "$b" >/dev/null || return 0; done
    [ "$NODES" -eq 1 ] || { command -v ip >/dev/null && command -v unshare >/dev/null && command -v nsenter >/dev/null; } || return 0
    return 1
}
export PATH="$PATH:/usr/sbin:/sbin"
if missing; then
    command -v apt-get >/dev/null || die "SLURM binaries (slurmctld, slurmd, sbatch, munged; ip, unshare and nsenter for several nodes) missing and no apt-get to install them"
    PACKAGES="slurmctld slurmd slurm-client munge iproute2 util-linux"
    say "installing $PACKAGES (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $PACKAGES >&2 || die "apt-get install of $PACKAGES failed"
    missing && die "SLURM binaries still missing after apt-get install"
fi

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd -P)
CONF=$STATE/slurm.conf
export SLURM_CONF=$CONF

# The compute nodes: names, and (several nodes) their namespaces and addresses.
if [ "$NODES" -eq 1 ]; then
    NAMES=("$(hostname -s)")
else
    NAMES=()
    for ((i = 1; i <= NODES; i++)); do NAMES+=("cmgems-n$i"); done
fi
addr_of() { echo "$NET.$((10 + $1))"; }  # addr_of I: node I's address (I from 1)

alive() {  # alive NAME: the PID in $STATE/NAME.pid is a running process named like NAME up to its first '-'
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${1%%-*}" ]
}
all_alive() {
    alive munged && alive slurmctld || return 1
    for node in "${NAMES[@]}"; do alive "slurmd-$node" || return 1; done
}
nodes_ready() {  # every node of ours is up, and no other node is declared
    [ "$(sinfo -h -N -o '%N %T' 2>/dev/null | awk '$2 ~ /^(idle|mixed|allocated)$/ { print $1 }' | sort | tr '\n' ' ')" \
        = "$(printf '%s\n' "${NAMES[@]}" | sort | tr '\n' ' ')" ]
}

if all_alive && nodes_ready; then
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

# ------------------------------------------------------------------------------ network (N > 1)
# Namespaces: cmgems-net (the bridge) and cmgems-nI (node I). Their names go to $STATE/netns before
# they exist, so that slurm/stop.sh removes them (and with them every veth and the bridge) even after
# a failed start. The root side of the link, veth cmgems0, goes with its peer in cmgems-net.
CTLD_ADDR=127.0.0.1
if [ "$NODES" -gt 1 ]; then
    CTLD_ADDR=$NET.1
    [[ "$NET" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "CMGEMS_SLURM_NET must be the first three numbers of an IPv4 /24, not '$NET'"
    for ns in cmgems-net "${NAMES[@]}"; do
        [ ! -e "/run/netns/$ns" ] || die "network namespace $ns exists (a cluster not stopped? slurm/stop.sh ITS_STATE_DIR, or: ip netns del $ns)"
    done
    ! ip link show cmgems0 >/dev/null 2>&1 || die "link cmgems0 exists (a cluster not stopped?)"
    printf '%s\n' cmgems-net "${NAMES[@]}" >"$STATE/netns"
    in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
    ip netns add cmgems-net || die "ip netns add failed (no network namespaces here?)"
    in_ns cmgems-net ip link add br0 type bridge
    in_ns cmgems-net ip link set br0 up
    ip link add cmgems0 type veth peer name ctld netns cmgems-net
    ip addr add "$CTLD_ADDR/24" dev cmgems0
    ip link set cmgems0 up
    in_ns cmgems-net ip link set ctld master br0 up
    {
        echo "127.0.0.1 localhost"
        echo "$CTLD_ADDR $(hostname -s)"
        for ((i = 1; i <= NODES; i++)); do echo "$(addr_of "$i") ${NAMES[i - 1]}"; done
    } >"$STATE/hosts"
    for ((i = 1; i <= NODES; i++)); do
        ns=${NAMES[i - 1]}
        ip netns add "$ns"
        in_ns cmgems-net ip link add "n$i" type veth peer name eth0 netns "$ns"
        in_ns cmgems-net ip link set "n$i" master br0 up
        in_ns "$ns" ip addr add "$(addr_of "$i")/24" dev eth0
        in_ns "$ns" ip link set eth0 up
        in_ns "$ns" ip link set lo up
    done
    for ((i = 1; i <= NODES; i++)); do  # the link carries TCP from the root namespace to each node
        python3 - "$(addr_of "$i")" "${NAMES[i - 1]}" <<'PY' || die "no TCP from the controller's address to node $i's"
import socket, subprocess, sys
addr, ns = sys.argv[1:]
server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                           "import socket, sys; s = socket.create_server((sys.argv[1], 0)); print(s.getsockname()[1], flush=True); s.accept()",
                           addr], stdout=subprocess.PIPE, text=True)
port = int(server.stdout.readline())
socket.create_connection((addr, port), timeout=10).close()
server.wait(timeout=10)
PY
    done
fi

# ------------------------------------------------------------------------------ config
read -r CPUS BOARDS SOCKETS CORES THREADS MEM < <(slurmd -C | awk '
    /^NodeName/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { print v["CPUs"], v["Boards"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"] }')
[ -n "$MEM" ] || die "could not read the node's CPUs and memory from 'slurmd -C'"
MEM=$((MEM / NODES))  # the nodes share the machine's memory
TOPOLOGY="CPUs=$CPUS Boards=$BOARDS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS"
OVERRIDES=""
if [ -n "${CMGEMS_SLURM_CPUS:-}" ]; then
    [[ "$CMGEMS_SLURM_CPUS" =~ ^[1-9][0-9]*$ ]] || die "CMGEMS_SLURM_CPUS must be a positive number, not '$CMGEMS_SLURM_CPUS'"
    CPUS=$CMGEMS_SLURM_CPUS
    TOPOLOGY="CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1"
    OVERRIDES="SlurmdParameters=config_overrides"  # nodes are not refused for having fewer cores than declared
fi
mkdir -p "$STATE/spool/ctld" "$STATE/gpu"
for node in "${NAMES[@]}"; do mkdir -p "$STATE/spool/$node"; done
: >"$STATE/gres.conf"
GRES_NODE=""
if [ "$GPUS" -gt 0 ]; then
    for ((i = 0; i < GPUS; i++)); do
        : >"$STATE/gpu/placeholder$i"
        echo "NodeName=${NAMES[0]} Name=gpu File=$STATE/gpu/placeholder$i" >>"$STATE/gres.conf"
    done
    GRES_NODE="Gres=gpu:$GPUS"
fi
NODE_LINES=""
for ((i = 1; i <= NODES; i++)); do
    addr=$CTLD_ADDR gres=""
    [ "$NODES" -eq 1 ] || addr=$(addr_of "$i")
    [ "$i" -gt 1 ] || gres=$GRES_NODE
    NODE_LINES+="NodeName=${NAMES[i - 1]} NodeAddr=$addr $TOPOLOGY RealMemory=$MEM $gres State=UNKNOWN"$'\n'
done
NODE_LIST=$(IFS=,; echo "${NAMES[*]}")
cat >"$CONF" <<CONF
# Written by slurm/start.sh: a test cluster of $NODES node(s) on one machine; see that script.
ClusterName=cmgems
SlurmctldHost=$(hostname -s)($CTLD_ADDR)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
$OVERRIDES
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
$NODE_LINES
PartitionName=$PARTITION Nodes=$NODE_LIST Default=YES MaxTime=INFINITE State=UP
CONF
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
if [ "$NODES" -eq 1 ]; then
    slurmd -c -f "$CONF" -N "${NAMES[0]}" || die "slurmd did not start (see $STATE/slurmd-${NAMES[0]}.log)"
else
    # each slurmd (and so every job step on its node) in its node's network namespace, with its own
    # host name and the cluster's /etc/hosts, which only this mount namespace sees (nsenter, not
    # `ip netns exec`: that mounts a new /sys, without the cgroup file system slurmd needs)
    for node in "${NAMES[@]}"; do
        nsenter --net="/run/netns/$node" unshare --uts --mount sh -c \
            'mount --bind "$1" /etc/hosts && hostname "$2" && exec slurmd -c -f "$3" -N "$2"' \
            sh "$STATE/hosts" "$node" "$CONF" || die "slurmd of $node did not start (see $STATE/slurmd-$node.log)"
    done
fi
for i in $(seq 1 60); do
    if nodes_ready; then
        say "cluster up: node(s) $NODE_LIST (each $CPUS CPUs, $MEM MB), $GPUS placeholder GPUs on ${NAMES[0]}, partition $PARTITION, state in $STATE"
        echo "SLURM_CONF=$CONF"
        exit 0
    fi
    sleep 0.5
    # a daemon writes its PID file after it has forked: judge it only after a grace of 2 s
    [ "$i" -ge 4 ] || continue
    alive slurmctld || die "slurmctld exited: $(tail -n 5 "$STATE/slurmctld.log" 2>/dev/null)"
    for node in "${NAMES[@]}"; do
        alive "slurmd-$node" || die "slurmd of $node exited: $(tail -n 5 "$STATE/slurmd-$node.log" 2>/dev/null)"
    done
done
die "the nodes did not come up within 30 s: $(sinfo -N 2>&1 | tail -n 3); logs in $STATE"
