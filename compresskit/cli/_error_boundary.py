"""The CLI's one error boundary: any exception escaping a command -> one line and an exit status.

Contract: :func:`to_click_error` maps an exception to a :class:`click.ClickException` whose message is one
line (whitespace collapsed, at most :data:`MESSAGE_LIMIT` characters). User errors exit with status 2
(:class:`UserError`): the library's ``ValueError``/``TypeError`` (``RecipeError`` and
``UntrustedBuilderError`` among them), ``RunDirError``, YAML and unpickling errors, a missing optional
package (naming the extra to install, :mod:`compresskit.utils.optional`) and file-system errors such as a
missing file, permission denied, a read-only or full disk (a refused write, ``WriteError``, names the file
and what to do; ``compresskit run`` adds how to resume). A stopped phase (``PhaseError``) exits 1 in
one line. Anything else exits 1 with one line naming a log file that holds the traceback
(``$COMPRESSKIT_LOG_DIR``, else ``~/.cache/compresskit/logs``, else the temp folder).
"""

from __future__ import annotations

import datetime
import errno
import os
import pickle
import sys
import tempfile
import traceback
from pathlib import Path

import click

__all__ = ["MESSAGE_LIMIT", "USER_ERRNOS", "UserError", "one_line", "to_click_error", "write_log"]

#: File-system errors that are the user's to fix (exit 2), not bugs.
USER_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                         errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ENOTEMPTY})
MESSAGE_LIMIT = 500


class UserError(click.ClickException):
    """A problem with the user's input: one line, exit status 2."""

    exit_code = 2


def one_line(text: str) -> str:
    """``text`` on one line (whitespace collapsed), cut to :data:`MESSAGE_LIMIT` characters."""
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_LIMIT else f"{line[:MESSAGE_LIMIT]}... ({len(line):,} chars)"


def write_log(error: BaseException) -> Path | None:
    """Write the traceback of ``error`` to a fresh log file; ``None`` when none can be written.

    The folder is ``$COMPRESSKIT_LOG_DIR``, else ``~/.cache/compresskit/logs``, else the temp folder.
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folders = [os.environ.get("COMPRESSKIT_LOG_DIR"), Path.home() / ".cache" / "compresskit" / "logs",
               tempfile.gettempdir()]
    text = f"compresskit {' '.join(sys.argv[1:])}\n" + "".join(
        traceback.format_exception(type(error), error, error.__traceback__))
    for folder in filter(None, folders):
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            path = Path(folder) / f"compresskit-error-{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def _file_system_error(error: OSError) -> UserError:
    where = error.filename if error.filename is not None else ""
    if error.errno == errno.ENOENT or isinstance(error, FileNotFoundError):  # raised with a message only too
        return UserError(one_line(f"file not found: {where or error}"))
    reason = error.strerror or str(error)
    return UserError(one_line(f"{where}: {reason}" if where else reason))


def to_click_error(error: Exception) -> click.ClickException:
    """The one-line CLI error for an exception escaping a command (see the module docstring).

    Args:
        error: What the command raised (not a ``click.ClickException``: those pass unchanged).

    Returns:
        A :class:`UserError` (exit 2) for the user's errors, else a ``click.ClickException`` (exit 1).
    """
    import yaml

    from compresskit.run.workspace import PhaseError, RunDirError
    from compresskit.utils.atomic import WriteError
    from compresskit.utils.optional import missing_extra

    if isinstance(error, PhaseError):  # not the user's input: exit 1, still one line
        return click.ClickException(one_line(str(error)))
    missing = missing_extra(error)
    if missing is not None:  # an optional package (extra) is not installed: the user's to fix
        return UserError(one_line(missing))
    if isinstance(error, WriteError):  # names the file being written and what to do
        return UserError(one_line(str(error)))
    if isinstance(error, FileNotFoundError) or (isinstance(error, OSError) and error.errno in USER_ERRNOS):
        return _file_system_error(error)
    if isinstance(error, (ValueError, TypeError, RunDirError, yaml.YAMLError, pickle.UnpicklingError, EOFError)):
        text = str(error) or type(error).__name__
        if isinstance(error, (pickle.UnpicklingError, EOFError)):
            text = f"unreadable file ({type(error).__name__}: {text})"
        return UserError(one_line(text))
    log = write_log(error)
    where = f"; traceback in {log}" if log is not None else " (no log file could be written)"
    return click.ClickException(one_line(f"unexpected {type(error).__name__}: {error}") + where)
