"""Read-only access to a ledger: over the file, or over a cursor of the writer's connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import duckdb

from ledger.errors import ConfigurationError
from ledger.store.identity import pinned_ledger_key
from ledger.store.index import DERIVED_VIEW
from ledger.store.schema import ENTRY_COLUMNS, connect, read_as_current, refuse_other_databases
from ledger.store.tree import StoredTree

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["LedgerReader"]


class LedgerReader:
    """Read-only access, over the file or over a cursor of the writer's own connection.

    Opened on a path, it never writes, so any number can run beside each other when no
    consumer holds the file; inside the consumer process (the HTTP API), it reads through
    a cursor of the writer's connection and sees a consistent snapshot per query. A context
    manager: ``with LedgerReader(path) as reader: ...`` closes what it opened.
    """

    def __init__(self, source: Path | duckdb.DuckDBPyConnection) -> None:
        if isinstance(source, Path):
            if not source.exists():
                raise ConfigurationError(f"ledger {source} does not exist")
            self.con = connect(source, read_only=True)
            refuse_other_databases(self.con, source, new=False)
            read_as_current(self.con)
            if not self.con.execute(
                "SELECT 1 FROM duckdb_views() WHERE view_name = 'facts' AND NOT temporary"
            ).fetchall():
                self.con.execute(DERIVED_VIEW)
        else:
            self.con = source

    def __enter__(self) -> LedgerReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def ledger_key(self) -> str | None:
        """The key pinned to sign as this ledger (a verifier key string), if any."""
        return pinned_ledger_key(self.con)

    def meta(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM meta").fetchall())

    def one(self, sql: str, params: dict[str, Any] | None = None) -> tuple[Any, ...] | None:
        """The first row of a query, or None.

        Fetches all rows, not one: DuckDB 2 refuses a later ``con.sql()`` on a connection
        whose previous result was left unfinished.
        """
        rows = self.con.execute(sql, params or {}).fetchall()
        return rows[0] if rows else None

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every row of a query, as a mapping of column name to value."""
        cursor = self.con.execute(sql, params or {})
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

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

    def quarantine(self, after: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Refused messages with ids above ``after``, oldest first, at most ``limit``: what
        was kept of each, its whole size and the SHA-256 of the whole value (hex; rows
        stored before sizes were kept hold it whole)."""
        return self.rows(
            "SELECT id, received_at, kafka_topic, kafka_partition, kafka_offset, kafka_key, "
            "value, reason, detail, event_id, "
            "coalesce(value_size, octet_length(value)) AS value_size, "
            "coalesce(lower(hex(value_sha256)), sha256(value)) AS value_sha256, "
            "coalesce(key_size, octet_length(kafka_key)) AS key_size, replayed_seq "
            "FROM quarantine WHERE id > $after ORDER BY id LIMIT $limit",
            {"after": after, "limit": limit},
        )

    def close(self) -> None:
        self.con.close()
