"""The ``compresskit`` click group: the error boundary of every command and the plugin commands.

Contract: :class:`CommandGroup` runs a command and turns whatever escapes it into one line
(:func:`compresskit.cli._error_boundary.to_click_error`; a bad option or argument too, with where to look for
help). Commands of other packages come from the ``compresskit.commands`` entry points
(:data:`COMMAND_ENTRY_POINTS`, ``name = "package.module:click_command"``), as pytest and flake8 find
their plugins: ``--help`` lists them from the entry points' metadata without importing them, and a
plugin is imported only when its command runs. A plugin that cannot be imported (or is not a click
command) becomes a command that fails in one line saying why. A built-in command wins over a plugin of
the same name. Nothing registers itself at import time.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from compresskit.cli._error_boundary import UserError, one_line, to_click_error

__all__ = ["COMMAND_ENTRY_POINTS", "CommandGroup", "command_plugins", "unavailable_command"]

COMMAND_ENTRY_POINTS = "compresskit.commands"


def command_plugins() -> dict[str, EntryPoint]:
    """Command name -> its entry point in the :data:`COMMAND_ENTRY_POINTS` group (nothing imported)."""
    return {entry.name: entry for entry in entry_points(group=COMMAND_ENTRY_POINTS)}


def _short_help(entry: EntryPoint) -> str:
    """What ``--help`` says of a plugin without importing it: its docstring's first sentence, read from the
    module's source (parsed, never run), or the module it comes from when that cannot be read."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec(entry.module)  # imports the parent package only
        with open(spec.origin, encoding="utf-8") as handle:  # type: ignore[union-attr]
            tree = ast.parse(handle.read())
    except Exception:  # noqa: BLE001 - no source (a compiled module), a parent that fails: say where it is from
        return f"(plugin from {entry.module})"
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == entry.attr:
            docstring = ast.get_docstring(node)
            if docstring:
                return click.Command(entry.name, help=docstring).get_short_help_str(60)
    return f"(plugin from {entry.module})"


def unavailable_command(name: str, short_help: str, reason: str) -> click.Command:
    """A command ``name`` that accepts any arguments and fails in one line: not available, ``reason``."""

    @click.command(name, short_help=short_help, context_settings={
        "ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
    def command() -> None:
        raise UserError(one_line(f"'{name}' is not available: {reason}"))

    return command


def _load_plugin(name: str, entry: EntryPoint) -> click.Command:
    try:
        command = entry.load()
    except Exception as error:  # noqa: BLE001 - any failure importing a plugin makes it unavailable
        return unavailable_command(name, _short_help(entry),
                                   f"importing {entry.value} failed ({type(error).__name__}: {error})")
    if not isinstance(command, click.Command):
        return unavailable_command(name, _short_help(entry), f"{entry.value} is not a click command")
    return command


class CommandGroup(click.Group):
    """A click group that maps errors to one line and adds the plugin commands (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:  # a bad option or argument: one line too, with where to look
            where = error.ctx.command_path if error.ctx is not None else ctx.command_path
            raise UserError(one_line(f"{error.format_message()} (see '{where} --help')")) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as error:  # noqa: BLE001 - the CLI's one error boundary
            raise to_click_error(error) from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *command_plugins()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        entry = command_plugins().get(name)
        return None if entry is None else _load_plugin(name, entry)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Plugins are described from their entry points, so that --help does not import them.
        plugins = command_plugins()
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                rows.append((name, self.commands[name].get_short_help_str(60)))
            else:
                rows.append((name, _short_help(plugins[name])))
        with formatter.section("Commands"):
            formatter.write_dl(rows)
