"""Layer rules: exact sizes, zeroing, removal and parameter formulas per module type; MRO lookup;
a user-registered rule for a custom module used by removal and the exact budget."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

import compresskit as ck
from compresskit.groups._sets import Item
from compresskit.groups.find import ChannelGroup
from compresskit.groups.surgery import ChannelOp, remove_channels, zero_channels
from compresskit.layers.rules import (
    ATTENTION_HEADS,
    BOTH,
    IN,
    LAYER_RULES,
    OUT,
    Axis,
    ConvRule,
    LayerRule,
    ParamCount,
    axis_size,
    check_indices,
    is_depthwise,
    keep_parameter,
    rule_for,
)
from compresskit.pruning.budget import ParamPredictor, channel_counts


def numbered(module: nn.Module) -> nn.Module:
    """Every parameter filled with 0, 1, 2, ... so kept rows can be checked by value."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.arange(parameter.numel(), dtype=parameter.dtype).view_as(parameter))
    return module


def assert_formula_counts(module: nn.Module) -> None:
    rule = rule_for(module)
    count = rule.params(module)
    assert count(rule.size(module, IN), rule.size(module, OUT)) == ck.count_params(module)


def test_conv_sizes_params_and_removal_on_each_axis() -> None:
    conv = numbered(nn.Conv2d(4, 6, 3, bias=True))
    rule, original = rule_for(conv), conv.weight.detach().clone()
    assert (rule.size(conv, IN), rule.size(conv, OUT), rule.channels(conv)) == (4, 6, (4, 6))
    count = rule.params(conv)
    assert count(4, 6) == 6 * 4 * 9 + 6 == ck.count_params(conv)
    rule.remove(conv, OUT, [1, 4], 6)
    assert (conv.out_channels, tuple(conv.weight.shape)) == (4, (4, 4, 3, 3))
    assert torch.equal(conv.weight, original[[0, 2, 3, 5]]) and conv.bias.tolist() == [0.0, 2.0, 3.0, 5.0]
    rule.remove(conv, IN, [0], 4)
    assert (conv.in_channels, tuple(conv.weight.shape)) == (3, (4, 3, 3, 3))
    assert torch.equal(conv.weight, original[[0, 2, 3, 5]][:, 1:])
    assert count(3, 4) == ck.count_params(conv) == 4 * 3 * 9 + 4


def test_conv_zero_touches_only_the_named_filters() -> None:
    conv = numbered(nn.Conv2d(2, 3, 1))
    rule_for(conv).zero(conv, OUT, [1])
    assert conv.weight[1].abs().sum() == 0 and conv.bias[1] == 0
    assert conv.weight[[0, 2]].flatten().tolist() == [0.0, 1.0, 4.0, 5.0] and conv.bias[2] == 2


def test_grouped_conv_removes_inputs_group_by_group() -> None:
    conv = numbered(nn.Conv2d(4, 4, 1, groups=2, bias=False))  # weight (4, 2, 1, 1)
    rule_for(conv).remove(conv, IN, [0, 3], 4)  # input 0 of group 0, input 3 (= 1) of group 1
    assert conv.in_channels == 2 and conv.weight.flatten().tolist() == [1.0, 3.0, 4.0, 6.0]
    assert rule_for(conv).params(conv)(2, 4) == ck.count_params(conv) == 4
    with pytest.raises(ValueError, match="same number of channels per group"):
        rule_for(conv).remove(conv, IN, [0], 2)


def test_depthwise_conv_is_pruned_on_both_axes() -> None:
    conv = numbered(nn.Conv2d(4, 4, 3, groups=4))
    assert is_depthwise(conv) and not is_depthwise(nn.Conv2d(4, 4, 3, groups=2))
    count = rule_for(conv).params(conv)
    rule_for(conv).remove(conv, BOTH, [2], 4)
    assert (conv.in_channels, conv.out_channels, conv.groups) == (3, 3, 3)
    assert conv.bias.tolist() == [0.0, 1.0, 3.0]
    assert count(3, 3) == ck.count_params(conv) == 3 * 9 + 3
    assert conv(torch.randn(1, 3, 5, 5)).shape == (1, 3, 3, 3)


def test_transposed_conv_weight_is_in_by_out() -> None:
    conv = numbered(nn.ConvTranspose2d(3, 4, 2))  # weight (3, 4, 2, 2)
    rule, count = rule_for(conv), rule_for(conv).params(nn.ConvTranspose2d(3, 4, 2))
    rule.zero(conv, OUT, [1])
    assert conv.weight[:, 1].abs().sum() == 0 and conv.weight[:, 0].abs().sum() > 0
    rule.remove(conv, OUT, [1], 4)
    rule.remove(conv, IN, [0], 3)
    assert tuple(conv.weight.shape) == (2, 3, 2, 2) and conv.bias.tolist() == [0.0, 2.0, 3.0]
    assert count(2, 3) == ck.count_params(conv) == 2 * 3 * 4 + 3


