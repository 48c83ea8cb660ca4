"""``compresskit run``: load and override a recipe, then run the pipeline or print its pre-flight plan.

Contract: the command only parses options, loads the recipe through the one validator
(:func:`compresskit.config.load_recipe`, ``--set`` overrides included) and calls the library:
:func:`compresskit.run.plan.plan` for ``--dry-run`` (the pre-flight ``run`` itself performs, so both
print the same one-line errors), :func:`compresskit.run.driver.run` otherwise. :func:`print_plan`
prints what the plan found and checks nothing itself.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from compresskit.cli._error_boundary import UserError
from compresskit.run.tracking import TRACKERS

__all__ = ["print_plan", "run_command"]


@click.command("run")
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
              help="Override a recipe value (parsed as YAML), e.g. --set distill.epochs=5. Repeatable.")
@click.option("--profile", default=None, help="Apply the recipe's named profile (e.g. paper).")
@click.option("--resume", "resume_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Continue the run in this directory (RECIPE defaults to its recipe.yaml).")
@click.option("--run-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Write the run here instead of the recipe's run_dir.")
@click.option("--replace", is_flag=True,
              help="Start over in a run directory whose run completed no phase (deletes its run files).")
@click.option("--dry-run", is_flag=True, help="Validate, build the task and models, print the plan; train nothing.")
@click.option("--stop-after", default=None, help="Stop after this phase.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars with ETA (epochs, search trials); default: on when stderr is a terminal.")
@click.option("--track", multiple=True, type=click.Choice(list(TRACKERS)),
              help="Also log metrics, search trials and report figures to TensorBoard (RUN_DIR/tensorboard) "
                   "or MLflow; the same as --set track=[NAME]. Repeatable.")
def run_command(recipe: Path | None, overrides: Sequence[str], profile: str | None, resume_dir: Path | None,
                run_dir: Path | None, replace: bool, dry_run: bool, stop_after: str | None,
                progress: bool | None, track: Sequence[str]) -> None:
    """Run the compression pipeline of RECIPE (a YAML file, or a shipped recipe's name: compresskit recipes).

    Phases: teacher, distill, search, soft_prune, remove, finetune, evaluate,
    export, report. Outputs (checkpoints, metrics.jsonl, search.json, model.onnx,
    report.md) go to the recipe's run_dir. An interrupted run continues with
    --resume RUN_DIR, skipping completed phases.
    """
    from compresskit.config import load_recipe
    from compresskit.run import driver
    from compresskit.train import distributed

    if track:
        overrides = [*overrides, f"track=[{','.join(track)}]"]
    loaded = load_recipe(_recipe_path(recipe, resume_dir, profile), overrides, profile)
    if resume_dir is not None and run_dir is not None and resume_dir != run_dir:
        raise click.UsageError("--resume and --run-dir name different directories")
    target = resume_dir or run_dir
    if stop_after is not None and stop_after not in driver.PHASES:
        raise click.BadParameter(f"unknown phase {stop_after!r}; valid: {list(driver.PHASES)}",
                                 param_hint="--stop-after")
    if dry_run:
        print_plan(loaded, target)
        return
    if progress is None:
        progress = sys.stderr.isatty()
    ctx = driver.run(loaded, run_dir=target, resume=resume_dir is not None, progress=progress,
                       log=_echo_above_bars, stop_after=stop_after, replace=replace)
    if not distributed.is_main():  # under torchrun rank 0 speaks for the run
        return
    click.echo(f"run directory: {ctx.run_dir}")
    if (ctx.run_dir / "report.md").exists():
        click.echo(f"report: {ctx.run_dir / 'report.md'}")


def _echo_above_bars(message: str) -> None:
    """One log line on stdout above any live progress bar: ``tqdm.external_write_mode`` clears the bars and
    redraws them after; ``click.echo`` flushes, so a redirected log keeps the lines in order with errors."""
    from tqdm import tqdm

    with tqdm.external_write_mode():
        click.echo(message)


def _recipe_path(recipe: Path | None, resume_dir: Path | None, profile: str | None) -> Path:
    """RECIPE, or the ``recipe.yaml`` of the run being resumed."""
    if recipe is not None:
        return recipe
    if resume_dir is None:
        raise click.UsageError("give a RECIPE, or --resume RUN_DIR")
    stored = resume_dir / "recipe.yaml"
    if not stored.exists():
        raise UserError(f"cannot resume {resume_dir}: no recipe.yaml in it")
    if profile is not None:
        raise click.UsageError("--profile needs RECIPE (the stored recipe.yaml is already resolved)")
    return stored


def print_plan(recipe: Any, run_dir: Path | None) -> None:
    """Run the pre-flight plan of ``recipe`` (as ``run`` does, same one-line errors) and print it."""
    from compresskit.run.context import build_task
    from compresskit.run.driver import PHASES
    from compresskit.run.plan import plan

    checked = plan(recipe, build_task(recipe))
    click.echo(f"recipe {recipe.name} ({recipe.source})" + (f", profile {recipe.profile}" if recipe.profile else ""))
    click.echo(f"run directory: {Path(run_dir or recipe.resolved_run_dir)}")
    click.echo(f"task: {recipe.task}")
    _print_models(recipe, checked)
    _print_groups(checked)
    click.echo(_search_line(recipe))
    click.echo(f"epochs: distill {recipe.distill.epochs}, soft prune {recipe.prune.schedule.epochs}, "
               f"finetune {recipe.finetune.epochs}")
    click.echo("phases: " + " -> ".join(PHASES))
    click.echo("dry run: nothing trained or written")


def _print_models(recipe: Any, checked: Any) -> None:
    from compresskit.pruning.budget import count_params

    if recipe.teacher is not None:
        click.echo(f"teacher: {recipe.teacher.model}, {count_params(checked.models['teacher']):,} params, "
                   + (f"checkpoint {recipe.teacher.checkpoint}" if recipe.teacher.checkpoint
                      else f"trained {recipe.teacher.train.epochs} epochs"))
    click.echo(f"student: {recipe.student.model}, {count_params(checked.models['student']):,} params"
               + (f", checkpoint {recipe.student.checkpoint}" if recipe.student.checkpoint else "")
               + (f", initialised from the {recipe.student.init_from}" if recipe.student.init_from else ""))
    for key, path in checked.checkpoints.items():
        click.echo(f"{key} {path}: loads strictly")


def _print_groups(checked: Any) -> None:
    for spec in checked.specs:
        click.echo(f"  layer group {spec.name}: patterns {list(spec.patterns)} types {list(spec.types)} "
                   f"bounds {list(spec.bounds)}")
    if checked.reachable is None:  # set by the plan's budget check whenever there are layer groups
        return
    groups = checked.groups
    fewest, most = checked.reachable
    click.echo(f"  {len(groups)} channel groups; rates within the bounds give {fewest:,} to {most:,} params"
               + (f" ({len(groups.skipped)} couplings left unpruned)" if getattr(groups, "skipped", None) else ""))


def _search_line(recipe: Any) -> str:
    search = recipe.search
    if not search.enabled:
        return f"search: off, rates {recipe.prune.rates}"
    budget = search.budget
    effort = ("no trials (rates from the calibration data's output errors)" if search.method == "global" else
              f"{search.initial_points or 'default'} initial + {search.iterations} iterations"
              + (", the global allocation first" if search.start == "global" else ""))
    return (f"search: {search.method}, {effort}, budget [{budget.min_params:,}, {budget.max_params:,}] params"
            + (f", latency <= {budget.max_latency_ms} ms" if budget.max_latency_ms else "")
            + (f", latency <= {budget.max_latency_ratio}x the unpruned student's (ONNX Runtime, "
               f"{search.latency.threads} thread(s))" if budget.max_latency_ratio else ""))
