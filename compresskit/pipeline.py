"""The compression pipeline: one function per phase, each resumable.

``compresskit run recipe.yaml`` calls :func:`run`, which executes, in order::

    teacher -> distill -> search -> soft_prune -> remove -> finetune -> evaluate -> export -> quantize -> report

Each phase is a function ``phase(ctx) -> summary`` where ``ctx`` (:class:`RunContext`)
carries the validated recipe, the run directory and the task; it reads the
files earlier phases wrote and writes its own outputs atomically (temporary file
+ ``os.replace``). Its small JSON summary is recorded in ``state.json`` when it
completes, so a resumed run (``--resume``) skips finished phases. Training phases
also checkpoint every epoch (``<phase>.last.pt``, RNG state included) and resume
mid-phase; every phase seeds the RNGs from ``recipe.seed`` and its position, so in
deterministic CPU mode an interrupted and resumed run ends with the same weights as
an uninterrupted one.

Run directory layout::

    recipe.yaml        the resolved recipe (profile and overrides applied)
    state.json         completed phases and their summaries
    metrics.jsonl      one JSON line per epoch of every training phase
    teacher.pt         teacher state_dict
    student.pt         distilled student state_dict
    search.json        search trials (resumable)
    rates.json         the per-layer-group rates used for pruning
    schedule.json      the soft-pruning rate of each layer group per epoch
    channels.json      output channels per conv/linear layer, before and after
    soft_pruned.pt     student after soft pruning (zeroed filters, full shapes) + zeroed indices
    pruned.pt          physically pruned student (compresskit.persist format)
    final.pt           pruned and fine-tuned student (compresskit.persist format)
    evaluation.json    params, MACs, latency and task metrics, keyed teacher / student / pruned (final.pt)
    model.onnx         the final model in ONNX (checked against PyTorch with ONNX Runtime)
    model.fp32.onnx    with quantize.enabled: the final model, dynamic axes (checked at two shapes)
    model.int8.onnx    with quantize.enabled: its INT8 (QDQ) quantization
    report.md          the report, with plots under plots/
    metrics.csv        metrics.jsonl as one CSV table (written with the report)

Caveats:
    Mid-phase resume covers every training phase (the soft-pruning checkpoint also holds
    the pruner's last zeroed channels, so nothing is re-ranked on resume); the search
    resumes from its trial history; the other phases are short and rerun.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from compresskit import distributed
from compresskit._atomic import atomic_torch_save, atomic_write_text, remove_stale_temporaries
from compresskit._finite import non_finite_entries
from compresskit._yaml import decode_yaml_bytes, load_yaml
from compresskit.budget import count_macs, count_params
from compresskit.recipe import (
    TASKS, Recipe, RecipeError, TrainConfig, checkpoint_path, recipe_to_dict, resolve_object,
)
from compresskit.task import Task, check_task, task_args_error
from compresskit.train import Callback, NonFiniteLossError, TrainState, fit, load_checkpoint, save_checkpoint

__all__ = [
    "PHASES",
    "RunContext",
    "PhaseError",
    "RunDirError",
    "SearchProblem",
    "build_task",
    "finetune_model",
    "layer_channels",
    "peak_rss_mb",
    "prepare",
    "run",
    "search_problem",
]


class RunDirError(RuntimeError):
    """The run directory cannot be used (exists without --resume, or another recipe)."""


class PhaseError(RuntimeError):
    """A phase stopped (e.g. a non-finite loss); completed phases and checkpoints are kept."""


# --- small I/O helpers ----------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    if distributed.is_main():  # under torchrun only rank 0 writes
        atomic_write_text(path, text)


def _atomic_save(obj: Any, path: Path) -> None:
    count, names = non_finite_entries(obj)
    if count:  # never write a non-finite model
        raise NonFiniteLossError(f"{count} tensors for {path.name} hold NaN/inf (e.g. {', '.join(names)}); "
                                 f"{path.name} not written")
    if distributed.is_main():
        atomic_torch_save(obj, path)


def _write_json(path: Path, data: Any) -> None:
    _atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _damaged(path: Path, error: Exception) -> RunDirError:
    return RunDirError(f"{path}: unreadable ({type(error).__name__}: {' '.join(str(error).split())[:200]}); "
                       f"the run directory is damaged: start a new run in another run_dir")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise _damaged(path, error) from None


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - truncated, pickled or foreign: all the same to the run
        raise _damaged(path, error) from None
    if not isinstance(state_dict, dict):
        raise _damaged(path, TypeError(f"holds {type(state_dict).__name__}, not a state_dict"))
    return state_dict


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --- context ----------------------------------------------------------------------------


@dataclass
class RunContext:
    """What every phase receives.

    Attributes:
        recipe: The validated recipe.
        run_dir: The run directory (exists).
        task: The task object built from ``recipe.task``.
        state: Summaries of completed phases, as in ``state.json``.
        progress: Show progress bars.
        log: Called with one-line progress messages.
    """

    recipe: Recipe
    run_dir: Path
    task: Task
    state: dict[str, Any] = field(default_factory=dict)
    progress: bool = False
    log: Callable[[str], None] = print

    # -- models --
    def build(self, which: str) -> nn.Module:
        """A freshly built ``teacher`` or ``student`` model (global RNG, seeded by the phase)."""
        config = self.recipe.teacher if which == "teacher" else self.recipe.student
        assert config is not None
        if ":" in config.model:
            factory = resolve_object(config.model, f"{which}.model", self.recipe.source)
            return factory(**config.model_args)
        return self.task.build_model(config.model, **config.model_args)

    def builder(self) -> tuple[str, dict[str, Any]]:
        """``("module:callable", kwargs)`` rebuilding the student, for persistence."""
        config = self.recipe.student
        if ":" in config.model:
            return config.model, dict(config.model_args)
        return self.task.builder(config.model, **config.model_args)

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        if not distributed.is_main():
            return
        with open(self.path("metrics.jsonl"), "a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(record)) + "\n")


def build_task(recipe: Recipe) -> Task:
    """Resolve ``recipe.task`` and call it with ``recipe.task_args``.

    Raises:
        RecipeError: The task cannot be imported, its arguments are rejected, or
            the returned object lacks part of the :class:`~compresskit.task.Task` protocol.
    """
    spec = TASKS.get(recipe.task, recipe.task)
    factory = resolve_object(spec, "task", recipe.source)
    try:
        task = factory(**recipe.task_args)
    except Exception as error:  # noqa: BLE001 - the user's task refused its arguments or its data
        raise RecipeError(f"{recipe.source}: task_args rejected by {spec!r}: "
                          f"{task_args_error(error, recipe.task_args)}") from None
    try:
        return check_task(task, spec)
    except TypeError as error:
        raise RecipeError(f"{recipe.source}: task {error}") from None


# --- training helpers ---------------------------------------------------------------------


def _make_optimizer(config: TrainConfig, extra_no_decay: Callable[[nn.Module], list[nn.Parameter]]
                    | None = None) -> Callable[[nn.Module], torch.optim.Optimizer]:
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


class _OneCycle:
    """``OneCycleLR`` advanced once per optimizer step by :class:`_StepScheduler`.

    ``fit`` steps its scheduler once per epoch; here that call is a no-op, so the
    one-cycle shape follows optimizer steps. ``state_dict`` / ``load_state_dict``
    forward to the wrapped scheduler (checkpoints and resume work unchanged).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_lr: float, total_steps: int) -> None:
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=max(2, total_steps), pct_start=0.15)

    def step(self) -> None:  # the per-epoch call of fit
        pass

    def step_batch(self) -> None:
        if self.scheduler.last_epoch < self.scheduler.total_steps - 1:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state_dict)


