"""`ledger doctor` on a real deployment (the bundled broker, a ledger the consumer wrote),
then with each part broken in turn: the finding names it, and only a failure exits 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from consumer_helpers import cli_json, consume, emit, ledger_cli
from helpers import make_event

from consumers.ledger_consumer import CheckpointPolicy
from ledger.log.checkpoint import Checkpoint, sign_checkpoint
from ledger.store.reader import LedgerReader
from ledger.transport.broker import free_port
from ledger.transport.settings import KafkaSettings
from ledger.wire.keyring import Keyring, Signer

pytestmark = pytest.mark.kafka


def _doctor(
    kafka: KafkaSettings, db: Path, keyring: Path, *extra: str
) -> tuple[int, dict[str, Any]]:
    result = ledger_cli("doctor", "--bootstrap", kafka.bootstrap, "--topic", kafka.topic,
                        "--db", str(db), "--keyring", str(keyring), "--timeout", "3", "--json",
                        *extra)  # fmt: skip
    return result.returncode, {f["check"]: f for f in cli_json(result)}


def test_a_sound_deployment_and_each_part_broken(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    db, ring_file, witness = tmp_path / "ledger.duckdb", tmp_path / "keyring.json", tmp_path / "w"
    keyring.save(ring_file)
    ledger_key = Signer.generate("ledger")
    emit(kafka, ci_signer, [make_event() for _ in range(3)])
    consume(kafka, db, keyring, checkpoints=CheckpointPolicy(ledger_key, witness, every=1))

    code, found = _doctor(kafka, db, ring_file, "--witness", str(witness))
    assert code == 0, found
    assert {c: f["status"] for c, f in found.items() if f["status"] == "fail"} == {}
    assert found["broker"]["status"] == "ok"
    assert found[f"topic {kafka.topic}"]["detail"].startswith("3 partitions, nothing unread")
    assert "ci-main: deployment.*" in found["keyring"]["detail"]
    assert found["ledger"]["status"] == "ok" and found["ledger key"]["detail"] == "pinned: ledger"
    assert found["witness"]["status"] == "ok"
    assert found["verified"]["status"] == "warn"  # never recorded

    assert ledger_cli("verify", "--db", str(db), "--record").returncode == 0
    assert _doctor(kafka, db, ring_file, "--witness", str(witness))[1]["verified"]["status"] == "ok"

    with LedgerReader(db) as reader:  # a witness copy the ledger does not extend
        origin = reader.meta()["origin"]
    witness.write_text(witness.read_text() + sign_checkpoint(Checkpoint(origin, 2, bytes(32)),
                                                             ledger_key))  # fmt: skip
    code, found = _doctor(kafka, db, ring_file, "--witness", str(witness))
    assert code == 1 and found["ledger"]["status"] == "fail"
    assert "consistency" in found["ledger"]["detail"]

    ring_file.write_text("{")
    code, found = _doctor(kafka, db, ring_file)
    assert code == 1 and found["keyring"]["status"] == "fail"

    unreachable = KafkaSettings(bootstrap=f"127.0.0.1:{free_port()}", topic=kafka.topic)
    code, found = _doctor(unreachable, db, ring_file)
    assert code == 1 and found["broker"]["status"] == "fail"
    assert f"topic {kafka.topic}" not in found  # nothing asked of a broker that is not there
