"""Tamper attacks on a stored ledger, each named after the attack: `verify_chain` (and
`ledger verify`) must name the first bad entry and the check it fails.

The ledger is a real DuckDB file written by LedgerWriter.prepare/commit from sealed events
(no Kafka needed); each test edits its own copy with plain SQL, as an attacker with write
access to the file would.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import make_event
from consumer_helpers import cli_json, entries, ledger_cli

from ledger.chain import GENESIS, entry_hash, micros
from ledger.entries import decoded_columns
from ledger.envelope import Envelope
from ledger.errors import ChainBrokenError
from ledger.integrity import verify_chain
from ledger.keys import Keyring, Signer
from ledger.producer import seal
from ledger.store import ENTRY_COLUMNS, Accepted, LedgerReader, LedgerWriter, Received
from ledger.verify import verify_message

KINDS = [
    "deployment.started", "deployment.succeeded", "approval.granted", "mutation.applied",
    "deployment.failed", "deployment.rolled_back", "approval.revoked", "service.classified",
    "deployment.succeeded", "mutation.applied",
]  # fmt: skip


def _signers() -> tuple[Signer, Signer, Keyring]:
    ci, approver = Signer.generate("ci-main"), Signer.generate("change-board")
    ring = Keyring()
    ring.trust(ci.key_id, ci.public_raw, types=["deployment.*", "mutation.*", "service.*"],
               sources=["ci/*"])
    ring.trust(approver.key_id, approver.public_raw, types=["approval.*"], sources=["cab/*"])
    return ci, approver, ring


def _append(writer: LedgerWriter, ring: Keyring, values: list[bytes], first_offset: int) -> None:
    """One batch, exactly as the consumer writes it."""
    messages = []
    for i, value in enumerate(values):
        verified = verify_message(value, ring)
        received = Received("ledger.events", 0, first_offset + i, b"key", value)
        messages.append(Accepted(received, decoded_columns(verified.event, verified.key_id)))
    offsets = {("ledger.events", 0): first_offset + len(values)}
    writer.commit(writer.prepare(messages, offsets))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keyring, Signer]:
    """Ten entries of varied types in three batches; the writer is closed."""
    ci, approver, ring = _signers()
    values = [
        seal(make_event(kind, actor=f"user-{i}", service=["checkout", "billing"][i % 2]),
             approver if kind.startswith("approval.") else ci)
        for i, kind in enumerate(KINDS)
    ]
    db = tmp_path_factory.mktemp("pristine") / "ledger.duckdb"
    writer = LedgerWriter(db)
    for start, stop in ((0, 4), (4, 7), (7, 10)):
        _append(writer, ring, values[start:stop], start)
    writer.close()
    return db, ring, ci


@pytest.fixture
def ledger(pristine: tuple[Path, Keyring, Signer], tmp_path: Path) -> Path:
    """A fresh copy of the pristine ledger for one attack."""
    db = tmp_path / "ledger.duckdb"
    shutil.copy(pristine[0], db)
    return db


def _row(db: Path, seq: int) -> dict[str, Any]:
    return next(r for r in entries(db) if r["seq"] == seq)


def _sql(db: Path, statement: str, *params: Any) -> None:
    con = duckdb.connect(str(db))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(statement, list(params))
    finally:
        con.close()


def _replace_rows(db: Path, old_seqs: list[int], rows: list[dict[str, Any]]) -> None:
    """Delete rows by seq, then insert the given rows (all columns)."""
    con = duckdb.connect(str(db))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM entries WHERE seq IN (SELECT unnest(?))", [old_seqs])
        for row in rows:
            con.execute(
                f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in ENTRY_COLUMNS)})",
                [row[name] for name in ENTRY_COLUMNS],
            )
        con.execute("COMMIT")
    finally:
        con.close()


def _broken(db: Path) -> ChainBrokenError:
    reader = LedgerReader(db)
    try:
        verify_chain(reader.iter_entries())
    except ChainBrokenError as exc:
        # Drop the traceback: its frames hold the reader's result stream, which would keep
        # the file open read-only in this process and stop the next edit.
        return exc.with_traceback(None)
    finally:
        reader.close()
    raise AssertionError("the tampered ledger verified")


def _one_byte_changed(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def _payload_index(envelope: bytes, text: bytes) -> int:
    """Where ``text`` sits inside the signed payload, as an index into the envelope bytes."""
    index = envelope.find(text)
    assert index > 0
    assert text in Envelope.from_bytes(envelope).payload
    return index


# --- the untampered ledger -------------------------------------------------------------------


def test_untampered_ledger_verifies(ledger: Path) -> None:
    reader = LedgerReader(ledger)
    try:
        report = verify_chain(reader.iter_entries())
        meta = reader.meta()
    finally:
        reader.close()
    rows = entries(ledger)
    assert report.size == 10
    assert report.head_hash == bytes(rows[-1]["hash"]).hex()
    assert meta["hash_algorithm"] == "deploy-ledger-chain-sha256-v1"
    result = ledger_cli("verify", "--db", str(ledger), "--json")
    assert result.returncode == 0, result.stderr
    printed = cli_json(result)
    assert {k: printed.get(k) for k in ("ok", "algorithm", "size", "head_hash")} == {
        "ok": True, "algorithm": "deploy-ledger-chain-sha256-v1", "size": 10,
        "head_hash": report.head_hash,
    }


def test_chain_is_the_documented_construction(ledger: Path) -> None:
    """A third party recomputes every hash from the stored row with ledger.chain's formula."""
    prev = GENESIS
    for row in entries(ledger):
        assert bytes(row["prev_hash"]) == prev
        prev = entry_hash(row["seq"], micros(row["ingested_at"]), prev, bytes(row["envelope"]))
        assert bytes(row["hash"]) == prev


