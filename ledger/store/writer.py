"""The DuckDB ledger file: one writer that appends verified entries, and read-only readers.

Everything a batch produces (chained entries, the Merkle tree nodes they complete,
quarantined messages, the Kafka offsets that follow them and, when one is due, the signed
checkpoint of the new tree) is written in one DuckDB transaction, so a crash at any moment
leaves either all of it or none of it, and the consumer resumes from the offsets it stored.
The query index (ledger.store.index) is derived from the entries in transactions of its own
(:meth:`LedgerWriter.cluster`).
DuckDB allows one writing process; a second process opens the file read-only, which works
whenever the consumer is not running (see docs/architecture.md for reads during ingest).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ledger.errors import ConfigurationError, ConflictingDuplicateError, LedgerLockedError
from ledger.log.chain import ALGORITHM, GENESIS, entry_hash, micros
from ledger.log.checkpoint import Checkpoint, sign_checkpoint, verifier_key
from ledger.log.merkle import CompactRange, leaf_hash
from ledger.store.index import (
    DERIVED_VIEW,
    RUNS,
    chunks,
    create_table,
    derive_range,
    insert_slice,
    run_due,
    run_last,
    run_name,
    slices,
    stream_sizes,
    to_merge,
    union,
    view,
)
from ledger.wire.columns import DecodedColumns
from ledger.wire.envelope import Envelope
from ledger.wire.keyring import Signer

__all__ = [
    "Accepted",
    "LedgerReader",
    "LedgerWriter",
    "Plan",
    "Received",
    "Rejected",
    "StoredTree",
]

FORMAT_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq BIGINT NOT NULL,
    event_id VARCHAR NOT NULL UNIQUE,
    type VARCHAR NOT NULL,
    time TIMESTAMPTZ NOT NULL,
    service VARCHAR NOT NULL,
    environment VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    key_id VARCHAR NOT NULL,
    change_ref VARCHAR,
    image VARCHAR,
    target_kind VARCHAR,
    target VARCHAR,
    instance VARCHAR,
    content_hash VARCHAR,
    data VARCHAR NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL,
    envelope BLOB NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL,
    kafka_topic VARCHAR,
    kafka_partition INTEGER,
    kafka_offset BIGINT
);
CREATE TABLE IF NOT EXISTS offsets (
    topic VARCHAR NOT NULL,
    partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS topics (
    topic VARCHAR PRIMARY KEY,
    topic_id VARCHAR NOT NULL
);
-- Every perfect subtree of the RFC 9162 tree over the entries (leaf i = entry seq i + 1):
-- the root of leaves [last - 2^level + 1, last]. Keyed by the leaf that completed it, which
-- grows with insertion order, so DuckDB's min/max pruning finds any node in one row group.
CREATE TABLE IF NOT EXISTS tree_nodes (
    level INTEGER NOT NULL,
    last BIGINT NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size BIGINT NOT NULL,
    root BLOB NOT NULL,
    note VARCHAR NOT NULL,
    vkey VARCHAR NOT NULL,  -- the signer's signed-note verifier key (name+hash+key)
    signed_at TIMESTAMPTZ NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS quarantine_id;
CREATE TABLE IF NOT EXISTS quarantine (
    id BIGINT PRIMARY KEY DEFAULT nextval('quarantine_id'),
    received_at TIMESTAMPTZ NOT NULL,
    kafka_topic VARCHAR,
    kafka_partition INTEGER,
    kafka_offset BIGINT,
    kafka_key BLOB,
    value BLOB NOT NULL,
    reason VARCHAR NOT NULL,
    detail VARCHAR NOT NULL,
    event_id VARCHAR
);
"""

ENTRY_COLUMNS = (
    "seq", "event_id", "type", "time", "service", "environment", "actor", "source", "key_id",
    "change_ref", "image", "target_kind", "target", "instance", "content_hash", "data",
    "ingested_at", "envelope", "prev_hash", "hash",
    "kafka_topic", "kafka_partition", "kafka_offset",
)  # fmt: skip

