"""Each phase's ``Config``, built from the recipe sections it reads: where YAML keys become phase inputs.

:data:`PHASE_CONFIGS` maps a phase name to ``configure(recipe, task) -> Config``; the driver calls it
just before the phase runs. Reading this module tells, for every phase, exactly which recipe keys it
depends on. A pruning rate fixed in YAML goes through four files: ``config/schema.py``
(``PruneConfig.rates``, validated) -> here (:func:`soft_prune_config`) -> ``phases/soft_prune.py`` (its
schedule) -> ``prune.py`` (:meth:`~compresskit.pruning.soft_fpgm.SoftFPGM.step` zeroes that share of each group's
filters). A searched rate starts in ``phases/search.py`` and reaches the soft-pruning phase through
``rates.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from compresskit.config import Recipe, checkpoint_path
from compresskit.run.context import ModelSource, calibration_tasks, model_source
from compresskit.run.distillation import Distillation
from compresskit.run.layer_groups import group_selection
from compresskit.run.phases import distill_student as distill
from compresskit.run.phases import evaluate, finetune, remove, soft_prune, teacher
from compresskit.run.phases import export_files as export
from compresskit.run.phases import quantize_int8 as quantize
from compresskit.run.phases import rate_search as search
from compresskit.run.phases import write_report as report
from compresskit.tasks.protocol import Task

__all__ = ["PHASE_CONFIGS", "distillation", "student_source"]


def student_source(recipe: Recipe) -> ModelSource:
    """The recipe's student as a :class:`~compresskit.run.context.ModelSource`."""
    source = model_source(recipe, "student")
    assert source is not None  # the schema requires a student
    return source


def distillation(recipe: Recipe, phase: str | None = None) -> Distillation | None:
    """The ``distill`` section's loss settings with the teacher; for a later ``phase``, ``None`` unless
    the recipe lists it in ``distill.phases`` and has a teacher."""
    config = recipe.distill
    if phase is not None and (phase not in config.phases or recipe.teacher is None):
        return None
    return Distillation(model_source(recipe, "teacher"), temperature=config.temperature, alpha=config.alpha,
                        learnable_weights=config.learnable_weights, features=config.features,
                        feature_weight=config.feature_weight, freeze_bn=config.freeze_bn, masks=config.masks)


def _distilled_features(recipe: Recipe, phase: str) -> tuple[str, ...]:
    """``distill.features`` when ``phase`` distils, else none."""
    distilling = distillation(recipe, phase)
    return distilling.features if distilling is not None else ()


def teacher_config(recipe: Recipe, task: Task) -> teacher.Config:
    """The teacher phase reads ``teacher`` and ``seed``."""
    config = recipe.teacher
    checkpoint = (checkpoint_path(config.checkpoint, recipe.source)
                  if config is not None and config.checkpoint is not None else None)
    return teacher.Config(model_source(recipe, "teacher"), checkpoint,
                          config.train if config is not None else None, recipe.seed)


def distill_config(recipe: Recipe, task: Task) -> distill.Config:
    """The distill phase reads ``student``, ``teacher.model``, ``distill`` and ``seed``."""
    student = recipe.student
    checkpoint = checkpoint_path(student.checkpoint, recipe.source) if student.checkpoint is not None else None
    return distill.Config(student_source(recipe), distillation(recipe), recipe.distill, checkpoint=checkpoint,
                          init_from=student.init_from, seed=recipe.seed)


def _trial_importance(importance: str) -> str:
    """The importance a search trial prunes with: a data importance (``output_error``) ranks once, in the
    soft-pruning phase, on its calibration batches; the trials use FPGM."""
    from compresskit.pruning.importance import DATA_IMPORTANCE_NAMES

    return "fpgm" if importance in DATA_IMPORTANCE_NAMES else importance


def search_config(recipe: Recipe, task: Task) -> search.Config:
    """The search phase reads ``search``, ``prune`` (groups, rates, importance), ``distill.weight_decay``."""
    from compresskit.run.plan import recipe_latency_budget

    return search.Config(recipe.search, group_selection(recipe, task), student_source(recipe),
                         rates=recipe.prune.rates, importance=_trial_importance(recipe.prune.importance),
                         weight_decay=recipe.distill.weight_decay, seed=recipe.seed, source=recipe.source,
                         latency_budget=partial(recipe_latency_budget, recipe), reconstruct=recipe.prune.reconstruct,
                         calibration_tasks=calibration_tasks(recipe))


def soft_prune_config(recipe: Recipe, task: Task) -> soft_prune.Config:
    """The soft-pruning phase reads ``prune`` (groups, schedule, importance) and ``distill`` when listed."""
    return soft_prune.Config(student_source(recipe), group_selection(recipe, task), recipe.prune.schedule,
                             importance=recipe.prune.importance, distillation=distillation(recipe, "soft_prune"),
                             seed=recipe.seed, rates=None if recipe.search.enabled else recipe.prune.rates,
                             reconstruct=recipe.prune.reconstruct, calibration_tasks=calibration_tasks(recipe))


def finetune_config(recipe: Recipe, task: Task) -> finetune.Config:
    """The fine-tuning phase reads ``finetune`` and ``distill`` when listed."""
    return finetune.Config(student_source(recipe), recipe.finetune, distillation(recipe, "finetune"), recipe.seed)


def export_config(recipe: Recipe, task: Task) -> export.Config:
    """The export phase reads ``export`` and ``seed``."""
    config = recipe.export
    return export.Config(student_source(recipe), onnx=config.onnx, input_size=config.input_size,
                         opset=config.opset, atol=config.atol, seed=recipe.seed)


#: Phase name -> ``configure(recipe, task) -> Config``.
PHASE_CONFIGS: dict[str, Callable[[Recipe, Task], Any]] = {
    "teacher": teacher_config,
    "distill": distill_config,
    "search": search_config,
    "soft_prune": soft_prune_config,
    "remove": lambda recipe, task: remove.Config(student_source(recipe), group_selection(recipe, task),
                                                 features=_distilled_features(recipe, "finetune")),
    "finetune": finetune_config,
    "evaluate": lambda recipe, task: evaluate.Config(student_source(recipe), model_source(recipe, "teacher"),
                                                     export=export_config(recipe, task)),
    "export": export_config,
    "quantize": lambda recipe, task: quantize.Config(recipe.quantize, export_config(recipe, task)),
    "report": lambda recipe, task: report.Config(),
}
