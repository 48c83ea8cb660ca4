"""How recipe problems are reported: :class:`RecipeError`, key paths, and where each value came from.

Every recipe message reads ``<source>: <key.path> <problem>, got <value>``, where ``<source>`` is the
file (or the ``--set`` override, or the profile) that introduced the value::

    recipes/x.yaml (--set distill.alpha=1.5): distill.alpha must be within [0, 1], got 1.5

The validator raises :class:`InvalidValue` (a key path and the problem) deep inside the type walk;
:func:`compresskit.config.validate.validate_recipe` turns it into a :class:`RecipeError` with the
source that :class:`Provenance` recorded for that path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["InvalidValue", "Provenance", "RecipeError", "dotted"]


class RecipeError(ValueError):
    """A recipe (or an override of it) is malformed.

    The message always starts with the source (file, plus the ``--set`` or
    profile that introduced the value) and names the key path and the bad value.
    It is capped at :data:`MESSAGE_LIMIT` characters, so a huge quoted value cannot
    flood the terminal.
    """

    MESSAGE_LIMIT = 1000

    def __init__(self, message: str) -> None:
        if len(message) > self.MESSAGE_LIMIT:
            message = f"{message[:self.MESSAGE_LIMIT]}... (message cut, {len(message):,} chars)"
        super().__init__(message)


class InvalidValue(Exception):
    """A value at ``path`` is wrong; ``message`` says how (``"must be >= 0, got -1"``).

    Internal to validation: callers see it as a :class:`RecipeError` that names the source.
    """

    def __init__(self, path: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def dotted(path: Sequence[str]) -> str:
    """``("prune", "rates")`` -> ``"prune.rates"``; the empty path is ``"<top level>"``."""
    return ".".join(path) if path else "<top level>"


class Provenance:
    """Which file, profile or ``--set`` override introduced the value at each key path.

    Args:
        default: The label of keys nobody marked (the recipe file).

    Example:
        >>> provenance = Provenance("x.yaml")
        >>> provenance.mark({"alpha": 1.5}, "x.yaml (--set distill.alpha=1.5)", ("distill",))
        >>> provenance.label(("distill", "alpha"))
        'x.yaml (--set distill.alpha=1.5)'
    """

    def __init__(self, default: str) -> None:
        self.default = default
        self._by_path: dict[tuple[str, ...], str] = {}

    def mark(self, data: Any, label: str, prefix: tuple[str, ...] = ()) -> None:
        """Record ``label`` for ``prefix`` and every key path below it in ``data``."""
        self._by_path[prefix] = label
        if isinstance(data, Mapping):
            for key, value in data.items():
                self.mark(value, label, prefix + (str(key),))

    def label(self, path: tuple[str, ...]) -> str:
        """The label of the longest marked prefix of ``path`` (else the default)."""
        for end in range(len(path), -1, -1):
            if path[:end] in self._by_path:
                return self._by_path[path[:end]]
        return self.default
