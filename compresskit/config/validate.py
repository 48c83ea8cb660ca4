"""Checking a raw recipe mapping and building the frozen :class:`~compresskit.config.schema.Recipe`.

:func:`validate_recipe` is the one place recipe values are checked: a generic walker over the schema
dataclasses converts each value to its field's type (``bool``, ``int``, ``float``, ``str``,
``Literal``, ``X | None``, tuples, ``dict[str, X]``, nested dataclasses) and range, then
:func:`cross_checks` checks what one field cannot say alone (``min_params <= max_params``, rates
inside their group's bounds, ...). A failure is a :class:`~compresskit.config.errors.RecipeError`
naming the source, the key path and the bad value::

    recipes/x.yaml: prune.groups.backbone_early.bounds must be within [0, 1), got 1.2

Only the recipe is checked here; whether its group names exist in the model or its budget is
reachable is the run's pre-flight plan's job, and whether its ``module:callable`` strings import is
:func:`compresskit.config.load.load_recipe`'s.

Caveats:
    PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a *string*. Float fields
    accept such strings when they parse as a number, so ``lr: 1e-3`` works.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from compresskit.config.errors import InvalidValue, Provenance, RecipeError, dotted
from compresskit.config.resolve import TASKS
from compresskit.config.schema import Recipe
from compresskit.utils.safe_yaml import number_from_string

__all__ = ["build", "cross_checks", "type_name", "validate_recipe"]


def type_name(annotation: Any) -> str:
    """How messages name a field type: ``an integer``, ``a list of 2 numbers``, ``one of 'a', 'b'``."""
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        plural = {int: "integers", float: "numbers", str: "strings"}.get(args[0], "items")
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {plural}"
        return f"a list of {len(args)} {plural}"
    if origin is dict:
        return f"a mapping of {type_name(typing.get_args(annotation)[1])}"
    if dataclasses.is_dataclass(annotation):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _convert(value: Any, annotation: Any, path: tuple[str, ...], metadata: Mapping[str, Any]) -> Any:
    """``value`` checked against ``annotation`` and the field's range, converted (lists -> tuples)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return copy.deepcopy(value)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        non_null = [a for a in options if a is not type(None)]
        if len(non_null) == 1:
            return _convert(value, non_null[0], path, metadata)
        raise InvalidValue(path, f"must be {type_name(annotation)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(annotation) or isinstance(value, bool):
            raise InvalidValue(path, f"must be {type_name(annotation)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, path)
    if origin is tuple:
        return _convert_tuple(value, annotation, path, metadata)
    if origin is dict:
        return _convert_dict(value, annotation, path, metadata)
    return _convert_scalar(value, annotation, path, metadata)


def _convert_tuple(value: Any, annotation: Any, path: tuple[str, ...], metadata: Mapping[str, Any]) -> tuple:
    args = typing.get_args(annotation)
    variadic = len(args) == 2 and args[1] is Ellipsis
    if isinstance(value, str) and variadic:
        value = [value]  # a single pattern is a one-element list
    if isinstance(value, Mapping) and variadic and typing.get_origin(args[0]) is dict:
        value = [value]  # a single mapping is a one-element list of mappings
    if not isinstance(value, (list, tuple)):
        raise InvalidValue(path, f"must be {type_name(annotation)}, got {value!r}")
    if variadic:
        element_types = [args[0]] * len(value)
    else:
        if len(value) != len(args):
            raise InvalidValue(path, f"must be {type_name(annotation)}, got {value!r}")
        element_types = list(args)
    # Elements are reported under the tuple's own path: "bounds must be ..., got 1.2".
    return tuple(_convert(v, t, path, metadata) for v, t in zip(value, element_types))


def _convert_dict(value: Any, annotation: Any, path: tuple[str, ...], metadata: Mapping[str, Any]) -> dict:
    _, value_type = typing.get_args(annotation)
    if not isinstance(value, Mapping):
        raise InvalidValue(path, f"must be {type_name(annotation)}, got {value!r}")
    result = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise InvalidValue(path, f"keys must be strings, got {key!r}")
        result[key] = _convert(item, value_type, path + (key,), metadata)
    return result


def _convert_scalar(value: Any, annotation: Any, path: tuple[str, ...], metadata: Mapping[str, Any]) -> Any:
    if annotation is bool:
        if not isinstance(value, bool):
            raise InvalidValue(path, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise InvalidValue(path, f"must be an integer, got {value!r}")
        value = int(value)
    elif annotation is float:
        value = number_from_string(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidValue(path, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise InvalidValue(path, f"must be a finite number, got {value!r}")
    elif annotation is str:
        if not isinstance(value, str) or not value:
            raise InvalidValue(path, f"must be a non-empty string, got {value!r}")
        return value
    else:  # pragma: no cover - schema bug
        raise TypeError(f"unsupported annotation {annotation!r} at {dotted(path)}")
    check = metadata.get("range")
    if check is not None and not check.contains(value):
        raise InvalidValue(path, f"must be {check.describe()}, got {value!r}")
    return float(value) if annotation is float else value


def build(cls: type, data: Any, path: tuple[str, ...] = ()) -> Any:
    """An instance of the schema dataclass ``cls`` from the raw mapping ``data`` found at ``path``.

    Absent keys and ``null`` (for fields that do not accept ``null``) take the field's default.

    Raises:
        InvalidValue: An unknown key (with the closest valid one), a missing required key, or a
            value of the wrong type or range.
    """
    if not isinstance(data, Mapping):
        raise InvalidValue(path, f"must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidValue(path + (str(key),), f"is not a known key{hint}; valid: {sorted(fields)}")
    values = {}
    for name, spec in fields.items():
        has_default = not (
            spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        )
        if name not in data or (data[name] is None and not _accepts_none(hints[name])):
            if not has_default:
                problem = "is required" if name not in data else (
                    f"must be {type_name(hints[name])}, got None")
                raise InvalidValue(path + (name,), problem)
            continue  # absent or null: the default
        values[name] = _convert(data[name], hints[name], path + (name,), spec.metadata)
    return cls(**values)


def _accepts_none(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType) and type(None) in typing.get_args(
        annotation
    )


def _check_spec_syntax(spec: str, path: tuple[str, ...], named: Mapping[str, str] | None) -> None:
    """``spec`` is a key of ``named`` (when given) or a well-formed ``module:callable``."""
    if ":" in spec:
        module, _, attr = spec.partition(":")
        if not module or not attr or not all(p.isidentifier() for p in module.split(".")) or not all(
            p.isidentifier() for p in attr.split(".")
        ):
            raise InvalidValue(path, f"must be a name or 'package.module:callable', got {spec!r}")
    elif named is not None and spec not in named:
        raise InvalidValue(path, f"must be one of {sorted(named)} or 'package.module:callable', got {spec!r}")


def _check_prune(recipe: Recipe) -> None:
    """Layer groups, rates within their bounds, and the soft-pruning schedule."""
    groups = recipe.prune.groups or {}
    for name, group in groups.items():
        low, high = group.bounds
        if low > high:
            raise InvalidValue(("prune", "groups", name, "bounds"),
                               f"must be [low, high] with low <= high, got {list(group.bounds)}")
        if not group.patterns and not group.types:
            raise InvalidValue(("prune", "groups", name), "needs patterns or types, got neither")
    if recipe.prune.rates is not None and groups:
        for name, rate in recipe.prune.rates.items():
            if name not in groups:
                raise InvalidValue(("prune", "rates", name),
                                   f"is not a layer group; groups: {sorted(groups)}")
            low, high = groups[name].bounds
            if not low <= rate <= high:
                raise InvalidValue(("prune", "rates", name),
                                   f"must be within prune.groups.{name}.bounds "
                                   f"[{low}, {high}], got {rate}")
    if not recipe.search.enabled and recipe.prune.rates is None:
        raise InvalidValue(("prune", "rates"),
                           "is required when search.enabled is false, got None")
    schedule = recipe.prune.schedule
    end = schedule.end if schedule.end is not None else schedule.epochs
    if schedule.kind != "constant" and schedule.epochs > 0 and end <= schedule.start:
        raise InvalidValue(("prune", "schedule", "end"),
                           f"must be > prune.schedule.start ({schedule.start}), got {end}")
    if schedule.end is not None and schedule.end > schedule.epochs:
        raise InvalidValue(("prune", "schedule", "end"),
                           f"must be <= prune.schedule.epochs ({schedule.epochs}), got {schedule.end}")
    if recipe.prune.reconstruct is not None and schedule.epochs > 0:
        raise InvalidValue(("prune", "reconstruct"),
                           f"needs one-shot pruning (prune.schedule.epochs: 0; after soft-pruning epochs the "
                           f"layers no longer match the unpruned model), got prune.schedule.epochs: {schedule.epochs}")
    if recipe.prune.importance == "output_error" and recipe.prune.reconstruct is None:
        raise InvalidValue(("prune", "importance"),
                           "output_error chooses channels from calibration data: it needs prune.reconstruct "
                           "(one-shot pruning; its batches are the calibration data), got prune.reconstruct: null")
    _check_global(recipe)


def _check_global(recipe: Recipe) -> None:
    """``search.method: global`` and ``search.start: global`` price channels on ``prune.reconstruct``'s batches."""
    search = recipe.search
    for key, used in (("method", search.method == "global"), ("start", search.start == "global")):
        if used and search.enabled and recipe.prune.reconstruct is None:
            raise InvalidValue(("search", key), "global allocates rates from calibration data: it needs "
                               "prune.reconstruct (its batches), got prune.reconstruct: null")
    if search.start == "global" and search.method != "bo":
        raise InvalidValue(("search", "start"), f"global is a start point of search.method bo, got {search.method!r}")
    if search.method == "global" and search.bypass:
        raise InvalidValue(("search", "bypass"), "needs a search with trials (search.method bo or random), "
                           "got search.method: global")
    if recipe.prune.split_groups and search.enabled and search.method != "global":
        raise InvalidValue(("prune", "split_groups"), "gives every channel set its own rate, which only "
                           f"search.method: global prices (or search.enabled: false), got search.method: {search.method}")


def cross_checks(recipe: Recipe) -> None:
    """Constraints between fields of a built recipe; each raises naming the later key.

    Only what the recipe alone decides: checks against the model belong to the pre-flight plan.

    Raises:
        InvalidValue: The first violated constraint.
    """
    budget = recipe.search.budget
    if budget.min_params > budget.max_params:
        raise InvalidValue(("search", "budget", "min_params"),
                           f"must be <= search.budget.max_params ({budget.max_params}), "
                           f"got {budget.min_params}")
    _check_prune(recipe)
    if recipe.student.init_from == "teacher" and recipe.teacher is None:
        raise InvalidValue(("student", "init_from"), "needs a teacher, got teacher: null")
    if recipe.student.init_from is not None and recipe.student.checkpoint is not None:
        raise InvalidValue(("student", "init_from"),
                           f"cannot be combined with student.checkpoint, got {recipe.student.init_from!r}")
    if recipe.distill.features and recipe.teacher is None:
        raise InvalidValue(("distill", "features"), "needs a teacher, got teacher: null")
    _check_spec_syntax(recipe.task, ("task",), TASKS)
    _check_spec_syntax(recipe.student.model, ("student", "model"), None)
    if recipe.teacher is not None:
        _check_spec_syntax(recipe.teacher.model, ("teacher", "model"), None)
    if not recipe.name.replace("-", "_").replace(".", "_").isidentifier():
        raise InvalidValue(("name",), f"must be letters, digits, '_', '-', '.', got {recipe.name!r}")


def validate_recipe(data: Mapping[str, Any], source: str = "<recipe>",
                    sources: Provenance | None = None) -> Recipe:
    """Check a raw recipe mapping and build the frozen :class:`Recipe`.

    This is the one place recipe values are checked. Profiles are not applied
    here (see :func:`compresskit.config.load.load_recipe`).

    Args:
        data: The merged raw mapping (after extends, profile and overrides).
        source: File name used in messages.
        sources: Provenance of keys (names base files, profiles and overrides).

    Returns:
        The validated recipe.

    Raises:
        RecipeError: Naming the source, the key path and the bad value.

    Example:
        >>> validate_recipe({"name": "x", "task": "mypkg.tasks:MyTask", "distill": {"alpha": 2},
        ...                  "student": {"model": "small"}}, "x.yaml")
        Traceback (most recent call last):
        compresskit.config.errors.RecipeError: x.yaml: distill.alpha must be within [0, 1], got 2
    """
    sources = sources or Provenance(source)
    data = dict(data)
    data.setdefault("source", source)
    try:
        recipe = build(Recipe, data, ())
        for name, profile in recipe.profiles.items():
            if not isinstance(profile, Mapping):
                raise InvalidValue(("profiles", name), f"must be a mapping of overrides, got {profile!r}")
        cross_checks(recipe)
    except InvalidValue as failure:
        raise RecipeError(f"{sources.label(failure.path)}: {dotted(failure.path)} "
                          f"{failure.message}") from None
    return recipe
