"""Per-layer-group pruning-rate search under a parameter budget (and optionally a latency budget).

``search_rates`` is Bayesian optimisation with BoTorch: a ``SingleTaskGP``
(float64, rates mapped to the unit cube, outcomes standardised) fitted by
``fit_gpytorch_mll``, and the log expected improvement acquisition
(``LogExpectedImprovement``; Ament et al., "Unexpected Improvements to Expected
Improvement for Bayesian Optimization", NeurIPS 2023, a numerically robust form
of the EI of Jones, Schonlau & Welch, "Efficient Global Optimization of
Expensive Black-Box Functions", 1998). The objective is *minimised* (the GP
models its negation). ``random_search`` is the baseline with the same interface.

It replaces the search of B-FPGM (Kaparinos & Mezaris, WACVW 2025), which runs
UCB over all rates and adds a penalty when the measured sparsity misses the
target: here the exact parameter count of a candidate (``predict_params``, e.g.
``compresskit.pruning.budget.ParamPredictor``) is checked *before* evaluating it, so an
infeasible candidate is never trained or scored.

How feasibility is enforced by construction:
    * Initial points: a scrambled Sobol sequence filtered to feasible points (the
      first ``initial_points`` feasible ones, in sequence order).
    * Each BO step scores LogEI on a discrete pool of feasible points — a fresh
      scrambled Sobol pool of ``raw_samples`` points (global) plus Gaussian
      perturbations (unit-cube scales 0.02-0.2) around the three best observed
      points (local) — then refines the four best pool points with ``optimize_acqf``
      (L-BFGS-B on the unit cube, started at those points). A refined point that is
      infeasible is *repaired*: bisection on the segment from its (feasible) start
      toward it keeps the farthest feasible point found. The candidate is the
      best-LogEI point among the pool and the repaired points, all checked feasible.
      We prefer this to ``nonlinear_inequality_constraints`` because the parameter
      count is a black-box, piecewise-constant function (floor of rate x channels)
      with no useful gradient, and to ``optimize_acqf_discrete`` alone because a
      fixed pool is coarse in 6+ dimensions (the optimum usually lies on the
      budget boundary, which the repair step follows).

Caveats:
    * Determinism: every random choice derives from ``seed`` and the number of
      completed trials (the GP fit and acquisition optimisation run under a forked,
      re-seeded torch RNG), so a run resumed from ``history_path`` proposes exactly
      what the uninterrupted run would. Floating-point results can still differ
      across machines/BLAS builds.
    * A non-finite objective value raises ``ValueError`` (the history up to there
      is kept, so the search can resume after the cause is fixed).
    * Proposal overhead grows with the number of trials (exact GP, O(n^3)); it
      is recorded per trial as ``Trial.overhead_seconds``.

Layout: this module holds the public API, the trial loop and the resumable history;
:mod:`compresskit.search._space` the rate box, the argument checks and the budget feasibility;
:mod:`compresskit.search._proposal` one LogEI proposal (GP fit, candidate pool, refinement, repair).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from compresskit.search._proposal import propose
from compresskit.search._space import (
    Feasibility,
    PredictLatency,
    PredictParams,
    RateSpace,
    check_budget,
    check_int,
    check_latency,
    check_space,
    check_start,
    feasible_sequence,
    sobol_draw,
    uniform_draw,
)
from compresskit.utils.atomic import atomic_write_text

_LOG = logging.getLogger("compresskit.search")  # one INFO line per trial (format_trial); the pipeline forwards it

__all__ = ["SearchResult", "Trial", "format_trial", "random_search", "search_rates"]

Objective = Callable[[dict[str, float]], float]

HISTORY_FORMAT = "compresskit.search/1"


@dataclass(frozen=True)
class Trial:
    """One evaluated candidate.

    Attributes:
        rates: Pruning rate per layer group.
        predicted_params: ``predict_params(rates)`` (within the budget).
        objective: ``objective(rates)`` (lower is better).
        seconds: Wall time of the objective evaluation.
        kind: ``"start"`` (a given start point), ``"sobol"`` (initial design), ``"bo"`` (proposed by LogEI) or
            ``"random"``.
        overhead_seconds: Time spent choosing this candidate (GP fit, acquisition,
            feasibility checks), excluding the objective.
        predicted_latency_ms: ``predict_latency(rates)`` under a latency budget, else ``None``.
    """

    rates: dict[str, float]
    predicted_params: int
    objective: float
    seconds: float
    kind: str
    overhead_seconds: float = 0.0
    predicted_latency_ms: float | None = None


@dataclass
class SearchResult:
    """Outcome of a search: the best trial's rates and value, and every trial."""

    best_rates: dict[str, float]
    best_objective: float
    trials: list[Trial]
    budget: tuple[int, int] | None = None