def test_reopened_writer_continues_the_chain(
    ledger: Path, pristine: tuple[Path, Keyring, Signer]
) -> None:
    _, ring, ci = pristine
    head = _row(ledger, 10)
    writer = LedgerWriter(ledger)
    try:
        assert (writer.head_seq, writer.head_hash) == (10, bytes(head["hash"]))
        _append(writer, ring, [seal(make_event(), ci), seal(make_event(), ci)], 10)
    finally:
        writer.close()
    rows = entries(ledger)
    assert [r["seq"] for r in rows] == list(range(1, 13))
    assert bytes(rows[10]["prev_hash"]) == bytes(head["hash"])
    assert rows[10]["ingested_at"] >= head["ingested_at"]
    reader = LedgerReader(ledger)
    try:
        assert verify_chain(reader.iter_entries()).size == 12
    finally:
        reader.close()


# --- attacks ---------------------------------------------------------------------------------


def test_edited_payload_byte(ledger: Path) -> None:
    envelope = bytes(_row(ledger, 5)["envelope"])
    forged = _one_byte_changed(envelope, _payload_index(envelope, b"user-4"))
    _sql(ledger, "UPDATE entries SET envelope = ? WHERE seq = 5", forged)
    error = _broken(ledger)
    assert (error.seq, error.check) == (5, "entry_hash")
    result = ledger_cli("verify", "--db", str(ledger), "--json")
    assert result.returncode == 1
    report = cli_json(result)
    assert (report["ok"], report["first_bad_seq"], report["check"]) == (False, 5, "entry_hash")


def test_edited_payload_byte_with_the_row_hash_recomputed(ledger: Path) -> None:
    """The attacker knows the hash construction and fixes the edited row's own hash."""
    row = _row(ledger, 5)
    envelope = bytes(row["envelope"])
    forged = _one_byte_changed(envelope, _payload_index(envelope, b"user-4") + 5)  # user-5
    digest = entry_hash(5, micros(row["ingested_at"]), bytes(row["prev_hash"]), forged)
    _sql(ledger, "UPDATE entries SET envelope = ?, hash = ? WHERE seq = 5", forged, digest)
    error = _broken(ledger)
    assert (error.seq, error.check) == (5, "decoded_columns")  # the actor column says user-4
    _sql(ledger, "UPDATE entries SET actor = 'user-5' WHERE seq = 5")
    error = _broken(ledger)
    assert (error.seq, error.check) == (6, "link")


