"""One observing forward pass: a model run once in eval mode, without gradients, with forward hooks.

Several modules look inside a model by running it once with hooks on some layers (output sizes for the
latency features, bypass shape checks). :func:`forward_with_hooks` is that pattern written once: the
model's train/eval mode is restored and every hook removed, whatever the forward raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["forward_with_hooks"]

ForwardHook = Callable[[nn.Module, Any, Any], None]


def forward_with_hooks(model: nn.Module, inputs: Sequence[torch.Tensor],
                       hooks: Iterable[tuple[nn.Module, ForwardHook]]) -> None:
    """Run ``model(*inputs)`` once in eval mode under ``torch.no_grad()`` with ``hooks`` registered.

    Args:
        model: The model; its ``training`` flag is the same afterwards.
        inputs: Positional inputs of one forward.
        hooks: ``(module, hook)`` pairs, each registered with ``module.register_forward_hook(hook)``
            for this forward only.
    """
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
