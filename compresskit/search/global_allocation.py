"""Global allocation of per-layer-group pruning rates from data, with no trials (``search.method: global``).

Each channel group has a cost curve ``curve[k]``: the relative output error of removing its ``k`` least useful
channels with least-squares compensation (:meth:`compresskit.pruning.output_error.OutputError.eliminate`; any
non-decreasing curve that compares across groups will do). A layer group's rate applies to all its channel groups,
so its candidate rates (:func:`rate_levels`) are the lower bound and every rate up to the upper bound at which the
removal count of one of its channel groups changes (:meth:`~compresskit.groups.ChannelGroup.removal_counts`,
channel rounding included); the cost of a rate is the sum of its groups' curves at their removal counts
(:func:`layer_group_costs`).

:func:`allocate_rates` then solves the budgeted choice greedily, as a multiple-choice knapsack (the "efficient
frontier" greedy of Sinha & Zoltners, "The Multiple-Choice Knapsack Problem", Operations Research 1979; the same
marginal-cost-per-parameter rule as global pruning criteria such as Molchanov et al., CVPR 2019):

1. start with every layer group at its lower bound;
2. while the predicted parameters exceed ``max_params`` (or the predicted latency its limit), move the one layer
   group whose next rates (up to :data:`LOOKAHEAD` levels ahead, so a flat stretch of a curve is seen past) add the
   least cost per unit of budget excess removed;
3. fix-up: while some layer group can go back to a lower rate with the budget still met, take the move that saves
   the most cost. So the result is within the budget and no single layer group can prune less without breaking it:
   the budget is met exactly up to one level of one layer group;
4. only when the result keeps fewer than ``min_params``: pairs of moves (one layer group prunes less, another
   more) towards the band, the cheapest that lands in it.

The predictors are the caller's callables (``ParamPredictor`` is exact), called ``O(steps * groups * LOOKAHEAD)``
times. Caveats: a channel group's curve assumes every other group intact (channels are priced one group at a
time); a group with cells (grouped convs) is priced by its total removal count; a group none of whose consumers is
dense has no curve and is priced by the mean curve of the others at the same fraction removed
(:func:`layer_group_costs`); greedy is not optimal for non-convex costs (the lookahead and the fix-up narrow the gap).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

from compresskit.groups.channel_group import ChannelGroup

__all__ = ["LOOKAHEAD", "Allocation", "allocate_rates", "layer_group_costs", "rate_levels"]

#: How many levels ahead of its current one a layer group's next move may jump (the greedy's lookahead).
LOOKAHEAD = 16

PredictParams = Callable[[dict[str, float]], int]
PredictLatency = Callable[[dict[str, float]], float]


@dataclass(frozen=True)
class Allocation:
    """The chosen rates and what they cost.

    Attributes:
        rates: One rate per layer group (one of its levels).
        predicted_params: ``predict_params(rates)``, within the budget.
        cost: Total cost (sum of ``costs``).
        costs: Cost of each layer group at its rate.
        predicted_latency_ms: ``predict_latency(rates)`` with a latency limit, else ``None``.
    """

    rates: dict[str, float]
    predicted_params: int
    cost: float
    costs: dict[str, float]
    predicted_latency_ms: float | None = None


def rate_levels(groups: Sequence[ChannelGroup], bounds: Mapping[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Candidate rates of each layer group of ``bounds``: the smallest rate of each distinct removal.

    A rate ``r`` in ``[lo, hi]`` is a level when it is ``lo`` or ``k / size`` for a cell size of one of the layer
    group's channel groups; levels whose removal counts (over all its groups) equal a smaller level's are dropped.

    Raises:
        ValueError: bounds not within ``0 <= lo <= hi < 1``.

    Example:
        >>> rate_levels(groups, {"stage2": (0.0, 0.5)})  # one group of 8 channels  # doctest: +SKIP
        {'stage2': [0.0, 0.125, 0.25, 0.375, 0.5]}
    """
    levels = {}
    for name, (low, high) in bounds.items():
        if not 0.0 <= low <= high < 1.0:
            raise ValueError(f"bounds[{name!r}] must satisfy 0 <= lo <= hi < 1, got {(low, high)!r}")
        members = [g for g in groups if g.layer_group == name]
        candidates = {float(low)} | {k / len(cell) for g in members for cell in g.cells
                                     for k in range(1, len(cell)) if low < k / len(cell) <= high}
        seen: set[tuple[int, ...]] = set()
        levels[name] = []
        for rate in sorted(candidates):
            removal = tuple(count for g in members for count in g.removal_counts(rate))
            if removal not in seen:
                seen.add(removal)
                levels[name].append(rate)
    return levels


