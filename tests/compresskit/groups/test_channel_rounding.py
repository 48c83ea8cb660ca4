"""Hardware-friendly channel rounding: kept widths are multiples, the parameter predictor stays exact."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compresskit import ParamPredictor, count_params, find_groups
from compresskit.groups.find import cell_removal_counts, round_channels, round_removal
from compresskit.pruning import prune


@pytest.mark.parametrize(("channels", "removed", "multiple", "expected"), [
    (72, 30, 8, 24),   # 42 kept -> 48
    (72, 32, 8, 32),   # 40 kept: already a multiple
    (72, 30, 1, 30),
    (6, 4, 8, 0),      # rounding up never exceeds the original width
    (64, 63, 16, 48),  # 1 kept -> 16
])
def test_round_removal(channels, removed, multiple, expected):
    assert round_removal(channels, removed, multiple) == expected


def test_balanced_cells_round_the_total():
    # cells of 24 and 48 (3 units of 24) at rate 0.5: kept 12 per unit, 36 in all -> 16 per unit (48 in all)
    assert cell_removal_counts([24, 48], 0.5, balanced=True, multiple=16) == [8, 16]
    # 8 cells of 9 at 0.3: 2 removed per cell, 56 kept -- already a multiple of 8; 16 needs an even count
    assert cell_removal_counts([9] * 8, 0.3, balanced=True, multiple=8) == [2] * 8
    assert cell_removal_counts([9] * 8, 0.3, balanced=True, multiple=16) == [1] * 8
    with pytest.raises(ValueError, match="channel multiple must be an int >= 1, got 0"):
        round_removal(8, 1, 0)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 40, 3, padding=1), nn.BatchNorm2d(40), nn.ReLU(),
                         nn.Conv2d(40, 72, 3, padding=1, groups=8), nn.BatchNorm2d(72), nn.ReLU(),
                         nn.Conv2d(72, 36, 1), nn.ReLU(), nn.Conv2d(36, 5, 1)).eval()


@pytest.mark.parametrize("multiple", [4, 8, 16])
@pytest.mark.parametrize("rate", [0.3, 0.55])
def test_rounded_widths_are_multiples_and_the_predictor_is_exact(multiple, rate):
    x = torch.randn(1, 3, 8, 8)
    model = _net()
    groups = round_channels(find_groups(model, x, protect=["8"]), multiple)
    predicted = ParamPredictor(model, groups)(rate)
    unrounded = ParamPredictor(copy.deepcopy(model), find_groups(copy.deepcopy(model), x, protect=["8"]))(rate)
    prune(model, x, rate, groups=groups)
    assert count_params(model) == predicted >= unrounded
    widths = [model[index].out_channels for index in (0, 3, 6)]
    assert all(width % multiple == 0 or width == full for width, full in zip(widths, (40, 72, 36))), widths
    assert widths != [40, 72, 36]