# --------------------------------------------------------------------------- history


def _history_header(method: str, space: RateSpace, budget: tuple[int, int], seed: int, initial: int,
                    max_latency_ms: float | None = None, start: Sequence[dict[str, float]] = ()) -> dict[str, Any]:
    header = {
        "format": HISTORY_FORMAT,
        "method": method,
        "seed": seed,
        "bounds": {n: [float(a), float(b)] for n, a, b in zip(space.names, space.lower.tolist(), space.upper.tolist())},
        "budget": list(budget),
        "initial_points": initial,
    }
    if max_latency_ms is not None:  # absent without a latency budget: older histories resume unchanged
        header["max_latency_ms"] = max_latency_ms
    if start:  # likewise absent without start points
        header["start"] = [dict(rates) for rates in start]
    return header


def _load_history(path: str, header: dict[str, Any]) -> list[Trial]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    for key, value in header.items():
        if data.get(key) != value:
            raise ValueError(
                f"{path}: cannot resume, {key} is {data.get(key)!r} in the history but {value!r} now"
            )
    return [Trial(**trial) for trial in data["trials"]]


def _write_history(path: str, header: dict[str, Any], trials: list[Trial]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_text(path, json.dumps({**header, "trials": [asdict(t) for t in trials]}, indent=1))


# --------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class _Setup:
    """A search's checked arguments: what every trial needs."""

    method: str
    space: RateSpace
    feasibility: Feasibility
    initial: int
    total: int
    seed: int
    raw_samples: int
    header: dict[str, Any]
    start: tuple[dict[str, float], ...] = ()


def _setup(method: str, objective: Objective, bounds: Mapping[str, tuple[float, float]],
           predict_params: PredictParams, budget: tuple[int, int], iterations: int, initial_points: int | None,
           seed: int, raw_samples: int, latency: tuple[PredictLatency, float] | None,
           start: Sequence[Mapping[str, float]] = ()) -> _Setup:
    """Check every argument of a search (``ValueError`` showing the bad value) and derive its settings."""
    space = check_space(bounds)
    budget = check_budget(budget)
    iterations = check_int("iterations", iterations, 0)
    initial = check_int("initial_points", max(4, 2 * space.dim) if initial_points is None else initial_points, 2)
    seed = check_int("seed", seed, 0)
    raw_samples = check_int("raw_samples", raw_samples, 16)
    if not callable(objective) or not callable(predict_params):
        raise ValueError(f"objective and predict_params must be callables, got {objective!r}, {predict_params!r}")
    latency = check_latency(latency)
    start = check_start(space, start)
    header = _history_header(method, space, budget, seed, initial, None if latency is None else latency[1], start)
    return _Setup(method, space, Feasibility(space, predict_params, budget, latency), initial,
                  len(start) + initial + iterations, seed, raw_samples, header, start)


def _start_design(setup: _Setup) -> list[tuple[torch.Tensor, int]]:
    """The start points as ``(unit-cube point, params)``; ``ValueError`` for one outside the budget."""
    design = []
    for rates in setup.start:
        x = setup.space.to_unit(rates).clamp(0.0, 1.0)
        params = int(setup.feasibility.predict_params(dict(rates)))
        if not setup.feasibility.feasible(x, params):
            raise ValueError(f"start point {rates} is outside the budget {list(setup.feasibility.budget)}: "
                             f"{params:,} params predicted")
        design.append((x, params))
    return design


def _evaluate(objective: Objective, rates: dict[str, float]) -> tuple[float, float]:
    """``(objective(rates), seconds)``; ``ValueError`` unless the value is a finite number."""
    started = time.perf_counter()
    value = objective(dict(rates))
    seconds = time.perf_counter() - started
    try:
        value = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"objective must return a number, got {value!r} for rates {rates}") from error
    if not math.isfinite(value):
        raise ValueError(f"objective returned {value} for rates {rates}; the search needs finite values")
    return value, seconds


