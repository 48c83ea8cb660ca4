"""A small training loop with explicit hook points, resumable and DDP-aware.

Modules: :mod:`.loop` (:func:`fit`), :mod:`.hooks` (the :class:`Callback` protocol,
the hook points in order, and the hooks :class:`SchedulerStep`, :class:`EveryNEpochs`,
:class:`EpochCheckpoint`), :mod:`.checkpoint` (:func:`save_checkpoint` /
:func:`load_checkpoint`), :mod:`.state` (:class:`TrainState`,
:class:`NonFiniteLossError`) and :mod:`.ddp` (:func:`setup_distributed`).

Example:
    >>> from compresskit.train import EpochCheckpoint, fit
    >>> saver = EpochCheckpoint("run/last.pt", {"pruner": pruner})
    >>> state = fit(model, loss_fn, loader, 10, make_optimizer, callbacks=[pruner, saver])
"""

from compresskit.train.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from compresskit.train.ddp import DistributedInfo, setup_distributed
from compresskit.train.hooks import SCHEDULER_STEP_UNITS, Callback, EpochCheckpoint, EveryNEpochs, SchedulerStep
from compresskit.train.loop import LossFn, OptimizerFactory, SchedulerFactory, fit
from compresskit.train.state import NonFiniteLossError, TrainState

__all__ = [
    "CHECKPOINT_VERSION",
    "SCHEDULER_STEP_UNITS",
    "Callback",
    "DistributedInfo",
    "EpochCheckpoint",
    "EveryNEpochs",
    "LossFn",
    "NonFiniteLossError",
    "OptimizerFactory",
    "SchedulerFactory",
    "SchedulerStep",
    "TrainState",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "setup_distributed",
]
