"""One Bayesian-optimisation step of :func:`compresskit.search.search_rates`: the next feasible point.

Contract: :func:`propose` takes the evaluated unit-cube points and their objective values (minimised)
and returns a point that :class:`~compresskit.search._space.Feasibility` accepts, with its parameter
count. It fits a ``SingleTaskGP`` (outcomes standardised) to the negated objective, scores log expected
improvement (Ament et al., NeurIPS 2023) on a pool of feasible points (a scrambled Sobol pool plus
Gaussian perturbations around the three best observations), refines the best pool points with
``optimize_acqf`` and repairs a refined point that left the budget by bisection toward its feasible
start. Every random choice derives from ``seed`` and the number of observations, under a forked torch
RNG, so a resumed search proposes what the uninterrupted one would.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from compresskit.search._space import Feasibility

__all__ = ["iteration_seed", "propose", "repair"]

NUM_RESTARTS = 4
LOCAL_SCALES = (0.02, 0.05, 0.1, 0.2)  # unit-cube standard deviations of the local pool
REPAIR_STEPS = 12
SCORE_CHUNK = 1024


def iteration_seed(seed: int, completed: int) -> int:
    """The seed of the proposal after ``completed`` trials of a search seeded with ``seed``."""
    return (seed * 1_000_003 + completed * 7919 + 17) % (2**31 - 1)


def propose(feasibility: Feasibility, train_x: Tensor, train_objective: Tensor, seed: int,
            raw_samples: int) -> tuple[Tensor, int]:
    """Next feasible unit-cube point maximising LogEI (objective minimised), and its parameter count.

    Args:
        feasibility: The budget check.
        train_x: Evaluated points, float64 ``[n, d]`` in the unit cube.
        train_objective: Their objective values, float64 ``[n]``.
        seed: The search's seed.
        raw_samples: Size of the global Sobol pool.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny GP: intra-op threading only adds overhead (4-6x measured)
    try:
        with torch.random.fork_rng(), warnings.catch_warnings():
            _ignore_fit_warnings()
            step_seed = iteration_seed(seed, train_x.shape[0])
            acquisition = _log_expected_improvement(train_x, train_objective, step_seed)
            pool, pool_params = _feasible_pool(feasibility, train_x, train_objective, step_seed, raw_samples)
            return _best_candidate(feasibility, acquisition, pool, pool_params)
    finally:
        torch.set_num_threads(threads)


def _ignore_fit_warnings() -> None:
    from botorch.exceptions.warnings import InputDataWarning, OptimizationWarning
    from gpytorch.utils.warnings import NumericalWarning

    for category in (InputDataWarning, OptimizationWarning, NumericalWarning):
        warnings.simplefilter("ignore", category)


def _log_expected_improvement(train_x: Tensor, train_objective: Tensor, step_seed: int) -> Any:
    """LogEI of a GP fitted to ``-train_objective`` (BoTorch maximises), the fit seeded with ``step_seed``."""
    from botorch.acquisition import LogExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    torch.manual_seed(step_seed)  # after the imports: importing must not shift the seeded stream
    train_y = -train_objective.unsqueeze(-1)  # [n] -> [n, 1]
    model = SingleTaskGP(train_x, train_y, outcome_transform=Standardize(m=1))
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return LogExpectedImprovement(model, best_f=train_y.max())


def _feasible_pool(feasibility: Feasibility, train_x: Tensor, train_objective: Tensor, step_seed: int,
                   raw_samples: int) -> tuple[Tensor, list[int]]:
    """Feasible points of a global Sobol pool plus local Gaussian pools around the best observations."""
    dim = train_x.shape[-1]
    generator = torch.Generator().manual_seed(step_seed)
    pool = [torch.quasirandom.SobolEngine(dim, scramble=True, seed=step_seed).draw(raw_samples, dtype=torch.float64)]
    best_observed = train_x[torch.argsort(train_objective)[:3]]
    per_centre = max(8, raw_samples // (len(LOCAL_SCALES) * 3))
    for centre in best_observed:
        for scale in LOCAL_SCALES:
            noise = torch.randn(per_centre, dim, generator=generator, dtype=torch.float64)
            pool.append((centre + scale * noise).clamp(0.0, 1.0))
    candidates = torch.cat(pool)
    mask, params = feasibility.check(candidates)
    feasible, feasible_params = candidates[mask], [p for p, ok in zip(params, mask) if ok]
    if len(feasible) == 0:  # should not happen: local points near feasible observations
        feasible, feasible_params = train_x[:1], [feasibility.params(train_x[0])]
    return feasible, feasible_params


def _best_candidate(feasibility: Feasibility, acquisition: Any, pool: Tensor,
                    pool_params: list[int]) -> tuple[Tensor, int]:
    """The best-LogEI point among the pool and the repaired gradient refinements of its best points."""
    from botorch.optim import optimize_acqf

    with torch.no_grad():
        scores = torch.cat([acquisition(chunk.unsqueeze(1)) for chunk in pool.split(SCORE_CHUNK)])
    order = torch.argsort(scores, descending=True)[:NUM_RESTARTS]
    best_x, best_params, best_score = pool[order[0]], pool_params[order[0]], scores[order[0]]
    dim = pool.shape[-1]
    unit_bounds = torch.stack([torch.zeros(dim), torch.ones(dim)]).to(torch.float64)
    starts = pool[order].unsqueeze(1)  # [k, d] -> [k, 1, d]
    refined, _ = optimize_acqf(
        acquisition, bounds=unit_bounds, q=1, num_restarts=len(order),
        batch_initial_conditions=starts, return_best_only=False,
        options={"maxiter": 50}, retry_on_optimization_warning=False,
    )
    for start, end in zip(starts[:, 0], refined.detach()[:, 0]):
        point, point_params = repair(feasibility, start, end)
        with torch.no_grad():
            score = acquisition(point.view(1, 1, -1))[0]
        if score > best_score:
            best_x, best_params, best_score = point, point_params, score
    return best_x, best_params


def repair(feasibility: Feasibility, start: Tensor, end: Tensor) -> tuple[Tensor, int]:
    """Farthest feasible point found by bisection on the segment [start (feasible), end]."""
    end_params = feasibility.params(end)
    if feasibility.feasible(end, end_params):
        return end, end_params
    good, bad = 0.0, 1.0
    good_params = feasibility.params(start)
    for _ in range(REPAIR_STEPS):
        middle = (good + bad) / 2
        point = start + middle * (end - start)
        middle_params = feasibility.params(point)
        if feasibility.feasible(point, middle_params):
            good, good_params = middle, middle_params
        else:
            bad = middle
    return start + good * (end - start), good_params
