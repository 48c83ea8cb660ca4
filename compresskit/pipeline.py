"""The compression pipeline's public names, kept importable from here; the code is in :mod:`compresskit.run`.

:func:`run` and :func:`prepare` are :mod:`compresskit.run.driver`'s; the phases, their configs and
the run directory are described in :mod:`compresskit.run`. Two helpers rerun one phase's work outside
a run, from a :class:`RunContext` (the recipe, the task and a run directory): :func:`search_problem`
(the search phase's objective, for benchmarks comparing search methods) and :func:`finetune_model`
(the fine-tuning phase's training, for benchmarks giving baselines the same fine-tune). Seed them as
the run does with :func:`phase_seed`.
"""

from __future__ import annotations

from torch import nn

from compresskit.run.context import RunContext, build_task
from compresskit.run.driver import PHASES, TRAINING_PHASES, prepare, run
from compresskit.run.measure import measure_latency, peak_rss_mb
from compresskit.run.phase_configs import finetune_config, search_config
from compresskit.run.phases import finetune, search
from compresskit.run.phases.remove import layer_channels
from compresskit.run.phases.search import SearchProblem
from compresskit.run.plan import reachable_params
from compresskit.run.seeding import phase_seed, seed_everything
from compresskit.run.training import loader_loss, validation_loss
from compresskit.run.workspace import RUN_FILES, PhaseError, RunDirError
from compresskit.train import TrainState

__all__ = [
    "PHASES",
    "RUN_FILES",
    "TRAINING_PHASES",
    "PhaseError",
    "RunContext",
    "RunDirError",
    "SearchProblem",
    "build_task",
    "finetune_model",
    "layer_channels",
    "loader_loss",
    "measure_latency",
    "peak_rss_mb",
    "phase_seed",
    "prepare",
    "reachable_params",
    "run",
    "search_problem",
    "seed_everything",
    "validation_loss",
]


def search_problem(ctx: RunContext) -> SearchProblem:
    """The search phase's objective, bounds, predictor and budget on ``ctx``'s distilled student (``student.pt``).

    Raises:
        RecipeError: ``search.trial.holdout`` needs a task with a held-out loader, or the latency
            budget cannot be met.
    """
    return search.search_problem(search_config(ctx.recipe, ctx.task), ctx, ctx.task)


def finetune_model(ctx: RunContext, model: nn.Module, evaluate: bool = True) -> TrainState:
    """The fine-tune phase's training (``recipe.finetune``, distillation if listed in ``distill.phases``)
    of any pruned ``model``, in place; benchmarks use it to give baselines the very same fine-tune.

    Epoch checkpoints go to ``ctx.run_dir / "finetune.last.pt"`` (and are resumed from)."""
    return finetune.finetune(finetune_config(ctx.recipe, ctx.task), ctx, ctx.task, model, evaluate)
