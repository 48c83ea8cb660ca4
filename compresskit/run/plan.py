"""Pre-flight: every model- and data-dependent check of a run, before any phase (and in ``--dry-run``).

:func:`plan` runs :data:`CHECKS` in order on a :class:`Plan`; each check is a small function
``check(plan) -> None`` that reads the recipe and task, may record facts on the plan (models, layer
groups, the reachable parameter range, data counts) for later checks and for ``--dry-run`` to print,
and raises :class:`~compresskit.config.RecipeError` -- one line naming the recipe file, the key and
the value -- when the run could not succeed. ``compresskit run`` calls :func:`plan` before it creates
the run directory, so a recipe that would fail after hours of training fails in seconds and leaves
nothing behind; ``--dry-run`` calls the same function, so both print the same message. The budget's
feasibility is checked here and nowhere else (:func:`check_budget`).

To add a check (e.g. loading a checkpoint the recipe names), write ``def check_x(plan: Plan) -> None``
and put it in :data:`CHECKS`; nothing registers itself at import time.

Example:
    >>> recipe = load_recipe("recipes/shapes_classifier.yaml")  # doctest: +SKIP
    >>> result = plan(recipe, build_task(recipe))  # doctest: +SKIP
    >>> result.reachable  # doctest: +SKIP
    (6131, 77652)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compresskit.config import Recipe, RecipeError
from compresskit.config.load import checkpoint_path
from compresskit.models.weights import load_weights
from compresskit.run.context import model_source
from compresskit.run.layer_groups import GroupSelection, group_selection
from compresskit.tasks.protocol import Task

__all__ = ["CHECKS", "Plan", "check_budget", "check_bypass", "check_checkpoints", "check_data", "check_groups",
           "check_latency_budget", "check_models", "check_rates", "load_recipe_checkpoints", "plan", "reachable_params",
           "recipe_latency_budget", "require_budget"]


@dataclass
class Plan:
    """What the pre-flight found; checks fill it in order.

    Attributes:
        recipe: The validated recipe.
        task: The task built from it.
        models: ``"teacher"`` / ``"student"`` -> a freshly built model.
        selection: The layer groups (recipe's ``prune.groups`` or the task's defaults) and protected patterns.
        groups: The student's channel groups.
        reachable: ``(fewest, most)`` parameters reachable inside the layer-group bounds.
        latency: With a latency budget: its limit, the unpruned and reachable milliseconds.
        data: What the task's ``check_data`` reported (counts of images, boxes, dropped items).
        checkpoints: Recipe key -> file of every checkpoint that loaded strictly.
        checked: Names of the checks that passed.
    """

    recipe: Recipe
    task: Task
    models: dict[str, nn.Module] = field(default_factory=dict)
    selection: GroupSelection | None = None
    groups: list[Any] = field(default_factory=list)
    reachable: tuple[int, int] | None = None
    latency: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)

    @property
    def specs(self) -> list[Any]:
        """The layer-group specs of :attr:`selection` (empty before the groups check ran)."""
        return list(self.selection.specs) if self.selection is not None else []

    def build(self, which: str) -> nn.Module:
        """A freshly built ``teacher`` or ``student`` model."""
        source = model_source(self.recipe, which)
        assert source is not None
        return source.build(self.task)


def _fail(plan: Plan, key: str, message: str) -> RecipeError:
    return RecipeError(f"{plan.recipe.source}: {key}: {message}")


def check_models(plan: Plan) -> None:
    """Build the teacher and the student (an unknown model name fails here)."""
    for which in ("teacher", "student"):
        config = getattr(plan.recipe, which)
        if config is None:
            continue
        try:
            model = plan.build(which)
        except RecipeError:
            raise
        except Exception as error:  # noqa: BLE001 - the user's builder rejected the recipe's values
            raise _fail(plan, f"{which}.model", f"building {config.model!r} failed: "
                        f"{type(error).__name__}: {str(error)[:300]}") from None
        if not isinstance(model, nn.Module):
            raise _fail(plan, f"{which}.model", f"{config.model!r} built {type(model).__name__}, not an nn.Module")
        plan.models[which] = model


def check_checkpoints(plan: Plan) -> None:
    """Every checkpoint the recipe names (``teacher.checkpoint``, ``student.checkpoint``) loads strictly
    into a freshly built model (:func:`load_recipe_checkpoints`)."""
    plan.checkpoints = load_recipe_checkpoints(plan.recipe, plan.task, plan.build)


def load_recipe_checkpoints(recipe: Any, task: Any, build: Callable[[str], nn.Module]) -> dict[str, str]:
    """Load every checkpoint ``recipe`` names into a freshly built model; call before any training.

    Args:
        recipe: A validated :class:`~compresskit.config.schema.Recipe`.
        task: Its task (its ``load_checkpoint`` is used when it has one).
        build: ``build("teacher" | "student") -> nn.Module``, a freshly built model.

    Returns:
        ``{"teacher.checkpoint": path, ...}`` for each checkpoint that loaded.

    Raises:
        RecipeError: one line naming the recipe file, the key, the file and the first mismatching keys.
    """
    checked = {}
    named = {"teacher": recipe.teacher.checkpoint if recipe.teacher is not None else None,
             "student": recipe.student.checkpoint}
    for which, checkpoint in named.items():
        if checkpoint is None:
            continue
        path = checkpoint_path(checkpoint, recipe.source)
        try:
            load_weights(task, build(which), path)
        except FileNotFoundError:
            raise RecipeError(f"{recipe.source}: {which}.checkpoint file not found, got {checkpoint!r}") from None
        except (ValueError, RuntimeError, KeyError) as error:
            first_line = (str(error).splitlines() or [""])[0]
            raise RecipeError(f"{recipe.source}: {which}.checkpoint {path} does not load into "
                              f"{which}.model {getattr(recipe, which).model!r}: {first_line}") from None
        checked[f"{which}.checkpoint"] = str(path)
    return checked


def check_groups(plan: Plan) -> None:
    """Find the student's channel groups (an unknown or overlapping pattern fails here)."""
    plan.selection = group_selection(plan.recipe, plan.task)
    if plan.specs:
        plan.groups = plan.selection.find(plan.models["student"], plan.task.example_inputs())