def _mean_curve(curves: Sequence[Tensor | None]) -> Callable[[float], float]:
    """``fraction -> mean of the known curves at that fraction of their channels removed`` (0 without any)."""
    known = [curve for curve in curves if curve is not None]

    def at(fraction: float) -> float:
        if not known:
            return 0.0
        return sum(float(c[min(len(c) - 1, round(fraction * (len(c) - 1)))]) for c in known) / len(known)

    return at


def layer_group_costs(groups: Sequence[ChannelGroup], curves: Sequence[Tensor | None],
                      levels: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """Cost of each level of each layer group: the sum of its channel groups' ``curve[removed channels]``.

    Args:
        groups: The channel groups.
        curves: One per group: ``[C + 1]`` cumulative costs (e.g. ``OutputError.eliminate(group).curve``), or
            ``None`` (no dense consumer): priced by the mean of the known curves at the same fraction removed.
        levels: Candidate rates per layer group (:func:`rate_levels`).

    Raises:
        ValueError: ``curves`` does not match ``groups``.
    """
    if len(curves) != len(groups):
        raise ValueError(f"need one curve per group: {len(groups)} groups, got {len(curves)} curves")
    for group, curve in zip(groups, curves):
        if curve is not None and len(curve) != group.num_channels + 1:
            raise ValueError(f"the curve of group {group.name!r} must have {group.num_channels + 1} values "
                             f"(0..{group.num_channels} removed), got {len(curve)}")
    fallback = _mean_curve(curves)
    costs = {}
    for name, rates in levels.items():
        members = [(g, c) for g, c in zip(groups, curves) if g.layer_group == name]
        costs[name] = []
        for rate in rates:
            total = 0.0
            for group, curve in members:
                removed = sum(group.removal_counts(rate))
                total += float(curve[removed]) if curve is not None else fallback(removed / group.num_channels)
            costs[name].append(total)
    return costs


@dataclass
class _State:
    """The greedy's position: a level index per layer group and the predictions there."""

    levels: Mapping[str, Sequence[float]]
    predict_params: PredictParams
    latency: tuple[PredictLatency, float] | None
    index: dict[str, int]

    def rates(self, moved: tuple[str, int] | None = None) -> dict[str, float]:
        index = self.index if moved is None else {**self.index, moved[0]: moved[1]}
        return {name: float(self.levels[name][i]) for name, i in index.items()}

    def predict(self, rates: dict[str, float]) -> tuple[int, float]:
        latency = 0.0 if self.latency is None else float(self.latency[0](rates))
        return int(self.predict_params(rates)), latency


def _excess(params: int, latency: float, max_params: int, limit: float) -> tuple[float, float]:
    return max(0.0, params - max_params), max(0.0, latency - limit)


def _greedy(state: _State, costs: Mapping[str, Sequence[float]], max_params: int, limit: float) -> None:
    """Step 2: move the cheapest layer group per unit of excess removed until the budget holds."""
    params, latency = state.predict(state.rates())
    while any(_excess(params, latency, max_params, limit)):
        excess = _excess(params, latency, max_params, limit)
        best: tuple[float, float, str, int, int, float] | None = None
        for name, current in state.index.items():
            for level in range(current + 1, min(len(state.levels[name]), current + 1 + LOOKAHEAD)):
                moved_params, moved_latency = state.predict(state.rates((name, level)))
                after = _excess(moved_params, moved_latency, max_params, limit)
                gain = sum((b - a) / e for a, b, e in zip(after, excess, excess) if e > 0)
                added = max(0.0, costs[name][level] - costs[name][current])
                ratio = added / gain if gain > 0 else math.inf
                if best is None or (ratio, -gain) < best[:2]:
                    best = (ratio, -gain, name, level, moved_params, moved_latency)
        assert best is not None, "internal: a budget reachable at the upper bounds left no move"
        _, _, name, level, params, latency = best
        state.index[name] = level


def _fix_up(state: _State, costs: Mapping[str, Sequence[float]], max_params: int, limit: float) -> None:
    """Step 3: take back the move that saves the most cost while the budget still holds, until none does."""
    while True:
        best: tuple[float, str, int] | None = None
        for name, current in state.index.items():
            for level in range(current):  # the lowest feasible level saves the most of this group's cost
                params, latency = state.predict(state.rates((name, level)))
                if not any(_excess(params, latency, max_params, limit)):
                    saved = costs[name][current] - costs[name][level]
                    if best is None or saved > best[0]:
                        best = (saved, name, level)
                    break
        if best is None:
            return
        state.index[best[1]] = best[2]


def _fill(state: _State, costs: Mapping[str, Sequence[float]], min_params: int, max_params: int,
          limit: float) -> None:
    """Step 4, only below ``min_params``: pairs of moves (one layer group down up to :data:`LOOKAHEAD` levels,
    another up as many or not at all); take the cheapest pair that lands in the band, else the one that keeps
    the most parameters within it, and repeat while that gains parameters."""
    params, _ = state.predict(state.rates())
    while params < min_params:
        best: tuple[bool, float, int, dict[str, int]] | None = None  # (in band, -cost or params, params, index)
        for down, up in itertools.product(state.index, [None, *state.index]):
            if down == up:
                continue
            for lower, higher in itertools.product(range(1, LOOKAHEAD + 1), range(LOOKAHEAD + 1 if up else 1)):
                index = {**state.index, down: state.index[down] - lower}
                if up is not None:
                    index[up] = state.index[up] + higher
                if index[down] < 0 or (up is not None and index[up] >= len(state.levels[up])):
                    continue
                moved = _State(state.levels, state.predict_params, state.latency, index)
                new_params, latency = moved.predict(moved.rates())
                if any(_excess(new_params, latency, max_params, limit)) or new_params <= params:
                    continue
                cost = sum(costs[name][i] for name, i in index.items())
                key = (new_params >= min_params, -cost if new_params >= min_params else new_params)
                if best is None or key > best[:2]:
                    best = (*key, new_params, index)
        if best is None:
            return
        state.index, params = best[3], best[2]


def _check(levels: Mapping[str, Sequence[float]], costs: Mapping[str, Sequence[float]], max_params: int,
           min_params: int) -> None:
    if not levels or set(levels) != set(costs):
        raise ValueError(f"levels and costs must name the same layer groups, got {sorted(levels)} and {sorted(costs)}")
    for name, rates in levels.items():
        if not rates or len(rates) != len(costs[name]) or list(rates) != sorted(rates):
            raise ValueError(f"levels[{name!r}] must be increasing rates with one cost each, got {list(rates)} "
                             f"and {list(costs[name])}")
    if not 0 <= min_params <= max_params:
        raise ValueError(f"budget must satisfy 0 <= min_params <= max_params, got {(min_params, max_params)}")


def allocate_rates(levels: Mapping[str, Sequence[float]], costs: Mapping[str, Sequence[float]],
                   predict_params: PredictParams, max_params: int, min_params: int = 0,
                   latency: tuple[PredictLatency, float] | None = None) -> Allocation:
    """Rates (one level per layer group) of least total cost with ``min_params <= params <= max_params``.

    Greedy by marginal cost per unit of budget excess removed, then a fix-up so the budget is met exactly (see
    the module docstring).

    Args:
        levels: Increasing candidate rates per layer group (:func:`rate_levels`), the first its lower bound.
        costs: The cost of each level (:func:`layer_group_costs`), non-decreasing for the greedy to be sound.
        predict_params: ``rates -> parameter count`` (e.g. ``compresskit.pruning.budget.ParamPredictor``).
        max_params: Largest parameter count allowed.
        min_params: Smallest parameter count allowed.
        latency: ``(predict_latency, max_latency_ms)``: the predicted latency must also be within the limit.

    Returns:
        An :class:`Allocation`.

    Raises:
        ValueError: Mismatched levels and costs, or a budget not met within the levels: ``max_params`` (or the
            latency limit) above what the upper bounds give, or ``min_params`` missed (the message gives the
            parameters reached; widen the band).

    Example:
        >>> levels = rate_levels(groups, {"stage2": (0.0, 0.7), "stage3": (0.0, 0.8)})
        >>> elimination = OutputError(calibration_batches)
        >>> curves = [getattr(elimination.eliminate(g), "curve", None) for g in groups]
        >>> allocation = allocate_rates(levels, layer_group_costs(groups, curves, levels),
        ...                             ParamPredictor(model, groups), max_params=40_000)  # doctest: +SKIP
    """
    _check(levels, costs, max_params, min_params)
    limit = math.inf if latency is None else float(latency[1])
    state = _State(levels, predict_params, latency, {name: 0 for name in levels})
    top = _State(levels, predict_params, latency, {name: len(rates) - 1 for name, rates in levels.items()})
    params, latency_ms = top.predict(top.rates())
    if params > max_params or latency_ms > limit:
        reached = f"{params:,} params" + ("" if latency is None else f" and {latency_ms:.4g} ms predicted")
        wanted = f"max_params {max_params:,}" + ("" if latency is None else f" and max_latency_ms {limit:.4g}")
        raise ValueError(f"budget unreachable within the rate bounds: at the upper bounds the model keeps "
                         f"{reached}, over {wanted}; raise the upper bounds or the budget")
    _greedy(state, costs, max_params, limit)
    _fix_up(state, costs, max_params, limit)
    _fill(state, costs, min_params, max_params, limit)
    rates = state.rates()
    params, latency_ms = state.predict(rates)
    if params < min_params:
        raise ValueError(f"the allocation keeps {params:,} params, below min_params {min_params:,}, and no pair of "
                         f"layer-group moves keeps more within max_params {max_params:,}; widen the budget band")
    chosen = {name: float(costs[name][i]) for name, i in state.index.items()}
    return Allocation(rates, params, sum(chosen.values()), chosen, None if latency is None else latency_ms)
