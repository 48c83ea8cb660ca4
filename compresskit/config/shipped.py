"""The recipes shipped inside the package: found by name, listed, copied out.

The repository's ``recipes/`` folder is the package ``compresskit.recipes`` (``pyproject.toml`` maps it;
one copy of each file, in the source tree and in the wheel), so after ``pip install compresskit``
``compresskit run featherface_nano_b`` runs the shipped file and ``compresskit recipes copy NAME .``
copies it (and the shipped recipes it ``extends``) out to edit, as Ultralytics' ``yolo copy-cfg``.

A recipe argument is a path first: an existing file always wins over a shipped name. ``extends`` in a
shipped recipe is a path relative to it, so it resolves inside the shipped folder.

Caveats:
    A recipe whose task is user code (``task: module:callable``, as ``shapes_classifier``'s, a module of the
    source repository that the wheel does not ship) runs only where that module imports; its listing says so.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from compresskit.config.errors import RecipeError
from compresskit.utils.safe_yaml import load_yaml

__all__ = ["copy_recipe", "describe_recipe", "find_recipe", "shipped_recipes"]

#: The package holding the shipped recipes.
SHIPPED_PACKAGE = "compresskit.recipes"


def shipped_recipes() -> dict[str, Path]:
    """Shipped recipe name (file stem) -> its file, sorted by name.

    Example:
        >>> sorted(shipped_recipes())[:2]
        ['featherface_nano_b', 'featherface_wider']
    """
    folder = Path(str(resources.files(SHIPPED_PACKAGE)))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def find_recipe(text: str | os.PathLike[str]) -> Path:
    """The recipe file ``text`` names: an existing path, else a shipped recipe's name (``.yaml`` optional).

    Raises:
        RecipeError: ``text`` is neither an existing file nor a shipped name; the message lists the names.
    """
    path = Path(text)
    if path.exists() or len(path.parts) > 1:
        return path  # a path (a missing one is reported by the reader, naming the file)
    shipped = shipped_recipes()
    name = path.name.removesuffix(".yaml")
    if name in shipped:
        return shipped[name]
    raise RecipeError(f"{text}: no such recipe file, and not a shipped recipe; shipped: {sorted(shipped)} "
                      "(compresskit recipes lists them)")


def describe_recipe(path: Path) -> str:
    """The first line of the recipe's leading comment, and what it needs beyond the package, if anything."""
    text = path.read_text(encoding="utf-8")
    first = next((line.lstrip("#").strip() for line in text.splitlines() if line.lstrip("#").strip()), "")
    summary = first if text.lstrip().startswith("#") else ""
    task = str(load_yaml(text).get("task", ""))
    if ":" in task:  # user code, not in the package: see the module docstring
        summary += f" [task {task} must be importable]"
    return summary


def copy_recipe(name: str, destination: str | os.PathLike[str], overwrite: bool = False) -> list[Path]:
    """Copy the shipped recipe ``name`` and the shipped recipes it extends into the folder ``destination``.

    Args:
        name: A shipped recipe's name (see :func:`shipped_recipes`).
        destination: A folder (created when missing).
        overwrite: Replace files already there (otherwise a ``FileExistsError`` names the first).

    Returns:
        The written files, the named recipe first.

    Raises:
        RecipeError: ``name`` is not shipped.
        FileExistsError: A file to write exists and ``overwrite`` is false.

    Example:
        >>> copy_recipe("image_classification", ".")  # doctest: +SKIP
        [PosixPath('image_classification.yaml')]
    """
    shipped = shipped_recipes()
    if name.removesuffix(".yaml") not in shipped:
        raise RecipeError(f"{name}: not a shipped recipe; shipped: {sorted(shipped)}")
    sources = _with_bases(shipped[name.removesuffix(".yaml")])
    folder = Path(destination)
    targets = [folder / source.name for source in sources]
    existing = [target for target in targets if target.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; remove it or pass --force to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    for source, target in zip(sources, targets):
        shutil.copyfile(source, target)
    return targets


def _with_bases(path: Path) -> list[Path]:
    """``path`` and, depth first, the files it ``extends`` (each once)."""
    files = [path]
    bases = load_yaml(path.read_text(encoding="utf-8")).get("extends") or []
    for base in [bases] if isinstance(bases, str) else bases:
        for found in _with_bases(path.parent / base):
            if found not in files:
                files.append(found)
    return files
