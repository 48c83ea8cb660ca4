"""A small training loop with explicit callback points, resumable and DDP-aware.

The loop knows nothing about pruning or distillation: a soft pruner is a
:class:`Callback` acting at epoch end, distillation is a term inside ``loss_fn``.
The hook points follow detectron2's ``HookBase`` (before/after train, after step,
after epoch) and are documented once, in :func:`fit`.

Checkpoints (:func:`save_checkpoint` / :func:`load_checkpoint`) hold plain
tensors and containers only, so they load with ``torch.load(weights_only=True)``;
they include the optimizer and scheduler state and the torch / numpy / Python
RNG states, so that in deterministic CPU mode a run resumed from an epoch
boundary ends with exactly the weights of an uninterrupted run.

Caveats:
    * The scheduler is stepped once per epoch (after the epoch's optimizer steps,
      before ``on_epoch_end``). A per-step schedule can be stepped by a callback
      from ``on_step_end`` through ``state.scheduler``.
    * When a callback replaces model parameters (e.g. physical channel removal),
      the optimizer and scheduler are rebuilt through the factories. The learning
      rate reached so far and the scheduler's counters are carried over where the
      param-group layout is unchanged; per-parameter optimizer state (momentum,
      Adam moments) is lost because its shapes no longer match.
    * Resuming is exact only from epoch boundaries, in deterministic CPU mode,
      with ``num_workers=0`` loaders (worker seeds come from the torch RNG too,
      but CUDA kernels and thread scheduling may not be deterministic).
    * Under DDP every rank runs the callbacks (they must act identically on
      identical weights); only rank 0 shows progress and calls ``checkpoint``.
      Parameter replacement under DDP rebuilds the DDP wrapper as well.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ._atomic import atomic_torch_save
from ._finite import non_finite_entries
from tqdm.auto import tqdm

__all__ = [
    "Callback",
    "DistributedInfo",
    "NonFiniteLossError",
    "TrainState",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "setup_distributed",
]

LossFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, Mapping[str, float]]"]
OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

CHECKPOINT_VERSION = 1


class NonFiniteLossError(RuntimeError):
    """The loss or a gradient became NaN or infinite (raised before the optimizer step), or the
    weights / optimizer state to be checkpointed are not finite (raised before anything is written)."""


@dataclass
class TrainState:
    """Everything a callback may read (and the few things it may change).

    Attributes:
        model: The unwrapped model being trained (never the DDP wrapper).
        optimizer: The current optimizer (rebuilt when parameters are replaced).
        scheduler: The current LR scheduler or ``None``.
        epoch: Number of epochs completed.
        step: Number of optimizer steps completed.
        metrics: Last logged values (``loss``, ``lr``, ``epoch_loss`` and the
            ``logs`` returned by ``loss_fn``).
        stop: A callback sets this to request an early stop.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any | None = None
    epoch: int = 0
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    stop: bool = False


class Callback:
    """Base class for training callbacks; every method is an optional no-op.

    See :func:`fit` for when each method is called.
    """

    def on_train_start(self, state: TrainState) -> None:  # noqa: D102
        pass

    def on_step_end(self, state: TrainState) -> None:  # noqa: D102
        pass

    def on_epoch_end(self, state: TrainState) -> None:  # noqa: D102
        pass

    def on_train_end(self, state: TrainState) -> None:  # noqa: D102
        pass


# --------------------------------------------------------------------------- distributed


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


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _wrap_ddp(model: nn.Module, device: str, distributed: bool = True) -> nn.Module:
    """DDP wrapper when a process group with more than one rank exists, else the model."""
    _, world_size = _world() if distributed else (0, 1)
    if world_size == 1:
        return model
    device_ids = [torch.device(device).index] if device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


# --------------------------------------------------------------------------- helpers


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_to_device(value, device) for value in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


def _parameter_signature(model: nn.Module) -> list[tuple[int, tuple[int, ...]]]:
    # Identity *and* shape: surgery may assign `.data` of the same Parameter object.
    return [(id(p), tuple(p.shape)) for p in model.parameters()]


def _set_sampler_epoch(loader: Iterable[Any], epoch: int) -> None:
    for owner in (loader, getattr(loader, "batch_sampler", None)):
        sampler = getattr(owner, "sampler", None)
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
            return


