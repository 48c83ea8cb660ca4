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

import warnings
from collections.abc import Sequence
from typing import Any

from torch import nn

from compresskit.groups import _graph
from compresskit.groups._matching import module_names_matching, owning_layer_group, protected_names
from compresskit.groups._removal import cell_removal_counts, channels_to_remove, check_multiple, round_removal
from compresskit.groups._sets import RawGroup
from compresskit.groups._verify import (
    PROBE_SELECTIONS,  # noqa: F401 - public constant named in the module docstring
    failing_candidates,
    skip_reason,
)
from compresskit.groups.channel_group import (
    ChannelGroup,
    ChannelGroups,
    LayerGroupSpec,
    SkippedCoupling,
    UnprunableWarning,
)

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
