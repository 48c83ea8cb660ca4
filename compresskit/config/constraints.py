"""Numeric ranges that recipe fields declare in their dataclass ``metadata``.

A schema field says ``field(default=0.7, metadata=within(0.0, 1.0))``; the validator
(:mod:`compresskit.config.validate`) reads ``metadata["range"]`` and rejects a value outside it with
the range spelled as in the message ``must be within [0, 1), got 1.2``. Elements of a list field
(``bounds: [0.1, 0.6]``) and values of a mapping field (``rates``) are checked against the field's range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AT_LEAST_ONE", "NON_NEGATIVE", "POSITIVE", "RATE", "Range", "within"]


@dataclass(frozen=True)
class Range:
    """An interval of numbers; ``None`` leaves a side open.

    Attributes:
        low: Smallest value (``None``: no lower limit).
        high: Largest value (``None``: no upper limit).
        low_inclusive: ``low`` itself is allowed.
        high_inclusive: ``high`` itself is allowed.
    """

    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the interval."""
        if self.low is not None and (value < self.low or (value == self.low and not self.low_inclusive)):
            return False
        if self.high is not None and (
            value > self.high or (value == self.high and not self.high_inclusive)
        ):
            return False
        return True

    def describe(self) -> str:
        """The interval as messages spell it: ``>= 0``, ``< 1``, ``within [0, 1)``."""
        if self.high is None:
            return f">= {_number(self.low)}" if self.low_inclusive else f"> {_number(self.low)}"
        if self.low is None:
            return f"<= {_number(self.high)}" if self.high_inclusive else f"< {_number(self.high)}"
        left = "[" if self.low_inclusive else "("
        right = "]" if self.high_inclusive else ")"
        return f"within {left}{_number(self.low)}, {_number(self.high)}{right}"


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def within(low: float | None = None, high: float | None = None, *, low_inclusive: bool = True,
           high_inclusive: bool = True, doc: str = "") -> dict[str, Any]:
    """Field metadata restricting a number to a :class:`Range`.

    Example:
        >>> within(0.0, 1.0, high_inclusive=False)["range"].describe()
        'within [0, 1)'
    """
    return {"range": Range(low, high, low_inclusive, high_inclusive), "doc": doc}


RATE = within(0.0, 1.0, high_inclusive=False)  # pruning rates: [0, 1)
POSITIVE = within(0.0, low_inclusive=False)
NON_NEGATIVE = within(0.0)
AT_LEAST_ONE = within(1)
