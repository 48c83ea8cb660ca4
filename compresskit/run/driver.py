"""The driver: runs the phases in order, each resumable; the only code that sees the whole recipe.

``compresskit run recipe.yaml`` calls :func:`run`, which executes, in order::

    teacher -> distill -> search -> soft_prune -> remove -> finetune -> evaluate -> export -> quantize -> report

:func:`prepare` first builds the task and runs the pre-flight :func:`~compresskit.run.plan.plan`
(every model- and data-dependent check), then makes or reopens the run directory. Each entry of
:data:`PHASES` builds its phase's frozen ``Config`` from the recipe sections the phase reads and
calls ``phases.<name>.run(config, workspace, task)``; its summary is recorded in ``state.json`` when
it completes, so a resumed run (``--resume``) skips finished phases. Training phases also checkpoint
every epoch (``<phase>.last.pt``, RNG state included) and resume mid-phase; every phase seeds the
RNGs with :func:`~compresskit.run.seeding.phase_seed`, so in deterministic CPU mode an interrupted
and resumed run ends with the same weights as an uninterrupted one. The run directory's layout is in
:mod:`compresskit.run.workspace`.

Caveats:
    Mid-phase resume covers every training phase (the soft-pruning checkpoint also holds
    the pruner's last zeroed channels, so nothing is re-ranked on resume); the search
    resumes from its trial history; the other phases are short and rerun.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from compresskit.config import Recipe, recipe_to_dict
from compresskit.run.context import RunContext, build_task
from compresskit.run.lock import lock_run_dir
from compresskit.run.measure import peak_rss_mb
from compresskit.run.phase_configs import PHASE_CONFIGS
from compresskit.run.phases import distill_student as distill
from compresskit.run.phases import evaluate, finetune, remove, soft_prune, teacher
from compresskit.run.phases import export_files as export
from compresskit.run.phases import quantize_int8 as quantize
from compresskit.run.phases import rate_search as search
from compresskit.run.phases import write_report as report
from compresskit.run.seeding import PHASE_NAMES, phase_seed, seed_everything
from compresskit.run.tracking import open_trackers, track_phase
from compresskit.run.workspace import PhaseError, RunDirError, check_run_dir, replace_run
from compresskit.train import NonFiniteLossError, distributed
from compresskit.utils.atomic import WriteError

__all__ = ["PHASES", "TRAINING_PHASES", "prepare", "run"]

_MODULES = {"teacher": teacher, "distill": distill, "search": search, "soft_prune": soft_prune, "remove": remove,
            "finetune": finetune, "evaluate": evaluate, "export": export, "quantize": quantize, "report": report}


def _bind(name: str) -> Callable[[RunContext], dict[str, Any]]:
    """Phase ``name`` as ``phase(ctx) -> summary``: its Config from ``ctx.recipe``, then its ``run``."""
    module, configure = _MODULES[name], PHASE_CONFIGS[name]

    def phase(ctx: RunContext) -> dict[str, Any]:
        return module.run(configure(ctx.recipe, ctx.task), ctx, ctx.task)

    phase.__name__ = phase.__qualname__ = f"phase_{name}"
    phase.__doc__ = module.run.__doc__
    return phase


#: The phases, in order. Each maps a :class:`~compresskit.run.context.RunContext` to a JSON-able summary.
PHASES: dict[str, Callable[[RunContext], dict[str, Any]]] = {name: _bind(name) for name in PHASE_NAMES}

#: Phases every rank runs under torchrun (data-parallel); the others run on rank 0 alone.
TRAINING_PHASES = ("teacher", "distill", "soft_prune", "finetune")


def _configure_determinism(recipe: Recipe) -> None:
    if recipe.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)


def prepare(recipe: Recipe, run_dir: str | os.PathLike[str] | None = None, resume: bool = False,
            progress: bool = False, log: Callable[[str], None] = print, replace: bool = False) -> RunContext:
    """Check everything, then make (or reopen) and lock the run directory.

    Nothing is written before the task is built and every model- and data-dependent check of
    :func:`compresskit.run.plan.plan` passed, so a bad recipe leaves no half-made run directory.
    An existing directory is locked first (:mod:`compresskit.run.lock`), so a second run on it is
    refused at once; a new one when it is made, and checked again under the lock. The lock is held
    by the returned context until :func:`run` ends (or ``ctx.lock.release()``). Temporary files left
    by a killed write are removed.

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
        RunDirError: The directory cannot be used (see :func:`~compresskit.run.workspace.check_run_dir`),
            or another run holds it (:class:`~compresskit.run.lock.RunLockedError`).
        RecipeError: The task cannot be built, or a pre-flight check failed.
    """
    from compresskit.run.plan import plan

    directory = Path(run_dir) if run_dir is not None else recipe.resolved_run_dir
    resolved = recipe_to_dict(recipe)
    lock = lock_run_dir(directory) if distributed.broadcast(directory.is_dir()) else None
    try:
        state, start_over = check_run_dir(directory, resolved, resume, replace)
        task = build_task(recipe)
        checked = plan(recipe, task)  # every model- and data-dependent check, before anything is written
        if lock is None:  # a new directory: made and locked now, and checked again under the lock
            if distributed.is_main():
                directory.mkdir(parents=True, exist_ok=True)
            distributed.barrier()
            lock = lock_run_dir(directory)
            state, start_over = check_run_dir(directory, resolved, resume, replace)
        if checked.data:
            from compresskit.report.markdown import data_summary

            state["data"] = checked.data  # kept in state.json; the report shows it
            log(f"data: {data_summary(checked.data)}")
        ctx = RunContext(recipe=recipe, run_dir=directory, task=task, state=state, progress=progress,
                         log=log, lock=lock)
        _open_run_dir(ctx, resolved, start_over)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return ctx


def _note_threads(state: dict[str, Any], log: Callable[[str], None]) -> None:
    """Record the torch thread count a run starts with (``threads: null`` takes the machine's); a resumption
    with another count is told that its results may differ from an uninterrupted run's."""
    threads, started = torch.get_num_threads(), state.get("threads")
    if started is not None and started != threads:
        log(f"warning: this run started with {started} torch threads and resumes with {threads}: its results can "
            f"differ from an uninterrupted run's (resume under OMP_NUM_THREADS={started} for bitwise-equal results)")
    state["threads"] = started if started is not None else threads


def _open_run_dir(ctx: RunContext, resolved: dict[str, Any], start_over: bool) -> None:
    """Rank 0 clears a replaced run, removes orphan temporaries and writes ``recipe.yaml``."""
    from compresskit.utils.atomic import remove_stale_temporaries

    distributed.barrier()  # every rank has checked the directory before rank 0 writes to it
    if distributed.is_main():
        if start_over:
            replace_run(ctx.run_dir)
        removed = remove_stale_temporaries(ctx.run_dir)
        if removed:
            ctx.log(f"removed {len(removed)} temporary file(s) left by an interrupted write")
        if not ctx.path("recipe.yaml").exists():
            ctx.write_text("recipe.yaml", yaml.safe_dump(resolved, sort_keys=False))
    distributed.barrier()


def _run_phase(ctx: RunContext, name: str, phase: Callable[[RunContext], dict[str, Any]]) -> None:
    """Run one phase, record its summary (seconds, peak memory) in ``state.json``, drop its epoch checkpoint."""
    ctx.log(f"[{name}] started")
    seed_everything(phase_seed(ctx.recipe.seed, name))
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
    ctx.write_json("state.json", ctx.state)
    if distributed.is_main():
        ctx.path(f"{name}.last.pt").unlink(missing_ok=True)  # epoch checkpoint no longer needed
    ctx.log(f"[{name}] done in {summary['seconds']:.1f}s")


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
    distributed.init()  # torchrun: process group from its env (see compresskit.train.distributed); else no-op
    if not distributed.is_main():
        log, progress = (lambda message: None), False
    directory = Path(run_dir) if run_dir is not None else recipe.resolved_run_dir
    ctx = None
    try:
        ctx = prepare(recipe, run_dir, resume, progress, log, replace=replace)  # pre-flight incl. checkpoints
        _configure_determinism(recipe)
        _note_threads(ctx.state, log)
        ctx.trackers = open_trackers(recipe.track, ctx.run_dir) if distributed.is_main() else []
        for name, phase in PHASES.items():
            if name in ctx.state["completed"]:
                log(f"[{name}] already completed, skipped")
            else:
                _run_phase(ctx, name, phase)
                track_phase(ctx.trackers, ctx.run_dir, name)
            if name == stop_after:
                break
    except WriteError as error:  # full, read-only, not permitted: the user's to fix, then resume
        again = (f"run `compresskit run --resume {directory}`" if (directory / "recipe.yaml").exists()
                 else "run the same command again")
        raise RunDirError(f"{error}, then {again} (every earlier file is intact)") from error
    finally:
        for tracker in ctx.trackers if ctx is not None else []:
            tracker.close()
        if ctx is not None and ctx.lock is not None:
            ctx.lock.release()
    return ctx
