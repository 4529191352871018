"""`ledger config show`: the settings a command would use, and where each comes from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli._common import JsonFlag, fail, new_app, out, print_json, reporting_errors
from ledger.cli._terminal import table

app = new_app("Show the settings a command would use, and where each comes from.")


@app.callback()
def config() -> None:
    """Show the settings a command would use, and where each comes from."""


@app.command()
def show(
    ctx: typer.Context,
    command: Annotated[str, typer.Argument(help="The command, e.g. consume or emit.")] = "consume",
    json_out: JsonFlag = False,
) -> None:
    """The effective value of each of a command's settings, from its environment variable,
    the configuration file (--config, LEDGER_CONFIG) or its default; secrets masked.

    Example: `ledger config show consume` (with LEDGER_CONFIG, or `ledger --config FILE` first)"""
    from ledger.cli import _Ledger
    from ledger.cli._config import SECRET_WORDS, command_defaults, load_config

    if command not in _Ledger.registry:
        fail(f"no command {command!r}: one of {', '.join(sorted(_Ledger.registry))}")
    path: Path | None = (ctx.find_root().obj or {}).get("config")
    with reporting_errors():
        loaded = _Ledger.registry[command].load()
        from_file = command_defaults(load_config(path), command, loaded, path) if path else {}
    rows = []
    for param in _settings(loaded):
        envvar = param.envvar if isinstance(param.envvar, str) else None
        if envvar and envvar in os.environ:
            value, source = os.environ[envvar], f"environment {envvar}"
        elif param.name in from_file:
            value, source = from_file[param.name], f"file {path}"
        else:
            value, source = param.default, "default"
        if value is not None and any(word in param.name for word in SECRET_WORDS):
            value = "****"
        rows.append({"setting": param.name, "value": None if value is None else str(value),
                     "from": source})  # fmt: skip
    if json_out:
        print_json(rows)
        return
    grid = table("setting", "value", "from", title=f"ledger {command}")
    for row in rows:
        grid.add_row(row["setting"], row["value"] or "-", row["from"])
    out.print(grid)


def _settings(command: Any) -> list[Any]:
    """A command's options that carry a setting (not --help, --json), sorted by name."""
    params = [p for p in command.params if p.name and p.param_type_name == "option"
              and p.name not in {"json_out", "help"}]  # fmt: skip
    return sorted(params, key=lambda p: p.name)
