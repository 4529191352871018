"""Append to a ledger and cluster its query index, round after round, until killed.

    python tests/cluster_loop.py LEDGER KEYS_DIR ROUNDS

Run by tests/test_query_index.py's crash test. Each round appends six signed entries in
one commit, as the consumer does, then turns them into a run at once (a merge every fourth
round, so merges are killed too). After ROUNDS rounds it starts one more clustering and
holds inside its transaction, after writing the first run (or merged run): it prints
``holding`` there, flushed, and waits to be killed. The kill so lands inside a clustering
every time, whatever the machine's load, rather than by luck.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ledger_builders import append, sealed_values

from ledger.store.writer import LedgerWriter
from ledger.wire.keyring import Keyring, Signer


def main(db: Path, keys: Path, rounds: int) -> None:
    ci = Signer.from_file(keys / "ci-main.key")
    approver = Signer.from_file(keys / "change-board.key")
    ring = Keyring.load(keys / "keyring.json")
    writer = LedgerWriter(db)
    for round_ in range(rounds + 1):
        first = writer.head_seq
        append(writer, ring, sealed_values(ci, approver, 6, first), first)
        if round_ == rounds:
            _hold_inside(writer)
        writer.cluster(force=True)
    print("done", flush=True)


def _hold_inside(writer: LedgerWriter) -> None:
    """Make the next clustering stop, inside its transaction, after its first write."""
    write = writer.index._write_run

    def write_then_hold(*args: Any, **kwargs: Any) -> None:
        write(*args, **kwargs)
        print("holding", flush=True)
        while True:
            time.sleep(60)

    writer.index._write_run = write_then_hold  # type: ignore[method-assign]


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
