"""Append to a ledger and cluster its query index in a loop, until killed.

    python tests/cluster_loop.py LEDGER KEYS_DIR

Run by tests/test_query_index.py's crash test. Each round appends six signed entries in
one commit, as the consumer does, then turns them into a run at once (a merge every fourth
round, so merges are killed too). It prints ``cluster`` before and ``clustered`` after
each clustering, flushed, so the test knows where each ``kill -9`` landed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ledger_builders import append, sealed_values

from ledger.store.writer import LedgerWriter
from ledger.wire.keyring import Keyring, Signer


def main(db: Path, keys: Path) -> None:
    ci = Signer.from_file(keys / "ci-main.key")
    approver = Signer.from_file(keys / "change-board.key")
    ring = Keyring.load(keys / "keyring.json")
    writer = LedgerWriter(db)
    while True:
        first = writer.head_seq
        append(writer, ring, sealed_values(ci, approver, 6, first), first)
        print("cluster", flush=True)
        writer.cluster(force=True)
        print("clustered", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