def check_bypass(plan: Plan) -> None:
    """``search.bypass``: a search; each block declared in the student's ``bypassable``, not already
    bypassed, and bypassable at the example inputs' shapes; and the student's builder accepts
    ``bypass=[...]`` (built with every block bypassed), so saved models rebuild."""
    from compresskit.models.bypass import Bypass, bypass_blocks, optional_blocks
    from compresskit.run.bypass_choice import BYPASS_PREFIX, with_bypass

    blocks, key, search = list(plan.recipe.search.bypass), "search.bypass", plan.recipe.search
    if not blocks:
        return
    if not search.enabled:
        raise _fail(plan, key, f"needs search.enabled, got {blocks}")
    student = plan.models["student"]
    try:
        declared = optional_blocks(student)
    except ValueError as error:
        raise _fail(plan, key, f"{error}, got {blocks}") from None
    for block in blocks:
        reason = ("is not declared bypassable" if block not in declared
                  else "is listed twice" if blocks.count(block) > 1
                  else "is already bypassed by student.model_args.bypass" if isinstance(
                      student.get_submodule(block), Bypass)
                  else "clashes with a layer group's name" if f"{BYPASS_PREFIX}{block}" in plan.selection.names
                  else None)
        if reason:
            raise _fail(plan, key, f"{block!r} {reason} ({type(student).__name__}.bypassable: "
                        f"{sorted(declared)}), got {blocks}")
    source = with_bypass(model_source(plan.recipe, "student"), blocks)  # type: ignore[arg-type]
    try:
        bypass_blocks(copy.deepcopy(student), blocks, plan.task.example_inputs())
        reduced = source.build(plan.task)
        source.builder(plan.task)
    except Exception as error:  # noqa: BLE001 - the user's builder refused bypass=[...], or a shape mismatch
        raise _fail(plan, key, f"the student with {blocks} bypassed cannot be built (student.model "
                    f"{source.model!r} must accept bypass=[...]): {type(error).__name__}: {str(error)[:300]}") from None
    ignored = [b for b in blocks if not isinstance(reduced.get_submodule(b), Bypass)]
    if ignored:
        raise _fail(plan, key, f"student.model {source.model!r} ignored bypass={blocks} ({ignored} kept)")


