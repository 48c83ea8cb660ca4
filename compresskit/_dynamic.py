"""Dynamic axes of an export, and the second input shape that checks them.

A file exported with dynamic axes is only trustworthy at shapes it was run at: tracing freezes shape
arithmetic done in Python. :func:`dynamic_axes` names the axes an export leaves free (the batch of
every input and output; with ``spatial`` also the height/width of the first input and the matching
output axes), and :func:`second_inputs` builds inputs at :func:`second_shape` (batch ``+1``, height
and width grown unequally) at which the exported file is checked a second time.

Contract: pure functions of shapes; :func:`second_inputs` is deterministic (seeded generator).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["dynamic_axes", "second_inputs", "second_shape"]


def second_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """A second input shape for checking dynamic axes: batch ``+1``, height and width grown unequally.

    Each spatial size ``d`` grows by multiples of ``g``, the largest power of two dividing ``d``
    (at most 32), so strided models keep their divisibility: height ``+2g``, width ``+g``.
    ``(1, 3, 640, 640) -> (2, 3, 704, 672)``; ``(1, 3, 64, 64) -> (2, 3, 128, 96)``.
    """
    shape = list(shape)
    if not shape:
        return ()
    shape[0] += 1
    for position, factor in ((2, 2), (3, 1)):
        if len(shape) > position:
            size = shape[position]
            step = min(32, size & -size) if size > 0 else 1
            shape[position] = size + factor * step
    return tuple(shape)


def dynamic_axes(inputs: Sequence[Tensor], input_names: Sequence[str], output_names: Sequence[str],
                 outputs: Sequence[Tensor], spatial: bool) -> dict[str, dict[int, str]]:
    """Batch (axis 0) of every input and output; also axes ``2..`` of the first input if ``spatial``.

    Output axes past the batch are marked dynamic too when ``spatial`` (their sizes follow the input's,
    e.g. a detector's number of priors). Scalars get no entry.

    Returns:
        Name -> ``{axis: axis name}``, as ``torch.onnx.export`` takes it.
    """
    axes: dict[str, dict[int, str]] = {}
    for index, (name, tensor) in enumerate(zip(input_names, inputs)):
        if tensor.ndim == 0:
            continue
        axes[name] = {0: "batch"}
        if spatial and index == 0:
            axes[name].update({axis: f"{name}_{axis}" for axis in range(2, tensor.ndim)})
    for name, tensor in zip(output_names, outputs):
        if tensor.ndim == 0:
            continue
        axes[name] = {0: "batch"}
        if spatial:
            axes[name].update({axis: f"{name}_{axis}" for axis in range(1, tensor.ndim)})
    return axes


def second_inputs(inputs: Sequence[Tensor], spatial: bool, seed: int = 1) -> tuple[Tensor, ...]:
    """Inputs at the second checked shape: batch ``+1`` (and :func:`second_shape` of the first input
    if ``spatial``); floating inputs are seeded normal noise at the example's scale, others zeros."""
    generator = torch.Generator().manual_seed(seed)
    result = []
    for index, tensor in enumerate(inputs):
        if tensor.ndim == 0:
            result.append(tensor)
            continue
        shape = list(tensor.shape)
        shape[0] += 1
        if spatial and index == 0:
            shape = list(second_shape(tensor.shape))
        scale = tensor.float().std().item() if tensor.numel() > 1 else 1.0
        result.append(torch.randn(shape, generator=generator, dtype=tensor.dtype) * (scale or 1.0)
                      if tensor.is_floating_point() else tensor.new_zeros(shape))
    return tuple(result)
