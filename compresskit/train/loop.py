"""The training loop: :func:`fit`, a short epoch loop that calls hooks (resumable, DDP-aware).

The loop knows nothing about pruning, distillation or files: a soft pruner is a
hook acting at epoch end, distillation is a term inside ``loss_fn``, scheduler
stepping and epoch checkpoints are hooks (:mod:`compresskit.train.hooks`, whose
docstring lists the hook points in order). The design follows detectron2's
``TrainerBase`` / ``HookBase``.

Caveats:
    * When a hook replaces model parameters (e.g. physical channel removal), the
      optimizer and scheduler are rebuilt through the factories. The learning rate
      reached so far and the scheduler's counters are carried over where the
      param-group layout is unchanged; per-parameter optimizer state (momentum,
      Adam moments) is lost because its shapes no longer match. Under DDP the
      wrapper is rebuilt as well.
    * Resuming is exact only from epoch boundaries, in deterministic CPU mode,
      with ``num_workers=0`` loaders (worker seeds come from the torch RNG too,
      but CUDA kernels and thread scheduling may not be deterministic).
    * Under DDP every rank runs the hooks; only rank 0 shows progress and writes
      checkpoints (``state.is_main``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from compresskit.train.ddp import process_position, wrap_ddp
from compresskit.train.hooks import Callback, SchedulerStep
from compresskit.train.state import NonFiniteLossError, TrainState

__all__ = ["LossFn", "OptimizerFactory", "SchedulerFactory", "fit"]

LossFn = Callable[[nn.Module, Any], "tuple[torch.Tensor, Mapping[str, float]]"]
OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def fit(
    model: nn.Module, loss_fn: LossFn, train_loader: Iterable[Any], epochs: int,
    make_optimizer: OptimizerFactory, make_scheduler: SchedulerFactory | None = None,
    callbacks: Sequence[Callback] = (), state: TrainState | None = None,
    device: str | torch.device = "cpu", grad_clip: float | None = None, progress: bool = True,
    checkpoint: Callable[[TrainState], None] | None = None, distributed: bool = True,
    *, scheduler_per: Literal["epoch", "step"] = "epoch",
) -> TrainState:
    """Train ``model`` until ``epochs`` epochs are completed, calling the hooks at each point.

    The hooks are ``SchedulerStep(scheduler_per)``, then ``callbacks`` in list order, then
    ``checkpoint`` (rank 0 only); :mod:`compresskit.train.hooks` lists the points in order.
    Resume by passing a restored ``state`` (same ``model``; see ``EpochCheckpoint.restore``):
    training continues at epoch ``state.epoch + 1``.

    Args:
        model: The model (a DDP wrapper is unwrapped); moved to ``device``.
        loss_fn: ``loss_fn(model, batch) -> (scalar loss, logs)``; ``model`` is the DDP wrapper under DDP.
        train_loader: Iterable of batches (moved to ``device``); a ``DistributedSampler`` gets ``set_epoch``.
        epochs: Total number of epochs to have completed at the end.
        make_optimizer: Builds the optimizer from the unwrapped model.
        make_scheduler: Builds an LR scheduler from the optimizer, or ``None``.
        callbacks: :class:`Callback` hooks.
        state: Training state to resume from, or ``None`` to start fresh.
        device: Device to train on.
        grad_clip: Max global gradient norm, or ``None`` for no clipping.
        progress: Show a tqdm bar per epoch (with ETA) on rank 0.
        checkpoint: Called with the state after each epoch's hooks on rank 0.
        distributed: ``False`` trains in this process alone even when a process group exists.
        scheduler_per: Step the scheduler once per ``"epoch"`` or after every optimizer ``"step"``.

    Returns:
        The final :class:`TrainState`.

    Raises:
        NonFiniteLossError: NaN/inf loss or gradient (before the optimizer step, so the weights
            and the last checkpoint stay good), or a non-finite state to checkpoint.
        ValueError: Bad ``epochs``, ``grad_clip`` or ``scheduler_per``, or a ``state`` for another model.

    Example:
        >>> state = fit(model, loss_fn, loader, epochs=10,
        ...             make_optimizer=lambda m: torch.optim.SGD(m.parameters(), 0.1),
        ...             callbacks=[SoftFPGM(groups, schedule)],
        ...             checkpoint=lambda s: save_checkpoint("run/last.pt", s))
    """
    _check_arguments(epochs, grad_clip)
    hooks = [SchedulerStep(scheduler_per), *callbacks, *([_MainRankCall(checkpoint)] if checkpoint else [])]
    loop = _Loop(model, loss_fn, make_optimizer, make_scheduler, device, grad_clip, distributed)
    state = loop.start(state)
    loop.call(hooks, "on_train_start", state)
    while state.epoch < epochs and not state.stop:
        loop.run_epoch(state, train_loader, hooks, f"epoch {state.epoch + 1}/{epochs}", progress)
        loop.call(hooks, "on_epoch_end", state)
    loop.call(hooks, "on_train_end", state)
    return state


def _check_arguments(epochs: int, grad_clip: float | None) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    if grad_clip is not None and not (grad_clip > 0 and math.isfinite(grad_clip)):
        raise ValueError(f"grad_clip must be a positive finite number or None, got {grad_clip!r}")


class _MainRankCall(Callback):
    """``fit``'s ``checkpoint`` callable as the last epoch-end hook, on the main rank only."""

    def __init__(self, function: Callable[[TrainState], None]) -> None:
        self.function = function

    def on_epoch_end(self, state: TrainState) -> None:
        if state.is_main:
            self.function(state)


