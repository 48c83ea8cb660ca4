"""Route a library logger's records to a ``log(line)`` callable for the duration of a block.

The search (:mod:`compresskit.search`) reports each trial on the ``compresskit.search`` logger;
the pipeline forwards those lines to its own log (stdout, redirected logs) with
:func:`forward_logs`, so a run prints one line per trial between "[search] started" and "done".
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

__all__ = ["forward_logs"]


class _Forward(logging.Handler):
    def __init__(self, log: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log(record.getMessage())


@contextlib.contextmanager
def forward_logs(name: str, log: Callable[[str], None]) -> Iterator[None]:
    """Within the block, INFO records of logger ``name`` are passed to ``log`` (and not propagated).

    Example:
        >>> with forward_logs("compresskit.search", print):   # doctest: +SKIP
        ...     search_rates(...)
    """
    logger = logging.getLogger(name)
    handler, level, propagate = _Forward(log), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
