"""A ledger written before entry format 2 (tests/data/ledger-v1, kept byte for byte) still
verifies, its evidence bundle still verifies under the rules it was written under, and a
writer of this build extends it without rehashing a byte of it."""

from __future__ import annotations

import gzip
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from consumer_helpers import ledger_cli
from helpers import IMAGE_A, make_event
from ledger_builders import accepted, append, signers

from ledger.evidence.build import build_bundle
from ledger.evidence.bundle import AsOfQuery, verify_bundle
from ledger.log.chain import Witness
from ledger.log.checkpoint import TrustedKey, split_notes
from ledger.store.batch import Received
from ledger.store.check import check
from ledger.store.integrity import verify_ledger
from ledger.store.query import asof
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.producer import seal
from ledger.wire.avro import Schema, SchemaSet
from ledger.wire.codec import encode_event
from ledger.wire.envelope import Envelope
from ledger.wire.keyring import Keyring, Signer, load_public_key

DATA = Path(__file__).resolve().parent / "data" / "ledger-v1"
AT = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


@pytest.fixture
def v1_ledger(tmp_path: Path) -> Path:
    db = tmp_path / "ledger.duckdb"
    with gzip.open(DATA / "ledger.duckdb.gz", "rb") as packed, db.open("wb") as out:
        shutil.copyfileobj(packed, out)
    return db


def _trusted() -> TrustedKey:
    return TrustedKey("ledger", load_public_key(DATA / "ledger.pub"))


def _witnessed() -> list[tuple[str, str]]:
    notes = split_notes((DATA / "ledger.witness").read_text())
    return [(f"ledger.witness#{i}", note) for i, note in enumerate(notes, 1)]


def _rows(db: Path) -> list[tuple[int, int, bytes]]:
    with LedgerReader(db) as reader:
        rows = reader.con.execute("SELECT seq, format, hash FROM entries ORDER BY seq").fetchall()
    return [(int(seq), int(fmt), bytes(digest)) for seq, fmt, digest in rows]


def test_a_ledger_written_in_format_1_still_verifies(v1_ledger: Path) -> None:
    keyring = Keyring.load(DATA / "keyring.json")
    with LedgerReader(v1_ledger) as reader:
        report = verify_ledger(
            reader, keyring, trusted=_trusted(), external=_witnessed(), workers=1
        ).check()
        meta = reader.meta()
    assert (report.size, report.signatures_verified, report.checkpoints_external) == (6, 6, 2)
    assert meta["hash_algorithm"] == "deploy-ledger-chain-sha256-v1"
    verified = ledger_cli("verify", "--db", str(v1_ledger), "--keyring",
                          str(DATA / "keyring.json"), *_cli_witness())  # fmt: skip
    assert verified.returncode == 0, verified.stderr


def _cli_witness() -> tuple[str, ...]:
    return ("--trusted-key", str(DATA / "ledger.pub"), "--checkpoint", str(DATA / "ledger.witness"))


def test_its_bundle_still_verifies_under_the_rules_it_was_written_under() -> None:
    report = verify_bundle((DATA / "bundle.json").read_bytes(), _trusted())
    assert report.rules == 1  # it names no version: written before versions were named
    deployment = report.answer["deployment"]
    assert deployment["approved"] and deployment["change_ref"] == "CHG-2"
    assert "rules" not in report.answer
    checked = ledger_cli("verify-bundle", str(DATA / "bundle.json"), "--trusted-key",
                         str(DATA / "ledger.pub"))  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def _signer(name: str, home: Path) -> Signer:
    """A private key of the test data, copied owner-only: git keeps no file modes, and a key
    open to others is refused."""
    path = home / f"{name}.key"
    shutil.copy(DATA / f"{name}.key", path)
    path.chmod(0o600)
    return Signer.from_file(path)


