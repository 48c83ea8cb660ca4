"""Process-group setup and the DDP wrapper used by the training loop.

:func:`setup_distributed` turns torchrun's environment variables into a process
group; :func:`process_position` and :func:`wrap_ddp` are what ``fit`` asks of it.
Without a process group (or with one rank) every function here is an identity:
rank 0 of 1, the model unwrapped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistributedInfo", "process_position", "setup_distributed", "wrap_ddp"]


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(backend: str | None = None) -> DistributedInfo:
    """Initialise ``torch.distributed`` from torchrun's environment variables.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (plus ``MASTER_ADDR`` /
    ``MASTER_PORT`` through the ``env://`` init method). Without them, or with
    ``WORLD_SIZE=1``, nothing is initialised and a single-process info is returned.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default ``nccl`` when CUDA is available,
            else ``gloo``.

    Returns:
        The rank, world size, local rank and the device string this rank should use.

    Raises:
        ValueError: ``WORLD_SIZE`` below 1 or an unknown ``backend``.

    Example:
        >>> info = setup_distributed()          # under `torchrun --nproc-per-node 2`
        >>> state = fit(model, loss_fn, loader, 10, make_optimizer, device=info.device)
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world_size}")
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    use_cuda = torch.cuda.is_available()
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    device = f"cuda:{local_rank}" if use_cuda and backend == "nccl" else "cpu"
    if world_size == 1:
        return DistributedInfo(0, 1, 0, "cuda:0" if use_cuda and backend == "nccl" else "cpu")
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedInfo(rank, world_size, local_rank, device)


def process_position(distributed: bool = True) -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group or when not ``distributed``."""
    if distributed and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap_ddp(model: nn.Module, device: str, distributed: bool = True) -> nn.Module:
    """``model`` in a DDP wrapper when a process group with more than one rank exists, else ``model``."""
    _, world_size = process_position(distributed)
    if world_size == 1:
        return model
    device_ids = [torch.device(device).index] if device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
