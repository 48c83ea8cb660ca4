"""Atomic file writes: everything compresskit writes lands whole or not at all.

The content goes to a temporary file in the destination's folder (same file system), which replaces
the destination with ``os.replace`` only after the writer returned. A crash or an exception leaves
the previous file untouched and removes the temporary file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    Example:
        >>> with atomic_path("run/model.onnx") as tmp:  # doctest: +SKIP
        ...     torch.onnx.export(model, inputs, tmp)
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` atomically."""
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)