def test_edited_signature_byte(ledger: Path) -> None:
    envelope = bytes(_row(ledger, 3)["envelope"])
    signature = Envelope.from_bytes(envelope).signatures[0].sig
    forged = _one_byte_changed(envelope, envelope.find(signature) + 10)
    _sql(ledger, "UPDATE entries SET envelope = ? WHERE seq = 3", forged)
    error = _broken(ledger)
    assert (error.seq, error.check) == (3, "entry_hash")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("image", "registry.example/checkout@sha256:" + "c" * 64),
        ("actor", "mallory"),
        ("service", "payments"),
        ("environment", "staging"),
        ("type", "deployment.failed"),
        ("source", "ci/github/acme/other"),
        ("event_id", "forged-id"),
        ("data", '{"image":"registry.example/other@sha256:' + "c" * 64 + '"}'),
    ],
)
def test_edited_decoded_column(ledger: Path, column: str, value: str) -> None:
    seq = 2  # deployment.succeeded: every column above is set
    assert _row(ledger, seq)[column] not in (None, value)
    _sql(ledger, f"UPDATE entries SET {column} = ? WHERE seq = ?", value, seq)
    error = _broken(ledger)
    assert (error.seq, error.check) == (seq, "decoded_columns")
    assert column in error.message


def test_edited_event_time_column(ledger: Path) -> None:
    _sql(ledger, "UPDATE entries SET time = time - INTERVAL 1 DAY WHERE seq = 6")
    error = _broken(ledger)
    assert (error.seq, error.check) == (6, "decoded_columns")


def test_edited_change_ref_column(ledger: Path) -> None:
    seq = next(r["seq"] for r in entries(ledger) if r["change_ref"] is not None)
    _sql(ledger, "UPDATE entries SET change_ref = 'CHG-999' WHERE seq = ?", seq)
    error = _broken(ledger)
    assert (error.seq, error.check) == (seq, "decoded_columns")


def test_edited_key_id(ledger: Path) -> None:
    """Attributing an event to another (trusted) key than the one that signed it."""
    assert _row(ledger, 4)["key_id"] == "ci-main"
    _sql(ledger, "UPDATE entries SET key_id = 'change-board' WHERE seq = 4")
    error = _broken(ledger)
    assert (error.seq, error.check) == (4, "decoded_columns")
    assert "key_id" in error.message


def test_deleted_row(ledger: Path) -> None:
    _sql(ledger, "DELETE FROM entries WHERE seq = 4")
    error = _broken(ledger)
    assert (error.seq, error.check) == (4, "sequence")
    result = ledger_cli("verify", "--db", str(ledger), "--json")
    assert result.returncode == 1
    assert (cli_json(result)["first_bad_seq"], cli_json(result)["check"]) == (4, "sequence")


def test_deleted_first_row(ledger: Path) -> None:
    _sql(ledger, "DELETE FROM entries WHERE seq = 1")
    error = _broken(ledger)
    assert (error.seq, error.check) == (1, "sequence")


def test_renumbered_rows_after_delete(ledger: Path) -> None:
    """Delete entry 4 and close the gap: the sequence looks whole, the links do not."""
    _sql(ledger, "DELETE FROM entries WHERE seq = 4")
    _sql(ledger, "UPDATE entries SET seq = seq - 1 WHERE seq > 4")
    assert [r["seq"] for r in entries(ledger)] == list(range(1, 10))
    error = _broken(ledger)
    assert (error.seq, error.check) == (4, "link")


def test_renumbered_rows_after_delete_with_links_rewired(ledger: Path) -> None:
    """The attacker also points the next row's prev_hash at entry 3: its own hash, which
    covers its (new) sequence number and prev_hash, no longer matches."""
    third = _row(ledger, 3)
    _sql(ledger, "DELETE FROM entries WHERE seq = 4")
    _sql(ledger, "UPDATE entries SET seq = seq - 1 WHERE seq > 4")
    _sql(ledger, "UPDATE entries SET prev_hash = ? WHERE seq = 4", bytes(third["hash"]))
    error = _broken(ledger)
    assert (error.seq, error.check) == (4, "entry_hash")


def _forged_row(
    ledger: Path, pristine: tuple[Path, Keyring, Signer], seq: int
) -> dict[str, Any]:
    """A validly signed event as entry ``seq``, its columns and hash computed correctly on
    top of entry ``seq - 1``: what an attacker who knows the construction can build."""
    _, ring, ci = pristine
    previous = _row(ledger, seq - 1)
    envelope = seal(make_event(actor="mallory"), ci)
    verified = verify_message(envelope, ring)
    columns = decoded_columns(verified.event, verified.key_id)._asdict()
    del columns["time_us"]
    ingested = previous["ingested_at"]
    return _row(ledger, seq) | columns | {
        "seq": seq, "time": verified.event.time, "ingested_at": ingested,
        "envelope": envelope, "prev_hash": bytes(previous["hash"]),
        "hash": entry_hash(seq, micros(ingested), bytes(previous["hash"]), envelope),
    }