class _Loop:
    """What one :func:`fit` call holds: the model and its DDP wrapper, the factories, one epoch's work."""

    def __init__(self, model: nn.Module, loss_fn: LossFn, make_optimizer: OptimizerFactory,
                 make_scheduler: SchedulerFactory | None, device: str | torch.device,
                 grad_clip: float | None, distributed: bool) -> None:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        self.model, self.loss_fn, self.grad_clip = model, loss_fn, grad_clip
        self.make_optimizer, self.make_scheduler = make_optimizer, make_scheduler
        self.device, self.distributed = torch.device(device), distributed
        model.to(self.device)
        self.rank, self.world_size = process_position(distributed)
        self.wrapped: nn.Module = model
        self.signature: list[tuple[int, tuple[int, ...]]] = []

    def start(self, state: TrainState | None) -> TrainState:
        """Check or create the state, build the optimizer/scheduler if missing, wrap the model."""
        if state is None:
            state = TrainState(model=self.model)
        elif state.model is not self.model:
            raise ValueError("state.model is not the model passed to fit(); pass the same module")
        if state.epoch < 0 or state.step < 0:
            raise ValueError(f"state.epoch/step must be >= 0, got {state.epoch}/{state.step}")
        if state.optimizer is None:
            state.optimizer = self.make_optimizer(self.model)
            state.scheduler = self.make_scheduler(state.optimizer) if self.make_scheduler else None
        self.wrapped = wrap_ddp(self.model, str(self.device), self.distributed)
        self.signature = _parameter_signature(self.model)
        state.stop, state.is_main = False, self.rank == 0
        return state

    def call(self, hooks: Sequence[Callback], point: str, state: TrainState) -> None:
        """Call ``point`` on every hook in order, rebuilding the optimization after any that replaced parameters."""
        for hook in hooks:
            getattr(hook, point)(state)
            signature = _parameter_signature(self.model)
            if signature != self.signature:
                _rebuild_optimization(state, self.make_optimizer, self.make_scheduler)
                self.wrapped = wrap_ddp(self.model, str(self.device), self.distributed)
                self.signature = signature

    def run_epoch(self, state: TrainState, loader: Iterable[Any], hooks: Sequence[Callback],
                  description: str, progress: bool) -> None:
        """One pass over ``loader`` (``on_step_end`` after each step), then ``state.epoch += 1``."""
        self.model.train()
        _set_sampler_epoch(loader, state.epoch)
        total = len(loader) if hasattr(loader, "__len__") else None
        bar = tqdm(loader, total=total, desc=description, disable=not (progress and self.rank == 0),
                   leave=False, dynamic_ncols=True)
        loss_sum, num_batches = 0.0, 0
        for batch_index, batch in enumerate(bar):
            loss_value = self.train_step(state, batch, batch_index)
            loss_sum += loss_value
            num_batches += 1
            bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)
            self.call(hooks, "on_step_end", state)
            if state.stop:
                break
        bar.close()
        state.epoch += 1
        if num_batches:
            state.metrics["epoch_loss"] = loss_sum / num_batches

    def train_step(self, state: TrainState, batch: Any, batch_index: int) -> float:
        """Loss, checks, backward, clipping and one optimizer step; returns the loss value."""
        loss, logs = self.loss_fn(self.wrapped, _to_device(batch, self.device))
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {loss!r}")
        finite = torch.isfinite(loss.detach()).reshape(1).float()
        if self.world_size > 1:  # every rank must raise together, or the others hang
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1.0:
            raise NonFiniteLossError(
                f"non-finite loss {loss.item()} at epoch {state.epoch + 1} (epochs completed: {state.epoch}), "
                f"batch {batch_index}, step {state.step} (steps completed); optimizer step skipped")
        assert state.optimizer is not None
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _check_gradients(self.model, self.world_size, state, batch_index)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        state.optimizer.step()
        state.step += 1
        loss_value = float(loss.detach())
        state.metrics.update({key: float(value) for key, value in logs.items()})
        state.metrics["loss"] = loss_value
        state.metrics["lr"] = _current_lr(state.optimizer)
        return loss_value


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
    state: TrainState, make_optimizer: OptimizerFactory, make_scheduler: SchedulerFactory | None
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