def _rebuild_optimization(
    state: TrainState,
    make_optimizer: OptimizerFactory,
    make_scheduler: SchedulerFactory | None,
) -> None:
    """Rebuild optimizer/scheduler for new parameters, keeping the LR reached so far."""
    old_optimizer, old_scheduler = state.optimizer, state.scheduler
    optimizer = make_optimizer(state.model)
    scheduler = make_scheduler(optimizer) if make_scheduler is not None else None
    same_layout = old_optimizer is not None and len(old_optimizer.param_groups) == len(
        optimizer.param_groups
    )
    if scheduler is not None and old_scheduler is not None and same_layout:
        try:
            scheduler.load_state_dict(old_scheduler.state_dict())
        except (KeyError, ValueError, TypeError, RuntimeError):
            pass  # an incompatible scheduler simply restarts
    if same_layout:
        assert old_optimizer is not None
        for new_group, old_group in zip(optimizer.param_groups, old_optimizer.param_groups):
            new_group["lr"] = old_group["lr"]
            if "initial_lr" in old_group:
                new_group["initial_lr"] = old_group["initial_lr"]
    state.optimizer, state.scheduler = optimizer, scheduler


def _current_lr(optimizer: torch.optim.Optimizer | None) -> float:
    if optimizer is None or not optimizer.param_groups:
        return float("nan")
    return float(optimizer.param_groups[0]["lr"])


