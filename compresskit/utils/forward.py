"""Observing forward passes: a model run in eval mode, without gradients, its mode restored afterwards.

:func:`evaluating` is that context written once (parity checks, MAC counting, input checks, validation
losses, tracing fallbacks); :func:`forward_with_hooks` adds forward hooks on some layers for one pass
(output sizes for the latency features, bypass shape checks). The model's train/eval mode is restored and
every hook removed, whatever the forward raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["evaluating", "forward_with_hooks"]

ForwardHook = Callable[[nn.Module, Any, Any], None]


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode under ``torch.no_grad()``; its ``training`` flag is restored on exit."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


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
    try:
        with evaluating(model):
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
