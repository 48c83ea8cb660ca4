"""The recipe's model and training sections: teacher, student, ``distill`` and every training loop.

Part of the recipe schema (:mod:`compresskit.config.schema`, which re-exports these classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from compresskit.config.constraints import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, within

__all__ = ["DistillConfig", "StudentConfig", "TeacherConfig", "TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """One training loop: used by ``teacher.train``, ``distill``, ``finetune``.

    Attributes:
        epochs: Epochs to train (0 skips the loop).
        lr: Peak learning rate.
        batch_size: Mini-batch size.
        weight_decay: Decoupled weight decay (AdamW) or L2 (SGD).
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9, Nesterov).
        scheduler: ``cosine`` (annealed to 0 over ``epochs``, stepped per epoch), ``onecycle``
            (Smith's one-cycle policy, ``torch.optim.lr_scheduler.OneCycleLR``: warm-up over the
            first 15% of the optimizer steps, then cosine annealing, stepped per optimizer step;
            converges in far fewer epochs on short CPU runs) or ``none``.
    """

    epochs: int = field(default=1, metadata=within(0))
    lr: float = field(default=1e-3, metadata=POSITIVE)
    batch_size: int = field(default=32, metadata=AT_LEAST_ONE)
    weight_decay: float = field(default=0.0, metadata=NON_NEGATIVE)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    scheduler: Literal["cosine", "onecycle", "none"] = "cosine"


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher: trained first unless a checkpoint is given.

    Attributes:
        model: A model name known to the task, or ``module:callable``.
        model_args: Keyword arguments for the model builder.
        checkpoint: A state_dict file (``weights_only``); a relative path is taken from the
            working directory, else from the recipe's folder. ``null`` trains the teacher with ``train``.
        train: The teacher's training loop.
    """

    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class StudentConfig:
    """The student architecture that is distilled, then pruned.

    Attributes:
        model: A model name known to the task, or ``module:callable``.
        model_args: Keyword arguments for the model builder.
        checkpoint: Weights the student starts from (read like ``teacher.checkpoint``:
            ``task.load_checkpoint`` when the task has one, else a strict ``load_state_dict``).
        init_from: ``teacher``: before distillation, copy every teacher tensor whose name and
            shape match the student's (logged: how many tensors / parameters were inherited).
    """

    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    init_from: Literal["teacher"] | None = None


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """Student training with weighted knowledge distillation from the teacher.

    Without a teacher (``teacher: null``) the student trains on the task loss.

    Attributes:
        temperature: Softening temperature of classification outputs.
        alpha: Weight of the distillation term; ``1 - alpha`` weights the task loss.
        learnable_weights: Learn per-output Kendall weights (else fixed equal).
        phases: Later training phases that also distil from the (unpruned) teacher, with the
            same ``temperature`` / ``alpha`` and fresh loss weights: ``soft_prune``, ``finetune``.
        features: ``fnmatch`` globs of modules whose outputs are distilled too (feature distillation,
            :mod:`compresskit.distill.features`: normalised MSE to the teacher's output of the module of the
            same name; a pruned student is matched on the teacher channels it kept, ``kept_channels.json``
            of the removal). Empty (default): model outputs only.
        feature_weight: Weight of the feature term beside the output terms (both weighted by ``alpha``).
        freeze_bn: Keep the student's BatchNorm layers in eval mode while distilling (running statistics used
            and not updated, as the teacher's): a student equal to the teacher is then a fixed point of
            the distillation, whatever the crops; the affine weights still train.
        masks: Which predictions the output terms cover: ``labels`` (the task's ``distill_mask`` of the batch's
            targets, e.g. priors matched to a labelled face) or ``teacher`` (the task's ``teacher_mask`` of the
            teacher's outputs, e.g. priors where the teacher sees a face; all predictions for a task without
            one). ``teacher`` with ``alpha: 1`` reads no label at all.

    ``alpha: 1`` trains on the distillation terms alone: the task (label) loss is not computed.
    """

    temperature: float = field(default=4.0, metadata=POSITIVE)
    alpha: float = field(default=0.7, metadata=within(0.0, 1.0))
    learnable_weights: bool = True
    phases: tuple[Literal["soft_prune", "finetune"], ...] = ()
    features: tuple[str, ...] = ()
    feature_weight: float = field(default=1.0, metadata=NON_NEGATIVE)
    freeze_bn: bool = False
    masks: Literal["labels", "teacher"] = "labels"