class _StepScheduler(Callback):
    """Advance a per-step scheduler (``_OneCycle``) after every optimizer step."""

    def on_step_end(self, state: TrainState) -> None:
        if isinstance(state.scheduler, _OneCycle):
            state.scheduler.step_batch()


def _make_scheduler(config: TrainConfig, steps_per_epoch: int = 1) -> Callable[[torch.optim.Optimizer], Any] | None:
    if config.scheduler == "none" or config.epochs == 0:
        return None
    if config.scheduler == "onecycle":
        return lambda optimizer: _OneCycle(optimizer, config.lr, config.epochs * steps_per_epoch)
    return lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)


class _LogEpochs(Callback):
    """Log each epoch; its ``metrics.jsonl`` line is written by :meth:`flush`, after the epoch checkpoint.

    Appending only once the checkpoint is on disk means a kill between the two loses no line for good
    (the checkpoint carries the record, and :func:`_reconcile_metrics` restores it on resume) and a
    resume never writes an epoch's line twice.
    """

    def __init__(self, ctx: RunContext, phase: str, evaluate: Callable[[], dict[str, float]] | None):
        self.ctx, self.phase, self.evaluate = ctx, phase, evaluate
        self.pending: dict[str, Any] | None = None

    def flush(self) -> None:
        if self.pending is not None:
            self.ctx.append_metrics(self.pending)
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
        self.ctx.log(f"[{self.phase}] epoch {state.epoch}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float) and "/" not in k[:3]))


def _train(
    ctx: RunContext,
    phase: str,
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, Mapping[str, float]]],
    config: TrainConfig,
    callbacks: Iterable[Callback] = (),
    no_decay: Callable[[nn.Module], list[nn.Parameter]] | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
    extra_state: tuple[Callable[[], dict[str, Any]], Callable[[Mapping[str, Any]], None]] | None = None,
) -> TrainState:
    """``fit`` with the recipe's optimizer, per-epoch logging and epoch checkpoints (resumed from).

    ``extra_state`` is ``(get, set)`` for callback state that must survive a resume (stored in the
    epoch checkpoint's ``extra``)."""
    make_optimizer = _make_optimizer(config, no_decay)
    loader = ctx.task.train_loader(config.batch_size)
    if distributed.world_size() > 1:  # torchrun: this rank's shard, same shuffle seed on every rank
        loader = distributed.shard_loader(loader, seed=ctx.recipe.seed * 1000 + zlib.crc32(phase.encode()) % 1000)
        shards = distributed.shard_summary(loader)
        ctx.log(f"[{phase}] data-parallel: {json.dumps(shards)}")
    make_scheduler = _make_scheduler(config, len(loader))  # type: ignore[arg-type]
    checkpoint_path = ctx.path(f"{phase}.last.pt")
    state = None
    if checkpoint_path.exists():
        optimizer = make_optimizer(model)
        state = TrainState(model=model, optimizer=optimizer,
                           scheduler=make_scheduler(optimizer) if make_scheduler else None)
        try:
            raw = load_checkpoint(checkpoint_path, state)
        except Exception as error:  # noqa: BLE001 - any unreadable epoch checkpoint is the same problem
            raise RunDirError(f"{checkpoint_path}: unreadable epoch checkpoint ({type(error).__name__}: "
                              f"{str(error)[:200]}); delete it to restart the {phase} phase from its "
                              f"beginning, then --resume {ctx.run_dir}") from None
        if extra_state is not None:
            extra_state[1](raw["extra"])
        _reconcile_metrics(ctx, phase, state.epoch, raw["extra"].get("metrics_record"))
        ctx.log(f"[{phase}] resuming after epoch {state.epoch}")
    else:
        _reconcile_metrics(ctx, phase, 0, None)
    logger = _LogEpochs(ctx, phase, evaluate)

    def checkpoint(s: TrainState) -> None:
        extra = dict(extra_state[0]() if extra_state else {})
        extra["metrics_record"] = logger.pending
        save_checkpoint(checkpoint_path, s, extra)
        logger.flush()  # after the checkpoint: a resume neither loses nor repeats this line

    state = fit(
        model, loss_fn, loader, config.epochs, make_optimizer, make_scheduler,
        callbacks=[_StepScheduler(), *callbacks, logger], state=state,
        progress=ctx.progress, checkpoint=checkpoint, device=distributed.device(),
    )
    model.to("cpu")  # phases and tasks work on CPU models
    return state


