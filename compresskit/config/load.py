"""Loading a recipe file: compose, validate every profile, validate, then check what it names exists.

:func:`load_recipe` is what every command calls. It composes the raw mapping
(:mod:`compresskit.config.compose`), validates it (:mod:`compresskit.config.validate`) -- every
profile too, so a typo in a rarely used one fails early -- and, with ``resolve``, imports the
``module:callable`` strings the recipe names (:mod:`compresskit.config.resolve`) and checks that
its checkpoint files exist, so a bad reference fails at load time, not mid-run.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from compresskit.config.compose import apply_overrides, display_path, merge_profile, read_recipe
from compresskit.config.errors import Provenance, RecipeError
from compresskit.config.resolve import resolve_object, resolve_task
from compresskit.config.schema import Recipe
from compresskit.config.shipped import find_recipe
from compresskit.config.validate import validate_recipe

__all__ = ["checkpoint_path", "load_recipe"]


def load_recipe(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    profile: str | None = None,
    resolve: bool = True,
) -> Recipe:
    """Load, compose and validate a recipe file.

    Args:
        path: The YAML file, or the name of a shipped recipe (:mod:`compresskit.config.shipped`).
        overrides: ``--set`` strings ``"key.path=value"``, applied last.
        profile: A key of the recipe's ``profiles`` to apply before overrides.
        resolve: Also import the task given as ``module:callable`` (and model
            specs given that way) so a bad reference fails here, not mid-run.

    Returns:
        The validated :class:`Recipe`.

    Raises:
        RecipeError: For any problem, naming the file, the key path and the value.

    Example:
        >>> recipe = load_recipe("recipes/shapes_classifier.yaml", ["distill.epochs=1"])  # doctest: +SKIP
        >>> recipe.distill.epochs  # doctest: +SKIP
        1
    """
    path = find_recipe(path)
    label = display_path(path)
    provenance = Provenance(label)
    data = read_recipe(path, provenance)
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, Mapping):
        raise RecipeError(f"{label}: profiles must be a mapping of name -> overrides, got {profiles!r}")
    for name, overrides_of_profile in profiles.items():
        if name != profile:  # validated alone; the selected one is validated with the overrides
            trial = copy.deepcopy(provenance)
            validate_recipe(merge_profile(data, name, overrides_of_profile, label, trial), label, trial)
    if profile is not None:
        if profile not in profiles:
            raise RecipeError(f"{label}: unknown profile {profile!r}; valid: {sorted(profiles)}")
        data = merge_profile(data, profile, profiles[profile], label, provenance)
        data["profile"] = profile
    data = apply_overrides(data, overrides, label, provenance)
    data["source"] = str(path)
    recipe = validate_recipe(data, label, provenance)
    if resolve:
        _check_references(recipe, path, provenance)
    return recipe


def _check_references(recipe: Recipe, path: Path, provenance: Provenance) -> None:
    """Import the task and ``module:callable`` models; check the named checkpoint files exist."""
    resolve_task(recipe.task, provenance.label(("task",)))  # validated: a name in TASKS or module:callable
    for key_path, spec in (("student", recipe.student.model),
                           ("teacher", recipe.teacher.model if recipe.teacher else "")):
        if ":" in spec:
            resolve_object(spec, f"{key_path}.model", provenance.label((key_path, "model")))
    for key_path, named in (("teacher", recipe.teacher.checkpoint if recipe.teacher else None),
                            ("student", recipe.student.checkpoint)):
        if named is not None and not checkpoint_path(named, path).exists():
            raise RecipeError(f"{provenance.label((key_path, 'checkpoint'))}: {key_path}.checkpoint "
                              f"file not found, got {named!r}")


def checkpoint_path(named: str, recipe_source: str | os.PathLike[str]) -> Path:
    """Where a recipe's ``*.checkpoint`` points: as given when absolute or present in the
    working directory, else relative to the recipe's folder."""
    checkpoint = Path(named)
    if not checkpoint.is_absolute() and not checkpoint.exists():
        checkpoint = Path(recipe_source).parent / checkpoint
    return checkpoint
