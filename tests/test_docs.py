"""Docs checked by tests: every command documented, the README's set-up lines are what CI runs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import typer
from typer.testing import CliRunner

from ledger.cli import app

ROOT = Path(__file__).resolve().parent.parent


def _commands(group: Any, prefix: str = "ledger") -> list[str]:
    """Every command path; typer ships its own click, so groups are found by shape."""
    found: list[str] = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if getattr(command, "commands", None):
            if command.invoke_without_command:
                found.append(path)
            found.extend(_commands(command, path))
        else:
            found.append(path)
    return found


def test_every_cli_command_is_documented() -> None:
    commands = _commands(typer.main.get_group(app))
    assert "ledger emit deployment" in commands and "ledger consume" in commands
    reference = (ROOT / "docs" / "operations.md").read_text()
    missing = [c for c in commands if c not in reference.replace("\\|", "|")
               and not re.search(re.escape(c.rsplit(" ", 1)[0]) + r" [^\n]*" +
                                 re.escape(c.rsplit(" ", 1)[1]), reference)]
    assert not missing, f"undocumented in docs/operations.md: {missing}"


def test_every_command_has_help_text() -> None:
    group = typer.main.get_group(app)
    for path in _commands(group):
        command = group
        for part in path.split()[1:]:
            command = command.commands[part]
        assert (command.help or "").strip(), f"{path} has no help text"


def test_help_paragraphs_flow_to_the_terminal_width() -> None:
    """A docstring's line breaks are the source's, not the reader's: each paragraph is one
    line on a wide terminal (typer's rich mode kept them, cutting sentences at 80 columns)."""
    group = typer.main.get_group(app)
    runner = CliRunner()
    for path in _commands(group):
        command = group
        for part in path.split()[1:]:
            command = command.commands[part]
        result = runner.invoke(app, [*path.split()[1:], "--help"], env={"COLUMNS": "250"})
        lines = {" ".join(line.split()) for line in result.output.splitlines()}
        for paragraph in inspect.cleandoc(command.help or "").split("\n\n"):
            flowed = " ".join(paragraph.replace("`", "").split())
            assert flowed in lines, f"{path} --help breaks the paragraph {flowed[:60]!r}…"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)
    demo, tests = blocks[0].strip(), blocks[1].strip()
    assert demo.endswith("ledger demo")
    assert tests.endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
