"""The ``compresskit`` command line: parsing, then calls into the library.

Commands::

    compresskit run RECIPE [--set key.path=value ...] [--profile NAME] [--resume RUN_DIR] [--dry-run]
    torchrun --standalone --nproc_per_node=N -m compresskit run RECIPE ...   (data-parallel training phases)
    compresskit prune MODEL_SPEC --rate 0.3 [--group NAME=GLOB[,GLOB]:RATE ...] --input-shape 1,3,32,32 --out pruned.pt
    compresskit export CHECKPOINT --input-shape 1,3,32,32 --out model.onnx [--format onnx|torchscript] [--dynamic]
    compresskit inspect MODEL_OR_CHECKPOINT [--input-shape 1,3,32,32]
    compresskit quantize MODEL.onnx --calibration-images DIR --out INT8.onnx [--method minmax]
    compresskit benchmark MODEL... [--input-shape 1,3,640,640] [--threads 1]
    compresskit detect ... / compresskit evaluate ...   (from reference.featherface.detect)

User errors (a malformed recipe, a missing file, an unreadable checkpoint, a run
directory that cannot be used, a bad option or argument) print one line ``Error: ...``
and exit with status 2, without a traceback or usage block. The boundary is the command group's ``invoke``
(:func:`_boundary`), so it covers every command, plugins included: ``ValueError``,
``TypeError``, YAML and unpickling errors and file-system errors (missing file,
permission denied, read-only or full disk) are user errors; anything else prints
one line with the path of a log file holding the traceback and exits with status 1.
Checkpoints name the builder that rebuilds them; commands that load one take
``--trust MODULE`` (see :mod:`compresskit.persist`).

``detect`` and ``evaluate`` are plugins: :data:`PLUGINS` maps a command name to a
``module:attr`` click command, imported only when that command runs (the library
never imports ``reference`` at import time, and nothing registers itself).
"""

from __future__ import annotations

import datetime
import errno
import functools
import os
import pickle
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["PLUGINS", "cli", "main"]

#: Commands provided by other packages: name -> ("module:attr" of a click command, short help).
PLUGINS: dict[str, tuple[str, str]] = {
    "detect": ("reference.featherface.detect:detect_command",
               "Detect faces in images (reference.featherface)."),
    "evaluate": ("reference.featherface.detect:evaluate_command",
                 "WIDERFace AP of a detector (reference.featherface)."),
}

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """A problem with the user's input: one line, exit status 2."""

    exit_code = 2


def _user_errors(function: F) -> F:
    """Turn the library's user-facing errors into :class:`UserError`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from compresskit.pipeline import PhaseError, RunDirError
        from compresskit.recipe import RecipeError

        try:
            return function(*args, **kwargs)
        except (RecipeError, RunDirError) as error:
            raise UserError(str(error)) from None
        except PhaseError as error:  # not the user's input: exit 1, still one line
            raise click.ClickException(str(error)) from None
        except FileNotFoundError as error:
            raise UserError(f"file not found: {error.filename or error}") from None

    return wrapper  # type: ignore[return-value]


#: File-system errors that are the user's to fix (exit 2), not bugs.
_USER_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ENOTEMPTY}
_MESSAGE_LIMIT = 500


def _one_line(text: str) -> str:
    line = " ".join(text.split())  # one line, however the error was formatted
    return line if len(line) <= _MESSAGE_LIMIT else f"{line[:_MESSAGE_LIMIT]}... ({len(line):,} chars)"


def _write_log(error: BaseException) -> Path | None:
    """Write the traceback of ``error`` to a fresh log file; ``None`` when none can be written.

    The folder is ``$COMPRESSKIT_LOG_DIR``, else ``~/.cache/compresskit/logs``, else the temp folder.
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folders = [os.environ.get("COMPRESSKIT_LOG_DIR"), Path.home() / ".cache" / "compresskit" / "logs",
               tempfile.gettempdir()]
    text = f"compresskit {' '.join(sys.argv[1:])}\n" + "".join(
        traceback.format_exception(type(error), error, error.__traceback__))
    for folder in filter(None, folders):
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            path = Path(folder) / f"compresskit-error-{stamp}-{os.getpid()}.log"
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None


