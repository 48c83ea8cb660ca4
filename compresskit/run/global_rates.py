"""``search.method: global`` (and ``search.start: global``): per-layer-group rates allocated from data, no trials.

On the distilled student (``student.pt``), :class:`~compresskit.pruning.output_error.OutputError` eliminates each
channel group's channels greedily on ``prune.reconstruct``'s calibration batches (the batches the one-shot refit
uses, so the validation data is never read) and gives each group its cumulative relative output error;
:func:`~compresskit.search.global_allocation.allocate_rates` chooses the rates of least total error under the
search's parameter budget (and latency budget, when the recipe has one), met exactly by the exact
``ParamPredictor``. ``rates.json`` records the rates (``source: "search (global)"``), the predicted parameters,
the total cost and the cost per layer group. Deterministic: a resumed run allocates the same rates.
"""

from __future__ import annotations

from typing import Any

from compresskit.config import RecipeError
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task

__all__ = ["allocate", "allocation_summary"]


def allocate(config: Any, workspace: Workspace, task: Task, problem: Any) -> tuple[Any, dict[str, float]]:
    """The global allocation on the distilled student under ``problem``'s budget: ``(Allocation, point)``, the
    point being its rates plus ``problem``'s other dimensions at 0 (a start point of the search).

    Args:
        config: The search phase's ``Config`` (``reconstruct``, ``groups``, ``student``, ``seed``).
        problem: The phase's ``SearchProblem`` (predictor, budget, latency); its bypass dimensions, if any,
            stay at 0 (nothing bypassed).

    Raises:
        RecipeError: no ``prune.reconstruct`` (the plan checks it first), or the budget cannot be met within
            the rate bounds (the message gives what the bounds reach).
    """
    from compresskit.pruning.output_error import OutputError
    from compresskit.run.phases.soft_prune import calibration_batches
    from compresskit.search.global_allocation import layer_group_costs, rate_levels

    if config.reconstruct is None:
        raise RecipeError(f"{config.source}: search.method global needs prune.reconstruct (its calibration batches)")
    student = config.student.build(task)
    student.load_state_dict(workspace.load_state_dict("student.pt"))
    groups = config.groups.find(student, task.example_inputs())
    batches = calibration_batches(config.reconstruct, task, config.seed, config.calibration_tasks)
    importance = OutputError(batches)  # as the soft-pruning phase's output_error ranks
    curves = [getattr(importance.eliminate(group), "curve", None) for group in groups]
    levels = rate_levels(groups, config.groups.bounds)
    fixed = {name: 0.0 for name in problem.bounds if name not in levels}  # bypass dimensions: off
    allocation = _allocate(levels, layer_group_costs(groups, curves, levels), problem, fixed, config.source)
    return allocation, {**allocation.rates, **fixed}


def _allocate(levels: dict[str, list[float]], costs: dict[str, list[float]], problem: Any, fixed: dict[str, float],
              source: str) -> Any:
    """``allocate_rates`` under ``problem``'s budgets, the ``fixed`` dimensions added to every point."""
    from compresskit.search.global_allocation import allocate_rates

    def with_fixed(rates: dict[str, float]) -> dict[str, float]:
        return {**rates, **fixed}

    latency = None
    if problem.latency is not None:
        latency = (lambda rates: problem.predict_latency(with_fixed(rates)), problem.latency.limit_ms)
    min_params, max_params = problem.budget
    try:
        return allocate_rates(levels, costs, lambda rates: problem.predict_params(with_fixed(rates)), max_params,
                              min_params, latency)
    except ValueError as error:
        raise RecipeError(f"{source}: search.budget: {error}") from None


def allocation_summary(allocation: Any, names: list[str]) -> dict[str, Any]:
    """What ``rates.json`` holds after ``search.method: global``."""
    summary = {"rates": {name: float(allocation.rates[name]) for name in names}, "source": "search (global)",
               "predicted_params": allocation.predicted_params, "cost": round(allocation.cost, 6),
               "costs": {name: round(cost, 6) for name, cost in allocation.costs.items()}}
    if allocation.predicted_latency_ms is not None:
        summary["predicted_latency_ms"] = round(allocation.predicted_latency_ms, 4)
    return summary
