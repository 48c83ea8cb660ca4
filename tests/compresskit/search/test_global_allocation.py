"""Global allocation of pruning rates (compresskit.search.global_allocation): the budget is met exactly, a
planted-redundant layer group is pruned first, bounds and channel rounding hold, a latency limit holds, clear errors."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from compresskit import find_groups
from compresskit.groups.channel_group import LayerGroupSpec
from compresskit.groups.find import round_channels
from compresskit.pruning.budget import ParamPredictor
from compresskit.pruning.output_error import OutputError
from compresskit.search.global_allocation import Allocation, allocate_rates, layer_group_costs, rate_levels

LEVELS = {name: [k / 10 for k in range(10)] for name in "abc"}
#: convex costs, "b" the cheapest to prune and "c" the dearest
COSTS = {"a": [k**2 / 10 for k in range(10)], "b": [k**2 / 40 for k in range(10)], "c": [k**2 for k in range(10)]}


def _params(rates: dict[str, float]) -> int:
    # not separable: "a" and "b" share a layer, as consecutive convs do
    return round(3000 * (1 - rates["a"]) * (1 - rates["b"]) + 700 * (1 - rates["b"]) + 500 * (1 - rates["c"]))


def _one_level_down_breaks(allocation: Allocation, max_params: int) -> bool:
    """No single layer group can prune one level less within ``max_params``."""
    for name, rate in allocation.rates.items():
        index = LEVELS[name].index(rate)
        if index and _params({**allocation.rates, name: LEVELS[name][index - 1]}) <= max_params:
            return False
    return True


@pytest.mark.parametrize("max_params", [4150, 3000, 2222, 1500, 900])
def test_meets_the_budget_exactly(max_params):
    allocation = allocate_rates(LEVELS, COSTS, _params, max_params)
    assert allocation.predicted_params == _params(allocation.rates) <= max_params
    assert _one_level_down_breaks(allocation, max_params)
    assert allocation.cost == pytest.approx(sum(COSTS[n][LEVELS[n].index(r)] for n, r in allocation.rates.items()))
    assert allocation.predicted_latency_ms is None


def test_cost_is_close_to_the_brute_force_optimum_and_cheap_groups_are_pruned_more():
    max_params = 2222
    best = min(sum(COSTS[n][LEVELS[n].index(r)] for n, r in zip("abc", rates))
               for rates in itertools.product(*LEVELS.values()) if _params(dict(zip("abc", rates))) <= max_params)
    allocation = allocate_rates(LEVELS, COSTS, _params, max_params)
    assert allocation.cost <= 1.25 * best
    assert allocation.rates["b"] > allocation.rates["a"] > allocation.rates["c"]


def test_min_params_is_met_or_named():
    allocation = allocate_rates(LEVELS, COSTS, _params, max_params=3000, min_params=2900)
    assert 2900 <= allocation.predicted_params <= 3000
    with pytest.raises(ValueError, match="below min_params 2,999, .* widen the budget band"):
        allocate_rates(LEVELS, COSTS, _params, max_params=2999, min_params=2999)


def test_latency_limit_holds_with_the_parameter_budget():
    def latency(rates: dict[str, float]) -> float:  # "c" is the slow layer
        return 1.0 + 8.0 * (1 - rates["c"]) + 1.0 * (1 - rates["a"])

    allocation = allocate_rates(LEVELS, COSTS, _params, max_params=4000, latency=(latency, 5.0))
    assert allocation.predicted_latency_ms == pytest.approx(latency(allocation.rates))
    assert allocation.predicted_latency_ms <= 5.0 and allocation.predicted_params <= 4000
    assert allocation.rates["c"] > 0  # the parameters alone would not prune the dear group
    assert allocate_rates(LEVELS, COSTS, _params, max_params=4000).rates["c"] == 0.0


def test_unreachable_budget_and_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"budget unreachable within the rate bounds: at the upper bounds the model "
                                         r"keeps 150 params, over max_params 100"):
        allocate_rates(LEVELS, COSTS, _params, max_params=100)
    with pytest.raises(ValueError, match="and max_latency_ms 0.5"):
        allocate_rates(LEVELS, COSTS, _params, max_params=4000, latency=(lambda rates: 1.0, 0.5))
    with pytest.raises(ValueError, match="levels and costs must name the same layer groups"):
        allocate_rates(LEVELS, {"a": COSTS["a"]}, _params, max_params=2000)
    with pytest.raises(ValueError, match=r"levels\['a'\] must be increasing rates with one cost each"):
        allocate_rates({**LEVELS, "a": [0.0, 0.1]}, COSTS, _params, max_params=2000)


class Chain(nn.Module):
    """conv1 (3 -> 8) -> conv2 (8 -> 8) -> conv3 (8 -> 4); conv2 reads only conv1's channels 0-3."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 4, 1)
        with torch.no_grad():
            self.conv2.weight[:, 4:] = 0  # conv1's channels 4-7 are planted redundant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


