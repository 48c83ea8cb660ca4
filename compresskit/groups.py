"""Coupled channel groups: which channels must be removed together.

A :class:`ChannelGroup` is one set of coupled channels: the output channels of a
conv/linear plus everything that must shrink with them (its BatchNorm, the other
producers of a residual add, consumers' input slices, concatenation offsets,
depthwise convs, SE/CBAM gating convs, a Linear after a flatten, BiFPN fusion
inputs, channel shuffles, channel pools). :func:`find_groups` builds them on Torch-Pruning's
dependency graph (Fang et al., CVPR 2023) and then checks every group numerically:
for each of :data:`PROBE_SELECTIONS` random selections (rates 0.5, 0.25, 0.75) it zeroes
those channels, removes the same channels from a float64 copy of the model and requires
the same outputs (relative 1e-9: exact removal leaves ~1e-15, a wrong channel mapping keeps
its size, so rounding cannot hide it). A group that fails (or that contains an op we know
we cannot keep exact) is left unpruned, listed in ``groups.skipped`` and reported with
:class:`UnprunableWarning`. Channels that reach one channel of the same layer through two
paths (a ghost module's ``cat([x1, cheap(x1)])`` into a residual add couples ``j`` with
``j + C/2``) form one unit: a group's "channel" is such a unit, removed as a whole.

Caveats:
    * The check runs on the example inputs only; a model whose control flow depends
      on the input may take a path that was not traced.
    * Channels reduced over the channel axis by inline ops (``x.mean(dim=1)``,
      ``x.amax(dim=1)``), normalised across channels (GroupNorm/LayerNorm), or consumed
      by custom layers that call ``F.conv2d``/``unfold`` themselves (plain-torch
      deformable convs) are never pruned: removing them cannot be made exact. Their
      inputs' own producers stay prunable when they are not coupled to such an op.
      Channel max/mean written as :class:`compresskit.ChannelPool` (CBAM's spatial
      gate) is exact under removal and keeps its input channels prunable.
    * Channel shuffle is followed when written as :class:`compresskit.ChannelShuffle` or inline
      as ``x.view(N, g, C/g, *).transpose(1, 2)(.contiguous()).view(N, C, *)`` (torchvision's
      ShuffleNetV2); an inline shuffle only stays a shuffle if whole slots (input channels
      ``b, b + C/g, ...``) are removed, so those form one unit. Other inline permutations fail
      the check (skipped, never wrong). ``chunk``/equal ``split`` over channels must lose the same
      number of channels per part (equal-removal cells, like a grouped conv's groups).
    * Transformers: a Linear on tokens ``(*, C)`` prunes like a 1x1 conv (MLP hidden widths);
      a module with ``num_heads`` and q/k/v (or fused ``qkv``) + projection Linears gets a set of
      whole heads named ``"<module>:heads"``. Single q/k/v channels (``q @ k^T`` mixes them),
      channels a LayerNorm normalises over and ``nn.MultiheadAttention`` are skipped with reasons.
    * Reductions are recognised over dim 1 only: a token tensor ``(N, L, C)`` pooled with
      ``mean(dim=1)`` is reported as a channel reduction (skipped, never wrong).
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from . import _graph
from ._matching import module_names_matching, owning_layer_group, protected_names
from ._removal import cell_removal_counts, channels_to_remove, check_multiple, round_removal
from ._sets import FILTER_KINDS, PRUNABLE_KINDS, Item, RawGroup
from ._surgery import ChannelOp, zero_channels
from ._verify import PROBE_SELECTIONS  # noqa: F401 - public constant named in the module docstring
from ._verify import failing_candidates, skip_reason
from .layers import IN

__all__ = [
    "ChannelGroup",
    "ChannelGroups",
    "LayerGroupSpec",
    "SkippedCoupling",
    "UnprunableWarning",
    "cell_removal_counts",
    "channels_to_remove",
    "find_groups",
    "round_channels",
    "round_removal",
]

DEFAULT_LAYER_GROUP = "default"


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


def _validate_specs(model: nn.Module, specs: Sequence[LayerGroupSpec]) -> dict[str, LayerGroupSpec]:
    """The specs by name; raises if a name repeats, a glob or type matches no module, or two specs share a module."""
    by_name: dict[str, LayerGroupSpec] = {}
    for spec in specs:
        if not isinstance(spec, LayerGroupSpec):
            raise TypeError(f"layer_groups must contain LayerGroupSpec, got {spec!r}")
        if spec.name in by_name:
            raise ValueError(f"duplicate layer group name {spec.name!r}")
        by_name[spec.name] = spec
        for pattern in spec.patterns:
            if not module_names_matching(model, pattern):
                raise ValueError(f"layer group {spec.name!r}: pattern {pattern!r} matches no module")
        class_names = {type(m).__name__ for m in model.modules()}
        for type_name in spec.types:
            if type_name not in class_names:
                raise ValueError(f"layer group {spec.name!r}: type {type_name!r} matches no module")
    for name, module in model.named_modules():
        owners = [spec.name for spec in specs if spec.matches(name, module)]
        if len(owners) > 1:
            raise ValueError(f"module {name!r} is matched by layer groups {owners[0]!r} and {owners[1]!r}")
    return by_name


def find_groups(
    model: nn.Module,
    example_inputs: Any,
    layer_groups: Sequence[LayerGroupSpec] | None = None,
    protect: Sequence[str] = (),
) -> ChannelGroups:
    """Find the coupled channel groups of ``model`` that can be pruned exactly.

    Args:
        model: The model (any mode; restored afterwards). Not modified.
        example_inputs: A tensor, or a tuple of positional inputs.
        layer_groups: Optional specs. A channel group belongs to the spec that matches its
            producing convs/linears (those whose output channels these are); producers
            matching no spec (e.g. gating convs) are ignored; if producers match several
            specs, the one whose producers hold the most weights wins (ties: first listed).
            Groups none of whose producers match are not returned. Without specs every
            group is in layer group ``"default"``.
        protect: Module-name globs whose output channels are never pruned. Channels
            that reach a model output are always protected.

    Returns:
        A :class:`ChannelGroups` list; ``.skipped`` lists couplings left unpruned.

    Raises:
        ValueError: a pattern or protect glob matches no module, a module is matched by
            two layer groups, or duplicate layer-group names.

    Example:
        >>> groups = find_groups(model, torch.randn(1, 3, 32, 32), protect=["fc"])
        >>> [(g.name, g.num_channels) for g in groups][:2]
        [('stem.0', 16), ('layer1.conv1.0', 16)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    specs = _validate_specs(model, layer_groups) if layer_groups is not None else None
    protected = protected_names(model, protect)
    raw_groups = _graph.trace_groups(model, example_inputs, protected)
    candidates, skipped = _candidates(model, raw_groups, specs)
    failing = failing_candidates(model, example_inputs, candidates)
    groups = []
    for seed, group in enumerate(candidates):
        if seed in failing:
            skipped.append(SkippedCoupling(group.name, skip_reason(group, failing[seed])))
        else:
            groups.append(group)
    if skipped:
        details = "; ".join(f"{s.name}: {s.reason}" for s in skipped)
        warnings.warn(
            f"{len(skipped)} coupled channel set(s) left unpruned: {details}", UnprunableWarning, stacklevel=2
        )
    names: dict[str, LayerGroupSpec | None] = (
        dict(specs) if specs is not None else {DEFAULT_LAYER_GROUP: None}
    )
    return ChannelGroups(groups, skipped, names, model, example_inputs)


def _candidates(
    model: nn.Module, raw_groups: list[RawGroup], specs: dict[str, LayerGroupSpec] | None
) -> tuple[list[ChannelGroup], list[SkippedCoupling]]:
    """Traced sets -> the groups to verify (unprotected, in a layer group) and the sets skipped with a reason."""
    modules = dict(model.named_modules())
    skipped: list[SkippedCoupling] = []
    candidates: list[ChannelGroup] = []
    for raw in raw_groups:
        if raw.protected:
            continue
        if raw.reason is not None:
            skipped.append(SkippedCoupling(raw.root, raw.reason))
            continue
        layer_group = DEFAULT_LAYER_GROUP
        if specs is not None:
            owner = owning_layer_group(raw, specs, modules)
            if owner is None:
                continue
            layer_group = owner
        candidates.append(
            ChannelGroup(
                name=raw.root,
                layer_group=layer_group,
                num_channels=raw.num_channels,
                cells=tuple(tuple(cell) for cell in raw.cells),
                items=tuple(raw.items),
                model=model,
                balanced=raw.balanced,
            )
        )
    return candidates, skipped


def round_channels(groups: Sequence[ChannelGroup], multiple: int) -> Sequence[ChannelGroup]:
    """Make every group keep a multiple of ``multiple`` channels per cell (e.g. 4, 8 or 16); returns ``groups``.

    The pruner (through :meth:`ChannelGroup.removal_counts`) and :class:`compresskit.ParamPredictor`
    read the same setting, so the predictor stays exact. A group smaller than ``multiple`` keeps all
    of its channels (rounding up never exceeds the original width).

    Example:
        >>> groups = round_channels(find_groups(model, x), 8)  # doctest: +SKIP
    """
    check_multiple(multiple)
    for group in groups:
        group.multiple = multiple
    return groups