def _boundary(error: Exception) -> click.ClickException:
    """The one-line CLI error for an exception escaping a command.

    User errors (exit 2): the library's ``ValueError``/``TypeError`` (``RecipeError`` and
    ``UntrustedBuilderError`` among them), ``RunDirError``, YAML and unpickling errors, a missing
    optional package (naming the extra to install, :mod:`compresskit._optional`), and
    file-system errors such as a missing file, permission denied, a read-only or full disk.
    A stopped phase (``PhaseError``) exits 1 in one line. Anything else exits 1 with one line
    naming a log file that holds the traceback.
    """
    import yaml

    from compresskit.pipeline import PhaseError, RunDirError

    if isinstance(error, PhaseError):
        return click.ClickException(_one_line(str(error)))
    from compresskit._optional import missing_extra

    missing = missing_extra(error)
    if missing is not None:  # an optional package (extra) is not installed: the user's to fix
        return UserError(_one_line(missing))
    if isinstance(error, OSError) and error.errno in _USER_ERRNOS:
        where = error.filename if error.filename is not None else ""
        reason = error.strerror or str(error)
        if error.errno == errno.ENOENT:
            return UserError(_one_line(f"file not found: {where or error}"))
        return UserError(_one_line(f"{where}: {reason}" if where else reason))
    if isinstance(error, (ValueError, TypeError, RunDirError, yaml.YAMLError, pickle.UnpicklingError, EOFError)):
        text = str(error) or type(error).__name__
        if isinstance(error, (pickle.UnpicklingError, EOFError)):
            text = f"unreadable file ({type(error).__name__}: {text})"
        return UserError(_one_line(text))
    log = _write_log(error)
    where = f"; traceback in {log}" if log is not None else " (no log file could be written)"
    return click.ClickException(_one_line(f"unexpected {type(error).__name__}: {error}") + where)


