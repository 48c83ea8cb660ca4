"""Turning ``package.module:callable`` strings into objects; the table of named tasks.

Recipes name user code as ``module:callable`` (``task: mypkg.tasks:MyTask``, ``model:
mypkg.models:build_model``), and a saved pruned model names its builder the same way
(:mod:`compresskit.models.persist`). Both import through
:func:`compresskit.utils.imports.import_attribute`, the one place a dotted attribute is looked up. Who may be imported is the caller's decision: a recipe is code the user runs,
a checkpoint is checked against the user's trust first (see :mod:`compresskit.models.persist`).

Named tasks (``task: image_classification``) come from :data:`BUILTIN_TASKS` and from installed
packages that declare them in the ``compresskit.tasks`` entry-point group (``mytask =
"mypkg.tasks:MyTask"`` in their ``pyproject.toml``), as pytest and flake8 plugins are found.
:data:`TASKS` is the live union of both; declaring a name imports nothing until a recipe uses it.
A built-in name cannot be taken over by a package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from typing import Any

from compresskit.config.errors import RecipeError
from compresskit.utils.imports import MissingAttributeError, ensure_cwd_importable, get_attribute, import_attribute

__all__ = ["BUILTIN_TASKS", "MissingAttributeError", "TASKS", "TASK_ENTRY_POINTS", "TaskTable",
           "ensure_cwd_importable", "get_attribute", "import_attribute", "resolve_object", "resolve_task"]

#: Tasks compresskit itself provides: ``task: <name>`` means the ``module:callable`` here.
BUILTIN_TASKS: dict[str, str] = {
    "image_classification": "compresskit.tasks.classification:image_folders",
}

#: Entry-point group where installed packages declare named tasks (value: ``module:callable``).
TASK_ENTRY_POINTS = "compresskit.tasks"


class TaskTable(Mapping[str, str]):
    """Every task name a recipe may use -> its ``module:callable``.

    :data:`BUILTIN_TASKS` plus the names declared in the :data:`TASK_ENTRY_POINTS` group, read from
    the installed packages' metadata at each lookup (so a package installed mid-session counts);
    nothing is imported.
    """

    def _names(self) -> dict[str, str]:
        declared = {entry.name: f"{entry.module}:{entry.attr}"
                    for entry in metadata.entry_points(group=TASK_ENTRY_POINTS)}
        return {**declared, **BUILTIN_TASKS}

    def __getitem__(self, name: str) -> str:
        return self._names()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"TaskTable({self._names()!r})"


#: Named tasks: built-ins and entry points (see :class:`TaskTable`).
TASKS: Mapping[str, str] = TaskTable()


def resolve_object(spec: str, key: str = "<spec>", source: str = "<recipe>") -> Any:
    """Import ``"package.module:attr"`` (attr may be dotted) and return the object.

    The current directory is put on ``sys.path`` (as ``python -m`` does), so a
    recipe can name a module next to it, e.g. ``mypkg.tasks:MyTask``.

    Args:
        spec: ``"module:attr"``.
        key: The recipe key path, for messages.
        source: The recipe file, for messages.

    Returns:
        The object (not called).

    Raises:
        RecipeError: If the string is malformed, the module cannot be imported,
            the attribute is missing, or it is not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise RecipeError(f"{source}: {key} must be 'package.module:callable', got {spec!r}")
    ensure_cwd_importable()
    try:
        obj = import_attribute(module_name, attr)
    except MissingAttributeError:
        raise RecipeError(f"{source}: {key} {spec!r}: module {module_name!r} has no "
                          f"attribute {attr!r}") from None
    except ModuleNotFoundError as error:
        raise RecipeError(f"{source}: {key} {spec!r}: cannot import module {module_name!r} "
                          f"({error})") from None
    except Exception as error:  # noqa: BLE001 - the user's module failed while importing
        raise RecipeError(f"{source}: {key} {spec!r}: importing {module_name!r} failed: "
                          f"{type(error).__name__}: {error}") from None
    if not callable(obj):
        raise RecipeError(f"{source}: {key} {spec!r} is not callable (got {type(obj).__name__})")
    return obj


def resolve_task(task: str, source: str = "<recipe>") -> Callable[..., Any]:
    """The task factory a recipe's ``task`` names: a key of :data:`TASKS` or ``module:callable``.

    Only the named module is imported (an entry point's package is imported when a recipe uses it).

    Raises:
        RecipeError: As :func:`resolve_object`, with ``task`` as the key.

    Example:
        >>> resolve_task("image_classification").__name__
        'image_folders'
    """
    return resolve_object(TASKS.get(task, task), "task", source)
