"""Tamper attacks on a stored ledger, each named after the attack: `ledger verify` (and
`verify_ledger`) must name the first bad entry and the check it fails.

The ledger is a real DuckDB file written by LedgerWriter.prepare/commit from sealed events
(no Kafka needed); each test edits its own copy with plain SQL, as an attacker with write
access to the file would. Truncation, rollback and consistent rewrites, which only signed
checkpoints reveal, are in test_truncation_attacks.py and test_rewrite_attacks.py.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from attack_helpers import (
    entry,
    execute,
    failure,
    rebuild_tree,
    replace_rows,
    rewrite_chain,
    row_hash,
)
from consumer_helpers import cli_json, entries, ledger_cli
from helpers import make_event
from ledger_builders import append, signers, write_ledger

from ledger.errors import ChainBrokenError
from ledger.log.chain import GENESIS, micros
from ledger.store.integrity import verify_ledger
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal
from ledger.wire.columns import decoded_columns
from ledger.wire.envelope import Envelope
from ledger.wire.keyring import Keyring, Signer
from ledger.wire.verify import verify_message

KINDS = [
    "deployment.started", "deployment.succeeded", "approval.granted", "mutation.applied",
    "deployment.failed", "deployment.rolled_back", "approval.revoked", "service.classified",
    "deployment.succeeded", "mutation.applied",
]  # fmt: skip


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keyring, Signer]:
    """Ten entries of varied types in three batches; the writer is closed. The keyring is
    saved beside it as keyring.json (for the command line)."""
    ci, approver, ring = signers()
    values = [
        seal(
            make_event(kind, actor=f"user-{i}", service=["checkout", "billing"][i % 2]),
            approver if kind.startswith("approval.") else ci,
        )
        for i, kind in enumerate(KINDS)
    ]
    home = tmp_path_factory.mktemp("pristine")
    ring.save(home / "keyring.json")
    db = home / "ledger.duckdb"
    write_ledger(db, values, ring, None, [4, 3], checkpoint=False)
    return db, ring, ci


@pytest.fixture
def ledger(pristine: tuple[Path, Keyring, Signer], tmp_path: Path) -> Path:
    """A fresh copy of the pristine ledger (and its keyring) for one attack."""
    db = tmp_path / "ledger.duckdb"
    shutil.copy(pristine[0], db)
    shutil.copy(pristine[0].with_name("keyring.json"), tmp_path / "keyring.json")
    return db


def _keyring(db: Path) -> str:
    return str(db.with_name("keyring.json"))


def _broken(db: Path) -> ChainBrokenError:
    """The first failure of every check, signatures included (in this process)."""
    error = failure(db, Keyring.load(db.with_name("keyring.json")))
    assert isinstance(error, ChainBrokenError)
    return error


def _cli_verify(db: Path) -> tuple[int, dict[str, Any]]:
    result = ledger_cli("verify", "--db", str(db), "--keyring", _keyring(db), "--json")
    return result.returncode, cli_json(result)


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


def test_untampered_ledger_verifies(ledger: Path, pristine: tuple[Path, Keyring, Signer]) -> None:
    with LedgerReader(ledger) as reader:
        report = verify_ledger(reader, pristine[1], workers=1).check()
        meta = reader.meta()
    rows = entries(ledger)
    assert (report.size, report.signatures_checked, report.signatures_verified) == (10, True, 10)
    assert report.head_hash == bytes(rows[-1]["hash"])
    assert meta["hash_algorithm"] == "deploy-ledger-chain-sha256-v2"
    code, printed = _cli_verify(ledger)
    assert code == 0, printed
    assert {k: printed.get(k) for k in ("ok", "algorithm", "size", "head_hash")} == {
        "ok": True,
        "algorithm": "deploy-ledger-chain-sha256-v2",
        "size": 10,
        "head_hash": report.head_hash.hex(),
    }
    assert (printed["signatures_checked"], printed["signatures_verified"]) == (True, 10)
    assert (printed["first_bad_seq"], printed["check"], printed["reason"]) == (None, None, None)
    assert set(printed["timings"]) == {
        "chain",
        "tree",
        "index",
        "keyrings",
        "signatures",
        "checkpoints",
    }


def test_verification_in_worker_processes_finds_the_same_first_failure(ledger: Path) -> None:
    """Batches of 3 over 2 spawned workers: the lowest failing seq wins, whichever batch
    finishes first."""
    execute(ledger, "UPDATE entries SET actor = 'mallory' WHERE seq IN (5, 9)")
    ring = Keyring.load(Path(_keyring(ledger)))
    pooled = failure(ledger, ring, workers=2, batch_rows=3)
    assert isinstance(pooled, ChainBrokenError)
    assert (pooled.seq, pooled.check) == (5, "decoded_columns")
    assert (pooled.seq, pooled.message) == (_broken(ledger).seq, _broken(ledger).message)


def test_ledger_from_before_the_tree_is_refused_with_what_to_do(ledger: Path) -> None:
    execute(ledger, "DROP TABLE tree_nodes")
    result = ledger_cli("verify", "--db", str(ledger), "--keyring", _keyring(ledger))
    assert result.returncode == 2
    assert "open it once with this version's consumer" in result.stderr


def test_ingestion_times_before_1970_hash_as_signed_integers(
    ledger: Path, pristine: tuple[Path, Keyring, Signer]
) -> None:
    """The SQL check computes i64be(ingested_at_us) in two's complement, as ledger.log.chain
    does: a (re)written ledger with ingestion times before the epoch still verifies."""
    rows = entries(ledger)
    for i, values in enumerate(rows):
        values["ingested_at"] = datetime(1969, 7, 20, 20, 17, i, tzinfo=UTC)
    rewrite_chain(ledger, rows)
    assert micros(entries(ledger)[0]["ingested_at"]) < 0
    with LedgerReader(ledger) as reader:
        assert verify_ledger(reader, pristine[1], workers=1).check().size == 10


def test_chain_is_the_documented_construction(ledger: Path) -> None:
    """A third party recomputes every hash from the stored row with ledger.log.chain's formula."""
    prev = GENESIS
    for row in entries(ledger):
        assert bytes(row["prev_hash"]) == prev
        assert row["format"] == 2
        prev = row_hash(row, prev)
        assert bytes(row["hash"]) == prev


