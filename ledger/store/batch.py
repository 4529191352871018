"""What one batch of messages becomes: the consumer's verdicts, and the writer's plan."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger.wire.columns import DecodedColumns

__all__ = ["Accepted", "Plan", "Received", "Rejected"]


@dataclass(frozen=True)
class Received:
    """A message as it came off Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class Accepted:
    received: Received
    columns: DecodedColumns


@dataclass(frozen=True)
class Rejected:
    received: Received
    reason: str
    detail: str
    event_id: str | None = None


@dataclass
class Plan:
    """What one batch will write; built by ``LedgerWriter.prepare``, applied by commit."""

    entries: list[tuple[Accepted, int]] = field(default_factory=list)  # (message, seq)
    quarantined: list[Rejected] = field(default_factory=list)
    duplicates: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    topic_ids: dict[str, str] = field(default_factory=dict)  # the topic the offsets are in
    ingested_us: int = 0
