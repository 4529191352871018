"""The producer: validate, encode, sign and deliver events to Kafka, never silently.

Delivery uses acks=all with idempotence and retries; :meth:`LedgerProducer.flush`
raises :class:`TransportError` naming every event the broker did not acknowledge.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from ledger.errors import ConfigurationError, PartialDeliveryError, TransportError
from ledger.transport.settings import KafkaSettings
from ledger.wire.codec import encode_event
from ledger.wire.envelope import PAYLOAD_TYPE, Envelope
from ledger.wire.events import Event
from ledger.wire.keyring import Signer

__all__ = ["Delivery", "LedgerProducer", "seal"]


def seal(event: Event, signer: Signer) -> bytes:
    """Encode and sign one event: the exact message value that goes on the topic."""
    return Envelope.sign(encode_event(event), signer).to_bytes()


@dataclass(frozen=True)
class Delivery:
    event_id: str
    type: str
    topic: str
    partition: int
    offset: int


class LedgerProducer:
    """Signs with one key and produces to one topic (:meth:`send_sealed`: envelopes signed
    before, to the topic they name); use as a context manager."""

    def __init__(
        self, signer: Signer | None, settings: KafkaSettings, **client_options: Any
    ) -> None:
        """``signer`` None: a producer that only sends envelopes sealed before
        (:meth:`send_sealed`, as `ledger spool flush` does)."""
        self.signer = signer
        self.settings = settings
        # Tuning a caller may override; the delivery guarantees (acks, idempotence, retries)
        # are fixed: passing one of them is a TypeError.
        # A broker that does not answer at all is named after 10 s, not kafka-python's 30.
        tuning = {"delivery_timeout_ms": 120_000, "linger_ms": 5,
                  "bootstrap_timeout_ms": 10_000} | client_options  # fmt: skip
        try:
            self._producer = KafkaProducer(
                **settings.client_config(),
                acks="all",
                enable_idempotence=True,
                retries=2**31 - 1,
                **tuning,
            )
        except KafkaError as exc:
            raise TransportError(
                f"cannot reach Kafka at {settings.bootstrap}: {exc}; is the broker running there "
                "(`ledger broker` runs one on this machine)?"
            ) from None
        self._pending: list[tuple[Event, Any]] = []

    def emit(self, event: Event) -> None:
        """Queue one signed event; delivery is confirmed (or refused) by :meth:`flush`."""
        if self.signer is None:
            raise ConfigurationError("no signing key: pass --key keys/ID.key or set LEDGER_KEY")
        self.send_sealed(event, seal(event, self.signer))

    def send_sealed(self, event: Event, envelope: bytes, topic: str | None = None) -> None:
        """Queue ``envelope``, the exact bytes :func:`seal` made of ``event``, with the event's
        Kafka key, to ``topic`` (default the settings' topic); confirmed by :meth:`flush`."""
        topic = topic or self.settings.topic
        headers = [
            ("ce_specversion", b"1.0"),
            ("ce_id", event.id.encode()),
            ("ce_type", event.type.encode()),
            ("ce_source", event.source.encode()),
            ("content-type", PAYLOAD_TYPE.encode()),
        ]
        try:
            future = self._producer.send(
                topic, key=event.partition_key, value=envelope, headers=headers
            )
        except KafkaError as exc:
            raise TransportError(
                f"cannot send {event.id} ({event.type}) to {topic}: {exc}"
            ) from None
        except ValueError as exc:  # kafka-python refuses an illegal topic name this way
            raise ConfigurationError(f"topic {topic!r}: {exc}") from None
        self._pending.append((event, future))

    def flush(self, timeout: float = 120.0) -> list[Delivery]:
        """Wait for every queued event; raise naming each one the broker did not take."""
        with contextlib.suppress(KafkaError):  # each event's future says what was delivered
            self._producer.flush(timeout=timeout)
        delivered: list[Delivery] = []
        failed: list[str] = []
        for event, future in self._pending:
            try:
                meta = future.get(timeout=0)
            except Exception:  # KafkaError or timeout: either way not delivered
                failed.append(event.id)
                continue
            delivered.append(
                Delivery(event.id, event.type, meta.topic, meta.partition, meta.offset)
            )
        self._pending.clear()
        if failed:
            more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
            raise PartialDeliveryError(
                f"{len(failed)} of {len(failed) + len(delivered)} event(s) not acknowledged by "
                f"{self.settings.bootstrap} within {timeout:.0f} s ({', '.join(failed[:5])}"
                f"{more}); {len(delivered)} delivered. Send the same events again (same ids): "
                "those already chained are skipped as duplicates",
                delivered,
                failed,
            )
        return delivered

    def close(self, timeout: float = 10.0) -> None:
        """Release the client; raise if events it still held were not delivered in time."""
        try:
            self._producer.close(timeout=timeout)
        except KafkaError as exc:
            raise TransportError(
                f"closing the producer for {self.settings.bootstrap}: events still queued"
                f" were not delivered: {exc}"
            ) from None

    def __enter__(self) -> LedgerProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failing = exc_type is not None
        try:
            if not failing:
                self.flush()
        except BaseException:
            failing = True
            raise
        finally:
            try:
                self.close()
            except TransportError:
                # An error already in flight says what was not delivered: do not mask it.
                if not failing:
                    raise
