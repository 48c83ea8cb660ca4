"""The contract of a layer rule (:mod:`compresskit.layers` holds the rules and re-exports all of this).

Axes are the plain strings stored in pruning histories (so old checkpoints keep loading):
``OUT`` (output channels, the filters), ``IN`` (input channels) and ``BOTH`` (a depthwise conv,
whose input and output channels go together). A :class:`LayerRule` answers, for one module type,
what surgery (size, zero, remove), the exact budget (params), the channel tables (channels) and
the coupled-set finder (coupling) ask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

from torch import nn

__all__ = ["AXES", "BOTH", "IN", "OUT", "Axis", "Coupling", "LayerRule", "ParamCount"]

Axis = Literal["out", "in", "both"]
OUT: Axis = "out"
IN: Axis = "in"
BOTH: Axis = "both"
AXES: tuple[Axis, ...] = (OUT, IN, BOTH)

#: ``(in_channels, out_channels) -> parameters`` of one layer with its other settings fixed.
ParamCount = Callable[[int, int], int]


class Coupling(NamedTuple):
    """What one traced module axis is to a coupled channel set (see :meth:`LayerRule.coupling`).

    Attributes:
        kind: The item kind the groups use: ``"conv"``, ``"conv_transpose"``, ``"linear"``
            (layers with filters), ``"bn"``, ``"prelu"``, ``"shuffle"``, ``"pool"``, or ``"op"``
            (no channels of its own).
        axis: The axis the set prunes (a BatchNorm or PReLU is always ``OUT``, a depthwise conv
            ``BOTH``).
        groups: Channel groups that must lose channels in proportion (a grouped conv's groups).
        reason: Why the set cannot be pruned through this module; ``None`` when it can.
    """

    kind: str
    axis: Axis
    groups: int = 1
    reason: str | None = None


class LayerRule:
    """How compresskit measures, zeroes and removes channels of one module type.

    The base class describes a module with no channels of its own: every method is a no-op
    or ``None``; subclasses override what their type has.
    """

    def size(self, module: nn.Module, axis: Axis) -> int | None:
        """Current length of ``axis``; ``None`` when not known (e.g. not traced yet)."""
        return None

    def channels(self, module: nn.Module) -> tuple[int, int] | None:
        """``(in, out)`` channels shown in channel tables (:func:`compresskit.pruning.budget.channel_counts`);
        ``None`` leaves the layer out of them."""
        return None

    def zero(self, module: nn.Module, axis: Axis, indices: Sequence[int]) -> None:
        """Soft-prune: make output channels ``indices`` exactly zero (``axis`` is ``OUT`` or ``BOTH``)."""

    def remove(self, module: nn.Module, axis: Axis, indices: Sequence[int], size: int) -> None:
        """Physically remove channels ``indices`` of ``axis``, which has length ``size`` before.

        Raises:
            ValueError: ``size`` or ``indices`` do not fit the module, or the axis cannot be pruned.
        """
        raise ValueError(f"{type(module).__name__} has no removable channels")

    def params(self, module: nn.Module) -> ParamCount | None:
        """Parameter count of ``module`` as a function of its channel counts (other settings as
        now); ``None`` when the rule's layers hold no parameters of their own."""
        return None

    def coupling(self, module: nn.Module, axis: Axis, name: str) -> Coupling:
        """How a coupled set reaching ``axis`` of ``module`` (named ``name``) treats it."""
        return Coupling("op", axis, 1, f"unsupported layer {name} ({type(module).__name__})")
