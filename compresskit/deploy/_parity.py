"""Outputs of a model as named tensors, and the parity measure between an exported file and torch.

Both exporters (:mod:`compresskit.deploy._onnx_export`, :mod:`compresskit.deploy._torchscript`) name and compare
outputs the same way: a model's output (a tensor, or tuples / lists / dicts of them) is flattened by
:func:`named_outputs` into ``(name, tensor)`` pairs in the tracer's order, and each exported output is
compared with its torch counterpart by :func:`max_difference`, ``max |exported - torch|``.

Contract: :func:`torch_outputs` runs the model in eval mode under ``torch.no_grad`` and restores its
train/eval mode; :func:`max_difference` raises ``ValueError`` naming the output when the shapes differ
or the difference exceeds ``atol``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from compresskit.utils.forward import evaluating

__all__ = ["Inputs", "as_tuple", "max_difference", "named_outputs", "output_name", "torch_outputs"]

#: One tensor, or a sequence of tensors passed positionally.
Inputs = Tensor | Sequence[Tensor]


def as_tuple(example_inputs: Inputs) -> tuple[Tensor, ...]:
    """``example_inputs`` as a tuple of positional tensors.

    Raises:
        ValueError: It is neither a tensor nor a non-empty sequence of tensors.
    """
    if isinstance(example_inputs, Tensor):
        return (example_inputs,)
    inputs = tuple(example_inputs)
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        raise ValueError(
            "example_inputs must be a Tensor or a non-empty sequence of Tensors, got "
            f"{[type(t).__name__ for t in inputs]!r}"
        )
    return inputs


def output_name(key: Any) -> str:
    """A dict output's key as an ONNX output name: kept when it starts with a letter or ``_``
    (``"logits"``); otherwise prefixed, so ``{"0": y}`` exports as ``output_0`` (the exporter
    rejects names that are numbers, which it uses for its own values)."""
    name = str(key)
    return name if name[:1].isalpha() or name[:1] == "_" else f"output_{name}"


def named_outputs(output: Any, prefix: str = "output") -> list[tuple[str, Tensor]]:
    """Flatten a tensor / tuple / list / dict output into ``(name, tensor)`` pairs.

    Order matches the tracer's flattening: sequences in order, dicts in insertion order. Names:
    ``"output"`` for a single tensor, ``"output_0", "output_1", ...`` for a sequence, the keys
    (:func:`output_name`) for a dict.

    Raises:
        ValueError: A leaf is not a tensor.
    """
    if isinstance(output, Tensor):
        return [(prefix, output)]
    if isinstance(output, Mapping):
        return [
            pair
            for key, value in output.items()
            for pair in named_outputs(value, output_name(key) if prefix == "output" else f"{prefix}.{key}")
        ]
    if isinstance(output, (tuple, list)):
        return [
            pair
            for index, value in enumerate(output)
            for pair in named_outputs(value, f"{prefix}_{index}")
        ]
    raise ValueError(
        f"model outputs must be Tensors, tuples/lists or dicts of them; got {type(output).__name__}"
    )


def torch_outputs(model: nn.Module, inputs: tuple[Tensor, ...]) -> list[tuple[str, Tensor]]:
    """:func:`named_outputs` of ``model(*inputs)`` in eval mode without gradients (mode restored)."""
    with evaluating(model):
        return named_outputs(model(*inputs))


def max_difference(name: str, actual: np.ndarray, expected: np.ndarray, atol: float) -> float:
    """``max |actual - expected|`` (NaN at the same place on both sides counts as equal).

    Raises:
        ValueError: The shapes differ, or the difference exceeds ``atol`` (the message names ``name``).
    """
    if actual.shape != expected.shape:
        raise ValueError(
            f"output {name!r}: exported shape {tuple(actual.shape)} != torch shape {tuple(expected.shape)}")
    if expected.size == 0:
        return 0.0
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    both_nan = np.isnan(actual) & np.isnan(expected)
    diff = np.where(both_nan, 0.0, np.nan_to_num(diff, nan=math.inf))
    max_diff = float(diff.max())
    if max_diff > atol:
        raise ValueError(f"output {name!r}: max abs diff {max_diff:.3g} > atol {atol:g}")
    return max_diff