def _reconcile_metrics(ctx: RunContext, phase: str, epoch: int, record: Mapping[str, Any] | None) -> None:
    """Make ``metrics.jsonl`` hold exactly one line per checkpointed epoch of ``phase`` (1..``epoch``).

    Drops a torn last line, lines of later epochs and repeated epochs; appends ``record`` (kept in
    the epoch checkpoint) when the kill came between the checkpoint and its line.
    """
    path = ctx.path("metrics.jsonl")
    if not distributed.is_main() or not path.exists() and record is None:
        return
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept, seen = [], set()
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue  # torn by a kill mid-write
        if not isinstance(item, dict):
            continue
        key = (item.get("phase"), item.get("epoch"))
        if item.get("phase") == phase and (not isinstance(item.get("epoch"), int) or item["epoch"] > epoch
                                           or key in seen):
            continue
        seen.add(key)
        kept.append(json.dumps(item))
    if record is not None and (phase, epoch) not in seen:
        kept.append(json.dumps(dict(record)))
    if kept != lines:
        _atomic_write_text(path, "".join(line + "\n" for line in kept))


def _task_loss_fn(task: Task) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return task.task_loss(model(*task.inputs(batch)), batch)

    return loss_fn


def validation_loss(task: Task, model: nn.Module, batch_size: int, max_batches: int | None = None) -> float:
    """Mean task loss over the validation loader (the default search objective)."""
    return loader_loss(task, model, task.val_loader(batch_size), max_batches)


@torch.no_grad()
def loader_loss(task: Task, model: nn.Module, loader: Iterable[Any], max_batches: int | None = None) -> float:
    """Mean task loss of ``model`` (in eval mode) over the first ``max_batches`` batches of ``loader``."""
    was_training = model.training
    model.eval()
    losses = []
    for index, batch in enumerate(loader):
        if max_batches is not None and index >= max_batches:
            break
        loss, _ = task.task_loss(model(*task.inputs(batch)), batch)
        losses.append(float(loss))
    model.train(was_training)
    return sum(losses) / max(1, len(losses))


# --- measurements -------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``VmHWM``; ``ru_maxrss`` elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)


def measure_latency(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], repeats: int = 20) -> float:
    """Median of ``repeats`` CPU forward passes after 3 warm-up calls, in milliseconds (batch of the
    example inputs, torch's current thread count), measured by :func:`compresskit.benchmark.measure`.

    Indicative only on a shared machine; ``benchmarks/`` compares models interleaved in one call.
    """
    from compresskit.benchmark import measure, torch_runner

    was_training = model.training
    try:
        return measure({"model": torch_runner(model, example_inputs)}, warmup=3, rounds=repeats)["model"].median_ms
    finally:
        model.train(was_training)


def layer_channels(model: nn.Module) -> dict[str, int]:
    """Output channels of every conv / linear layer, by module name."""
    result = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            result[name] = module.out_channels
        elif isinstance(module, nn.Linear):
            result[name] = module.out_features
    return result


def _profile(ctx: RunContext, model: nn.Module) -> dict[str, Any]:
    inputs = ctx.task.example_inputs()
    return {
        "params": count_params(model),
        "macs": count_macs(model, inputs),
        "latency_ms": measure_latency(model, inputs),
        "latency_threads": torch.get_num_threads(),
        "metrics": ctx.task.evaluate(model),
    }


# --- layer groups -----------------------------------------------------------------------


def layer_group_specs(ctx: RunContext) -> list[Any]:
    """The recipe's ``prune.groups`` as ``LayerGroupSpec``s, or the task's defaults."""
    from compresskit.groups import LayerGroupSpec

    groups = ctx.recipe.prune.groups
    if groups is None:
        return list(ctx.task.layer_groups(ctx.recipe.student.model))
    return [LayerGroupSpec(name, patterns=g.patterns, types=g.types, bounds=g.bounds)
            for name, g in groups.items()]


def _protect(ctx: RunContext) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*ctx.task.protect(ctx.recipe.student.model), *ctx.recipe.prune.protect]))


def _find_groups(ctx: RunContext, model: nn.Module) -> list[Any]:
    from compresskit.bypass import fit_patterns, fit_specs
    from compresskit.groups import find_groups

    # a student built with bypassed blocks (compresskit.bypass) drops the globs that named only them
    specs, protect = fit_specs(layer_group_specs(ctx), model), fit_patterns(_protect(ctx), model)
    try:
        groups = find_groups(model, ctx.task.example_inputs(), specs, protect=protect)
    except ValueError as error:  # unknown pattern, overlapping groups
        raise RecipeError(f"{ctx.recipe.source}: prune.groups: {error}") from None
    if ctx.recipe.prune.channel_multiple > 1:  # hardware-friendly widths, read by pruner and predictor alike
        from compresskit.groups import round_channels

        round_channels(groups, ctx.recipe.prune.channel_multiple)
    return groups


# --- phases -------------------------------------------------------------------------------


def phase_teacher(ctx: RunContext) -> dict[str, Any]:
    """Train the teacher (or load ``teacher.checkpoint``) -> ``teacher.pt``."""
    teacher_config = ctx.recipe.teacher
    if teacher_config is None:
        return {"skipped": "no teacher"}
    model = ctx.build("teacher")
    if teacher_config.checkpoint is not None:
        from compresskit.checkpoints import load_checkpoint

        checkpoint = checkpoint_path(teacher_config.checkpoint, ctx.recipe.source)
        load_checkpoint(ctx.task, model, checkpoint)  # checked before any phase ran (check_checkpoints)
        source = str(checkpoint)
    else:
        _train(ctx, "teacher", model, _task_loss_fn(ctx.task), teacher_config.train,
               evaluate=lambda: ctx.task.evaluate(model))
        source = "trained"
    _atomic_save(model.state_dict(), ctx.path("teacher.pt"))
    return {"source": source, "params": count_params(model), "metrics": ctx.task.evaluate(model)}


class _DistillModule(nn.Module):
    """Student + distillation loss weights in one module, so checkpoints hold both."""

    def __init__(self, student: nn.Module, distill: nn.Module | None) -> None:
        super().__init__()
        self.student = student
        self.distill = distill

    def forward(self, *inputs: Any) -> Any:  # the student, called through the DDP wrapper under torchrun
        return self.student(*inputs)


def _load_teacher(ctx: RunContext) -> nn.Module | None:
    """The teacher from ``teacher.pt`` (train mode), or ``None`` without a teacher."""
    if ctx.recipe.teacher is None:
        return None
    teacher = ctx.build("teacher")
    teacher.load_state_dict(_load_state_dict(ctx.path("teacher.pt")))
    return teacher


