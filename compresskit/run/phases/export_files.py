"""Phase ``export``: the final model in ONNX, checked with ONNX Runtime -> ``model.onnx``.

Input: ``final.pt``. Output: ``model.onnx``. The export inputs are the task's example inputs, the
first resized to ``export.input_size`` and random values drawn from the run's seed
(:func:`export_inputs`, shared with the quantize phase). Skipped with ``export.onnx: false``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from compresskit.run.context import ModelSource, load_run_model
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task

__all__ = ["Config", "export_inputs", "run"]


@dataclass(frozen=True)
class Config:
    """What the export phase reads (the recipe's ``export`` section).

    Attributes:
        student: The student (``final.pt`` is trusted to name its builder).
        onnx: Export at all.
        input_size: ``(height, width)`` of the first input, or ``None`` for the example inputs' size.
        opset: ONNX opset, or ``None`` for the exporter's default.
        atol: Largest accepted |ONNX Runtime - PyTorch| difference.
        seed: The run's seed (the export inputs' values).
    """

    student: ModelSource
    onnx: bool = True
    input_size: tuple[int, int] | None = None
    opset: int | None = None
    atol: float = 1e-4
    seed: int = 0


def export_inputs(config: Config, task: Task) -> tuple[torch.Tensor, ...]:
    """The task's example inputs, the first resized to ``input_size``, floats drawn from ``seed``."""
    generator = torch.Generator().manual_seed(config.seed)
    result = []
    for index, tensor in enumerate(task.example_inputs()):
        shape = list(tensor.shape)
        if index == 0 and config.input_size is not None and tensor.ndim == 4:
            shape[2:] = list(config.input_size)
        result.append(torch.randn(shape, generator=generator, dtype=tensor.dtype)
                      if tensor.is_floating_point() else tensor)
    return tuple(result)


def run(config: Config, workspace: Workspace, task: Task) -> dict[str, Any]:
    """Export ``final.pt`` -> ``model.onnx``; returns its path, size, input shapes and largest difference."""
    if not config.onnx:
        return {"skipped": "export.onnx is false"}
    from compresskit.deploy.export import check_onnx, export_onnx

    model = load_run_model(workspace, task, config.student, "final.pt").eval()
    inputs = export_inputs(config, task)
    path = export_onnx(model, inputs, workspace.path("model.onnx"), opset=config.opset)
    difference = check_onnx(path, model, inputs, atol=config.atol)
    return {"path": "model.onnx", "max_abs_difference": float(difference),
            "bytes": os.path.getsize(path), "input_shapes": [list(t.shape) for t in inputs]}
