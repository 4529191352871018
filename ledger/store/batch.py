"""What one batch of messages becomes: the consumer's verdicts, and the writer's plan."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property

from ledger.log.chain import Witness
from ledger.wire.columns import DecodedColumns
from ledger.wire.verify import MAX_ENVELOPE_BYTES

__all__ = ["KEPT_BYTES", "Accepted", "Plan", "Received", "Recorded", "Rejected"]

KEPT_BYTES = MAX_ENVELOPE_BYTES
"""How much of a refused message's value, and of its key, the quarantine row and the
dead-letter copy keep: all of any message the ledger could accept. A longer one (up to
the broker's limit, 1 MiB by default) is kept cut to this, with its size and the SHA-256
of the whole, so that a dead letter always fits the producer's request limit and the
quarantine table stays small."""


@dataclass(frozen=True)
class Received:
    """A message as it came off Kafka, and when the ledger witnessed it (fixed before it is
    judged: its key's authority is judged at this time)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a record without one (a tombstone)
    witnessed_us: int
    witness: Witness


@dataclass(frozen=True)
class Accepted:
    """A verified message, with the digest of the keyring it was judged under; one judged
    again from the quarantine names its row (``replayed_from``: chained as replayed)."""

    received: Received
    columns: DecodedColumns
    keyring: bytes
    replayed_from: int | None = None

    @property
    def envelope(self) -> bytes:
        """The verified value (a record without one is never accepted)."""
        if self.received.value is None:
            raise ValueError("an accepted message without a value")
        return self.received.value


@dataclass(frozen=True)
class Recorded:
    """A record the ledger writes itself (ledger.wire.records): no Kafka coordinates."""

    envelope: bytes
    columns: DecodedColumns
    witnessed_us: int
    keyring: bytes  # the digest of the keyring in force when it was recorded


@dataclass(frozen=True)
class Rejected:
    """A refused message, kept: its value and key cut to :data:`KEPT_BYTES`."""

    received: Received
    reason: str
    detail: str
    event_id: str | None = None

    @property
    def value(self) -> bytes | None:
        value = self.received.value
        return None if value is None else value[:KEPT_BYTES]

    @property
    def key(self) -> bytes | None:
        key = self.received.key
        return None if key is None else key[:KEPT_BYTES]

    @property
    def value_size(self) -> int | None:
        return None if self.received.value is None else len(self.received.value)

    @property
    def key_size(self) -> int | None:
        return None if self.received.key is None else len(self.received.key)

    @cached_property
    def value_sha256(self) -> bytes | None:
        """The digest of the whole value, whatever was kept of it (computed once: the dead
        letter and the quarantine row both carry it)."""
        value = self.received.value
        return None if value is None else hashlib.sha256(value).digest()

    @property
    def truncated(self) -> list[str]:
        """What was cut: ``value`` and/or ``key``."""
        sizes = (("value", self.value_size), ("key", self.key_size))
        return [name for name, size in sizes if size is not None and size > KEPT_BYTES]


@dataclass
class Plan:
    """What one batch will write; built by ``LedgerWriter.prepare``, applied by commit."""

    entries: list[tuple[Accepted | Recorded, int]] = field(default_factory=list)  # (what, seq)
    quarantined: list[Rejected] = field(default_factory=list)
    duplicates: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    topic_ids: dict[str, str] = field(default_factory=dict)  # the topic the offsets are in
    ingested_us: int = 0