class _Group(click.Group):
    """A click group that also lists and lazily imports :data:`PLUGINS`, and maps errors to one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:  # a bad option or argument: one line too, with where to look
            where = error.ctx.command_path if error.ctx is not None else ctx.command_path
            raise UserError(_one_line(f"{error.format_message()} (see '{where} --help')")) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:  # noqa: BLE001 - the CLI's one error boundary
            raise _boundary(error) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *PLUGINS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None or name not in PLUGINS:
            return command
        spec, short_help = PLUGINS[name]
        try:
            from compresskit.recipe import RecipeError, resolve_object

            command = resolve_object(spec, f"command {name}", "compresskit")
        except RecipeError as error:
            return _unavailable(name, short_help, str(error))
        if not isinstance(command, click.Command):
            return _unavailable(name, short_help, f"{spec} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Plugins are described from PLUGINS, so that --help does not import them.
        rows = []
        for name in self.list_commands(ctx):
            if name in PLUGINS and name not in self.commands:
                rows.append((name, PLUGINS[name][1]))
            else:
                rows.append((name, self.commands[name].get_short_help_str(60)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, short_help: str, reason: str) -> click.Command:
    @click.command(name, short_help=short_help, context_settings={
        "ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
    @click.pass_context
    def command(ctx: click.Context) -> None:
        raise UserError(f"'{name}' is not available: {reason}")

    return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "-V", "--version", package_name="compresskit", prog_name="compresskit",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """compresskit: structured pruning, rate search and distillation for PyTorch models."""


# --- run ----------------------------------------------------------------------------------


@cli.command("run")
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
@_user_errors
def run_command(recipe: Path | None, overrides: Sequence[str], profile: str | None, resume_dir: Path | None,
                run_dir: Path | None, replace: bool, dry_run: bool, stop_after: str | None,
                progress: bool | None) -> None:
    """Run the compression pipeline of RECIPE (a YAML file).

    Phases: teacher, distill, search, soft_prune, remove, finetune, evaluate,
    export, report. Outputs (checkpoints, metrics.jsonl, search.json, model.onnx,
    report.md) go to the recipe's run_dir. An interrupted run continues with
    --resume RUN_DIR, skipping completed phases.
    """
    from compresskit import pipeline
    from compresskit.recipe import load_recipe

    if recipe is None:
        if resume_dir is None:
            raise click.UsageError("give a RECIPE, or --resume RUN_DIR")
        recipe = resume_dir / "recipe.yaml"
        if not recipe.exists():
            raise UserError(f"cannot resume {resume_dir}: no recipe.yaml in it")
        if profile is not None:
            raise click.UsageError("--profile needs RECIPE (the stored recipe.yaml is already resolved)")
    loaded = load_recipe(recipe, overrides, profile)
    if resume_dir is not None and run_dir is not None and resume_dir != run_dir:
        raise click.UsageError("--resume and --run-dir name different directories")
    target = resume_dir or run_dir
    if stop_after is not None and stop_after not in pipeline.PHASES:
        raise click.BadParameter(f"unknown phase {stop_after!r}; valid: {list(pipeline.PHASES)}",
                                 param_hint="--stop-after")
    if dry_run:
        _print_plan(loaded, target)
        return
    if progress is None:
        progress = sys.stderr.isatty()
    ctx = pipeline.run(loaded, run_dir=target, resume=resume_dir is not None, progress=progress,
                       log=click.echo, stop_after=stop_after, replace=replace)
    from compresskit import distributed

    if not distributed.is_main():  # under torchrun rank 0 speaks for the run
        return
    click.echo(f"run directory: {ctx.run_dir}")
    if (ctx.run_dir / "report.md").exists():
        click.echo(f"report: {ctx.run_dir / 'report.md'}")


def _print_plan(recipe: Any, run_dir: Path | None) -> None:
    from compresskit import pipeline
    from compresskit.budget import count_params
    from compresskit.plan import plan

    task = pipeline.build_task(recipe)
    checked = plan(recipe, task)  # the pre-flight `run` does: the same checks, the same one-line errors
    click.echo(f"recipe {recipe.name} ({recipe.source})" + (f", profile {recipe.profile}" if recipe.profile else ""))
    click.echo(f"run directory: {Path(run_dir or recipe.resolved_run_dir)}")
    click.echo(f"task: {recipe.task}")
    if recipe.teacher is not None:
        click.echo(f"teacher: {recipe.teacher.model}, {count_params(checked.models['teacher']):,} params, "
                   + (f"checkpoint {recipe.teacher.checkpoint}" if recipe.teacher.checkpoint
                      else f"trained {recipe.teacher.train.epochs} epochs"))
    click.echo(f"student: {recipe.student.model}, {count_params(checked.models['student']):,} params"
               + (f", checkpoint {recipe.student.checkpoint}" if recipe.student.checkpoint else "")
               + (f", initialised from the {recipe.student.init_from}" if recipe.student.init_from else ""))
    for key, path in checked.checkpoints.items():
        click.echo(f"{key} {path}: loads strictly")
    for spec in checked.specs:
        click.echo(f"  layer group {spec.name}: patterns {list(spec.patterns)} types {list(spec.types)} "
                   f"bounds {list(spec.bounds)}")
    if checked.reachable is not None:  # set by check_budget whenever there are layer groups
        groups = checked.groups
        fewest, most = checked.reachable
        click.echo(f"  {len(groups)} channel groups; rates within the bounds give {fewest:,} to {most:,} params"
                   + (f" ({len(groups.skipped)} couplings left unpruned)" if getattr(groups, "skipped", None) else ""))
    search = recipe.search
    click.echo(f"search: {search.method if search.enabled else 'off'}"
               + (f", {search.initial_points or 'default'} initial + {search.iterations} iterations, "
                  f"budget [{search.budget.min_params:,}, {search.budget.max_params:,}] params"
                  if search.enabled else f", rates {recipe.prune.rates}")
               + (f", latency <= {search.budget.max_latency_ms} ms" if search.enabled and search.budget.max_latency_ms
                  else "")
               + (f", latency <= {search.budget.max_latency_ratio}x the unpruned student's (ONNX Runtime, "
                  f"{search.latency.threads} thread(s))" if search.enabled and search.budget.max_latency_ratio else ""))
    click.echo(f"epochs: distill {recipe.distill.epochs}, soft prune {recipe.prune.schedule.epochs}, "
               f"finetune {recipe.finetune.epochs}")
    click.echo("phases: " + " -> ".join(pipeline.PHASES))
    click.echo("dry run: nothing trained or written")


# --- prune / export / inspect -----------------------------------------------------------

_TRUST_HELP = ("Import the checkpoint's builder from this module (it runs code). Repeatable. Builders "
               "declared in the 'compresskit.builders' entry points are trusted already.")


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise click.BadParameter(f"expected integers like 1,3,32,32, got {text!r}") from None
    if not shape or any(v < 1 for v in shape):
        raise click.BadParameter(f"dimensions must be >= 1, got {text!r}")
    return shape


def _parse_kwargs(pairs: Sequence[str]) -> dict[str, Any]:
    import yaml

    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--arg")
        result[key] = yaml.safe_load(value)
    return result


def _load_model(spec: str, model_args: dict[str, Any] | None = None,
                trust: Sequence[str] = ()) -> tuple[Any, str]:
    """A model from a compresskit checkpoint path (its builder trusted, see ``--trust``) or a
    model spec (``torchvision:NAME``, ``timm:NAME``, ``module:callable``, a declared ``NAME``; each
    ``[:WEIGHTS]``, see :mod:`compresskit.model_spec`)."""
    path = Path(spec)
    if path.exists() and path.is_file():
        from compresskit.persist import UntrustedBuilderError, load_pruned
        from compresskit.recipe import ensure_cwd_importable

        ensure_cwd_importable()  # the checkpoint's builder may be the user's module

        try:
            return load_pruned(path, trust=trust), "checkpoint"
        except UntrustedBuilderError as error:
            raise UserError(str(error)) from None
        except (OSError, RuntimeError, KeyError, ValueError, TypeError, EOFError,
                pickle.UnpicklingError) as error:
            first_line = (str(error).splitlines() or [""])[0]
            missing = error.__cause__ if isinstance(error.__cause__, ModuleNotFoundError) else None
            hint = (f"; the builder's module {missing.name!r} is not importable from here: add the folder that "
                    f"holds it to PYTHONPATH (PYTHONPATH=/path/to/that/folder compresskit ...) or run from that "
                    f"folder" if missing is not None and missing.name else "")
            raise UserError(f"{spec}: not a readable compresskit checkpoint "
                            f"({type(error).__name__}: {first_line}){hint}") from None
    return _build_spec(spec, model_args)[0], "builder"


def _build_spec(spec: str, model_args: dict[str, Any] | None = None,
                weights: Path | None = None) -> tuple[Any, str, dict[str, Any]]:
    """``(model, builder, builder_kwargs)`` from a model spec (see :mod:`compresskit.model_spec`)."""
    from compresskit.model_spec import WEIGHT_SUFFIXES, build, parse_spec

    if ":" not in spec and spec.lower().endswith((*WEIGHT_SUFFIXES, ".onnx")):
        raise UserError(f"file not found: {spec}")
    try:
        return build(parse_spec(spec, weights, model_args))
    except ValueError as error:
        raise UserError(str(error)) from None


@cli.command("prune")
@click.argument("model_spec")
@click.option("--rate", type=float, default=None, help="One rate in [0, 1) for every prunable channel group.")
@click.option("--group", "groups", multiple=True, metavar="NAME=GLOB[,GLOB]:RATE",
              help="A layer group and its rate, e.g. stage2='stage2.*:0.5'. Repeatable.")
@click.option("--protect", multiple=True, metavar="GLOB", help="Never prune outputs of these modules.")
@click.option("--input-shape", required=True, help="Example input shape, e.g. 1,3,32,32.")
@click.option("--arg", "model_args", multiple=True, metavar="KEY=VALUE", help="Builder keyword argument.")
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A state_dict to load into the built model first (or MODEL_SPEC:WEIGHTS).")
@click.option("--importance", default="fpgm", show_default=True, help="fpgm or magnitude.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to save the pruned model (compresskit.persist format).")
@_user_errors
def prune_command(model_spec: str, rate: float | None, groups: Sequence[str], protect: Sequence[str],
                  input_shape: str, model_args: Sequence[str], weights: Path | None, importance: str,
                  out: Path) -> None:
    """One-shot prune MODEL_SPEC and save it.

    MODEL_SPEC: torchvision:NAME, timm:NAME, package.module:builder or a declared model NAME,
    each optionally followed by :WEIGHTS (a state_dict file), e.g. torchvision:resnet18:r18.pth.
    The result is a physically smaller model saved with its builder reference, so
    'compresskit inspect/export OUT' and compresskit.persist.load_pruned rebuild it.
    """
    import torch

    from compresskit._inspect import check_forward
    from compresskit.budget import count_params
    from compresskit.groups import LayerGroupSpec, find_groups
    from compresskit.persist import save_pruned
    from compresskit.prune import prune

    model, builder, kwargs = _build_spec(model_spec, _parse_kwargs(model_args), weights)
    specs, rates = [], {}
    for text in groups:
        name, sep, rest = text.partition("=")
        patterns, sep2, value = rest.rpartition(":")
        if not sep or not sep2 or not name or not patterns:
            raise click.BadParameter(f"expected NAME=GLOB[,GLOB]:RATE, got {text!r}", param_hint="--group")
        try:
            rates[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"rate of {name!r} must be a number, got {value!r}") from None
        specs.append(LayerGroupSpec(name, patterns=tuple(patterns.split(","))))
    if rate is None and not specs:
        raise click.UsageError("give --rate or at least one --group")
    if rate is not None and specs:
        raise click.UsageError("give either --rate or --group, not both")
    for name, value in ([("--rate", rate)] if rate is not None else rates.items()):
        if not 0.0 <= value < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {value}")
    example = torch.zeros(_parse_shape(input_shape))
    check_forward(model, (example,))  # a wrong --input-shape is one line, not a trace from the tracer
    before = count_params(model)
    try:
        groups_found = find_groups(model, (example,), specs or None, protect=tuple(protect))
        pruned = prune(model, (example,), rate if rate is not None else rates, groups=groups_found,
                       importance=importance)
    except ValueError as error:  # unknown pattern / importance, overlapping groups
        raise UserError(str(error)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    save_pruned(out, pruned, builder, kwargs)  # the removal history travels with the model
    after = count_params(pruned)
    click.echo(f"{before:,} -> {after:,} parameters ({after / before:.1%}); saved {out}")


@cli.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .onnx (or TorchScript .pt) file.")
@click.option("--input-shape", required=True, help="Example input shape, e.g. 1,3,320,320.")
@click.option("--format", "export_format", type=click.Choice(["onnx", "torchscript"]), default="onnx",
              show_default=True, help="ONNX (checked in ONNX Runtime) or a TorchScript trace (checked after loading).")
@click.option("--dynamic", is_flag=True,
              help="Free batch and height/width axes where the model allows; checked at two input shapes.")
@click.option("--atol", default=1e-4, show_default=True, help="Exported vs PyTorch tolerance.")
@click.option("--opset", default=17, show_default=True)
@click.option("--trust", multiple=True, metavar="MODULE", help=_TRUST_HELP)
@_user_errors
def export_command(checkpoint: Path, out: Path, input_shape: str, export_format: str, dynamic: bool,
                   atol: float, opset: int, trust: Sequence[str]) -> None:
    """Export a compresskit CHECKPOINT (pruned model) to ONNX or TorchScript and check it against PyTorch.

    The file carries the model's preprocessing (channel order, mean, scale, nominal input size) in its
    metadata where the model's builder declares it, so 'quantize', 'detect' and web/ need no flags.
    """
    import torch

    from compresskit.export import export_model

    if not checkpoint.exists():
        raise UserError(f"file not found: {checkpoint}")
    from compresskit._inspect import check_forward

    model, _ = _load_model(str(checkpoint), trust=trust)
    model.eval()
    example = (torch.randn(_parse_shape(input_shape), generator=torch.Generator().manual_seed(0)),)
    check_forward(model, example)  # a wrong --input-shape is one line, not an exporter trace
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = export_model(model, example, out, format=export_format, dynamic=dynamic, atol=atol, opset=opset)
    except ValueError as error:
        raise UserError(f"export check failed: {error}") from None
    checks = "; ".join(f"{'x'.join(map(str, shapes[0]))}: {difference:.2e}" for shapes, difference in result.checks)
    axes = result.dynamic_axes.get("input", {})
    click.echo(f"wrote {result.path} ({result.path.stat().st_size:,} bytes, {export_format}, "
               f"dynamic axes {sorted(axes) or 'none'}); "
               f"max |{'ORT' if export_format == 'onnx' else 'TorchScript'} - torch| at {checks}")


def _parse_floats(text: str | None, count: int, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()  # not numbers: the same error as the wrong count
    if len(values) != count:
        raise click.BadParameter(f"expected {count} comma-separated numbers, got {text!r}", param_hint=option)
    return values


@cli.command("quantize")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path), metavar="MODEL.onnx")
@click.option("--calibration-images", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A folder of images (searched recursively) to calibrate activation ranges on.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The INT8 .onnx file.")
@click.option("--count", default=32, show_default=True, help="Calibration images used (sorted by path).")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="How activation ranges are set from the calibration data.")
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor instead of per output channel.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Keep ONNX nodes whose names match in FP32, e.g. '/body/stage1/*'. Repeatable.")
@click.option("--mean", default=None, metavar="M1,M2,M3", help="Per-channel mean (if the file has no metadata).")
@click.option("--scale", type=float, default=None, help="Multiplier after the mean (if the file has no metadata).")
@click.option("--channel-order", type=click.Choice(["BGR", "RGB"]), default=None,
              help="Channel order of the input (if the file has no metadata).")
@click.option("--input-size", default=None, metavar="H,W", help="Calibration image size (default: the file's).")
@_user_errors
def quantize_command(model: Path, calibration_images: Path, out: Path, count: int, method: str, per_tensor: bool,
                     exclude: Sequence[str], mean: str | None, scale: float | None, channel_order: str | None, input_size: str | None) -> None:
    """INT8 post-training static quantization of MODEL.onnx (ONNX Runtime, QDQ, per-channel weights).

    The preprocessing (channel order, mean, scale, input size) comes from the file's metadata
    ('compresskit export' writes it for models that declare it); --mean/--scale/--channel-order
    override it or supply it. Prints the FP32 and INT8 ONNX Runtime latency on one calibration input.
    """
    import dataclasses

    from compresskit.benchmark import benchmark_models
    from compresskit.export import Preprocessing, read_metadata
    from compresskit.quantize import calibration_images as load_images
    from compresskit.quantize import quantize_onnx

    if model.suffix != ".onnx" or not model.is_file():
        raise UserError(f"{model}: not an existing .onnx file (export one with 'compresskit export')")
    if not calibration_images.is_dir():
        raise UserError(f"{calibration_images}: not a folder of calibration images")
    try:
        preprocessing = Preprocessing.from_metadata(read_metadata(model))
        overrides = {key: value for key, value in (("mean", _parse_floats(mean, 3, "--mean")), ("scale", scale),
                                                   ("channel_order", channel_order)) if value is not None}
        if preprocessing is None:
            if "mean" not in overrides or "scale" not in overrides:
                raise UserError(f"{model} carries no preprocessing metadata: give --mean and --scale "
                                "(and --channel-order, default RGB)")
            preprocessing = Preprocessing(**overrides)
        else:
            preprocessing = dataclasses.replace(preprocessing, **overrides)
        size = _parse_floats(input_size, 2, "--input-size")
        samples = load_images(calibration_images, preprocessing, count,
                              None if size is None else (int(size[0]), int(size[1])))
        out.parent.mkdir(parents=True, exist_ok=True)
        path = quantize_onnx(model, out, samples, method=method, per_channel=not per_tensor, exclude=exclude)
    except ValueError as error:
        raise UserError(str(error)) from None
    import torch

    report = benchmark_models({"fp32": model, "int8": path}, (torch.from_numpy(samples[0]),), threads=1,
                              warmup=2, rounds=5)
    click.echo(f"wrote {path} ({path.stat().st_size:,} bytes; FP32 {model.stat().st_size:,}); "
               f"{len(samples)} calibration images, {method}, "
               f"{'per-tensor' if per_tensor else 'per-channel'} weights")
    click.echo(report.table("fp32"))


@cli.command("benchmark")
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--input-shape", default="1,3,640,640", show_default=True, help="Input shape (batch first).")
@click.option("--threads", default=1, show_default=True, help="Intra-op threads (torch and ONNX Runtime).")
@click.option("--warmup", default=3, show_default=True, help="Untimed calls per model first.")
@click.option("--rounds", default=15, show_default=True, help="Interleaved timed rounds.")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every sample and the settings here.")
@click.option("--trust", multiple=True, metavar="MODULE", help=_TRUST_HELP)
@_user_errors
def benchmark_command(models: Sequence[str], input_shape: str, threads: int, warmup: int, rounds: int,
                      json_path: Path | None, trust: Sequence[str]) -> None:
    """Latency of MODEL... side by side: torch eager for checkpoints / 'module:builder', ONNX Runtime
    for .onnx files (FP32 or INT8), interleaved rounds on one input; median, p90 and the ratio to the
    first model (median of per-round ratios)."""
    import json

    import torch

    from compresskit.benchmark import benchmark_models

    if threads < 1 or warmup < 0 or rounds < 1:
        raise UserError(f"need --threads >= 1, --warmup >= 0, --rounds >= 1; got {threads}, {warmup}, {rounds}")
    loaded: dict[str, Any] = {}
    for spec in models:
        name = Path(spec).name if Path(spec).exists() else spec
        if name in loaded:
            name = spec
        if spec.endswith(".onnx"):
            if not Path(spec).is_file():
                raise UserError(f"file not found: {spec}")
            loaded[name] = Path(spec)
        else:
            loaded[name] = _load_model(spec, trust=trust)[0].eval()
    inputs = (torch.randn(_parse_shape(input_shape), generator=torch.Generator().manual_seed(0)),)
    try:
        report = benchmark_models(loaded, inputs, threads=threads, warmup=warmup, rounds=rounds)
    except ValueError as error:
        raise UserError(str(error)) from None
    for name, kind in report.notes.items():
        click.echo(f"{name}: {kind}")
    click.echo(report.table())
    if json_path is not None:
        json_path.write_text(json.dumps(report.to_dict(), indent=1) + "\n")


@cli.command("inspect")
@click.argument("model_spec", metavar="MODEL_OR_CHECKPOINT")
@click.option("--input-shape", default=None, help="Input shape for MACs, e.g. 1,3,32,32.")
@click.option("--arg", "model_args", multiple=True, metavar="KEY=VALUE", help="Builder keyword argument.")
@click.option("--trust", multiple=True, metavar="MODULE", help=_TRUST_HELP)
@click.option("--weights", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A state_dict to load into a model spec (or MODEL_SPEC:WEIGHTS).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@_user_errors
def inspect_command(model_spec: str, input_shape: str | None, model_args: Sequence[str],
                    trust: Sequence[str], weights: Path | None, as_json: bool) -> None:
    """Parameters, MACs and per-layer channels/MACs of a checkpoint or a model spec.

    MODEL_OR_CHECKPOINT: a pruned checkpoint (shown before -> after pruning: the builder's
    unpruned model against the pruned one), or a model spec as 'prune' takes it
    (torchvision:resnet18, package.module:builder, NAME:WEIGHTS).
    """
    import json

    import torch

    from compresskit._inspect import describe

    if weights is not None and Path(model_spec).is_file():
        raise UserError(f"--weights applies to a model spec, not to the checkpoint {model_spec} (it has its own)")
    if weights is not None:
        model, kind = _build_spec(model_spec, _parse_kwargs(model_args), weights)[0], "builder"
    else:
        model, kind = _load_model(model_spec, _parse_kwargs(model_args), trust)
    before = None
    if kind == "checkpoint" and getattr(model, "compresskit_history", None):
        before = _unpruned(Path(model_spec))
    inputs = (torch.zeros(_parse_shape(input_shape)),) if input_shape is not None else None
    info = {"source": model_spec, "kind": kind, "input_shape": input_shape, **describe(model, inputs, before)}
    if as_json:
        click.echo(json.dumps(info, indent=1))
        return
    click.echo(f"{model_spec} ({kind}): {info['model']}")

    def change(key: str) -> str:
        now = info[key]
        if now is None:
            return "-"
        if "before" not in info:
            return f"{now:,}"
        was = info["before"][key]
        return f"{now:,} (before pruning {was:,}: {now / was:.1%})" if was else f"{now:,} (before pruning 0)"

    click.echo(f"parameters: {change('params')}")
    if inputs is not None:
        click.echo(f"MACs @ {input_shape}: {change('macs')}")
    pruned = "before" in info
    click.echo(f"{'layer':<40} {'out channels':>14} {'params':>10} {'MACs':>14}")
    for name, row in info["layers"].items():
        channels = f"{row['out_before']} -> {row['out']}" if pruned and row["out_before"] != row["out"] \
            else str(row["out"])
        macs = "-" if row["macs"] is None else f"{row['macs']:,}"
        click.echo(f"{name:<40} {channels:>14} {row['params']:>10,} {macs:>14}")


def _unpruned(path: Path) -> Any:
    """The fresh, unpruned model the (already trusted and loaded) checkpoint's builder makes."""
    import torch

    from compresskit.recipe import resolve_object

    payload = torch.load(path, map_location="cpu", weights_only=True)
    builder = resolve_object(payload["builder"], "builder", str(path))
    return builder(**payload["builder_kwargs"])


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``compresskit = compresskit.cli:main``)."""
    cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="compresskit")


if __name__ == "__main__":
    main()