def _with_distillation(ctx: RunContext, student: nn.Module, teacher: nn.Module | None) -> tuple[
        _DistillModule, Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]],
        Callable[[nn.Module], list[nn.Parameter]]]:
    """``(module, loss_fn, no_decay)`` training ``student`` with weighted distillation from ``teacher``
    (the task loss alone when ``teacher`` is ``None``); ``module`` holds the student and the loss weights."""
    from compresskit.distill import WeightedDistillation

    config, task = ctx.recipe.distill, ctx.task
    distill = None
    if teacher is not None:
        teacher.eval().requires_grad_(False).to(distributed.device())
        distill = WeightedDistillation(
            list(task.distill_kinds), temperature=config.temperature, alpha=config.alpha,
            log_variance_range=(-4.0, 4.0) if config.learnable_weights else None)

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        inputs = task.inputs(batch)
        outputs = model(*inputs)
        task_loss, logs = task.task_loss(outputs, batch)
        if teacher is None:
            return task_loss, logs
        with torch.no_grad():
            teacher_outputs = teacher(*inputs)
        distill_term = getattr(model, "module", model).distill  # unwrap DDP
        return distill_term(outputs, teacher_outputs, task_loss, mask=task.distill_mask(outputs, batch))

    return (_DistillModule(student, distill), loss_fn,
            lambda m: list(m.distill.weight_parameters()) if m.distill is not None else [])


def phase_distill(ctx: RunContext) -> dict[str, Any]:
    """Train the student with weighted distillation from the teacher -> ``student.pt``."""
    config = ctx.recipe.distill
    task = ctx.task
    student = ctx.build("student")
    teacher = _load_teacher(ctx)
    start = _initialise_student(ctx, student, teacher)
    wrapper, loss_fn, no_decay = _with_distillation(ctx, student, teacher)
    _train(ctx, "distill", wrapper, loss_fn, config, no_decay=no_decay, evaluate=lambda: task.evaluate(student))
    _atomic_save(student.state_dict(), ctx.path("student.pt"))
    summary: dict[str, Any] = {"params": count_params(student), "start": start, "metrics": task.evaluate(student)}
    if wrapper.distill is not None:
        summary["log_variances"] = [float(v) for v in wrapper.distill.log_variances().detach()]
    return summary


def _phase_training(ctx: RunContext, phase: str, model: nn.Module) -> tuple[
        nn.Module, Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]],
        Callable[[nn.Module], list[nn.Parameter]] | None]:
    """What ``phase`` (``soft_prune`` / ``finetune``) trains: ``model`` on the task loss, or, when the
    phase is listed in ``distill.phases`` and there is a teacher, ``model`` + distillation from it."""
    if phase in ctx.recipe.distill.phases and ctx.recipe.teacher is not None:
        return _with_distillation(ctx, model, _load_teacher(ctx))
    return model, _task_loss_fn(ctx.task), None


def _initialise_student(ctx: RunContext, student: nn.Module, teacher: nn.Module | None) -> dict[str, Any]:
    """Load ``student.checkpoint`` or inherit from the teacher (``student.init_from``); say which."""
    from compresskit.checkpoints import inherit_matching, load_checkpoint

    config = ctx.recipe.student
    if config.checkpoint is not None:
        path = checkpoint_path(config.checkpoint, ctx.recipe.source)
        load_checkpoint(ctx.task, student, path)
        ctx.log(f"[distill] student starts from {path}")
        return {"source": str(path)}
    if config.init_from == "teacher" and teacher is not None:
        inherited = inherit_matching(student, teacher)
        ctx.log(f"[distill] {inherited.describe()}")
        return {"source": "teacher", "inherited_tensors": inherited.tensors,
                "inherited_params": inherited.params, "shape_mismatches": len(inherited.skipped)}
    return {"source": "initialised"}


def _load_pruned(ctx: RunContext, name: str) -> nn.Module:
    """The pruned model in run file ``name`` (persist format), trusting the recipe's own builder."""
    from compresskit.persist import load_pruned

    return load_pruned(ctx.path(name), trust=[ctx.builder()[0]])


def _load_student(ctx: RunContext) -> nn.Module:
    student = ctx.build("student")
    student.load_state_dict(_load_state_dict(ctx.path("student.pt")))
    return student


@dataclass(frozen=True)
class SearchProblem:
    """What the search phase optimises: ``objective(rates)`` (minimised) under the budget.

    Attributes:
        objective: Validation loss of the distilled student after a one-shot FPGM prune at
            ``rates`` and ``search.trial.epochs`` of fine-tuning on ``search.trial.subset``.
        bounds: Rate bounds per layer group.
        predict_params: Exact parameter count of the pruned student for given rates.
        budget: ``(min_params, max_params)``.
        latency: With a latency budget, the calibrated ``compresskit.latency.LatencyBudget``.
    """

    objective: Callable[[dict[str, float]], float]
    bounds: dict[str, tuple[float, float]]
    predict_params: Callable[[dict[str, float]], int]
    budget: tuple[int, int]
    latency: Any = None


def search_problem(ctx: RunContext) -> SearchProblem:
    """Build the search phase's objective, bounds, predictor and budget (after ``distill``).

    Raises:
        RecipeError: no rates inside the bounds meet ``search.budget``.
    """
    from compresskit.budget import ParamPredictor
    from compresskit.prune import prune

    recipe, task = ctx.recipe, ctx.task
    specs = layer_group_specs(ctx)
    student = _load_student(ctx)
    groups = _find_groups(ctx, student)
    predictor = ParamPredictor(student, groups)
    trial = recipe.search.trial
    trial_config = TrainConfig(epochs=trial.epochs, lr=trial.lr, batch_size=trial.batch_size,
                               weight_decay=recipe.distill.weight_decay, scheduler="none")
    train_loader, score = _trial_data(ctx)

    def objective(rates: dict[str, float]) -> float:
        # Seeded by the candidate itself, so a resumed search scores it identically.
        key = json.dumps({k: round(float(v), 12) for k, v in sorted(rates.items())})
        seed_everything(recipe.seed * 1000 + zlib.crc32(key.encode()))
        # Copying the model and its groups together keeps the groups pointing at the copy
        # (find_groups traces the model; doing it once saves that per trial).
        candidate, candidate_groups = copy.deepcopy((student, groups))
        prune(candidate, task.example_inputs(), rates, groups=candidate_groups,
              importance=recipe.prune.importance)
        if trial.epochs:
            fit(candidate, _task_loss_fn(task), train_loader(), trial.epochs, _make_optimizer(trial_config),
                progress=False, distributed=False)  # under torchrun the search runs on rank 0 alone
        return score(candidate)

    bounds = {spec.name: tuple(spec.bounds) for spec in specs}
    check_budget(recipe, predictor, bounds)
    from compresskit.latency import latency_budget

    return SearchProblem(objective=objective, bounds=bounds,
                         predict_params=lambda rates: int(predictor(rates)),
                         budget=(recipe.search.budget.min_params, recipe.search.budget.max_params),
                         latency=latency_budget(recipe, student, groups, bounds, task.example_inputs()))