SPECS = [LayerGroupSpec("first", patterns=("conv1",), bounds=(0.0, 0.8)),
         LayerGroupSpec("second", patterns=("conv2",), bounds=(0.0, 0.8))]


def _chain() -> tuple[Chain, list, list[torch.Tensor]]:
    model = Chain().eval()
    batches = [torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    return model, find_groups(model, (batches[0][:1],), SPECS, protect=["conv3"]), batches


def test_a_planted_redundant_group_is_pruned_first_at_almost_no_cost():
    model, groups, batches = _chain()
    eliminations = [OutputError(batches, damping=1e-6).eliminate(g) for g in groups]
    curves = [e.curve for e in eliminations]
    for curve in curves:
        assert curve[0] == 0 and bool((curve[1:] >= curve[:-1]).all())
    (first,) = [i for i, g in enumerate(groups) if g.layer_group == "first"]
    assert float(curves[first][4]) < 1e-6 < float(curves[first][5])  # the four unread channels cost nothing
    assert sorted(eliminations[first].scores.argsort()[:4].tolist()) == [4, 5, 6, 7]

    bounds = {spec.name: spec.bounds for spec in SPECS}
    levels = rate_levels(groups, bounds)
    predictor = ParamPredictor(model, groups)
    max_params = predictor({"first": 0.5, "second": 0.0})
    allocation = allocate_rates(levels, layer_group_costs(groups, curves, levels), predictor, max_params)
    assert allocation.rates == {"first": 0.5, "second": 0.0}
    assert allocation.cost < 1e-6 and allocation.predicted_params == max_params


def test_levels_respect_bounds_and_channel_rounding_and_unpriced_groups_take_the_mean_curve():
    _, groups, _ = _chain()
    levels = rate_levels(groups, {"first": (0.1, 0.6), "second": (0.0, 0.8)})
    assert levels == {"first": [0.1, 0.125, 0.25, 0.375, 0.5], "second": [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75]}
    round_channels(groups, 4)
    rounded = rate_levels(groups, {"first": (0.0, 0.6), "second": (0.0, 0.8)})
    assert rounded == {"first": [0.0, 0.5], "second": [0.0, 0.5]}  # 8 or 4 kept: removing 4 needs rate 0.5
    curves = [torch.arange(9, dtype=torch.float64), None]
    costs = layer_group_costs(groups, curves, rounded)
    assert costs == {"first": [0.0, 4.0], "second": [0.0, 4.0]}  # 4 of 8 removed: the other curve at 4
    with pytest.raises(ValueError, match=r"bounds\['first'\] must satisfy 0 <= lo <= hi < 1"):
        rate_levels(groups, {"first": (0.5, 1.0)})
    with pytest.raises(ValueError, match="must have 9 values"):
        layer_group_costs(groups, [torch.zeros(3), None], {"first": [0.0]})
