"""Bad input gets an error naming what is wrong, never a traceback: times off the
calendar, damaged or foreign files given as a ledger, an image whose repository is no
repository name, a private key open to others.

Each of these once ended in a traceback (exit 1, no JSON; 500 over HTTP) or, for a
ledger cut short, in answers read silently from what was left of it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest
from attack_helpers import Witnessed
from consumer_helpers import ledger_cli
from fastapi.testclient import TestClient
from helpers import DIGEST_A, make_event

from ledger.api.app import create_app
from ledger.errors import InvalidEventError
from ledger.wire.keyring import Signer

OFF_THE_CALENDAR = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "99999999 days ago"]


@pytest.mark.parametrize("moment", OFF_THE_CALENDAR)
@pytest.mark.parametrize(
    "command",
    [
        ["asof", "--service", "checkout", "--env", "prod", "--at"],
        ["timeline", "--service", "checkout", "--env", "prod", "--from"],
        ["evidence", "--service", "checkout", "--env", "prod", "--at"],
    ],
)
def test_a_time_off_the_calendar_is_refused_by_name(
    ledger: Path, command: list[str], moment: str
) -> None:
    result = ledger_cli(*command, moment, "--db", str(ledger))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{command[-1]}: " in result.stderr and moment in result.stderr


@pytest.mark.parametrize("moment", OFF_THE_CALENDAR[:2])
@pytest.mark.parametrize(
    ("path", "name"), [("/v1/asof", "at"), ("/v1/timeline", "from"), ("/v1/evidence", "at")]
)
def test_the_api_refuses_a_time_off_the_calendar_with_400(
    ledger: Path, path: str, name: str, moment: str
) -> None:
    con = duckdb.connect(str(ledger), read_only=True)
    try:
        client = TestClient(create_app(con.cursor, "t0ken"), raise_server_exceptions=False)
        response = client.get(
            path,
            params={"service": "checkout", "env": "prod", name: moment},
            headers={"Authorization": "Bearer t0ken"},
        )
    finally:
        con.close()
    assert response.status_code in (400, 404), response.text  # 404: this app signs no bundles
    if path != "/v1/evidence":
        assert response.status_code == 400
        assert "outside the times a question can name" in response.json()["detail"]


@pytest.mark.parametrize("value", ["yesterday", "2026-11-20T14:03:00", "99999999 days ago"])
def test_the_api_reads_a_time_as_the_cli_does_and_refuses_it_in_the_same_words(
    ledger: Path, value: str
) -> None:
    """`at` defaults to now and takes 'now' and 'N units ago', as `--at` does; a time it
    refuses is refused in the CLI's sentence, naming the parameter instead of the option."""
    cli = ledger_cli("asof", "--service", "checkout", "--env", "prod", "--at", value,
                     "--db", str(ledger))  # fmt: skip
    con = duckdb.connect(str(ledger), read_only=True)
    try:
        client = TestClient(create_app(con.cursor, "t0ken"))
        auth = {"Authorization": "Bearer t0ken"}
        asked = {"service": "checkout", "env": "prod"}
        by_default = client.get("/v1/asof", params=asked, headers=auth)
        relative = client.get("/v1/asof", params=asked | {"at": "2 hours ago"}, headers=auth)
        now = client.get("/v1/snapshot", params={"env": "prod", "at": "now"}, headers=auth)
        refused = client.get("/v1/asof", params=asked | {"at": value}, headers=auth)
    finally:
        con.close()
    assert (by_default.status_code, relative.status_code, now.status_code) == (200, 200, 200)
    assert refused.status_code == 400
    sentence = cli.stderr.split("error: --at: ", 1)[1].strip()
    assert refused.json()["detail"] == f"at: {sentence}"


def test_an_event_time_off_the_calendar_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEventError) as caught:
        make_event(time="0001-01-01T00:00:00+01:00")
    assert caught.value.message.startswith("time: ") and "outside the calendar" in str(caught.value)


def test_emit_names_a_time_off_the_calendar(tmp_path: Path) -> None:
    key = tmp_path / "ci.key"
    Signer.generate("ci").save(key)
    result = ledger_cli(
        "emit", "--time", "0001-01-01T00:00:00+01:00", "--key", str(key), "--source", "ci/x",
        "--bootstrap", "127.0.0.1:9", "deployment", "--service", "checkout", "--env", "prod",
        "--image", "registry.example/checkout@" + DIGEST_A,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "outside the calendar" in result.stderr and "Traceback" not in result.stderr


def test_an_uppercase_repository_is_named_as_such_not_as_unpinned() -> None:
    with pytest.raises(InvalidEventError) as caught:
        make_event(image="Registry.example/Checkout@" + DIGEST_A)
    message = caught.value.message
    assert "'Registry.example/Checkout' is not a repository name" in message
    assert "not pinned" not in message


# --- files given as a ledger -----------------------------------------------------------------

READERS = [
    ["status"],
    ["verify"],
    ["quarantine"],
    ["asof", "--service", "checkout", "--env", "prod"],
]


@pytest.mark.parametrize("percent", [50, 90, 99])
@pytest.mark.parametrize("command", READERS)
def test_a_ledger_cut_short_is_named_damaged_by_every_command(
    ledger: Path, command: list[str], percent: int
) -> None:
    size = ledger.stat().st_size
    with ledger.open("r+b") as file:
        file.truncate(size * percent // 100)
    result = ledger_cli(*command, "--db", str(ledger), "--json")
    assert result.returncode == 2, result.stdout
    assert "is damaged" in result.stderr and "restore it from a backup" in result.stderr.lower()
    assert result.stdout == ""  # no answer from what is left of it


def test_the_consumer_refuses_a_ledger_cut_short(witnessed: Witnessed, tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    shutil.copy(witnessed.db, db)
    with db.open("r+b") as file:
        file.truncate(db.stat().st_size // 2)
    result = ledger_cli("consume", "--db", str(db), "--keyring", str(witnessed.keyring),
                        "--bootstrap", "127.0.0.1:9", "--until-idle", "1")  # fmt: skip
    assert result.returncode == 2
    assert "is damaged" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
@pytest.mark.parametrize("command", READERS)
def test_a_file_that_is_no_database_is_named_no_ledger(
    tmp_path: Path, command: list[str], suffix: str
) -> None:
    path = tmp_path / f"export{suffix}"
    if suffix == ".parquet":
        duckdb.sql(f"COPY (SELECT 1 AS a) TO '{path}' (FORMAT parquet)")
    else:
        path.write_text(json.dumps({"seq": 1}) if suffix == ".json" else "seq,hash\n1,ab\n")
    result = ledger_cli(*command, "--db", str(path))
    assert result.returncode == 2
    assert "is not a ledger" in result.stderr and "Traceback" not in result.stderr


# --- private keys ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_a_private_key_open_to_others_is_refused_as_ssh_does(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "ci.key"
    Signer.generate("ci").save(key)
    key.chmod(mode)
    result = ledger_cli(
        "emit", "--key", str(key), "--source", "ci/x", "--bootstrap", "127.0.0.1:9",
        "deployment", "--service", "checkout", "--env", "prod",
        "--image", "registry.example/checkout@" + DIGEST_A,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"is open to others (mode {mode:04o})" in result.stderr
    assert f"chmod 600 {key}" in result.stderr
