"""One configuration file for the consumer and the CLI's defaults: flags, then the
environment, then the file, then the built-in defaults; `ledger config show` says which
one each setting came from, secrets masked."""

from __future__ import annotations

from pathlib import Path

from consumer_helpers import cli_json, ledger_cli
from helpers import make_event
from ledger_builders import signers, write_ledger

from ledger.transport.producer import seal


def _ledger(path: Path, events: int) -> Path:
    ci, _, ring = signers()
    write_ledger(path, [seal(make_event(), ci) for _ in range(events)], ring, None, [])
    return path


def test_flags_then_environment_then_the_file_then_defaults(tmp_path: Path) -> None:
    from_file, from_env, from_flag = (_ledger(tmp_path / f"{n}.duckdb", n) for n in (1, 2, 3))
    config = tmp_path / "ledger.toml"
    config.write_text(f'db = "{from_file}"\nsasl_password = "hunter2"\n[consume]\nbatch_size = 7\n')

    def size(*args: str, **env: str) -> int:
        result = ledger_cli("--config", str(config), "status", "--json", *args, timeout=60, **env)
        assert result.returncode == 0, result.stderr
        return int(cli_json(result)["size"])

    assert size() == 1
    assert size(LEDGER_DB=str(from_env)) == 2
    assert size("--db", str(from_flag), LEDGER_DB=str(from_env)) == 3
    shown = {row["setting"]: row for row in cli_json(
        ledger_cli("--config", str(config), "config", "show", "consume", "--json"))}  # fmt: skip
    assert shown["batch_size"] == {"setting": "batch_size", "value": "7",
                                   "from": f"file {config}"}  # fmt: skip
    assert shown["db"]["from"] == f"file {config}"
    assert shown["sasl_password"]["value"] == "****"
    assert shown["topic"]["from"] == "default"


def test_a_setting_no_option_takes_is_named(tmp_path: Path) -> None:
    config = tmp_path / "ledger.toml"
    config.write_text("[status]\nbatch_size = 7\n")
    result = ledger_cli(
        "--config", str(config), "status", "--db", str(_ledger(tmp_path / "l.duckdb", 1))
    )
    assert result.returncode == 2
    assert "[status] has no option batch_size" in result.stderr
    config.write_text("db = \n")
    result = ledger_cli("--config", str(config), "status")
    assert result.returncode == 2 and "ledger.toml" in result.stderr
