"""The run's models and task as the recipe names them, and :class:`RunContext`, the driver's view of a run.

A phase never receives the recipe: the driver (:mod:`compresskit.run.driver`) gives it a frozen
``Config`` holding only what it reads. A model the recipe names travels as a :class:`ModelSource`
(``model`` + ``model_args``, built through the task or a ``module:callable``), so a phase can build
the teacher or the student, and persist the student's builder, without seeing the rest of the recipe.

:class:`RunContext` is a :class:`~compresskit.run.workspace.Workspace` that also holds the recipe and
the task: what :func:`compresskit.run.driver.run` returns, and what code that reuses one phase's
training outside a run (benchmarks) builds by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from torch import nn

from compresskit.config import TASKS, Recipe, RecipeError, resolve_object
from compresskit.run.lock import RunLock
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task, check_task, task_args_error

__all__ = ["ModelSource", "RunContext", "build_task", "calibration_tasks", "load_run_model", "model_source"]


@dataclass(frozen=True)
class ModelSource:
    """How to build one model the recipe names.

    Attributes:
        key: The recipe section, ``"teacher"`` or ``"student"`` (named in errors).
        model: A model name the task knows, or ``module:callable``.
        model_args: Keyword arguments of the builder.
        source: The recipe file (relative ``module:callable`` imports resolve against it).
    """

    key: str
    model: str
    model_args: dict[str, Any] = field(default_factory=dict)
    source: str = "<recipe>"

    def build(self, task: Task) -> nn.Module:
        """A freshly built model (global RNG, seeded by the phase)."""
        if ":" in self.model:
            factory = resolve_object(self.model, f"{self.key}.model", self.source)
            return factory(**self.model_args)
        return task.build_model(self.model, **self.model_args)

    def builder(self, task: Task) -> tuple[str, dict[str, Any]]:
        """``("module:callable", kwargs)`` rebuilding the model, for persistence."""
        if ":" in self.model:
            return self.model, dict(self.model_args)
        return task.builder(self.model, **self.model_args)


def model_source(recipe: Recipe, which: str) -> ModelSource | None:
    """The recipe's ``teacher`` or ``student`` as a :class:`ModelSource` (``None`` without a teacher)."""
    config = getattr(recipe, which)
    if config is None:
        return None
    return ModelSource(which, config.model, dict(config.model_args), recipe.source)


@dataclass(kw_only=True)
class RunContext(Workspace):
    """A run: its directory and state (:class:`~compresskit.run.workspace.Workspace`), recipe and task.

    Attributes:
        recipe: The validated recipe.
        task: The task object built from ``recipe.task``.
        lock: The run directory's lock while the run holds it (:mod:`compresskit.run.lock`).
    """

    recipe: Recipe
    task: Task
    lock: RunLock | None = None

    def build(self, which: str) -> nn.Module:
        """A freshly built ``teacher`` or ``student`` model (global RNG, seeded by the phase)."""
        source = model_source(self.recipe, which)
        assert source is not None
        return source.build(self.task)

    def builder(self) -> tuple[str, dict[str, Any]]:
        """``("module:callable", kwargs)`` rebuilding the student, for persistence."""
        source = model_source(self.recipe, "student")
        assert source is not None
        return source.builder(self.task)


def build_task(recipe: Recipe) -> Task:
    """Resolve ``recipe.task`` and call it with ``recipe.task_args``.

    Raises:
        RecipeError: The task cannot be imported, its arguments are rejected, or
            the returned object lacks part of the :class:`~compresskit.tasks.protocol.Task` protocol.
    """
    spec = TASKS.get(recipe.task, recipe.task)
    factory = resolve_object(spec, "task", recipe.source)
    try:
        task = factory(**recipe.task_args)
    except Exception as error:  # noqa: BLE001 - the user's task refused its arguments or its data
        raise RecipeError(f"{recipe.source}: task_args rejected by {spec!r}: "
                          f"{task_args_error(error, recipe.task_args)}") from None
    try:
        return check_task(task, spec)
    except TypeError as error:
        raise RecipeError(f"{recipe.source}: task {error}") from None


def calibration_tasks(recipe: Recipe) -> tuple[Callable[[], Task], ...]:
    """``prune.reconstruct.task_args``: one builder per mapping of the task the calibration batches come from (the
    recipe's ``task_args`` updated by it); empty when there are none (the run's own task serves)."""
    config = recipe.prune.reconstruct
    if config is None:
        return ()
    return tuple(partial(build_task, dataclasses.replace(recipe, task_args={**recipe.task_args, **changes}))
                 for changes in config.task_args)


def load_run_model(workspace: Workspace, task: Task, student: ModelSource, name: str) -> nn.Module:
    """The pruned model in run file ``name`` (persist format), trusting the student's own builder."""
    from compresskit.models.persist import load_pruned

    return load_pruned(workspace.path(name), trust=[student.builder(task)[0]])
