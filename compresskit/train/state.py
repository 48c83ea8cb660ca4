"""What the training loop shares with its hooks: :class:`TrainState` and :class:`NonFiniteLossError`.

Kept apart from the loop so that hooks and checkpoints can name the state without
importing the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["NonFiniteLossError", "TrainState"]


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
        is_main: ``False`` on the ranks other than 0 of a data-parallel run (set by
            ``fit``); hooks that write files act only where it is ``True``.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Any | None = None
    epoch: int = 0
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    stop: bool = False
    is_main: bool = True
