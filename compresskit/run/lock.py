"""The run-directory lock: one run (one process, or one ``torchrun`` job) per run directory at a time.

``run.lock`` in the run directory is locked with ``fcntl.flock`` for the whole life of a run, fresh or
``--resume``, and holds the holder's PID, host and start time as one JSON line, which a refused second
process prints. The kernel drops a flock when its process dies, SIGKILL included, so the lock of a
killed run is stale by construction and the next run takes it over: no PID probing, no clock, no
race between checking and taking. The file is never replaced or deleted (a second inode would let two
processes each hold "the" lock); it stays in the run directory naming the last holder.

Under ``torchrun`` rank 0 takes the lock for every rank of its job and a refusal reaches every rank.

Caveats: ``flock`` is POSIX; where ``fcntl`` is missing (Windows) no lock is taken. On NFS, Linux
emulates ``flock`` with POSIX byte-range locks, which hold across hosts only where the lock daemon runs.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from typing import IO

from compresskit.run.workspace import RunDirError
from compresskit.train import distributed

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["LOCK_FILE", "RunLock", "RunLockedError", "lock_run_dir"]

#: The lock file's name in the run directory.
LOCK_FILE = "run.lock"


class RunLockedError(RunDirError):
    """Another live process holds the run directory's lock."""


class RunLock:
    """A held lock on a run directory; :meth:`release` (or the process's end) lets it go."""

    def __init__(self, directory: Path, handle: IO[str] | None) -> None:
        self.directory = directory
        self._handle = handle

    def release(self) -> None:
        """Unlock (idempotent); the file stays."""
        if self._handle is not None:
            self._handle.close()  # closing the last descriptor drops the flock
            self._handle = None


def _holder(text: str) -> str:
    try:
        record = json.loads(text)
        return f"PID {record['pid']} on {record['host']} since {record['since']}"
    except (ValueError, TypeError, KeyError):
        return "another process (starting: no details written yet)"


def _acquire(directory: Path) -> RunLock:
    """Lock ``directory`` (it exists) for this process, or raise :class:`RunLockedError` naming the holder."""
    if fcntl is None:  # pragma: no cover - Windows
        return RunLock(directory, None)
    handle = open(directory / LOCK_FILE, "a+", encoding="utf-8")  # "a+": nothing truncated before the lock
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _holder(handle.read())
        handle.close()
        raise RunLockedError(f"{directory} is in use by {holder}; wait for that run to end or stop it "
                             f"(a stopped run continues with --resume {directory})") from None
    since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n")
    handle.flush()
    return RunLock(directory, handle)


def lock_run_dir(directory: Path) -> RunLock:
    """Lock the existing run directory ``directory`` for this run (collective under ``torchrun``).

    Rank 0 takes the lock; the other ranks get an unheld :class:`RunLock`, or rank 0's refusal.

    Raises:
        RunLockedError: Another live process holds the lock (the message names its PID, host and
            start time); nothing was written.

    Example:
        >>> lock = lock_run_dir(Path("runs/toy"))  # doctest: +SKIP
        >>> lock.release()  # doctest: +SKIP
    """
    lock, refusal = RunLock(directory, None), None
    if distributed.is_main():
        try:
            lock = _acquire(directory)
        except RunLockedError as error:
            refusal = str(error)
    refusal = distributed.broadcast(refusal)
    if refusal is not None:
        raise RunLockedError(refusal)
    return lock
