"""Training glue shared by the training phases: :func:`train_phase` is ``fit`` as a run trains.

It adds, around :func:`compresskit.train.fit`, the recipe's optimizer (AdamW or Nesterov SGD, no
weight decay on biases, norms and distillation weights) and LR schedule, one ``metrics.jsonl`` line
per epoch (with the validation metrics), an epoch checkpoint ``<phase>.last.pt`` resumed from, and,
under ``torchrun``, a data shard per rank. The loss helpers (:func:`task_loss_fn`,
:func:`loader_loss`, :func:`validation_loss`) are what a phase trains and a search trial scores with.

Contract: ``metrics.jsonl`` gets an epoch's line only after that epoch's checkpoint is on disk, so a
kill between the two loses no line for good and a resume never writes one twice
(:func:`compresskit.run.workspace.reconcile_metrics`).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compresskit.config import TrainConfig
from compresskit.run.workspace import RunDirError, Workspace, reconcile_metrics
from compresskit.tasks.protocol import Task
from compresskit.train import Callback, EpochCheckpoint, TrainState, distributed, fit
from compresskit.utils.forward import evaluating

__all__ = ["LogEpochs", "LossFn", "loader_loss", "make_optimizer", "make_scheduler", "scheduler_unit",
           "task_loss_fn", "train_phase", "validation_loss"]

#: ``loss_fn(model, batch) -> (loss, logs)``, what ``fit`` minimises.
LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, Mapping[str, float]]]


def make_optimizer(config: TrainConfig, extra_no_decay: Callable[[nn.Module], list[nn.Parameter]]
                   | None = None) -> Callable[[nn.Module], torch.optim.Optimizer]:
    """The optimizer factory of ``config``: weight decay on weights only (not biases, norms, ``extra_no_decay``)."""
    def make(model: nn.Module) -> torch.optim.Optimizer:
        no_decay_ids = {id(p) for p in (extra_no_decay(model) if extra_no_decay else [])}
        trainable = [p for p in model.parameters() if p.requires_grad and id(p) not in no_decay_ids]
        groups = [{"params": [p for p in trainable if p.ndim > 1], "weight_decay": config.weight_decay},
                  {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0}]  # biases, norms
        if no_decay_ids:
            groups.append({"params": [p for p in model.parameters() if id(p) in no_decay_ids],
                           "weight_decay": 0.0})
        if config.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
        return torch.optim.AdamW(groups, lr=config.lr)

    return make


def make_scheduler(config: TrainConfig, steps_per_epoch: int = 1) -> Callable[[torch.optim.Optimizer], Any] | None:
    """The LR-scheduler factory of ``config`` (``None`` for ``scheduler: none`` or zero epochs).

    ``onecycle`` is stepped after every optimizer step (:func:`scheduler_unit`), the others per epoch.
    """
    if config.scheduler == "none" or config.epochs == 0:
        return None
    if config.scheduler == "onecycle":
        total_steps = max(2, config.epochs * steps_per_epoch)
        return lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total_steps, pct_start=0.15)
    return lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)


def scheduler_unit(config: TrainConfig) -> str:
    """``"step"`` when ``config``'s scheduler steps after every optimizer step, else ``"epoch"``."""
    return "step" if config.scheduler == "onecycle" else "epoch"