def _next_candidate(setup: _Setup, design: list[tuple[torch.Tensor, int]],
                    trials: list[Trial]) -> tuple[torch.Tensor, int, str]:
    """The next point to evaluate: from the initial design, else proposed by LogEI."""
    index = len(trials)
    if index < len(design):
        x, params = design[index]
        if index < len(setup.start):
            return x, params, "start"
        return x, params, "random" if setup.method == "random" else "sobol"
    train_x = torch.stack([setup.space.to_unit(t.rates) for t in trials])
    train_objective = torch.tensor([t.objective for t in trials], dtype=torch.float64)
    x, params = propose(setup.feasibility, train_x, train_objective, setup.seed, setup.raw_samples)
    return x, params, "bo"


def _run(setup: _Setup, objective: Objective, history_path: str | os.PathLike[str] | None,
         progress: bool) -> SearchResult:
    space, feasibility, total = setup.space, setup.feasibility, setup.total
    path = os.fspath(history_path) if history_path is not None else None
    trials = _load_history(path, setup.header) if path is not None else []
    design = _start_design(setup)
    if setup.method == "random":
        design += feasible_sequence(feasibility, total - len(design), uniform_draw(space.dim, setup.seed))
    else:
        design += feasible_sequence(feasibility, setup.initial, sobol_draw(space.dim, setup.seed))

    bar = tqdm(total=total, initial=min(len(trials), total), desc=f"{setup.method} search", disable=not progress,
               leave=False)
    while len(trials) < total:
        started = time.perf_counter()
        x, params, kind = _next_candidate(setup, design, trials)
        rates = dict(setup.start[len(trials)]) if kind == "start" else space.from_unit(x)  # start: exact rates
        overhead = time.perf_counter() - started
        assert feasibility.feasible(x, params), "internal: an infeasible candidate reached evaluation"
        value, seconds = _evaluate(objective, rates)
        trials.append(Trial(rates, params, value, seconds, kind, overhead, feasibility.latency_ms(x)))
        if path is not None:
            _write_history(path, setup.header, trials)
        _LOG.info(format_trial(trials, total))
        bar.update(1)
        bar.set_postfix(best=f"{min(t.objective for t in trials):.4g}", refresh=False)
    bar.close()

    best = min(trials, key=lambda t: t.objective)
    return SearchResult(dict(best.rates), best.objective, trials, feasibility.budget)


def format_trial(trials: Sequence[Trial], total: int) -> str:
    """One log line for the last of ``trials``: rates, predicted size, objective, best so far, time.

    Example:
        ``trial 3/10 (sobol): rates stem=0.12 layer1=0.40; 41,230 params; objective 0.8123 (best 0.7990);
        12.4 s + 0.3 s proposing``
    """
    trial = trials[-1]
    rates = " ".join(f"{name}={rate:.2f}" for name, rate in trial.rates.items())
    latency = "" if trial.predicted_latency_ms is None else f"; {trial.predicted_latency_ms:.3g} ms predicted"
    best = min(t.objective for t in trials)
    return (f"trial {len(trials)}/{total} ({trial.kind}): rates {rates}; {trial.predicted_params:,} params{latency}; "
            f"objective {trial.objective:.4g} (best {best:.4g}); {trial.seconds:.1f} s + "
            f"{trial.overhead_seconds:.1f} s proposing")


