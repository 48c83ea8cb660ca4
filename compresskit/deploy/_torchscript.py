"""TorchScript export (a ``torch.jit.trace``) and its parity check against the PyTorch model.

:func:`export_torchscript` traces the model in eval mode and saves the archive atomically with the
deployment metadata as an extra file (:data:`~compresskit.deploy._metadata.TORCHSCRIPT_METADATA`);
:func:`check_torchscript` loads it back and compares every output with the model.

Caveat: a trace records one path; data-dependent control flow and Python shape arithmetic are frozen
at the example input (:func:`compresskit.deploy.export.export_model` checks a second shape to catch it).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from compresskit.deploy._metadata import TORCHSCRIPT_METADATA
from compresskit.deploy._parity import Inputs, as_tuple, max_difference, named_outputs, torch_outputs
from compresskit.utils.atomic import atomic_path

__all__ = ["check_torchscript", "export_torchscript"]


def export_torchscript(model: nn.Module, inputs: tuple[Tensor, ...], path: Path,
                       metadata: Mapping[str, str]) -> Path:
    """Trace ``model`` (eval mode, restored after) on ``inputs`` and save it to ``path`` atomically.

    Args:
        model: The model to trace.
        inputs: Positional example inputs.
        path: Destination file (its folder must exist).
        metadata: String entries stored in the archive (read back with
            :func:`compresskit.deploy.export.read_metadata`).

    Returns:
        ``path``.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            traced = torch.jit.trace(model, inputs, check_trace=False, strict=False)
        with atomic_path(path) as temporary:
            torch.jit.save(traced, str(temporary), _extra_files={TORCHSCRIPT_METADATA: json.dumps(dict(metadata))})
    finally:
        model.train(was_training)
    return path


def check_torchscript(path: str | os.PathLike[str], model: nn.Module, example_inputs: Inputs,
                      atol: float = 1e-4) -> float:
    """Load a TorchScript file and compare every output with ``model`` (as :func:`compresskit.deploy.export.check_onnx`).

    Returns:
        The largest absolute difference over all outputs.

    Raises:
        ValueError: As :func:`compresskit.deploy.export.check_onnx`.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"TorchScript file {str(path)!r} does not exist")
    inputs = as_tuple(example_inputs)
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        actual = named_outputs(loaded(*inputs))
    expected = torch_outputs(model, inputs)
    if len(actual) != len(expected):
        raise ValueError(f"{str(path)!r} has {len(actual)} outputs, the model returns {len(expected)}")
    worst = 0.0
    for (name, got), (_, want) in zip(actual, expected):
        worst = max(worst, max_difference(name, got.numpy(), want.detach().cpu().numpy(), atol))
    return worst