class LogEpochs(Callback):
    """Log each epoch; its ``metrics.jsonl`` line is written by :meth:`flush`, after the epoch checkpoint.

    Appending only once the checkpoint is on disk means a kill between the two loses no line for good
    (the checkpoint carries the record, and :func:`~compresskit.run.workspace.reconcile_metrics`
    restores it on resume) and a resume never writes an epoch's line twice.
    """

    def __init__(self, workspace: Workspace, phase: str, evaluate: Callable[[], dict[str, float]] | None):
        self.workspace, self.phase, self.evaluate = workspace, phase, evaluate
        self.pending: dict[str, Any] | None = None
        self.restored: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """The epoch's line not yet in ``metrics.jsonl`` (saved in the epoch checkpoint)."""
        return {"record": self.pending}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Keep the checkpointed epoch's line for :func:`~compresskit.run.workspace.reconcile_metrics`."""
        self.restored = state_dict.get("record")

    def flush(self) -> None:
        """Append the pending epoch's line to ``metrics.jsonl``."""
        if self.pending is not None:
            self.workspace.append_metrics(self.pending)
            self.pending = None

    def on_epoch_end(self, state: TrainState) -> None:
        if not distributed.is_main():
            return
        record: dict[str, Any] = {"phase": self.phase, "epoch": state.epoch,
                                  **{k: float(v) for k, v in state.metrics.items()}}
        if self.evaluate is not None:
            with distributed.on_cpu(state.model, distributed.device()):
                record.update({f"val/{k}": v for k, v in self.evaluate().items()})
        self.pending = record
        self.workspace.log(f"[{self.phase}] epoch {state.epoch}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float) and "/" not in k[:3]))


def _train_loader(workspace: Workspace, task: Task, phase: str, batch_size: int, seed: int) -> Iterable[Any]:
    loader = task.train_loader(batch_size)
    if distributed.world_size() > 1:  # torchrun: this rank's shard, same shuffle seed on every rank
        loader = distributed.shard_loader(loader, seed=seed * 1000 + zlib.crc32(phase.encode()) % 1000)
        workspace.log(f"[{phase}] data-parallel: {json.dumps(distributed.shard_summary(loader))}")
    return loader


def train_phase(workspace: Workspace, task: Task, phase: str, model: nn.Module, loss_fn: LossFn,
                config: TrainConfig, *, seed: int, callbacks: Sequence[Callback] = (),
                no_decay: Callable[[nn.Module], list[nn.Parameter]] | None = None,
                evaluate: Callable[[], dict[str, float]] | None = None,
                saved: Mapping[str, Callback] | None = None) -> TrainState:
    """``fit`` with ``config``'s optimizer and schedule, per-epoch logging and epoch checkpoints (resumed from).

    Args:
        workspace: The run directory (``<phase>.last.pt``, ``metrics.jsonl``, log, progress).
        task: Its training loader is what the phase trains on.
        phase: The phase name (checkpoint file, log lines, ``metrics.jsonl`` records).
        model: Trained in place, then moved to the CPU.
        loss_fn: ``loss_fn(model, batch) -> (loss, logs)``.
        config: Epochs, optimizer, learning rate, schedule and batch size.
        seed: The run's seed; fixes the data shards under ``torchrun``.
        callbacks: Hooks run after the scheduler step, before logging and checkpointing.
        no_decay: Parameters (of ``model``) that get no weight decay.
        evaluate: Validation metrics logged at each epoch's end.
        saved: Hooks (among ``callbacks``) whose state the epoch checkpoint keeps, by name.

    Raises:
        RunDirError: ``<phase>.last.pt`` exists but cannot be read.
    """
    optimizer_factory = make_optimizer(config, no_decay)
    loader = _train_loader(workspace, task, phase, config.batch_size, seed)
    scheduler_factory = make_scheduler(config, len(loader))  # type: ignore[arg-type]
    logger = LogEpochs(workspace, phase, evaluate)
    saver = EpochCheckpoint(workspace.path(f"{phase}.last.pt"), {**(saved or {}), "metrics": logger})
    state = _resume(workspace, phase, saver, TrainState(model=model), optimizer_factory, scheduler_factory)
    state = fit(model, loss_fn, loader, config.epochs, optimizer_factory, scheduler_factory,
                callbacks=[*callbacks, logger, saver], state=state, progress=workspace.progress,
                checkpoint=lambda _: logger.flush(),  # after the checkpoint: a resume neither loses nor repeats a line
                device=distributed.device(), scheduler_per=scheduler_unit(config))
    model.to("cpu")  # phases and tasks work on CPU models
    return state


def _resume(workspace: Workspace, phase: str, saver: EpochCheckpoint, state: TrainState,
            optimizer_factory: Callable[[nn.Module], torch.optim.Optimizer],
            scheduler_factory: Callable[[torch.optim.Optimizer], Any] | None) -> TrainState | None:
    """``state`` restored from the epoch checkpoint (hooks included), or ``None`` to start the phase afresh."""
    logger = saver.hooks["metrics"]
    if not Path(saver.path).exists():
        reconcile_metrics(workspace, phase, 0, None)
        return None
    state.optimizer = optimizer_factory(state.model)
    state.scheduler = scheduler_factory(state.optimizer) if scheduler_factory else None
    try:
        saver.restore(state)
    except Exception as error:  # noqa: BLE001 - any unreadable epoch checkpoint is the same problem
        raise RunDirError(f"{saver.path}: unreadable epoch checkpoint ({type(error).__name__}: "
                          f"{str(error)[:200]}); delete it to restart the {phase} phase from its "
                          f"beginning, then --resume {workspace.run_dir}") from None
    reconcile_metrics(workspace, phase, state.epoch, logger.restored)  # type: ignore[attr-defined]
    workspace.log(f"[{phase}] resuming after epoch {state.epoch}")
    return state


def task_loss_fn(task: Task) -> LossFn:
    """``loss_fn(model, batch)``: the task loss of ``model`` on ``batch``."""
    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, Mapping[str, float]]:
        return task.task_loss(model(*task.inputs(batch)), batch)

    return loss_fn


def validation_loss(task: Task, model: nn.Module, batch_size: int, max_batches: int | None = None) -> float:
    """Mean task loss over the validation loader (the default search objective)."""
    return loader_loss(task, model, task.val_loader(batch_size), max_batches)


@torch.no_grad()
def loader_loss(task: Task, model: nn.Module, loader: Iterable[Any], max_batches: int | None = None) -> float:
    """Mean task loss of ``model`` (in eval mode) over the first ``max_batches`` batches of ``loader``."""
    losses = []
    with evaluating(model):
        for index, batch in enumerate(loader):
            if max_batches is not None and index >= max_batches:
                break
            loss, _ = task.task_loss(model(*task.inputs(batch)), batch)
            losses.append(float(loss))
    return sum(losses) / max(1, len(losses))
