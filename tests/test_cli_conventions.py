"""The command line's conventions (docs/cli.md), checked on every command: what scripts, CI
templates and new users rely on, whichever command they run."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import cli_command, cli_paths
from kafka import KafkaProducer
from typer.testing import CliRunner

from ledger.cli import COMMANDS, app
from ledger.cli._options import PRODUCER
from ledger.store.writer import LedgerWriter
from ledger.transport.broker import free_port
from ledger.wire.keyring import generate_key_files

ROOT = Path(__file__).resolve().parent.parent
PRODUCER_OPTIONS = {name for name, _, _ in PRODUCER.params}


def _leaves() -> list[tuple[str, Any]]:
    return [
        (path, command)
        for path in cli_paths()
        if not getattr(command := cli_command(*path.split()[1:]), "commands", None)
    ]


def _options(command: Any) -> dict[str, Any]:
    """The command's options by their long name (--json, --key)."""
    return {opt: param for param in command.params for opt in param.opts if opt.startswith("--")}


def test_every_command_answers_in_json_too() -> None:
    missing = [path for path, command in _leaves() if "--json" not in _options(command)]
    assert not missing, f"no --json: {missing}"


def test_every_command_shows_an_example_of_itself() -> None:
    """A newcomer reads `--help` before any document: each command shows one way to run it."""
    missing = [
        path for path, command in _leaves()
        if f"Example: `{path}" not in " ".join((command.help or "").split())
    ]  # fmt: skip
    assert not missing, f"no example in --help: {missing}"


def test_no_flag_reads_as_if_it_took_a_value() -> None:
    """Typer's help once printed `<bool>` beside every flag, --help included."""
    runner = CliRunner()
    for path in ["ledger", *cli_paths()]:
        result = runner.invoke(app, [*path.split()[1:], "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, path
        assert "--help  " in " ".join(result.output.split("│")), path


def test_a_command_that_signs_as_a_producer_takes_the_whole_producer_set() -> None:
    """--key names a producer's key, and comes with --bootstrap, --topic, TLS/SASL, --source
    and --actor: one set, spelled the same everywhere."""
    signing = [(path, command) for path, command in _leaves() if "--key" in _options(command)]
    assert "ledger emit deployment" in [path for path, _ in signing]
    for path, command in signing:
        names = {param.name for param in command.params}
        assert names >= PRODUCER_OPTIONS, f"{path} lacks {PRODUCER_OPTIONS - names}"


def test_the_ledger_key_is_named_apart_from_a_producer_key() -> None:
    for path, command in _leaves():
        options = _options(command)
        assert "--checkpoint-key" not in options, path
        if "--key" in options:  # a producer's key: its help says so
            assert "producer" in (options["--key"].help or ""), path
    signers = {path for path, command in _leaves() if "--ledger-key" in _options(command)}
    assert signers == {
        "ledger consume",
        "ledger evidence",
        "ledger keys rotate-ledger",
        "ledger restore",
    }


def test_a_file_a_command_works_on_is_an_argument_and_stdin_is_dash() -> None:
    for path, command in _leaves():
        assert "--file" not in _options(command), f"{path}: the file is an argument"
    for path in ("ledger emit file", "ledger verify-bundle", "ledger proof verify"):
        (argument,) = [
            p for p in cli_command(*path.split()[1:]).params if p.param_type_name == "argument"
        ]
        assert argument.metavar == "FILE|-", path


def test_exit_codes_are_named_from_the_one_table() -> None:
    """No command exits with a bare number: each code comes from ledger.cli._common.Exit,
    whose values docs/cli.md lists."""
    table = (ROOT / "docs" / "cli.md").read_text()
    from ledger.cli._common import Exit

    for code in Exit:
        assert re.search(rf"^\| {code.value} \| ", table, flags=re.M), f"{code} not in docs/cli.md"
    for source in (ROOT / "ledger" / "cli").glob("*.py"):
        text = source.read_text()
        assert not re.search(r"Exit\(\d", text), f"{source.name}: a bare exit code"
        assert not re.search(r"fail\([^)]*code=\d", text, flags=re.S), source.name


def test_the_top_level_help_lists_each_command_as_its_own_help_says() -> None:
    for registered in COMMANDS:
        own = (registered.load().help or "").strip().split("\n\n")[0]
        assert " ".join(own.split()) == registered.summary, registered.name


@pytest.fixture
def producer_key(tmp_path: Path) -> Path:
    return generate_key_files("ci", tmp_path)[0]


_CLASSIFY = shlex.split(
    "classify --service checkout --env prod --state stateless --criticality low --model immutable"
)


@pytest.mark.parametrize("where", ["before", "after"])
def test_producer_options_go_before_the_event_kind_or_after_it(
    where: str, producer_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both spellings reach the broker named with the key given (here none answers: exit 3)."""
    monkeypatch.setitem(KafkaProducer.DEFAULT_CONFIG, "bootstrap_timeout_ms", 1000)
    closed = f"127.0.0.1:{free_port()}"
    options = ["--key", str(producer_key), "--bootstrap", closed]
    args = ["emit", *options, *_CLASSIFY] if where == "before" else ["emit", *_CLASSIFY, *options]
    result = CliRunner().invoke(app, args, env={"LEDGER_BOOTSTRAP": None, "LEDGER_KEY": None})
    assert result.exit_code == 3, result.output
    assert f"cannot reach Kafka at {closed}" in result.stderr


def test_one_option_given_before_and_after_with_two_values_is_refused(producer_key: Path) -> None:
    result = CliRunner().invoke(
        app, ["emit", "--topic", "one", *_CLASSIFY, "--topic", "two", "--key", str(producer_key)]
    )
    assert result.exit_code == 2
    assert "--topic is given twice" in result.stderr


def _loaded_by(*args: str) -> tuple[int, list[str]]:
    """Run `ledger ARGS` in a fresh interpreter: its exit code, and which of Kafka, DuckDB,
    FastAPI, uvicorn and httpx it imported."""
    code = (
        "import json, sys\nfrom ledger.cli import main\nsys.argv = ['ledger', *sys.argv[1:]]"
        "\ntry:\n    main()\nexcept SystemExit as exit:\n    code = exit.code\n"
        "print(json.dumps([code, sorted(m for m in ('kafka', 'duckdb', 'fastapi', 'uvicorn',"
        " 'httpx') if m in sys.modules)]), file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )
    code, loaded = json.loads(result.stderr.strip().splitlines()[-1])
    return int(code or 0), loaded


def test_help_and_questions_load_no_kafka_and_no_web_server(
    tmp_path: Path, keyring_file: Path
) -> None:
    """A command loads what it uses: `ledger --help` and a question to the ledger file pay
    for neither Kafka nor the HTTP API (measured start-up: docs/benchmarks.md)."""
    db = tmp_path / "ledger.duckdb"
    LedgerWriter(db).close()
    assert _loaded_by("--help") == (0, [])
    assert _loaded_by("keys", "list", "--keyring", str(keyring_file)) == (0, [])
    assert _loaded_by("asof", "--db", str(db), "--service", "s", "--env", "e") == (0, ["duckdb"])
    assert _loaded_by("verify-bundle", "--help") == (0, [])