def search_rates(
    objective: Objective,
    bounds: Mapping[str, tuple[float, float]],
    predict_params: PredictParams,
    budget: tuple[int, int],
    iterations: int = 25,
    initial_points: int | None = None,
    seed: int = 0,
    history_path: str | os.PathLike[str] | None = None,
    raw_samples: int = 1024,
    progress: bool = True,
    latency: tuple[PredictLatency, float] | None = None,
    start: Sequence[Mapping[str, float]] = (),
) -> SearchResult:
    """Minimise ``objective(rates)`` over rates whose predicted size is within ``budget``.

    The ``start`` points and ``initial_points`` feasible scrambled-Sobol points are evaluated first, then
    ``iterations`` points proposed by LogEI on a GP (the module docstring says how candidates stay feasible).
    ``predict_params`` is called about ``2 * raw_samples`` times per iteration, so it should be cheap
    (microseconds, as ``ParamPredictor``); ``objective`` is called exactly ``len(start) + initial_points +
    iterations`` times in total, never on an infeasible candidate.

    Args:
        objective: ``rates -> value`` to minimise (e.g. validation loss after a
            short fine-tune of the model pruned at ``rates``).
        bounds: ``{layer_group: (lo, hi)}`` with ``0 <= lo < hi < 1``.
        predict_params: ``rates -> parameter count`` of the pruned model.
        budget: ``(min_params, max_params)``, both inclusive.
        iterations: Number of BO proposals after the initial design.
        initial_points: Size of the initial Sobol design; default ``max(4, 2 * d)``.
        seed: Seed of every random choice (Sobol scrambling, pools, GP fit restarts).
        history_path: JSON file rewritten atomically after each trial; existing
            trials are loaded and not re-evaluated (the settings must match).
        raw_samples: Size of the global Sobol candidate pool per iteration.
        progress: Show a tqdm bar.
        latency: ``(predict_latency, max_latency_ms)``: a candidate is also feasible only when
            ``predict_latency(rates) <= max_latency_ms`` (e.g. ``compresskit.deploy.latency.LatencyModel``;
            ``benchmarks/bench_latency.py`` reports its cost per call); both budgets hold for every
            evaluated candidate.
        start: Rate vectors evaluated first (``kind="start"``; e.g. ``allocate_rates``); in the history's header.

    Returns:
        A :class:`SearchResult` with every :class:`Trial` in evaluation order.

    Raises:
        ValueError: Bad bounds/budget/counts/start points, an unreachable budget (the message gives the
            achievable parameter range), a history written with other settings, or a non-finite objective value.

    Example:
        >>> predictor = ParamPredictor(model, groups)
        >>> result = search_rates(
        ...     lambda rates: short_finetune_val_loss(rates),
        ...     bounds={"backbone": (0.0, 0.7), "neck": (0.0, 0.7)},
        ...     predict_params=predictor, budget=(40_000, 46_000),
        ...     iterations=25, history_path="run/search.json")
        >>> result.best_rates
    """
    setup = _setup("bo", objective, bounds, predict_params, budget, iterations, initial_points, seed,
                   raw_samples, latency, start)
    return _run(setup, objective, history_path, progress)


def random_search(
    objective: Objective,
    bounds: Mapping[str, tuple[float, float]],
    predict_params: PredictParams,
    budget: tuple[int, int],
    iterations: int = 25,
    initial_points: int | None = None,
    seed: int = 0,
    history_path: str | os.PathLike[str] | None = None,
    raw_samples: int = 1024,
    progress: bool = True,
    latency: tuple[PredictLatency, float] | None = None,
) -> SearchResult:
    """Baseline: ``initial_points + iterations`` feasible uniform random samples.

    Same interface and budget guarantees as :func:`search_rates` (``raw_samples``
    is accepted for signature compatibility and unused); samples are drawn
    uniformly in the rate box by a generator seeded with ``seed`` and rejected
    when outside the budget, so the evaluated points are uniform over the
    feasible set.
    """
    setup = _setup("random", objective, bounds, predict_params, budget, iterations, initial_points, seed,
                   raw_samples, latency)
    return _run(setup, objective, history_path, progress)
