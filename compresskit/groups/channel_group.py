"""The data types of coupled channel sets: :class:`ChannelGroup` (one set, with its cells and the
ops that zero or remove its channels), :class:`ChannelGroups` (what :func:`~compresskit.groups.find_groups`
returns), :class:`LayerGroupSpec` (a named layer group of a model) and :class:`SkippedCoupling`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from compresskit.groups._removal import cell_removal_counts
from compresskit.groups._sets import FILTER_KINDS, PRUNABLE_KINDS, Item
from compresskit.groups.surgery import ChannelOp, zero_channels
from compresskit.layers.rules import IN

__all__ = ["ChannelGroup", "ChannelGroups", "LayerGroupSpec", "SkippedCoupling", "UnprunableWarning"]


class UnprunableWarning(UserWarning):
    """Some coupled channels were left unpruned because removing them is not exact."""


@dataclass(frozen=True)
class LayerGroupSpec:
    """A named set of layers sharing one pruning rate (what a recipe names).

    Args:
        name: Layer-group name, e.g. ``"backbone_early"``.
        patterns: ``fnmatch`` globs over ``model.named_modules()`` names.
        types: Module class names, e.g. ``("Conv2d",)``.
        bounds: Allowed pruning-rate range ``(low, high)`` with ``0 <= low <= high < 1``.
    """

    name: str
    patterns: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    bounds: tuple[float, float] = (0.0, 0.9)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"layer group name must be a non-empty string, got {self.name!r}")
        for label in ("patterns", "types"):
            value = getattr(self, label)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise TypeError(f"layer group {self.name!r}: {label} must be a sequence of strings, got {value!r}")
            object.__setattr__(self, label, tuple(value))
        if not self.patterns and not self.types:
            raise ValueError(f"layer group {self.name!r} needs patterns or types")
        low, high = self.bounds
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(f"layer group {self.name!r}: bounds must satisfy 0 <= low <= high < 1, got {self.bounds!r}")
        object.__setattr__(self, "bounds", (float(low), float(high)))

    def matches(self, name: str, module: nn.Module) -> bool:
        """Whether the module ``name`` belongs to this layer group."""
        return type(module).__name__ in self.types or any(
            fnmatch.fnmatchcase(name, pattern) for pattern in self.patterns
        )


@dataclass(frozen=True)
class SkippedCoupling:
    """A coupled channel set left unpruned, named by its first producer."""

    name: str
    reason: str


@dataclass(eq=False)
class ChannelGroup:
    """One set of coupled channels, removed together.

    Attributes:
        name: Name of the first producing module (e.g. ``"layer1.conv1.0"``).
        layer_group: The :class:`LayerGroupSpec` it belongs to (``"default"`` without specs).
        num_channels: Original channel count; rates are always against it.
        cells: Partition of ``range(num_channels)`` into cells of exchangeable channels (one
            cell unless grouped convs, chunks or channel multiplicities tell channels apart).
        balanced: Grouped convs or chunks require equal removal per group: every cell loses the
            same fraction (see :meth:`removal_counts`).
        multiple: Kept channels per cell are rounded up to a multiple of this (hardware-friendly
            widths; :func:`round_channels` sets it on every group; 1: no rounding).
        items: Every module axis / graph op touched (internal detail).
        model: The model whose modules this group refers to.
    """

    name: str
    layer_group: str
    num_channels: int
    cells: tuple[tuple[int, ...], ...]
    items: tuple[Item, ...] = field(repr=False)
    model: nn.Module = field(repr=False)
    balanced: bool = False
    multiple: int = 1

    def _module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def producer_slices(self) -> list[tuple[Tensor, Tensor]]:
        """``(weights [n, m * k], channels [n])`` per producing conv/linear and multiplicity ``m``.

        ``channels`` are this group's channel indices that the producer computes
        (all of them except in sets merged across a grouped conv). A channel that stands
        for ``m`` filters of one producer (a unit of coupled channels, e.g. ``j`` and
        ``j + C/2`` behind a ghost module's concat) gets those ``m`` filters concatenated.
        """
        slices = []
        for item in self.items:
            if item.kind not in FILTER_KINDS or item.axis == IN:
                continue
            weight = self._module(item.module).weight.detach()
            if item.kind == "conv_transpose":  # (in, out, *k) -> (out, in, *k)
                weight = weight.transpose(0, 1)
            by_multiplicity: dict[int, list[int]] = {}
            for r, idxs in sorted(item.index.items()):
                by_multiplicity.setdefault(len(idxs), []).append(r)
            for multiplicity, channels in sorted(by_multiplicity.items()):
                rows = torch.tensor([i for r in channels for i in item.index[r]], device=weight.device)
                filters = weight.index_select(0, rows)  # (n * m, ...) in channel order
                slices.append((filters.reshape(len(channels), -1), torch.tensor(channels)))
        return slices

    def producer_weights(self) -> list[Tensor]:
        """Filters ``[num_channels, k]`` (rows in channel order) of each producer of all channels."""
        return [w for w, channels in self.producer_slices() if len(channels) == self.num_channels]

    def removal_counts(self, rate: float) -> list[int]:
        """Channels removed from each cell at ``rate`` (see :func:`cell_removal_counts`)."""
        return cell_removal_counts([len(cell) for cell in self.cells], rate, self.balanced, self.multiple)

    def select(self, scores: Tensor, rate: float) -> list[int]:
        """Lowest-scoring channels per cell at ``rate`` (ties: lower index first), sorted."""
        if scores.shape != (self.num_channels,):
            raise ValueError(
                f"importance for group {self.name!r} must have shape ({self.num_channels},), "
                f"got {tuple(scores.shape)}"
            )
        scores = scores.detach().double().cpu()
        removed: list[int] = []
        for cell, count in zip(self.cells, self.removal_counts(rate)):
            if count:
                cell_scores = scores[list(cell)]
                order = torch.sort(cell_scores, stable=True).indices[:count]
                removed += [cell[i] for i in order.tolist()]
        return sorted(removed)

    def ops(self, removed: Sequence[int]) -> list[ChannelOp]:
        """Surgery records that remove channels ``removed`` of this group."""
        removed = sorted(set(removed))
        ops = []
        for item in self.items:
            if item.kind not in PRUNABLE_KINDS:
                continue
            indices = sorted({i for r in removed for i in item.index.get(r, ())})
            if indices:
                ops.append(ChannelOp(item.module, item.axis, tuple(indices), item.size))
        return ops

    def zero_(self, removed: Sequence[int]) -> None:
        """Soft-prune: zero every producer of channels ``removed`` (filters, bias, BN gamma/beta)."""
        zero_channels(self.model, self.ops(removed))


class ChannelGroups(list):
    """The list returned by :func:`find_groups`, with what was left out.

    Attributes:
        skipped: Coupled sets left unpruned, with reasons.
        layer_groups: The layer-group specs by name (``{"default": ...}`` without specs).
        model: The traced model.
        example_inputs: The inputs it was traced with.
    """

    def __init__(
        self,
        groups: Sequence[ChannelGroup],
        skipped: Sequence[SkippedCoupling],
        layer_groups: dict[str, LayerGroupSpec | None],
        model: nn.Module,
        example_inputs: Any,
    ) -> None:
        super().__init__(groups)
        self.skipped = list(skipped)
        self.layer_groups = layer_groups
        self.model = model
        self.example_inputs = example_inputs
