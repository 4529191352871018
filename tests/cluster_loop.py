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
from conftest import make_event
from ledger_builders import append

from ledger.keys import Keyring, Signer
from ledger.producer import seal
from ledger.store import LedgerWriter

KINDS = ("deployment.succeeded", "mutation.applied", "approval.granted")
SERVICES = ("billing", "checkout", "search")


def main(db: Path, keys: Path) -> None:
    ci = Signer.from_file(keys / "ci-main.key")
    approver = Signer.from_file(keys / "change-board.key")
    ring = Keyring.load(keys / "keyring.json")
    writer = LedgerWriter(db)
    while True:
        first = writer.head_seq
        values = [
            seal(make_event(KINDS[n % 3], service=SERVICES[n % 3], actor=f"u{n}"),
                 approver if n % 3 == 2 else ci)
            for n in range(first, first + 6)
        ]  # fmt: skip
        append(writer, ring, values, first)
        print("cluster", flush=True)
        writer.cluster(force=True)
        print("clustered", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