def _trial_data(ctx: RunContext) -> tuple[Callable[[], Iterable[Any]], Callable[[nn.Module], float]]:
    """``(train_loader(), score(model))`` of one search trial.

    Without ``search.trial.holdout``: the training subset and the validation loss. With it: the
    training set minus a held-out fraction (fixed by ``recipe.seed``) and the task loss on that
    held-out part -- the validation data is never touched.

    Raises:
        RecipeError: ``holdout`` is set but the task has no ``heldout_loader``.
    """
    recipe, task = ctx.recipe, ctx.task
    trial = recipe.search.trial
    if trial.holdout is None:
        return (lambda: task.train_loader(trial.batch_size, subset=trial.subset, seed=recipe.seed),
                lambda model: validation_loss(task, model, trial.batch_size, trial.max_val_batches))
    heldout_loader = getattr(task, "heldout_loader", None)
    if not callable(heldout_loader):
        raise RecipeError(f"{recipe.source}: search.trial.holdout needs a task with "
                          f"heldout_loader(batch_size, fraction, seed) and train_loader(..., holdout=fraction); "
                          f"{type(task).__name__} has none")
    fraction = trial.holdout
    return (lambda: task.train_loader(trial.batch_size, subset=trial.subset, seed=recipe.seed,
                                      holdout=fraction),  # type: ignore[call-arg]
            lambda model: loader_loss(task, model, heldout_loader(trial.batch_size, fraction, recipe.seed),
                                      trial.max_val_batches))


def phase_search(ctx: RunContext) -> dict[str, Any]:
    """Search per-layer-group rates under the budget -> ``search.json``, ``rates.json``."""
    recipe = ctx.recipe
    specs = layer_group_specs(ctx)
    names = [spec.name for spec in specs]
    if not recipe.search.enabled:
        rates = dict(recipe.prune.rates or {})
        unknown = sorted(set(rates) - set(names))
        if unknown:
            raise RecipeError(f"{recipe.source}: prune.rates.{unknown[0]} is not a layer group; "
                              f"groups: {names}")
        rates = {name: float(rates.get(name, 0.0)) for name in names}
        _write_json(ctx.path("rates.json"), {"rates": rates, "source": "recipe"})
        return {"rates": rates, "source": "recipe"}

    from compresskit.search import random_search, search_rates

    if ctx.path("search.json").exists():  # a resumed search: its history must be whole
        history = _read_json(ctx.path("search.json"))
        if not isinstance(history, dict) or not isinstance(history.get("trials"), list) or not all(
                isinstance(trial, dict) for trial in history["trials"]):
            raise _damaged(ctx.path("search.json"), ValueError("not a search history"))
    problem = search_problem(ctx)
    search = search_rates if recipe.search.method == "bo" else random_search
    latency = None if problem.latency is None else (problem.latency.model.predict, problem.latency.limit_ms)
    from compresskit._logs import forward_logs

    with forward_logs("compresskit.search", lambda line: ctx.log(f"[search] {line}")):  # a line per trial
        result = search(problem.objective, problem.bounds, problem.predict_params, problem.budget,
                        iterations=recipe.search.iterations, initial_points=recipe.search.initial_points,
                        seed=recipe.seed, history_path=ctx.path("search.json"), progress=ctx.progress,
                        latency=latency)
    rates = {name: float(result.best_rates[name]) for name in names}
    predicted = problem.predict_params(rates)
    summary = {"rates": rates, "source": f"search ({recipe.search.method})",
               "predicted_params": predicted, "objective": float(result.best_objective),
               "trials": len(result.trials)}
    if problem.latency is not None:  # the chosen rates, measured directly (compresskit.latency)
        summary["latency"] = {**problem.latency.to_dict(),
                              "predicted_ms": round(problem.latency.model.predict(rates), 4),
                              "measured_ms": round(problem.latency.model.measure(rates), 4)}
    _write_json(ctx.path("rates.json"), summary)
    return summary


def reachable_params(predictor: Callable[[dict[str, float]], int],
                     bounds: Mapping[str, tuple[float, float]]) -> tuple[int, int]:
    """``(fewest, most)`` parameters reachable with rates inside ``bounds`` (all upper / all lower)."""
    return (int(predictor({name: high for name, (low, high) in bounds.items()})),
            int(predictor({name: low for name, (low, high) in bounds.items()})))


def check_budget(recipe: Recipe, predictor: Callable[[dict[str, float]], int],
                 bounds: Mapping[str, tuple[float, float]]) -> None:
    """Raise a :class:`RecipeError` when no rates inside the bounds meet ``search.budget``."""
    fewest, most = reachable_params(predictor, bounds)
    budget = recipe.search.budget
    if fewest > budget.max_params or most < budget.min_params:
        raise RecipeError(
            f"{recipe.source}: search.budget [{budget.min_params}, {budget.max_params}] cannot be met: "
            f"rates within the layer-group bounds give {fewest:,} to {most:,} parameters")


def _schedules(ctx: RunContext, rates: Mapping[str, float]) -> dict[str, Callable[[int], float]]:
    from compresskit.schedules import make_schedule

    config = ctx.recipe.prune.schedule
    end = config.end if config.end is not None else config.epochs
    schedules = {}
    for name, rate in rates.items():
        if config.kind == "constant" or rate <= config.initial:
            schedules[name] = make_schedule("constant", value=rate)
        elif config.kind == "linear":
            schedules[name] = make_schedule("linear", initial=config.initial, final=rate,
                                            start=config.start, end=end)
        else:
            schedules[name] = make_schedule("polynomial", initial=config.initial, final=rate,
                                            start=config.start, end=end, power=config.power)
    return schedules


