"""FPGM and magnitude importance: exact values and planted filters."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import compresskit as ck
from compresskit.pruning.importance import resolve_importance


class TwoConvs(nn.Module):
    """conv_a -> conv_b (1x1 convs, no BN): conv_a's group has one producer."""

    def __init__(self, filters: Tensor) -> None:
        super().__init__()
        out_channels, in_channels = filters.shape
        self.conv_a = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv_b = nn.Conv2d(out_channels, 2, 1)
        with torch.no_grad():
            self.conv_a.weight.copy_(filters.view(out_channels, in_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_b(torch.relu(self.conv_a(x)))


class Residual(nn.Module):
    """Two producers into one add: ``conv_a(x) + conv_b(x)``."""

    def __init__(self, first: Tensor, second: Tensor) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(first.shape[1], first.shape[0], 1, bias=False)
        self.conv_b = nn.Conv2d(first.shape[1], first.shape[0], 1, bias=False)
        self.head = nn.Conv2d(first.shape[0], 2, 1)
        with torch.no_grad():
            self.conv_a.weight.copy_(first[..., None, None])
            self.conv_b.weight.copy_(second[..., None, None])

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv_a(x) + self.conv_b(x))


def _group(model: nn.Module, in_channels: int) -> ck.ChannelGroup:
    groups = ck.find_groups(model, torch.randn(1, in_channels, 4, 4))
    return groups[0]


def test_fpgm_picks_the_planted_geometric_median_filter() -> None:
    generator = torch.Generator().manual_seed(0)
    filters = torch.randn(6, 5, generator=generator) * 3
    filters[4] = filters[[0, 1, 2, 3, 5]].mean(dim=0)  # redundant: near the geometric median
    group = _group(TwoConvs(filters), 5)
    scores = ck.fpgm(group)
    assert int(scores.argmin()) == 4
    assert group.select(scores, 0.2) == [4]


def test_fpgm_is_the_mean_normalised_distance_sum() -> None:
    filters = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    # pairwise distances: d01=5, d02=10, d12=5 -> sums 15, 10, 15; mean 40/3
    scores = ck.fpgm(_group(TwoConvs(filters), 2))
    torch.testing.assert_close(scores, torch.tensor([15.0, 10.0, 15.0]) / (40.0 / 3.0))


def test_magnitude_is_the_mean_normalised_l2_norm() -> None:
    filters = torch.tensor([[0.0, 1.0], [3.0, 4.0], [6.0, 8.0]])
    scores = ck.magnitude(_group(TwoConvs(filters), 2))
    torch.testing.assert_close(scores, torch.tensor([1.0, 5.0, 10.0]) / (16.0 / 3.0))


def test_scores_of_coupled_producers_are_averaged() -> None:
    first = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # fpgm sums 15, 10, 15
    second = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 4.0]])  # sums 1+3, 1+2, 3+2 = 4, 3, 5
    group = _group(Residual(first, second), 2)
    assert len(group.producer_weights()) == 2
    expected = (torch.tensor([15.0, 10.0, 15.0]) / (40 / 3) + torch.tensor([4.0, 3.0, 5.0]) / 4.0) / 2
    torch.testing.assert_close(ck.fpgm(group), expected)


def test_producer_weights_rows_follow_channel_order() -> None:
    filters = torch.arange(12.0).view(4, 3)
    (weights,) = _group(TwoConvs(filters), 3).producer_weights()
    assert torch.equal(weights, filters)


def test_importance_registry_and_custom_callables() -> None:
    assert ck.IMPORTANCES == {"fpgm": ck.fpgm, "magnitude": ck.magnitude}
    assert resolve_importance("magnitude") is ck.magnitude
    with pytest.raises(ValueError, match="unknown importance 'taylor'; valid: \\['fpgm', 'magnitude'\\]"):
        resolve_importance("taylor")
    with pytest.raises(TypeError, match="42"):
        resolve_importance(42)  # type: ignore[arg-type]

    filters = torch.randn(4, 3)
    model = TwoConvs(filters)
    groups = ck.find_groups(model, torch.randn(1, 3, 4, 4))
    pruner = ck.SoftFPGM(groups, ck.constant(0.5), importance=lambda g: torch.tensor([4.0, 1.0, 3.0, 2.0]))
    pruner.step(0)
    assert pruner.zeroed_indices() == {"conv_a": [1, 3]}
