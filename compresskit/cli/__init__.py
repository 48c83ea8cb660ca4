"""The ``compresskit`` command line: parsing, then calls into the library.

Commands::

    compresskit run RECIPE [--set key.path=value ...] [--profile NAME] [--resume RUN_DIR] [--dry-run]
    torchrun --standalone --nproc_per_node=N -m compresskit run RECIPE ...   (data-parallel training phases)
    compresskit prune MODEL_SPEC --rate 0.3 [--group NAME=GLOB[,GLOB]:RATE ...] --input-shape 1,3,32,32 --out pruned.pt
    compresskit export CHECKPOINT --input-shape 1,3,32,32 --out model.onnx [--format onnx|torchscript] [--dynamic]
    compresskit inspect MODEL_OR_CHECKPOINT [--input-shape 1,3,32,32]
    compresskit quantize MODEL.onnx --calibration-images DIR --out INT8.onnx [--method minmax]
    compresskit benchmark MODEL... [--input-shape 1,3,640,640] [--threads 1]
    compresskit recipes [copy NAME [DIR]]   (the recipes shipped in the package; 'run NAME' runs one)
    compresskit NAME ...   (a plugin command: a 'compresskit.commands' entry point of an installed package)

User errors (a malformed recipe, a missing file, an unreadable checkpoint, a run
directory that cannot be used, a bad option or argument) print one line ``Error: ...``
and exit with status 2, without a traceback or usage block. The boundary is the command
group's ``invoke`` (:class:`~compresskit.cli._group.CommandGroup`), so it covers every command,
plugins included: ``ValueError``, ``TypeError``, YAML and unpickling errors and file-system errors
(missing file, permission denied, read-only or full disk) are user errors; anything else prints
one line with the path of a log file holding the traceback and exits with status 1
(:mod:`compresskit.cli._error_boundary`). Checkpoints name the builder that rebuilds them; commands that
load one take ``--trust MODULE`` (see :mod:`compresskit.models.persist`).

Plugins: another package adds a command by declaring a click command in its ``pyproject.toml``::

    [project.entry-points."compresskit.commands"]
    detect = "mypkg.cli:detect_command"

``compresskit --help`` lists it from the entry point without importing it; it is imported only when
that command runs (:func:`command_plugins`). Nothing registers itself at import time.

Layout: ``_group`` (the click group, error boundary, plugins), ``_errors`` (exception -> one line), ``_run``
(``run``), ``_recipes`` (``recipes``), ``_model`` (``prune``, ``export``, ``inspect``), ``_deploy``
(``quantize``, ``benchmark``), ``_options`` (option parsing and model loading they share).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from compresskit.cli._deploy import benchmark_command, quantize_command
from compresskit.cli._error_boundary import UserError
from compresskit.cli._group import COMMAND_ENTRY_POINTS, CommandGroup, command_plugins
from compresskit.cli._model import export_command, inspect_command, prune_command
from compresskit.cli._recipes import recipes_command
from compresskit.cli._run import run_command

__all__ = ["COMMAND_ENTRY_POINTS", "UserError", "cli", "command_plugins", "main"]


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, "-V", "--version", package_name="compresskit", prog_name="compresskit",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """compresskit: structured pruning, rate search and distillation for PyTorch models."""


cli.add_command(run_command)
cli.add_command(prune_command)
cli.add_command(export_command)
cli.add_command(inspect_command)
cli.add_command(quantize_command)
cli.add_command(benchmark_command)
cli.add_command(recipes_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point (``compresskit = compresskit.cli:main``)."""
    cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="compresskit")
