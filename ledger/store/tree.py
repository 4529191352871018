"""The Merkle tree as stored: every perfect subtree root in ``tree_nodes``.

Roots and proofs cost O(log n) lookups (:class:`StoredTree`); the writer keeps the
compact range of the tree in memory and stores the nodes each batch completes.
"""

from __future__ import annotations

import duckdb

from ledger.errors import ConfigurationError
from ledger.log.merkle import CompactRange, leaf_hash

__all__ = ["Node", "StoredTree", "completed", "insert_nodes", "load_tree"]

Node = tuple[int, int, bytes]
"""(level, last leaf, hash) of one perfect subtree."""


class StoredTree:
    """The stored tree at a given size: a :class:`ledger.log.merkle.Tree` for proofs and roots."""

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


def completed(tree: CompactRange, leaf: bytes) -> list[Node]:
    """Append a leaf; the node of each perfect subtree it completes."""
    last = tree.size
    return [(level, last, node) for level, node in enumerate(tree.append(leaf))]


def insert_nodes(con: duckdb.DuckDBPyConnection, nodes: list[Node]) -> None:
    """Store nodes (the writer's, in its transaction) through one Arrow table."""
    if not nodes:
        return
    import pyarrow as pa  # here: readers import this module and need no Arrow

    levels, lasts, hashes = zip(*nodes, strict=True)
    table = pa.Table.from_arrays(
        [pa.array(levels, pa.int32()), pa.array(lasts, pa.int64()),
         pa.array(hashes, pa.binary())], names=["level", "last", "hash"],
    )  # fmt: skip
    con.register("new_nodes", table)
    con.execute("INSERT INTO tree_nodes SELECT level, last, hash FROM new_nodes")
    con.unregister("new_nodes")


def load_tree(con: duckdb.DuckDBPyConnection, size: int) -> CompactRange:
    """The compact range of the tree over ``size`` entries, completing the stored nodes if
    entries lack them (a ledger from before the tree was kept, upgraded in place in one
    transaction)."""
    [(stored,)] = con.execute("SELECT count(*) FROM tree_nodes WHERE level = 0").fetchall()
    tree = CompactRange.from_tree(StoredTree(con, stored), stored)
    if stored == size:
        return tree
    # Read through a cursor of its own: this connection inserts between the batches.
    reader = (
        con.cursor()
        .sql(f"SELECT hash FROM entries WHERE seq > {int(stored)} ORDER BY seq")
        .to_arrow_reader(50_000)
    )
    con.execute("BEGIN TRANSACTION")
    for batch in reader:  # batch by batch: bounded memory whatever the ledger's size
        nodes: list[Node] = []
        for digest in batch.column(0).to_pylist():
            nodes.extend(completed(tree, leaf_hash(digest)))
        insert_nodes(con, nodes)
    con.execute("COMMIT")
    return tree
