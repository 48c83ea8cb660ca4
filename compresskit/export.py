"""ONNX export of (pruned) models and an ONNX Runtime parity check.

:func:`export_onnx` writes a checked ``.onnx`` file atomically; :func:`check_onnx`
runs it with ONNX Runtime on the CPU and compares every output against the
PyTorch model, returning the largest absolute difference.

Exporter choice: torch 2.9+ defaults ``torch.onnx.export`` to the
``torch.export``-based ("dynamo") exporter, which needs the ``onnxscript``
package; it is not a dependency of compresskit (and is absent in our
environment). We therefore call the TorchScript-based exporter explicitly
(``dynamo=False``). It still works in torch 2.13, handles every model in our
test zoo (residuals, concat, grouped convs, channel shuffle, transposed convs,
gating) and takes ``dynamic_axes`` directly. Its deprecation warnings are
silenced here.

Caveats:
    * The TorchScript exporter is deprecated upstream; when it is removed this
      module must move to the dynamo exporter (and add ``onnxscript``).
    * Tracing records one path: data-dependent Python control flow is frozen at
      the example input.
    * Models over 2 GiB (ONNX external data) are not supported by the atomic
      write, which moves a single file.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from ._atomic import atomic_path

__all__ = ["check_onnx", "export_onnx"]

Inputs = Tensor | Sequence[Tensor]


def _as_tuple(example_inputs: Inputs) -> tuple[Tensor, ...]:
    if isinstance(example_inputs, Tensor):
        return (example_inputs,)
    inputs = tuple(example_inputs)
    if not inputs or not all(isinstance(t, Tensor) for t in inputs):
        raise ValueError(
            "example_inputs must be a Tensor or a non-empty sequence of Tensors, got "
            f"{[type(t).__name__ for t in inputs]!r}"
        )
    return inputs


def _flatten_outputs(output: Any, prefix: str = "output") -> list[tuple[str, Tensor]]:
    """Flatten a tensor / tuple / list / dict output into ``(name, tensor)`` pairs.

    Order matches the tracer's flattening: sequences in order, dicts in insertion order.
    """
    if isinstance(output, Tensor):
        return [(prefix, output)]
    if isinstance(output, Mapping):
        return [
            pair
            for key, value in output.items()
            for pair in _flatten_outputs(value, str(key) if prefix == "output" else f"{prefix}.{key}")
        ]
    if isinstance(output, (tuple, list)):
        return [
            pair
            for index, value in enumerate(output)
            for pair in _flatten_outputs(value, f"{prefix}_{index}")
        ]
    raise ValueError(
        f"model outputs must be Tensors, tuples/lists or dicts of them; got {type(output).__name__}"
    )


def _run_torch(model: nn.Module, inputs: tuple[Tensor, ...]) -> list[tuple[str, Tensor]]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _flatten_outputs(model(*inputs))
    finally:
        model.train(was_training)


def export_onnx(
    model: nn.Module,
    example_inputs: Inputs,
    path: str | os.PathLike[str],
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] | None = None,
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None = None,
    opset: int = 17,
) -> Path:
    """Export ``model`` (in eval mode) to ONNX, write atomically, and check the graph.

    The model is traced with ``example_inputs`` by the TorchScript-based
    exporter, written to a temporary file next to ``path``, validated with
    ``onnx.checker.check_model``, and moved into place with ``os.replace`` so
    that ``path`` never holds a partial file. The model's train/eval mode is
    restored afterwards.

    Args:
        model: The model to export.
        example_inputs: One tensor, or a sequence of tensors passed positionally.
        path: Destination ``.onnx`` file; its directory must exist.
        input_names: One name per input.
        output_names: One name per flattened output. Defaults to ``"output"``
            for a single tensor, ``"output_0", "output_1", ...`` for a tuple or
            list, and the keys for a dict.
        dynamic_axes: As ``torch.onnx.export``, e.g. ``{"input": {0: "batch"}}``.
        opset: ONNX opset version.

    Returns:
        The resolved path of the written file.

    Raises:
        ValueError: If the directory of ``path`` does not exist, the number of
            names does not match the inputs/outputs, or outputs are not tensors
            (or tuples/lists/dicts of tensors).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> x = torch.randn(1, 3, 8, 8)
        >>> onnx_path = export_onnx(model, x, tmp_dir / "model.onnx")  # doctest: +SKIP
        >>> check_onnx(onnx_path, model, x) <= 1e-4  # doctest: +SKIP
        True
    """
    path = Path(path).expanduser().resolve()
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    inputs = _as_tuple(example_inputs)
    input_names = list(input_names)
    if len(input_names) != len(inputs):
        raise ValueError(
            f"input_names has {len(input_names)} names {input_names!r} for {len(inputs)} inputs"
        )
    flat_outputs = _run_torch(model, inputs)
    if output_names is None:
        output_names = [name for name, _ in flat_outputs]
    output_names = list(output_names)
    if len(output_names) != len(flat_outputs):
        raise ValueError(
            f"output_names has {len(output_names)} names {output_names!r} "
            f"for {len(flat_outputs)} outputs"
        )

    was_training = model.training
    model.eval()
    try:
        with atomic_path(path) as temporary, warnings.catch_warnings():
            # The legacy exporter announces its own deprecation on every call.
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=".*feature will be removed.*")
            torch.onnx.export(
                model,
                inputs,
                temporary,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=None if dynamic_axes is None else dict(dynamic_axes),
                opset_version=opset,
                dynamo=False,
            )
            onnx.checker.check_model(str(temporary))
    finally:
        model.train(was_training)
    return path


def check_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    example_inputs: Inputs,
    atol: float = 1e-4,
) -> float:
    """Run the ONNX file with ONNX Runtime and compare every output with ``model``.

    For each output ``k`` (matched by position after flattening tuples, lists
    and dicts as :func:`export_onnx` does) the difference is
    ``d_k = max |onnx_k - torch_k|``; the result is ``max_k d_k``.

    Args:
        path: An ``.onnx`` file, e.g. from :func:`export_onnx`.
        model: The PyTorch model it should match; run in eval mode under
            ``torch.no_grad`` (its mode is restored).
        example_inputs: One tensor or a sequence of tensors, fed to the ONNX
            inputs in order.
        atol: Largest accepted absolute difference (``>= 0``).

    Returns:
        The largest absolute difference over all outputs.

    Raises:
        ValueError: If ``path`` does not exist, ``atol`` is negative, the number
            of inputs or outputs differs, an output's shape differs, or an
            output differs by more than ``atol`` (the message names the output
            and the difference).
    """
    import onnxruntime as ort  # heavy import, only needed here

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ONNX file {str(path)!r} does not exist")
    if not (isinstance(atol, (int, float)) and atol >= 0):
        raise ValueError(f"atol must be a number >= 0, got {atol!r}")
    inputs = _as_tuple(example_inputs)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session_inputs = session.get_inputs()
    if len(session_inputs) != len(inputs):
        raise ValueError(
            f"{str(path)!r} has {len(session_inputs)} inputs "
            f"{[i.name for i in session_inputs]!r}, got {len(inputs)} example inputs"
        )
    feed = {meta.name: t.detach().cpu().numpy() for meta, t in zip(session_inputs, inputs)}
    onnx_outputs = session.run(None, feed)
    output_names = [meta.name for meta in session.get_outputs()]
    torch_outputs = _run_torch(model, inputs)
    if len(onnx_outputs) != len(torch_outputs):
        raise ValueError(
            f"{str(path)!r} has {len(onnx_outputs)} outputs {output_names!r}, "
            f"the model returns {len(torch_outputs)}"
        )

    worst = 0.0
    for name, actual, (_, expected_tensor) in zip(output_names, onnx_outputs, torch_outputs):
        expected = expected_tensor.detach().cpu().numpy()
        if actual.shape != expected.shape:
            raise ValueError(
                f"output {name!r}: ONNX shape {tuple(actual.shape)} != torch shape {tuple(expected.shape)}"
            )
        if expected.size == 0:
            continue
        diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        # NaN in either side (but not both at the same place) counts as an infinite difference.
        both_nan = np.isnan(actual) & np.isnan(expected)
        diff = np.where(both_nan, 0.0, np.nan_to_num(diff, nan=math.inf))
        max_diff = float(diff.max())
        if max_diff > atol:
            raise ValueError(f"output {name!r}: max abs diff {max_diff:.3g} > atol {atol:g}")
        worst = max(worst, max_diff)
    return worst
