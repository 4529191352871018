"""What one batch of messages becomes: the consumer's verdicts, and the writer's plan."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.log.chain import Witness
from ledger.wire.columns import DecodedColumns

__all__ = ["Accepted", "Plan", "Received", "Recorded", "Rejected"]


@dataclass(frozen=True)
class Received:
    """A message as it came off Kafka, and when the ledger witnessed it (fixed before it is
    judged: its key's authority is judged at this time)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    witnessed_us: int
    witness: Witness


@dataclass(frozen=True)
class Accepted:
    """A verified message, with the digest of the keyring it was judged under."""

    received: Received
    columns: DecodedColumns
    keyring: bytes


@dataclass(frozen=True)
class Recorded:
    """A record the ledger writes itself (ledger.wire.records): no Kafka coordinates."""

    envelope: bytes
    columns: DecodedColumns
    witnessed_us: int
    keyring: bytes  # the digest of the keyring in force when it was recorded


@dataclass(frozen=True)
class Rejected:
    received: Received
    reason: str
    detail: str
    event_id: str | None = None


@dataclass
class Plan:
    """What one batch will write; built by ``LedgerWriter.prepare``, applied by commit."""

    entries: list[tuple[Accepted | Recorded, int]] = field(default_factory=list)  # (what, seq)
    quarantined: list[Rejected] = field(default_factory=list)
    duplicates: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    topic_ids: dict[str, str] = field(default_factory=dict)  # the topic the offsets are in
    ingested_us: int = 0