def test_linear_on_any_leading_shape() -> None:
    linear = numbered(nn.Linear(5, 3))
    rule = rule_for(linear)
    assert (axis_size(linear, IN), axis_size(linear, OUT), rule.channels(linear)) == (5, 3, (5, 3))
    rule.zero(linear, OUT, [0])
    assert linear.weight[0].abs().sum() == 0 and linear.bias[0] == 0
    rule.remove(linear, OUT, [0], 3)
    rule.remove(linear, IN, [1, 2], 5)
    assert linear.weight.tolist() == [[5.0, 8.0, 9.0], [10.0, 13.0, 14.0]] and linear.bias.tolist() == [1.0, 2.0]
    assert rule.params(nn.Linear(5, 3))(3, 2) == ck.count_params(linear) == 8
    assert linear(torch.randn(2, 7, 3)).shape == (2, 7, 2)  # (N, L, C) tokens


def test_batchnorm_keeps_statistics_and_counts_affine_parameters() -> None:
    norm = numbered(nn.BatchNorm2d(4))
    norm.running_mean.copy_(torch.tensor([10.0, 11.0, 12.0, 13.0]))
    rule = rule_for(norm)
    assert rule.channels(norm) == (4, 4) and rule.params(norm)(4, 4) == 8
    rule.zero(norm, OUT, [1])
    assert (norm.weight[1], norm.bias[1]) == (0, 0)
    rule.remove(norm, OUT, [0, 3], 4)
    assert norm.num_features == 2 and norm.running_mean.tolist() == [11.0, 12.0]
    assert norm.weight.tolist() == [0.0, 2.0] and norm.running_var.shape == (2,)
    plain = nn.BatchNorm2d(4, affine=False)
    assert rule.params(plain)(4, 4) == 0
    rule.zero(plain, OUT, [1])  # nothing to zero, no error


def test_prelu_per_channel_and_shared() -> None:
    prelu = numbered(nn.PReLU(4))
    rule = rule_for(prelu)
    assert rule.channels(prelu) is None  # channel tables show convs, linears and norms
    rule.remove(prelu, OUT, [1], 4)
    assert prelu.num_parameters == 3 and prelu.weight.tolist() == [0.0, 2.0, 3.0]
    assert rule.params(prelu)(3, 3) == 3
    shared = nn.PReLU()
    rule.remove(shared, OUT, [0], 1)
    assert shared.num_parameters == 1 and rule.params(shared)(1, 1) == 0


def test_shuffle_pool_and_attention_rules() -> None:
    shuffle = ck.ChannelShuffle(2)
    assert axis_size(shuffle, IN) is None  # not traced yet
    rule_for(shuffle).remove(shuffle, OUT, [0], 4)  # the output side follows the input side
    assert shuffle.index is None
    rule_for(shuffle).remove(shuffle, IN, [0], 4)  # output j reads input (0, 2, 1, 3)[j]
    assert shuffle.index.tolist() == [1, 0, 2] and axis_size(shuffle, OUT) == 3
    pool = ck.ChannelPool(("max", "mean"))
    assert axis_size(pool, OUT) == 2 and rule_for(pool).params(pool) is None
    rule_for(pool).remove(pool, IN, [1], 4)
    assert (pool.num_channels, pool.divisor) == (3, 4)
    with pytest.raises(ValueError, match="output maps"):
        rule_for(pool).remove(pool, OUT, [0], 2)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_heads = 4

    attention = Attention()
    assert rule_for(attention) is ATTENTION_HEADS and axis_size(nn.MultiheadAttention(8, 2), OUT) is None
    ATTENTION_HEADS.remove(attention, OUT, [0, 2], 4)
    assert attention.num_heads == 2
    with pytest.raises(ValueError, match="expects 4 heads, model has 2"):
        ATTENTION_HEADS.remove(attention, OUT, [0], 4)


def test_coupling_says_kind_axis_groups_and_why_not() -> None:
    assert rule_for(nn.Conv2d(4, 4, 3, groups=4)).coupling(nn.Conv2d(4, 4, 3, groups=4), OUT, "dw") == (
        "conv", BOTH, 1, None)
    grouped = nn.Conv2d(8, 4, 1, groups=2)
    assert rule_for(grouped).coupling(grouped, IN, "g") == ("conv", IN, 2, None)
    one_per_group = nn.Conv2d(8, 4, 1, groups=4)
    assert "one channel per group" in rule_for(one_per_group).coupling(one_per_group, OUT, "c").reason
    transposed = nn.ConvTranspose2d(4, 4, 2, groups=2)
    assert rule_for(transposed).coupling(transposed, OUT, "t") == (
        "conv_transpose", OUT, 1, "grouped transposed conv t is not supported")
    norm = nn.BatchNorm2d(4, affine=False)
    assert rule_for(norm).coupling(norm, IN, "bn") == (
        "bn", OUT, 1, "BatchNorm bn without affine parameters cannot be soft-zeroed")
    assert rule_for(nn.PReLU(4)).coupling(nn.PReLU(4), IN, "p") == ("prelu", OUT, 1, None)
    assert rule_for(nn.Linear(2, 3)).coupling(nn.Linear(2, 3), IN, "fc") == ("linear", IN, 1, None)
    pool = ck.ChannelPool()
    assert rule_for(pool).coupling(pool, IN, "pool") == ("pool", IN, 1, None)
    assert rule_for(pool).coupling(pool, OUT, "pool").reason == "the output maps of ChannelPool pool cannot be pruned"
    group_norm = nn.GroupNorm(2, 4)
    coupling = rule_for(group_norm).coupling(group_norm, OUT, "gn")
    assert coupling.kind == "op" and coupling.reason.startswith("GroupNorm gn normalises over these channels")
    attention = nn.MultiheadAttention(8, 2)
    assert "nn.MultiheadAttention mha:" in rule_for(attention).coupling(attention, OUT, "mha").reason
    assert LayerRule().coupling(nn.ReLU(), OUT, "act") == ("op", OUT, 1, "unsupported layer act (ReLU)")