def test_a_writer_extends_it_in_format_2_without_rehashing(v1_ledger: Path) -> None:
    before = _rows(v1_ledger)
    keyring = Keyring.load(DATA / "keyring.json")
    ci, ledger_key = (_signer(name, v1_ledger.parent) for name in ("ci-main", "ledger"))
    writer = LedgerWriter(v1_ledger, checkpoint_signer=ledger_key)
    try:
        events = [make_event(service="checkout", image=IMAGE_A, actor=f"u{n}") for n in range(2)]
        append(writer, keyring, [seal(e, ci) for e in events], first_offset=6, checkpoint=True)
    finally:
        writer.close()
    after = _rows(v1_ledger)
    assert after[:6] == before  # not a byte of the old entries changed
    assert [fmt for _, fmt, _ in after] == [1] * 6 + [2] * 2
    with LedgerReader(v1_ledger) as reader:
        report = verify_ledger(
            reader, keyring, trusted=_trusted(), external=_witnessed(), workers=1
        ).check()
        assert reader.meta()["format_version"] == "2"
        bundle, checked = build_bundle(
            reader,
            AsOfQuery(kind="asof", service="checkout", environment="prod", at=AT),
            keyring,
            ledger_key,
        )
    assert (report.size, report.signatures_verified, report.checkpoints_stored) == (8, 8, 3)
    assert checked.rules == 2 and checked.answer["rules"] == 2
    assert verify_bundle(bundle, TrustedKey("ledger", ledger_key.public_raw)).rules == 2


def test_an_event_sent_again_by_an_upgraded_producer_is_a_duplicate(tmp_path: Path) -> None:
    """A file re-sent after the producer moved to a newer schema version carries the same
    events in other bytes: each is recorded once, the first envelope standing, and none is
    quarantined as a conflicting duplicate."""
    schemas = Path(__file__).resolve().parent.parent / "schemas"
    v1_only = SchemaSet([Schema.from_json(name, 1, (schemas / f"{name}.v1.avsc").read_text())
                         for name in ("Event", "Envelope")])  # fmt: skip
    ci, _, ring = signers()
    event = make_event(image=IMAGE_A)
    old = Envelope.sign(encode_event(event, v1_only), ci).to_bytes(v1_only)
    new = seal(event, ci)
    assert old != new
    writer = LedgerWriter(tmp_path / "ledger.duckdb")
    try:
        append(writer, ring, [old], 0)
        again = accepted(writer, ring, new, Received("ledger.events", 0, 1, b"k", new, 0,
                                                    Witness.CONSUMER))  # fmt: skip
        plan = writer.prepare([again], {("ledger.events", 0): 2})
    finally:
        writer.close()
    assert (plan.duplicates, plan.entries, plan.quarantined) == (1, [], [])


DATA_V2 = Path(__file__).resolve().parent / "data" / "ledger-v2"


def test_a_ledger_written_with_schema_v2_still_verifies_and_reads(tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    with gzip.open(DATA_V2 / "ledger.duckdb.gz", "rb") as packed, db.open("wb") as out:
        shutil.copyfileobj(packed, out)
    witness = ("--trusted-key", str(DATA_V2 / "ledger.pub"), "--checkpoint",
               str(DATA_V2 / "ledger.witness"))  # fmt: skip
    verified = ledger_cli("verify", "--db", str(db), "--keyring", str(DATA_V2 / "keyring.json"),
                          *witness)  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    checked = ledger_cli("verify-bundle", str(DATA_V2 / "bundle.json"), "--trusted-key",
                         str(DATA_V2 / "ledger.pub"))  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    at = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    with LedgerReader(db) as reader:
        live = asof(reader, "checkout", "prod", at)
        report = check(reader, "prod", at - timedelta(days=2), at)
        data = reader.con.execute(
            "SELECT data FROM entries WHERE type = 'deployment.succeeded' AND environment = 'prod'"
        ).fetchall()
    assert live.deployment is not None and live.deployment.approved
    assert live.classification is not None and live.classification.model == "immutable"
    assert '"commit_time":"2026-11-20T07:00:00Z"' in data[0][0]
    assert report.policies and report.policies[0]["seq"] == 2
    assert {f.rule for f in report.findings} == {"late_arrival"}  # honest, only backfilled
