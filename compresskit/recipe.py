"""Recipes: plain YAML files turned into frozen, validated dataclasses (the public names).

A recipe says, for one compression run, which task (model family, data, loss,
metrics) to use and how long each phase of the pipeline runs. Everything that
reads a recipe goes through :func:`load_recipe`; :func:`validate_recipe` is the
only place where recipe values are checked. The CLI's ``--set a.b=c`` overrides
and ``--profile`` selections are merged into the raw YAML first and checked by the
same code, so a bad override reads exactly like a bad file::

    recipes/x.yaml: prune.groups.backbone_early.bounds must be within [0, 1), got 1.2
    recipes/x.yaml (--set distill.alpha=1.5): distill.alpha must be within [0, 1], got 1.5

Composition (``extends``, profiles, overrides) is described in :mod:`compresskit.config.compose`.

Tasks and models are named (``task: image_classification``, ``model: nano_b``) or given as
``module:callable`` for users' own code, e.g. ``task: mypkg.tasks:MyTask``. Named tasks are
compresskit's own (:data:`compresskit.config.resolve.BUILTIN_TASKS`) and those installed packages
declare in the ``compresskit.tasks`` entry points (:data:`TASKS` lists both). The module is imported
with :mod:`importlib` (the current directory is put on ``sys.path``, as ``python -m`` does);
failures raise :class:`RecipeError` naming the string.

The implementation lives in :mod:`compresskit.config`; this module re-exports its public names.
"""

from __future__ import annotations

from compresskit.config.compose import apply_overrides, parse_override
from compresskit.config.errors import RecipeError
from compresskit.config.load import checkpoint_path, load_recipe
from compresskit.config.resolve import TASKS, ensure_cwd_importable, resolve_object, resolve_task
from compresskit.config.schema import (BudgetConfig, DistillConfig, ExportConfig, LatencyConfig, LayerGroupConfig,
                                       PruneConfig, QuantizeConfig, Recipe, ReconstructConfig, ScheduleConfig,
                                       SearchConfig,
                                       StudentConfig, TeacherConfig, TrainConfig, TrialConfig, recipe_to_dict)
from compresskit.config.validate import validate_recipe

__all__ = [  # the schema, then the functions
    "BudgetConfig", "DistillConfig", "ExportConfig", "LatencyConfig", "LayerGroupConfig", "PruneConfig",
    "QuantizeConfig", "Recipe", "ReconstructConfig", "ScheduleConfig", "SearchConfig", "StudentConfig", "TeacherConfig", "TrainConfig",
    "TrialConfig", "RecipeError", "TASKS", "apply_overrides", "checkpoint_path", "ensure_cwd_importable",
    "load_recipe", "parse_override", "recipe_to_dict", "resolve_object", "resolve_task", "validate_recipe",
]
