"""The query index (ledger.store.index): runs, merges, the view readers see, and attacks on it.

The index is derived data: answers must not depend on how much of it is clustered, and
`ledger verify` must catch any row of it that is not the one its entry derives.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from attack_helpers import execute, failure
from consumer_helpers import cli_json, ledger_cli
from helpers import make_event
from ledger_builders import append, sealed_values, signers, write_ledger

from ledger.errors import ChainBrokenError, CheckpointError
from ledger.store.index import chunks, slices, to_merge
from ledger.store.integrity import verify_ledger
from ledger.store.query import asof, snapshot
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.wire.keyring import Keyring


def _runs(db: Path) -> list[tuple[str, int]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [n for (n,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE starts_with(table_name, 'facts_run_')"
        ).fetchall()]  # fmt: skip
        return sorted(
            ((n, con.execute(f"SELECT count(*) FROM {n}").fetchall()[0][0]) for n in names),
            key=lambda run: int(run[0].rsplit("_", 1)[1]),
        )
    finally:
        con.close()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keyring]:
    """Twelve entries, nine of them clustered into a run, three in the tail."""
    ci, approver, ring = signers()
    home = tmp_path_factory.mktemp("indexed")
    db = home / "ledger.duckdb"
    values = sealed_values(ci, approver, 12)
    write_ledger(db, values[:9], ring, None, [], checkpoint=False)
    writer = LedgerWriter(db)
    assert writer.cluster(force=True) == 9
    append(writer, ring, values[9:], 9)
    writer.close()
    return db, ring


@pytest.fixture
def ledger(indexed: tuple[Path, Keyring], tmp_path: Path) -> Path:
    db = tmp_path / "ledger.duckdb"
    shutil.copy(indexed[0], db)
    return db


# --- the layout ----------------------------------------------------------------------------


def test_slices_group_consecutive_streams_of_one_environment() -> None:
    """At most 50,000 facts a slice (sorted in DuckDB's bounded memory); a larger stream
    alone (one stream needs no sort); never across environments."""
    sizes = [
        ("dev", "a", 20_000), ("dev", "b", 20_000), ("dev", "c", 20_000),
        ("prod", "a", 10), ("prod", "b", 400_000), ("prod", "c", 5), ("prod", "d", 7),
    ]  # fmt: skip
    assert slices(sizes) == [
        ("dev", "a", "b", 2),
        ("dev", "c", "c", 1),
        ("prod", "a", "a", 1),
        ("prod", "b", "b", 1),
        ("prod", "c", "d", 2),
    ]


def test_four_runs_of_one_size_class_merge_and_others_do_not() -> None:
    small = [("r1", 50_000), ("r2", 60_000), ("r3", 70_000), ("r4", 50_000)]
    assert to_merge(small) == ["r1", "r2", "r3", "r4"]
    assert to_merge([("big", 200_000), *small[1:]]) == []  # another class: kept apart
    assert to_merge(small[:3]) == []
    assert chunks(1, 1_200_000) == [(1, 500_000), (500_001, 1_000_000), (1_000_001, 1_200_000)]


def test_a_run_is_made_only_when_due_and_merges_keep_runs_few(tmp_path: Path) -> None:
    ci, approver, ring = signers()
    db = tmp_path / "ledger.duckdb"
    writer = LedgerWriter(db)
    try:
        for batch in range(5):
            append(writer, ring, sealed_values(ci, approver, 6, batch * 6), batch * 6)
            assert writer.cluster() == 0  # 6 entries: far below a run's worth
            assert writer.cluster(force=True) == 6
            assert writer.cluster(force=True) == 0  # nothing new
    finally:
        writer.close()
    # Runs of 6, 6, 6, 6 merged into one of 24 when the fourth came; the fifth stands alone.
    assert _runs(db) == [("facts_run_24", 24), ("facts_run_30", 6)]
    status = ledger_cli("status", "--db", str(db), "--json")
    assert status.returncode == 0, status.stderr
    assert (cli_json(status)["index_runs"], cli_json(status)["indexed_size"]) == (2, 30)


def test_reader_of_a_ledger_without_the_index_derives_every_fact(
    ledger: Path, indexed: tuple[Path, Keyring]
) -> None:
    """A ledger last written before the index existed still answers, the same."""
    with LedgerReader(ledger) as reader:
        before = snapshot(reader, "prod", make_event("deployment.succeeded").time)
    execute(ledger, "DROP VIEW facts")
    for name, _ in _runs(ledger):
        execute(ledger, f"DROP TABLE {name}")
    with LedgerReader(ledger) as reader:
        assert snapshot(reader, "prod", make_event("deployment.succeeded").time) == before
        answer = asof(reader, "billing", "prod", make_event("deployment.succeeded").time)
        assert answer.deployment is not None
    writer = LedgerWriter(ledger)  # the next writer adds the index again
    assert writer.cluster(force=True) == 12
    writer.close()
    assert _failure(ledger, indexed[1]) is None


def _failure(db: Path, ring: Keyring) -> ChainBrokenError | CheckpointError | None:
    """What `ledger verify` reports as the first failure, or None when the ledger verifies."""
    with LedgerReader(db) as reader:
        return verify_ledger(reader, ring, workers=1).failure


# --- attacks on the index ----------------------------------------------------------------------


def test_untampered_index_verifies(ledger: Path, indexed: tuple[Path, Keyring]) -> None:
    assert _runs(ledger) == [("facts_run_9", 9)]
    assert _failure(ledger, indexed[1]) is None


def test_edited_fact_in_a_run(ledger: Path, indexed: tuple[Path, Keyring]) -> None:
    """Answers would name another image: the stored fact is not its entry's."""
    execute(ledger, "UPDATE facts_run_9 SET image = 'registry.example/evil@sha256:"
            + "e" * 64 + "' WHERE seq = 4")  # fmt: skip
    error = failure(ledger, indexed[1])
    assert isinstance(error, ChainBrokenError)
    assert (error.seq, error.check) == (4, "query_index")


def test_deleted_fact_in_a_run(ledger: Path, indexed: tuple[Path, Keyring]) -> None:
    """An approval hidden from the answers."""
    execute(ledger, "DELETE FROM facts_run_9 WHERE seq = 3")
    error = failure(ledger, indexed[1])
    assert isinstance(error, ChainBrokenError)
    assert (error.seq, error.check) == (3, "query_index")


def test_repeated_fact_in_a_run(ledger: Path, indexed: tuple[Path, Keyring]) -> None:
    execute(ledger, "INSERT INTO facts_run_9 SELECT * FROM facts_run_9 WHERE seq = 7")
    error = failure(ledger, indexed[1])
    assert isinstance(error, ChainBrokenError)
    assert (error.seq, error.check) == (7, "query_index")


def test_view_redefined_to_hide_a_stream(ledger: Path, indexed: tuple[Path, Keyring]) -> None:
    con = duckdb.connect(str(ledger))
    sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'facts'").fetchall()
    con.execute(sql[0][0].rstrip().rstrip(";").replace(
        "CREATE VIEW facts AS", "CREATE OR REPLACE VIEW facts AS SELECT * FROM (") +
        ") WHERE service <> 'search'")  # fmt: skip
    con.close()
    error = failure(ledger, indexed[1])
    assert isinstance(error, ChainBrokenError)
    assert (error.seq, error.check) == (3, "query_index")  # entry 3 is search's first


def test_edited_entry_column_is_named_by_its_cause(
    ledger: Path, indexed: tuple[Path, Keyring]
) -> None:
    """The run keeps the fact of the original entry, so the index differs too; the report
    names the edited column (check 6), not the index (check 9)."""
    execute(ledger, "UPDATE entries SET actor = 'mallory' WHERE seq = 5")
    error = failure(ledger, indexed[1])
    assert isinstance(error, ChainBrokenError)
    assert (error.seq, error.check) == (5, "decoded_columns")


# --- crashes -----------------------------------------------------------------------------------


def test_kill_during_clustering_leaves_every_entry_indexed_once(tmp_path: Path) -> None:
    """`kill -9` while the writer turns the tail into a run or merges runs (the consumer
    does so after its commits): each restart finds the old runs or the new ones, never a
    mix, and the index still holds every entry exactly once (check 9). The writer holds
    inside the clustering's transaction and says so before each kill, so every kill lands
    there, on a loaded machine as on an idle one."""
    ci, approver, ring = signers()
    keys = tmp_path / "keys"
    keys.mkdir()
    for signer in (ci, approver):
        signer.save(keys / f"{signer.key_id}.key")
    ring.save(keys / "keyring.json")
    db = tmp_path / "ledger.duckdb"
    loop = [sys.executable, str(Path(__file__).with_name("cluster_loop.py")), str(db), str(keys)]
    for rounds in (0, 1, 2, 3, 4, 5, 7):  # restarts land on plain runs and on merges
        proc = subprocess.Popen([*loop, str(rounds)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert proc.stdout is not None
        said = proc.stdout.readline().strip()  # blocks until it holds (or exits)
        proc.kill()
        _, err = proc.communicate()
        assert said == "holding", f"the writer did not reach the clustering:\n{err}"
        assert _failure(db, ring) is None
    with LedgerReader(db) as reader:
        size = reader.size()
        facts = reader.one("SELECT count(*), count(DISTINCT seq), max(seq) FROM facts")
    assert size > 0 and facts == (size, size, size)
