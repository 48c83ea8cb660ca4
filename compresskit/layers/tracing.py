"""A process-wide flag: is compresskit tracing a model right now?

While :func:`tracing` is active, compresskit's own modules (:class:`~compresskit.ChannelShuffle`,
:class:`~compresskit.ChannelPool`) run as one autograd node each, so that the graph tracer maps
that node to the module and its pruning rules apply. Outside tracing they run plain torch ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_TRACING = False


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    """While active, :func:`is_tracing` returns ``True`` (restored on exit)."""
    global _TRACING
    previous, _TRACING = _TRACING, True
    try:
        yield
    finally:
        _TRACING = previous


def is_tracing() -> bool:
    """Whether a :func:`tracing` context is active."""
    return _TRACING