def test_reopened_writer_continues_the_chain(
    ledger: Path, pristine: tuple[Path, Keyring, Signer]
) -> None:
    _, ring, ci = pristine
    head = entry(ledger, 10)
    writer = LedgerWriter(ledger)
    try:
        assert (writer.head_seq, writer.head_hash) == (10, bytes(head["hash"]))
        append(writer, ring, [seal(make_event(), ci), seal(make_event(), ci)], 10)
    finally:
        writer.close()
    rows = entries(ledger)
    assert [r["seq"] for r in rows] == list(range(1, 13))
    assert bytes(rows[10]["prev_hash"]) == bytes(head["hash"])
    assert rows[10]["ingested_at"] >= head["ingested_at"]
    with LedgerReader(ledger) as reader:
        assert verify_ledger(reader, ring, workers=1).check().size == 12


# --- attacks ---------------------------------------------------------------------------------


def test_edited_payload_byte(ledger: Path) -> None:
    envelope = bytes(entry(ledger, 5)["envelope"])
    forged = _one_byte_changed(envelope, _payload_index(envelope, b"user-4"))
    execute(ledger, "UPDATE entries SET envelope = ? WHERE seq = 5", forged)
    error = _broken(ledger)
    assert (error.seq, error.check) == (5, "entry_hash")
    code, report = _cli_verify(ledger)
    assert code == 1
    assert (report["ok"], report["first_bad_seq"], report["check"]) == (False, 5, "entry_hash")


