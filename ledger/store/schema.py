"""The ledger file's tables, opening it, and telling a ledger from any other DuckDB file.

One definition of what a ledger holds (docs/formats.md §9): the writer creates and
upgrades it, readers and verification read it, and nothing else names these columns.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ledger.errors import ConfigurationError, DamagedLedgerError, LedgerLockedError
from ledger.log.chain import ALGORITHM, ALGORITHMS

__all__ = [
    "ENTRY_COLUMNS",
    "FORMAT_VERSION",
    "SCHEMA",
    "connect",
    "create_or_upgrade",
    "refuse_other_databases",
]

FORMAT_VERSION = "2"

SCHEMA = """
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
    kafka_offset BIGINT,
    format SMALLINT DEFAULT 1,
    witnessed_at TIMESTAMPTZ,
    witness UTINYINT,
    origin UTINYINT,
    keyring BLOB
);
CREATE TABLE IF NOT EXISTS offsets (
    topic VARCHAR NOT NULL,
    partition INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (topic, partition),
    ledger_size BIGINT  -- the ledger's size when next_offset was stored
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
    kafka_key BLOB,      -- at most ledger.store.batch.KEPT_BYTES of the key
    value BLOB,          -- likewise of the value; NULL: a record without one
    reason VARCHAR NOT NULL,
    detail VARCHAR NOT NULL,
    event_id VARCHAR,
    value_size BIGINT,   -- of the whole value, and its SHA-256
    value_sha256 BLOB,
    key_size BIGINT
);
"""

ENTRY_COLUMNS = (
    "seq", "event_id", "type", "time", "service", "environment", "actor", "source", "key_id",
    "change_ref", "image", "target_kind", "target", "instance", "content_hash", "data",
    "ingested_at", "envelope", "prev_hash", "hash",
    "kafka_topic", "kafka_partition", "kafka_offset",
    "format", "witnessed_at", "witness", "origin", "keyring",
)  # fmt: skip
_FORMAT_2 = (
    ("format", "SMALLINT DEFAULT 1"), ("witnessed_at", "TIMESTAMPTZ"), ("witness", "UTINYINT"),
    ("origin", "UTINYINT"), ("keyring", "BLOB"),
)  # fmt: skip
"""The columns entry format 2 added: a ledger begun in format 1 gets them, its old rows
marked format 1 (their hash covers none of them)."""
_QUARANTINE_ADDED = (
    ("value_size", "BIGINT"), ("value_sha256", "BLOB"), ("key_size", "BIGINT"),
    ("replayed_seq", "BIGINT"),
)  # fmt: skip
"""The columns that say what was kept of a refused message (rows stored before them kept
it whole: readers compute the same from the bytes), and the entry it was chained as when a
replay judged it again and it passed (``ledger replay``)."""


_HEADERS = 3 * 4096
"""DuckDB's file begins with a main header (``DUCK`` at byte 8) and two database headers,
then its blocks (storage format of DuckDB 1.0 and later)."""


def _check_file(path: Path) -> None:
    """Refuse a file that is no DuckDB database: a JSON, CSV or Parquet file given as a
    ledger, which DuckDB would otherwise read as something else."""
    try:
        with path.open("rb") as file:
            head = file.read(12)
    except FileNotFoundError:
        return  # a new ledger
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    if head and head[8:12] != b"DUCK":
        raise ConfigurationError(
            f"{path} is not a ledger: a ledger is a DuckDB database file, and this is not one"
        )


def _check_length(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Refuse a file shorter than the blocks its tables use (a copy cut short, a full
    disk): DuckDB opens it, then fails at the first read of a missing block, or answers
    from what is left when no question reaches one."""
    [(block_size,)] = con.execute("SELECT block_size FROM pragma_database_size()").fetchall()
    last = -1
    for (table,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
    ).fetchall():
        [(used,)] = con.execute(
            "SELECT max(block_id) FROM pragma_storage_info(?) WHERE block_id >= 0", [table]
        ).fetchall()
        last = max(last, used if used is not None else -1)
    needed, size = _HEADERS + (last + 1) * block_size, path.stat().st_size
    if size < needed:
        raise DamagedLedgerError(
            path, f"it holds {size:,} bytes, and its tables use {needed:,} (cut short?)"
        )


def connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open the file, naming a lock held by another process, a file that is no ledger and
    a damaged one as what they are."""
    _check_file(path)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        if "lock" in str(exc).lower():
            raise LedgerLockedError(
                f"{path} is held by another process (a running consumer?); DuckDB allows one "
                "writing process, so read through the consumer's HTTP API instead: start it "
                "with `ledger consume --serve HOST:PORT`, then pass `--api http://HOST:PORT`"
            ) from None
        raise DamagedLedgerError(path, f"DuckDB cannot open it ({exc})") from None
    try:
        _check_length(con, path)
    except duckdb.Error as exc:  # a block its catalog names is missing or corrupt
        con.close()
        raise DamagedLedgerError(path, f"DuckDB cannot read it ({exc})") from None
    except DamagedLedgerError:
        con.close()
        raise
    con.execute("SET TimeZone = 'UTC'")
    # DuckDB draws a progress bar on stdout for queries over ~2 s: it would corrupt --json.
    con.execute("SET enable_progress_bar = false")
    return con


def refuse_other_databases(con: duckdb.DuckDBPyConnection, path: Path, *, new: bool) -> None:
    """Refuse a DuckDB file that holds something else than a ledger: neither read it as one
    nor add the ledger's tables to it. ``new``: the writer, which may start a ledger in a
    file without tables, and knows a ledger cut short at creation by its meta table (the
    first it creates)."""
    tables = {
        name
        for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'"
        ).fetchall()
    }
    ledger = ("meta" in tables or not tables) if new else {"meta", "entries"} <= tables
    if ledger:
        return
    con.close()
    held = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "") or "no table"
    raise ConfigurationError(
        f"{path} is a DuckDB database but not a ledger (it holds {held}): give a ledger "
        "file, or a new path to start one"
    )


def read_as_current(con: duckdb.DuckDBPyConnection) -> None:
    """Let a reader of a ledger that no writer of this build has opened yet read it as
    today's: a table that lacks columns added since through a view of this connection that
    adds them, empty (entries of format 1 marked so). Nothing is written."""
    for table, columns in (("entries", _FORMAT_2), ("quarantine", _QUARANTINE_ADDED)):
        present = {name for (name,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
            "AND database_name = current_database() AND schema_name = 'main'", [table],
        ).fetchall()}  # fmt: skip
        missing = [(name, kind.split()[0]) for name, kind in columns if name not in present]
        if not missing:
            continue
        added = ", ".join(
            f"{'1' if name == 'format' else 'NULL'}::{kind} AS {name}" for name, kind in missing
        )
        [(database,)] = con.execute("SELECT current_database()").fetchall()
        # rowid too: verification orders ties by storage order.
        con.execute(
            f'CREATE TEMP VIEW {table} AS SELECT rowid, *, {added} FROM "{database}".main.{table}'
        )


def _origin(ledger_id: str) -> str:
    """The checkpoint origin line: names this ledger among all others."""
    return f"deploy-ledger/{ledger_id}"


def create_or_upgrade(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, str]:
    """Create the tables a ledger needs (or those an older ledger lacks) and its meta
    record; the meta record (identity, hash algorithm, origin)."""
    con.execute(SCHEMA)
    for column, kind in _FORMAT_2:
        con.execute(f"ALTER TABLE entries ADD COLUMN IF NOT EXISTS {column} {kind}")
    for column, kind in _QUARANTINE_ADDED:
        con.execute(f"ALTER TABLE quarantine ADD COLUMN IF NOT EXISTS {column} {kind}")
    con.execute("ALTER TABLE quarantine ALTER COLUMN value DROP NOT NULL")  # tombstones
    con.execute("ALTER TABLE offsets ADD COLUMN IF NOT EXISTS ledger_size BIGINT")
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    if not meta:
        ledger_id = str(uuid.uuid4())
        # One statement, so a crash cannot leave a partial meta table (executemany commits
        # row by row, and a meta without hash_algorithm refuses every restart).
        con.execute(
            "INSERT INTO meta VALUES (?, ?), (?, ?), (?, ?), (?, ?), (?, ?)",
            ["format_version", FORMAT_VERSION, "hash_algorithm", ALGORITHM,
             "ledger_id", ledger_id, "created_at", datetime.now(UTC).isoformat(),
             "origin", _origin(ledger_id)],
        )  # fmt: skip
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    elif meta.get("hash_algorithm") not in ALGORITHMS:
        raise ConfigurationError(
            f"{path} uses hash algorithm {meta.get('hash_algorithm')!r}; this build knows "
            f"{', '.join(ALGORITHMS)}"
        )
    if meta.get("format_version") != FORMAT_VERSION:  # begun in format 1: new entries are 2
        con.execute(
            "INSERT INTO meta VALUES ('format_version', ?) ON CONFLICT (key) "
            "DO UPDATE SET value = excluded.value",
            [FORMAT_VERSION],
        )
        meta["format_version"] = FORMAT_VERSION
    if "origin" not in meta:  # a ledger written before checkpoints existed
        meta["origin"] = _origin(meta["ledger_id"])
        con.execute("INSERT INTO meta VALUES ('origin', ?)", [meta["origin"]])
    return meta
