"""Attacks on the ledger's own identity: only the key pinned in the ledger signs as it, and
nothing is called verified without a trust root.

Once handed a producer's private key as its checkpoint key, the consumer signed a
checkpoint with it into the ledger, the witness file and the checkpoint topic, and the
ledger failed verification for good; `ledger evidence` signed a bundle with any key;
`verify-bundle` and `proof verify` exited 0 with no trusted key.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from consumer_helpers import cli_json, consume, emit, ledger_cli
from helpers import make_event
from kafka import KafkaProducer

from consumers.ledger_consumer import CheckpointPolicy
from ledger.errors import ForeignLedgerKeyError
from ledger.log.checkpoint import Checkpoint, sign_checkpoint
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.transport.settings import KafkaSettings
from ledger.transport.topics import read_topic
from ledger.wire.keyring import Keyring, Signer, generate_key_files


def test_attack_foreign_checkpoint_key_is_refused_before_anything_is_signed(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    db, witness = tmp_path / "ledger.duckdb", tmp_path / "ledger.witness"
    ledger_key = Signer.generate("ledger")
    emit(kafka, ci_signer, [make_event() for _ in range(3)])
    consume(kafka, db, keyring, checkpoints=CheckpointPolicy(ledger_key, witness, every=1))
    witnessed = witness.read_bytes()
    with pytest.raises(ForeignLedgerKeyError, match="is not this ledger's key"):
        LedgerWriter(db, checkpoint_signer=ci_signer)  # a producer's key, by mistake

    keys = tmp_path / "keys"
    keyring_file = tmp_path / "keyring.json"
    keyring.save(keyring_file)
    producer_key, _ = generate_key_files("ci-main", keys)
    emit(kafka, ci_signer, [make_event()])
    result = ledger_cli("consume", "--bootstrap", kafka.bootstrap, "--topic", kafka.topic,
                        "--db", str(db), "--keyring", str(keyring_file), "--ledger-key",
                        str(producer_key), "--until-idle", "2")  # fmt: skip
    assert result.returncode == 2
    assert "is not this ledger's key" in result.stderr and "'ledger'" in result.stderr
    assert witness.read_bytes() == witnessed  # nothing signed: not in the witness file...
    with LedgerReader(db) as reader:  # ...nor in the ledger
        assert {vkey.split("+")[0] for _, _, _, vkey in reader.checkpoints()} == {"ledger"}
        assert reader.size() == 1 + 3  # keyring, events: nothing more, refused at the start


def test_attack_foreign_evidence_key_is_refused(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    db, keyring_file = tmp_path / "ledger.duckdb", tmp_path / "keyring.json"
    keyring.save(keyring_file)
    ledger_key = Signer.generate("ledger")
    emit(kafka, ci_signer, [make_event()])
    consume(kafka, db, keyring, checkpoints=CheckpointPolicy(ledger_key, tmp_path / "w"))
    producer_key, _ = generate_key_files("ci-main", tmp_path / "keys")
    ask = ("evidence", "--db", str(db), "--keyring", str(keyring_file), "--service",
           "checkout", "--env", "prod", "--at", "now")  # fmt: skip
    refused = ledger_cli(*ask, "--ledger-key", str(producer_key))
    assert refused.returncode == 2
    assert "is not this ledger's key" in refused.stderr
    assert refused.stdout == ""  # no bundle
    ledger_file = tmp_path / "ledger.key"
    ledger_key.save(ledger_file)
    signed = ledger_cli(*ask, "--ledger-key", str(ledger_file))
    assert signed.returncode == 0, signed.stderr


def test_a_foreign_checkpoint_on_the_topic_is_skipped_and_reported(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    """Anyone who may write to the checkpoint topic can append junk or a note signed by
    another key: verification skips it and says so; it never fails for it."""
    db, topic = tmp_path / "ledger.duckdb", kafka.topic + ".checkpoints"
    ledger_key = Signer.generate("ledger")
    pub = tmp_path / "ledger.pub"
    pub.write_bytes(ledger_key.public_pem())
    emit(kafka, ci_signer, [make_event() for _ in range(4)])
    policy = CheckpointPolicy(ledger_key, tmp_path / "w", topic=topic, every=2)
    consume(kafka, db, keyring, batch_size=2, checkpoints=policy)
    with LedgerReader(db) as reader:
        origin = reader.meta()["origin"]
    foreign = sign_checkpoint(Checkpoint(origin, 4, bytes(32)), ci_signer)
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for value in (foreign.encode(), b"\xff not a note", None):  # None: a tombstone
        producer.send(topic, key=b"x", value=value).get(timeout=30)
    producer.close()
    published = len(read_topic(kafka, topic))
    verify = ["verify", "--db", str(db), "--trusted-key", str(pub), "--checkpoint-topic", topic,
              "--bootstrap", kafka.bootstrap]  # fmt: skip
    result = ledger_cli(*verify, "--json")
    assert result.returncode == 0, result.stderr
    checkpoints = cli_json(result)["checkpoints"]
    assert len(checkpoints["skipped"]) == 3
    assert checkpoints["external"] == published - 3 >= 2
    shown = ledger_cli(*verify)
    assert shown.stderr.count("skipped ") == 3


def test_attack_bundle_with_no_trust_root_is_not_success(tmp_path: Path) -> None:
    """Anyone can sign a bundle: without --trusted-key every other check may pass, but the
    exit code is 4 and the JSON says ok: false."""
    bundle = Path(__file__).parent / "data" / "ledger-v1" / "bundle.json"
    plain = ledger_cli("verify-bundle", str(bundle))
    assert plain.returncode == 4
    assert "NOT VERIFIED" in plain.stderr and "--trusted-key" in plain.stderr
    as_json = ledger_cli("verify-bundle", str(bundle), "--json")
    assert as_json.returncode == 4
    assert json.loads(as_json.stdout)["ok"] is False
