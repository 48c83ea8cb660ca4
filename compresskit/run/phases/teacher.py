"""Phase ``teacher``: train the teacher, or load the checkpoint the recipe names -> ``teacher.pt``.

Inputs: none from the run directory. Output: ``teacher.pt`` (its state_dict). Summary: where the
weights came from, the parameter count and the task's metrics. Skipped without a teacher.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compresskit.config import TrainConfig
from compresskit.pruning.budget import count_params
from compresskit.run.context import ModelSource
from compresskit.run.evaluations import cached_metrics
from compresskit.run.training import task_loss_fn, train_phase
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task

__all__ = ["Config", "run"]


@dataclass(frozen=True)
class Config:
    """What the teacher phase reads.

    Attributes:
        teacher: The teacher to build; ``None``: the recipe has no teacher (the phase is skipped).
        checkpoint: Weights to load instead of training (already checked by the plan).
        train: How to train it without a checkpoint.
        seed: The run's seed (data shards under ``torchrun``).
    """

    teacher: ModelSource | None
    checkpoint: Path | None
    train: TrainConfig | None
    seed: int = 0


def run(config: Config, workspace: Workspace, task: Task) -> dict[str, Any]:
    """Train (or load) the teacher -> ``teacher.pt``; returns ``source``, ``params`` and ``metrics``."""
    if config.teacher is None:
        return {"skipped": "no teacher"}
    model = config.teacher.build(task)
    if config.checkpoint is not None:
        from compresskit.models.weights import load_weights

        load_weights(task, model, config.checkpoint)  # checked before any phase ran (check_checkpoints)
        source = str(config.checkpoint)
    else:
        assert config.train is not None
        train_phase(workspace, task, "teacher", model, task_loss_fn(task), config.train, seed=config.seed,
                    evaluate=lambda: cached_metrics(workspace, task, model, reuse=False))
        source = "trained"
    workspace.save(model.state_dict(), "teacher.pt")
    return {"source": source, "params": count_params(model), "metrics": cached_metrics(workspace, task, model)}
