"""Atomic file writes: everything compresskit writes lands whole or not at all.

The content goes to a temporary file in the destination's folder (same file system), which replaces
the destination with ``os.replace`` only after the writer returned. An exception leaves the previous
file untouched and removes the temporary file. A kill (SIGKILL, power loss) cannot run that clean-up,
so the temporary file stays: :func:`remove_stale_temporaries` deletes such orphans when a run starts
again (the run driver calls it on the run directory when a run starts or resumes).

:func:`writable_path` resolves a destination and checks that its folder exists, with the one message
every writer (export, quantization) gives for a missing folder.

Files get the mode the umask gives (``0o666 & ~umask``, e.g. ``0644``), as ``open()`` would, not the
``0600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_path", "atomic_torch_save", "atomic_write_text", "remove_stale_temporaries", "writable_path"]

_SUFFIX = ".tmp"
#: ``.<destination name>.<8 random characters from mkstemp>.tmp``
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restore at once
    os.umask(mask)
    return mask


def writable_path(path: str | os.PathLike[str]) -> Path:
    """``path`` resolved (``~`` expanded), checked to lie in an existing folder.

    Raises:
        ValueError: The folder of ``path`` does not exist (the message names both).
    """
    path = Path(path).expanduser().resolve()
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: directory {str(path.parent)!r} does not exist")
    return path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    The file gets mode ``0o666 & ~umask`` before it is moved into place.

    Example:
        >>> with atomic_path("run/model.onnx") as tmp:  # doctest: +SKIP
        ...     torch.onnx.export(model, inputs, tmp)
    """
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_SUFFIX)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())
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


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left in ``directory`` when it was killed.

    Call it only when no other writer uses ``directory`` (e.g. when a run starts or resumes).

    Returns:
        The removed paths (sorted).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for entry in sorted(directory.iterdir()):
        if _TEMPORARY.match(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
