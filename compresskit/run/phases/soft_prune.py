"""Phase ``soft_prune``: train while re-zeroing filters on the schedule (soft FPGM) -> ``soft_pruned.pt``.

Inputs: ``student.pt``, the recipe's fixed ``prune.rates`` or the searched ``rates.json`` (and ``teacher.pt`` when the phase distils);
the student is built with the blocks ``rates.json`` names under ``"bypass"`` switched off. Outputs:
``schedule.json`` (the rate of each layer group per epoch) and ``soft_pruned.pt``: the soft-pruned
state_dict (full shapes, zeroed filters) and, per channel group, the indices zeroed at the last step;
the removal phase removes exactly those, never re-ranking. The pruner's state travels in the epoch
checkpoint, so a resumed phase re-ranks nothing.

Schedules (:func:`schedules`): each group's rate rises from ``prune.schedule.initial`` to its target
over ``[start, end]`` epochs (``linear`` or ``polynomial`` of ``power``; ``constant`` from the start);
the pruner acts every ``step_every`` epochs and at the last. With ``prune.reconstruct`` (one-shot:
zero epochs) the kept weights are refit by least squares to the unpruned student's layer outputs on
calibration inputs from the training loader (:mod:`compresskit.pruning.reconstruct`) before ``soft_pruned.pt``
is written; ``reconstruction.json`` gives each layer's relative error before and after.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from compresskit.config import ReconstructConfig, ScheduleConfig
from compresskit.pruning.budget import count_params
from compresskit.run.bypass_choice import chosen_bypass, fit_rates, load_student
from compresskit.run.context import ModelSource
from compresskit.run.distillation import Distillation, phase_training
from compresskit.run.evaluations import cached_metrics
from compresskit.run.layer_groups import GroupSelection
from compresskit.run.training import train_phase
from compresskit.run.workspace import Workspace
from compresskit.tasks.protocol import Task
from compresskit.train import EveryNEpochs

__all__ = ["Config", "run", "schedule_table", "schedules"]


@dataclass(frozen=True)
class Config:
    """What the soft-pruning phase reads.

    Attributes:
        student: The student (its distilled weights are ``student.pt``).
        groups: The layer groups the rates apply to.
        schedule: ``prune.schedule``: the rate schedule and the training loop.
        importance: ``prune.importance``, the criterion filters are ranked by.
        distillation: Distil from the teacher while pruning (``soft_prune`` in ``distill.phases``), or ``None``.
        seed: The run's seed (data shards under ``torchrun``).
        rates: ``prune.rates`` when the recipe fixes them (``search.enabled: false``): the phase prunes
            straight to these (0 for a group they omit). ``None``: the rates the search chose, read
            from ``rates.json``.
        reconstruct: ``prune.reconstruct`` (validated: only with zero epochs), or ``None``.
        calibration_tasks: Build the tasks the calibration batches come from when ``prune.reconstruct.task_args``
            changes them (:func:`compresskit.run.context.calibration_tasks`); none: the run's task.
    """

    student: ModelSource
    groups: GroupSelection
    schedule: ScheduleConfig
    importance: str = "fpgm"
    distillation: Distillation | None = None
    seed: int = 0
    rates: Mapping[str, float] | None = None
    reconstruct: ReconstructConfig | None = None
    calibration_tasks: tuple[Callable[[], Task], ...] = ()


def schedules(config: ScheduleConfig, rates: Mapping[str, float]) -> dict[str, Callable[[int], float]]:
    """The rate schedule ``epoch -> rate`` of each layer group, reaching ``rates`` (:mod:`compresskit.pruning.schedules`)."""
    from compresskit.pruning.schedules import make_schedule

    end = config.end if config.end is not None else config.epochs
    result = {}
    for name, rate in rates.items():
        if config.kind == "constant" or rate <= config.initial:
            result[name] = make_schedule("constant", value=rate)
        elif config.kind == "linear":
            result[name] = make_schedule("linear", initial=config.initial, final=rate, start=config.start, end=end)
        else:
            result[name] = make_schedule("polynomial", initial=config.initial, final=rate,
                                         start=config.start, end=end, power=config.power)
    return result


def schedule_table(config: ScheduleConfig, rates: Mapping[str, float]) -> dict[str, list[float]]:
    """Rate per epoch (0..epochs) of each layer group: what the soft pruner applies."""
    return {name: [float(s(e)) for e in range(config.epochs + 1)] for name, s in schedules(config, rates).items()}


def run(config: Config, workspace: Workspace, task: Task) -> dict[str, Any]:
    """Soft-prune the student -> ``schedule.json``, ``soft_pruned.pt``; returns rates, zeroed channels, metrics."""
    from compresskit.pruning.soft_fpgm import SoftFPGM

    schedule = config.schedule
    rates = (config.groups.complete(config.rates) if config.rates is not None
             else workspace.read_json("rates.json")["rates"])
    blocks = chosen_bypass(workspace) if config.rates is None else []
    student = load_student(config.student, workspace, task, blocks)
    groups = config.groups.find(student, task.example_inputs())
    if blocks:  # a layer group whose modules were all bypassed has nothing left to prune
        rates = fit_rates(rates, sorted(groups.layer_groups))
    workspace.write_json("schedule.json", {"step_every": schedule.step_every,
                                           "rates": schedule_table(schedule, rates)})
    batches = (calibration_batches(config.reconstruct, task, config.seed, config.calibration_tasks)
               if config.reconstruct is not None else None)
    pruner = SoftFPGM(groups, schedules(schedule, rates), importance=_importance(config.importance, batches))
    every = EveryNEpochs(pruner, schedule.step_every, schedule.epochs)  # type: ignore[arg-type]
    unpruned = copy.deepcopy(student) if config.reconstruct is not None else None  # one-shot (validated)
    trained, loss_fn, no_decay = phase_training(workspace, task, student, config.distillation)
    train_phase(workspace, task, "soft_prune", trained, loss_fn, schedule, seed=config.seed, callbacks=[every],
                no_decay=no_decay, evaluate=lambda: cached_metrics(workspace, task, student, reuse=False),
                saved={"pruner": every})
    if pruner.zeroed is None:  # zero epochs: one step at the final rates
        pruner.step(schedule.epochs)
    summary: dict[str, Any] = {}
    if config.reconstruct is not None:
        fitted = reconstruct_kept(config.reconstruct, student, unpruned, batches, pruner.rezero, config.seed)
        workspace.write_json("reconstruction.json", fitted)
        summary["reconstruction"] = {key: value for key, value in fitted.items() if key != "layers"}
    zeroed = pruner.zeroed_indices()
    workspace.save({"state_dict": student.state_dict(), "zeroed": zeroed}, "soft_pruned.pt")
    return {"rates": pruner.rates, "zeroed_channels": sum(len(v) for v in zeroed.values()),
            "params_unpruned": count_params(student), **summary, "metrics": cached_metrics(workspace, task, student)}


def calibration_batches(config: ReconstructConfig, task: Task, seed: int,
                        calibration_tasks: Sequence[Callable[[], Task]] = ()) -> list[Any]:
    """The first ``config.batches`` training batches' model inputs (the refit's and a data importance's data), from
    ``task``'s training loader or, given ``calibration_tasks`` (``prune.reconstruct.task_args``), from the loaders
    of the tasks they build, in turn."""
    tasks = [build() for build in calibration_tasks] or [task]
    loaders = [iter(source.train_loader(config.batch_size, seed=seed)) for source in tasks]
    batches = []
    for index in range(config.batches):
        source = index % len(tasks)
        batch = next(loaders[source], None)
        if batch is None:  # that loader has no more batches
            break
        batches.append(tasks[source].inputs(batch))
    return batches


def _importance(name: str, batches: list[Any] | None) -> Any:
    """``prune.importance``: a name, or for a data importance (validated: with ``prune.reconstruct``) the
    importance built from the calibration batches."""
    from compresskit.pruning.output_error import DATA_IMPORTANCES

    return DATA_IMPORTANCES[name](batches) if name in DATA_IMPORTANCES else name


def reconstruct_kept(config: ReconstructConfig, student: nn.Module, unpruned: nn.Module, batches: list[Any],
                     rezero: Callable[[], None], seed: int) -> dict[str, Any]:
    """Refit ``student``'s kept weights to ``unpruned``'s layer outputs on the calibration ``batches``
    (``rezero`` zeroes the pruned filters again after every layer); returns images, seconds, the mean relative error before and
    after, and ``layers``: ``{name: [error before, error after]}``."""
    from compresskit.pruning.reconstruct import reconstruct

    start = time.perf_counter()
    fits = reconstruct(student, unpruned, batches, on_layer_done=rezero, positions=config.positions,
                       ridge=config.ridge, seed=seed, progress=True)
    return {"images": sum(len(batch[0]) for batch in batches), "seconds": round(time.perf_counter() - start, 1),
            "mean_error_before": round(sum(fit.error_before for fit in fits) / len(fits), 4),
            "mean_error_after": round(sum(fit.error_after for fit in fits) / len(fits), 4),
            "layers": {fit.name: [round(fit.error_before, 4), round(fit.error_after, 4)] for fit in fits}}
