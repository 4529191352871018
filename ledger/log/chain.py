"""The hash chain: how one entry's hash is computed from its stored inputs (pure).

``hash = SHA-256(DOMAIN || u64be(seq) || i64be(ingested_at_us) || prev_hash || SHA-256(envelope))``

where ``DOMAIN`` is the 22 ASCII bytes ``deploy-ledger/entry/v1`` followed by two zero
bytes (24 bytes), ``seq`` starts at 1, ``ingested_at_us`` is the ingestion time in microseconds
since the Unix epoch (UTC), ``prev_hash`` is the previous entry's 32-byte hash (32 zero
bytes for seq 1) and ``envelope`` the exact signed envelope bytes as received. Each
entry's hash depends only on its own row, so verification can check rows independently
and compare the links column-wise. See docs/formats.md.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

__all__ = ["ALGORITHM", "GENESIS", "entry_hash", "micros"]

ALGORITHM = "deploy-ledger-chain-sha256-v1"
DOMAIN = b"deploy-ledger/entry/v1\x00\x00"
GENESIS = bytes(32)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """Exact microseconds since the epoch (no float rounding)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def entry_hash(seq: int, ingested_at_us: int, prev_hash: bytes, envelope: bytes) -> bytes:
    return hashlib.sha256(
        DOMAIN
        + seq.to_bytes(8, "big")
        + ingested_at_us.to_bytes(8, "big", signed=True)
        + prev_hash
        + hashlib.sha256(envelope).digest()
    ).digest()