def schedule_table(ctx: RunContext, rates: Mapping[str, float]) -> dict[str, list[float]]:
    """Rate per epoch (0..epochs) of each layer group: what the soft pruner applies."""
    schedules = _schedules(ctx, rates)
    epochs = ctx.recipe.prune.schedule.epochs
    return {name: [float(s(e)) for e in range(epochs + 1)] for name, s in schedules.items()}


class _EveryNEpochs(Callback):
    """Forward ``on_epoch_end`` to the pruner only every ``n`` epochs (and at the last)."""

    def __init__(self, pruner: Callback, n: int, last: int) -> None:
        self.pruner, self.n, self.last = pruner, n, last

    def on_train_start(self, state: TrainState) -> None:
        self.pruner.on_train_start(state)

    def on_step_end(self, state: TrainState) -> None:
        self.pruner.on_step_end(state)

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch % self.n == 0 or state.epoch >= self.last:
            self.pruner.on_epoch_end(state)

    def on_train_end(self, state: TrainState) -> None:
        self.pruner.on_train_end(state)


def phase_soft_prune(ctx: RunContext) -> dict[str, Any]:
    """Train while re-zeroing filters on the schedule (soft FPGM) -> ``soft_pruned.pt``.

    The file holds the soft-pruned state_dict (full shapes, zeroed filters) and,
    per channel group, the indices zeroed at the last step: the removal phase
    removes exactly those, never re-ranking.
    """
    from compresskit.prune import SoftFPGM

    config = ctx.recipe.prune.schedule
    rates = _read_json(ctx.path("rates.json"))["rates"]
    _write_json(ctx.path("schedule.json"), {"step_every": config.step_every,
                                            "rates": schedule_table(ctx, rates)})
    student = _load_student(ctx)
    groups = _find_groups(ctx, student)
    pruner = SoftFPGM(groups, _schedules(ctx, rates), importance=ctx.recipe.prune.importance)
    callback = _EveryNEpochs(pruner, config.step_every, config.epochs)
    trained, loss_fn, no_decay = _phase_training(ctx, "soft_prune", student)
    _train(ctx, "soft_prune", trained, loss_fn, config, callbacks=[callback], no_decay=no_decay,
           evaluate=lambda: ctx.task.evaluate(student),
           extra_state=(lambda: {"pruner": pruner.state_dict()},
                        lambda extra: pruner.load_state_dict(extra["pruner"])))
    if pruner.zeroed is None:  # zero epochs: one step at the final rates
        pruner.step(config.epochs)
    zeroed = pruner.zeroed_indices()
    _atomic_save({"state_dict": student.state_dict(), "zeroed": zeroed}, ctx.path("soft_pruned.pt"))
    return {"rates": pruner.rates, "zeroed_channels": sum(len(v) for v in zeroed.values()),
            "params_unpruned": count_params(student), "metrics": ctx.task.evaluate(student)}


def phase_remove(ctx: RunContext) -> dict[str, Any]:
    """Physically remove the channels zeroed by the soft phase -> ``pruned.pt`` (persist format).

    The removal is verified: the soft-zeroed and the physically pruned model must
    give the same outputs on the example inputs.
    """
    from compresskit.persist import save_pruned
    from compresskit.prune import remove_zeroed

    payload = _load_state_dict(ctx.path("soft_pruned.pt"))  # {"state_dict", "zeroed"}
    model = ctx.build("student")
    model.load_state_dict(payload["state_dict"])
    before = layer_channels(model)
    groups = _find_groups(ctx, model)
    zeroed = payload["zeroed"]
    names = [group.name for group in groups]
    if sorted(names) != sorted(zeroed):
        raise RuntimeError(f"channel groups changed since the soft phase: {sorted(set(names) ^ set(zeroed))}")
    summary = remove_zeroed(groups, [zeroed[name] for name in names], verify=True)
    builder, kwargs = ctx.builder()
    save_pruned(ctx.path("pruned.pt"), model, builder, kwargs)
    _write_json(ctx.path("channels.json"), {"before": before, "after": layer_channels(model)})
    return {"params_before": summary.params_before, "params_after": summary.params_after,
            "changed_layers": len(summary.changed_layers), "metrics": ctx.task.evaluate(model)}


def phase_finetune(ctx: RunContext) -> dict[str, Any]:
    """Fine-tune the pruned model -> ``final.pt`` (persist format)."""
    from compresskit.persist import save_pruned

    model = _load_pruned(ctx, "pruned.pt")
    finetune_model(ctx, model)
    builder, kwargs = ctx.builder()
    if distributed.is_main():
        save_pruned(ctx.path("final.pt"), model, builder, kwargs)  # history kept by load_pruned
    return {"params": count_params(model), "metrics": ctx.task.evaluate(model)}


def finetune_model(ctx: RunContext, model: nn.Module, evaluate: bool = True) -> TrainState:
    """The fine-tune phase's training (``recipe.finetune``, distillation if listed in ``distill.phases``)
    of any pruned ``model``, in place; benchmarks use it to give baselines the very same fine-tune.

    Epoch checkpoints go to ``ctx.run_dir / "finetune.last.pt"`` (and are resumed from)."""
    trained, loss_fn, no_decay = _phase_training(ctx, "finetune", model)
    return _train(ctx, "finetune", trained, loss_fn, ctx.recipe.finetune, no_decay=no_decay,
                  evaluate=(lambda: ctx.task.evaluate(model)) if evaluate else None)


def phase_evaluate(ctx: RunContext) -> dict[str, Any]:
    """Params, MACs, latency and task metrics of teacher, student and final -> ``evaluation.json``."""
    models: dict[str, nn.Module] = {}
    teacher = _load_teacher(ctx)
    if teacher is not None:
        models["teacher"] = teacher
    models["student"] = _load_student(ctx)
    models["pruned"] = _load_pruned(ctx, "final.pt")
    evaluation = {name: _profile(ctx, model) for name, model in models.items()}
    _write_json(ctx.path("evaluation.json"), evaluation)
    return {name: {"params": v["params"], "metrics": v["metrics"]} for name, v in evaluation.items()}


