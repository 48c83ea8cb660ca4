"""The joint check of a latency budget: do some rates inside the layer-group bounds meet the latency limit
*and* the parameter band of ``search.budget``?

:func:`check_joint` draws 4,096 uniform rate vectors, then walks greedily towards the fastest rates inside the
parameter band (:func:`fastest_in_band`): uniform samples rarely reach the corners where a tight budget is met.
Both read a latency model through two calls only -- ``predictor(rates)`` (parameters) and ``predict(rates)``
(milliseconds) -- so they are tested on small fakes; the model is :class:`compresskit.deploy.latency.LatencyModel`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["LatencyBudgetError", "check_joint", "fastest_in_band"]


class LatencyBudgetError(ValueError):
    """A latency budget that no rates within the bounds can meet; the message names the budget and the
    reachable range (a run reports it as a recipe error)."""


def check_joint(recipe: Any, latency: Any, bounds: Mapping[str, tuple[float, float]], limit: float,
                description: str, reachable: tuple[float, float], where: str) -> None:
    """Return when some rates in ``bounds`` are predicted inside the parameter band and under ``limit`` ms.

    Raises:
        LatencyBudgetError: none found; the message names the band, the predicted range inside it, what
            the bounds reach and what to change.
    """
    budget = recipe.search.budget
    names = list(bounds)
    generator = np.random.default_rng(recipe.seed)
    low = np.array([bounds[n][0] for n in names])
    high = np.array([bounds[n][1] for n in names])
    in_band = []
    for point in generator.uniform(low, high, size=(4096, len(names))):
        rates = dict(zip(names, point.tolist()))
        if budget.min_params <= latency.predictor(rates) <= budget.max_params:
            predicted = latency.predict(rates)
            if predicted <= limit:
                return
            in_band.append(predicted)
    fastest = fastest_in_band(latency, names, low, high, (budget.min_params, budget.max_params), limit)
    if fastest is not None and fastest <= limit:
        return
    if fastest is not None:
        in_band.append(fastest)
    within = (f"rates inside the parameter band predict {min(in_band):.2f} to {max(in_band):.2f} ms"
              if in_band else "no sampled rates fall inside the parameter band")
    raise LatencyBudgetError(f"{recipe.source}: search.budget {description} cannot be met together with "
                             f"[{budget.min_params}, {budget.max_params}] parameters: {within}; the bounds reach "
                             f"{reachable[0]:.2f} to {reachable[1]:.2f} ms ({where}); lower "
                             "search.budget.min_params or raise the latency limit")


def fastest_in_band(latency: Any, names: Sequence[str], low: np.ndarray, high: np.ndarray,
                    band: tuple[int, int], limit: float, steps: int = 32) -> float | None:
    """The smallest predicted latency a greedy walk finds inside the parameter ``band`` (``None``: the walk
    never entered it), stopping at the first point under ``limit``.

    Uniform samples rarely reach the corners where a tight latency budget is met (a few layer groups pruned
    hard, the rest lightly), so this walks there: from the lower bounds (most parameters) it raises the rate
    of the group that saves the most predicted milliseconds per parameter removed, each group by the
    smallest multiple of ``1/steps`` of its range that changes the model (channel counts are whole, and
    rounded to ``channel_multiple``), until the parameters fall below the band."""
    rates = dict(zip(names, low.tolist()))
    top = dict(zip(names, high.tolist()))
    step = dict(zip(names, ((high - low) / steps).tolist()))
    params, milliseconds = latency.predictor(rates), latency.predict(rates)
    best = None
    while params >= band[0]:
        if params <= band[1]:
            best = milliseconds if best is None else min(best, milliseconds)
            if best <= limit:
                return best
        choice = None
        for name in names:
            trial = dict(rates)
            while trial[name] < top[name]:  # the next rate of this group that removes a channel
                trial[name] = min(trial[name] + step[name], top[name])
                trial_params = latency.predictor(trial)
                if trial_params < params:
                    gain = (milliseconds - latency.predict(trial)) / (params - trial_params)
                    if choice is None or gain > choice[0]:
                        choice = (gain, trial, trial_params)
                    break
        if choice is None:  # no group can remove another channel
            break
        _, rates, params = choice
        milliseconds = latency.predict(rates)
    return best
