"""How many channels a pruning rate removes from a coupled group's cells.

The one rounding rule shared by the pruner (:meth:`compresskit.ChannelGroup.removal_counts`) and
the exact parameter predictor (:mod:`compresskit.pruning.budget`), so a predicted width is the pruned
width. Pure integer arithmetic on cell sizes; the public names are re-exported by
:mod:`compresskit.groups`, where users import them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["cell_removal_counts", "channels_to_remove", "check_multiple", "round_removal"]


def channels_to_remove(num_channels: int, rate: float) -> int:
    """Channels removed from one cell of ``num_channels`` at ``rate``.

    ``floor(rate * num_channels)`` (with a 1e-9 guard against ``0.29 * 100 = 28.999...``),
    capped so that at least one channel of the cell remains. A group's cells are
    equal-sized where grouped convs require it, so the group total is
    ``floor(rate * C)`` rounded down to a multiple of the cell count. The pruner and
    :class:`compresskit.ParamPredictor` both use this function.

    Raises:
        ValueError: ``rate`` is not in ``[0, 1)``.
    """
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"pruning rate must be a number in [0, 1), got {rate!r}")
    return max(0, min(num_channels - 1, math.floor(rate * num_channels + 1e-9)))


def round_removal(num_channels: int, removed: int, multiple: int) -> int:
    """Fewer removed channels so that the kept count ``num_channels - removed`` is a multiple of ``multiple``.

    Hardware-friendly widths: the kept count is rounded *up* to the next multiple (never more than
    ``num_channels``), so rounding never removes more than the rate asks. ``multiple=1`` changes nothing.

    Example:
        >>> round_removal(72, 30, 8)  # 42 kept -> 48 kept
        24
    """
    check_multiple(multiple)
    kept = num_channels - removed
    rounded = min(num_channels, -(-kept // multiple) * multiple)
    return num_channels - rounded


def check_multiple(multiple: int) -> None:
    """Raise ``ValueError`` unless ``multiple`` is an int >= 1 (a channel-rounding multiple)."""
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"channel multiple must be an int >= 1, got {multiple!r}")


def cell_removal_counts(sizes: Sequence[int], rate: float, balanced: bool, multiple: int = 1) -> list[int]:
    """Channels removed from cells of ``sizes`` at ``rate``; the pruner and the predictor both use it.

    Unbalanced: ``channels_to_remove(size, rate)`` per cell. Balanced (grouped convs / chunks, whose
    cell sizes are multiples of the smallest ``s``): ``channels_to_remove(s, rate) * size // s``, the
    same fraction of every cell, which keeps every group of every grouped conv / chunk equal.
    With ``multiple > 1`` the group's kept total becomes a multiple of it (or stays whole):
    unbalanced, each cell's kept count is rounded up to a multiple (:func:`round_removal`); balanced,
    the smallest cell's kept count ``k`` is rounded up so that ``k * sum(size // s)`` is a multiple.
    """
    if not balanced or not sizes:
        return [round_removal(size, channels_to_remove(size, rate), multiple) for size in sizes]
    smallest = min(sizes)
    step = multiple // math.gcd(multiple, sum(size // smallest for size in sizes))
    per_smallest = round_removal(smallest, channels_to_remove(smallest, rate), step)
    return [per_smallest * size // smallest for size in sizes]