def test_inserted_row(ledger: Path, pristine: tuple[Path, Keyring, Signer]) -> None:
    """A forged entry slipped in as a second entry 6, its own hash and link correct."""
    _replace_rows(ledger, [], [_forged_row(ledger, pristine, 6)])
    error = _broken(ledger)
    assert (error.seq, error.check) == (7, "sequence")


def test_inserted_row_with_later_rows_renumbered(
    ledger: Path, pristine: tuple[Path, Keyring, Signer]
) -> None:
    """The forged entry 6 goes in and every later entry moves up by one."""
    forged = _forged_row(ledger, pristine, 6)
    _sql(ledger, "UPDATE entries SET seq = seq + 1 WHERE seq >= 6")
    _replace_rows(ledger, [], [forged])
    assert [r["seq"] for r in entries(ledger)] == list(range(1, 12))
    error = _broken(ledger)
    assert (error.seq, error.check) == (7, "link")


def test_swapped_rows(ledger: Path) -> None:
    """Rows 3 and 7 exchange everything but their sequence numbers."""
    third, seventh = _row(ledger, 3), _row(ledger, 7)
    _replace_rows(ledger, [3, 7], [seventh | {"seq": 3}, third | {"seq": 7}])
    error = _broken(ledger)
    assert (error.seq, error.check) == (3, "link")


def test_swapped_envelopes_keeping_the_chain_columns(ledger: Path) -> None:
    """Rows 3 and 7 exchange their events (envelope and decoded columns), not their hashes."""
    third, seventh = _row(ledger, 3), _row(ledger, 7)
    chain = ("seq", "ingested_at", "prev_hash", "hash")
    _replace_rows(ledger, [3, 7], [
        seventh | {name: third[name] for name in chain},
        third | {name: seventh[name] for name in chain},
    ])
    error = _broken(ledger)
    assert (error.seq, error.check) == (3, "entry_hash")


def test_rewritten_ingestion_time(ledger: Path) -> None:
    _sql(ledger, "UPDATE entries SET ingested_at = ingested_at - INTERVAL 1 HOUR WHERE seq = 5")
    error = _broken(ledger)
    assert (error.seq, error.check) == (5, "entry_hash")


def test_rewritten_ingestion_time_with_the_chain_recomputed(ledger: Path) -> None:
    """Backdating entry 5 and rehashing everything after it still breaks ingestion order."""
    rows = entries(ledger)
    rows[4]["ingested_at"] = rows[3]["ingested_at"] - timedelta(hours=1)
    prev = bytes(rows[3]["hash"])
    for row in rows[4:]:
        row["prev_hash"] = prev
        row["hash"] = prev = entry_hash(row["seq"], micros(row["ingested_at"]), prev,
                                        bytes(row["envelope"]))
    _replace_rows(ledger, [r["seq"] for r in rows[4:]], rows[4:])
    error = _broken(ledger)
    assert (error.seq, error.check) == (5, "ingestion_order")


def test_edited_prev_hash(ledger: Path) -> None:
    _sql(ledger, "UPDATE entries SET prev_hash = ? WHERE seq = 8", bytes(32))
    error = _broken(ledger)
    assert (error.seq, error.check) == (8, "link")


def test_overwritten_head_hash(ledger: Path) -> None:
    _sql(ledger, "UPDATE entries SET hash = ? WHERE seq = 10", b"\xff" * 32)
    error = _broken(ledger)
    assert (error.seq, error.check) == (10, "entry_hash")


def test_first_failure_is_reported_when_several_rows_are_tampered(ledger: Path) -> None:
    _sql(ledger, "UPDATE entries SET actor = 'mallory' WHERE seq IN (4, 9)")
    _sql(ledger, "DELETE FROM entries WHERE seq = 7")
    error = _broken(ledger)
    assert (error.seq, error.check) == (4, "decoded_columns")