def test_removal_keeps_dtype_device_requires_grad_and_grad() -> None:
    conv = nn.Conv2d(3, 4, 1).double()
    conv.bias.requires_grad_(False)
    conv(torch.randn(1, 3, 2, 2, dtype=torch.float64)).sum().backward()
    rule_for(conv).remove(conv, OUT, [1], 4)
    assert conv.weight.dtype == conv.bias.dtype == torch.float64
    assert conv.weight.requires_grad and not conv.bias.requires_grad
    assert conv.weight.grad.shape == conv.weight.shape
    assert isinstance(keep_parameter(torch.ones(3), 0, [0]), nn.Parameter)


def test_lookup_goes_through_the_mro() -> None:
    class MyConv(nn.Conv2d):
        pass

    assert isinstance(rule_for(MyConv(3, 8, 1)), ConvRule)
    assert rule_for(nn.ReLU()) is None and axis_size(nn.ReLU(), OUT) is None
    assert isinstance(rule_for(nn.SyncBatchNorm(4)), type(LAYER_RULES[nn.modules.batchnorm._BatchNorm]))


def test_mismatched_op_names_the_module() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    with pytest.raises(ValueError, match=r"'0' \(Conv2d\): expects out size 5, model has 4"):
        remove_channels(model, [ChannelOp("0", OUT, (1,), 5)])
    with pytest.raises(ValueError, match="indices out of range"):
        remove_channels(model, [ChannelOp("0", OUT, (4,), 4)])
    with pytest.raises(ValueError, match=r"cannot remove channels of '1' \(ReLU\)"):
        remove_channels(model, [ChannelOp("1", OUT, (0,), 4)])
    with pytest.raises(ValueError, match=r"'0' \(LayerNorm\): LayerNorm has no removable channels"):
        remove_channels(nn.Sequential(nn.LayerNorm(4)), [ChannelOp("0", OUT, (0,), 4)])


class Scale(nn.Module):
    """A learnable per-channel scale ``y = x * weight[None, :, None, None]``: a custom layer."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 2.0, num_channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1)


class ScaleRule(LayerRule):
    """What a user writes to make :class:`Scale` prunable (the module docstring's example)."""

    def size(self, module: nn.Module, axis: Axis) -> int:
        return module.weight.numel()

    def channels(self, module: nn.Module) -> tuple[int, int]:
        return module.weight.numel(), module.weight.numel()

    def zero(self, module: nn.Module, axis: Axis, indices: Sequence[int]) -> None:
        module.weight.data[list(indices)] = 0.0

    def remove(self, module: nn.Module, axis: Axis, indices: Sequence[int], size: int) -> None:
        check_indices(axis, indices, size, self.size(module, axis))
        module.weight = keep_parameter(module.weight, 0, indices)

    def params(self, module: nn.Module) -> ParamCount:
        return lambda in_channels, out_channels: out_channels


def test_a_registered_custom_rule_is_used_by_removal_and_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(LAYER_RULES, Scale, ScaleRule())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), Scale(4), nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(1, 3, 5, 5)
    identity = {c: (c,) for c in range(4)}
    items = (Item("0", "conv", OUT, 4, identity), Item("1", "op", OUT, 4, identity),
             Item("2", "conv", IN, 4, identity))
    group = ChannelGroup("0", "default", 4, ((0, 1, 2, 3),), items, model)
    predicted = ParamPredictor(model, [group])(0.5)
    assert channel_counts(model)["1"] == ("Scale", 4, 4)
    ops = [ChannelOp("0", OUT, (1, 2), 4), ChannelOp("1", OUT, (1, 2), 4), ChannelOp("2", IN, (1, 2), 4)]
    zero_channels(model, ops)
    assert model[1].weight.tolist() == [0.5, 0.0, 0.0, 2.0]
    soft = model(x)
    remove_channels(model, ops)
    assert torch.allclose(model(x), soft, atol=1e-6)
    assert predicted == ck.count_params(model) == 3 * 2 + 2 + 2 + 2 * 2 + 2
    assert channel_counts(model)["1"] == ("Scale", 2, 2)
