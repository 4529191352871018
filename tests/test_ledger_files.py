"""Which files the ledger opens: a ledger, or a new path for the writer; anything else is
refused by name, and left as it was."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from consumer_helpers import ledger_cli

from ledger.errors import ConfigurationError
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter


def _tables(path: Path) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {name for (name,) in con.execute("SHOW TABLES").fetchall()}
    finally:
        con.close()


@pytest.fixture
def other_database(tmp_path: Path) -> Path:
    """Another application's DuckDB file."""
    path = tmp_path / "inventory.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE hosts (name VARCHAR)")
    con.close()
    return path


def test_another_applications_database_is_not_read_as_a_ledger(other_database: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"not a ledger \(it holds hosts\)"):
        LedgerReader(other_database)
    for command in (["status"], ["verify"], ["asof", "--service", "s", "--env", "e"]):
        result = ledger_cli(*command, "--db", str(other_database))
        assert result.returncode == 2, result.stderr
        assert "is a DuckDB database but not a ledger (it holds hosts)" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_writer_adds_no_ledger_tables_to_another_applications_database(
    other_database: Path,
) -> None:
    with pytest.raises(ConfigurationError, match="not a ledger"):
        LedgerWriter(other_database)
    assert _tables(other_database) == {"hosts"}


def test_a_file_that_is_not_duckdb_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_text("not a database\n" * 100)
    result = ledger_cli("status", "--db", str(path))
    assert result.returncode == 2
    assert f"{path} is not a ledger" in result.stderr


def test_a_ledger_cut_short_at_creation_is_completed_by_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "ledger.duckdb"
    con = duckdb.connect(str(path))  # a writer killed right after its first CREATE
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    con.close()
    LedgerWriter(path).close()
    with LedgerReader(path) as reader:
        assert reader.size() == 0 and "hash_algorithm" in reader.meta()