def test_edited_payload_byte_with_the_row_hash_recomputed(ledger: Path) -> None:
    """The attacker knows the constructions: fixes the edited row's own hash, then the
    tree, then the actor column. Each step is caught at entry 5, last by its signature,
    which no longer covers the edited payload (the link from entry 6 is broken too)."""
    row = entry(ledger, 5)
    envelope = bytes(row["envelope"])
    forged = _one_byte_changed(envelope, _payload_index(envelope, b"user-4") + 5)  # user-5
    digest = row_hash(row | {"envelope": forged}, bytes(row["prev_hash"]))
    execute(ledger, "UPDATE entries SET envelope = ?, hash = ? WHERE seq = 5", forged, digest)
    error = _broken(ledger)
    assert (error.seq, error.check) == (5, "tree")  # its leaf is the old hash's
    rebuild_tree(ledger)
    error = _broken(ledger)
    assert (error.seq, error.check) == (5, "decoded_columns")  # the actor column says user-4
    execute(ledger, "UPDATE entries SET actor = 'user-5' WHERE seq = 5")
    error = _broken(ledger)
    assert (error.seq, error.check) == (5, "signature")
    assert "does not match the payload (bad_signature)" in error.message
    with LedgerReader(ledger) as reader:  # no keyring: the chain alone shows it at entry 6
        chain_only = verify_ledger(reader, None).failure
    assert isinstance(chain_only, ChainBrokenError)
    assert (chain_only.seq, chain_only.check) == (6, "link")


def test_edited_signature_byte(ledger: Path) -> None:
    envelope = bytes(entry(ledger, 3)["envelope"])
    signature = Envelope.from_bytes(envelope).signatures[0].sig
    forged = _one_byte_changed(envelope, envelope.find(signature) + 10)
    execute(ledger, "UPDATE entries SET envelope = ? WHERE seq = 3", forged)
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
    assert entry(ledger, seq)[column] not in (None, value)
    execute(ledger, f"UPDATE entries SET {column} = ? WHERE seq = ?", value, seq)
    error = _broken(ledger)
    assert (error.seq, error.check) == (seq, "decoded_columns")
    assert column in error.message


def test_edited_event_time_column(ledger: Path) -> None:
    execute(ledger, "UPDATE entries SET time = time - INTERVAL 1 DAY WHERE seq = 6")
    error = _broken(ledger)
    assert (error.seq, error.check) == (6, "decoded_columns")


def test_edited_change_ref_column(ledger: Path) -> None:
    seq = next(r["seq"] for r in entries(ledger) if r["change_ref"] is not None)
    execute(ledger, "UPDATE entries SET change_ref = 'CHG-999' WHERE seq = ?", seq)
    error = _broken(ledger)
    assert (error.seq, error.check) == (seq, "decoded_columns")


def test_edited_key_id(ledger: Path) -> None:
    """Attributing an event to another (trusted) key than the one that signed it."""
    assert entry(ledger, 4)["key_id"] == "ci-main"
    execute(ledger, "UPDATE entries SET key_id = 'change-board' WHERE seq = 4")
    error = _broken(ledger)
    assert (error.seq, error.check) == (4, "decoded_columns")
    assert "key_id" in error.message


def test_deleted_row(ledger: Path) -> None:
    execute(ledger, "DELETE FROM entries WHERE seq = 4")
    error = _broken(ledger)
    assert (error.seq, error.check) == (4, "sequence")
    code, report = _cli_verify(ledger)
    assert code == 1
    assert (report["first_bad_seq"], report["check"]) == (4, "sequence")


def test_deleted_first_row(ledger: Path) -> None:
    execute(ledger, "DELETE FROM entries WHERE seq = 1")
    error = _broken(ledger)
    assert (error.seq, error.check) == (1, "sequence")


def test_renumbered_rows_after_delete(ledger: Path) -> None:
    """Delete entry 4 and close the gap: the sequence looks whole, the links do not."""
    execute(ledger, "DELETE FROM entries WHERE seq = 4")
    execute(ledger, "UPDATE entries SET seq = seq - 1 WHERE seq > 4")
    assert [r["seq"] for r in entries(ledger)] == list(range(1, 10))
    error = _broken(ledger)
    assert (error.seq, error.check) == (4, "link")


