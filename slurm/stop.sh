#!/usr/bin/env bash
# Stop the SLURM cluster that slurm/start.sh started in STATE_DIR: cancel its jobs, stop its slurmd's,
# slurmctld and munged by the PIDs in STATE_DIR, end what is left in its nodes' network namespaces,
# remove those namespaces (and with them its link: the bridge and every veth) and the link at the
# default config path, then remove STATE_DIR.
#
#   slurm/stop.sh [--keep] [STATE_DIR]   # --keep: leave STATE_DIR (logs, config) in place
#
# Safe to run when nothing is running, and twice; only processes whose PID files are in STATE_DIR,
# and processes inside the namespaces named in STATE_DIR/netns, are touched.
set -euo pipefail

KEEP=0
if [ "${1:-}" = "--keep" ]; then KEEP=1; shift; fi
STATE=${1:-${CMGEMS_SLURM_DIR:-${TMPDIR:-/tmp}/cmgems-slurm}}
export PATH="$PATH:/usr/sbin:/sbin"
[ -d "$STATE" ] || { echo "slurm/stop.sh: nothing to stop ($STATE does not exist)" >&2; exit 0; }
STATE=$(cd "$STATE" && pwd -P)
export SLURM_CONF=$STATE/slurm.conf

pid_of() {  # pid_of NAME: the PID in $STATE/NAME.pid if it is a running process named NAME up to its first '-'
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "${1%%-*}" ] && echo "$pid"
}

end() {  # end LABEL PID...: TERM, then KILL what is left after 10 s
    local label=$1 pid left
    shift
    [ "$#" -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for _ in $(seq 1 100); do
        left=()
        for pid in "$@"; do [ ! -d "/proc/$pid" ] || left+=("$pid"); done
        [ "${#left[@]}" -gt 0 ] || return 0
        sleep 0.1
    done
    echo "slurm/stop.sh: $label (${left[*]}) ignored TERM; killing" >&2
    kill -KILL "${left[@]}" 2>/dev/null || true
}

stop() {  # stop NAME: the daemon of $STATE/NAME.pid
    local pid
    pid=$(pid_of "$1") || return 0
    end "$1" "$pid"
}

# Jobs first, while slurmctld and slurmd can still end them (job steps outlive slurmd otherwise).
if pid_of slurmctld >/dev/null && [ -f "$SLURM_CONF" ]; then
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 100); do
            [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null || true)" ] && break
            sleep 0.1
        done
    fi
fi
for pidfile in "$STATE"/slurmd*.pid; do
    [ ! -e "$pidfile" ] || stop "$(basename "$pidfile" .pid)"
done
# The nodes' namespaces (several nodes): whatever still runs in them (a job step that outlived its
# slurmd) is ours; deleting a namespace deletes its end of each veth, and so the pair, and the bridge.
if [ -s "$STATE/netns" ]; then
    while read -r ns; do
        [ -e "/run/netns/$ns" ] || continue
        # shellcheck disable=SC2046
        end "processes in $ns" $(ip netns pids "$ns" 2>/dev/null)
        ip netns del "$ns"
    done <"$STATE/netns"
fi
stop slurmctld
stop munged
SYSCONF=${CMGEMS_SLURM_SYSCONF:-/etc/slurm/slurm.conf}
if [ -L "$SYSCONF" ] && [ "$(readlink "$SYSCONF")" = "$STATE/slurm.conf" ]; then
    rm -f "$SYSCONF"  # the link slurm/start.sh made
fi
if [ "$KEEP" -eq 0 ]; then
    rm -rf "$STATE"
fi
echo "slurm/stop.sh: stopped (state ${STATE}$([ "$KEEP" -eq 1 ] && echo ' kept' || echo ' removed'))" >&2