_TS = pa.timestamp("us", tz="UTC")
_NODES_SCHEMA = pa.schema([("level", pa.int32()), ("last", pa.int64()), ("hash", pa.binary())])
_ARROW_SCHEMA = pa.schema([
    ("seq", pa.int64()), ("event_id", pa.string()), ("type", pa.string()), ("time", _TS),
    ("service", pa.string()), ("environment", pa.string()), ("actor", pa.string()),
    ("source", pa.string()), ("key_id", pa.string()), ("change_ref", pa.string()),
    ("image", pa.string()), ("target_kind", pa.string()), ("target", pa.string()),
    ("instance", pa.string()), ("content_hash", pa.string()), ("data", pa.string()),
    ("ingested_at", _TS),
    ("envelope", pa.binary()), ("prev_hash", pa.binary()), ("hash", pa.binary()),
    ("kafka_topic", pa.string()), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
])  # fmt: skip


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
    """What one batch will write; built by :meth:`LedgerWriter.prepare`, applied by commit."""

    entries: list[tuple[Accepted, int]] = field(default_factory=list)  # (message, seq)
    quarantined: list[Rejected] = field(default_factory=list)
    duplicates: int = 0
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    topic_ids: dict[str, str] = field(default_factory=dict)  # the topic the offsets are in
    ingested_us: int = 0


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise LedgerLockedError(
                f"{path} is held by another process (a running consumer?); DuckDB allows one "
                "writing process, so read through the consumer's HTTP API instead: start it "
                "with `ledger consume --serve HOST:PORT`, then pass `--api http://HOST:PORT`"
            ) from None
        raise ConfigurationError(f"cannot open ledger {path}: {exc}") from None
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB draws a progress bar on stdout for queries over ~2 s: it would corrupt --json.
    con.execute("SET enable_progress_bar = false")
    return con


def _refuse_other_databases(con: duckdb.DuckDBPyConnection, path: Path, *, new: bool) -> None:
    """Refuse a DuckDB file that holds something else than a ledger: neither read it as one
    nor add the ledger's tables to it. ``new``: the writer, which may start a ledger in a
    file without tables, and knows a ledger cut short at creation by its meta table (the
    first it creates)."""
    tables = {name for (name,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()}
    ledger = ("meta" in tables or not tables) if new else {"meta", "entries"} <= tables
    if ledger:
        return
    con.close()
    held = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "") or "no table"
    raise ConfigurationError(
        f"{path} is a DuckDB database but not a ledger (it holds {held}): give a ledger "
        "file, or a new path to start one"
    )


class StoredTree:
    """The Merkle tree as stored: a :class:`ledger.log.merkle.Tree` for proofs and roots."""

    def __init__(self, con: duckdb.DuckDBPyConnection, size: int) -> None:
        self._con = con
        self._size = size

    @property
    def size(self) -> int:
        return self._size

    def perfect_root(self, level: int, index: int) -> bytes:
        last = ((index + 1) << level) - 1
        rows = self._con.execute(
            "SELECT hash FROM tree_nodes WHERE last = ? AND level = ?", [last, level]
        ).fetchall()
        if not rows or last >= self._size:
            raise ConfigurationError(
                f"the ledger stores no tree node at level {level}, index {index}; "
                "run `ledger verify`"
            )
        return bytes(rows[0][0])


def _origin(ledger_id: str) -> str:
    """The checkpoint origin line: names this ledger among all others."""
    return f"deploy-ledger/{ledger_id}"


