"""BO (LogEI) vs random search on a synthetic 6-D rate-search problem with a known optimum.

The objective mimics "validation loss after pruning": a convex quadratic bowl
(per-group sensitivity plus pairwise interactions) whose unconstrained minimum
prunes little; the parameter count is a weighted sum of kept fractions
``sum_i n_i * (1 - r_i)`` (EResFD-like group sizes, 92k params) and the budget band
forces ~50 % pruning, so the optimum lies on the budget boundary — the usual case.
The constrained optimum is found with SLSQP (convex QP, so global).

Both methods get the same number of evaluations and the same seeds.

Run:
    .venv/bin/python benchmarks/bench_search.py            # 5 seeds, 12 + 25 evaluations
    .venv/bin/python benchmarks/bench_search.py --seeds 2 --iterations 10   # quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.optimize import minimize

from compresskit.search.bayesian import random_search, search_rates

NAMES = ["stem", "stage1", "stage2", "stage3", "neck", "ssh"]
GROUP_PARAMS = np.array([4_000, 12_000, 20_000, 30_000, 18_000, 8_000], dtype=float)
CENTRE = np.array([0.05, 0.25, 0.4, 0.55, 0.3, 0.1])  # unconstrained best rates
SENSITIVITY = np.array([3.0, 1.5, 1.0, 0.6, 1.2, 2.5])
BOUNDS = {name: (0.0, 0.9) for name in NAMES}
BUDGET = (45_000, 47_000)

# PSD Hessian: diagonal sensitivities plus a few interaction terms
HESSIAN = np.diag(SENSITIVITY)
for i, j, value in ((0, 1, 0.4), (2, 3, 0.3), (3, 4, -0.25), (1, 5, 0.2)):
    HESSIAN[i, j] = HESSIAN[j, i] = value
assert np.all(np.linalg.eigvalsh(HESSIAN) > 0)


def objective_vector(rates: np.ndarray) -> float:
    delta = rates - CENTRE
    return float(delta @ HESSIAN @ delta)


def objective(rates: dict[str, float]) -> float:
    return objective_vector(np.array([rates[name] for name in NAMES]))


def predict_params(rates: dict[str, float]) -> int:
    kept = 1.0 - np.array([rates[name] for name in NAMES])
    return int(GROUP_PARAMS @ kept)


def known_optimum() -> float:
    constraints = [
        {"type": "ineq", "fun": lambda r: GROUP_PARAMS @ (1 - r) - BUDGET[0]},
        {"type": "ineq", "fun": lambda r: BUDGET[1] - GROUP_PARAMS @ (1 - r)},
    ]
    best = float("inf")
    rng = np.random.default_rng(0)
    for _ in range(20):
        result = minimize(objective_vector, rng.uniform(0, 0.9, 6), method="SLSQP",
                          bounds=[(0.0, 0.9)] * 6, constraints=constraints, options={"ftol": 1e-12})
        if result.success:
            best = min(best, result.fun)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--initial-points", type=int, default=12)
    args = parser.parse_args()

    optimum = known_optimum()
    print(f"known constrained optimum: {optimum:.6f}; evaluations per run: "
          f"{args.initial_points + args.iterations}; seeds 0..{args.seeds - 1}")
    rows, overheads = [], []
    for seed in range(args.seeds):
        started = time.perf_counter()
        bo = search_rates(objective, BOUNDS, predict_params, BUDGET, iterations=args.iterations,
                          initial_points=args.initial_points, seed=seed, progress=False)
        bo_seconds = time.perf_counter() - started
        rs = random_search(objective, BOUNDS, predict_params, BUDGET, iterations=args.iterations,
                           initial_points=args.initial_points, seed=seed, progress=False)
        bo_overheads = [t.overhead_seconds for t in bo.trials if t.kind == "bo"]
        overheads.extend(bo_overheads[1:])  # the first includes importing botorch
        rows.append((seed, bo.best_objective - optimum, rs.best_objective - optimum, bo_seconds,
                     max(bo_overheads)))
        assert all(BUDGET[0] <= t.predicted_params <= BUDGET[1] for t in bo.trials + rs.trials)
        print(f"seed {seed}: regret BO {rows[-1][1]:.5f}  random {rows[-1][2]:.5f}  "
              f"(BO run {bo_seconds:.1f} s, max overhead/iter {rows[-1][4]:.2f} s)")

    print("\n| seed | BO regret | random regret |\n|---|---|---|")
    for seed, bo_regret, rs_regret, _, _ in rows:
        print(f"| {seed} | {bo_regret:.5f} | {rs_regret:.5f} |")
    print(f"| **median** | **{statistics.median(r[1] for r in rows):.5f}** | "
          f"**{statistics.median(r[2] for r in rows):.5f}** |")
    print(f"\nBO overhead per iteration (excluding the objective; the first proposal of each run is left out: "
          f"in run 1 it includes the one-time botorch import): median {statistics.median(overheads):.3f} s, "
          f"p90 {np.percentile(overheads, 90):.3f} s, max {max(overheads):.3f} s")


if __name__ == "__main__":
    main()