def test_renumbered_rows_after_delete_with_links_rewired(ledger: Path) -> None:
    """The attacker also points the next row's prev_hash at entry 3: its own hash, which
    covers its (new) sequence number and prev_hash, no longer matches."""
    third = entry(ledger, 3)
    execute(ledger, "DELETE FROM entries WHERE seq = 4")
    execute(ledger, "UPDATE entries SET seq = seq - 1 WHERE seq > 4")
    execute(ledger, "UPDATE entries SET prev_hash = ? WHERE seq = 4", bytes(third["hash"]))
    error = _broken(ledger)
    assert (error.seq, error.check) == (4, "entry_hash")


def _forged_row(ledger: Path, pristine: tuple[Path, Keyring, Signer], seq: int) -> dict[str, Any]:
    """A validly signed event as entry ``seq``, its columns and hash computed correctly on
    top of entry ``seq - 1``: what an attacker who knows the construction can build."""
    _, ring, ci = pristine
    previous = entry(ledger, seq - 1)
    envelope = seal(make_event(actor="mallory"), ci)
    verified = verify_message(envelope, ring, datetime.now(UTC))
    columns = decoded_columns(verified.event, verified.key_id)._asdict()
    del columns["time_us"]
    forged = (
        entry(ledger, seq)
        | columns
        | {
            "seq": seq,
            "time": verified.event.time,
            "ingested_at": previous["ingested_at"],
            "envelope": envelope,
            "prev_hash": bytes(previous["hash"]),
        }
    )
    return forged | {"hash": row_hash(forged, bytes(previous["hash"]))}


def test_inserted_row(ledger: Path, pristine: tuple[Path, Keyring, Signer]) -> None:
    """A forged entry slipped in as a second entry 6, its own hash and link correct."""
    replace_rows(ledger, [], [_forged_row(ledger, pristine, 6)])
    error = _broken(ledger)
    assert (error.seq, error.check) == (7, "sequence")


def test_inserted_row_with_later_rows_renumbered(
    ledger: Path, pristine: tuple[Path, Keyring, Signer]
) -> None:
    """The forged entry 6 goes in and every later entry moves up by one. The tree, grown
    as entries were appended, still has the original entry 6 as its leaf; rebuilt over the
    forged rows, the link from the next entry still breaks."""
    forged = _forged_row(ledger, pristine, 6)
    execute(ledger, "UPDATE entries SET seq = seq + 1 WHERE seq >= 6")
    replace_rows(ledger, [], [forged])
    assert [r["seq"] for r in entries(ledger)] == list(range(1, 12))
    error = _broken(ledger)
    assert (error.seq, error.check) == (6, "tree")
    assert "level 0" in error.message
    rebuild_tree(ledger)
    error = _broken(ledger)
    assert (error.seq, error.check) == (7, "link")


def test_swapped_rows(ledger: Path) -> None:
    """Rows 3 and 7 exchange everything but their sequence numbers."""
    third, seventh = entry(ledger, 3), entry(ledger, 7)
    replace_rows(ledger, [3, 7], [seventh | {"seq": 3}, third | {"seq": 7}])
    error = _broken(ledger)
    assert (error.seq, error.check) == (3, "link")


def test_swapped_envelopes_keeping_the_chain_columns(ledger: Path) -> None:
    """Rows 3 and 7 exchange their events (envelope and decoded columns), not their hashes."""
    third, seventh = entry(ledger, 3), entry(ledger, 7)
    chain = ("seq", "ingested_at", "prev_hash", "hash")
    replace_rows(
        ledger,
        [3, 7],
        [
            seventh | {name: third[name] for name in chain},
            third | {name: seventh[name] for name in chain},
        ],
    )
    error = _broken(ledger)
    assert (error.seq, error.check) == (3, "entry_hash")


def test_rewritten_ingestion_time(ledger: Path) -> None:
    execute(ledger, "UPDATE entries SET ingested_at = ingested_at - INTERVAL 1 HOUR WHERE seq = 5")
    error = _broken(ledger)
    assert (error.seq, error.check) == (5, "entry_hash")


