"""Who read what: named API tokens limited to routes, and an access log naming who asked
what and how it ended, never a token. One shared token identified nobody."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from consumer_helpers import ledger_cli
from fastapi.testclient import TestClient
from helpers import make_event
from ledger_builders import signers, write_ledger

from ledger.api.access import ApiTokens
from ledger.api.app import create_app
from ledger.errors import ConfigurationError
from ledger.transport.producer import seal

AUDITOR, OPS = "auditor-secret-0123456789", "ops-secret-0123456789"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKENS = f"""
[[token]]
name = "auditor-jane"
sha256 = "{_sha(AUDITOR)}"
routes = ["/v1/asof", "/v1/evidence"]

[[token]]
name = "ops"
sha256 = "{_sha(OPS)}"
"""


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    ci, _, ring = signers()
    db = tmp_path / "ledger.duckdb"
    write_ledger(db, [seal(make_event(), ci)], ring, None, [], record_keyring=True)
    (tmp_path / "tokens.toml").write_text(TOKENS)
    con = duckdb.connect(str(db), read_only=True)
    try:
        yield TestClient(create_app(con.cursor, ApiTokens.load(tmp_path / "tokens.toml")))
    finally:
        con.close()


def _get(client: TestClient, path: str, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return int(client.get(path, headers=headers).status_code)


def test_each_token_asks_only_its_routes_and_every_request_is_logged_by_name(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ledger.access")
    asof = "/v1/asof?service=checkout&env=prod"
    assert _get(client, asof, AUDITOR) == 200
    assert _get(client, "/v1/quarantine", AUDITOR) == 403
    assert _get(client, "/v1/quarantine", OPS) == 200
    assert _get(client, asof, "guess-0123456789") == 401
    assert _get(client, asof, None) == 401
    lines = [r.getMessage() for r in caplog.records if r.name == "ledger.access"]
    assert len(lines) == 5
    assert " auditor-jane GET /v1/asof?service=checkout&env=prod 200 " in lines[0]
    assert " auditor-jane " not in lines[1] and " 403 " in lines[1]  # refused: who is unproven
    assert " ops GET /v1/quarantine 200 " in lines[2]
    assert all(" - GET " in line for line in lines[3:]) and " 401 " in lines[3]
    logged = "\n".join(lines)
    assert AUDITOR not in logged and OPS not in logged and "guess" not in logged


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[[token]]\nname = 'x'\n", "token file"),
        ('[[token]]\nname = "a"\nsha256 = "abc"\n', "token.0.sha256"),
        (f'[[token]]\nname = "a"\nsha256 = "{_sha("1")}"\n[[token]]\nname = "a"\n'
         f'sha256 = "{_sha("2")}"\n', "token names must differ"),
        ("not toml at all ===", "tokens.toml"),
    ],
)  # fmt: skip
def test_a_bad_token_file_is_named_before_anything_is_served(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=named.replace(".", r"\.")):
        ApiTokens.load(path)


def test_consume_takes_one_way_of_naming_readers(tmp_path: Path) -> None:
    (tmp_path / "tokens.toml").write_text(TOKENS)
    result = ledger_cli("consume", "--bootstrap", "127.0.0.1:9", "--serve", "127.0.0.1:0",
                        "--api-token", "x" * 20, "--api-tokens", str(tmp_path / "tokens.toml"),
                        "--db", str(tmp_path / "l.duckdb"))  # fmt: skip
    assert result.returncode == 2 and "give one" in result.stderr
