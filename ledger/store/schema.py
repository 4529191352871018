"""The ledger file's tables, opening it, and telling a ledger from any other DuckDB file.

One definition of what a ledger holds (docs/formats.md §9): the writer creates and
upgrades it, readers and verification read it, and nothing else names these columns.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from ledger.errors import ConfigurationError, LedgerLockedError
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
    "format", "witnessed_at", "witness", "origin", "keyring",
)  # fmt: skip
_FORMAT_2 = (
    ("format", "SMALLINT DEFAULT 1"), ("witnessed_at", "TIMESTAMPTZ"), ("witness", "UTINYINT"),
    ("origin", "UTINYINT"), ("keyring", "BLOB"),
)  # fmt: skip
"""The columns entry format 2 added: a ledger begun in format 1 gets them, its old rows
marked format 1 (their hash covers none of them)."""


def connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open the file, naming a lock held by another process as what it is."""
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
    """Let a reader of a ledger begun in format 1 that no writer of this build has opened
    yet read it as today's: its entries (all of format 1) through a view of this connection
    that adds the columns format 2 brought, empty. Nothing is written."""
    present = {name for (name,) in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'entries' "
        "AND database_name = current_database() AND schema_name = 'main'").fetchall()}  # fmt: skip
    missing = [(name, kind.split()[0]) for name, kind in _FORMAT_2 if name not in present]
    if not missing:
        return
    added = ", ".join(
        f"{'1' if name == 'format' else 'NULL'}::{kind} AS {name}" for name, kind in missing
    )
    [(database,)] = con.execute("SELECT current_database()").fetchall()
    # rowid too: verification orders ties by storage order.
    con.execute(
        f'CREATE TEMP VIEW entries AS SELECT rowid, *, {added} FROM "{database}".main.entries'
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