def test_rewritten_ingestion_time_with_the_chain_recomputed(ledger: Path) -> None:
    """Backdating entry 5 and rehashing everything after it still breaks ingestion order."""
    rows = entries(ledger)
    rows[4]["ingested_at"] = rows[3]["ingested_at"] - timedelta(hours=1)
    prev = bytes(rows[3]["hash"])
    for row in rows[4:]:
        row["prev_hash"] = prev
        row["hash"] = prev = row_hash(row, prev)
    replace_rows(ledger, [r["seq"] for r in rows[4:]], rows[4:])
    error = _broken(ledger)
    assert (error.seq, error.check) == (5, "ingestion_order")


def test_edited_prev_hash(ledger: Path) -> None:
    execute(ledger, "UPDATE entries SET prev_hash = ? WHERE seq = 8", bytes(32))
    error = _broken(ledger)
    assert (error.seq, error.check) == (8, "link")


def test_overwritten_head_hash(ledger: Path) -> None:
    execute(ledger, "UPDATE entries SET hash = ? WHERE seq = 10", b"\xff" * 32)
    error = _broken(ledger)
    assert (error.seq, error.check) == (10, "entry_hash")


@pytest.mark.parametrize(
    ("column", "value"),
    [("kafka_topic", "elsewhere"), ("kafka_partition", 7), ("kafka_offset", 123456)],
)
def test_edited_kafka_coordinates(ledger: Path, column: str, value: object) -> None:
    """Where an entry was read is under its hash (format 2): a ledger cannot be made to
    claim another place on the topic for it."""
    execute(ledger, f"UPDATE entries SET {column} = ? WHERE seq = 4", value)
    error = _broken(ledger)
    assert (error.seq, error.check) == (4, "entry_hash")


def test_a_copy_of_an_entry_rehashed_onto_the_tail(ledger: Path) -> None:
    """No key is needed to append a copy of entry 3 as entry 11, linked and hashed as the
    writer would and the tree grown over it, once the id's UNIQUE constraint is dropped
    (a table recreated without it)."""
    for statement in ("CREATE TABLE copied AS SELECT * FROM entries", "DROP TABLE entries",
                      "ALTER TABLE copied RENAME TO entries"):  # fmt: skip
        execute(ledger, statement)
    rows = entries(ledger)
    copy = dict(rows[2], seq=11, prev_hash=bytes(rows[-1]["hash"]),
                ingested_at=rows[-1]["ingested_at"] + timedelta(seconds=1))  # fmt: skip
    copy["hash"] = row_hash(copy, copy["prev_hash"])
    replace_rows(ledger, [], [copy])
    rebuild_tree(ledger)
    error = _broken(ledger)
    assert (error.seq, error.check) == (11, "duplicate_event")
    assert "as entry 3" in error.message
    code, printed = _cli_verify(ledger)
    assert (code, printed["first_bad_seq"], printed["check"]) == (1, 11, "duplicate_event")


@pytest.mark.parametrize(
    ("column", "check"),
    [("hash", "entry_hash"), ("envelope", "entry_hash"), ("prev_hash", "link"),
     ("ingested_at", "entry_hash")],
)  # fmt: skip
def test_a_missing_chained_column_on_the_last_entry_is_named(
    ledger: Path, column: str, check: str
) -> None:
    """NULL where the schema says NOT NULL, once the constraint is dropped: once a
    TypeError out of verify."""
    execute(ledger, f"ALTER TABLE entries ALTER {column} DROP NOT NULL")
    execute(ledger, f"UPDATE entries SET {column} = NULL WHERE seq = 10")
    error = _broken(ledger)
    assert (error.seq, error.check) == (10, check)
    assert f"{column} is missing" in error.message
    code, printed = _cli_verify(ledger)
    assert (code, printed["first_bad_seq"], printed["check"]) == (1, 10, check)


def test_first_failure_is_reported_when_several_rows_are_tampered(ledger: Path) -> None:
    execute(ledger, "UPDATE entries SET actor = 'mallory' WHERE seq IN (4, 9)")
    execute(ledger, "DELETE FROM entries WHERE seq = 7")
    error = _broken(ledger)
    assert (error.seq, error.check) == (4, "decoded_columns")
