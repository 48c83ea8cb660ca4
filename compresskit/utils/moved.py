"""Old import paths of moved modules, kept for one release: importing one warns and forwards.

compresskit 0.1 had its modules at the package root (``compresskit.prune``, ``compresskit.pipeline``,
``compresskit.recipe``, ...); they now live in concept sub-packages. :class:`MovedModules` is a
``sys.meta_path`` finder that answers only for those old names: ``import compresskit.budget`` gives a
thin module that emits a :class:`DeprecationWarning` naming the new path and forwards every attribute
read to the new module. ``compresskit.prune`` stays callable (it ran the one-shot ``prune``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import types
import warnings
from collections.abc import Mapping
from typing import Any

__all__ = ["MovedModules"]


class _Forward(types.ModuleType):
    """A module whose attributes are read from ``target`` (and which calls ``target.<callable_name>``)."""

    def __init__(self, name: str, target: str, callable_name: str | None) -> None:
        super().__init__(name)
        self.__target = target
        self.__callable_name = callable_name

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self.__target), name)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__target))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.__callable_name is None:
            raise TypeError(f"module {self.__name__!r} is not callable")
        return getattr(importlib.import_module(self.__target), self.__callable_name)(*args, **kwargs)


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finder and loader for the old paths in ``moves`` (old dotted name -> new dotted name).

    Args:
        moves: Old module name -> the module that replaces it.
        callables: Old module name -> the attribute a call on the old module runs.
    """

    def __init__(self, moves: Mapping[str, str], callables: Mapping[str, str] | None = None) -> None:
        self.moves = dict(moves)
        self.callables = dict(callables or {})

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.moves:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _Forward(spec.name, self.moves[spec.name], self.callables.get(spec.name))

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(f"{module.__name__} moved to {self.moves[module.__name__]}; the old path goes in the "
                      "next release", DeprecationWarning, stacklevel=2)