class LedgerWriter:
    """The ledger's only writer. Not thread-safe; one per file, in one process.

    With a ``checkpoint_signer``, :meth:`commit` can sign a checkpoint of the new tree.
    """

    def __init__(
        self,
        path: Path,
        memory_limit: str | None = None,
        checkpoint_signer: Signer | None = None,
    ) -> None:
        self.path = path
        self.checkpoint_signer = checkpoint_signer
        self._con = _connect(path, read_only=False)
        _refuse_other_databases(self._con, path, new=True)
        # Bounded memory whatever the ledger size: DuckDB evicts cached blocks beyond this.
        limit = memory_limit or os.environ.get("LEDGER_DUCKDB_MEMORY", "64MB")
        self._con.execute("SET memory_limit = ?", [limit])
        self._con.execute(_SCHEMA)
        self._read_root = self._con.cursor()
        self._read_lock = threading.Lock()
        existing = dict(self._con.execute("SELECT key, value FROM meta").fetchall())
        if not existing:
            now = datetime.now(UTC).isoformat()
            # One statement, so a crash cannot leave a partial meta table (executemany
            # commits row by row, and a meta without hash_algorithm refuses every restart).
            ledger_id = str(uuid.uuid4())
            self._con.execute(
                "INSERT INTO meta VALUES (?, ?), (?, ?), (?, ?), (?, ?), (?, ?)",
                ["format_version", FORMAT_VERSION, "hash_algorithm", ALGORITHM,
                 "ledger_id", ledger_id, "created_at", now, "origin", _origin(ledger_id)],
            )  # fmt: skip
            existing = dict(self._con.execute("SELECT key, value FROM meta").fetchall())
        elif existing.get("hash_algorithm") != ALGORITHM:
            raise ConfigurationError(
                f"{path} uses hash algorithm {existing.get('hash_algorithm')!r}; "
                f"this build writes {ALGORITHM!r}"
            )
        row = self._one("SELECT seq, hash, ingested_at FROM entries ORDER BY seq DESC LIMIT 1")
        self.head_seq: int = row[0] if row else 0
        self.head_hash: bytes = bytes(row[1]) if row else GENESIS
        self.head_ingested_us: int = micros(row[2]) if row else 0
        if "origin" not in existing:  # a ledger written before checkpoints existed
            existing["origin"] = _origin(existing["ledger_id"])
            self._con.execute("INSERT INTO meta VALUES ('origin', ?)", [existing["origin"]])
        self.origin: str = existing["origin"]
        self._tree = self._load_tree()
        runs = self._runs()
        self.indexed_seq: int = max((last for _, last, _ in runs), default=0)
        self._failed_tail = 0  # the tail's length at the last failed cluster(), if any
        # The query index's view, (re)defined by this build's DERIVE.
        self._con.execute(view([name for name, _, _ in runs], self.indexed_seq))
        row = self._one("SELECT coalesce(max(size), 0) FROM checkpoints")
        self.checkpoint_size: int = row[0] if row else 0

    def _one(self, sql: str) -> tuple[Any, ...] | None:
        # fetchall, not fetchone: DuckDB 2 refuses the next query while a result is open.
        rows = self._con.execute(sql).fetchall()
        return rows[0] if rows else None

    def _load_tree(self) -> CompactRange:
        """The tree's compact state, completing the stored nodes if entries lack them (a
        ledger from before the tree was kept, upgraded in place in one transaction)."""
        row = self._one("SELECT count(*) FROM tree_nodes WHERE level = 0")
        stored = row[0] if row else 0
        tree = CompactRange.from_tree(StoredTree(self._con, stored), stored)
        if stored == self.head_seq:
            return tree
        # Read through a cursor of its own: this connection inserts between the batches.
        reader = self._con.cursor().sql(
            f"SELECT hash FROM entries WHERE seq > {int(stored)} ORDER BY seq"
        ).to_arrow_reader(50_000)
        self._con.execute("BEGIN TRANSACTION")
        for batch in reader:  # batch by batch: bounded memory whatever the ledger's size
            nodes: list[tuple[int, int, bytes]] = []
            for digest in batch.column(0).to_pylist():
                nodes.extend(_completed(tree, leaf_hash(digest)))
            self._insert_nodes(nodes)
        self._con.execute("COMMIT")
        return tree

    def _insert_nodes(self, nodes: list[tuple[int, int, bytes]]) -> None:
        if not nodes:
            return
        levels, lasts, hashes = zip(*nodes, strict=True)
        table = pa.Table.from_arrays(
            [pa.array(levels, pa.int32()), pa.array(lasts, pa.int64()),
             pa.array(hashes, pa.binary())], schema=_NODES_SCHEMA,
        )  # fmt: skip
        self._con.register("new_nodes", table)
        self._con.execute("INSERT INTO tree_nodes SELECT level, last, hash FROM new_nodes")
        self._con.unregister("new_nodes")

    def stored_topic_ids(self) -> dict[str, str]:
        """Kafka topic ids the stored offsets refer to (a recreated topic gets a new id)."""
        return dict(self._con.execute("SELECT topic, topic_id FROM topics").fetchall())

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
                seen[event_id] = message.received.value
            elif _same_payload(earlier, message.received.value):
                plan.duplicates += 1
            else:
                error = ConflictingDuplicateError(
                    f"event id {event_id} is already recorded with different signed content"
                )
                plan.quarantined.append(
                    Rejected(message.received, error.reason, error.message, event_id)
                )
        now_us = micros(datetime.now(UTC))
        plan.ingested_us = max(now_us, self.head_ingested_us)  # transaction time never goes back
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
                self._insert_nodes(nodes)
            if note is not None:
                con.execute(
                    "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?)",
                    [tree.size, tree.root(), note, vkey, datetime.now(UTC)],
                )
            if plan.quarantined:
                received_at = datetime.now(UTC)
                con.executemany(
                    "INSERT INTO quarantine (received_at, kafka_topic, kafka_partition, "
                    "kafka_offset, kafka_key, value, reason, detail, event_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [[received_at, r.received.topic, r.received.partition, r.received.offset,
                      r.received.key, r.received.value, r.reason, r.detail, r.event_id]
                     for r in plan.quarantined],
                )  # fmt: skip
            if plan.offsets:
                con.executemany(
                    "INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT (topic, partition) "
                    "DO UPDATE SET next_offset = excluded.next_offset",
                    [[t, p, o] for (t, p), o in plan.offsets.items()],
                )
            if plan.topic_ids:
                con.executemany(
                    "INSERT INTO topics VALUES (?, ?) ON CONFLICT (topic) "
                    "DO UPDATE SET topic_id = excluded.topic_id",
                    [[t, i] for t, i in plan.topic_ids.items()],
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
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
        """Bring the query index (ledger.store.index) up to date: the tail becomes a run once
        it is long enough (any length with ``force``), and runs of one size are merged.
        How many entries it added to the runs (0: nothing done).

        One transaction: readers see the old runs or the new ones, never a mix. If it fails,
        nothing changed, and without ``force`` it is not tried again until another run's
        worth of entries has arrived.
        """
        covered = self.indexed_seq
        pending = self.head_seq - covered
        # After a failed attempt, the next waits for another run's worth of entries.
        if pending == 0 or not (force or run_due(pending - self._failed_tail)):
            return 0
        runs = self._runs()
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            for first, last in chunks(covered + 1, self.head_seq):
                self._write_run(derive_range(first, last), last)
                runs.append((run_name(last), last, last - first + 1))
                while merge := to_merge([(name, rows) for name, _, rows in runs]):
                    merged = runs[-len(merge):]
                    del runs[-len(merge):]
                    self._write_run(union(merge), last, replacing=merge)
                    runs.append((run_name(last), last, sum(r for _, _, r in merged)))
            con.execute(view([name for name, _, _ in runs], self.head_seq))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            self._failed_tail = pending
            raise
        self.indexed_seq = self.head_seq
        self._failed_tail = 0
        return pending

    def _runs(self) -> list[tuple[str, int, int]]:
        """(name, last seq, rows) of each run of the query index, oldest first."""
        runs = []
        for (name,) in self._con.execute(RUNS).fetchall():
            [(rows,)] = self._con.execute(f"SELECT count(*) FROM {name}").fetchall()
            runs.append((name, run_last(name), int(rows)))
        return sorted(runs, key=lambda run: run[1])

    def _write_run(self, source: str, last: int, replacing: Sequence[str] = ()) -> None:
        """Write the facts of ``source`` stream slice by stream slice to run ``last``."""
        con = self._con
        con.execute(create_table("new_run"))
        sizes = con.execute(stream_sizes(source)).fetchall()
        for environment, first, final, streams in slices(sizes):
            con.execute(
                insert_slice("new_run", source, streams),
                {"env": environment, "first": first, "last": final},
            )
        for old in replacing:
            con.execute(f"DROP TABLE {old}")
        con.execute(f"ALTER TABLE new_run RENAME TO {run_name(last)}")

    def latest_checkpoint(self) -> str | None:
        """The newest signed checkpoint note (to publish again after a restart)."""
        row = self._con.execute(
            "SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchall()
        return str(row[0][0]) if row else None

    def _entries_table(
        self, plan: Plan, tree: CompactRange
    ) -> tuple[pa.Table, bytes, list[tuple[int, int, bytes]]]:
        prev = self.head_hash
        nodes: list[tuple[int, int, bytes]] = []
        rows: dict[str, list[Any]] = {name: [] for name in ENTRY_COLUMNS}
        ingested = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=plan.ingested_us)
        for message, seq in plan.entries:
            c, r = message.columns, message.received
            digest = entry_hash(seq, plan.ingested_us, prev, r.value)
            values = (
                seq, c.event_id, c.type,
                datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=c.time_us),
                c.service, c.environment, c.actor, c.source, c.key_id, c.change_ref, c.image,
                c.target_kind, c.target, c.instance, c.content_hash, c.data, ingested,
                r.value, prev, digest, r.topic, r.partition, r.offset,
            )  # fmt: skip
            for name, value in zip(ENTRY_COLUMNS, values, strict=True):
                rows[name].append(value)
            nodes.extend(_completed(tree, leaf_hash(digest)))
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


