"""Docs checked by tests: every command documented, the README's set-up lines are what CI runs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from helpers import cli_command, cli_paths
from typer.testing import CliRunner

from ledger.cli import app

ROOT = Path(__file__).resolve().parent.parent


def test_every_cli_command_is_documented() -> None:
    commands = [
        path
        for path in cli_paths()
        if not getattr(cli_command(*path.split()[1:]), "commands", None)
    ]
    assert "ledger emit deployment" in commands and "ledger consume" in commands
    reference = (ROOT / "docs" / "operations.md").read_text()
    missing = [
        c
        for c in commands
        if c not in reference.replace("\\|", "|")
        and not re.search(
            re.escape(c.rsplit(" ", 1)[0]) + r" [^\n]*" + re.escape(c.rsplit(" ", 1)[1]), reference
        )
    ]
    assert not missing, f"undocumented in docs/operations.md: {missing}"


def test_every_command_has_help_text() -> None:
    for path in cli_paths():
        command = cli_command(*path.split()[1:])
        assert (command.help or "").strip(), f"{path} has no help text"


def test_help_paragraphs_flow_to_the_terminal_width() -> None:
    """A docstring's line breaks are the source's, not the reader's: each paragraph is one
    line on a wide terminal (typer's rich mode kept them, cutting sentences at 80 columns)."""
    runner = CliRunner()
    for path in cli_paths():
        command = cli_command(*path.split()[1:])
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
