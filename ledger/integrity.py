"""Integrity of a stored ledger: recompute every link from the stored bytes (no I/O here).

Checks, in order, for each entry in sequence order; the first failure names its entry:

1. ``sequence``: sequence numbers run 1, 2, 3, … with no gap or repeat;
2. ``link``: ``prev_hash`` equals the previous entry's ``hash`` (zeros for the first);
3. ``entry_hash``: ``hash`` equals the chain hash of the stored inputs (ledger.chain);
4. ``ingestion_order``: ingestion time never goes backwards;
5. ``decoded_columns``: the query columns equal a fresh decode of the stored envelope.

Deleting, inserting, reordering or editing rows, or any stored byte, fails one of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ledger.chain import GENESIS, entry_hash, micros
from ledger.codec import decode_event
from ledger.entries import DecodedColumns, decoded_columns
from ledger.envelope import Envelope
from ledger.errors import ChainBrokenError, LedgerError

__all__ = ["ChainReport", "verify_chain"]


@dataclass(frozen=True)
class ChainReport:
    size: int
    head_hash: str


def verify_chain(
    batches: Iterable[pa.RecordBatch], progress: Callable[[int], None] | None = None
) -> ChainReport:
    """Raise :class:`ChainBrokenError` at the first entry that fails a check."""
    expected_seq, prev, last_ingested = 1, GENESIS, None
    for batch in batches:
        for row in batch.to_pylist():
            seq = row["seq"]
            if seq != expected_seq:
                raise ChainBrokenError(
                    f"expected entry {expected_seq}, found {seq} (entries missing, inserted "
                    "or renumbered)", seq=expected_seq, check="sequence")
            if bytes(row["prev_hash"]) != prev:
                raise ChainBrokenError(
                    f"entry {seq}: prev_hash {bytes(row['prev_hash']).hex()[:16]}… does not "
                    f"match entry {seq - 1}'s hash {prev.hex()[:16]}…", seq=seq, check="link")
            ingested_us = micros(row["ingested_at"])
            envelope = bytes(row["envelope"])
            computed = entry_hash(seq, ingested_us, prev, envelope)
            if computed != bytes(row["hash"]):
                raise ChainBrokenError(
                    f"entry {seq}: stored hash {bytes(row['hash']).hex()[:16]}… differs from "
                    f"the hash of its stored bytes {computed.hex()[:16]}…", seq=seq,
                    check="entry_hash")
            if last_ingested is not None and ingested_us < last_ingested:
                raise ChainBrokenError(
                    f"entry {seq}: ingested before entry {seq - 1}", seq=seq,
                    check="ingestion_order")
            _check_columns(seq, row, envelope)
            prev, last_ingested, expected_seq = computed, ingested_us, seq + 1
        if progress is not None:
            progress(batch.num_rows)
    return ChainReport(size=expected_seq - 1, head_hash=prev.hex())


def _check_columns(seq: int, row: dict[str, Any], envelope_bytes: bytes) -> None:
    try:
        envelope = Envelope.from_bytes(envelope_bytes)
        event = decode_event(envelope.payload)
    except LedgerError as exc:
        raise ChainBrokenError(
            f"entry {seq}: stored envelope no longer decodes: {exc.message}", seq=seq,
            check="decoded_columns") from None
    key_id = str(row["key_id"])
    if key_id not in {s.keyid for s in envelope.signatures}:
        raise ChainBrokenError(
            f"entry {seq}: key_id {key_id!r} did not sign the stored envelope", seq=seq,
            check="decoded_columns")
    fresh = decoded_columns(event, key_id)
    stored = DecodedColumns(
        **{name: row[name] for name in DecodedColumns._fields if name != "time_us"},
        time_us=micros(row["time"]),
    )
    for name, want, got in zip(DecodedColumns._fields, fresh, stored, strict=True):
        if want != got:
            raise ChainBrokenError(
                f"entry {seq}: column {name} is {got!r} but the signed event says {want!r}",
                seq=seq, check="decoded_columns")
