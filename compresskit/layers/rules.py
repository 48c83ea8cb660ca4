"""Layer rules: what compresskit knows about each prunable module type, in one place.

A :class:`LayerRule` answers, for one module type, the questions surgery, the exact budget,
the channel tables and the coupled-set finder ask: how long is an axis, how to zero channels on
it (soft pruning), how to remove them (physical pruning, in place), how many parameters the layer
holds at given channel counts, and what a coupled set reaching it is to do (:class:`Coupling`:
its kind, the axis it prunes, or why it cannot). Rules are looked up by type through the MRO in
:data:`LAYER_RULES`, so a subclass of ``nn.Conv2d`` is pruned as a conv (the same per-type table
as Torch-Pruning's ``pruner/function.py``, written for our axes and exactness checks). Axes are
the strings ``OUT``, ``IN`` and ``BOTH`` stored in pruning histories (see ``_layer_rule``).

Adding a layer type is one rule class and one dict entry::

    class ScaleRule(LayerRule):  # y = x * weight[None, :, None, None]
        def size(self, module, axis): return module.weight.numel()
        def zero(self, module, axis, indices): module.weight.data[list(indices)] = 0.0
        def remove(self, module, axis, indices, size):
            check_indices(axis, indices, size, self.size(module, axis))
            module.weight = keep_parameter(module.weight, 0, indices)
        def params(self, module): return lambda in_channels, out_channels: out_channels

    LAYER_RULES[Scale] = ScaleRule()

The base class's :meth:`LayerRule.coupling` leaves coupled sets through an unknown layer unpruned;
override it to let them through.

Caveats:
    * A rule only says how to change one module; which channels are coupled across modules is
      decided by :func:`compresskit.find_groups`.
    * Attention modules are recognised by an int ``num_heads`` attribute (:func:`is_attention`),
      not by type; :func:`rule_for` returns :data:`ATTENTION_HEADS` for them when no type matches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from compresskit.layers._layer_rule import AXES, BOTH, IN, OUT, Axis, Coupling, LayerRule, ParamCount
from compresskit.layers._slicing import check_indices, keep_buffer, keep_grouped_inputs, keep_parameter, zero_entries
from compresskit.layers.pool import ChannelPool
from compresskit.layers.shuffle import ChannelShuffle

__all__ = [
    "ATTENTION_HEADS", "AXES", "BOTH", "IN", "LAYER_RULES", "OUT", "Axis", "AttentionHeadsRule",
    "BatchNormRule", "ChannelPoolRule", "ChannelShuffleRule", "ConvRule", "Coupling", "LayerRule",
    "LinearRule", "MultiheadAttentionRule", "NormalizationRule", "PReLURule", "ParamCount", "axis_size",
    "check_indices", "is_attention", "is_depthwise", "keep_parameter", "rule_for",
]

def is_depthwise(conv: nn.Module) -> bool:
    """A conv whose every group has one input and one output channel."""
    return (
        isinstance(conv, nn.modules.conv._ConvNd)
        and not conv.transposed
        and conv.groups > 1
        and conv.groups == conv.in_channels == conv.out_channels
    )


def is_attention(module: nn.Module) -> bool:
    """A custom attention module whose heads compresskit can remove: an int ``num_heads``
    attribute (timm / ViT style), not ``nn.MultiheadAttention`` (its projection width is tied to
    the query width). Its "channels" are heads; removal only lowers ``num_heads``."""
    return (
        not isinstance(module, nn.MultiheadAttention)
        and isinstance(getattr(module, "num_heads", None), int)
        and not isinstance(module.num_heads, bool)
    )


class ConvRule(LayerRule):
    """``nn.Conv{1,2,3}d`` and transposed convs, grouped and depthwise included.

    Weight layout ``(out, in / groups, *kernel)``, transposed ``(in, out / groups, *kernel)``.
    A depthwise conv (:func:`is_depthwise`) is pruned on ``BOTH``: channel ``c`` is its input,
    its filter and its output at once. Grouped input channels are removed group by group
    (Torch-Pruning's conv input pruner keeps the wrong columns when ``1 < groups < in``).
    """

    def size(self, module: nn.Module, axis: Axis) -> int:
        return module.in_channels if axis == IN else module.out_channels

    def channels(self, module: nn.Module) -> tuple[int, int]:
        return module.in_channels, module.out_channels

    def zero(self, module: nn.Module, axis: Axis, indices: Sequence[int]) -> None:
        zero_entries(module.weight, 1 if module.transposed else 0, indices)
        zero_entries(module.bias, 0, indices)

    def remove(self, module: nn.Module, axis: Axis, indices: Sequence[int], size: int) -> None:
        check_indices(axis, indices, size, self.size(module, axis))
        if axis == IN:
            self._remove_inputs(module, indices)
            return
        module.weight = keep_parameter(module.weight, 1 if module.transposed else 0, indices)
        if module.bias is not None:
            module.bias = keep_parameter(module.bias, 0, indices)
        module.out_channels -= len(indices)
        if axis == BOTH:  # depthwise: one input channel and one group per filter
            module.in_channels -= len(indices)
            module.groups -= len(indices)

    @staticmethod
    def _remove_inputs(conv: nn.Module, indices: Sequence[int]) -> None:
        if conv.transposed or conv.groups == 1:
            conv.weight = keep_parameter(conv.weight, 0 if conv.transposed else 1, indices)
        else:
            conv.weight = keep_grouped_inputs(conv.weight, conv.groups, indices)
        conv.in_channels -= len(indices)

    def coupling(self, module: nn.Module, axis: Axis, name: str) -> Coupling:
        if module.transposed:
            reason = f"grouped transposed conv {name} is not supported" if module.groups > 1 else None
            return Coupling("conv_transpose", axis, 1, reason)
        if is_depthwise(module):
            return Coupling("conv", BOTH)
        if module.groups > 1 and module.groups in (module.in_channels, module.out_channels):
            return Coupling("conv", axis, module.groups, (
                f"conv {name} with groups={module.groups}, in={module.in_channels}, "
                f"out={module.out_channels} (one channel per group) cannot be pruned evenly"))
        return Coupling("conv", axis, module.groups)

    def params(self, module: nn.Module) -> ParamCount:
        kernel, groups = math.prod(module.kernel_size), module.groups
        bias = module.bias is not None
        if module.transposed:
            return lambda in_channels, out_channels: (in_channels * (out_channels // groups) * kernel
                                                     + (out_channels if bias else 0))
        depthwise = is_depthwise(module)  # stays depthwise: groups follow the channel count
        return lambda in_channels, out_channels: (
            out_channels * (in_channels // (out_channels if depthwise else groups)) * kernel
            + (out_channels if bias else 0))


class LinearRule(LayerRule):
    """``nn.Linear``: weight ``(out_features, in_features)``; inputs of any leading shape
    ``(*, in_features)``, so a channel is a feature of the last dimension."""

    def size(self, module: nn.Module, axis: Axis) -> int:
        return module.in_features if axis == IN else module.out_features

    def channels(self, module: nn.Module) -> tuple[int, int]:
        return module.in_features, module.out_features

    def zero(self, module: nn.Module, axis: Axis, indices: Sequence[int]) -> None:
        zero_entries(module.weight, 0, indices)
        zero_entries(module.bias, 0, indices)

    def remove(self, module: nn.Module, axis: Axis, indices: Sequence[int], size: int) -> None:
        check_indices(axis, indices, size, self.size(module, axis))
        if axis == IN:
            module.weight = keep_parameter(module.weight, 1, indices)
            module.in_features -= len(indices)
            return
        module.weight = keep_parameter(module.weight, 0, indices)
        if module.bias is not None:
            module.bias = keep_parameter(module.bias, 0, indices)
        module.out_features -= len(indices)

    def params(self, module: nn.Module) -> ParamCount:
        bias = module.bias is not None
        return lambda in_channels, out_channels: out_channels * in_channels + (out_channels if bias else 0)

    def coupling(self, module: nn.Module, axis: Axis, name: str) -> Coupling:
        return Coupling("linear", axis)


class BatchNormRule(LayerRule):
    """``nn.BatchNorm{1,2,3}d`` (and SyncBatchNorm): one channel axis; gamma, beta and the running
    statistics follow it. Zeroing sets gamma and beta to 0, so the output channel is exactly 0."""

    def size(self, module: nn.Module, axis: Axis) -> int:
        return module.num_features

    def channels(self, module: nn.Module) -> tuple[int, int]:
        return module.num_features, module.num_features

    def zero(self, module: nn.Module, axis: Axis, indices: Sequence[int]) -> None:
        if module.affine:
            zero_entries(module.weight, 0, indices)
            zero_entries(module.bias, 0, indices)

    def remove(self, module: nn.Module, axis: Axis, indices: Sequence[int], size: int) -> None:
        check_indices(axis, indices, size, module.num_features)
        if module.running_mean is not None:
            module.running_mean = keep_buffer(module.running_mean, indices)
        if module.running_var is not None:
            module.running_var = keep_buffer(module.running_var, indices)
        if module.affine:
            module.weight = keep_parameter(module.weight, 0, indices)
            module.bias = keep_parameter(module.bias, 0, indices)
        module.num_features -= len(indices)

    def params(self, module: nn.Module) -> ParamCount:
        affine = module.affine
        return lambda in_channels, out_channels: 2 * out_channels if affine else 0

    def coupling(self, module: nn.Module, axis: Axis, name: str) -> Coupling:
        reason = None if module.affine else f"BatchNorm {name} without affine parameters cannot be soft-zeroed"
        return Coupling("bn", OUT, 1, reason)


class PReLURule(LayerRule):
    """``nn.PReLU``: one slope per channel, or one shared slope (``num_parameters == 1``, left as is).
    ``PReLU(0) == 0``, so a zeroed channel stays zero without touching the slope."""

    def size(self, module: nn.Module, axis: Axis) -> int:
        return module.num_parameters

    def remove(self, module: nn.Module, axis: Axis, indices: Sequence[int], size: int) -> None:
        check_indices(axis, indices, size, module.num_parameters)
        if module.num_parameters > 1:
            module.weight = keep_parameter(module.weight, 0, indices)
            module.num_parameters -= len(indices)

    def params(self, module: nn.Module) -> ParamCount:
        per_channel = module.num_parameters > 1
        return lambda in_channels, out_channels: out_channels if per_channel else 0

    def coupling(self, module: nn.Module, axis: Axis, name: str) -> Coupling:
        return Coupling("prelu", OUT)


class ChannelShuffleRule(LayerRule):
    """:class:`~compresskit.layers.shuffle.ChannelShuffle`: removing input channels drops the outputs that
    read them, so only ``IN`` ops act (the ``OUT`` side is implied by the permutation). A shuffle
    moves zeros: nothing to zero."""

    def size(self, module: nn.Module, axis: Axis) -> int | None:
        return module.index.numel() if module.index is not None else module.traced_channels

    def remove(self, module: nn.Module, axis: Axis, indices: Sequence[int], size: int) -> None:
        if axis == IN:
            module.remove_input_channels(size, indices)

    def coupling(self, module: nn.Module, axis: Axis, name: str) -> Coupling:
        return Coupling("shuffle", axis)


class ChannelPoolRule(LayerRule):
    """:class:`~compresskit.layers.pool.ChannelPool`: input channels can go (the pool keeps its original
    mean divisor and floors the max at 0, see :mod:`compresskit.layers.pool`), its output maps cannot.
    A pool only reads: nothing to zero."""

    def size(self, module: nn.Module, axis: Axis) -> int | None:
        return module.num_channels if axis == IN else len(module.reductions)

    def remove(self, module: nn.Module, axis: Axis, indices: Sequence[int], size: int) -> None:
        if axis != IN:
            raise ValueError("cannot remove the output maps of a ChannelPool")
        module.remove_input_channels(size, indices)

    def coupling(self, module: nn.Module, axis: Axis, name: str) -> Coupling:
        reason = None if axis == IN else f"the output maps of ChannelPool {name} cannot be pruned"
        return Coupling("pool", axis, 1, reason)


class AttentionHeadsRule(LayerRule):
    """A custom attention module with ``num_heads`` (see :func:`is_attention`): its channels are
    heads. Removal lowers ``num_heads``; the q/k/v and output projections are Linears pruned by
    their own ops."""

    def size(self, module: nn.Module, axis: Axis) -> int:
        return module.num_heads

    def remove(self, module: nn.Module, axis: Axis, indices: Sequence[int], size: int) -> None:
        if axis != OUT:
            raise ValueError(f"attention heads are pruned on the {OUT!r} axis, got {axis!r}")
        if module.num_heads != size:
            raise ValueError(f"expects {size} heads, model has {module.num_heads}")
        if len(indices) >= size:
            raise ValueError(f"cannot remove all {size} heads")
        module.num_heads = size - len(indices)


class NormalizationRule(LayerRule):
    """``nn.LayerNorm`` / ``nn.GroupNorm`` over the channels: not prunable. Removing a channel
    changes the mean and variance every other channel is normalised with, so removal is never
    exact; a coupled set that reaches one is left unpruned."""

    def coupling(self, module: nn.Module, axis: Axis, name: str) -> Coupling:
        return Coupling("op", axis, 1, (
            f"{type(module).__name__} {name} normalises over these channels: removing one changes the "
            "mean and variance the others are normalised with, so removal is not exact"
        ))


class MultiheadAttentionRule(LayerRule):
    """``nn.MultiheadAttention``: not prunable (its projections must stay as wide as the query);
    attention written with q/k/v Linears and ``num_heads`` is (:class:`AttentionHeadsRule`)."""

    def coupling(self, module: nn.Module, axis: Axis, name: str) -> Coupling:
        return Coupling("op", axis, 1, (
            f"nn.MultiheadAttention {name}: its projections must stay as wide as the query, so neither "
            "its channels nor its heads can be removed (write attention with q/k/v Linears and num_heads)"
        ))


#: The rule of each supported module type; :func:`rule_for` searches a module's MRO in it.
LAYER_RULES: dict[type, LayerRule] = {
    nn.modules.conv._ConvNd: ConvRule(),
    nn.Linear: LinearRule(),
    nn.modules.batchnorm._BatchNorm: BatchNormRule(),
    nn.PReLU: PReLURule(),
    nn.LayerNorm: NormalizationRule(),
    nn.GroupNorm: NormalizationRule(),
    nn.MultiheadAttention: MultiheadAttentionRule(),
    ChannelShuffle: ChannelShuffleRule(),
    ChannelPool: ChannelPoolRule(),
}

#: The rule of attention modules recognised by :func:`is_attention`.
ATTENTION_HEADS = AttentionHeadsRule()


def rule_for(module: nn.Module) -> LayerRule | None:
    """The rule of ``module``: the nearest type in its MRO found in :data:`LAYER_RULES`, else
    :data:`ATTENTION_HEADS` for an attention module, else ``None`` (not prunable here).

    Example:
        >>> class MyConv(nn.Conv2d): pass
        >>> rule_for(MyConv(3, 8, 1)) is LAYER_RULES[nn.modules.conv._ConvNd]
        True
    """
    for cls in type(module).__mro__:
        rule = LAYER_RULES.get(cls)
        if rule is not None:
            return rule
    return ATTENTION_HEADS if is_attention(module) else None


def axis_size(module: nn.Module, axis: Axis) -> int | None:
    """Current length of ``axis`` of a supported module, ``None`` if unsupported or unknown."""
    rule = rule_for(module)
    return None if rule is None else rule.size(module, axis)
