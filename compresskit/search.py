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
``compresskit.budget.ParamPredictor``) is checked *before* evaluating it, so an
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
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._atomic import atomic_write_text

_LOG = logging.getLogger(__name__)  # one INFO line per trial (format_trial); the pipeline forwards it

__all__ = ["SearchResult", "Trial", "format_trial", "plot_search", "random_search", "search_rates"]

Objective = Callable[[dict[str, float]], float]
PredictParams = Callable[[dict[str, float]], int]
PredictLatency = Callable[[dict[str, float]], float]

HISTORY_FORMAT = "compresskit.search/1"
_MAX_FEASIBILITY_DRAWS = 1 << 16
_FIRST_CHECK_DRAWS = 4096
_NUM_RESTARTS = 4
_LOCAL_SCALES = (0.02, 0.05, 0.1, 0.2)
_REPAIR_STEPS = 12
_DRAW_CHUNK = 1024


@dataclass(frozen=True)
class Trial:
    """One evaluated candidate.

    Attributes:
        rates: Pruning rate per layer group.
        predicted_params: ``predict_params(rates)`` (within the budget).
        objective: ``objective(rates)`` (lower is better).
        seconds: Wall time of the objective evaluation.
        kind: ``"sobol"`` (initial design), ``"bo"`` (proposed by LogEI) or ``"random"``.
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

    def overhead_per_iteration(self, kind: str = "bo") -> float:
        """Median proposal overhead in seconds over trials of ``kind`` (nan if none)."""
        values = sorted(t.overhead_seconds for t in self.trials if t.kind == kind)
        if not values:
            return float("nan")
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class _Space:
    names: tuple[str, ...]
    lower: Tensor  # [d] float64
    upper: Tensor

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_unit(self, rates: Mapping[str, float]) -> Tensor:
        values = torch.tensor([float(rates[name]) for name in self.names], dtype=torch.float64)
        return (values - self.lower) / (self.upper - self.lower)

    def from_unit(self, x: Tensor) -> dict[str, float]:
        values = self.lower + x.to(torch.float64).clamp(0.0, 1.0) * (self.upper - self.lower)
        return {name: float(v) for name, v in zip(self.names, values.tolist())}


def _check_space(bounds: Mapping[str, tuple[float, float]]) -> _Space:
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
    return _Space(tuple(bounds), torch.tensor(lower, dtype=torch.float64), torch.tensor(upper, dtype=torch.float64))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_budget(budget: tuple[int, int]) -> tuple[int, int]:
    try:
        lo, hi = budget
    except (TypeError, ValueError) as error:
        raise ValueError(f"budget must be a (min_params, max_params) pair, got {budget!r}") from error
    if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 <= lo <= hi):
        raise ValueError(f"budget must satisfy 0 <= min_params <= max_params, got {budget!r}")
    return int(lo), int(hi)


# --------------------------------------------------------------------------- feasibility


class _Feasibility:
    """Evaluates ``predict_params`` (and ``predict_latency``) on unit-cube points and checks the budget."""

    def __init__(self, space: _Space, predict_params: PredictParams, budget: tuple[int, int],
                 latency: tuple[PredictLatency, float] | None = None) -> None:
        self.space, self.predict_params, self.budget, self.latency = space, predict_params, budget, latency

    def params(self, x: Tensor) -> int:
        return int(self.predict_params(self.space.from_unit(x)))

    def latency_ms(self, x: Tensor) -> float | None:
        return None if self.latency is None else float(self.latency[0](self.space.from_unit(x)))

    def feasible(self, x: Tensor, params: int) -> bool:
        lo, hi = self.budget
        if not lo <= params <= hi:
            return False
        return self.latency is None or self.latency_ms(x) <= self.latency[1]  # type: ignore[operator]

    def check(self, points: Tensor) -> tuple[Tensor, list[int]]:
        """points [n, d] -> (feasible mask [n], params per point)."""
        params = [self.params(x) for x in points]
        mask = torch.tensor([self.feasible(x, p) for x, p in zip(points, params)], dtype=torch.bool)
        return mask, params

    def unreachable(self, drawn: int, found: int, seen: list[int]) -> ValueError:
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


def _feasible_sequence(
    feasibility: _Feasibility, count: int, draw: Callable[[int], Tensor]
) -> list[tuple[Tensor, int]]:
    """First ``count`` feasible points of the sequence produced by ``draw(n)``."""
    found: list[tuple[Tensor, int]] = []
    seen: list[int] = []
    drawn = 0
    chunk = _DRAW_CHUNK  # fixed, so the sequence does not depend on `count` (resume with more trials)
    while len(found) < count:
        if drawn >= _MAX_FEASIBILITY_DRAWS or (drawn >= _FIRST_CHECK_DRAWS and not found):
            raise feasibility.unreachable(drawn, len(found), seen)
        points = draw(chunk)
        drawn += chunk
        mask, params = feasibility.check(points)
        seen.extend((min(params), max(params)))
        found.extend((points[i], params[i]) for i in range(len(points)) if mask[i])
    return found[:count]


def _sobol_draw(dim: int, seed: int) -> Callable[[int], Tensor]:
    engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed)
    return lambda n: engine.draw(n, dtype=torch.float64)


def _uniform_draw(dim: int, seed: int) -> Callable[[int], Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return lambda n: torch.rand(n, dim, generator=generator, dtype=torch.float64)


# --------------------------------------------------------------------------- BO proposal


def _iteration_seed(seed: int, completed: int) -> int:
    return (seed * 1_000_003 + completed * 7919 + 17) % (2**31 - 1)


def _propose(
    feasibility: _Feasibility,
    train_x: Tensor,
    train_objective: Tensor,
    seed: int,
    raw_samples: int,
) -> tuple[Tensor, int]:
    """Next feasible unit-cube point maximising LogEI (objective minimised)."""
    dim = train_x.shape[-1]
    iteration_seed = _iteration_seed(seed, train_x.shape[0])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny GP: intra-op threading only adds overhead (4-6x measured)
    try:
        return _propose_single_thread(feasibility, train_x, train_objective, iteration_seed, dim, raw_samples)
    finally:
        torch.set_num_threads(threads)


def _propose_single_thread(
    feasibility: _Feasibility, train_x: Tensor, train_objective: Tensor, iteration_seed: int, dim: int,
    raw_samples: int,
) -> tuple[Tensor, int]:
    from botorch.acquisition import LogExpectedImprovement
    from botorch.exceptions.warnings import InputDataWarning, OptimizationWarning
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim import optimize_acqf
    from gpytorch.mlls import ExactMarginalLogLikelihood
    from gpytorch.utils.warnings import NumericalWarning

    unit_bounds = torch.stack([torch.zeros(dim), torch.ones(dim)]).to(torch.float64)
    with torch.random.fork_rng(), warnings.catch_warnings():
        for category in (InputDataWarning, OptimizationWarning, NumericalWarning):
            warnings.simplefilter("ignore", category)
        torch.manual_seed(iteration_seed)
        train_y = -train_objective.unsqueeze(-1)  # BoTorch maximises
        model = SingleTaskGP(train_x, train_y, outcome_transform=Standardize(m=1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        acquisition = LogExpectedImprovement(model, best_f=train_y.max())

        # Candidate pool: global Sobol + local Gaussian around the best observed points.
        generator = torch.Generator().manual_seed(iteration_seed)
        pool = [torch.quasirandom.SobolEngine(dim, scramble=True, seed=iteration_seed).draw(raw_samples, dtype=torch.float64)]
        best_observed = train_x[torch.argsort(train_objective)[:3]]
        per_centre = max(8, raw_samples // (len(_LOCAL_SCALES) * 3))
        for centre in best_observed:
            for scale in _LOCAL_SCALES:
                noise = torch.randn(per_centre, dim, generator=generator, dtype=torch.float64)
                pool.append((centre + scale * noise).clamp(0.0, 1.0))
        candidates = torch.cat(pool)
        mask, params = feasibility.check(candidates)
        feasible, feasible_params = candidates[mask], [p for p, ok in zip(params, mask) if ok]
        if len(feasible) == 0:  # should not happen: local points near feasible observations
            feasible, feasible_params = train_x[:1], [feasibility.params(train_x[0])]
        with torch.no_grad():
            scores = torch.cat([acquisition(chunk.unsqueeze(1)) for chunk in feasible.split(1024)])
        order = torch.argsort(scores, descending=True)[:_NUM_RESTARTS]
        best_x, best_params, best_score = feasible[order[0]], feasible_params[order[0]], scores[order[0]]

        # Gradient refinement from the best pool points, then repair into the budget.
        starts = feasible[order].unsqueeze(1)  # [k, 1, d]
        refined, _ = optimize_acqf(
            acquisition, bounds=unit_bounds, q=1, num_restarts=len(order),
            batch_initial_conditions=starts, return_best_only=False,
            options={"maxiter": 50}, retry_on_optimization_warning=False,
        )
        for start, end in zip(starts[:, 0], refined.detach()[:, 0]):
            point, point_params = _repair(feasibility, start, end)
            with torch.no_grad():
                score = acquisition(point.view(1, 1, -1))[0]
            if score > best_score:
                best_x, best_params, best_score = point, point_params, score
    return best_x, best_params


def _repair(feasibility: _Feasibility, start: Tensor, end: Tensor) -> tuple[Tensor, int]:
    """Farthest feasible point found by bisection on [start (feasible), end]."""
    end_params = feasibility.params(end)
    if feasibility.feasible(end, end_params):
        return end, end_params
    good, bad = 0.0, 1.0
    good_params = feasibility.params(start)
    for _ in range(_REPAIR_STEPS):
        middle = (good + bad) / 2
        point = start + middle * (end - start)
        middle_params = feasibility.params(point)
        if feasibility.feasible(point, middle_params):
            good, good_params = middle, middle_params
        else:
            bad = middle
    return start + good * (end - start), good_params


# --------------------------------------------------------------------------- history


def _history_header(method: str, space: _Space, budget: tuple[int, int], seed: int, initial: int,
                    max_latency_ms: float | None = None) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- drivers


def _run(
    method: str,
    objective: Objective,
    bounds: Mapping[str, tuple[float, float]],
    predict_params: PredictParams,
    budget: tuple[int, int],
    iterations: int,
    initial_points: int | None,
    seed: int,
    history_path: str | os.PathLike[str] | None,
    raw_samples: int,
    progress: bool,
    latency: tuple[PredictLatency, float] | None = None,
) -> SearchResult:
    space = _check_space(bounds)
    budget = _check_budget(budget)
    iterations = _check_int("iterations", iterations, 0)
    initial = _check_int("initial_points", max(4, 2 * space.dim) if initial_points is None else initial_points, 2)
    seed = _check_int("seed", seed, 0)
    raw_samples = _check_int("raw_samples", raw_samples, 16)
    if not callable(objective) or not callable(predict_params):
        raise ValueError(f"objective and predict_params must be callables, got {objective!r}, {predict_params!r}")
    latency = _check_latency(latency)
    feasibility = _Feasibility(space, predict_params, budget, latency)
    total = initial + iterations
    header = _history_header(method, space, budget, seed, initial, None if latency is None else latency[1])
    path = os.fspath(history_path) if history_path is not None else None
    trials = _load_history(path, header) if path is not None else []

    if method == "random":
        design = _feasible_sequence(feasibility, total, _uniform_draw(space.dim, seed))
    else:
        design = _feasible_sequence(feasibility, initial, _sobol_draw(space.dim, seed))

    bar = tqdm(total=total, initial=min(len(trials), total), desc=f"{method} search", disable=not progress, leave=False)
    while len(trials) < total:
        index = len(trials)
        started = time.perf_counter()
        if index < len(design):
            x, params = design[index]
            kind = "random" if method == "random" else "sobol"
        else:
            train_x = torch.stack([space.to_unit(t.rates) for t in trials])
            train_objective = torch.tensor([t.objective for t in trials], dtype=torch.float64)
            x, params = _propose(feasibility, train_x, train_objective, seed, raw_samples)
            kind = "bo"
        rates = space.from_unit(x)
        overhead = time.perf_counter() - started
        assert feasibility.feasible(x, params), "internal: an infeasible candidate reached evaluation"
        started = time.perf_counter()
        value = objective(dict(rates))
        seconds = time.perf_counter() - started
        try:
            value = float(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"objective must return a number, got {value!r} for rates {rates}") from error
        if not math.isfinite(value):
            raise ValueError(f"objective returned {value} for rates {rates}; the search needs finite values")
        trials.append(Trial(rates, params, value, seconds, kind, overhead, feasibility.latency_ms(x)))
        if path is not None:
            _write_history(path, header, trials)
        _LOG.info(format_trial(trials, total))
        bar.update(1)
        bar.set_postfix(best=f"{min(t.objective for t in trials):.4g}", refresh=False)
    bar.close()

    best = min(trials, key=lambda t: t.objective)
    return SearchResult(dict(best.rates), best.objective, trials, budget)


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


def _check_latency(latency: Any) -> tuple[PredictLatency, float] | None:
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
) -> SearchResult:
    """Minimise ``objective(rates)`` over rates whose predicted size is within ``budget``.

    ``initial_points`` feasible scrambled-Sobol points are evaluated first, then
    ``iterations`` points proposed by LogEI on a GP (see the module docstring for
    how candidates stay feasible). ``predict_params`` is called many times per
    iteration (about ``2 * raw_samples``), so it should be cheap (microseconds, as
    ``ParamPredictor``); ``objective`` is called exactly ``initial_points +
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
            ``predict_latency(rates) <= max_latency_ms`` (e.g. ``compresskit.latency.LatencyModel``;
            ``benchmarks/bench_latency.py`` reports its cost per call); both budgets hold for every
            evaluated candidate.

    Returns:
        A :class:`SearchResult` with every :class:`Trial` in evaluation order.

    Raises:
        ValueError: Bad bounds/budget/counts, an unreachable budget (the message
            gives the achievable parameter range), a history written with other
            settings, or a non-finite objective value.

    Example:
        >>> predictor = ParamPredictor(model, groups)
        >>> result = search_rates(
        ...     lambda rates: short_finetune_val_loss(rates),
        ...     bounds={"backbone": (0.0, 0.7), "neck": (0.0, 0.7)},
        ...     predict_params=predictor, budget=(40_000, 46_000),
        ...     iterations=25, history_path="run/search.json")
        >>> result.best_rates
    """
    return _run("bo", objective, bounds, predict_params, budget, iterations, initial_points,
                seed, history_path, raw_samples, progress, latency)


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
    return _run("random", objective, bounds, predict_params, budget, iterations, initial_points,
                seed, history_path, raw_samples, progress, latency)


# --------------------------------------------------------------------------- plotting


def plot_search(result: SearchResult, path: str | os.PathLike[str]) -> None:
    """Save a figure: objective per trial with best-so-far, and predicted params.

    Uses matplotlib's object API with the Agg canvas (no global backend change).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not result.trials:
        raise ValueError("result has no trials to plot")
    figure = Figure(figsize=(8, 6), constrained_layout=True)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True)
    steps = list(range(1, len(result.trials) + 1))
    values = [t.objective for t in result.trials]
    best_so_far = [min(values[: i + 1]) for i in range(len(values))]
    for kind, marker in (("sobol", "s"), ("bo", "o"), ("random", "^")):
        xs = [s for s, t in zip(steps, result.trials) if t.kind == kind]
        if xs:
            top.scatter(xs, [values[s - 1] for s in xs], marker=marker, label=kind, s=18)
    top.step(steps, best_so_far, where="post", color="black", label="best so far")
    top.set_ylabel("objective (lower is better)")
    top.legend(loc="upper right")
    bottom.plot(steps, [t.predicted_params for t in result.trials], "o-", markersize=3)
    if result.budget is not None:
        bottom.axhspan(result.budget[0], result.budget[1], color="green", alpha=0.15, label="budget")
        bottom.legend(loc="upper right")
    bottom.set_ylabel("predicted params")
    bottom.set_xlabel("trial")
    figure.savefig(os.fspath(path), dpi=100)
