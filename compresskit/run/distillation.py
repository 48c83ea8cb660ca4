"""What a training phase trains when it distils: the student plus the weighted distillation loss.

:func:`with_distillation` wraps a student and a (frozen) teacher into ``(module, loss_fn, no_decay)``
for :func:`compresskit.run.training.train_phase`: ``module`` (:class:`DistillModule`) holds the
student and the learnable loss weights, so an epoch checkpoint holds both; the weights get no weight
decay. The distill phase always trains this way (the task loss alone without a teacher); the
soft-pruning and fine-tuning phases do when the recipe lists them in ``distill.phases``
(:func:`phase_training`).

The loss is ``alpha * (KD_outputs + feature_weight * KD_features) + (1 - alpha) * task``: the output terms
(:class:`~compresskit.distill.losses.WeightedDistillation`), the feature term over the modules of
``distill.features`` (:func:`~compresskit.distill.features.feature_loss`; a pruned student is matched on the
teacher channels it kept, the removal's ``kept_channels.json``) and the task loss, not computed at
``alpha == 1``. Teacher outputs are computed at every step, never cached: the training crops are random,
so no two epochs show the teacher the same input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compresskit.distill.features import FeatureRecorder, feature_loss, find_modules
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
        features: Globs of the modules whose outputs are distilled too (none: model outputs only).
        feature_weight: Weight of the feature term beside the output terms.
        freeze_bn: The student's BatchNorm layers stay in eval mode while training.
        masks: The output terms' masks from the batch's ``labels`` (``task.distill_mask``) or from the
            ``teacher``'s outputs (``task.teacher_mask``, if the task has one; else every prediction).
    """

    teacher: ModelSource | None
    temperature: float = 4.0
    alpha: float = 0.5
    learnable_weights: bool = False
    features: tuple[str, ...] = ()
    feature_weight: float = 1.0
    freeze_bn: bool = False
    masks: str = "labels"


class DistillModule(nn.Module):
    """Student + distillation loss weights in one module, so checkpoints hold both.

    With ``freeze_bn``, :meth:`train` leaves the student's BatchNorm layers in eval mode (running statistics
    used and kept, as the teacher's; their affine weights still train).
    """

    def __init__(self, student: nn.Module, distill: nn.Module | None, freeze_bn: bool = False) -> None:
        super().__init__()
        self.student = student
        self.distill = distill
        self.freeze_bn = freeze_bn

    def train(self, mode: bool = True) -> DistillModule:
        super().train(mode)
        if self.freeze_bn:
            for module in self.student.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, *inputs: Any) -> Any:  # the student, called through the DDP wrapper under torchrun
        return self.student(*inputs)


def load_teacher(workspace: Workspace, task: Task, teacher: ModelSource | None) -> nn.Module | None:
    """The teacher from the run's ``teacher.pt`` (train mode), or ``None`` without a teacher."""
    if teacher is None:
        return None
    model = teacher.build(task)
    model.load_state_dict(workspace.load_state_dict("teacher.pt"))
    return model


def with_distillation(task: Task, student: nn.Module, teacher: nn.Module | None, config: Distillation,
                      kept: Mapping[str, Sequence[int]] | None = None) -> tuple[DistillModule, LossFn, NoDecay]:
    """``(module, loss_fn, no_decay)`` training ``student`` with weighted distillation from ``teacher``
    (the task loss alone when ``teacher`` is ``None``); ``module`` holds the student and the loss weights.
    ``kept``: per distilled module whose channels the (pruned) student lost, the teacher channels it kept.

    Raises:
        ValueError: A ``config.features`` glob matches no module, or the teacher lacks a matched module.
    """
    from compresskit.distill.losses import WeightedDistillation

    distill, names = None, []
    if teacher is not None:
        teacher.eval().requires_grad_(False).to(distributed.device())
        distill = WeightedDistillation(
            list(task.distill_kinds), temperature=config.temperature, alpha=config.alpha,
            log_variance_range=(-4.0, 4.0) if config.learnable_weights else None)
        names = _feature_names(student, teacher, config.features)
    from_teacher = getattr(task, "teacher_mask", lambda teacher_outputs: None)

    def masks(outputs: Any, teacher_outputs: Any, batch: Any) -> Any:
        return from_teacher(teacher_outputs) if config.masks == "teacher" else task.distill_mask(outputs, batch)

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        inputs = task.inputs(batch)
        if teacher is None:
            return task.task_loss(model(*inputs), batch)
        with ExitStack() as stack:
            recorded = [stack.enter_context(FeatureRecorder(net, names)) for net in (student, teacher)]
            outputs = model(*inputs)
            with torch.no_grad():
                teacher_outputs = teacher(*inputs)
        task_loss = task.task_loss(outputs, batch)[0] if config.alpha < 1.0 else None  # alpha 1: no labels
        distill_term = getattr(model, "module", model).distill  # unwrap DDP
        loss, logs = distill_term(outputs, teacher_outputs, task_loss, mask=masks(outputs, teacher_outputs, batch))
        if names:
            features, feature_logs = feature_loss(recorded[0].features, recorded[1].features, kept)
            loss = loss + config.alpha * config.feature_weight * features
            logs = {**logs, **feature_logs, "loss": float(loss.detach())}
        return loss, logs

    return (DistillModule(student, distill, config.freeze_bn), loss_fn,
            lambda m: list(m.distill.weight_parameters()) if m.distill is not None else [])


def _feature_names(student: nn.Module, teacher: nn.Module, patterns: Sequence[str]) -> list[str]:
    """The student's modules matching ``patterns``; the teacher must have each of them."""
    if not patterns:
        return []
    names = find_modules(student, patterns)
    missing = sorted(set(names) - set(find_modules(teacher, patterns)))
    if missing:
        raise ValueError(f"distill.features: the teacher has no module {missing[0]!r} (features are matched "
                         "by module name: distil features of a student built like the teacher)")
    return names


def phase_training(workspace: Workspace, task: Task, model: nn.Module, distillation: Distillation | None,
                   kept: Mapping[str, Sequence[int]] | None = None) -> tuple[nn.Module, LossFn, NoDecay | None]:
    """What a later phase (soft pruning, fine-tuning) trains: ``model`` on the task loss, or, with
    ``distillation`` (the phase is in ``distill.phases`` and there is a teacher), ``model`` plus
    distillation from the run's teacher (``kept``: the teacher channels a pruned ``model`` kept)."""
    if distillation is not None and distillation.teacher is not None:
        return with_distillation(task, model, load_teacher(workspace, task, distillation.teacher), distillation,
                                 kept)
    return model, task_loss_fn(task), None
