"""Atomic file writes: everything compresskit writes lands whole or not at all.

The content goes to a temporary file in the destination's folder (same file system), which replaces
the destination with ``os.replace`` only after the writer returned. An exception leaves the previous
file untouched and removes the temporary file. A kill (SIGKILL, power loss) cannot run that clean-up,
so the temporary file stays: :func:`remove_stale_temporaries` deletes such orphans when a run starts
again (the run driver calls it on the run directory when a run starts or resumes). The temporary file
is flushed to the disk (``os.fsync``) before the rename and the folder after it, so the new content
survives a power loss as well as a kill.

A write that the file system refuses (full, over quota, read-only, permission denied) raises
:class:`WriteError`, an ``OSError`` naming the destination (not the temporary file) with what to do,
also where the writer buried the ``OSError`` (``torch.save`` reports a full disk as a ``RuntimeError``).

:func:`writable_path` resolves a destination and checks that its folder exists, with the one message
every writer (export, quantization) gives for a missing folder.

Files get the mode the umask gives (``0o666 & ~umask``, e.g. ``0644``), as ``open()`` would, not the
``0600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ["WRITE_ERRNOS", "WriteError", "atomic_path", "atomic_torch_save", "atomic_write_text", "raise_if_refused",
           "remove_stale_temporaries", "writable_path", "write_error"]

_SUFFIX = ".tmp"
#: ``.<destination name>.<8 random characters from mkstemp>.tmp``
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


#: The file-system refusals a user can fix, with what to do about each.
WRITE_ERRNOS = {
    errno.ENOSPC: "free space on it",
    errno.EDQUOT: "free space or raise your disk quota",
    errno.EROFS: "make the file system writable or choose another directory",
    errno.EACCES: "give yourself write permission on its folder or choose another directory",
    errno.EPERM: "give yourself write permission on its folder or choose another directory",
}


class WriteError(OSError):
    """A file could not be written because the file system refused (see :data:`WRITE_ERRNOS`).

    ``filename`` is the destination; ``str(error)`` is one line: what happened, to which file, what to do.
    """

    def __str__(self) -> str:
        reason = (self.strerror or os.strerror(self.errno)).lower()
        return f"{reason} while writing {self.filename}: {WRITE_ERRNOS.get(self.errno, 'fix the file system')}"


def write_error(path: str | os.PathLike[str], error: BaseException) -> WriteError | None:
    """``error`` as a :class:`WriteError` for ``path`` when it (or its cause) is a refusal of the file system."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, WriteError):
            return error
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return WriteError(error.errno, error.strerror or os.strerror(error.errno), str(path))
        error = error.__cause__ or error.__context__
    return None


def raise_if_refused(path: str | os.PathLike[str], error: BaseException) -> None:
    """Raise ``error`` as a :class:`WriteError` for ``path`` when it is a refusal of the file system; return
    otherwise (the caller's bare ``raise`` then re-raises ``error``)."""
    refused = write_error(path, error)
    if refused is not None and refused is not error:  # else the caller's bare ``raise`` re-raises it
        raise refused from error


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk; a folder that cannot be opened is skipped."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:
        if directory:  # e.g. Windows: folders cannot be opened; the rename is durable there anyway
            return
        raise
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=_SUFFIX)
    except OSError as error:
        raise_if_refused(path, error)
        raise
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent, directory=True)
    except Exception as error:
        raise_if_refused(path, error)
        raise
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` atomically.

    Written through a Python file object, so a refused write surfaces as the ``OSError`` it is
    (``torch.save`` to a path reports a full disk only as ``RuntimeError: ... unexpected pos``).
    """
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        torch.save(obj, handle)


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
