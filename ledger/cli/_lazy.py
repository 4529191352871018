"""Commands registered by name and imported when run, so each command loads only what it
uses: ``ledger --help`` imports no command module, ``ledger emit`` no DuckDB, ``ledger
asof`` no Kafka. The registry carries each command's one-line summary for the top-level
help (a test keeps it equal to the command's own)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup

__all__ = ["Command", "LazyGroup"]


@dataclass(frozen=True)
class Command:
    """A command: its name, where it lives (``module:attribute``, a function or a Typer
    app) and the one line ``ledger --help`` shows for it."""

    name: str
    target: str
    summary: str

    def load(self) -> Any:
        """The click command (a group for a Typer app), importing its module now."""
        module, _, attribute = self.target.partition(":")
        found = getattr(importlib.import_module(module), attribute)
        if not isinstance(found, typer.Typer):
            single = typer.Typer(rich_markup_mode="markdown", add_completion=False)
            single.command(name=self.name)(found)
            found = single
        return typer.main.get_command(found)


class LazyGroup(TyperGroup):
    """The root group: lists the registry, loads a command only to run it (or show its
    own help). Listing for the top-level help uses the registry's summaries alone."""

    registry: ClassVar[dict[str, Command]] = {}
    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.registry)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.registry.get(cmd_name)
        if command is None:
            return None
        if self._listing:
            return TyperCommand(name=command.name, help=command.summary, short_help=command.summary)
        return command.load()

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False
