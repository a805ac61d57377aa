#!/usr/bin/env bash
# Run `python -m cmgems.cli "$@"` once per training process of this job:
#   per node, one process per GPU torch sees (at most SLURM_GPUS_ON_NODE), or without GPUs
#   CMGEMS_PROCS_PER_NODE (default 1; gloo, for CPU runs of the multi-process paths);
#   one process on one node: python itself (exec);
#   several on one node:     torchrun --standalone;
#   CMGEMS_NODES > 1:        srun starts this script once per node (--rendezvous), each starting a
#                            torchrun; they meet at a port of this job's own on this (the first) node.
#
# Stop signals (SIGTERM, SIGUSR1, SIGINT): the ranks agree on a step, checkpoint it and exit 128 + the
# signal. SLURM signals every process of a job step, a terminal or a test a process group; torchrun
# (or srun) runs in this script's process group and so gets the signal itself, and passes it on to
# each rank's process group (srun: to its tasks). This script records the signal, waits for its child
# and exits 128 + the signal (torchrun exits 1). It does not pass the signal on: torchrun copes with a
# second one while it shuts down (srun's forwarding of SIGUSR1 is one), not a third. torchrun waits
# CMGEMS_SHUTDOWN_TIMEOUT s (default 240) for the ranks to checkpoint before it kills them.
#
# Under snakemake-executor-plugin-slurm this script runs in the plugin's job step (`srun -n1`, on the
# first node, holding its CPUs and GPUs): the multi-node srun needs --overlap, or it waits for ever for
# those. But SLURM's stop signals (scancel --signal, --signal=SIG@TIME) go to every step but the batch
# step, and srun answers a SIGTERM of its own by killing its step (SIGKILL; Snakemake in the plugin's
# step dies of a SIGUSR1): a multi-node rule must run in the batch step (the plugin's `mpi` resource),
# where srun is not signalled and exits with its tasks' 143.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
# torchrun, passing SIGUSR1 on too and giving the ranks time to checkpoint (a command, not a function:
# supervise's child must be torchrun itself, not a subshell that a signal ends at once)
TORCHRUN=(python -m torch.distributed.run --signals_to_handle=SIGTERM,SIGUSR1,SIGINT,SIGHUP,SIGQUIT
          --shutdown_timeout="${CMGEMS_SHUTDOWN_TIMEOUT:-240}")

processes_per_node() {
    local gpus
    gpus=$(python -c 'import torch; print(torch.cuda.device_count())')
    if [ -n "${SLURM_GPUS_ON_NODE:-}" ] && [ "$SLURM_GPUS_ON_NODE" -lt "$gpus" ]; then
        gpus=$SLURM_GPUS_ON_NODE
    fi
    if [ "$gpus" -gt 0 ]; then echo "$gpus"; else echo "${CMGEMS_PROCS_PER_NODE:-1}"; fi
}

rendezvous_port() {  # rendezvous_port JOB_ID: 20000 + JOB_ID % 10000, or the next port free on this host
    python - "$1" <<'PY'
import socket, sys
first = int(sys.argv[1]) % 10000
for offset in range(100):  # 20000-29999: below Linux's ephemeral ports (32768-)
    port = 20000 + (first + offset) % 10000
    try:
        socket.create_server(("", port)).close()  # free on every address, as torchrun's store binds
    except OSError:
        continue
    print(port)
    break
else:
    sys.exit(f"launch.sh: no free port among the 100 from {20000 + first}")
PY
}

supervise() {  # supervise CMD...: run CMD as a child; its exit status, or 128 + the signal if stopped
    local child signum=0 rc=0
    for sig in TERM USR1 INT; do
        trap '[ "$signum" -ne 0 ] || signum=$(kill -l '"$sig"')' "$sig"
    done
    "$@" &
    child=$!
    while kill -0 "$child" 2>/dev/null; do wait "$child" || true; done  # a trapped signal ends a wait
    wait "$child" || rc=$?  # (bash keeps the status of a child it has reaped)
    if [ "$signum" -ne 0 ] && [ "$rc" -ne 0 ]; then rc=$((128 + signum)); fi
    return "$rc"
}

multi_node() {  # multi_node NODES ARGS...: srun this script on each node of the job
    local nodes=$1 host port
    shift
    if [ -z "${SLURM_JOB_ID:-}" ]; then
        echo "launch.sh: CMGEMS_NODES=$nodes but not inside a SLURM job (no SLURM_JOB_ID)" >&2
        return 2
    fi
    if [ -n "${SLURM_STEP_ID:-}" ]; then  # see the header
        echo "launch.sh: warning: in job step $SLURM_STEP_ID, not the batch step: a stop signal to the job's" \
            "steps kills this run without a checkpoint (srun answers SIGTERM with SIGKILL)" >&2
    fi
    host=$(hostname)
    port=$(rendezvous_port "$SLURM_JOB_ID")
    echo "launch.sh: rendezvous at $host:$port" >&2
    # One task per node with the job's CPUs there (srun no longer inherits --cpus-per-task), bound to
    # them: torchrun, its ranks and their data workers share them; an explicit binding also replaces
    # the plugin step's, which srun would inherit. Without a CPU count nothing is bound (srun's one
    # CPU per task would put them all on one core). A failed node stops the others at once; a stop
    # does not cut a checkpoint short, as every rank leaves only after the barrier that follows it.
    local cpus=(--cpu-bind=none) var
    if [ -n "${CMGEMS_CPUS_PER_TASK:-}" ]; then
        cpus=(--cpus-per-task="$CMGEMS_CPUS_PER_TASK" --cpu-bind=cores)
    fi
    # srun would take the plugin step's geometry from its SLURM_* variables (SLURM_NODELIST: the one
    # node of that step): it gets the job's identity only, as the plugin's own srun does.
    for var in $(compgen -e SLURM_); do
        case "$var" in SLURM_JOB_ID | SLURM_JOBID | SLURM_CONF | SLURM_CLUSTER_NAME) ;; *) unset "$var" ;; esac
    done
    supervise srun --overlap --kill-on-bad-exit=1 --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 \
        "${cpus[@]}" bash "$SELF" --rendezvous "$host:$port" "$@"
}

main() {
    local nodes=${CMGEMS_NODES:-1} procs
    if [ "${1:-}" = --rendezvous ]; then  # one node's task of multi_node's srun
        local endpoint=$2
        shift 2
        procs=$(processes_per_node)
        supervise "${TORCHRUN[@]}" --nnodes="$nodes" --nproc_per_node="$procs" --rdzv_backend=c10d \
            --rdzv_endpoint="$endpoint" --rdzv_id="cmgems-$SLURM_JOB_ID" -m cmgems.cli "$@"
    elif [ "$nodes" -gt 1 ]; then
        multi_node "$nodes" "$@"
    else
        procs=$(processes_per_node)
        if [ "$procs" -gt 1 ]; then
            supervise "${TORCHRUN[@]}" --standalone --nproc_per_node="$procs" -m cmgems.cli "$@"
        else
            exec python -m cmgems.cli "$@"
        fi
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # not when sourced (the tests call the functions)
    main "$@"
fi
