"""What the data-driven steps (reconstruct, output_error, batchnorm) share: calibration inputs as positional
arguments, which layers are dense, and a dense layer's input rows at sampled output positions."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["as_args", "input_rows", "is_dense"]


def as_args(inputs: Any) -> tuple[Any, ...]:
    """A calibration batch as positional inputs: a tuple/list as is, anything else as a 1-tuple."""
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def is_dense(module: nn.Module) -> bool:
    """A layer that mixes all its input channels: ``nn.Linear`` or a ``groups == 1`` ``nn.Conv2d``."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def input_rows(layer: nn.Module, inputs: torch.Tensor, positions: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(rows, chosen)``: ``layer``'s input as one row per output position, ``(P, C*k*k)`` for a conv (its
    unfolded patches at ``positions`` output positions drawn with ``generator``; ``chosen`` their indices)
    or ``(P, in)`` for a Linear (every position; ``chosen`` is ``None``)."""
    if isinstance(layer, nn.Linear):
        return inputs.reshape(-1, inputs.shape[-1]), None  # (..., in) -> (P, in)
    patches = F.unfold(inputs, layer.kernel_size, dilation=layer.dilation, padding=layer.padding,
                       stride=layer.stride)  # (N, C*k*k, L)
    chosen = torch.randperm(patches.shape[-1], generator=generator)[:positions].to(patches.device)
    return patches[:, :, chosen].transpose(1, 2).reshape(-1, patches.shape[1]), chosen  # (N*l, C*k*k)
