"""Poison records: whatever any writer of the topic puts on it, the consumer chains it or
quarantines it, and goes on with everything behind it.

Each attack once stopped ingestion for good (the consumer exited on the same record at
every restart) or let a message no producer of this ledger may sign into the chain.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from consumer_helpers import (
    Produced,
    consume,
    dead_letters,
    emit,
    event_entries,
    event_record,
    headers,
    produce_raw,
    quarantine,
    sealed_record,
    verify,
)
from helpers import DIGEST_A, make_event
from kafka import KafkaProducer

from consumers.ledger_consumer import LedgerConsumer
from ledger.errors import ChainBrokenError
from ledger.log.chain import Witness
from ledger.store.batch import KEPT_BYTES, Accepted, Received
from ledger.store.writer import LedgerWriter
from ledger.transport.settings import KafkaSettings
from ledger.wire.codec import MAX_PAYLOAD_BYTES
from ledger.wire.columns import decoded_columns
from ledger.wire.keyring import Keyring, Signer
from ledger.wire.verify import MAX_ENVELOPE_BYTES

NEAR_ONE_MIB = 1_000_000  # under the broker's default message.max.bytes (1 MiB + 12)


@dataclass(frozen=True)
class Poisoned:
    """Poison records between honest events on one partition, consumed once."""

    settings: KafkaSettings
    db: Path
    honest: list[str]
    poison: list[Produced]


def _poison(
    kafka: KafkaSettings, tmp_path: Path, ci_signer: Signer, keyring: Keyring,
    values: list[bytes | None], keys: list[bytes | None],
) -> Poisoned:  # fmt: skip
    """Honest events before and after the poison, on the poison's partition and others."""
    before = emit(kafka, ci_signer, [make_event(service=f"svc-{i}") for i in range(6)])
    poison = produce_raw(kafka, values, keys=keys, partition=0)
    after = emit(kafka, ci_signer, [make_event(service=f"svc-{i}") for i in range(6)])
    db = tmp_path / "ledger.duckdb"
    consume(kafka, db, keyring)
    return Poisoned(kafka, db, before + after, poison)


def _chained(db: Path) -> list[str]:
    return [row["event_id"] for row in event_entries(db)]


def test_a_tombstone_is_quarantined_and_everything_behind_it_is_chained(
    kafka: KafkaSettings, tmp_path: Path, ci_signer: Signer, keyring: Keyring
) -> None:
    run = _poison(kafka, tmp_path, ci_signer, keyring, [None], [b"checkout/prod"])
    assert sorted(_chained(run.db)) == sorted(run.honest)
    (row,) = quarantine(run.db)
    assert (row["reason"], row["value"], row["value_size"]) == ("null_value", None, None)
    assert "tombstone" in row["detail"]
    assert (row["kafka_partition"], row["kafka_offset"]) == (0, run.poison[0].offset)
    (letter,) = dead_letters(run.settings, 1)
    assert (letter.key, letter.value) == (b"checkout/prod", None)
    assert headers(letter)["ledger_reason"] == b"null_value"

    consume(run.settings, run.db, keyring)  # a restart reads nothing twice
    assert len(quarantine(run.db)) == 1
    assert sorted(_chained(run.db)) == sorted(run.honest)
    verify(run.db, keyring)


def test_an_empty_value_is_quarantined_as_a_malformed_envelope(
    kafka: KafkaSettings, tmp_path: Path, ci_signer: Signer, keyring: Keyring
) -> None:
    run = _poison(kafka, tmp_path, ci_signer, keyring, [b""], [None])
    assert sorted(_chained(run.db)) == sorted(run.honest)
    (row,) = quarantine(run.db)
    assert (row["reason"], bytes(row["value"]), row["value_size"]) == ("malformed_envelope", b"", 0)