def check_rates(plan: Plan) -> None:
    """Without a search, every ``prune.rates`` key must name a layer group."""
    if plan.recipe.search.enabled:
        return
    names = [spec.name for spec in plan.specs]
    unknown = sorted(set(plan.recipe.prune.rates or {}) - set(names))
    if unknown:
        raise RecipeError(f"{plan.recipe.source}: prune.rates.{unknown[0]} is not a layer group; groups: {names}")


def reachable_params(predictor: Callable[[dict[str, float]], int],
                     bounds: Mapping[str, tuple[float, float]]) -> tuple[int, int]:
    """``(fewest, most)`` parameters reachable with rates inside ``bounds`` (all upper / all lower)."""
    return (int(predictor({name: high for name, (low, high) in bounds.items()})),
            int(predictor({name: low for name, (low, high) in bounds.items()})))


def require_budget(recipe: Recipe, reachable: tuple[int, int]) -> None:
    """Raise a :class:`RecipeError` when the ``reachable`` parameter range misses ``search.budget``."""
    fewest, most = reachable
    budget = recipe.search.budget
    if not _meets_budget(recipe, reachable):
        raise RecipeError(
            f"{recipe.source}: search.budget [{budget.min_params}, {budget.max_params}] cannot be met: "
            f"rates within the layer-group bounds give {fewest:,} to {most:,} parameters")


def check_budget(plan: Plan) -> None:
    """With a search, some rates inside the layer-group bounds must meet ``search.budget``.

    With ``search.bypass``, subsets of the candidate blocks bypassed are tried too (none, all, then the
    others), until one's range meets the budget; ``reachable`` spans those tried. Each costs one
    ``find_groups`` on the reduced student (~20 s for Nano-B on a busy 2-core machine); a budget no subset
    meets tries all ``2 ** len(search.bypass)``.
    """
    from compresskit.pruning.budget import ParamPredictor

    if not plan.specs or plan.selection is None:
        return
    predictor = ParamPredictor(plan.models["student"], plan.groups)
    plan.reachable = reachable_params(predictor, plan.selection.bounds)
    blocks = list(plan.recipe.search.bypass)
    if blocks and not _meets_budget(plan.recipe, plan.reachable):
        from compresskit.run.bypass_choice import Reductions

        reductions = Reductions(plan.models["student"], plan.groups, plan.selection.find, plan.task.example_inputs())
        masks = [(1 << len(blocks)) - 1, *range(1, (1 << len(blocks)) - 1)]  # a bypass may leave a set unprunable
        for mask in masks:
            subset = [block for i, block in enumerate(blocks) if mask >> i & 1]
            low, high = reachable_params(lambda rates, s=subset: reductions.params(rates, s), plan.selection.bounds)
            plan.reachable = (min(plan.reachable[0], low), max(plan.reachable[1], high))
            if _meets_budget(plan.recipe, (low, high)):
                break
    if plan.recipe.search.enabled:
        require_budget(plan.recipe, plan.reachable)


def _meets_budget(recipe: Recipe, reachable: tuple[int, int]) -> bool:
    budget = recipe.search.budget
    return reachable[0] <= budget.max_params and reachable[1] >= budget.min_params


def check_latency_budget(plan: Plan) -> None:
    """With a search and a latency budget, some rates inside the bounds must meet it (and the parameter
    budget): measures the unpruned student and the corners with ONNX Runtime, fits the latency predictor
    (``compresskit.deploy.latency.latency_budget``; cached, so the run reuses the measurements) -- before any
    training. The message names the budget and the reachable range.

    With ``search.bypass`` the fastest subset decides: the student with every candidate bypassed is
    reduced (one ``find_groups``, ~20 s for Nano-B on a busy 2-core machine) and its fastest corner
    measured (one export and timing, cached); nothing is calibrated here (the search calibrates each
    subset it visits) and the joint parameter/latency check is left to the search's feasibility draws."""
    if not plan.specs or not plan.recipe.search.enabled or plan.selection is None:
        return
    student, bounds, blocks = plan.models["student"], plan.selection.bounds, list(plan.recipe.search.bypass)
    fastest = None
    budget = plan.recipe.search.budget
    if blocks and (budget.max_latency_ms is not None or budget.max_latency_ratio is not None):
        from compresskit.run.bypass_choice import Reductions

        reduced, groups, predictor = Reductions(student, plan.groups, plan.selection.find,
                                                plan.task.example_inputs()).get(blocks)
        fastest = (reduced, groups, blocks, {k: v for k, v in bounds.items() if k in predictor.layer_groups})
    found = recipe_latency_budget(plan.recipe, student, plan.groups, bounds, plan.task.example_inputs(), fastest=fastest)
    if found is not None:
        plan.latency = found.to_dict()


