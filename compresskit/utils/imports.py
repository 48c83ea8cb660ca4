"""Importing ``package.module:callable`` targets: the one place a dotted attribute is looked up.

Recipes (:mod:`compresskit.config.resolve`) and saved pruned models (:mod:`compresskit.models.persist`)
name user code as ``module:callable``; both import through :func:`import_attribute`, and
:func:`ensure_cwd_importable` puts the working directory on ``sys.path`` as ``python -m`` does. Who may
be imported is the caller's decision.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__all__ = ["MissingAttributeError", "ensure_cwd_importable", "get_attribute", "import_attribute"]


class MissingAttributeError(AttributeError):
    """A ``module:callable`` string names an attribute its module does not have."""


def ensure_cwd_importable() -> None:
    """Put the current directory on ``sys.path`` (as ``python -m`` does), once.

    User code named as ``module:callable`` (in recipes, and as the builder of a
    saved pruned model) is imported relative to where ``compresskit`` runs.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def get_attribute(target: Any, attribute: str) -> Any:
    """``target.a.b`` for ``attribute="a.b"``.

    Raises:
        MissingAttributeError: A part is missing (the message is Python's own ``AttributeError``'s).
    """
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as error:
            raise MissingAttributeError(str(error)) from None
    return target


def import_attribute(module_name: str, attribute: str) -> Any:
    """Import ``module_name`` and return its (dotted) ``attribute``; nothing is checked or caught.

    Raises:
        ImportError: The module (or one it imports) is not installed; whatever else importing
            the module raises propagates as is.
        MissingAttributeError: The module has no such attribute.
    """
    return get_attribute(importlib.import_module(module_name), attribute)
