"""Rotating the ledger's own key, and attacks on a rotation.

The key that signs as the ledger changes only by a rotation record in the chain, signed by
the key in force and naming its successor. Verification follows the rotations from whichever
of the ledger's keys an auditor trusts; a checkpoint signed by a key out of force, a rotation
by a key that was never in force and a trust root that is none of the ledger's keys all fail.

The ledger here: a keyring record, three events, a checkpoint by `ledger` (entries 1-4);
the rotation to `ledger-2027` (entry 5, with its checkpoint); three more events and a
checkpoint by the new key (6-8).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from attack_helpers import execute, failure
from consumer_helpers import cli_json, ledger_cli
from ledger_builders import append, sealed_values, signers

from ledger.errors import CheckpointError, ForeignLedgerKeyError
from ledger.evidence.build import build_bundle
from ledger.evidence.bundle import AsOfQuery, verify_bundle
from ledger.log.checkpoint import Checkpoint, TrustedKey, sign_checkpoint, verifier_key
from ledger.store.identity import ledger_keys
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.witness import append_note
from ledger.wire.keyring import Keyring, Signer, generate_key_files

ROTATION = 5


@dataclass(frozen=True)
class Rotated:
    db: Path
    witness: Path
    ring: Keyring
    old: Signer
    new: Signer
    keys: Path  # old.key/.pub and new.key/.pub: ledger.* and ledger-2027.*


@pytest.fixture
def rotated(tmp_path: Path) -> Rotated:
    keys = tmp_path / "keys"
    generate_key_files("ledger", keys)
    generate_key_files("ledger-2027", keys)
    old, new = Signer.from_file(keys / "ledger.key"), Signer.from_file(keys / "ledger-2027.key")
    ci, approver, ring = signers()
    db, witness = tmp_path / "ledger.duckdb", tmp_path / "ledger.witness"
    writer = LedgerWriter(db, checkpoint_signer=old)
    try:
        writer.record_keyring(ring, "keyring.json")
        append_note(witness, append(writer, ring, sealed_values(ci, approver, 3), 0, True) or "")
    finally:
        writer.close()
    result = ledger_cli("keys", "rotate-ledger", "--db", str(db), "--ledger-key",
                        str(keys / "ledger.key"), "--new-key", str(keys / "ledger-2027.key"),
                        "--witness", str(witness), "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert cli_json(result)["seq"] == ROTATION
    writer = LedgerWriter(db, checkpoint_signer=new)
    try:
        append_note(witness, append(writer, ring, sealed_values(ci, approver, 3, 3), 3, True) or "")
    finally:
        writer.close()
    return Rotated(db, witness, ring, old, new, keys)


def _verify(rotated: Rotated, trusted: str, *extra: str) -> tuple[int, dict[str, object]]:
    result = ledger_cli("verify", "--db", str(rotated.db), "--trusted-key",
                        str(rotated.keys / f"{trusted}.pub"), "--json", *extra)  # fmt: skip
    return result.returncode, cli_json(result)


@pytest.mark.parametrize("trusted", ["ledger", "ledger-2027"])
def test_verify_follows_the_rotation_from_either_key(rotated: Rotated, trusted: str) -> None:
    """The old key vouches for the new by the rotation it signed; the new key's checkpoints
    cover that rotation. Witness copies from before and after it check alike."""
    code, report = _verify(rotated, trusted, "--checkpoint", str(rotated.witness))
    assert code == 0, report
    assert [(k["since"], k["key"]) for k in report["ledger_keys"]] == [  # type: ignore[attr-defined]
        (1, "ledger"),
        (ROTATION, "ledger-2027"),
    ]
    assert report["checkpoints"] == {"stored": 3, "external": 3, "trusted_key": True,
                                     "latest_size": 8, "skipped": [], "superseded": []}  # fmt: skip


def test_the_old_key_signs_nothing_after_its_rotation(rotated: Rotated) -> None:
    with pytest.raises(ForeignLedgerKeyError, match="named by a rotation"):
        LedgerWriter(rotated.db, checkpoint_signer=rotated.old)
    question = AsOfQuery(kind="asof", service="billing", environment="prod", at=datetime.now(UTC))
    with LedgerReader(rotated.db) as reader, pytest.raises(ForeignLedgerKeyError):
        build_bundle(reader, question, rotated.ring, rotated.old)
    with LedgerReader(rotated.db) as reader:
        data, _ = build_bundle(reader, question, rotated.ring, rotated.new)
    assert verify_bundle(data, TrustedKey("ledger-2027", rotated.new.public_raw)).answer


def test_attack_checkpoint_by_the_old_key_after_its_rotation(rotated: Rotated) -> None:
    """Whoever kept the retired ledger key signs a checkpoint of the ledger as it now stands:
    it was not the key in force at that size."""
    with LedgerReader(rotated.db) as reader:
        root, origin = reader.checkpoints()[-1][1], reader.meta()["origin"]
    note = sign_checkpoint(Checkpoint(origin, 8, root), rotated.old)
    execute(rotated.db, "INSERT INTO checkpoints VALUES (8, ?, ?, ?, now())", root, note,
            verifier_key(rotated.old.key_id, rotated.old.public_raw))  # fmt: skip
    error = failure(rotated.db, rotated.ring, trusted=rotated.old)
    assert isinstance(error, CheckpointError) and error.check == "checkpoint"
    assert "not by the ledger key in force at that size, 'ledger-2027'" in error.message
    assert f"named by the rotation at entry {ROTATION}" in error.message


def test_attack_rotation_signed_by_a_key_never_in_force(tmp_path: Path, rotated: Rotated) -> None:
    """A writer of the file appends a rotation to a key of its own, signed by that key (a
    self-made successor): the chain is sound, the rotation is not the key in force's."""
    thief = Signer.generate("ledger")
    writer = LedgerWriter(rotated.db)
    try:
        writer.checkpoint_signer = thief
        writer.record_key_rotation(Signer.generate("ledger-thief"))
    finally:
        writer.close()
    with LedgerReader(rotated.db) as reader, pytest.raises(CheckpointError, match="not the key in"):
        ledger_keys(reader.con)
    error = failure(rotated.db, rotated.ring, trusted=rotated.old)
    assert isinstance(error, CheckpointError) and "on behalf of 'ledger'" in error.message


def test_attack_trust_root_that_is_none_of_the_ledgers_keys(
    tmp_path: Path, rotated: Rotated
) -> None:
    generate_key_files("ledger-x", rotated.keys)
    code, report = _verify(rotated, "ledger-x")
    assert code == 1 and report["check"] == "checkpoint"
    assert "none of the keys this ledger was signed with" in str(report["reason"])


def test_a_rotation_needs_the_key_in_force(rotated: Rotated, tmp_path: Path) -> None:
    copy = tmp_path / "copy.duckdb"
    shutil.copy(rotated.db, copy)
    result = ledger_cli("keys", "rotate-ledger", "--db", str(copy), "--ledger-key",
                        str(rotated.keys / "ledger.key"), "--new-key",
                        str(rotated.keys / "ledger.key"))  # fmt: skip
    assert result.returncode == 2 and "is not this ledger's key" in result.stderr
