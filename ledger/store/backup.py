"""A consistent copy of a ledger, taken while its writer goes on (``ledger backup``).

DuckDB copies a whole database in one statement (``COPY FROM DATABASE``), which reads one
snapshot: every table, view and sequence as of one instant, however many entries the
consumer commits meanwhile. The copy is verified before it is called a backup.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ledger.errors import ConfigurationError

__all__ = ["backup_to"]

_ALIAS = "ledger_backup"


def backup_to(con: duckdb.DuckDBPyConnection, out: Path) -> None:
    """Copy the database ``con`` reads to ``out``, a file that must not exist yet."""
    if out.exists():
        raise ConfigurationError(f"{out} already exists; a backup is written to a new file")
    [(name,)] = con.execute("SELECT current_database()").fetchall()
    quoted = str(out).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS {_ALIAS}")
    try:
        con.execute(f'COPY FROM DATABASE "{name}" TO {_ALIAS}')
    finally:
        con.execute(f"DETACH {_ALIAS}")
