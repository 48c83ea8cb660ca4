"""Phase ``evaluate``: params, MACs, latency and task metrics of teacher, student and final -> ``evaluation.json``.

Inputs: ``teacher.pt`` (with a teacher), ``student.pt``, ``final.pt``. Output: ``evaluation.json``
keyed ``teacher`` / ``student`` / ``pruned`` (:func:`compresskit.run.measure.profile` of each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from compresskit.run.context import ModelSource, load_run_model
from compresskit.run.distillation import load_teacher
from compresskit.run.measure import profile
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task

__all__ = ["Config", "run"]


@dataclass(frozen=True)
class Config:
    """What the evaluation phase reads.

    Attributes:
        student: The student.
        teacher: The teacher, or ``None`` without one.
    """

    student: ModelSource
    teacher: ModelSource | None = None


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
    evaluation = {name: profile(task, model) for name, model in models.items()}
    workspace.write_json("evaluation.json", evaluation)
    return {name: {"params": v["params"], "metrics": v["metrics"]} for name, v in evaluation.items()}
