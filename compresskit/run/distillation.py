"""What a training phase trains when it distils: the student plus the weighted distillation loss.

:func:`with_distillation` wraps a student and a (frozen) teacher into ``(module, loss_fn, no_decay)``
for :func:`compresskit.run.training.train_phase`: ``module`` (:class:`DistillModule`) holds the
student and the learnable loss weights, so an epoch checkpoint holds both; the weights get no weight
decay. The distill phase always trains this way (the task loss alone without a teacher); the
soft-pruning and fine-tuning phases do when the recipe lists them in ``distill.phases``
(:func:`phase_training`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compresskit.run.context import ModelSource
from compresskit.run.training import LossFn, task_loss_fn
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task
from compresskit.train import distributed

__all__ = ["DistillModule", "Distillation", "load_teacher", "phase_training", "with_distillation"]

NoDecay = Callable[[nn.Module], list[nn.Parameter]]


@dataclass(frozen=True)
class Distillation:
    """The distillation loss settings (the recipe's ``distill`` section) and the teacher to distil from.

    Attributes:
        teacher: The teacher, loaded from the run's ``teacher.pt``; ``None``: no teacher.
        temperature: Softmax temperature of the logit terms.
        alpha: Weight of the distillation terms against the task loss (fixed weights).
        learnable_weights: Learn the weights of the terms (Kendall uncertainty weighting) instead.
    """

    teacher: ModelSource | None
    temperature: float = 4.0
    alpha: float = 0.5
    learnable_weights: bool = False


class DistillModule(nn.Module):
    """Student + distillation loss weights in one module, so checkpoints hold both."""

    def __init__(self, student: nn.Module, distill: nn.Module | None) -> None:
        super().__init__()
        self.student = student
        self.distill = distill

    def forward(self, *inputs: Any) -> Any:  # the student, called through the DDP wrapper under torchrun
        return self.student(*inputs)


def load_teacher(workspace: Workspace, task: Task, teacher: ModelSource | None) -> nn.Module | None:
    """The teacher from the run's ``teacher.pt`` (train mode), or ``None`` without a teacher."""
    if teacher is None:
        return None
    model = teacher.build(task)
    model.load_state_dict(workspace.load_state_dict("teacher.pt"))
    return model


def with_distillation(task: Task, student: nn.Module, teacher: nn.Module | None,
                      config: Distillation) -> tuple[DistillModule, LossFn, NoDecay]:
    """``(module, loss_fn, no_decay)`` training ``student`` with weighted distillation from ``teacher``
    (the task loss alone when ``teacher`` is ``None``); ``module`` holds the student and the loss weights."""
    from compresskit.distill.losses import WeightedDistillation

    distill = None
    if teacher is not None:
        teacher.eval().requires_grad_(False).to(distributed.device())
        distill = WeightedDistillation(
            list(task.distill_kinds), temperature=config.temperature, alpha=config.alpha,
            log_variance_range=(-4.0, 4.0) if config.learnable_weights else None)

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        inputs = task.inputs(batch)
        outputs = model(*inputs)
        task_loss, logs = task.task_loss(outputs, batch)
        if teacher is None:
            return task_loss, logs
        with torch.no_grad():
            teacher_outputs = teacher(*inputs)
        distill_term = getattr(model, "module", model).distill  # unwrap DDP
        return distill_term(outputs, teacher_outputs, task_loss, mask=task.distill_mask(outputs, batch))

    return (DistillModule(student, distill), loss_fn,
            lambda m: list(m.distill.weight_parameters()) if m.distill is not None else [])


def phase_training(workspace: Workspace, task: Task, model: nn.Module,
                   distillation: Distillation | None) -> tuple[nn.Module, LossFn, NoDecay | None]:
    """What a later phase (soft pruning, fine-tuning) trains: ``model`` on the task loss, or, with
    ``distillation`` (the phase is in ``distill.phases`` and there is a teacher), ``model`` plus
    distillation from the run's teacher."""
    if distillation is not None and distillation.teacher is not None:
        return with_distillation(task, model, load_teacher(workspace, task, distillation.teacher), distillation)
    return model, task_loss_fn(task), None
