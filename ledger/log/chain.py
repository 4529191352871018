"""The hash chain: how one entry's hash is computed from its stored inputs (pure).

Two entry formats; an entry's hash depends only on its own row, so verification checks
rows independently and compares the links column-wise (docs/formats.md §6).

Format 1 (ledgers written before format 2; kept verifiable forever)::

    SHA-256(DOMAIN_V1 || u64be(seq) || i64be(ingested_at_us) || prev_hash || SHA-256(envelope))

Format 2 (every entry written since) adds what the ledger witnessed and where it read it::

    SHA-256(DOMAIN_V2 || u64be(seq) || i64be(ingested_at_us) || i64be(witnessed_at_us)
            || u8(witness) || u8(origin) || prev_hash || SHA-256(envelope) || keyring
            || u32be(len(topic)) || topic || i32be(partition) || i64be(offset))

``DOMAIN_Vn`` is ``deploy-ledger/entry/vn`` and two zero bytes (24 bytes); ``seq`` starts at
1; times are microseconds since the Unix epoch (UTC); ``prev_hash`` is the previous entry's
hash (32 zero bytes for seq 1); ``envelope`` the exact bytes received; ``keyring`` the
32-byte digest of the keyring the entry was judged under (zeros when it was judged under
none); ``topic`` UTF-8.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import IntEnum

__all__ = [
    "ALGORITHM",
    "ALGORITHMS",
    "DOMAIN",
    "DOMAIN_V2",
    "GENESIS",
    "NO_KEYRING",
    "Origin",
    "Witness",
    "Witnessed",
    "entry_hash",
    "entry_hash_v2",
    "micros",
]

ALGORITHM = "deploy-ledger-chain-sha256-v2"
"""What this build writes: entries of format 2 (and it reads ledgers that began in v1)."""
ALGORITHMS = ("deploy-ledger-chain-sha256-v1", ALGORITHM)
DOMAIN = b"deploy-ledger/entry/v1\x00\x00"
DOMAIN_V2 = b"deploy-ledger/entry/v2\x00\x00"
GENESIS = bytes(32)
NO_KEYRING = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Witness(IntEnum):
    """Whose clock gave an entry's witnessed time."""

    CONSUMER = 0  # the consumer's, when it fetched the message
    BROKER = 1  # the broker's log-append time: the same on every read of the topic


class Origin(IntEnum):
    """How an entry came to the ledger."""

    LIVE = 0  # read from the events topic
    REPLAYED = 1  # read again from a copy of it (a replay)
    LEDGER = 2  # written by the ledger itself (a keyring record): no Kafka coordinates


@dataclass(frozen=True)
class Witnessed:
    """What the ledger witnessed of one entry besides its bytes: when (and by whose clock),
    how it came, where it was read, and the keyring it was judged under."""

    at_us: int
    witness: Witness
    origin: Origin
    keyring: bytes
    topic: str
    partition: int
    offset: int


def micros(moment: datetime) -> int:
    """Exact microseconds since the epoch (no float rounding)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def entry_hash(seq: int, ingested_at_us: int, prev_hash: bytes, envelope: bytes) -> bytes:
    """The hash of an entry of format 1."""
    return hashlib.sha256(
        DOMAIN
        + seq.to_bytes(8, "big")
        + ingested_at_us.to_bytes(8, "big", signed=True)
        + prev_hash
        + hashlib.sha256(envelope).digest()
    ).digest()


def entry_hash_v2(
    seq: int, ingested_at_us: int, prev_hash: bytes, envelope: bytes, witnessed: Witnessed
) -> bytes:
    """The hash of an entry of format 2."""
    topic = witnessed.topic.encode("utf-8")
    return hashlib.sha256(
        DOMAIN_V2
        + seq.to_bytes(8, "big")
        + ingested_at_us.to_bytes(8, "big", signed=True)
        + witnessed.at_us.to_bytes(8, "big", signed=True)
        + bytes((witnessed.witness, witnessed.origin))
        + prev_hash
        + hashlib.sha256(envelope).digest()
        + witnessed.keyring
        + len(topic).to_bytes(4, "big")
        + topic
        + witnessed.partition.to_bytes(4, "big", signed=True)
        + witnessed.offset.to_bytes(8, "big", signed=True)
    ).digest()