def recipe_latency_budget(recipe: Recipe, *args: Any, **kwargs: Any) -> Any:
    """:func:`compresskit.deploy.latency.latency_budget` for ``recipe``; an unreachable budget becomes a
    :class:`RecipeError` with the same one-line message."""
    from compresskit.deploy.latency import LatencyBudgetError, latency_budget

    try:
        return latency_budget(recipe, *args, **kwargs)
    except LatencyBudgetError as error:
        raise RecipeError(str(error)) from None


def check_data(plan: Plan) -> None:
    """The task's data: its own ``check_data()`` if it has one, then a non-empty training loader.

    ``task.check_data()`` (optional) reads what training will read and raises ``ValueError`` naming
    the file and line of anything unreadable; it returns counts (e.g. ``{"images": 12880,
    "dropped_boxes": 3}``) that the run reports.
    """
    checker: Callable[[], Any] | None = getattr(plan.task, "check_data", None)
    if checker is not None:
        try:
            report = checker()
        except (ValueError, OSError) as error:
            raise _fail(plan, "data", " ".join(str(error).split())[:500]) from None
        plan.data = dict(report or {})
    batch_size = max(1, min(config.batch_size for config in _train_configs(plan.recipe)))
    try:
        loader = plan.task.train_loader(batch_size)
    except (ValueError, OSError) as error:  # e.g. torch's samplers refuse an empty dataset
        raise _fail(plan, "data", f"the training loader cannot be built ({type(error).__name__}: "
                    f"{' '.join(str(error).split())[:300]}); is the training set empty?") from None
    try:
        batches = len(loader)  # type: ignore[arg-type]
    except TypeError:  # an iterable without a length: nothing to count up front
        return
    if batches == 0:
        raise _fail(plan, "data", "the training set is empty (0 batches); training would make 0 optimizer "
                    "steps -- check the task's data paths and label files")
    _check_calibration_tasks(plan)


def _check_calibration_tasks(plan: Plan) -> None:
    """``prune.reconstruct.task_args``: the tasks they build (a refused argument is a ``RecipeError`` naming
    ``prune.reconstruct.task_args``) must have calibration images."""
    from compresskit.run.context import calibration_tasks

    for build in calibration_tasks(plan.recipe):
        try:
            task = build()
        except RecipeError as error:  # "<recipe>: task_args rejected by ...": say which task_args
            raise RecipeError(str(error).replace(": task_args rejected", ": prune.reconstruct.task_args rejected", 1)
                              ) from None
        if next(iter(task.train_loader(plan.recipe.prune.reconstruct.batch_size)), None) is None:
            raise _fail(plan, "prune.reconstruct.task_args", "the calibration task's training set is empty")


def _train_configs(recipe: Recipe) -> list[Any]:
    configs = [recipe.distill, recipe.prune.schedule, recipe.finetune]
    if recipe.teacher is not None and recipe.teacher.train is not None:
        configs.append(recipe.teacher.train)
    return configs


#: The pre-flight checks, in order (later ones read what earlier ones recorded).
CHECKS: list[Callable[[Plan], None]] = [check_models, check_checkpoints, check_groups, check_bypass, check_rates,
                                        check_budget, check_latency_budget, check_data]


def plan(recipe: Recipe, task: Task) -> Plan:
    """Run every check of :data:`CHECKS` on ``recipe`` and its ``task``; write nothing.

    Returns:
        The :class:`Plan` with what the checks found.

    Raises:
        RecipeError: The first failing check, in one line naming the file, key and value.
    """
    result = Plan(recipe=recipe, task=task)
    for check in CHECKS:
        check(result)
        result.checked.append(check.__name__)
    return result
