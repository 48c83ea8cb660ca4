"""Pruning-rate schedules: plain functions from epochs completed to a rate.

A schedule is any ``Callable[[int], float]``. The soft pruner calls it with
``state.epoch`` (the number of epochs completed) at each epoch end and zeroes
that fraction of every channel group; there is no hidden counter.

The default ramp is Automated Gradual Pruning (AGP), Zhu & Gupta, "To prune, or
not to prune: exploring the efficacy of pruning for model compression",
arXiv:1710.01878 (2017): a cubic ramp that prunes quickly while the network is
still redundant and slowly near the final rate. Composition follows optax's
``join_schedules``.

Caveats:
    Rates are validated to lie in ``[0, 1)``. How a rate becomes a number of
    removed channels (floor, keep at least one, group multiples) is decided by
    the pruner, not here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

Schedule = Callable[[int], float]

__all__ = [
    "SCHEDULES",
    "Schedule",
    "constant",
    "join",
    "linear",
    "make_schedule",
    "polynomial",
]


def _check_rate(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    if not (0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")


def _check_epoch(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int epoch, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def polynomial(
    initial: float, final: float, start: int, end: int, power: float = 3.0
) -> Schedule:
    """Polynomial ramp from ``initial`` to ``final`` (AGP when ``power=3``).

    For epochs completed ``t``::

        r_t = r_i                                              if t <= t0
        r_t = r_f + (r_i - r_f) * (1 - (t - t0) / (t1 - t0))**p  if t0 < t < t1
        r_t = r_f                                              if t >= t1

    with ``r_i = initial``, ``r_f = final``, ``t0 = start``, ``t1 = end``,
    ``p = power``. The boundary values are returned exactly (no rounding).

    Args:
        initial: Rate before and at ``start``, in ``[0, 1)``.
        final: Rate at and after ``end``, in ``[0, 1)``.
        start: First epoch of the ramp (``>= 0``).
        end: Epoch at which ``final`` is reached; must be ``> start``.
        power: Exponent ``p > 0``; 3 is AGP, 1 is a straight line.

    Returns:
        A schedule ``epoch -> rate``.

    Raises:
        ValueError: If a rate is outside ``[0, 1)``, ``end <= start`` or
            ``power <= 0``.

    Example:
        >>> schedule = polynomial(0.0, 0.5, start=0, end=4)
        >>> schedule(2)  # 0.5 - 0.5 * (1 - 2/4)**3
        0.4375
    """
    _check_rate("initial", initial)
    _check_rate("final", final)
    _check_epoch("start", start)
    _check_epoch("end", end)
    if end <= start:
        raise ValueError(f"end must be > start, got start={start!r}, end={end!r}")
    if isinstance(power, bool) or not isinstance(power, (int, float)) or not (
        math.isfinite(power) and power > 0
    ):
        raise ValueError(f"power must be a finite number > 0, got {power!r}")
    initial, final, power = float(initial), float(final), float(power)

    def schedule(epoch: int) -> float:
        if epoch <= start:
            return initial
        if epoch >= end:
            return final
        remaining = 1.0 - (epoch - start) / (end - start)
        return final + (initial - final) * remaining**power

    return schedule


def linear(initial: float, final: float, start: int, end: int) -> Schedule:
    """Straight line from ``initial`` to ``final``: ``polynomial(..., power=1)``.

    ``r_t = r_i + (r_f - r_i) * (t - t0) / (t1 - t0)`` inside ``[t0, t1]``,
    clamped outside.

    Args:
        initial: Rate before and at ``start``, in ``[0, 1)``.
        final: Rate at and after ``end``, in ``[0, 1)``.
        start: First epoch of the ramp (``>= 0``).
        end: Epoch at which ``final`` is reached; must be ``> start``.

    Returns:
        A schedule ``epoch -> rate``.

    Raises:
        ValueError: As for :func:`polynomial`.
    """
    return polynomial(initial, final, start, end, power=1.0)


def constant(value: float) -> Schedule:
    """The same rate at every epoch: ``r_t = value``.

    Args:
        value: The rate, in ``[0, 1)``.

    Returns:
        A schedule ``epoch -> value``.

    Raises:
        ValueError: If ``value`` is outside ``[0, 1)``.
    """
    _check_rate("value", value)
    value = float(value)

    def schedule(epoch: int) -> float:
        return value

    return schedule


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Chain schedules at epoch boundaries (optax ``join_schedules`` semantics).

    With ``b_0 < b_1 < ...``, schedule ``s_0`` is used for ``t < b_0`` and
    called with ``t``; schedule ``s_i`` (``i >= 1``) is used for
    ``b_{i-1} <= t < b_i`` and called with ``t - b_{i-1}``, i.e. each later
    schedule restarts its own clock at its boundary.

    Args:
        schedules: ``n >= 1`` schedules.
        boundaries: ``n - 1`` strictly increasing epochs ``>= 0``.

    Returns:
        The joined schedule.

    Raises:
        ValueError: If ``schedules`` is empty, the lengths do not match, or the
            boundaries are negative or not strictly increasing.

    Example:
        >>> warm_then_ramp = join([constant(0.0), linear(0.0, 0.4, 0, 4)], [2])
        >>> warm_then_ramp(1), warm_then_ramp(4)  # second part called with 4 - 2
        (0.0, 0.2)
    """
    schedules = list(schedules)
    boundaries = list(boundaries)
    if not schedules:
        raise ValueError("join needs at least one schedule, got []")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"join needs len(schedules) - 1 = {len(schedules) - 1} boundaries, "
            f"got {len(boundaries)}: {boundaries!r}"
        )
    for i, boundary in enumerate(boundaries):
        _check_epoch(f"boundaries[{i}]", boundary)
    if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
        raise ValueError(f"boundaries must be strictly increasing, got {boundaries!r}")

    def schedule(epoch: int) -> float:
        value = schedules[0](epoch)
        for boundary, later in zip(boundaries, schedules[1:]):
            if epoch >= boundary:
                value = later(epoch - boundary)
        return value

    return schedule


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "polynomial": polynomial,
    "linear": linear,
    "constant": constant,
}


def make_schedule(name: str, **kwargs: Any) -> Schedule:
    """Build a schedule by name, as a recipe names it.

    Args:
        name: A key of :data:`SCHEDULES`.
        **kwargs: Arguments of that schedule factory.

    Returns:
        The schedule.

    Raises:
        ValueError: If ``name`` is unknown, or the factory rejects its arguments
            (including unexpected or missing keyword arguments).

    Example:
        >>> make_schedule("polynomial", initial=0.0, final=0.5, start=0, end=4)(4)
        0.5
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid: {sorted(SCHEDULES)}")
    factory = SCHEDULES[name]
    try:
        return factory(**kwargs)
    except TypeError as error:
        raise ValueError(f"bad arguments for schedule {name!r}: {error}") from error
