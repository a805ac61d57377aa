#!/usr/bin/env bash
# Stop the single-node SLURM cluster that slurm/start.sh started in STATE_DIR: cancel its jobs,
# stop slurmd, slurmctld and munged by the PIDs in STATE_DIR, then remove STATE_DIR.
#
#   slurm/stop.sh [--keep] [STATE_DIR]   # --keep: leave STATE_DIR (logs, config) in place
#
# Safe to run when nothing is running; only processes whose PID files are in STATE_DIR are touched.
set -euo pipefail

KEEP=0
if [ "${1:-}" = "--keep" ]; then KEEP=1; shift; fi
STATE=${1:-${CMGEMS_SLURM_DIR:-${TMPDIR:-/tmp}/cmgems-slurm}}
export PATH="$PATH:/usr/sbin:/sbin"
[ -d "$STATE" ] || { echo "slurm/stop.sh: nothing to stop ($STATE does not exist)" >&2; exit 0; }
STATE=$(cd "$STATE" && pwd -P)
export SLURM_CONF=$STATE/slurm.conf

pid_of() {  # pid_of NAME: the PID in $STATE/NAME.pid if it is a running NAME process
    local pid
    pid=$(cat "$STATE/$1.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

stop() {  # stop NAME: TERM, then KILL after 10 s
    local pid
    pid=$(pid_of "$1") || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        [ -d "/proc/$pid" ] || return 0
        sleep 0.1
    done
    echo "slurm/stop.sh: $1 ($pid) ignored TERM; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
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
stop slurmd
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
