"""Phase ``search``: per-layer-group pruning rates under the budget -> ``search.json``, ``rates.json``.

Inputs: ``student.pt``. Outputs: ``rates.json`` (the rates, their source and, after a search, the
predicted parameters, the best objective and the trial count) and, with a search, ``search.json``
(every trial; a resumed search continues from it). With ``search.enabled: false`` the recipe's
``prune.rates`` are written as given (0 for a group they omit).

The objective (:class:`SearchProblem`): a copy of the distilled student is pruned one-shot at the
candidate rates, trained ``search.trial.epochs`` epochs on ``search.trial.subset`` of the training
data and scored by the task loss on the validation data (or, with ``search.trial.holdout``, on a
held-out part of the training data). Each candidate seeds the RNGs from its own rates, so a resumed
search scores it identically. The budget's feasibility was checked by the plan before any training.

With ``search.method: global`` there are no trials: the rates are allocated from data under the budget
(:mod:`compresskit.run.global_rates`); with ``search.start: global`` that allocation is the BO search's first
evaluated point.

With ``search.bypass``, each candidate block is one more dimension (``bypass:<block>``,
:mod:`compresskit.run.bypass_choice`): a candidate is pruned and scored on the student with the chosen
blocks bypassed, its parameters predicted exactly on that reduced student (one ``find_groups`` per
subset visited, cached; the first feasibility draws visit all ``2 ** n``: ~20 s each for Nano-B on a
busy 2-core machine), and ``rates.json`` records the chosen blocks as ``"bypass"``. Under a latency
budget each subset has its own latency model, calibrated the first time a candidate that meets the
parameter budget falls in it (:class:`~compresskit.run.bypass_choice.BypassLatency`); the limit is
computed once (``max_latency_ratio``: of the unpruned student with nothing bypassed), and ``rates.json``
records the predicted and measured latency of the chosen rates and blocks.
"""

from __future__ import annotations

import copy
import json
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from compresskit.config import RecipeError, ReconstructConfig, SearchConfig, TrainConfig, TrialConfig
from compresskit.run.bypass_choice import BypassLatency, Reductions, bypass_dims, decode, fit_rates
from compresskit.run.context import ModelSource
from compresskit.run.global_rates import allocate, allocation_summary
from compresskit.run.layer_groups import GroupSelection
from compresskit.run.seeding import seed_everything
from compresskit.run.training import loader_loss, make_optimizer, task_loss_fn, validation_loss
from compresskit.run.workspace import Workspace, damaged
from compresskit.tasks.protocol import Task
from compresskit.train import fit

__all__ = ["Config", "SearchProblem", "run", "search_problem"]


@dataclass(frozen=True)
class Config:
    """What the search phase reads.

    Attributes:
        search: The recipe's ``search`` section (method, iterations, budget, trial).
        groups: The layer groups and their rate bounds.
        student: The student (its distilled weights are ``student.pt``).
        rates: ``prune.rates``, used as given when ``search.enabled`` is false.
        importance: ``prune.importance``, the criterion a trial prunes with.
        weight_decay: The trial's weight decay (``distill.weight_decay``).
        seed: The run's seed (search proposals, trial data subsets).
        source: The recipe file, named in errors.
        latency_budget: ``latency_budget(student, groups, bounds, example_inputs, fastest=None)`` -> the
            latency budget, or ``None`` without one (:func:`compresskit.deploy.latency.latency_budget`).
        reconstruct: ``prune.reconstruct``: its batches price channels for ``search.method`` / ``start: global``.
        calibration_tasks: Build the tasks those batches come from (``prune.reconstruct.task_args``); none: the
            run's task.
    """

    search: SearchConfig
    groups: GroupSelection
    student: ModelSource
    rates: Mapping[str, float] | None = None
    importance: str = "fpgm"
    weight_decay: float = 0.0
    seed: int = 0
    source: str = "<recipe>"
    latency_budget: Callable[..., Any] | None = None
    reconstruct: ReconstructConfig | None = None
    calibration_tasks: tuple[Callable[[], Task], ...] = ()


