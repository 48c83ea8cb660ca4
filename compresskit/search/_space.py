"""The search space of :mod:`compresskit.search`: rate boxes, argument checks and budget feasibility.

Contract: a :class:`RateSpace` maps rates ``{group: rate}`` to points of the unit cube and back
(``float64``, clamped to the cube). :class:`Feasibility` answers "is this unit-cube point within the
parameter budget (and the latency budget)?" by calling the caller's predictors; it never changes a
point. :func:`feasible_sequence` takes the first feasible points of a deterministic sequence
(scrambled Sobol or seeded uniform) and raises ``ValueError`` with the reachable range when the
budget is (almost) unreachable. The ``check_*`` functions validate the search's own arguments and
raise ``ValueError`` showing the bad value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Feasibility", "PredictLatency", "PredictParams", "RateSpace", "check_budget", "check_int",
           "check_latency", "check_space", "check_start", "feasible_sequence", "sobol_draw", "uniform_draw"]

PredictParams = Callable[[dict[str, float]], int]
PredictLatency = Callable[[dict[str, float]], float]

MAX_FEASIBILITY_DRAWS = 1 << 16
FIRST_CHECK_DRAWS = 4096  # give up early when none of the first draws is feasible
DRAW_CHUNK = 1024  # fixed, so a sequence does not depend on how many points are wanted (resume with more)


@dataclass(frozen=True)
class RateSpace:
    """A box of rates per layer group, mapped to the unit cube.

    Attributes:
        names: Layer-group names, in the order of the cube's axes.
        lower: Lower rate bound per axis, float64 ``[d]``.
        upper: Upper rate bound per axis, float64 ``[d]``.
    """

    names: tuple[str, ...]
    lower: Tensor
    upper: Tensor

    @property
    def dim(self) -> int:
        """Number of layer groups (axes)."""
        return len(self.names)

    def to_unit(self, rates: Mapping[str, float]) -> Tensor:
        """``{group: rate}`` -> a float64 point ``[d]`` of the unit cube."""
        values = torch.tensor([float(rates[name]) for name in self.names], dtype=torch.float64)
        return (values - self.lower) / (self.upper - self.lower)

    def from_unit(self, x: Tensor) -> dict[str, float]:
        """A unit-cube point ``[d]`` (clamped into the cube) -> ``{group: rate}``."""
        values = self.lower + x.to(torch.float64).clamp(0.0, 1.0) * (self.upper - self.lower)
        return {name: float(v) for name, v in zip(self.names, values.tolist())}


def check_space(bounds: Mapping[str, tuple[float, float]]) -> RateSpace:
    """The :class:`RateSpace` of ``bounds`` (``{group: (lo, hi)}`` with ``0 <= lo < hi < 1``)."""
    if not isinstance(bounds, Mapping) or not bounds:
        raise ValueError(f"bounds must be a non-empty mapping name -> (lo, hi), got {bounds!r}")
    lower, upper = [], []
    for name, pair in bounds.items():
        try:
            lo, hi = (float(v) for v in pair)
        except (TypeError, ValueError) as error:
            raise ValueError(f"bounds[{name!r}] must be a (lo, hi) pair, got {pair!r}") from error
        if not (0.0 <= lo < hi < 1.0):
            raise ValueError(f"bounds[{name!r}] must satisfy 0 <= lo < hi < 1, got {pair!r}")
        lower.append(lo)
        upper.append(hi)
    return RateSpace(tuple(bounds), torch.tensor(lower, dtype=torch.float64),
                     torch.tensor(upper, dtype=torch.float64))


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` if it is an int (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_budget(budget: tuple[int, int]) -> tuple[int, int]:
    """``(min_params, max_params)`` as ints, with ``0 <= min_params <= max_params``."""
    try:
        lo, hi = budget
    except (TypeError, ValueError) as error:
        raise ValueError(f"budget must be a (min_params, max_params) pair, got {budget!r}") from error
    if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 <= lo <= hi):
        raise ValueError(f"budget must satisfy 0 <= min_params <= max_params, got {budget!r}")
    return int(lo), int(hi)


def check_latency(latency: Any) -> tuple[PredictLatency, float] | None:
    """``None``, or a ``(predict_latency, max_latency_ms)`` pair with a positive, finite limit."""
    if latency is None:
        return None
    try:
        predict, max_ms = latency
    except (TypeError, ValueError) as error:
        raise ValueError(f"latency must be a (predict_latency, max_latency_ms) pair, got {latency!r}") from error
    if not callable(predict):
        raise ValueError(f"predict_latency must be a callable rates -> ms, got {predict!r}")
    if isinstance(max_ms, bool) or not isinstance(max_ms, (int, float)) or not 0 < max_ms < math.inf:
        raise ValueError(f"max_latency_ms must be a positive number, got {max_ms!r}")
    return predict, float(max_ms)


def check_start(space: RateSpace, start: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], ...]:
    """``start`` as rate dicts, each naming every dimension of ``space`` with a rate inside its bounds."""
    checked = []
    for rates in start:
        if not isinstance(rates, Mapping) or set(rates) != set(space.names):
            raise ValueError(f"a start point must give a rate for each of {list(space.names)}, got {rates!r}")
        point = {name: float(rates[name]) for name in space.names}
        x = space.to_unit(point)
        if not bool(((x >= -1e-12) & (x <= 1 + 1e-12)).all()):
            raise ValueError(f"start point {point} is outside the bounds")
        checked.append(point)
    return tuple(checked)


class Feasibility:
    """Evaluates ``predict_params`` (and ``predict_latency``) on unit-cube points and checks the budget.

    Args:
        space: The rate box.
        predict_params: ``rates -> parameter count``.
        budget: ``(min_params, max_params)``, both inclusive.
        latency: ``(predict_latency, max_latency_ms)``, or ``None`` without a latency budget.
    """

    def __init__(self, space: RateSpace, predict_params: PredictParams, budget: tuple[int, int],
                 latency: tuple[PredictLatency, float] | None = None) -> None:
        self.space, self.predict_params, self.budget, self.latency = space, predict_params, budget, latency

    def params(self, x: Tensor) -> int:
        """Predicted parameter count at the unit-cube point ``x``."""
        return int(self.predict_params(self.space.from_unit(x)))

    def latency_ms(self, x: Tensor) -> float | None:
        """Predicted latency at ``x``; ``None`` without a latency budget."""
        return None if self.latency is None else float(self.latency[0](self.space.from_unit(x)))

    def feasible(self, x: Tensor, params: int) -> bool:
        """Whether ``x`` (whose parameter count is ``params``) meets every budget."""
        lo, hi = self.budget
        if not lo <= params <= hi:
            return False
        return self.latency is None or self.latency_ms(x) <= self.latency[1]  # type: ignore[operator]

    def check(self, points: Tensor) -> tuple[Tensor, list[int]]:
        """points ``[n, d]`` -> (feasible mask ``[n]``, params per point)."""
        params = [self.params(x) for x in points]
        mask = torch.tensor([self.feasible(x, p) for x, p in zip(points, params)], dtype=torch.bool)
        return mask, params

    def unreachable(self, drawn: int, found: int, seen: list[int]) -> ValueError:
        """The error for a budget that ``drawn`` samples (``found`` feasible) hardly meet."""
        at_lower = self.params(torch.zeros(self.space.dim, dtype=torch.float64))
        at_upper = self.params(torch.ones(self.space.dim, dtype=torch.float64))
        latency = ""
        if self.latency is not None:
            fastest = self.latency_ms(torch.ones(self.space.dim, dtype=torch.float64))
            slowest = self.latency_ms(torch.zeros(self.space.dim, dtype=torch.float64))
            latency = (f" with max_latency_ms {self.latency[1]:.3g} (predicted {fastest:.3g} ms at the upper "
                       f"bounds, {slowest:.3g} ms at the lower bounds)")
        return ValueError(
            f"budget {list(self.budget)}{latency} is (almost) unreachable: {found} feasible of {drawn} "
            f"samples; predicted params over the samples span [{min(seen)}, {max(seen)}] "
            f"(all rates at their lower bounds: {at_lower}, at their upper bounds: {at_upper}). "
            "Widen the budget band or the rate bounds."
        )


def feasible_sequence(
    feasibility: Feasibility, count: int, draw: Callable[[int], Tensor]
) -> list[tuple[Tensor, int]]:
    """First ``count`` feasible ``(point, params)`` of the sequence produced by ``draw(n)``."""
    found: list[tuple[Tensor, int]] = []
    seen: list[int] = []
    drawn = 0
    while len(found) < count:
        if drawn >= MAX_FEASIBILITY_DRAWS or (drawn >= FIRST_CHECK_DRAWS and not found):
            raise feasibility.unreachable(drawn, len(found), seen)
        points = draw(DRAW_CHUNK)
        drawn += DRAW_CHUNK
        mask, params = feasibility.check(points)
        seen.extend((min(params), max(params)))
        found.extend((points[i], params[i]) for i in range(len(points)) if mask[i])
    return found[:count]


def sobol_draw(dim: int, seed: int) -> Callable[[int], Tensor]:
    """``n -> [n, dim]`` successive points of a scrambled Sobol sequence seeded with ``seed``."""
    engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed)
    return lambda n: engine.draw(n, dtype=torch.float64)


def uniform_draw(dim: int, seed: int) -> Callable[[int], Tensor]:
    """``n -> [n, dim]`` uniform points from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return lambda n: torch.rand(n, dim, generator=generator, dtype=torch.float64)