def _completed(tree: CompactRange, leaf: bytes) -> list[tuple[int, int, bytes]]:
    """Append a leaf; the (level, last leaf, hash) of each perfect subtree it completes."""
    last = tree.size
    return [(level, last, node) for level, node in enumerate(tree.append(leaf))]


def _same_payload(a: bytes, b: bytes) -> bool:
    """Same signed event content (signatures may differ, e.g. a re-signed retry)."""
    if a == b:
        return True
    try:
        return Envelope.from_bytes(a).payload == Envelope.from_bytes(b).payload
    except Exception:
        return False


class LedgerReader:
    """Read-only access, over the file or over a cursor of the writer's own connection.

    Opened on a path, it never writes, so any number can run beside each other when no
    consumer holds the file; inside the consumer process (the HTTP API), it reads through
    a cursor of the writer's connection and sees a consistent snapshot per query.
    """

    def __init__(self, source: Path | duckdb.DuckDBPyConnection) -> None:
        if isinstance(source, Path):
            if not source.exists():
                raise ConfigurationError(f"ledger {source} does not exist")
            self.con = _connect(source, read_only=True)
            _refuse_other_databases(self.con, source, new=False)
            if not self.con.execute(
                "SELECT 1 FROM duckdb_views() WHERE view_name = 'facts' AND NOT temporary"
            ).fetchall():
                self.con.execute(DERIVED_VIEW)
        else:
            self.con = source

    def meta(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM meta").fetchall())

    def one(self, sql: str, params: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The first row of a query, or None.

        Fetches all rows, not one: DuckDB 2 refuses a later ``con.sql()`` on a connection
        whose previous result was left unfinished.
        """
        rows = self.con.execute(sql, params or {}).fetchall()
        return rows[0] if rows else None

    def size(self) -> int:
        row = self.one("SELECT count(*) FROM entries")
        return int(row[0]) if row else 0

    def tree(self) -> StoredTree:
        """The stored Merkle tree, at the ledger's current size."""
        return StoredTree(self.con, self.size())

    def checkpoints(self) -> list[tuple[int, bytes, str, str]]:
        """Every stored checkpoint as (size, root, signed note, verifier key), oldest first."""
        rows = self.con.execute(
            "SELECT size, root, note, vkey FROM checkpoints ORDER BY signed_at, size"
        ).fetchall()
        return [(int(size), bytes(root), str(note), str(vkey)) for size, root, note, vkey in rows]

    def iter_entries(self, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
        """Every entry in sequence order, in bounded batches."""
        yield from self.con.sql(
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM entries ORDER BY seq"
        ).to_arrow_reader(batch_rows)

    def quarantine(self) -> list[dict[str, Any]]:
        cursor = self.con.execute(
            "SELECT id, received_at, kafka_topic, kafka_partition, kafka_offset, kafka_key, "
            "value, reason, detail, event_id FROM quarantine ORDER BY id"
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        self.con.close()
