"""`ledger gate` before a change: exit 0 only if the change would be approved if recorded
now, and the gate agrees with what `asof` says once it is recorded (the same rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from consumer_helpers import cli_json, ledger_cli
from fastapi.testclient import TestClient
from helpers import DIGEST_A, IMAGE_A, IMAGE_B, make_event
from ledger_builders import append, signers

from ledger.api.app import create_app
from ledger.store.query import asof
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal
from ledger.wire.events import Event
from ledger.wire.keyring import Keyring, Signer

NOW = datetime.now(UTC)


def _grant(**data: Any) -> Event:
    fields = {"change_ref": "CHG-7", "approver": "carol", "image": IMAGE_A} | data
    return make_event("approval.granted", time=NOW - timedelta(hours=1), **fields)


def _ledger(path: Path, history: list[tuple[str, Event]]) -> tuple[Path, Signer, Keyring]:
    ci, cab, ring = signers()
    writer = LedgerWriter(path)
    try:
        for n, (who, event) in enumerate(history):
            append(writer, ring, [seal(event, cab if who == "cab" else ci)], n)
    finally:
        writer.close()
    return path, ci, ring


def _gate(db: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = ledger_cli("gate", "--db", str(db), "--service", "checkout", "--env", "prod",
                        "--json", *extra)  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, cli_json(result)


CASES = [
    ("approved", [("cab", _grant())], "alice", None),
    ("no grant", [], "alice", "missing"),
    ("the approver deploys", [("cab", _grant())], "carol", "self_approved"),
    ("granted for another image", [("cab", _grant(image=IMAGE_B))], "alice", "scope_mismatch"),
    ("expired", [("cab", _grant(valid_until=NOW - timedelta(minutes=1)))], "alice", "expired"),
    ("revoked", [("cab", _grant()), ("cab", make_event("approval.revoked", change_ref="CHG-7",
                                                       time=NOW - timedelta(minutes=30)))],
     "alice", "revoked"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "history", "actor", "reason"), CASES, ids=[c[0] for c in CASES])
def test_the_gate_says_what_asof_says_once_the_change_is_recorded(
    tmp_path: Path, case: str, history: list[tuple[str, Event]], actor: str, reason: str | None
) -> None:
    db, ci, ring = _ledger(tmp_path / "ledger.duckdb", history)
    code, answer = _gate(db, "--actor", actor, "--image", IMAGE_A, "--change-ref", "CHG-7")
    assert (code, answer["allowed"], answer["unapproved_reason"]) == (
        0 if reason is None else 1, reason is None, reason,
    )  # fmt: skip
    writer = LedgerWriter(db)  # now the change is made, and recorded
    try:
        made = make_event(image=IMAGE_A, change_ref="CHG-7", actor=actor, time=datetime.now(UTC))
        append(writer, ring, [seal(made, ci)], len(history))
    finally:
        writer.close()
    with LedgerReader(db) as reader:
        deployment = asof(reader, "checkout", "prod", datetime.now(UTC)).deployment
    assert deployment is not None
    assert (deployment.approved, deployment.unapproved_reason) == (reason is None, reason)


def test_the_promotion_path_is_the_image_seen_succeeding_in_pre_production(tmp_path: Path) -> None:
    staging = make_event(image=IMAGE_A, environment="staging", service="checkout-stg",
                         time=NOW - timedelta(hours=2))  # fmt: skip
    bare, _, _ = _ledger(tmp_path / "bare.duckdb", [("cab", _grant())])
    code, answer = _gate(bare, "--actor", "alice", "--image", IMAGE_A, "--change-ref", "CHG-7",
                         "--preprod", "staging")  # fmt: skip
    assert code == 1 and answer["approved"] is True
    assert answer["reasons"] == [f"{IMAGE_A} was never witnessed succeeding in staging"]
    promoted, _, _ = _ledger(tmp_path / "promoted.duckdb", [("ci", staging), ("cab", _grant())])
    code, answer = _gate(promoted, "--actor", "alice", "--image", IMAGE_A, "--change-ref",
                         "CHG-7", "--preprod", "staging")  # fmt: skip
    assert code == 0 and answer["promotion"]["entries"] == [1]


def test_an_in_place_change_is_gated_by_its_hash_and_the_api_agrees(tmp_path: Path) -> None:
    grant = _grant(image=None, hash=DIGEST_A)
    db, _, _ = _ledger(tmp_path / "ledger.duckdb", [("cab", grant)])
    asked = ("--actor", "alice", "--target-kind", "config", "--target", "nginx.conf",
             "--hash", DIGEST_A, "--change-ref", "CHG-7")  # fmt: skip
    code, answer = _gate(db, *asked)
    assert code == 0 and answer["approval"]["seq"] == 1
    con = duckdb.connect(str(db), read_only=True)
    try:
        client = TestClient(create_app(con.cursor, "t0ken"))
        served = client.get("/v1/gate", headers={"Authorization": "Bearer t0ken"}, params={
            "service": "checkout", "env": "prod", "actor": "alice", "target_kind": "config",
            "target": "nginx.conf", "hash": DIGEST_A, "change_ref": "CHG-7"})  # fmt: skip
        half = client.get("/v1/gate", headers={"Authorization": "Bearer t0ken"}, params={
            "service": "checkout", "env": "prod", "actor": "alice", "target": "x"})  # fmt: skip
    finally:
        con.close()
    assert served.json() == answer
    assert half.status_code == 400 and "target kind" in half.json()["detail"]
    both = ledger_cli("gate", "--db", str(db), "--service", "checkout", "--env", "prod",
                      "--actor", "alice", "--image", IMAGE_A, "--target", "x")  # fmt: skip
    assert both.returncode == 2 and "give an image, or all of" in both.stderr
