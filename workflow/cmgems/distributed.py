"""The processes of a pretraining run: torchrun's environment, the device (and a clear error when
GPUs were asked for but none is visible), and the few collectives the training loop needs.

Host-side agreement (the stop flag, RNG states) goes through a gloo group on CPU tensors, so it
never waits on the GPU; gradients and metrics are reduced on the device (NCCL on GPUs). With one
process every collective is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from cmgems.errors import CmgemsError

COLLECTIVE_TIMEOUT = timedelta(minutes=30)  # NCCL/gloo: a stuck rank fails the job instead of hanging it
SLURM_GPU_VARIABLES = ("SLURM_GPUS_ON_NODE", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "SLURM_GPUS_PER_NODE", "SLURM_GPUS")
SLURM_GPU_INDICES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS")  # lists of GPU indices ("0", "0,1"); the others count


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    control: object = None  # the process group for host-side agreement (gloo)

    @property
    def main(self) -> bool:
        return self.rank == 0


def slurm_gpus(environ=os.environ) -> tuple[int, str]:
    """GPUs SLURM allocated to this job step or node, and the variable that says so (0, "" if none)."""
    for name in SLURM_GPU_VARIABLES:
        value = environ.get(name, "").strip()
        if not value or value.lower() in ("none", "n/a"):
            continue
        if name in SLURM_GPU_INDICES:
            n = len([v for v in value.split(",") if v])  # "0" is one GPU, index 0
        else:
            count = value.rsplit(":", 1)[-1].split("(")[0]  # "2", "a100:2", "gpu:a100:2(IDX:0-1)"
            n = int(count) if count.isdigit() else 0
        if n > 0:
            return n, f"{name}={value}"
    return 0, ""


def check_gpus_visible(requested: int, environ=os.environ) -> None:
    """Raise when GPUs were requested (`requested` > 0: the workflow config's resources.gpu, or a SLURM
    allocation holding GPUs) but torch sees none, naming the likely cause."""
    n, source = (requested, f"{requested} requested (config resources.gpu)") if requested > 0 else slurm_gpus(environ)
    if n == 0 or torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        cause = (f"torch {torch.__version__} in this environment is a CPU-only build: a conda env built where no GPU "
                 "driver was visible (a login node) gets one. Rebuild it as the README says "
                 "(CONDA_OVERRIDE_CUDA=12.6 snakemake --use-conda --conda-create-envs-only ...), or install a CUDA build of torch")
    else:
        cause = (f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but finds no device: no NVIDIA driver "
                 f"on this node, a driver older than the build, or CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES')!r} "
                 "hides the GPUs")
    raise CmgemsError(f"GPUs were requested ({source}) but none is visible: {cause}. "
                      "To train on CPU instead, request no GPUs (resources.gpu: 0).")


def setup(requested_gpus: int = 0) -> Dist:
    """Read torchrun's environment (one process per GPU, or per CPU worker); join the process group."""
    check_gpus_visible(requested_gpus)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    control = None
    if world > 1:
        cuda = device.type == "cuda"
        torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT,
                                             device_id=device if cuda else None)
        control = torch.distributed.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT) if cuda else None
    return Dist(rank, world, local, device, control)


def any_rank(flag: bool, dist: Dist) -> bool:
    """True on every rank when `flag` is True on any (a host-side all-reduce; no GPU sync)."""
    if dist.world_size == 1:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int64)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX, group=dist.control)
    return bool(value[0])


def gather(obj, dist: Dist) -> list:
    """Every rank's picklable `obj`, in rank order, on every rank."""
    if dist.world_size == 1:
        return [obj]
    out = [None] * dist.world_size
    torch.distributed.all_gather_object(out, obj, group=dist.control)
    return out


def barrier(dist: Dist) -> None:
    if dist.world_size > 1:
        torch.distributed.barrier(group=dist.control)


def sum_across(tensor: torch.Tensor, dist: Dist) -> torch.Tensor:
    """`tensor` summed over ranks, in place, on its device (asynchronous on GPUs)."""
    if dist.world_size > 1:
        torch.distributed.all_reduce(tensor)
    return tensor


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` (a host sync on GPUs; nothing on CPU). The training loop
    syncs only through this and `host_read`, so that a test on CPU sees every sync (tests/test_pretrain.py)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def host_read(tensor: torch.Tensor) -> list:
    """`tensor`'s values on the host (a sync on GPUs; see `synchronize`)."""
    return tensor.tolist()


def teardown(dist: Dist) -> None:
    if dist.world_size > 1:
        torch.distributed.destroy_process_group()
