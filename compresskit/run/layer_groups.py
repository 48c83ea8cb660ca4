"""Which channels a run prunes: the recipe's layer groups, resolved once into a :class:`GroupSelection`.

The selection is the recipe's ``prune.groups`` (or, without it, the task's default
``layer_groups(student)``), the protected patterns (the task's and ``prune.protect``) and
``prune.channel_multiple``; with ``prune.split_groups``, every coupled channel set is a layer group of its
own (found once on the student as built). The plan, the search, the soft-pruning and the removal phases all find
their channel groups through :meth:`GroupSelection.find`, so each finds the same groups on its own
copy of the student.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from compresskit.config import Recipe, RecipeError
from compresskit.groups.find import LayerGroupSpec
from compresskit.tasks.protocol import Task

__all__ = ["GroupSelection", "group_selection", "split_per_set"]


@dataclass(frozen=True)
class GroupSelection:
    """The layer groups a run prunes.

    Attributes:
        specs: One :class:`~compresskit.groups.LayerGroupSpec` per layer group (name, patterns, bounds).
        protect: Module-name patterns never pruned.
        channel_multiple: Kept widths are rounded to a multiple of this (1: no rounding).
        source: The recipe file, named in errors.
    """

    specs: tuple[LayerGroupSpec, ...]
    protect: tuple[str, ...] = ()
    channel_multiple: int = 1
    source: str = "<recipe>"

    @property
    def names(self) -> list[str]:
        """The layer-group names, in order."""
        return [spec.name for spec in self.specs]

    @property
    def bounds(self) -> dict[str, tuple[float, float]]:
        """Rate bounds per layer group."""
        return {spec.name: tuple(spec.bounds) for spec in self.specs}  # type: ignore[misc]

    def complete(self, rates: Mapping[str, float]) -> dict[str, float]:
        """A rate for every layer group, in order: ``rates``' value, or 0.0 for a group it omits."""
        return {name: float(rates.get(name, 0.0)) for name in self.names}

    def find(self, model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[Any]:
        """The channel groups of ``model`` (:func:`compresskit.groups.find_groups`).

        A model built with bypassed blocks (:mod:`compresskit.models.bypass`) drops the patterns that named
        only them.

        Raises:
            RecipeError: A pattern matches nothing or two groups overlap (``prune.groups: ...``).
        """
        from compresskit.groups.find import find_groups, round_channels
        from compresskit.models.bypass import fit_patterns, fit_specs

        specs, protect = fit_specs(list(self.specs), model), fit_patterns(self.protect, model)
        try:
            groups = find_groups(model, example_inputs, specs, protect=protect)
        except ValueError as error:  # unknown pattern, overlapping groups
            raise RecipeError(f"{self.source}: prune.groups: {error}") from None
        if self.channel_multiple > 1:  # hardware-friendly widths, read by pruner and predictor alike
            round_channels(groups, self.channel_multiple)
        return groups


def group_selection(recipe: Recipe, task: Task) -> GroupSelection:
    """The recipe's layer groups (``prune.groups`` or the task's defaults) and protected patterns; with
    ``prune.split_groups``, one layer group per coupled channel set (:func:`split_per_set`)."""
    groups = recipe.prune.groups
    if groups is None:
        specs = list(task.layer_groups(recipe.student.model))
    else:
        specs = [LayerGroupSpec(name, patterns=g.patterns, types=g.types, bounds=g.bounds)
                 for name, g in groups.items()]
    protect = tuple(dict.fromkeys([*task.protect(recipe.student.model), *recipe.prune.protect]))
    selection = GroupSelection(tuple(specs), protect, recipe.prune.channel_multiple, recipe.source)
    if not recipe.prune.split_groups:
        return selection
    from compresskit.run.context import model_source

    student = model_source(recipe, "student")
    assert student is not None  # the schema requires a student
    return split_per_set(selection, student.build(task), task.example_inputs())


def split_per_set(selection: GroupSelection, model: nn.Module, example_inputs: tuple[torch.Tensor, ...]
                  ) -> GroupSelection:
    """``selection`` with every coupled channel set of ``model`` as its own layer group: named
    ``<layer group>/<set>`` (the set's first producing module), matched by that module's exact name, with
    the bounds of the layer group it was in. The channel groups found are the same; only their rates become
    independent (what ``search.method: global`` allocates from data)."""
    bounds = selection.bounds
    specs = tuple(LayerGroupSpec(f"{group.layer_group}/{group.name}", patterns=(_exact(group.name),),
                                 bounds=bounds[group.layer_group]) for group in selection.find(model, example_inputs))
    return dataclasses.replace(selection, specs=specs)


def _exact(name: str) -> str:
    """An ``fnmatch`` pattern matching ``name`` only (``[`` is the one metacharacter module names can hold)."""
    return name.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")
