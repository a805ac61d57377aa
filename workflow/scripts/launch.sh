#!/usr/bin/env bash
# Run `python -m cmgems.cli "$@"` once per GPU of this job's allocation (read from the allocation).
#   no GPU or one GPU: a single process;
#   one node, N GPUs:  torchrun --standalone --nproc_per_node=N;
#   CMGEMS_NODES > 1:  srun starts one torchrun per node; they meet at this (the first) node.
# GPUs: those torch sees (CUDA_VISIBLE_DEVICES / device cgroup), at most SLURM_GPUS_ON_NODE when set.
#
# Under snakemake-executor-plugin-slurm this script runs inside the plugin's own job step
# (`srun -n1 ...`: one task on the first node, holding that node's CPUs and GPUs), with SLURM_*
# variables stripped but for the job's ids (SLURM_JOB_ID, ...) and then set again by srun for that
# one-task step. So the multi-node launch names its geometry itself and needs --overlap: without it
# the new step waits for ever for the resources the plugin's step holds.
set -euo pipefail
gpus=$(python -c 'import torch; print(torch.cuda.device_count())')
if [ -n "${SLURM_GPUS_ON_NODE:-}" ] && [ "${SLURM_GPUS_ON_NODE}" -lt "$gpus" ]; then
    gpus=$SLURM_GPUS_ON_NODE
fi
nodes=${CMGEMS_NODES:-1}
if [ "$nodes" -gt 1 ]; then
    if [ -z "${SLURM_JOB_ID:-}" ]; then
        echo "launch.sh: CMGEMS_NODES=$nodes but not inside a SLURM job (no SLURM_JOB_ID)" >&2
        exit 2
    fi
    exec srun --overlap --kill-on-bad-exit=1 --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 \
        torchrun --nnodes="$nodes" --nproc_per_node="$((gpus > 0 ? gpus : 1))" --rdzv_backend=c10d \
        --rdzv_endpoint="$(hostname):29500" --rdzv_id="cmgems-$SLURM_JOB_ID" -m cmgems.cli "$@"
elif [ "$gpus" -gt 1 ]; then
    exec torchrun --standalone --nproc_per_node="$gpus" -m cmgems.cli "$@"
else
    exec python -m cmgems.cli "$@"
fi