def _export_inputs(ctx: RunContext) -> tuple[torch.Tensor, ...]:
    inputs = ctx.task.example_inputs()
    size = ctx.recipe.export.input_size
    generator = torch.Generator().manual_seed(ctx.recipe.seed)
    result = []
    for index, tensor in enumerate(inputs):
        shape = list(tensor.shape)
        if index == 0 and size is not None and tensor.ndim == 4:
            shape[2:] = list(size)
        result.append(torch.randn(shape, generator=generator, dtype=tensor.dtype)
                      if tensor.is_floating_point() else tensor)
    return tuple(result)


def phase_export(ctx: RunContext) -> dict[str, Any]:
    """Export the final model to ONNX and check it with ONNX Runtime -> ``model.onnx``."""
    if not ctx.recipe.export.onnx:
        return {"skipped": "export.onnx is false"}
    from compresskit.export import check_onnx, export_onnx

    model = _load_pruned(ctx, "final.pt").eval()
    inputs = _export_inputs(ctx)
    path = export_onnx(model, inputs, ctx.path("model.onnx"), opset=ctx.recipe.export.opset)
    difference = check_onnx(path, model, inputs, atol=ctx.recipe.export.atol)
    return {"path": "model.onnx", "max_abs_difference": float(difference),
            "bytes": os.path.getsize(path), "input_shapes": [list(t.shape) for t in inputs]}


def phase_quantize(ctx: RunContext) -> dict[str, Any]:
    """INT8 static quantization of the final model -> ``model.fp32.onnx``, ``model.int8.onnx`` (``quantize:``).

    Calibration: the first ``quantize.calibration_samples`` inputs of the task's training loader
    (batch 1). Reports the task's metrics and the ONNX Runtime latency (1 thread, median / p90 of
    interleaved rounds, :func:`compresskit.benchmark.benchmark_models`) of FP32 and INT8.
    """
    config = ctx.recipe.quantize
    if not config.enabled:
        return {"skipped": "quantize.enabled is false"}
    from compresskit.benchmark import benchmark_models
    from compresskit.export import export_model
    from compresskit.quantize import quantize_onnx
    from compresskit.runtime import OrtModule

    model = _load_pruned(ctx, "final.pt").eval()
    inputs = _export_inputs(ctx)
    export = export_model(model, inputs, ctx.path("model.fp32.onnx"), dynamic=True,
                          atol=ctx.recipe.export.atol, opset=ctx.recipe.export.opset)
    samples = []
    for batch in ctx.task.train_loader(1):
        samples.append(tuple(t.detach().cpu().numpy() for t in ctx.task.inputs(batch)))
        if len(samples) >= config.calibration_samples:
            break
    int8 = quantize_onnx(export.path, ctx.path("model.int8.onnx"), samples, method=config.method,
                         per_channel=config.per_channel, exclude=config.exclude)
    paths = {"fp32": export.path, "int8": int8}
    latency = benchmark_models({f"onnx_{kind}": path for kind, path in paths.items()}, ctx.task.example_inputs(),
                               threads=1, warmup=2, rounds=config.rounds)
    ratios = latency.ratios("onnx_fp32")
    summary: dict[str, Any] = {
        kind: {"path": path.name, "bytes": os.path.getsize(path), "metrics": ctx.task.evaluate(OrtModule(path)),
               "latency_ms": latency.latencies[f"onnx_{kind}"].median_ms,
               "latency_p90_ms": latency.latencies[f"onnx_{kind}"].p90_ms}
        for kind, path in paths.items()}
    return {**summary,
            "speedup": 1.0 / ratios["onnx_int8"], "calibration": f"{config.method}, {len(samples)} samples",
            "weights": "per-channel" if config.per_channel else "per-tensor",
            "dynamic_input_axes": sorted(export.dynamic_axes.get("input", {})),
            "latency_settings": {"threads": latency.threads, "input_shape": list(latency.input_shape),
                                 "rounds": latency.rounds}}


def phase_report(ctx: RunContext) -> dict[str, Any]:
    """Write ``report.md`` and plots from the run directory."""
    from compresskit.report import write_report

    path = write_report(ctx.run_dir)
    return {"path": str(path.name)}


#: The phases, in order. Each maps a :class:`RunContext` to a JSON-able summary.
PHASES: dict[str, Callable[[RunContext], dict[str, Any]]] = {
    "teacher": phase_teacher,
    "distill": phase_distill,
    "search": phase_search,
    "soft_prune": phase_soft_prune,
    "remove": phase_remove,
    "finetune": phase_finetune,
    "evaluate": phase_evaluate,
    "export": phase_export,
    "quantize": phase_quantize,
    "report": phase_report,
}


# --- the driver ----------------------------------------------------------------------------

#: Phases every rank runs under torchrun (data-parallel); the others run on rank 0 alone.
TRAINING_PHASES = ("teacher", "distill", "soft_prune", "finetune")


def _configure_determinism(recipe: Recipe) -> None:
    if recipe.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)


#: Files a run writes (see the module docstring); ``--replace`` deletes these and ``*.last.pt`` only.
RUN_FILES = ("recipe.yaml", "state.json", "metrics.jsonl", "teacher.pt", "student.pt", "search.json",
             "rates.json", "schedule.json", "channels.json", "soft_pruned.pt", "pruned.pt", "final.pt",
             "evaluation.json", "model.onnx", "report.md", "metrics.csv")


def _read_run_state(directory: Path) -> tuple[Any, dict[str, Any]]:
    """``(stored recipe, state)`` of an existing run; an unreadable file is a :class:`RunDirError`."""
    try:
        stored = load_yaml(decode_yaml_bytes((directory / "recipe.yaml").read_bytes()))
        state = _read_json(directory / "state.json") if (directory / "state.json").exists() else None
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise RunDirError(f"{directory}: cannot read the run's recipe.yaml/state.json "
                          f"({type(error).__name__}: {str(error)[:200]}); choose another run_dir") from None
    if state is None:
        state = {"completed": [], "phases": {}}
    if (not isinstance(state, dict) or not isinstance(state.get("completed"), list)
            or not isinstance(state.get("phases"), dict)):
        raise RunDirError(f"{directory}/state.json is not a run state; choose another run_dir")
    return stored, state


