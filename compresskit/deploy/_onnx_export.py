"""ONNX export of a model, written atomically and checked, and its parity check in ONNX Runtime.

:func:`export_onnx` traces the model with the TorchScript-based exporter (``dynamo=False``; see
:mod:`compresskit.deploy.export` for why), writes the file to a temporary path beside the destination,
adds the metadata, validates it with ``onnx.checker`` and only then moves it into place.
:func:`check_onnx` runs the file with ONNX Runtime on the CPU and compares every output with the
PyTorch model, returning the largest absolute difference.

Contract: the destination never holds a partial file; the model's train/eval mode is restored;
bad names, shapes or differences raise ``ValueError`` naming the output.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from compresskit.deploy._metadata import write_metadata
from compresskit.deploy._parity import Inputs, as_tuple, max_difference, torch_outputs
from compresskit.utils.atomic import atomic_path, writable_path

__all__ = ["check_onnx", "export_onnx"]

DynamicAxes = Mapping[str, Mapping[int, str] | Sequence[int]]


def export_onnx(
    model: nn.Module,
    example_inputs: Inputs,
    path: str | os.PathLike[str],
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] | None = None,
    dynamic_axes: DynamicAxes | None = None,
    opset: int = 17,
    metadata: Mapping[str, str] | None = None,
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
        metadata: Written into the file's ``metadata_props`` (e.g. :meth:`Preprocessing.to_metadata`).

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
    path = writable_path(path)
    inputs = as_tuple(example_inputs)
    names = _checked_names(model, inputs, input_names, output_names)
    was_training = model.training
    model.eval()
    try:
        with atomic_path(path) as temporary:
            _write_onnx(model, inputs, temporary, names, dynamic_axes, opset)
            if metadata:
                write_metadata(temporary, metadata)
            onnx.checker.check_model(str(temporary))
    finally:
        model.train(was_training)
    return path


def _checked_names(model: nn.Module, inputs: tuple[Tensor, ...], input_names: Sequence[str],
                   output_names: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """``(input names, output names)``, one per input and per flattened output (one forward pass)."""
    input_names = list(input_names)
    if len(input_names) != len(inputs):
        raise ValueError(
            f"input_names has {len(input_names)} names {input_names!r} for {len(inputs)} inputs"
        )
    flat_outputs = torch_outputs(model, inputs)
    if output_names is None:
        output_names = [name for name, _ in flat_outputs]
    output_names = list(output_names)
    if len(output_names) != len(flat_outputs):
        raise ValueError(
            f"output_names has {len(output_names)} names {output_names!r} "
            f"for {len(flat_outputs)} outputs"
        )
    return input_names, output_names


def _write_onnx(model: nn.Module, inputs: tuple[Tensor, ...], path: Path, names: tuple[list[str], list[str]],
                dynamic_axes: DynamicAxes | None, opset: int) -> None:
    """``torch.onnx.export`` with the TorchScript-based exporter, its deprecation warnings silenced."""
    input_names, output_names = names
    with warnings.catch_warnings():
        # The legacy exporter announces its own deprecation on every call.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*feature will be removed.*")
        torch.onnx.export(
            model,
            inputs,
            path,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=None if dynamic_axes is None else dict(dynamic_axes),
            opset_version=opset,
            dynamo=False,
        )


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
    inputs = as_tuple(example_inputs)

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
    expected = torch_outputs(model, inputs)
    if len(onnx_outputs) != len(expected):
        raise ValueError(
            f"{str(path)!r} has {len(onnx_outputs)} outputs {output_names!r}, "
            f"the model returns {len(expected)}"
        )
    worst = 0.0
    for name, actual, (_, expected_tensor) in zip(output_names, onnx_outputs, expected):
        worst = max(worst, max_difference(name, actual, expected_tensor.detach().cpu().numpy(), atol))
    return worst
