"""Restoring a backup after the ledger was lost: the hard case, where the lost copy had
published checkpoints past the backup (to the checkpoint topic and the witness file). Put
back as it is, the restored ledger chains those entries anew, with other times, and
`verify --checkpoint-topic` fails against them for good; stated as a restore by the ledger
key, verify follows it: they are reported as superseded, and everything else still holds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from consumer_helpers import cli_json, consume, emit, event_entries, ledger_cli
from helpers import make_event

from consumers.ledger_consumer import CheckpointPolicy
from ledger.transport.settings import KafkaSettings
from ledger.wire.keyring import Keyring, Signer, generate_key_files

pytestmark = pytest.mark.kafka


def test_a_restore_resumes_without_loss_or_duplication_and_verify_follows_it(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    key_file, pub = generate_key_files("ledger", tmp_path / "keys")
    ledger_key = Signer.from_file(key_file)
    db, witness, backup = tmp_path / "ledger.duckdb", tmp_path / "ledger.witness", tmp_path / "b"
    topic = f"{kafka.topic}.checkpoints"
    policy = CheckpointPolicy(ledger_key, witness, topic=topic, every=2)
    first = [make_event(service=f"first-{i}") for i in range(6)]
    emit(kafka, ci_signer, first)
    consume(kafka, db, keyring, checkpoints=policy)
    assert ledger_cli("backup", "--db", str(db), "--out", str(backup)).returncode == 0
    second = [make_event(service=f"second-{i}") for i in range(6)]
    emit(kafka, ci_signer, second)
    consume(kafka, db, keyring, checkpoints=policy)  # checkpoints past the backup, published
    db.rename(tmp_path / "lost.duckdb")  # the disk is gone; the topic and the witness stay

    def verify(ledger: Path, *extra: str) -> tuple[int, dict[str, object]]:
        result = ledger_cli("verify", "--db", str(ledger), "--trusted-key", str(pub),
                            "--checkpoint-topic", topic, "--bootstrap", kafka.bootstrap,
                            "--json", *extra)  # fmt: skip
        return result.returncode, cli_json(result)

    unstated = tmp_path / "unstated.duckdb"  # the backup put back as it is
    shutil.copyfile(backup, unstated)
    consume(kafka, unstated, keyring)
    code, report = verify(unstated)
    assert (code, report["check"]) == (1, "consistency")

    restored = ledger_cli("restore", "--backup", str(backup), "--db", str(db), "--ledger-key",
                          str(key_file), "--witness", str(witness), "--json")  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    size = cli_json(restored)["restored_size"]
    stats = consume(kafka, db, keyring, checkpoints=policy)
    assert (stats.accepted, stats.duplicates, stats.quarantined) == (6, 0, 0)
    assert sorted(r["event_id"] for r in event_entries(db)) == sorted(e.id for e in first + second)

    code, report = verify(db, "--checkpoint", str(witness))
    assert code == 0, report
    assert report["restores"] == [{"seq": size + 1, "size": size}]
    superseded = report["checkpoints"]["superseded"]  # type: ignore[index]
    assert superseded and all(s["size"] > size and s["restore_seq"] == size + 1
                              for s in superseded)  # fmt: skip
    again = ledger_cli("restore", "--backup", str(backup), "--db", str(db), "--ledger-key",
                       str(key_file))  # fmt: skip
    assert again.returncode == 2 and "move the lost or damaged ledger away" in again.stderr