def _replace_run(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_file() and (entry.name in RUN_FILES or entry.name.endswith(".last.pt")):
            entry.unlink()
    remove_stale_temporaries(directory)


def prepare(recipe: Recipe, run_dir: str | os.PathLike[str] | None = None, resume: bool = False,
            progress: bool = False, log: Callable[[str], None] = print, replace: bool = False) -> RunContext:
    """Check everything, then make (or reopen) the run directory.

    Nothing is written before the task is built and every model- and data-dependent check of
    :func:`compresskit.plan.plan` passed, so a bad recipe leaves no half-made run directory.
    Temporary files left by a killed write are removed.

    Args:
        recipe: The validated recipe.
        run_dir: Overrides ``recipe.run_dir``.
        resume: Reopen an existing run directory; its ``recipe.yaml`` must equal ``recipe``.
        progress: Show progress bars.
        log: Progress-message sink.
        replace: Start over in a directory whose run completed no phase (its run files are deleted).

    Returns:
        The context phases run with.

    Raises:
        RunDirError: The directory is a file, holds a run and neither ``resume`` nor (for a run
            that completed no phase) ``replace`` is given, or holds a run of a different recipe.
        RecipeError: The task cannot be built, or a pre-flight check failed.
    """
    from compresskit.plan import plan

    directory = Path(run_dir) if run_dir is not None else recipe.resolved_run_dir
    resolved = recipe_to_dict(recipe)
    stored_path = directory / "recipe.yaml"
    state: dict[str, Any] = {"completed": [], "phases": {}}
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"run_dir {directory} is a file, not a directory; choose another run_dir")
    start_over = False
    if stored_path.exists():
        stored, state = _read_run_state(directory)
        completed = state["completed"]
        how = (f"pass --replace to start it over with this recipe (deletes its run files), "
               f"or --resume {directory} to continue it")
        if replace:
            if completed:
                raise RunDirError(f"{directory} holds a run with completed phases ({', '.join(completed)}); "
                                  f"--replace only replaces a run that completed no phase: choose another "
                                  f"run_dir, or --resume {directory}")
            start_over, state = True, {"completed": [], "phases": {}}
        elif not resume:
            raise RunDirError(f"{directory} already holds a run; pass --resume {directory} "
                              f"to continue it, or choose another run_dir"
                              + ("" if completed else f" (it completed no phase: {how})"))
        else:
            differing = sorted(_differences(stored, resolved))
            if differing:
                raise RunDirError(f"{directory} holds a run of a different recipe "
                                  f"(differs at {', '.join(differing[:5])}); cannot resume it"
                                  + ("" if completed else "; it completed no phase: pass --replace to "
                                     "start it over with this recipe (deletes its run files)"))
    elif resume and not directory.exists():
        raise RunDirError(f"cannot resume {directory}: no such run directory")
    task = build_task(recipe)
    checked = plan(recipe, task)  # every model- and data-dependent check, before anything is written
    if checked.data:
        from compresskit.report import data_summary

        state["data"] = checked.data  # kept in state.json; the report shows it
        log(f"data: {data_summary(checked.data)}")
    distributed.barrier()  # every rank has checked the directory before rank 0 writes to it
    if distributed.is_main():
        directory.mkdir(parents=True, exist_ok=True)
        if start_over:
            _replace_run(directory)
        removed = remove_stale_temporaries(directory)
        if removed:
            log(f"removed {len(removed)} temporary file(s) left by an interrupted write")
        if not stored_path.exists():
            _atomic_write_text(stored_path, yaml.safe_dump(resolved, sort_keys=False))
    distributed.barrier()
    return RunContext(recipe=recipe, run_dir=directory, task=task, state=state, progress=progress, log=log)


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def run(recipe: Recipe, run_dir: str | os.PathLike[str] | None = None, resume: bool = False,
        progress: bool = False, log: Callable[[str], None] = print,
        stop_after: str | None = None, replace: bool = False) -> RunContext:
    """Run every phase of the pipeline, skipping those already completed.

    Args:
        recipe: The validated recipe.
        run_dir: Overrides ``recipe.run_dir``.
        resume: Continue an interrupted run in ``run_dir``.
        progress: Show progress bars.
        log: Progress-message sink.
        stop_after: Stop after this phase (for tests and partial runs).
        replace: Start over in a ``run_dir`` whose run completed no phase (see :func:`prepare`).

    Returns:
        The run context (``ctx.state`` holds every phase's summary).

    Example:
        >>> ctx = run(load_recipe("recipes/shapes_classifier.yaml"))  # doctest: +SKIP
        >>> ctx.state["phases"]["evaluate"]["pruned"]["params"]  # doctest: +SKIP
    """
    if stop_after is not None and stop_after not in PHASES:
        raise ValueError(f"unknown phase {stop_after!r}; valid: {list(PHASES)}")
    distributed.init()  # torchrun: process group from its env (see compresskit.distributed); else no-op
    if not distributed.is_main():
        log, progress = (lambda message: None), False
    ctx = prepare(recipe, run_dir, resume, progress, log, replace=replace)  # pre-flight incl. checkpoints
    _configure_determinism(recipe)
    for index, (name, phase) in enumerate(PHASES.items()):
        if name in ctx.state["completed"]:
            log(f"[{name}] already completed, skipped")
        else:
            log(f"[{name}] started")
            seed_everything(recipe.seed * 100 + index)
            start = time.perf_counter()
            try:
                summary = phase(ctx) if name in TRAINING_PHASES or distributed.is_main() else {}
            except NonFiniteLossError as error:
                checkpoint = ctx.path(f"{name}.last.pt")
                kept = f"the last good epoch checkpoint {checkpoint.name}" if checkpoint.exists() else "no epoch of it"
                raise PhaseError(f"[{name}] stopped: {error}; kept in {ctx.run_dir}: earlier phases and {kept} "
                                 f"(lower the learning rate or check the data, then start a new run or "
                                 f"--resume {ctx.run_dir})") from error
            summary["seconds"] = round(time.perf_counter() - start, 3)
            summary["peak_rss_mb"] = peak_rss_mb()
            distributed.barrier()  # rank 0's files are written before any rank reads them
            summary = distributed.broadcast(summary)
            ctx.state["phases"][name] = summary
            ctx.state["completed"].append(name)
            _write_json(ctx.path("state.json"), ctx.state)
            if distributed.is_main():
                ctx.path(f"{name}.last.pt").unlink(missing_ok=True)  # epoch checkpoint no longer needed
            log(f"[{name}] done in {summary['seconds']:.1f}s")
        if name == stop_after:
            break
    return ctx
