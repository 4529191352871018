"""The writer keeps the Merkle tree beside the entries, and completes it for a ledger
written before the tree was kept (upgraded in place when the writer opens it)."""

from __future__ import annotations

from pathlib import Path

import duckdb
from ledger_builders import entry_hashes, write_demo_ledger

from ledger.log.merkle import LeafHashes, leaf_hash, root_at
from ledger.store.reader import LedgerReader
from ledger.store.writer import LedgerWriter
from ledger.wire.keyring import Signer


def _nodes(db: Path) -> list[tuple[int, int, bytes]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT level, last, hash FROM tree_nodes ORDER BY level, last")
        return [(level, last, bytes(h)) for level, last, h in rows.fetchall()]
    finally:
        con.close()


def test_stored_tree_holds_every_perfect_subtree_of_the_entries(tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    write_demo_ledger(db, Signer.generate("ledger"))
    leaves = LeafHashes([leaf_hash(h) for h in entry_hashes(db)])
    with LedgerReader(db) as reader:
        tree = reader.tree()
        assert tree.size == leaves.size > 64
        for size in range(tree.size + 1):
            assert root_at(tree, size) == root_at(leaves, size)
    n = leaves.size
    assert len(_nodes(db)) == 2 * n - n.bit_count()


def test_ledger_without_a_tree_is_completed_when_the_writer_opens_it(tmp_path: Path) -> None:
    db = tmp_path / "ledger.duckdb"
    write_demo_ledger(db, Signer.generate("ledger"))
    kept = _nodes(db)
    for cut in (0, 37):  # none at all, or a tree that stops short of the entries
        con = duckdb.connect(str(db))
        con.execute("DELETE FROM tree_nodes WHERE last >= ?", [cut])
        con.close()
        LedgerWriter(db).close()
        assert _nodes(db) == kept