@dataclass(frozen=True)
class SearchProblem:
    """What the search phase optimises: ``objective(rates)`` (minimised) under the budget.

    Attributes:
        objective: Validation loss of the distilled student after a one-shot prune at
            ``rates`` and ``search.trial.epochs`` of fine-tuning on ``search.trial.subset``.
        bounds: Rate bounds per layer group, plus ``bypass:<block>`` dimensions with ``search.bypass``.
        predict_params: Exact parameter count of the pruned student for a point of ``bounds`` (rates
            and, with ``search.bypass``, the blocks it bypasses).
        budget: ``(min_params, max_params)``.
        latency: With a latency budget, the ``compresskit.deploy.latency.LatencyBudget``.
        latency_model: With a latency budget: a point -> ``(the calibrated LatencyModel of its subset of
            bypassed blocks, its layer-group rates)``; the student's own model without ``search.bypass``.
    """

    objective: Callable[[dict[str, float]], float]
    bounds: dict[str, tuple[float, float]]
    predict_params: Callable[[dict[str, float]], int]
    budget: tuple[int, int]
    latency: Any = None
    latency_model: Callable[[dict[str, float]], tuple[Any, dict[str, float]]] | None = None

    def predict_latency(self, point: dict[str, float]) -> float:
        """Predicted milliseconds at ``point`` (rates and, with ``search.bypass``, blocks)."""
        assert self.latency_model is not None
        latency, rates = self.latency_model(point)
        return float(latency.predict(rates))


def search_problem(config: Config, workspace: Workspace, task: Task) -> SearchProblem:
    """The search's objective, bounds, predictor and budget, on the distilled student (``student.pt``).

    Raises:
        RecipeError: ``search.trial.holdout`` is set but the task has no ``heldout_loader``, or the
            latency budget cannot be met.
    """
    from compresskit.pruning.soft_fpgm import prune

    candidates = list(config.search.bypass)
    student = config.student.build(task)
    student.load_state_dict(workspace.load_state_dict("student.pt"))
    groups = config.groups.find(student, task.example_inputs())
    reductions = Reductions(student, groups, config.groups.find, task.example_inputs())
    trial = config.search.trial
    trial_config = TrainConfig(epochs=trial.epochs, lr=trial.lr, batch_size=trial.batch_size,
                               weight_decay=config.weight_decay, scheduler="none")
    train_loader, score = _trial_data(trial, task, config.seed, config.source)

    def objective(point: dict[str, float]) -> float:
        # Seeded by the candidate itself, so a resumed search scores it identically.
        key = json.dumps({k: round(float(v), 12) for k, v in sorted(point.items())})
        seed_everything(config.seed * 1000 + zlib.crc32(key.encode()))
        rates, blocks = decode(point, candidates)
        model, model_groups, predictor = reductions.get(blocks)
        # Copying the model and its groups together keeps the groups pointing at the copy
        # (find_groups traces the model; doing it once per bypassed subset saves that per trial).
        candidate, candidate_groups = copy.deepcopy((model, model_groups))
        prune(candidate, task.example_inputs(), fit_rates(rates, predictor.layer_groups), groups=candidate_groups,
              importance=config.importance)
        if trial.epochs:
            fit(candidate, task_loss_fn(task), train_loader(), trial.epochs, make_optimizer(trial_config),
                progress=False, distributed=False)  # under torchrun the search runs on rank 0 alone
        return score(candidate)

    bounds = config.groups.bounds
    latency, latency_model = _latency(config, reductions, bounds, task)
    return SearchProblem(objective=objective, bounds={**bounds, **bypass_dims(candidates)},
                         predict_params=lambda point: reductions.params(*decode(point, candidates)),
                         budget=(config.search.budget.min_params, config.search.budget.max_params),
                         latency=latency, latency_model=latency_model)


def _latency(config: Config, reductions: Reductions, bounds: dict[str, tuple[float, float]],
             task: Task) -> tuple[Any, Callable[[dict[str, float]], tuple[Any, dict[str, float]]] | None]:
    """``(latency budget, point -> (latency model, rates))``, or ``(None, None)`` without a latency budget.

    With ``search.bypass`` the budget's reachable range includes the student with every candidate
    bypassed, and each subset's model is calibrated on first use (:class:`BypassLatency`).
    """
    candidates = list(config.search.bypass)
    if config.latency_budget is None:
        return None, None
    student, groups, _ = reductions.get([])
    fastest = None
    if candidates:
        reduced, reduced_groups, predictor = reductions.get(candidates)
        fastest = (reduced, reduced_groups, candidates,
                   {name: bound for name, bound in bounds.items() if name in predictor.layer_groups})
    budget = config.latency_budget(student, groups, bounds, task.example_inputs(),
                                   **({"fastest": fastest} if fastest is not None else {}))
    if budget is None:
        return None, None
    if not candidates:
        return budget, lambda point: (budget.model, dict(point))
    return budget, BypassLatency(budget, reductions, bounds, candidates).resolve


