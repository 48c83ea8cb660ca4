"""A package's public names, imported from its modules on first use (PEP 562 module ``__getattr__``).

Each sub-package's ``__init__.py`` lists what it offers as ``{name: module}`` and gets its
``__getattr__``, ``__dir__`` and ``__all__`` from :func:`lazy_exports`, so importing a package imports
none of its modules (``compresskit --help`` stays free of torch, and a missing optional extra is
reported only by the module that needs it).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]],
                                                                      list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose public ``name`` lives in ``exports[name]``.

    Example:
        >>> __getattr__, __dir__, __all__ = lazy_exports(__name__, {"find_groups": "find"})  # doctest: +SKIP
    """
    names = sorted(exports)

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__, names
