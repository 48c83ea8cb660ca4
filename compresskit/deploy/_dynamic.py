"""Dynamic axes of an export, and the second input shape that checks them.

A file exported with dynamic axes is only trustworthy at shapes it was run at: tracing freezes shape
arithmetic done in Python. :func:`dynamic_axes` names the axes an export leaves free (the batch of
every input and output; with ``spatial`` also the height/width of the first input and the matching
output axes), and :func:`second_inputs` builds inputs at :func:`second_shape` (batch ``+1``, height
and width grown unequally) at which the exported file is checked a second time. A spatially dynamic
file is checked a third time at :func:`uneven_shape` (height and width grown by odd amounts), where
Python shape arithmetic frozen at an even example size (e.g. "same" padding) shows.

Contract: pure functions of shapes; :func:`second_inputs` is deterministic (seeded generator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["dynamic_axes", "second_inputs", "second_shape", "uneven_inputs", "uneven_shape"]


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


def uneven_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """A third input shape for spatially dynamic files: height ``+17``, width ``+9``, batch unchanged.

    Odd offsets flip the parity of the size and of its first stride-2 halvings (640 -> 657: 329, 165, 83
    against 320, 160, 80), where :func:`second_shape` keeps them: ``(1, 3, 640, 640) -> (1, 3, 657, 649)``.
    Shapes without height/width come back as given.
    """
    shape = list(shape)
    for position, offset in ((2, 17), (3, 9)):
        if len(shape) > position:
            shape[position] += offset
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
    return _inputs_like(inputs, lambda index, shape: (
        second_shape(shape) if spatial and index == 0 else (shape[0] + 1, *shape[1:])), seed)


def uneven_inputs(inputs: Sequence[Tensor], seed: int = 2) -> tuple[Tensor, ...]:
    """Inputs at the third checked shape: :func:`uneven_shape` of the first input, the others as given
    in shape; values drawn as in :func:`second_inputs`."""
    return _inputs_like(inputs, lambda index, shape: uneven_shape(shape) if index == 0 else tuple(shape), seed)


def _inputs_like(inputs: Sequence[Tensor], shape_of: Callable[[int, tuple[int, ...]], Sequence[int]],
                 seed: int) -> tuple[Tensor, ...]:
    """``shape_of(index, shape)`` for every non-scalar input: seeded noise at the example's scale
    (floating inputs) or zeros (others); scalars are passed through."""
    generator = torch.Generator().manual_seed(seed)
    result = []
    for index, tensor in enumerate(inputs):
        if tensor.ndim == 0:
            result.append(tensor)
            continue
        shape = list(shape_of(index, tuple(tensor.shape)))
        scale = tensor.float().std().item() if tensor.numel() > 1 else 1.0
        result.append(torch.randn(shape, generator=generator, dtype=tensor.dtype) * (scale or 1.0)
                      if tensor.is_floating_point() else tensor.new_zeros(shape))
    return tuple(result)
