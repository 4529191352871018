"""The consumer signs checkpoints of the Merkle tree and keeps copies outside the ledger:
the checkpoint topic and the witness file. Real broker, real DuckDB file."""

from __future__ import annotations

from pathlib import Path

import pytest
from attack_helpers import truncate
from consumer_helpers import cli_json, consume, emit, entries, ledger_cli
from helpers import make_event

from consumers.ledger_consumer import CheckpointPolicy
from ledger.log.checkpoint import open_checkpoint, split_notes
from ledger.log.merkle import LeafHashes, leaf_hash, root_at
from ledger.store.reader import LedgerReader
from ledger.transport.settings import KafkaSettings
from ledger.transport.topics import read_topic
from ledger.wire.keyring import Keyring, Signer

pytestmark = pytest.mark.kafka


def _open_all(notes: list[str], key: Signer, origin: str) -> list[tuple[int, bytes]]:
    return [
        (c.size, c.root)
        for c in (open_checkpoint(n, key.key_id, key.public_raw, origin) for n in notes)
    ]


def test_consumer_signs_publishes_and_witnesses_checkpoints(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    ledger_key = Signer.generate("ledger")
    db, witness = tmp_path / "ledger.duckdb", tmp_path / "ledger.witness"
    topic = kafka.topic + ".checkpoints"
    policy = CheckpointPolicy(ledger_key, witness, topic=topic, every=50, seconds=3600)
    emit(kafka, ci_signer, [make_event(service=f"svc-{i % 7}") for i in range(160)])

    stats = consume(kafka, db, keyring, batch_size=40, checkpoints=policy)

    with LedgerReader(db) as reader:
        origin = reader.meta()["origin"]
        stored = reader.checkpoints()
        tree = reader.tree()
        leaves = LeafHashes([leaf_hash(bytes(r["hash"])) for r in entries(db)])
        # every stored checkpoint signs the root the tree had at its size
        for size, root, _note, _vkey in stored:
            assert root == root_at(tree, size) == root_at(leaves, size)
    witnessed = _open_all(split_notes(witness.read_text()), ledger_key, origin)
    sizes = [size for size, _ in witnessed]
    assert sizes == sorted(set(sizes)), "witness sizes must only grow"
    assert sizes[-1] == 1 + 160  # the last one, signed on the way out, covers everything
    assert all(s - prev >= 50 for prev, s in zip([0, *sizes], sizes[:-1], strict=False))
    assert witnessed == [(size, root) for size, root, _, _ in stored]
    assert stats.checkpoints == len(stored)
    published = [value.decode() for _, _, value in read_topic(kafka, topic)]
    assert _open_all(published, ledger_key, origin) == witnessed

    status = ledger_cli("status", "--db", str(db), "--json")
    assert status.returncode == 0, status.stderr
    assert (cli_json(status)["checkpoint_size"], cli_json(status)["origin"]) == (161, origin)

    # A restart with nothing new signs nothing and does not repeat the witness.
    before = witness.read_bytes()
    again = consume(kafka, db, keyring, checkpoints=policy, until_idle=1.0)
    assert again.checkpoints == 0
    assert witness.read_bytes() == before


def test_cli_consume_with_a_checkpoint_key_writes_the_witness_next_to_the_ledger(
    kafka: KafkaSettings, ci_signer: Signer, keyring_file: Path, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    assert ledger_cli("keys", "generate", "--id", "ledger", "--out", str(keys)).returncode == 0
    emit(kafka, ci_signer, [make_event() for _ in range(5)])
    db = tmp_path / "cli.duckdb"

    result = ledger_cli(
        "consume",
        "--bootstrap",
        kafka.bootstrap,
        "--topic",
        kafka.topic,
        "--db",
        str(db),
        "--keyring",
        str(keyring_file),
        "--until-idle",
        "2",
        LEDGER_LEDGER_KEY=str(keys / "ledger.key"),
    )

    assert result.returncode == 0, result.stderr
    assert "checkpoints 1" in result.stderr
    notes = split_notes((tmp_path / "cli.witness").read_text())
    key = Signer.from_file(keys / "ledger.key")
    assert [size for size, _ in _open_all(notes, key, notes[0].split("\n")[0])] == [1 + 5]


def test_cli_consume_without_a_checkpoint_key_warns(
    kafka: KafkaSettings, keyring_file: Path, tmp_path: Path
) -> None:
    result = ledger_cli(
        "consume",
        "--bootstrap",
        kafka.bootstrap,
        "--topic",
        kafka.topic,
        "--db",
        str(tmp_path / "l.duckdb"),
        "--keyring",
        str(keyring_file),
        "--until-idle",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "truncation" in result.stderr


def test_verify_proves_the_ledger_extends_every_checkpoint_on_the_topic(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    """The topic is a copy outside the ledger: a cut-off tail is caught against it."""
    ledger_key = Signer.generate("ledger")
    pub = tmp_path / "ledger.pub"
    pub.write_bytes(ledger_key.public_pem())
    db, topic = tmp_path / "ledger.duckdb", kafka.topic + ".checkpoints"
    policy = CheckpointPolicy(ledger_key, tmp_path / "w", topic=topic, every=20, seconds=3600)
    emit(kafka, ci_signer, [make_event(service=f"svc-{i % 3}") for i in range(60)])
    consume(kafka, db, keyring, batch_size=20, checkpoints=policy)
    verify = ("verify", "--db", str(db), "--trusted-key", str(pub), "--checkpoint-topic", topic,
              "--bootstrap", kafka.bootstrap, "--json")  # fmt: skip

    result = ledger_cli(*verify)
    assert result.returncode == 0, result.stderr
    assert cli_json(result)["checkpoints"]["external"] == len(read_topic(kafka, topic)) >= 3

    truncate(db, 45)
    result = ledger_cli(*verify)
    report = cli_json(result)
    assert result.returncode == 1
    assert (report["check"], report["first_bad_seq"]) == ("truncated", 46)
    assert f"{topic}[0]@" in report["reason"]


def test_verify_names_a_missing_checkpoint_topic(
    kafka: KafkaSettings, ci_signer: Signer, keyring: Keyring, tmp_path: Path
) -> None:
    pub = tmp_path / "ledger.pub"
    pub.write_bytes(Signer.generate("ledger").public_pem())
    db = tmp_path / "ledger.duckdb"
    emit(kafka, ci_signer, [make_event()])
    consume(kafka, db, keyring)
    result = ledger_cli(
        "verify",
        "--db",
        str(db),
        "--trusted-key",
        str(pub),
        "--checkpoint-topic",
        "no.such.topic",
        "--bootstrap",
        kafka.bootstrap,
    )
    assert result.returncode == 2
    assert "no.such.topic does not exist" in result.stderr
