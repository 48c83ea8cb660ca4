"""``compresskit recipes``: the recipes shipped in the package, listed and copied out to edit.

Contract: parsing only; :mod:`compresskit.config.shipped` finds, describes and copies the files.
"""

from __future__ import annotations

from pathlib import Path

import click

from compresskit.cli._error_boundary import UserError

__all__ = ["recipes_command"]


@click.group("recipes", invoke_without_command=True)
@click.pass_context
def recipes_command(ctx: click.Context) -> None:
    """List the shipped recipes (run one with 'compresskit run NAME'); 'copy NAME DIR' copies one out."""
    if ctx.invoked_subcommand is not None:
        return
    from compresskit.config.shipped import describe_recipe, shipped_recipes

    recipes = shipped_recipes()
    width = max(map(len, recipes), default=0)
    for name, path in recipes.items():
        click.echo(f"{name:<{width}}  {describe_recipe(path)}")
    click.echo(f"(in {next(iter(recipes.values())).parent if recipes else '-'}; "
               "'compresskit recipes copy NAME .' copies one to edit)")


@recipes_command.command("copy")
@click.argument("name")
@click.argument("destination", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace files already in DESTINATION.")
def copy_command(name: str, destination: Path, force: bool) -> None:
    """Copy the shipped recipe NAME (and the shipped recipes it extends) into DESTINATION (default: here)."""
    from compresskit.config.shipped import copy_recipe

    try:
        written = copy_recipe(name, destination, overwrite=force)
    except FileExistsError as error:
        raise UserError(str(error)) from None
    for path in written:
        click.echo(f"wrote {path}")
