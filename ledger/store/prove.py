"""Proofs built from the stored tree (O(log n) lookups), for ledger.log.proof to check."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ledger.errors import ConfigurationError, InconsistentCheckpointError
from ledger.log.chain import NO_KEYRING, Origin
from ledger.log.merkle import consistency_proof, inclusion_proof, root_at
from ledger.log.proof import (
    ConsistencyCheckpoints,
    ConsistencyProof,
    EntryWitness,
    InclusionProof,
    StoredEntry,
    b64,
    check_inclusion,
)
from ledger.store.reader import LedgerReader
from ledger.wire.records import KEYRING_RECORD

__all__ = [
    "build_consistency",
    "build_inclusion",
    "keyring_records",
    "ledger_origin",
    "snapshot",
    "stored_entries",
]


@contextmanager
def snapshot(reader: LedgerReader) -> Iterator[None]:
    """One consistent view for the several reads a proof takes, even through a cursor of
    the running consumer's connection (DuckDB MVCC)."""
    reader.con.execute("BEGIN TRANSACTION")
    try:
        yield
    finally:
        reader.con.execute("ROLLBACK")


def ledger_origin(reader: LedgerReader) -> str:
    """The checkpoint origin that names this ledger."""
    origin = reader.meta().get("origin")
    if origin is None:
        raise ConfigurationError(
            "the ledger has no origin yet: open it once with this version's consumer"
        )
    return origin


def stored_entries(reader: LedgerReader, seqs: Iterable[int]) -> list[StoredEntry]:
    """The entries of these sequence numbers as stored, in seq order."""
    rows = reader.rows(
        "SELECT seq, epoch_us(ingested_at) AS ingested_at_us, prev_hash, envelope, format, "
        "epoch_us(witnessed_at) AS at_us, witness, origin, keyring, "
        "coalesce(kafka_topic, '') AS topic, coalesce(kafka_partition, -1) AS partition, "
        "coalesce(kafka_offset, -1) AS offset "
        "FROM entries WHERE seq IN (SELECT unnest($seqs)) ORDER BY seq",
        {"seqs": sorted(seqs)},
    )
    return [_stored(row) for row in rows]


def keyring_records(reader: LedgerReader, entries: Iterable[StoredEntry]) -> set[int]:
    """The seq of the first record of each keyring these entries were judged under."""
    digests = {e.witnessed.keyring.hex() for e in entries if e.witnessed is not None}
    digests.discard(NO_KEYRING.hex())
    rows = reader.con.execute(
        "SELECT min(seq) FROM entries WHERE origin = $origin AND type = $type "
        "AND data->>'$.digest' IN (SELECT unnest($digests)) GROUP BY data->>'$.digest'",
        {"origin": int(Origin.LEDGER), "type": KEYRING_RECORD, "digests": sorted(digests)},
    ).fetchall()
    return {int(seq) for (seq,) in rows}


def _stored(row: dict[str, Any]) -> StoredEntry:
    witnessed = None
    if row["format"] == 2:
        witnessed = EntryWitness(
            at_us=row["at_us"], witness=row["witness"], origin=row["origin"],
            keyring=bytes(row["keyring"]), topic=row["topic"], partition=row["partition"],
            offset=row["offset"],
        )  # fmt: skip
    return StoredEntry(
        seq=row["seq"],
        ingested_at_us=row["ingested_at_us"],
        prev_hash=bytes(row["prev_hash"]),
        envelope=bytes(row["envelope"]),
        witnessed=witnessed,
    )


def _latest_checkpoint_size(reader: LedgerReader) -> int:
    sizes = [size for size, _, _, _ in reader.checkpoints()]
    if not sizes:
        raise ConfigurationError(
            "the ledger has no signed checkpoint (run the consumer with --ledger-key); "
            "pass --size for a proof against an unsigned root"
        )
    return max(sizes)


def _note_at(reader: LedgerReader, size: int, root: bytes) -> str | None:
    """The newest stored checkpoint of ``size``, once its root is the stored tree's."""
    notes = [(r, note) for s, r, note, _ in reader.checkpoints() if s == size]
    if not notes:
        return None
    signed_root, note = notes[-1]
    if signed_root != root:
        raise InconsistentCheckpointError(
            f"the checkpoint of size {size} signs root {b64(signed_root)}, but the stored tree "
            f"has {b64(root)} at that size; run `ledger verify`",
            check="root_mismatch",
            size=size,
            checkpoint_root=signed_root,
            ledger_root=root,
        )
    return note


def _check_size(reader: LedgerReader, size: int, what: str) -> None:
    stored = reader.size()
    if not 0 <= size <= stored:
        raise ConfigurationError(f"{what} {size} is not within the {stored} entries stored")


def build_inclusion(reader: LedgerReader, seq: int, size: int | None = None) -> InclusionProof:
    """Entry ``seq`` in the tree of ``size`` entries (default: the latest checkpoint's)."""
    with snapshot(reader):
        return _inclusion(reader, seq, size)


def _inclusion(reader: LedgerReader, seq: int, size: int | None) -> InclusionProof:
    held = reader.size()
    if not 1 <= seq <= held:
        holds = f"entries 1 to {held}" if held else "no entry yet"
        raise ConfigurationError(f"there is no entry {seq}: the ledger holds {holds}")
    if size is None:
        size = _latest_checkpoint_size(reader)
        if seq > size:
            raise ConfigurationError(
                f"entry {seq} is newer than the latest checkpoint (size {size}): wait for the "
                "next one, or pass --size for a proof against an unsigned root"
            )
    _check_size(reader, size, "tree size")
    if not 1 <= seq <= size:
        raise ConfigurationError(f"entry {seq} is not in a tree of size {size}")
    tree = reader.tree()
    root = root_at(tree, size)
    (entry,) = stored_entries(reader, [seq])
    proof = InclusionProof(
        type="inclusion",
        origin=ledger_origin(reader),
        leaf_index=seq - 1,
        tree_size=size,
        leaf_hash=entry.leaf_hash(),
        root_hash=root,
        inclusion_path=inclusion_proof(tree, seq - 1, size),
        entry=entry,
        checkpoint=_note_at(reader, size, root),
    )
    check_inclusion(proof, None)  # the stored tree must agree with the stored entry
    return proof


def build_consistency(
    reader: LedgerReader, first: int, second: int | None = None
) -> ConsistencyProof:
    """The tree of ``second`` entries (default: the latest checkpoint's) extends ``first``."""
    with snapshot(reader):
        return _consistency(reader, first, second)


def _consistency(reader: LedgerReader, first: int, second: int | None) -> ConsistencyProof:
    if second is None:
        second = _latest_checkpoint_size(reader)
    _check_size(reader, second, "tree size")
    if not 0 <= first <= second:
        raise ConfigurationError(f"--from {first} must be between 0 and --to {second}")
    tree = reader.tree()
    first_root, second_root = root_at(tree, first), root_at(tree, second)
    return ConsistencyProof(
        type="consistency",
        origin=ledger_origin(reader),
        first=first,
        second=second,
        first_root=first_root,
        second_root=second_root,
        consistency_path=consistency_proof(tree, first, second),
        checkpoints=ConsistencyCheckpoints(
            first=_note_at(reader, first, first_root),
            second=_note_at(reader, second, second_root),
        ),
    )
