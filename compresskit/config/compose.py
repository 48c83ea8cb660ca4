"""Composing a recipe's raw mapping: YAML files, ``extends``, profiles and ``--set`` overrides.

Composition, in order (later wins):

1. ``extends: base.yaml`` (a path relative to the extending file, or a list of
   them) -- the bases are deep-merged first; cycles are an error.
2. The file's own keys.
3. ``profiles.<name>`` selected with ``--profile NAME`` -- a named mapping of
   overrides (nested mappings, or dotted keys such as ``distill.epochs: 50``).
4. ``--set key.path=value`` overrides, each value parsed as a YAML scalar or
   flow collection (``--set export.input_size=[64,64]``).

Deep merge: mappings merge key by key; any other value (lists included) replaces.
Setting a key to ``null`` resets it to the default.

Every step records in a :class:`~compresskit.config.errors.Provenance` which file, profile or
override introduced each key, so a bad value is reported where the user wrote it. Nothing here
checks values; that is :mod:`compresskit.config.validate`'s job.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from compresskit.config.errors import Provenance, RecipeError, dotted
from compresskit.utils.safe_yaml import YamlInputError, decode_yaml_bytes, load_yaml, number_from_string

__all__ = ["apply_overrides", "deep_merge", "display_path", "merge_profile", "parse_override", "read_recipe",
           "read_yaml"]


def read_yaml(path: Path, label: str) -> dict[str, Any]:
    """Parse a recipe file with the bounded safe loader (:mod:`compresskit.utils.safe_yaml`): duplicate keys,
    alias bombs, deep nesting, binary and non-UTF-8 files are one-line :class:`RecipeError`s."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"{label}: recipe file not found: {path}") from None
    except OSError as error:
        raise RecipeError(f"{label}: cannot read recipe file {path}: {error.strerror or error}") from None
    try:
        data = load_yaml(decode_yaml_bytes(raw))
    except YamlInputError as error:
        raise RecipeError(f"{label}: {error}") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{label}: invalid YAML: {' '.join(str(error).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{label}: a recipe must be a mapping at the top level, "
                          f"got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``update`` merged in (mappings key by key, anything else replaces).

    Example:
        >>> deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": [4]})
        {'a': {'b': 1, 'c': 3}, 'd': [4]}
    """
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(dict(merged[key]), value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def display_path(path: Path) -> str:
    """``path`` as messages show it: relative to the working directory unless that climbs out."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # other drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative


def read_recipe(path: Path, provenance: Provenance, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of the recipe file ``path`` with its ``extends`` bases merged under it.

    Args:
        path: The recipe file.
        provenance: Records the file each key comes from.
        chain: The files already being read (internal, to report ``extends`` cycles).

    Raises:
        RecipeError: Unreadable or malformed YAML, a missing base, an ``extends`` cycle.
    """
    resolved = path.resolve()
    label = display_path(path)
    if resolved in chain:
        cycle = " -> ".join(display_path(p) for p in chain + (resolved,))
        raise RecipeError(f"{label}: extends cycle: {cycle}")
    data = read_yaml(path, label)
    bases = data.pop("extends", None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(f"{label}: extends must be a path or a list of paths, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.exists():
            raise RecipeError(f"{label}: extends {base!r}: file not found: {display_path(base_path)}")
        merged = deep_merge(merged, read_recipe(base_path, provenance, chain + (resolved,)))
    provenance.mark(data, label)
    return deep_merge(merged, data)


def _expand_dotted(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": {"d.e": 2}}`` -> ``{"a": {"b": 1}, "c": {"d": {"e": 2}}}``."""
    result: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            value = _expand_dotted(value)
        parts = str(key).split(".")
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        result = deep_merge(result, {parts[0]: nested})
    return result


def merge_profile(data: dict[str, Any], name: str, overrides: Any, label: str,
                  provenance: Provenance) -> dict[str, Any]:
    """``data`` with the profile ``name`` (its ``overrides`` mapping, dotted keys allowed) merged in.

    Raises:
        RecipeError: ``overrides`` is not a mapping.
    """
    if not isinstance(overrides, Mapping):
        raise RecipeError(f"{label}: profiles.{name} must be a mapping of overrides, got {overrides!r}")
    expanded = _expand_dotted(overrides)
    provenance.mark(expanded, f"{label} (profile {name})")
    return deep_merge(data, expanded)


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``"a.b.c=value"`` into a key path and a YAML-parsed value.

    Args:
        text: The override as given to ``--set``.

    Returns:
        ``(("a", "b", "c"), value)``; ``value`` is parsed with ``yaml.safe_load``
        (``3`` -> int, ``1e-3`` -> float, ``[64,64]`` -> list, ``null`` -> None).

    Raises:
        RecipeError: If there is no ``=`` or the key is empty.

    Example:
        >>> parse_override("distill.alpha=0.5")
        (('distill', 'alpha'), 0.5)
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"--set {text}: expected key.path=value, e.g. distill.epochs=5")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise RecipeError(f"--set {text}: cannot parse value {raw!r}: {error}") from None
    value = number_from_string(value)
    return tuple(key.split(".")), value


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any, label: str) -> None:
    node = data
    for depth, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise RecipeError(
                f"{label}: cannot set {dotted(path)}: {dotted(path[: depth + 1])} "
                f"is {child!r}, not a mapping"
            )
        node = child
    node[path[-1]] = value


def apply_overrides(
    data: Mapping[str, Any], overrides: Sequence[str], source: str = "<recipe>",
    provenance: Provenance | None = None,
) -> dict[str, Any]:
    """Apply ``--set key.path=value`` overrides to a raw (unvalidated) recipe dict.

    Validation happens afterwards, in :func:`~compresskit.config.validate.validate_recipe`, exactly
    as for a file.

    Args:
        data: The raw recipe mapping.
        overrides: Strings ``"key.path=value"``.
        source: The recipe file name, for messages.
        provenance: When given, records each override as the source of the keys it sets.

    Returns:
        A new dict with the overrides applied.

    Raises:
        RecipeError: If an override is malformed or descends into a non-mapping.

    Example:
        >>> apply_overrides({"distill": {"epochs": 2}}, ["distill.epochs=5"])
        {'distill': {'epochs': 5}}
    """
    result = copy.deepcopy(dict(data))
    for text in overrides:
        path, value = parse_override(text)
        label = f"{source} (--set {text})"
        _set_path(result, path, value, label)
        if provenance is not None:
            provenance.mark(value, label, path)
    return result
