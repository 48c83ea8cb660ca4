"""Phase ``distill``: train the student with weighted distillation from the teacher -> ``student.pt``.

Inputs: ``teacher.pt`` (with a teacher). Output: ``student.pt`` (its state_dict). The student starts
from ``student.checkpoint``, from the teacher's matching tensors (``student.init_from: teacher``) or
from its initialisation; without a teacher it trains on the task loss alone. Summary: the start, the
parameter count, the task's metrics and, with a teacher, the learnt log-variances of the loss terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from compresskit.config import TrainConfig
from compresskit.pruning.budget import count_params
from compresskit.run.context import ModelSource
from compresskit.run.distillation import Distillation, load_teacher, with_distillation
from compresskit.run.evaluations import cached_metrics
from compresskit.run.training import train_phase
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task

__all__ = ["Config", "run"]


@dataclass(frozen=True)
class Config:
    """What the distill phase reads.

    Attributes:
        student: The student to build.
        distillation: The loss settings and the teacher (``teacher`` is ``None`` without one).
        train: Epochs, optimizer and schedule (the recipe's ``distill`` section).
        checkpoint: ``student.checkpoint``: weights the student starts from.
        init_from: ``"teacher"``: start from the teacher's tensors of matching name and shape.
        seed: The run's seed (data shards under ``torchrun``).
    """

    student: ModelSource
    distillation: Distillation
    train: TrainConfig
    checkpoint: Path | None = None
    init_from: str | None = None
    seed: int = 0


def run(config: Config, workspace: Workspace, task: Task) -> dict[str, Any]:
    """Distil the student -> ``student.pt``; returns ``params``, ``start``, ``metrics`` (and ``log_variances``)."""
    student = config.student.build(task)
    teacher = load_teacher(workspace, task, config.distillation.teacher)
    start = _initialise(config, workspace, task, student, teacher)
    wrapper, loss_fn, no_decay = with_distillation(task, student, teacher, config.distillation)
    train_phase(workspace, task, "distill", wrapper, loss_fn, config.train, seed=config.seed, no_decay=no_decay,
                evaluate=lambda: cached_metrics(workspace, task, student, reuse=False))
    workspace.save(student.state_dict(), "student.pt")
    summary: dict[str, Any] = {"params": count_params(student), "start": start,
                               "metrics": cached_metrics(workspace, task, student)}
    if wrapper.distill is not None:
        summary["log_variances"] = [float(v) for v in wrapper.distill.log_variances().detach()]
    return summary


def _initialise(config: Config, workspace: Workspace, task: Task, student: nn.Module,
                teacher: nn.Module | None) -> dict[str, Any]:
    """Load ``student.checkpoint`` or inherit from the teacher (``student.init_from``); say which."""
    from compresskit.models.weights import inherit_matching, load_weights

    if config.checkpoint is not None:
        load_weights(task, student, config.checkpoint)
        workspace.log(f"[distill] student starts from {config.checkpoint}")
        return {"source": str(config.checkpoint)}
    if config.init_from == "teacher" and teacher is not None:
        inherited = inherit_matching(student, teacher)
        workspace.log(f"[distill] {inherited.describe()}")
        return {"source": "teacher", "inherited_tensors": inherited.tensors,
                "inherited_params": inherited.params, "shape_mismatches": len(inherited.skipped)}
    return {"source": "initialised"}
