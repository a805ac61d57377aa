#!/usr/bin/env bash
# Run `python -m cmgems.cli "$@"` once per GPU of this job's allocation (read from the allocation).
#   no GPU or one GPU: a single process;
#   one node, N GPUs:  torchrun --standalone --nproc_per_node=N;
#   CMGEMS_NODES > 1:  srun starts one torchrun per node; they meet at this (the first) node.
set -euo pipefail
gpus=$(python -c 'import torch; print(torch.cuda.device_count())')
nodes=${CMGEMS_NODES:-1}
if [ "$nodes" -gt 1 ]; then
    exec srun --nodes="$nodes" --ntasks="$nodes" --ntasks-per-node=1 \
        torchrun --nnodes="$nodes" --nproc_per_node="$gpus" --rdzv_backend=c10d \
        --rdzv_endpoint="$(hostname):29500" --rdzv_id="cmgems-$$" -m cmgems.cli "$@"
elif [ "$gpus" -gt 1 ]; then
    exec torchrun --standalone --nproc_per_node="$gpus" -m cmgems.cli "$@"
else
    exec python -m cmgems.cli "$@"
fi