def _trial_data(trial: TrialConfig, task: Task, seed: int,
                source: str) -> tuple[Callable[[], Iterable[Any]], Callable[[nn.Module], float]]:
    """``(train_loader(), score(model))`` of one search trial.

    Without ``search.trial.holdout``: the training subset and the validation loss. With it: the
    training set minus a held-out fraction (fixed by ``seed``) and the task loss on that
    held-out part -- the validation data is never touched.

    Raises:
        RecipeError: ``holdout`` is set but the task has no ``heldout_loader``.
    """
    if trial.holdout is None:
        return (lambda: task.train_loader(trial.batch_size, subset=trial.subset, seed=seed),
                lambda model: validation_loss(task, model, trial.batch_size, trial.max_val_batches))
    heldout_loader = getattr(task, "heldout_loader", None)
    if not callable(heldout_loader):
        raise RecipeError(f"{source}: search.trial.holdout needs a task with "
                          f"heldout_loader(batch_size, fraction, seed) and train_loader(..., holdout=fraction); "
                          f"{type(task).__name__} has none")
    fraction = trial.holdout
    return (lambda: task.train_loader(trial.batch_size, subset=trial.subset, seed=seed,
                                      holdout=fraction),  # type: ignore[call-arg]
            lambda model: loader_loss(task, model, heldout_loader(trial.batch_size, fraction, seed),
                                      trial.max_val_batches))


def run(config: Config, workspace: Workspace, task: Task) -> dict[str, Any]:
    """Search (or take ``prune.rates``) -> ``rates.json`` (and ``search.json``); returns what ``rates.json`` holds."""
    names = config.groups.names
    if not config.search.enabled:
        rates = dict(config.rates or {})
        unknown = sorted(set(rates) - set(names))
        if unknown:
            raise RecipeError(f"{config.source}: prune.rates.{unknown[0]} is not a layer group; groups: {names}")
        rates = config.groups.complete(rates)
        workspace.write_json("rates.json", {"rates": rates, "source": "recipe"})
        return {"rates": rates, "source": "recipe"}
    _check_history(workspace)
    problem = search_problem(config, workspace, task)
    if config.search.method == "global":
        allocation, best = allocate(config, workspace, task, problem)
        summary = allocation_summary(allocation, names)
    else:
        start = [allocate(config, workspace, task, problem)[1]] if config.search.start == "global" else []
        result = _search(config, workspace, problem, start)
        best = {name: float(value) for name, value in result.best_rates.items()}
        summary = {"rates": {name: best[name] for name in names}, "source": f"search ({config.search.method})",
                   "predicted_params": problem.predict_params(best), "objective": float(result.best_objective),
                   "trials": len(result.trials)}
    if config.search.bypass:  # the blocks switched off: every later phase builds the student without them
        summary["bypass"] = decode(best, list(config.search.bypass))[1]
    if problem.latency is not None and problem.latency_model is not None:  # the chosen rates (and blocks), measured
        latency, chosen = problem.latency_model(best)
        summary["latency"] = {**problem.latency.to_dict(), "predicted_ms": round(latency.predict(chosen), 4),
                              "measured_ms": round(latency.measure(chosen), 4)}
    workspace.write_json("rates.json", summary)
    return summary


def _check_history(workspace: Workspace) -> None:
    """A resumed search's ``search.json`` must be whole."""
    if workspace.path("search.json").exists():
        history = workspace.read_json("search.json")
        if not isinstance(history, dict) or not isinstance(history.get("trials"), list) or not all(
                isinstance(trial, dict) for trial in history["trials"]):
            raise damaged(workspace.path("search.json"), ValueError("not a search history"))


def _search(config: Config, workspace: Workspace, problem: SearchProblem, start: list[dict[str, float]]) -> Any:
    """Run the recipe's search method on ``problem``, a log line per trial, history in ``search.json``."""
    from compresskit.search.bayesian import random_search, search_rates
    from compresskit.utils.logs import forward_logs

    search = partial(search_rates, start=start) if config.search.method == "bo" else random_search
    latency = None if problem.latency is None else (problem.predict_latency, problem.latency.limit_ms)
    with forward_logs("compresskit.search", lambda line: workspace.log(f"[search] {line}")):
        return search(problem.objective, problem.bounds, problem.predict_params, problem.budget,
                      iterations=config.search.iterations, initial_points=config.search.initial_points,
                      seed=config.seed, history_path=workspace.path("search.json"), progress=workspace.progress,
                      latency=latency)
