"""The few helpers that let the pipeline run data-parallel under ``torchrun``.

``torchrun --standalone --nproc_per_node=N -m compresskit run RECIPE`` starts N
processes with ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_*`` set;
:func:`init` turns that into a process group through
:func:`compresskit.train.setup_distributed` (gloo on CPU, nccl when CUDA is
available). How the pipeline uses it:

* training phases (teacher, distill, soft_prune, finetune) run on every rank:
  the task's train loader is re-wrapped by :func:`shard_loader` (same dataset, a
  :class:`~torch.utils.data.DistributedSampler` shard per rank) and ``fit`` wraps
  the model in DDP;
* every other phase (search, remove, evaluate, export, report) runs on rank 0 only;
* only rank 0 writes files and prints; after every phase all ranks meet at
  :func:`barrier` and receive rank 0's summary (:func:`broadcast`), so the next
  phase on every rank reads what rank 0 wrote.

Waiting ranks block on a dedicated gloo group with a long timeout
(:data:`WAIT_TIMEOUT`), so a long rank-0-only phase (the rate search) does not
trip the process group's default collective timeout.

Without torchrun's variables (or with ``WORLD_SIZE=1``) nothing is initialised:
:func:`rank` is 0, :func:`world_size` 1, :func:`barrier` / :func:`broadcast` /
:func:`shard_loader` are identities, and a run is the plain single-process run.

Assumption: all ranks see the run directory (one machine, or a shared file system).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from compresskit.train import DistributedInfo, setup_distributed

__all__ = [
    "WAIT_TIMEOUT",
    "barrier",
    "broadcast",
    "device",
    "init",
    "is_main",
    "on_cpu",
    "rank",
    "shard_loader",
    "shard_summary",
    "world_size",
]

#: How long a rank waits for rank 0 at a barrier (the rate search runs on rank 0 alone).
WAIT_TIMEOUT = timedelta(hours=24)

T = TypeVar("T")

_info: DistributedInfo | None = None
_wait_group: Any = None
_owned = False


def init(backend: str | None = None) -> DistributedInfo:
    """Set up the process group from torchrun's environment (idempotent).

    Args:
        backend: ``"gloo"`` / ``"nccl"``; default nccl when CUDA is available, else gloo.

    Returns:
        This process's rank, world size, local rank and training device. Without
        torchrun's variables (or ``WORLD_SIZE=1``): rank 0 of 1 on ``"cpu"``, and
        nothing is initialised.
    """
    global _info, _wait_group, _owned
    if _info is not None:
        return _info
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistributedInfo(0, 1, 0, "cpu")
    _owned = not dist.is_initialized()
    info = setup_distributed(backend)
    # Waiting (barriers, small objects) goes through gloo with a long timeout, on any backend.
    _wait_group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    _info = info
    if _owned:
        atexit.register(shutdown)
    return info


def shutdown() -> None:
    """Destroy the process group :func:`init` created (no-op otherwise)."""
    global _info, _wait_group, _owned
    if _owned and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _info, _wait_group, _owned = None, None, False


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if _active() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single-process run): the rank that writes files and prints."""
    return rank() == 0


def device() -> str:
    """The device training phases use: ``cuda:LOCAL_RANK`` under nccl, else ``"cpu"``."""
    return _info.device if _info is not None and _active() else "cpu"


def barrier() -> None:
    """Wait until every rank got here (no-op when not distributed)."""
    if _active():
        dist.barrier(group=_wait_group)


def broadcast(obj: T) -> T:
    """Rank 0's ``obj`` on every rank (picklable objects; identity when not distributed)."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_wait_group)
    return box[0]


def shard_loader(loader: Iterable[Any], seed: int = 0, *, num_replicas: int | None = None,
                 replica: int | None = None) -> Iterable[Any]:
    """The same loader over this rank's shard of its dataset (identity when not distributed).

    The task's sampler (its shuffle) is replaced by a shuffling
    :class:`~torch.utils.data.DistributedSampler` seeded with ``seed`` (the same on
    every rank; ``fit`` calls ``set_epoch`` each epoch, so resumed runs see the same
    order). Batch size, collate function, workers and ``drop_last`` are kept: the
    batch size is per rank, the effective batch is ``world_size * batch_size``.

    Args:
        loader: A :class:`~torch.utils.data.DataLoader` built with ``batch_size``.
        seed: Shuffle seed shared by the ranks.
        num_replicas, replica: Override the process group's world size and rank
            (for tests); both or neither.

    Raises:
        TypeError: ``loader`` is not a DataLoader with a ``batch_size`` (a custom
            batch sampler cannot be sharded generically).
    """
    if (num_replicas is None) != (replica is None):
        raise ValueError("give both num_replicas and replica, or neither")
    if num_replicas is None or replica is None:
        num_replicas, replica = world_size(), rank()
    if num_replicas == 1:
        return loader
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise TypeError("under torchrun the task's train_loader() must return a torch DataLoader built "
                        f"with batch_size (its dataset is sharded per rank), got {type(loader).__name__}")
    sampler = DistributedSampler(loader.dataset, num_replicas=num_replicas, rank=replica, shuffle=True,
                                 seed=seed, drop_last=False)
    kwargs: dict[str, Any] = {}
    if loader.num_workers > 0:
        kwargs = {"prefetch_factor": loader.prefetch_factor, "persistent_workers": loader.persistent_workers,
                  "multiprocessing_context": loader.multiprocessing_context}
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last, timeout=loader.timeout,
                      worker_init_fn=loader.worker_init_fn, generator=loader.generator, **kwargs)


def shard_summary(loader: Iterable[Any]) -> dict[str, Any] | None:
    """Every rank's shard of a :func:`shard_loader` loader at epoch 0, gathered (collective).

    Returns ``{"world_size", "dataset", "samples_per_rank": [...], "overlap"}`` where
    ``overlap`` counts indices held by more than one rank (the sampler pads with
    repeats when the dataset does not divide evenly), or ``None`` when not distributed.
    """
    if not _active():
        return None
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler):
        return None
    epoch = sampler.epoch
    sampler.set_epoch(0)
    indices = list(sampler)
    sampler.set_epoch(epoch)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, indices, group=_wait_group)
    total = sum(len(shard) for shard in gathered)
    return {"world_size": len(gathered), "dataset": len(sampler.dataset),  # type: ignore[arg-type]
            "samples_per_rank": [len(shard) for shard in gathered],
            "overlap": total - len(set().union(*map(set, gathered)))}


@contextmanager
def on_cpu(model: nn.Module, training_device: str) -> Iterator[nn.Module]:
    """Move ``model`` to CPU for the block (tasks evaluate CPU models), then back."""
    if training_device == "cpu":
        yield model
        return
    model.to("cpu")
    try:
        yield model
    finally:
        model.to(training_device)
