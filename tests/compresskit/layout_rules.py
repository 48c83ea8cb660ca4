"""The package's shape, as functions over ``{module name: source}`` (so each rule can be tried on a planted
violation as well as on the real tree).

* :func:`root_modules` -- the package root holds only ``__init__``, ``__main__`` (and ``py.typed``);
* :func:`private_imports` -- a private module (``pkg._x``) is imported only by modules of ``pkg``;
* :func:`layer_violations` -- a sub-package imports only from sub-packages below it in :data:`LAYERS`;
* :func:`cycles` -- the module import graph has no cycle, ``TYPE_CHECKING`` and function-level imports
  included (a package's lazily exported names count as edges to the modules that define them).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

PACKAGE_NAME = "compresskit"

#: Sub-packages from the bottom up; one entry may hold several that never import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("utils",), ("layers",), ("groups",), ("pruning",), ("search", "distill", "train"), ("models",),
    ("deploy",), ("tasks",), ("config",), ("report",), ("run",), ("cli",),
)
ROOT_FILES = {"__init__.py", "__main__.py", "py.typed"}


def read_package(root: Path) -> dict[str, str]:
    """``{dotted module name: source}`` of every ``.py`` file under the package folder ``root``."""
    sources = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[name] = path.read_text()
    return sources


def _is_package(name: str, sources: Mapping[str, str]) -> bool:
    return any(other.startswith(name + ".") for other in sources)


def _imports(name: str, source: str, sources: Mapping[str, str]) -> Iterator[tuple[int, str]]:
    """``(line, imported module)`` for every import of a package module in ``source`` (anywhere in it)."""
    package = name if _is_package(name, sources) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE_NAME:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE_NAME:
                continue
            for alias in node.names:  # ``from pkg import module`` imports the module
                yield node.lineno, (f"{target}.{alias.name}" if f"{target}.{alias.name}" in sources else target)


def _lazy_exports(source: str) -> set[str]:
    """The modules named in a ``lazy_exports(__name__, {...})`` call of a package ``__init__``."""
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "lazy_exports"
                and len(node.args) == 2 and isinstance(node.args[1], ast.Dict)):
            return {value.value for value in node.args[1].values if isinstance(value, ast.Constant)}
    return set()


def root_modules(files: list[str]) -> list[str]:
    """Files at the package root other than ``__init__.py``, ``__main__.py`` and ``py.typed``."""
    return sorted(name for name in files if name.endswith(".py") and name not in ROOT_FILES)


def private_imports(sources: Mapping[str, str]) -> list[str]:
    """``"importer:line: module"`` for each private module imported from outside its own package."""
    found = []
    for name, source in sources.items():
        for line, target in _imports(name, source, sources):
            parts = target.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_") and not part.startswith("__")]
            if not private:
                continue
            owner = ".".join(parts[: private[0]])
            if not (name == owner or name.startswith(owner + ".")):
                found.append(f"{name}:{line}: {target}")
    return found


def _layer(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) < 2:
        return None
    for rank, packages in enumerate(LAYERS):
        if parts[1] in packages:
            return rank
    return None


def layer_violations(sources: Mapping[str, str]) -> list[str]:
    """``"importer:line: module"`` for each import of a sub-package that is not below the importer's own.

    Modules outside every layer (the root ``__init__`` and ``__main__``) may import anything; a module
    of a sub-package missing from :data:`LAYERS` is itself a violation.
    """
    found = []
    for name, source in sources.items():
        if name.count(".") == 0 or name == f"{PACKAGE_NAME}.__main__":
            continue
        own = _layer(name)
        if own is None:
            found.append(f"{name}: sub-package {name.split('.')[1]!r} is in no layer")
            continue
        for line, target in _imports(name, source, sources):
            other = _layer(target)
            same_package = target.split(".")[:2] == name.split(".")[:2]
            if not same_package and (other is None or other >= own):
                found.append(f"{name}:{line}: {target}")
    return found


def cycles(sources: Mapping[str, str]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    edges: dict[str, set[str]] = {name: set() for name in sources}
    for name, source in sources.items():
        edges[name].update(target for _, target in _imports(name, source, sources) if target in sources)
        edges[name].update(f"{name}.{module}" for module in _lazy_exports(source) if f"{name}.{module}" in sources)
        edges[name].discard(name)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sources:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found
