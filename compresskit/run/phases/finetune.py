"""Phase ``finetune``: fine-tune the pruned model -> ``final.pt``.

Inputs: ``pruned.pt`` (and ``teacher.pt`` when the phase distils; ``kept_channels.json`` of the removal
when it distils features). Output: ``final.pt``
(:mod:`compresskit.models.persist` format, the pruning history kept). :func:`finetune` is the phase's
training alone, which benchmarks reuse to give baselines the very same fine-tune.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from compresskit.config import TrainConfig
from compresskit.pruning.budget import count_params
from compresskit.run.bypass_choice import chosen_bypass, with_bypass
from compresskit.run.context import ModelSource, load_run_model
from compresskit.run.distillation import Distillation, phase_training
from compresskit.run.evaluations import cached_metrics
from compresskit.run.training import train_phase
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task
from compresskit.train import TrainState, distributed

__all__ = ["Config", "finetune", "run"]


@dataclass(frozen=True)
class Config:
    """What the fine-tuning phase reads.

    Attributes:
        student: The student (its builder is the one ``pruned.pt`` may name, and is persisted).
        train: The recipe's ``finetune`` section.
        distillation: Distil from the teacher (``finetune`` in ``distill.phases``), or ``None``.
        seed: The run's seed (data shards under ``torchrun``).
    """

    student: ModelSource
    train: TrainConfig
    distillation: Distillation | None = None
    seed: int = 0


def finetune(config: Config, workspace: Workspace, task: Task, model: nn.Module, evaluate: bool = True) -> TrainState:
    """The phase's training of any pruned ``model``, in place; epoch checkpoints in ``finetune.last.pt``."""
    kept = None
    if config.distillation is not None and config.distillation.features and workspace.path("kept_channels.json").exists():
        kept = workspace.read_json("kept_channels.json")["kept"]  # teacher channels the pruned model kept
    trained, loss_fn, no_decay = phase_training(workspace, task, model, config.distillation, kept)
    return train_phase(workspace, task, "finetune", trained, loss_fn, config.train, seed=config.seed,
                       no_decay=no_decay,
                       evaluate=(lambda: cached_metrics(workspace, task, model, reuse=False)) if evaluate else None)


def run(config: Config, workspace: Workspace, task: Task) -> dict[str, Any]:
    """Fine-tune ``pruned.pt`` -> ``final.pt``; returns ``params`` and ``metrics``."""
    from compresskit.models.persist import save_pruned

    model = load_run_model(workspace, task, config.student, "pruned.pt")
    finetune(config, workspace, task, model)
    builder, kwargs = with_bypass(config.student, chosen_bypass(workspace)).builder(task)  # as pruned.pt
    if distributed.is_main():
        save_pruned(workspace.path("final.pt"), model, builder, kwargs)  # history kept by load_pruned
    return {"params": count_params(model), "metrics": cached_metrics(workspace, task, model)}
