"""A consistent copy of a ledger, taken while its writer goes on (``ledger backup``).

DuckDB copies a whole database in one statement (``COPY FROM DATABASE``), which reads one
snapshot: every table, view and sequence as of one instant, however many entries the
consumer commits meanwhile. The copy is verified before it is called a backup.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ledger.errors import ConfigurationError

__all__ = ["backup_file", "backup_to"]

_ALIAS = "ledger_backup"


def backup_to(con: duckdb.DuckDBPyConnection, out: Path, name: str | None = None) -> None:
    """Copy database ``name`` of ``con`` (default: the one it reads) to ``out``, a file that
    must not exist yet."""
    if out.exists():
        raise ConfigurationError(f"{out} already exists; a backup is written to a new file")
    if name is None:
        [(name,)] = con.execute("SELECT current_database()").fetchall()
    con.execute(f"ATTACH {_literal(out)} AS {_ALIAS}")
    try:
        con.execute(f'COPY FROM DATABASE "{name}" TO {_ALIAS}')
    finally:
        con.execute(f"DETACH {_ALIAS}")


def backup_file(db: Path, out: Path) -> None:
    """Copy the ledger file ``db`` (its writer stopped) to ``out``: attached read-only to a
    connection of its own, since a read-only one cannot create the copy."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {_literal(db)} AS ledger_source (READ_ONLY)")
        backup_to(con, out, "ledger_source")
    finally:
        con.close()


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"
