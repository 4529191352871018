"""Helpers shared by the consumer-side tests: produce raw bytes, run the consumer and the CLI,
read the ledger, the quarantine table and the dead-letter topic.

Nothing here is a fixture; the tests build what they need from the conftest fixtures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.ledger_consumer import ConsumerStats, LedgerConsumer
from ledger.log.chain import Origin
from ledger.store.integrity import LedgerReport, verify_ledger
from ledger.store.reader import LedgerReader
from ledger.transport.producer import LedgerProducer
from ledger.transport.settings import KafkaSettings
from ledger.wire.avro import default_schemas
from ledger.wire.envelope import Envelope
from ledger.wire.events import Event
from ledger.wire.keyring import Keyring, Signer

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Produced:
    """One message as the broker acknowledged it."""

    value: bytes | None
    key: bytes | None
    partition: int
    offset: int


# --- producing -------------------------------------------------------------------------------


def produce_raw(
    settings: KafkaSettings,
    values: Sequence[bytes | None],
    *,
    keys: Sequence[bytes | None] | None = None,
    partition: int | None = None,
    topic: str | None = None,
) -> list[Produced]:
    """Produce exact bytes with a plain kafka-python producer; returns where each landed."""
    producer = KafkaProducer(
        **settings.client_config(), acks="all", linger_ms=5, max_request_size=4 * 1024 * 1024
    )
    try:
        futures = [
            producer.send(
                topic or settings.topic,
                value=value,
                key=keys[i] if keys is not None else None,
                partition=partition,
            )
            for i, value in enumerate(values)
        ]
        producer.flush(timeout=60)
        out = []
        for i, future in enumerate(futures):
            meta = future.get(timeout=30)
            out.append(
                Produced(
                    values[i], keys[i] if keys is not None else None, meta.partition, meta.offset
                )
            )
        return out
    finally:
        producer.close(timeout=10)


def emit(settings: KafkaSettings, signer: Signer, events: Iterable[Event]) -> list[str]:
    """Emit events through the real producer; returns their ids (all acknowledged)."""
    ids = []
    with LedgerProducer(signer, settings) as producer:
        for event in events:
            producer.emit(event)
            ids.append(event.id)
        delivered = producer.flush()
    assert [d.event_id for d in delivered] == ids
    return ids


def sealed_record(signer: Signer, record: dict[str, Any]) -> bytes:
    """Sign a hand-built Event record (bypassing the event model) into envelope bytes."""
    payload = default_schemas().encode("Event", record)
    return Envelope.sign(payload, signer).to_bytes()


def event_record(event: Event) -> dict[str, Any]:
    """The Avro record of a valid event, ready to be altered by hand."""
    record: dict[str, Any] = event.model_dump(mode="python")
    record["data"] = (f"dev.ledger.{type(event.data).__name__}", record["data"])
    return record


def flip_payload_byte(envelope_bytes: bytes, index: int = -1) -> bytes:
    """The same envelope and signature over a payload with one byte changed."""
    envelope = Envelope.from_bytes(envelope_bytes)
    payload = bytearray(envelope.payload)
    payload[index] ^= 0x01
    return Envelope(envelope.payload_type, bytes(payload), envelope.signatures).to_bytes()


# --- consuming -------------------------------------------------------------------------------


def consume(
    settings: KafkaSettings,
    db: Path,
    keyring: Keyring,
    *,
    workers: int = 1,
    until_idle: float = 2.0,
    **options: Any,
) -> ConsumerStats:
    return LedgerConsumer(settings, db, keyring, workers=workers, **options).run(
        until_idle=until_idle
    )


def entries(db: Path) -> list[dict[str, Any]]:
    with LedgerReader(db) as reader:
        return [row for batch in reader.iter_entries() for row in batch.to_pylist()]


def event_entries(db: Path) -> list[dict[str, Any]]:
    """The entries that hold events: the chain without the ledger's own records (the
    keyring the consumer recorded before judging anything under it)."""
    return [row for row in entries(db) if row["origin"] != Origin.LEDGER]


def quarantine(db: Path) -> list[dict[str, Any]]:
    with LedgerReader(db) as reader:
        return reader.quarantine()


def verify(db: Path, keyring: Keyring | None = None) -> LedgerReport:
    """Every check of `ledger verify` (signatures too, given the keyring); raises the first
    failure."""
    with LedgerReader(db) as reader:
        return verify_ledger(reader, keyring, workers=1).check()


def assert_gap_free(rows: list[dict[str, Any]]) -> None:
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)), "an event id is chained twice"


def dead_letters(settings: KafkaSettings, expected: int, timeout: float = 20.0) -> list[Any]:
    """Every record of the dead-letter topic (waits until ``expected`` have arrived)."""
    consumer = KafkaConsumer(
        **settings.client_config(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        tp = TopicPartition(settings.dlq_topic, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if len(records) >= expected:
                # one more short poll: more than expected would be a finding too
                for batch in consumer.poll(timeout_ms=300).values():
                    records.extend(batch)
                break
        return records
    finally:
        consumer.close()


def headers(record: Any) -> dict[str, bytes]:
    return {name: value for name, value in record.headers}


# --- the command line ------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    return env


CLI_TIMEOUT = 120.0
"""Seconds a ``ledger`` command may run before the test fails."""


def ledger_cli(
    *args: str, timeout: float = CLI_TIMEOUT, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ledger ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "ledger", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=cli_env(**env),
        check=False,
    )


def cli_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.stdout.strip(), f"no JSON on stdout; stderr:\n{result.stderr}"
    return json.loads(result.stdout)


def metric_samples(exposition: str) -> dict[str, float]:
    """A Prometheus text exposition as {name{labels}: value}, parsed by the official
    client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples
