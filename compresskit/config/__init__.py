"""Recipes: plain YAML files turned into frozen, validated dataclasses.

A recipe says, for one compression run, which task (model family, data, loss, metrics) to use and how
long each phase of the pipeline runs. Everything that reads a recipe goes through :func:`load_recipe`;
:func:`validate_recipe` is the only place where recipe values are checked. The CLI's ``--set a.b=c``
overrides and ``--profile`` selections are merged into the raw YAML first and checked by the same
code, so a bad override reads exactly like a bad file::

    recipes/x.yaml: prune.groups.backbone_early.bounds must be within [0, 1), got 1.2
    recipes/x.yaml (--set distill.alpha=1.5): distill.alpha must be within [0, 1], got 1.5

Modules, each importing only those above it:

* :mod:`.errors` -- :class:`RecipeError`, key paths, provenance of values;
* :mod:`.constraints` -- numeric ranges fields declare in their metadata;
* :mod:`.schema` -- the section dataclasses and :class:`Recipe`;
* :mod:`.resolve` -- named tasks (``task: image_classification`` and the ``compresskit.tasks`` entry
  points) and ``module:callable`` strings for users' own code (through :mod:`compresskit.utils.imports`);
* :mod:`.validate` -- the one place values are checked;
* :mod:`.compose` -- YAML files, ``extends``, profiles, ``--set`` overrides;
* :mod:`.shipped` -- the recipes shipped in the package (``compresskit.recipes``): by name, listed, copied;
* :mod:`.load` -- :func:`load_recipe`: compose, validate, resolve.

Importing this package imports none of them.
"""

from compresskit.utils.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "apply_overrides": "compose", "parse_override": "compose",
    "RecipeError": "errors",
    "checkpoint_path": "load", "load_recipe": "load",
    "TASKS": "resolve", "ensure_cwd_importable": "resolve", "resolve_object": "resolve", "resolve_task": "resolve",
    "BudgetConfig": "schema", "DistillConfig": "schema", "ExportConfig": "schema", "LatencyConfig": "schema",
    "LayerGroupConfig": "schema", "PruneConfig": "schema", "QuantizeConfig": "schema", "Recipe": "schema",
    "ReconstructConfig": "schema", "ScheduleConfig": "schema", "SearchConfig": "schema", "StudentConfig": "schema",
    "TeacherConfig": "schema", "TrainConfig": "schema", "TrialConfig": "schema", "recipe_to_dict": "schema",
    "validate_recipe": "validate",
    "copy_recipe": "shipped", "describe_recipe": "shipped", "find_recipe": "shipped", "shipped_recipes": "shipped",
})