def _check_gradients(model: nn.Module, world_size: int, state: TrainState, batch_index: int) -> None:
    """Raise :class:`NonFiniteLossError` (gradients cleared, no step taken) if any gradient is NaN/inf."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    finite = torch.stack([torch.isfinite(g).all() for g in grads]).all().reshape(1).float()
    if world_size > 1:  # every rank must raise together, or the others hang
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if finite.item() < 1.0:
        names = [name for name, p in model.named_parameters()
                 if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        assert state.optimizer is not None
        state.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(
            f"non-finite gradient (finite loss) at epoch {state.epoch + 1} (epochs completed: {state.epoch}), "
            f"batch {batch_index}, step {state.step} (steps completed), in {len(names)} parameters "
            f"(e.g. {', '.join(names[:3]) or 'on another rank'}); optimizer step skipped")


# --------------------------------------------------------------------------- the loop


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    train_loader: Iterable[Any],
    epochs: int,
    make_optimizer: OptimizerFactory,
    make_scheduler: SchedulerFactory | None = None,
    callbacks: Sequence[Callback] = (),
    state: TrainState | None = None,
    device: str | torch.device = "cpu",
    grad_clip: float | None = None,
    progress: bool = True,
    checkpoint: Callable[[TrainState], None] | None = None,
    distributed: bool = True,
) -> TrainState:
    """Train ``model`` until ``epochs`` epochs are completed.

    Hook points, in order (every callback, in list order, at each point)::

        on_train_start(state)          once, after optimizer/scheduler exist, before epoch 1
        for each epoch:
            for each batch:
                loss, logs = loss_fn(model, batch)    # NonFiniteLossError if not finite
                backward                              # NonFiniteLossError if a gradient is not finite
                optional grad clipping, optimizer.step()
                state.step += 1
                on_step_end(state)                    # may set state.stop (ends the epoch)
            scheduler.step()                          # once per epoch
            state.epoch += 1
            on_epoch_end(state)                       # e.g. soft pruning reads state.epoch
            checkpoint(state)                         # rank 0 only; caller writes the file
            if state.stop: break
        on_train_end(state)

    After ``on_train_start``, ``on_step_end`` and ``on_epoch_end`` the loop compares
    the model's parameters (identity and shape) with the ones the optimizer holds;
    if a callback replaced them, the optimizer and scheduler are rebuilt with
    ``make_optimizer(model)`` / ``make_scheduler(optimizer)``, the scheduler state
    is copied over and each param group's LR is set to the LR reached so far
    (when the group count is unchanged), and under DDP the wrapper is rebuilt.

    Resuming: pass a ``state`` with ``epoch > 0`` whose model, optimizer and
    scheduler the caller restored (see :func:`load_checkpoint`); training continues
    at epoch ``state.epoch + 1``. ``state.model`` must be ``model``.

    Args:
        model: The model (unwrapped; a DDP-wrapped model is unwrapped). Moved to ``device``.
        loss_fn: ``loss_fn(model, batch) -> (loss, logs)``; ``model`` is the DDP
            wrapper under DDP, so the forward pass syncs gradients.
        train_loader: Any iterable of batches; batches are moved to ``device``.
            A ``DistributedSampler`` gets ``set_epoch(epoch)`` every epoch.
        epochs: Total number of epochs to have completed at the end.
        make_optimizer: Builds the optimizer from the (unwrapped) model.
        make_scheduler: Builds an LR scheduler from the optimizer, or ``None``.
        callbacks: Objects with the :class:`Callback` methods.
        state: Training state to resume from, or ``None`` to start fresh.
        device: Device to train on.
        grad_clip: Max global gradient norm, or ``None`` for no clipping.
        progress: Show a tqdm bar per epoch (with ETA) on rank 0.
        checkpoint: Called with the state after each epoch's callbacks on rank 0,
            e.g. ``lambda s: save_checkpoint(path, s)``.
        distributed: ``False`` trains in this process alone even when a process group
            exists (no DDP, no collectives; e.g. rank 0 scoring search trials while
            the other ranks wait).

    Returns:
        The final :class:`TrainState`.

    Raises:
        NonFiniteLossError: The loss or a gradient is NaN/inf (raised before the optimizer
            step, so the parameters and the last checkpoint stay untouched), or the state to
            checkpoint is not finite (raised by :func:`save_checkpoint` before writing).
        ValueError: Bad ``epochs``, ``grad_clip`` or a ``state`` for another model.

    Example:
        >>> def loss_fn(model, batch):
        ...     x, y = batch
        ...     loss = F.cross_entropy(model(x), y)
        ...     return loss, {}
        >>> state = fit(model, loss_fn, loader, epochs=10,
        ...             make_optimizer=lambda m: torch.optim.SGD(m.parameters(), 0.1),
        ...             callbacks=[SoftFPGM(groups, schedule)],
        ...             checkpoint=lambda s: save_checkpoint("run/last.pt", s))
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if grad_clip is not None and not (grad_clip > 0 and math.isfinite(grad_clip)):
        raise ValueError(f"grad_clip must be a positive finite number or None, got {grad_clip!r}")
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    device = torch.device(device)
    model.to(device)
    rank, world_size = _world() if distributed else (0, 1)
    is_main = rank == 0

    if state is None:
        state = TrainState(model=model)
    elif state.model is not model:
        raise ValueError("state.model is not the model passed to fit(); pass the same module")
    if state.epoch < 0 or state.step < 0:
        raise ValueError(f"state.epoch/step must be >= 0, got {state.epoch}/{state.step}")
    if state.optimizer is None:
        state.optimizer = make_optimizer(model)
        state.scheduler = make_scheduler(state.optimizer) if make_scheduler else None
    wrapped = _wrap_ddp(model, str(device), distributed)
    signature = _parameter_signature(model)

    def refresh_after_callbacks() -> None:
        nonlocal wrapped, signature
        new_signature = _parameter_signature(model)
        if new_signature != signature:
            _rebuild_optimization(state, make_optimizer, make_scheduler)
            wrapped = _wrap_ddp(model, str(device), distributed)
            signature = new_signature

    state.stop = False
    for callback in callbacks:
        callback.on_train_start(state)
    refresh_after_callbacks()

    while state.epoch < epochs and not state.stop:
        model.train()
        _set_sampler_epoch(train_loader, state.epoch)
        total = len(train_loader) if hasattr(train_loader, "__len__") else None
        bar = tqdm(
            train_loader,
            total=total,
            desc=f"epoch {state.epoch + 1}/{epochs}",
            disable=not (progress and is_main),
            leave=False,
            dynamic_ncols=True,
        )
        loss_sum, num_batches = 0.0, 0
        for batch_index, batch in enumerate(bar):
            batch = _to_device(batch, device)
            loss, logs = loss_fn(wrapped, batch)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r}")
            finite = torch.isfinite(loss.detach()).reshape(1).float()
            if world_size > 1:  # every rank must raise together, or the others hang
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if finite.item() < 1.0:
                raise NonFiniteLossError(
                    f"non-finite loss {loss.item()} at epoch {state.epoch + 1} "
                    f"(epochs completed: {state.epoch}), batch {batch_index}, "
                    f"step {state.step} (steps completed); optimizer step skipped"
                )
            state.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            _check_gradients(model, world_size, state, batch_index)
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            state.optimizer.step()
            state.step += 1
            loss_value = float(loss.detach())
            loss_sum += loss_value
            num_batches += 1
            state.metrics.update({key: float(value) for key, value in logs.items()})
            state.metrics["loss"] = loss_value
            state.metrics["lr"] = _current_lr(state.optimizer)
            bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)
            for callback in callbacks:
                callback.on_step_end(state)
            refresh_after_callbacks()
            if state.stop:
                break
        bar.close()
        if state.scheduler is not None:
            state.scheduler.step()
        state.epoch += 1
        if num_batches:
            state.metrics["epoch_loss"] = loss_sum / num_batches
        for callback in callbacks:
            callback.on_epoch_end(state)
        refresh_after_callbacks()
        if checkpoint is not None and is_main:
            checkpoint(state)

    for callback in callbacks:
        callback.on_train_end(state)
    refresh_after_callbacks()
    return state


