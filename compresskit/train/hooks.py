"""Training hooks: the :class:`Callback` protocol and the hooks ``fit`` is built from.

Hook points, in the order :func:`~compresskit.train.loop.fit` calls them (every hook,
in list order, at each point)::

    on_train_start(state)              once, after optimizer/scheduler exist, before epoch 1
    for each epoch:
        for each batch:
            loss, logs = loss_fn(model, batch)      # NonFiniteLossError if not finite
            backward                                # NonFiniteLossError if a gradient is not finite
            optional grad clipping, optimizer.step()
            state.step += 1; state.metrics: loss, lr and the logs
            on_step_end(state)                      # may set state.stop (ends the epoch)
        state.epoch += 1; state.metrics["epoch_loss"]
        on_epoch_end(state)                         # e.g. soft pruning reads state.epoch
        if state.stop: break
    on_train_end(state)

``fit`` puts a :class:`SchedulerStep` first and its ``checkpoint`` callable last, so
at each point the LR scheduler has stepped before the user's callbacks run and the
epoch checkpoint sees what they did. After every hook call the loop compares the
model's parameters (identity and shape) with the ones the optimizer holds; when a
hook replaced them (physical channel removal), the optimizer and scheduler are
rebuilt before the next hook runs.

A hook carries its own state: :meth:`Callback.state_dict` / :meth:`Callback.load_state_dict`
(plain data: tensors, numbers, strings, containers). :class:`EpochCheckpoint` stores
the state of the hooks it is given next to the training state and restores both.
Under DDP every rank runs every hook (they must act identically on identical weights);
``state.is_main`` tells the one rank that writes files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from compresskit.train.checkpoint import load_checkpoint, save_checkpoint
from compresskit.train.state import TrainState

__all__ = ["SCHEDULER_STEP_UNITS", "Callback", "EpochCheckpoint", "EveryNEpochs", "SchedulerStep"]

#: What :class:`SchedulerStep` may step the scheduler after.
SCHEDULER_STEP_UNITS = ("epoch", "step")


class Callback:
    """Base class for training hooks; every method is an optional no-op.

    See the module docstring for when each ``on_*`` method is called.
    """

    def on_train_start(self, state: TrainState) -> None:  # noqa: D102
        pass

    def on_step_end(self, state: TrainState) -> None:  # noqa: D102
        pass

    def on_epoch_end(self, state: TrainState) -> None:  # noqa: D102
        pass

    def on_train_end(self, state: TrainState) -> None:  # noqa: D102
        pass

    def state_dict(self) -> dict[str, Any]:
        """The hook's own state that must survive a resume (plain data); ``{}`` by default."""
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; a no-op by default."""


class SchedulerStep(Callback):
    """Step ``state.scheduler`` once per epoch or after every optimizer step.

    Per epoch, the scheduler steps at ``on_epoch_end`` (after the epoch's optimizer
    steps); per step, at ``on_step_end``. Nothing happens while ``state.scheduler``
    is ``None``. The scheduler's own state travels with the training state (see
    :func:`~compresskit.train.checkpoint.save_checkpoint`), so this hook has none.

    Args:
        per: ``"epoch"`` or ``"step"``.

    Raises:
        ValueError: ``per`` is not one of :data:`SCHEDULER_STEP_UNITS`.

    Example:
        >>> fit(model, loss_fn, loader, 10, make_optimizer,
        ...     lambda optimizer: OneCycleLR(optimizer, 0.1, total_steps=10 * len(loader)),
        ...     scheduler_per="step")   # fit adds SchedulerStep("step") itself
    """

    def __init__(self, per: Literal["epoch", "step"] = "epoch") -> None:
        if per not in SCHEDULER_STEP_UNITS:
            raise ValueError(f"scheduler step unit must be one of {SCHEDULER_STEP_UNITS}, got {per!r}")
        self.per = per

    def on_step_end(self, state: TrainState) -> None:
        if self.per == "step" and state.scheduler is not None:
            state.scheduler.step()

    def on_epoch_end(self, state: TrainState) -> None:
        if self.per == "epoch" and state.scheduler is not None:
            state.scheduler.step()


class EveryNEpochs(Callback):
    """Forward ``on_epoch_end`` to ``callback`` only at epochs ``n, 2n, ...`` and from ``last`` on.

    Every other hook point, and the state, are forwarded unchanged: the wrapper's
    :meth:`state_dict` is the wrapped callback's.

    Args:
        callback: The hook to thin out (e.g. a soft pruner stepping every ``n`` epochs).
        n: Period in epochs (>= 1).
        last: The final epoch, at which ``callback`` always runs.

    Raises:
        ValueError: ``n`` is below 1.
    """

    def __init__(self, callback: Callback, n: int, last: int) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        self.callback, self.n, self.last = callback, n, last

    def on_train_start(self, state: TrainState) -> None:
        self.callback.on_train_start(state)

    def on_step_end(self, state: TrainState) -> None:
        self.callback.on_step_end(state)

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch % self.n == 0 or state.epoch >= self.last:
            self.callback.on_epoch_end(state)

    def on_train_end(self, state: TrainState) -> None:
        self.callback.on_train_end(state)

    def state_dict(self) -> dict[str, Any]:
        return self.callback.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.callback.load_state_dict(state_dict)


class EpochCheckpoint(Callback):
    """Write the epoch checkpoint, with the state of the named hooks, after every epoch (main rank only).

    The file is :func:`~compresskit.train.checkpoint.save_checkpoint`'s, with
    ``extra = {name: hook.state_dict() for name, hook in hooks.items()}``. Put this hook
    after the hooks whose epoch-end work it must capture. :meth:`restore` reads it back.

    Args:
        path: The checkpoint file (overwritten atomically every epoch).
        hooks: The hooks whose state is saved and restored, by name.

    Example:
        >>> pruner = EveryNEpochs(SoftFPGM(groups, schedule), n=2, last=10)
        >>> saver = EpochCheckpoint("run/last.pt", {"pruner": pruner})
        >>> state = TrainState(model, make_optimizer(model))
        >>> if os.path.exists("run/last.pt"):
        ...     saver.restore(state)
        >>> fit(model, loss_fn, loader, 10, make_optimizer, callbacks=[pruner, saver], state=state)
    """

    def __init__(self, path: str | os.PathLike[str], hooks: Mapping[str, Callback] | None = None) -> None:
        self.path = path
        self.hooks = dict(hooks or {})

    def on_epoch_end(self, state: TrainState) -> None:
        if state.is_main:
            save_checkpoint(self.path, state, {name: hook.state_dict() for name, hook in self.hooks.items()})

    def restore(self, state: TrainState, restore_rng: bool = True) -> dict[str, Any]:
        """Load the checkpoint into ``state`` (see :func:`load_checkpoint`) and every named hook.

        Args:
            state: A state whose optimizer and scheduler exist (built by the same factories).
            restore_rng: Also restore the RNG states (what an exact resume needs).

        Returns:
            The raw checkpoint dict.

        Raises:
            ValueError: The file is not a checkpoint of this version, or lacks a named hook's state.
        """
        payload = load_checkpoint(self.path, state, restore_rng=restore_rng)
        extra = payload["extra"]
        missing = sorted(set(self.hooks) - set(extra))
        if missing:
            raise ValueError(f"{os.fspath(self.path)}: no state for the hooks {missing} "
                             f"(the checkpoint holds {sorted(extra)})")
        for name, hook in self.hooks.items():
            hook.load_state_dict(extra[name])
        return payload
