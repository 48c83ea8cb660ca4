"""Phase ``evaluate``: params, MACs, latency and task metrics of teacher, student and final -> ``evaluation.json``.

Inputs: ``teacher.pt`` (with a teacher), ``student.pt``, ``final.pt``. Output: ``evaluation.json``
keyed ``teacher`` / ``student`` / ``pruned`` (:func:`compresskit.run.measure.profile` of each: eager latency
with the models interleaved in the same rounds; metrics reused when an earlier phase scored the same weights,
:mod:`compresskit.run.evaluations`), and, with ``export.onnx``, ``onnxruntime_latency.json``: the models exported
and timed with ONNX Runtime at the export input size, 1 thread, interleaved, as milliseconds and as paired
ratios to the unpruned student (:func:`compresskit.run.measure.onnxruntime_latency`) -- the speed-up a
deployment sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from compresskit.run.context import ModelSource, load_run_model
from compresskit.run.distillation import load_teacher
from compresskit.run.evaluations import cached_metrics
from compresskit.run.measure import onnxruntime_latency, profile
from compresskit.run.phases import export_files
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task

__all__ = ["ORT_FILE", "Config", "run"]

ORT_FILE = "onnxruntime_latency.json"


@dataclass(frozen=True)
class Config:
    """What the evaluation phase reads.

    Attributes:
        student: The student.
        teacher: The teacher, or ``None`` without one.
        export: The export settings (input size, seed); ``None`` or ``onnx: false``: no ONNX Runtime timing.
    """

    student: ModelSource
    teacher: ModelSource | None = None
    export: export_files.Config | None = None


def run(config: Config, workspace: Workspace, task: Task) -> dict[str, Any]:
    """Profile every model -> ``evaluation.json``; returns each one's ``params`` and ``metrics``."""
    models: dict[str, nn.Module] = {}
    teacher = load_teacher(workspace, task, config.teacher)
    if teacher is not None:
        models["teacher"] = teacher
    student = config.student.build(task)
    student.load_state_dict(workspace.load_state_dict("student.pt"))
    models["student"] = student
    models["pruned"] = load_run_model(workspace, task, config.student, "final.pt")
    evaluation = profile(task, models, lambda model: cached_metrics(workspace, task, model))
    workspace.write_json("evaluation.json", evaluation)
    if config.export is not None and config.export.onnx:  # the unpruned student first: ratios are to it
        order = ["student", "pruned", *(["teacher"] if "teacher" in models else [])]
        workspace.write_json(ORT_FILE, onnxruntime_latency({name: models[name] for name in order},
                                                           export_files.export_inputs(config.export, task)))
    return {name: {"params": v["params"], "metrics": v["metrics"]} for name, v in evaluation.items()}