# --------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        # python's state: (version, tuple of 625 ints, gauss_next)
        "python": {
            "version": int(py_state[0]),
            "internal": torch.tensor(py_state[1], dtype=torch.int64),
            "gauss_next": py_state[2],
        },
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(rng: Mapping[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    np_rng = rng["numpy"]
    np.random.set_state(
        (
            np_rng["name"],
            np_rng["keys"].numpy().astype(np.uint32),
            np_rng["pos"],
            np_rng["has_gauss"],
            np_rng["cached_gaussian"],
        )
    )
    py_rng = rng["python"]
    random.setstate(
        (py_rng["version"], tuple(int(v) for v in py_rng["internal"].tolist()), py_rng["gauss_next"])
    )
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(
    path: str | os.PathLike[str], state: TrainState, extra: Mapping[str, Any] | None = None
) -> None:
    """Write the training state atomically (temporary file + ``os.replace``).

    Stores the model, optimizer and scheduler ``state_dict``s, ``epoch``, ``step``,
    ``metrics``, the torch/numpy/python (and CUDA) RNG states and ``extra`` (plain
    data only, so that the file loads with ``weights_only=True``). Nothing is written when
    the model or optimizer state holds NaN/inf, so the file on disk is always the last good one.

    Args:
        path: Destination file.
        state: The state to save (typically from the ``checkpoint`` hook of :func:`fit`).
        extra: Caller data (e.g. the recipe) stored under ``"extra"``.

    Raises:
        NonFiniteLossError: The model or optimizer state is not finite (the previous file is kept).
    """
    payload = {
        "version": CHECKPOINT_VERSION,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict() if state.optimizer is not None else None,
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        "epoch": state.epoch,
        "step": state.step,
        "metrics": dict(state.metrics),
        "rng": _rng_state(),
        "extra": dict(extra) if extra is not None else {},
    }
    for what in ("model", "optimizer"):
        count, names = non_finite_entries(payload[what])
        if count:
            raise NonFiniteLossError(
                f"{count} {what} tensors hold NaN/inf after epoch {state.epoch} (e.g. {', '.join(names)}); "
                f"{os.fspath(path)} not written, so it still holds the last good epoch")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_torch_save(payload, path)


def load_checkpoint(
    path: str | os.PathLike[str], state: TrainState | None = None, restore_rng: bool = True
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Args:
        path: Checkpoint file.
        state: If given, restore into it: ``state.model`` (strict), ``state.optimizer``
            and ``state.scheduler`` (which must be built beforehand, e.g. with the same
            factories passed to :func:`fit`), ``epoch``, ``step`` and ``metrics``.
        restore_rng: Also restore the torch/numpy/python RNG states (needed for a
            resumed run to match an uninterrupted one).

    Returns:
        The raw checkpoint dict (``extra`` holds the caller's data).

    Raises:
        ValueError: Unknown checkpoint version, or a missing optimizer/scheduler to
            restore into.
    """
    payload = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {payload.get('version')!r}")
    if state is not None:
        state.model.load_state_dict(payload["model"])
        if payload["optimizer"] is not None:
            if state.optimizer is None:
                raise ValueError(f"{path} holds optimizer state but state.optimizer is None")
            state.optimizer.load_state_dict(payload["optimizer"])
        if payload["scheduler"] is not None:
            if state.scheduler is None:
                raise ValueError(f"{path} holds scheduler state but state.scheduler is None")
            state.scheduler.load_state_dict(payload["scheduler"])
        state.epoch = int(payload["epoch"])
        state.step = int(payload["step"])
        state.metrics = dict(payload["metrics"])
    if restore_rng:
        _set_rng_state(payload["rng"])
    return payload
