"""The ledger's one writer: appends verified entries, all of a batch in one transaction.

Everything a batch produces (chained entries, the Merkle tree nodes they complete,
quarantined messages, the Kafka offsets that follow them and, when one is due, the signed
checkpoint of the new tree) is written in one DuckDB transaction, so a crash at any moment
leaves either all of it or none of it, and the consumer resumes from the offsets it stored.
The query index (ledger.store.index) is derived from the entries in transactions of its
own (:meth:`LedgerWriter.cluster`). DuckDB allows one writing process; a second process
opens the file read-only (ledger.store.reader), which works whenever the consumer is not
running (see docs/architecture.md for reads during ingest).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ledger.errors import ConfigurationError, ConflictingDuplicateError, DamagedLedgerError
from ledger.log.chain import GENESIS, NO_KEYRING, Origin, Witness, Witnessed, entry_hash_v2, micros
from ledger.log.checkpoint import Checkpoint, sign_checkpoint, verifier_key
from ledger.log.merkle import CompactRange, leaf_hash
from ledger.store.batch import Accepted, Plan, Recorded, Rejected
from ledger.store.clock import LedgerClock
from ledger.store.identity import pin_ledger_key
from ledger.store.index import QueryIndex
from ledger.store.schema import ENTRY_COLUMNS, connect, create_or_upgrade, refuse_other_databases
from ledger.store.tree import Node, completed, insert_nodes, load_tree
from ledger.wire.codec import decode_event
from ledger.wire.envelope import Envelope
from ledger.wire.keyring import Keyring, Signer
from ledger.wire.records import (
    KEYRING_RECORD,
    key_rotation_record,
    keyring_record,
    open_record,
    record_columns,
    restore_record,
)

__all__ = ["LedgerWriter"]

_TS = pa.timestamp("us", tz="UTC")
_ARROW_SCHEMA = pa.schema([
    ("seq", pa.int64()), ("event_id", pa.string()), ("type", pa.string()), ("time", _TS),
    ("service", pa.string()), ("environment", pa.string()), ("actor", pa.string()),
    ("source", pa.string()), ("key_id", pa.string()), ("change_ref", pa.string()),
    ("image", pa.string()), ("target_kind", pa.string()), ("target", pa.string()),
    ("instance", pa.string()), ("content_hash", pa.string()), ("data", pa.string()),
    ("ingested_at", _TS),
    ("envelope", pa.binary()), ("prev_hash", pa.binary()), ("hash", pa.binary()),
    ("kafka_topic", pa.string()), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
    ("format", pa.int16()), ("witnessed_at", _TS), ("witness", pa.uint8()),
    ("origin", pa.uint8()), ("keyring", pa.binary()),
])  # fmt: skip
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LedgerWriter:
    """The ledger's only writer. Not thread-safe; one per file, in one process.

    With a ``checkpoint_signer``, :meth:`commit` can sign a checkpoint of the new tree.
    Transaction times come from ``clock`` (the consumer shares its own, which also gives
    the witnessed times).
    """

    def __init__(
        self,
        path: Path,
        memory_limit: str | None = None,
        checkpoint_signer: Signer | None = None,
        clock: LedgerClock | None = None,
    ) -> None:
        self.path = path
        self.checkpoint_signer = checkpoint_signer
        self.clock = clock or LedgerClock()
        self._con = connect(path, read_only=False)
        refuse_other_databases(self._con, path, new=True)
        # Bounded memory whatever the ledger size: DuckDB evicts cached blocks beyond this.
        limit = memory_limit or os.environ.get("LEDGER_DUCKDB_MEMORY", "64MB")
        self._con.execute("SET memory_limit = ?", [limit])
        self.origin: str = create_or_upgrade(self._con, path)["origin"]
        if checkpoint_signer is not None:  # before anything is signed: the ledger's own key
            pin_ledger_key(self._con, checkpoint_signer)
        self._read_root = self._con.cursor()
        self._read_lock = threading.Lock()
        row = self._one("SELECT seq, hash, ingested_at FROM entries ORDER BY seq DESC LIMIT 1")
        self.head_seq: int = row[0] if row else 0
        self.head_hash: bytes = bytes(row[1]) if row else GENESIS
        self.head_ingested_us: int = micros(row[2]) if row else 0
        self._tree = load_tree(self._con, self.head_seq)
        self.index = QueryIndex(self._con)
        row = self._one("SELECT coalesce(max(size), 0) FROM checkpoints")
        self.checkpoint_size: int = row[0] if row else 0
        self.keyring_digest: bytes = self._recorded_keyring()

    def _one(self, sql: str) -> tuple[Any, ...] | None:
        # fetchall, not fetchone: DuckDB 2 refuses the next query while a result is open.
        rows = self._con.execute(sql).fetchall()
        return rows[0] if rows else None

    def _recorded_keyring(self) -> bytes:
        """The digest of the keyring the ledger last recorded (zeros: none yet)."""
        row = self._one(
            f"SELECT data->>'$.digest' FROM entries WHERE type = '{KEYRING_RECORD}' "
            "ORDER BY seq DESC LIMIT 1"
        )
        return bytes.fromhex(row[0]) if row else NO_KEYRING

    def record_keyring(self, keyring: Keyring, source: str) -> int | None:
        """Record ``keyring`` (read from ``source``) in the chain, unless it is the one
        recorded last: the seq of the new record, or None. Every entry judged under a
        keyring comes after its record and commits to its digest."""
        digest = keyring.digest()
        if digest == self.keyring_digest:
            return None
        self._append_record(lambda at: keyring_record(keyring, at, source))
        self.keyring_digest = digest
        return self.head_seq

    def _append_record(
        self, make: Callable[[datetime], bytes], checkpoint: bool = False
    ) -> str | None:
        """Append one of the ledger's own records, made for the time it is witnessed."""
        witnessed_us = self.clock.now_us()
        envelope = make(_EPOCH + timedelta(microseconds=witnessed_us))
        columns = record_columns(open_record(Envelope.from_bytes(envelope)))
        plan = Plan(entries=[(Recorded(envelope, columns, witnessed_us, self.keyring_digest),
                              self.head_seq + 1)])  # fmt: skip
        plan.ingested_us = self.clock.now_us(floor_us=self.head_ingested_us)
        return self.commit(plan, checkpoint)

    def record_key_rotation(self, new: Signer) -> tuple[int, str]:
        """Hand the ledger key to ``new``: a rotation record signed by the key in force (this
        writer's checkpoint signer), and a checkpoint covering it signed by ``new``, in one
        transaction. The record's seq and the new checkpoint."""
        old = self.checkpoint_signer
        if old is None:
            raise ConfigurationError("a rotation is signed by the ledger key in force: give it")
        if new.public_raw == old.public_raw:
            raise ConfigurationError(f"{new.key_id!r} is already the ledger key")
        successor = verifier_key(new.key_id, new.public_raw)
        self.checkpoint_signer = new
        try:
            note = self._append_record(
                lambda at: key_rotation_record(self.origin, old, successor, at), checkpoint=True
            )
        except BaseException:
            self.checkpoint_signer = old
            raise
        if note is None:
            raise RuntimeError("a rotation adds an entry, so its checkpoint is always signed")
        return self.head_seq, note

    def record_restore(self) -> tuple[int, str]:
        """State, right after the entries of a backup put back in place, that the ledger was
        restored at this size (signed by the ledger key), and sign a checkpoint over it: the
        record's seq and the checkpoint."""
        signer = self.checkpoint_signer
        if signer is None:
            raise ConfigurationError("a restore is stated by the ledger key: give it")
        size, head = self.head_seq, self.head_hash
        note = self._append_record(
            lambda at: restore_record(self.origin, size, head, signer, at), checkpoint=True
        )
        if note is None:
            raise RuntimeError("a restore adds an entry, so its checkpoint is always signed")
        return self.head_seq, note

    def stored_topic_ids(self) -> dict[str, str]:
        """Kafka topic ids the stored offsets refer to (a recreated topic gets a new id)."""
        return dict(self._con.execute("SELECT topic, topic_id FROM topics").fetchall())

    def refuse_cut_tail(self) -> None:
        """Refuse a ledger whose stored Kafka offsets were written when it held more
        entries than it does: entries cut off after they were read (a partial restore, an
        edit) would never be read again if it resumed from those offsets."""
        row = self._one("SELECT max(ledger_size) FROM offsets")
        stored = row[0] if row else None
        if stored is not None and stored > self.head_seq:
            raise DamagedLedgerError(
                self.path,
                f"it holds {self.head_seq:,} entries, but its Kafka offsets were stored when it "
                f"held {stored:,}: entries {self.head_seq + 1:,} to {stored:,} were cut off "
                "after they were read, and resuming would skip them for good",
            )

    def stored_offsets(self) -> dict[tuple[str, int], int]:
        rows = self._con.execute("SELECT topic, partition, next_offset FROM offsets").fetchall()
        return {(t, p): o for t, p, o in rows}

    def prepare(
        self, messages: Sequence[Accepted | Rejected], offsets: dict[tuple[str, int], int]
    ) -> Plan:
        """Assign sequence numbers, drop duplicates and catch conflicting ones (reads only)."""
        plan = Plan(offsets=offsets)
        accepted = [m for m in messages if isinstance(m, Accepted)]
        plan.quarantined = [m for m in messages if isinstance(m, Rejected)]
        stored = self._stored_envelopes([m.columns.event_id for m in accepted])
        seen: dict[str, bytes] = {}
        seq = self.head_seq
        for message in accepted:
            event_id = message.columns.event_id
            earlier = seen.get(event_id, stored.get(event_id))
            if earlier is None:
                seq += 1
                plan.entries.append((message, seq))
                seen[event_id] = message.envelope
            elif _same_payload(earlier, message.envelope):
                plan.duplicates += 1
            else:
                error = ConflictingDuplicateError(
                    f"event id {event_id} is already recorded with different signed content"
                )
                plan.quarantined.append(
                    Rejected(message.received, error.reason, error.message, event_id)
                )
        plan.ingested_us = self.clock.now_us(floor_us=self.head_ingested_us)  # never goes back
        return plan

    def _stored_envelopes(self, event_ids: list[str]) -> dict[str, bytes]:
        if not event_ids:
            return {}
        # The range lets DuckDB skip row groups by their min/max: UUIDv7 ids grow with time,
        # so a batch's ids usually fall in the last row groups only.
        rows = self._con.execute(
            "SELECT event_id, envelope FROM entries WHERE event_id BETWEEN ? AND ? "
            "AND event_id IN (SELECT unnest(?))",
            [min(event_ids), max(event_ids), event_ids],
        ).fetchall()
        return {event_id: bytes(envelope) for event_id, envelope in rows}

    def commit(self, plan: Plan, checkpoint: bool = False) -> str | None:
        """Write entries, tree nodes, quarantine and offsets in one transaction; all or nothing.

        With ``checkpoint`` (and a signer), also sign and store a checkpoint of the new tree
        when it has grown since the last one; the signed note is returned for publishing.
        """
        tree = self._tree.copy()
        table, head_hash, nodes = self._entries_table(plan, tree)
        note = vkey = None
        signer = self.checkpoint_signer
        if checkpoint and signer is not None and tree.size > self.checkpoint_size:
            note = sign_checkpoint(Checkpoint(self.origin, tree.size, tree.root()), signer)
            vkey = verifier_key(signer.key_id, signer.public_raw)
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            if table.num_rows:
                con.register("new_entries", table)
                con.execute(
                    f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}) "
                    f"SELECT {', '.join(ENTRY_COLUMNS)} FROM new_entries"
                )
                con.unregister("new_entries")
                insert_nodes(con, nodes)
                replayed = [
                    [seq, item.replayed_from]
                    for item, seq in plan.entries
                    if isinstance(item, Accepted) and item.replayed_from is not None
                ]
                if replayed:  # fmt: skip
                    con.executemany("UPDATE quarantine SET replayed_seq = ? WHERE id = ?", replayed)
            if note is not None:
                con.execute(
                    "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                    [tree.size, tree.root(), note, vkey, datetime.now(UTC)],
                )
            if plan.quarantined:
                received_at = datetime.now(UTC)
                con.executemany(
                    "INSERT INTO quarantine (received_at, kafka_topic, kafka_partition, "
                    "kafka_offset, kafka_key, value, reason, detail, event_id, value_size, "
                    "value_sha256, key_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [[received_at, r.received.topic, r.received.partition, r.received.offset,
                      r.key, r.value, r.reason, r.detail, r.event_id, r.value_size,
                      r.value_sha256, r.key_size]
                     for r in plan.quarantined],
                )  # fmt: skip
            if plan.offsets:
                con.executemany(
                    "INSERT INTO offsets VALUES (?, ?, ?, ?) ON CONFLICT (topic, partition) "
                    "DO UPDATE SET next_offset = excluded.next_offset, "
                    "ledger_size = excluded.ledger_size",
                    [[t, p, o, tree.size] for (t, p), o in plan.offsets.items()],
                )
            if plan.topic_ids:
                con.executemany(
                    "INSERT INTO topics VALUES (?, ?) ON CONFLICT (topic) "
                    "DO UPDATE SET topic_id = excluded.topic_id",
                    [[t, i] for t, i in plan.topic_ids.items()],
                )
            con.execute("COMMIT")
        except BaseException:
            _roll_back(con)
            raise
        if plan.entries:
            self.head_seq = plan.entries[-1][1]
            self.head_hash = head_hash
            self.head_ingested_us = plan.ingested_us
            self._tree = tree
        if note is not None:
            self.checkpoint_size = tree.size
        return note

    def cluster(self, force: bool = False) -> int:
        """Bring the query index up to the head (see :meth:`QueryIndex.cluster`)."""
        return self.index.cluster(self.head_seq, force)

    def latest_checkpoint(self) -> str | None:
        """The newest signed checkpoint note (to publish again after a restart)."""
        row = self._con.execute(
            "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchall()
        return str(row[0][0]) if row else None

    def _entries_table(self, plan: Plan, tree: CompactRange) -> tuple[pa.Table, bytes, list[Node]]:
        prev = self.head_hash
        nodes: list[Node] = []
        rows: dict[str, list[Any]] = {name: [] for name in ENTRY_COLUMNS}
        ingested = _EPOCH + timedelta(microseconds=plan.ingested_us)
        for item, seq in plan.entries:
            c = item.columns
            if isinstance(item, Accepted):
                r = item.received
                origin = Origin.LIVE if item.replayed_from is None else Origin.REPLAYED
                witnessed = Witnessed(r.witnessed_us, r.witness, origin, item.keyring,
                                      r.topic, r.partition, r.offset)  # fmt: skip
                envelope = item.envelope
            else:
                witnessed = Witnessed(item.witnessed_us, Witness.CONSUMER, Origin.LEDGER,
                                      item.keyring, "", -1, -1)  # fmt: skip
                envelope = item.envelope
            digest = entry_hash_v2(seq, plan.ingested_us, prev, envelope, witnessed)
            ledger_made = witnessed.origin == Origin.LEDGER
            values = (
                seq, c.event_id, c.type, _EPOCH + timedelta(microseconds=c.time_us),
                c.service, c.environment, c.actor, c.source, c.key_id, c.change_ref, c.image,
                c.target_kind, c.target, c.instance, c.content_hash, c.data, ingested,
                envelope, prev, digest,
                None if ledger_made else witnessed.topic,
                None if ledger_made else witnessed.partition,
                None if ledger_made else witnessed.offset,
                2, _EPOCH + timedelta(microseconds=witnessed.at_us), int(witnessed.witness),
                int(witnessed.origin), witnessed.keyring,
            )  # fmt: skip
            for name, value in zip(ENTRY_COLUMNS, values, strict=True):
                rows[name].append(value)
            nodes.extend(completed(tree, leaf_hash(digest)))
            prev = digest
        return pa.Table.from_pydict(rows, schema=_ARROW_SCHEMA), prev, nodes

    def read_cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection for a reader thread in this process (DuckDB allows one writing process).

        Cursors are made from a root of their own, under a lock, because a DuckDB
        connection object must not be used by two threads at once (the writer's is busy).
        """
        with self._read_lock:
            cursor = self._read_root.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    def close(self) -> None:
        self._read_root.close()
        self._con.close()


def _same_payload(a: bytes, b: bytes) -> bool:
    """Same signed event content: signatures may differ (a re-signed retry), and so may the
    payload's encoding (the same event sent again by a producer that writes a newer schema
    version); the envelope chained first stands either way."""
    if a == b:
        return True
    try:
        first, second = Envelope.from_bytes(a).payload, Envelope.from_bytes(b).payload
        return first == second or decode_event(first) == decode_event(second)
    except Exception:
        return False


def _roll_back(con: duckdb.DuckDBPyConnection) -> None:
    """Undo a failed transaction. DuckDB may have ended it already (an out-of-memory error
    in COMMIT rolls it back), and a second error here would hide the first."""
    with contextlib.suppress(duckdb.TransactionException):  # nothing left to undo
        con.execute("ROLLBACK")
