"""One phase's work outside a run, from a :class:`~compresskit.run.context.RunContext` (the recipe, the task
and a run directory): :func:`search_problem` (the search phase's objective, for benchmarks comparing search
methods) and :func:`finetune_model` (the fine-tuning phase's training, for benchmarks giving baselines the
same fine-tune). Seed them as the run does with :func:`compresskit.run.seeding.phase_seed`.
"""

from __future__ import annotations

from torch import nn

from compresskit.run.context import RunContext
from compresskit.run.phase_configs import finetune_config, search_config
from compresskit.run.phases import finetune
from compresskit.run.phases import rate_search as search
from compresskit.run.phases.rate_search import SearchProblem
from compresskit.train import TrainState

__all__ = ["finetune_model", "search_problem"]


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