@pytest.mark.parametrize("where", ["value", "key"])
def test_a_record_near_one_mebibyte_is_kept_cut_with_the_digest_of_the_whole(
    kafka: KafkaSettings, tmp_path: Path, ci_signer: Signer, keyring: Keyring, where: str
) -> None:
    big = os.urandom(NEAR_ONE_MIB)
    value, key = (big, b"k") if where == "value" else (b"\x00junk", big)
    run = _poison(kafka, tmp_path, ci_signer, keyring, [value], [key])
    assert sorted(_chained(run.db)) == sorted(run.honest)

    (row,) = quarantine(run.db)
    assert row["reason"] == ("oversize" if where == "value" else "malformed_envelope")
    assert bytes(row["value"]) == value[:KEPT_BYTES]
    assert bytes(row["kafka_key"]) == key[:KEPT_BYTES]
    assert (row["value_size"], row["key_size"]) == (len(value), len(key))
    assert row["value_sha256"] == hashlib.sha256(value).hexdigest()

    (letter,) = dead_letters(run.settings, 1)
    assert (letter.value, letter.key) == (value[:KEPT_BYTES], key[:KEPT_BYTES])
    said = headers(letter)
    assert said["ledger_truncated"] == where.encode()
    assert said["ledger_value_size"] == str(len(value)).encode()
    assert said["ledger_value_sha256"] == hashlib.sha256(value).hexdigest().encode()


def _oversize_event(signer: Signer) -> tuple[bytes, Any]:
    """A valid event signed by a trusted key, whose payload is over the 48 KiB limit but
    whose envelope is under the 64 KiB one."""
    image = "registry.example/" + "a" * (MAX_PAYLOAD_BYTES + 1000) + "@" + DIGEST_A
    event = make_event(image=image)
    value = sealed_record(signer, event_record(event))
    assert len(value) <= MAX_ENVELOPE_BYTES
    return value, event


def test_a_signed_payload_over_the_limit_is_refused(
    kafka: KafkaSettings, tmp_path: Path, ci_signer: Signer, keyring: Keyring
) -> None:
    value, _ = _oversize_event(ci_signer)
    run = _poison(kafka, tmp_path, ci_signer, keyring, [value], [None])
    assert sorted(_chained(run.db)) == sorted(run.honest)
    (row,) = quarantine(run.db)
    assert row["reason"] == "oversize"
    assert f"over the {MAX_PAYLOAD_BYTES:,}-byte limit" in row["detail"]


def test_verify_fails_a_ledger_that_chained_a_payload_over_the_limit(
    tmp_path: Path, ci_signer: Signer, keyring: Keyring
) -> None:
    """A ledger written before the consumer refused them: ``verify`` names the entry."""
    value, event = _oversize_event(ci_signer)
    db = tmp_path / "ledger.duckdb"
    writer = LedgerWriter(db)
    try:
        received = Received("ledger.events", 0, 0, None, value, writer.clock.now_us(),
                            Witness.CONSUMER)  # fmt: skip
        message = Accepted(received, decoded_columns(event, ci_signer.key_id),
                           writer.keyring_digest)  # fmt: skip
        writer.commit(writer.prepare([message], {("ledger.events", 0): 1}))
    finally:
        writer.close()
    with pytest.raises(ChainBrokenError) as caught:
        verify(db, keyring)
    assert caught.value.check == "decoded_columns"
    assert f"over the {MAX_PAYLOAD_BYTES:,}-byte limit" in caught.value.message


class _NoDeadLetters(LedgerConsumer):
    """A consumer whose dead-letter producer refuses every send: a dead-letter topic it
    cannot reach, or one whose limits it does not fit."""

    def _connect(self, limit: float | None) -> tuple[Any, KafkaProducer] | None:
        clients = super()._connect(limit)
        if clients is None:
            return None
        consumer, dlq = clients
        dlq.close(timeout=5)
        return consumer, KafkaProducer(**self.settings.client_config(), max_request_size=64)


def test_a_dead_letter_topic_that_refuses_everything_does_not_stop_chaining(
    kafka: KafkaSettings,
    tmp_path: Path,
    ci_signer: Signer,
    keyring: Keyring,
    caplog: pytest.LogCaptureFixture,
) -> None:
    honest = emit(kafka, ci_signer, [make_event(service=f"svc-{i}") for i in range(5)])
    produce_raw(kafka, [b"junk-1", b"junk-2", None], keys=[None, None, b"k"])
    honest += emit(kafka, ci_signer, [make_event(service=f"svc-{i}") for i in range(5)])
    db = tmp_path / "ledger.duckdb"
    with caplog.at_level(logging.ERROR, logger="ledger.consumer"):
        stats = _NoDeadLetters(kafka, db, keyring, workers=1).run(until_idle=2.0)
    assert sorted(_chained(db)) == sorted(honest)
    assert len(quarantine(db)) == 3
    assert stats.dead_letter_failures == 3
    assert "kept in the quarantine table all the same" in caplog.text
