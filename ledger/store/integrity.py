"""Verification of a stored ledger: every byte, link, tree node, signature and checkpoint.

``ledger verify`` runs this checklist. Entry checks come first and the failure reported is
the one at the lowest sequence number (at the same entry, the lowest-numbered check);
the checkpoint checks run once every entry passes.

Over all entries at once, in DuckDB SQL (column-wise; each entry's hash depends only on
its own row, so no Python loop walks the chain):

1. ``sequence``: sequence numbers run 1, 2, 3, … with no gap or repeat;
2. ``link``: ``prev_hash`` equals the previous entry's ``hash`` (zeros for the first);
3. ``entry_hash``: ``hash`` equals the chain hash of the row's stored inputs (ledger.log.chain);
4. ``ingestion_order``: ingestion time never goes backwards; ``duplicate_event``: no event
   id is chained twice (a copy of an entry rehashed onto the tail needs no key);
5. ``tree``: every stored Merkle node is the hash of its children (a leaf, of its entry's
   hash), and each level holds exactly its ``size >> level`` nodes at their places.

Per entry, before the first failure of 1-5, in one spawned worker process per core fed
Arrow batches of 10,000 rows:

6. ``decoded_columns``: the envelope decodes, ``key_id`` is among its signers and the query
   columns equal a fresh decode of the signed payload;
7. ``signature``: the payload type is the ledger's and a signature by ``key_id`` verifies
   over ``PAE(payloadType, payload)`` under the keyring's key;
8. ``authorization``: the keyring recorded before it authorizes ``key_id`` for the
   event's type and source at the time the ledger witnessed it.

A key revoked since (by a later keyring record, or the keyring file given) at a time at
or before an entry was witnessed does not fail it: the report lists such entries as
``compromised`` (ledger.store.keyrings), accepted then and resting on a key no longer
believed.

Again in SQL, when 1-5 pass (ranked after 6-8, so that an edited entry column is named
by 6, its cause):

9. ``query_index``: the query index (the ``facts`` view over its runs; ledger.store.index) holds
   exactly the facts derived afresh from the entries, once each.

Against signed checkpoints (C2SP notes; ledger/checkpoint.py):

10. ``checkpoint``: each stored checkpoint is signed by the ledger key in force at its size
   (the pinned key, or the successor a rotation signed by its predecessor named;
   ledger.store.identity), the trusted key being one of them; it names this ledger's
   origin, signs the size and root stored with it, which is the tree's root at that size,
   and none is smaller than one signed before it; each external checkpoint (a witness
   file) opens under the trusted key or the key in force at its size;
11. ``truncated``: no external checkpoint is larger than the ledger;
12. ``consistency``: the tree's root at each external checkpoint's size is the one it
    signs: the ledger is a consistent extension of it.

1-9 catch any edited byte or column, deleted, inserted or reordered row; 10-12 catch what
the entries alone cannot: a cut-off tail, a rollback to an older state, and a chain
rewritten consistently from some entry on.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar

from ledger.errors import (
    ChainBrokenError,
    CheckpointError,
    ConfigurationError,
    InconsistentCheckpointError,
)
from ledger.log.chain import DOMAIN, DOMAIN_V2, GENESIS, NO_KEYRING, Origin
from ledger.log.checkpoint import Checkpoint, open_checkpoint, parse_verifier_key, verifier_key
from ledger.log.merkle import Tree, root_at
from ledger.store.identity import LedgerKey, Restore, key_in_force, ledger_keys, restores
from ledger.store.index import DERIVE
from ledger.store.keyrings import Revocation, compromised_counts, recorded_keyrings, revocations
from ledger.wire.columns import DecodedColumns
from ledger.wire.keyring import Keyring, Keyrings, key_fingerprint
from ledger.wire.records import KEYRING_RECORD
from ledger.workers import EntryFailure, check_entries, check_entries_in_worker, spawn_pool

if TYPE_CHECKING:
    import duckdb

    from ledger.log.checkpoint import TrustedKey
    from ledger.store.reader import LedgerReader

__all__ = [
    "CHECKS",
    "ENTRIES_SELECT",
    "ENTRIES_SQL",
    "LedgerReport",
    "Progress",
    "entry_checks",
    "verify_ledger",
]

CHECKS = (
    "sequence", "link", "entry_hash", "ingestion_order", "duplicate_event", "tree",
    "decoded_columns",
    "signature", "authorization", "keyring", "query_index", "checkpoint", "truncated",
    "consistency",
)  # fmt: skip
"""Check names in checklist order, which breaks ties between failures at one entry."""

BATCH_ROWS = 10_000
_T = TypeVar("_T")

Progress = Callable[[str, int, int], None]
"""Called with (stage, done, total) as verification advances."""

# 1, 2, 4: the row at each position in seq order beside the previous row's hash, time and
# format (an entry of format 1 never follows one of format 2).
_ORDER_SQL = """
SELECT pos, seq, prev_hash, previous_hash, ingested_at, previous_ingested, format,
       previous_format FROM (
    SELECT seq, prev_hash, ingested_at, format, row_number() OVER w AS pos,
           lag(hash) OVER w AS previous_hash, lag(ingested_at) OVER w AS previous_ingested,
           lag(format) OVER w AS previous_format
    FROM entries WINDOW w AS (ORDER BY seq, rowid))
WHERE seq IS DISTINCT FROM pos OR prev_hash IS DISTINCT FROM coalesce(previous_hash, $genesis)
   OR ingested_at < previous_ingested OR format < previous_format
ORDER BY pos LIMIT 1
"""
# Columns every entry has (NOT NULL in the schema, which whoever holds the file can drop):
# the first entry missing one, named before anything is computed from it.
_MISSING_SQL = """
SELECT seq, CASE WHEN hash IS NULL THEN 'hash' WHEN prev_hash IS NULL THEN 'prev_hash'
                 WHEN envelope IS NULL THEN 'envelope' ELSE 'ingested_at' END
FROM entries
WHERE hash IS NULL OR prev_hash IS NULL OR envelope IS NULL OR ingested_at IS NULL
ORDER BY seq LIMIT 1
"""
# 4: the first entry whose event id an earlier entry has (the schema's UNIQUE constraint is
# the file holder's to drop). The id column is tied to the signed event by check 6.
_DUPLICATE_SQL = """
SELECT seqs[2], event_id, seqs[1] FROM (
    SELECT event_id, list(seq ORDER BY seq) AS seqs FROM entries
    GROUP BY event_id HAVING count(*) > 1)
ORDER BY seqs[2] LIMIT 1
"""
# 3: ledger.log.chain's entry hashes in SQL, by the entry's format. sha256() gives hex,
# unhex() the bytes; an integer cast to BIT and then BLOB is its bytes big-endian in two's
# complement (8 for BIGINT: u64be seq, i64be times even before 1970; 4 for INTEGER and
# UINTEGER; 1 for UTINYINT). An entry of neither format hashes to NULL: it fails.
_HASH_SQL = """
SELECT seq, hash, computed FROM (
    SELECT seq, hash, CASE format
        WHEN 1 THEN unhex(sha256($domain || seq::BIT::BLOB
            || epoch_us(ingested_at)::BIT::BLOB || prev_hash || unhex(sha256(envelope))))
        WHEN 2 THEN unhex(sha256($domain_v2 || seq::BIT::BLOB
            || epoch_us(ingested_at)::BIT::BLOB || epoch_us(witnessed_at)::BIT::BLOB
            || witness::BIT::BLOB || origin::BIT::BLOB || prev_hash || unhex(sha256(envelope))
            || keyring || strlen(coalesce(kafka_topic, ''))::UINTEGER::BIT::BLOB
            || encode(coalesce(kafka_topic, '')) || coalesce(kafka_partition, -1)::BIT::BLOB
            || coalesce(kafka_offset, -1)::BIGINT::BIT::BLOB))
        END AS computed
    FROM entries)
WHERE computed IS DISTINCT FROM hash
ORDER BY seq LIMIT 1
"""
# 5: nodes where no node can be (an impossible level, past the last entry), then the first
# node out of place within each level (the k-th node of level l must complete leaf k * 2^l).
_TREE_STRAY_SQL = """
SELECT level, min(last) FROM tree_nodes
WHERE level NOT BETWEEN 0 AND $top OR last NOT BETWEEN 0 AND $size - 1
GROUP BY level
"""
_TREE_PLACES_SQL = """
SELECT level, min(least(last, expected)) FROM (
    SELECT level, last,
           row_number() OVER (PARTITION BY level ORDER BY last) * (1::BIGINT << level) - 1
           AS expected
    FROM tree_nodes WHERE level BETWEEN 0 AND $top AND last BETWEEN 0 AND $size - 1)
WHERE last <> expected
GROUP BY level
"""
_TREE_COUNTS_SQL = "SELECT level, count(*) FROM tree_nodes GROUP BY level"
# Leaf i is the entry at position i + 1 in seq order (its seq, once 1 passes).
_TREE_LEAVES_SQL = """
SELECT n.last FROM tree_nodes n LEFT JOIN (
    SELECT hash, row_number() OVER (ORDER BY seq, rowid) - 1 AS last FROM entries) e
    ON e.last = n.last
WHERE n.level = 0 AND n.hash IS DISTINCT FROM unhex(sha256($leaf || e.hash))
ORDER BY n.last LIMIT 1
"""
_TREE_NODES_SQL = """
SELECT p.level, p.last FROM tree_nodes p
LEFT JOIN tree_nodes l ON l.level = p.level - 1 AND l.last = p.last - (1::BIGINT << (p.level - 1))
LEFT JOIN tree_nodes r ON r.level = p.level - 1 AND r.last = p.last
WHERE p.level BETWEEN 1 AND $top
  AND p.hash IS DISTINCT FROM unhex(sha256($node || l.hash || r.hash))
ORDER BY p.last, p.level LIMIT 1
"""
_ENTRY_COLUMNS = ", ".join(
    "epoch_us(time) AS time_us" if name == "time_us" else name for name in DecodedColumns._fields
)
ENTRIES_SELECT = (
    "SELECT seq, envelope, CASE WHEN format = 2 THEN epoch_us(witnessed_at) END, "
    "CASE WHEN format = 2 THEN keyring END, CASE WHEN format = 2 THEN origin END, "
    f"{_ENTRY_COLUMNS} FROM entries"
)
"""The batches :func:`ledger.workers.check_entries` takes, of the entries a WHERE clause
appended to it selects, in storage order."""
ENTRIES_SQL = f"{ENTRIES_SELECT} WHERE seq < $bound"
"""Every entry below ``$bound``: what ``ledger verify`` checks."""


@dataclass
class LedgerReport:
    """What verification established, or the first failure (``failure``)."""

    size: int
    head_hash: bytes | None = None
    root: bytes | None = None
    checkpoints_stored: int = 0
    checkpoints_external: int = 0
    checkpoints_skipped: list[tuple[str, str]] = field(default_factory=list)  # (where, why)
    trusted_key: bool = False
    latest_checkpoint_size: int | None = None
    signatures_checked: bool = False
    signatures_verified: int = 0
    keyrings_recorded: int = 0
    keyring_file_matches: bool | None = None  # the keyring given vs the one recorded last
    ledger_keys: list[LedgerKey] = field(default_factory=list)
    restores: list[Restore] = field(default_factory=list)
    checkpoints_superseded: list[tuple[str, int, int]] = field(default_factory=list)
    """(where, size, the restore's seq) of each external checkpoint a restore superseded."""
    compromised: list[tuple[Revocation, int, int]] = field(default_factory=list)
    """Per revoked key: its revocation, how many entries it signed after it, the first."""
    timings: dict[str, float] = field(default_factory=dict)
    failure: ChainBrokenError | CheckpointError | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def first_bad_seq(self) -> int | None:
        """The failing entry; after a truncation, the first one missing."""
        failure = self.failure
        if isinstance(failure, ChainBrokenError):
            return failure.seq
        if isinstance(failure, InconsistentCheckpointError) and failure.ledger_root is None:
            return self.size + 1
        return None

    def check(self) -> LedgerReport:
        """This report, or raise its failure."""
        if self.failure is not None:
            raise self.failure
        return self


def verify_ledger(
    reader: LedgerReader,
    keyring: Keyring | None,
    *,
    signatures: bool = True,
    trusted: TrustedKey | None = None,
    external: Sequence[tuple[str, str]] = (),
    published: Sequence[tuple[str, str]] = (),
    workers: int | None = None,
    batch_rows: int = BATCH_ROWS,
    progress: Progress | None = None,
) -> LedgerReport:
    """Run the checklist over one consistent snapshot of the ledger.

    Checks 6-8 judge each entry under the keyring it commits to, read from the keyring
    records in the chain; ``keyring`` (the file the caller holds) judges entries that name
    none (format 1, or written by the library rather than the consumer) and is compared
    with the keyring recorded last. ``signatures`` False, or nothing to judge under,
    skips checks 6-8 (the report says so). ``external`` holds (where from, signed note)
    pairs kept outside the ledger (a witness file); ``published`` those read from a topic
    others may write to, where a note the trusted key did not sign for this ledger is
    skipped and reported, never a failure. Both need ``trusted``. Checks 6-8 run in
    ``workers`` processes (default: one per core; 1: in this process).
    """
    if (external or published) and trusted is None:
        raise ConfigurationError("external checkpoints need the ledger's trusted public key")
    con = reader.con
    con.execute("BEGIN TRANSACTION")  # one snapshot, even while the consumer appends
    try:
        return _verify(
            reader,
            keyring,
            signatures,
            trusted,
            (external, published),
            workers or os.cpu_count() or 1,
            batch_rows,
            progress or _silent,
        )
    finally:
        con.execute("ROLLBACK")


def _silent(stage: str, done: int, total: int) -> None:
    """No progress display."""


def _verify(
    reader: LedgerReader,
    keyring: Keyring | None,
    signatures: bool,
    trusted: TrustedKey | None,
    external: tuple[Sequence[tuple[str, str]], Sequence[tuple[str, str]]],
    workers: int,
    batch_rows: int,
    progress: Progress,
) -> LedgerReport:
    tables = reader.one(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name IN ('tree_nodes', 'checkpoints')"
    )
    if tables != (2,):
        raise ConfigurationError(
            "the ledger predates its Merkle tree and checkpoints: open it once with this "
            "version's consumer (`ledger consume`), which adds the tree to it"
        )
    size = reader.size()
    report = LedgerReport(size=size, trusted_key=trusted is not None)
    head = reader.one("SELECT hash FROM entries ORDER BY seq DESC, rowid DESC LIMIT 1")
    report.head_hash = bytes(head[0]) if head and head[0] is not None else None
    failures: list[ChainBrokenError] = []

    def stage(name: str, run: Callable[[], _T]) -> _T:
        progress(name, 0, 1)
        start = perf_counter()
        result = run()
        report.timings[name] = round(perf_counter() - start, 3)
        progress(name, 1, 1)
        return result

    failures += stage("chain", lambda: _chain_failures(reader.con))
    failures += stage("tree", lambda: _tree_failures(reader.con, size))
    bound = min((f.seq for f in failures), default=size + 1)
    if not failures:  # the index is derived from the entries: judged once they are sound
        failures += stage("index", lambda: _index_failures(reader.con))
    failures += stage("keyrings", lambda: _keyring_failures(reader.con))
    in_order = recorded_keyrings(reader.con)
    recorded = {ring.digest().hex(): ring for _, ring in in_order}
    report.keyrings_recorded = len(recorded)
    if in_order and keyring is not None:  # the file given: a cross-check
        report.keyring_file_matches = keyring.digest() == in_order[-1][1].digest()
    if signatures and (recorded or keyring is not None):
        start = perf_counter()
        keyrings = Keyrings(recorded=recorded, default=keyring)
        entry_failure = entry_checks(reader.con, keyrings, "WHERE seq < $bound", {"bound": bound},
                                     workers, batch_rows, progress)  # fmt: skip
        report.timings["signatures"] = round(perf_counter() - start, 3)
        upto = bound if entry_failure is None else min(bound, entry_failure.seq)
        events, unnamed = _events_below(reader.con, upto)
        report.signatures_checked = keyring is not None or unnamed == 0
        report.signatures_verified = events - (unnamed if keyring is None else 0)
        if entry_failure is not None:
            failures.append(entry_failure)
    if failures:
        report.failure = min(failures, key=lambda f: (f.seq, CHECKS.index(f.check)))
        return report
    report.compromised = compromised_counts(reader.con, revocations(in_order, keyring), bound)
    report.root = root_at(reader.tree(), size)
    try:
        stage("checkpoints", lambda: _checkpoints(reader, report, trusted, external))
    except CheckpointError as exc:
        report.failure = exc
    return report


# --- 1-4: the chain ----------------------------------------------------------------------------


def _short(value: bytes | None) -> str:
    return "(none)" if value is None else bytes(value).hex()[:16] + "…"


def _chain_failures(con: duckdb.DuckDBPyConnection) -> list[ChainBrokenError]:
    """The first failure of checks 1, 2 and 4 (by position) and of check 3 (by seq).

    Before the first position that fails 1, 2 or 4, each row's seq is its position, so the
    lower of the two (ties in check order) is the first failure in seq order.
    """
    failures = []
    rows = con.execute(_MISSING_SQL).fetchall()
    if rows:
        seq, column = rows[0]
        failures.append(ChainBrokenError(
            f"entry {seq}: {column} is missing (NULL); every entry has one",
            seq=seq, check="link" if column == "prev_hash" else "entry_hash"))  # fmt: skip
    rows = con.execute(_ORDER_SQL, {"genesis": GENESIS}).fetchall()
    if rows:
        pos, seq, prev_hash, previous_hash, ingested, previous_ingested, *formats = rows[0]
        if seq != pos:
            failures.append(ChainBrokenError(
                f"expected entry {pos}, found {seq} (entries missing, inserted or renumbered)",
                seq=pos, check="sequence"))  # fmt: skip
        elif pos == 1:
            failures.append(ChainBrokenError(
                f"entry {seq}: prev_hash {_short(prev_hash)} is not 32 zero bytes, as the "
                "first entry's must be", seq=seq, check="link"))  # fmt: skip
        elif prev_hash is None or previous_hash is None or prev_hash != previous_hash:
            failures.append(ChainBrokenError(
                f"entry {seq}: prev_hash {_short(prev_hash)} does not match entry "
                f"{seq - 1}'s hash {_short(previous_hash)}", seq=seq, check="link"))  # fmt: skip
        elif ingested is None or previous_ingested is None:
            pass  # named by _MISSING_SQL
        elif ingested < previous_ingested:
            failures.append(ChainBrokenError(
                f"entry {seq}: ingested at {ingested.isoformat()}, before entry {seq - 1} "
                f"({previous_ingested.isoformat()})", seq=seq,
                check="ingestion_order"))  # fmt: skip
        else:
            failures.append(ChainBrokenError(
                f"entry {seq}: of format {formats[0]} after entry {seq - 1} of format "
                f"{formats[1]}", seq=seq, check="ingestion_order"))  # fmt: skip
    rows = con.execute(_DUPLICATE_SQL).fetchall()
    if rows:
        seq, event_id, first = rows[0]
        failures.append(ChainBrokenError(
            f"entry {seq}: event {event_id} is chained already, as entry {first}; an event "
            "is chained once", seq=seq, check="duplicate_event"))  # fmt: skip
    rows = con.execute(_HASH_SQL, {"domain": DOMAIN, "domain_v2": DOMAIN_V2}).fetchall()
    if rows:
        seq, stored, computed = rows[0]
        failures.append(ChainBrokenError(
            f"entry {seq}: stored hash {_short(stored)} differs from the hash of its stored "
            f"bytes {_short(computed)}", seq=seq, check="entry_hash"))  # fmt: skip
    return failures


# --- 5: the tree -------------------------------------------------------------------------------


def _tree_failures(con: duckdb.DuckDBPyConnection, size: int) -> list[ChainBrokenError]:
    """The first bad node, named by the entry that completed it (its last leaf + 1)."""
    top = size.bit_length() - 1  # the highest level with a node
    found: list[tuple[int, int, str]] = []  # (last leaf, level, what is wrong)
    params = {"top": top, "size": size}
    for level, last in con.execute(_TREE_STRAY_SQL, params).fetchall():
        found.append((last, level, f"cannot exist in a tree of {size} entries"))
    for level, last in con.execute(_TREE_PLACES_SQL, params).fetchall():
        found.append((last, level, "is missing, duplicated or out of place"))
    counts = dict(con.execute(_TREE_COUNTS_SQL).fetchall())
    for level in range(top + 1):
        have, want = counts.get(level, 0), size >> level
        if have < want:  # every stored node in place (else above): the missing are the last
            found.append((((have + 1) << level) - 1, level, "is missing"))
    for (last,) in con.execute(_TREE_LEAVES_SQL, {"leaf": b"\x00"}).fetchall():
        found.append((last, 0, "is not the leaf hash of the entry's hash"))
    for level, last in con.execute(_TREE_NODES_SQL, {"node": b"\x01", "top": top}).fetchall():
        found.append((last, level, "is not the hash of its two children"))
    if not found:
        return []
    last, level, what = min(found)
    span = f"entries {last + 2 - (1 << level)}..{last + 1}" if 0 < level < 63 else "it"
    return [ChainBrokenError(
        f"entry {last + 1}: the tree node at level {level} over {span} {what}",
        seq=last + 1, check="tree")]  # fmt: skip


# --- 6-8: each entry's envelope (ledger.wire.verify.verify_entry, in worker processes) -----


def entry_checks(
    con: duckdb.DuckDBPyConnection,
    keyrings: Keyrings,
    where: str,
    params: dict[str, Any],
    workers: int,
    batch_rows: int,
    progress: Progress,
) -> ChainBrokenError | None:
    """Checks 6-8 on the entries ``where`` selects (:func:`ledger.workers.check_entries`):
    the lowest failure. ``ledger verify`` checks every entry; ``ledger check`` those its
    findings cite.

    The main process reads Arrow batches in storage order and keeps a few in flight per
    worker; each worker answers the lowest failing seq of its batch. Once a failure is
    known, batches wholly above it are skipped.
    """
    row = con.execute(f"SELECT count(*) FROM entries {where}", params)
    total = int(row.fetchall()[0][0])
    workers = min(workers, -(-total // batch_rows))  # a process per batch at most
    pool = spawn_pool(keyrings, workers) if workers > 1 else None
    first: EntryFailure | None = None
    done = 0
    in_flight: dict[Future[EntryFailure | None], int] = {}  # future -> its batch's rows

    def settle(failure: EntryFailure | None, rows: int) -> None:
        nonlocal first, done
        if failure is not None and (first is None or failure[0] < first[0]):
            first = failure
        done += rows
        progress("signatures", done, total)

    def wait_until(pending: int) -> None:
        while len(in_flight) > pending:
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                settle(future.result(), in_flight.pop(future))

    progress("signatures", 0, total)
    try:
        batches = con.sql(f"{ENTRIES_SELECT} {where}", params=params).to_arrow_reader(batch_rows)
        for batch in batches:
            if first is not None and min(batch.column(0).to_pylist()) > first[0]:
                settle(None, batch.num_rows)
            elif pool is None:
                settle(check_entries(batch, keyrings), batch.num_rows)
            else:
                in_flight[pool.submit(check_entries_in_worker, batch)] = batch.num_rows
                wait_until(2 * workers)  # bounded memory: two batches per worker in flight
        wait_until(0)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if first is None:
        return None
    seq, check, message = first
    return ChainBrokenError(message, seq=seq, check=check)


def _events_below(con: duckdb.DuckDBPyConnection, bound: int) -> tuple[int, int]:
    """(events, those judged under no recorded keyring: format 1, or a digest of zeros)
    before ``bound``: what checks 6-8 verified, and what they need a keyring given for."""
    row = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE format = 1 OR keyring = $none) FROM entries "
        "WHERE seq < $bound AND origin IS DISTINCT FROM $ledger",
        {"bound": bound, "none": NO_KEYRING, "ledger": int(Origin.LEDGER)},
    ).fetchall()[0]
    return int(row[0]), int(row[1])


# 8: each entry of format 2 (and each keyring record) commits to the keyring recorded last
# before it (zeros before the first): an ASOF join finds that record.
_KEYRING_SQL = f"""
WITH records AS (
    SELECT seq, unhex(data->>'$.digest') AS digest FROM entries
    WHERE type = '{KEYRING_RECORD}' AND origin = {int(Origin.LEDGER)}
),
committed AS (SELECT seq, keyring FROM entries WHERE format = 2)
SELECT c.seq, c.keyring, r.digest FROM committed c ASOF LEFT JOIN records r ON c.seq > r.seq
WHERE coalesce(r.digest, $none) IS DISTINCT FROM c.keyring
ORDER BY c.seq LIMIT 1
"""


def _keyring_failures(con: duckdb.DuckDBPyConnection) -> list[ChainBrokenError]:
    """The first entry that does not commit to the keyring recorded last before it."""
    rows = con.execute(_KEYRING_SQL, {"none": NO_KEYRING}).fetchall()
    if not rows:
        return []
    seq, committed, recorded = rows[0]
    return [ChainBrokenError(
        f"entry {seq}: commits to keyring {_short(committed)}, but the keyring recorded last "
        f"before it is {_short(recorded) if recorded is not None else 'none'}",
        seq=seq, check="keyring")]  # fmt: skip


# --- 9: the query index ------------------------------------------------------------------------

_INDEX_SQL = f"""
WITH derived AS ({DERIVE}),
differ AS (
    -- a row missing on either side, or not equal column for column (rows as structs)
    SELECT coalesce(f.seq, d.seq) AS seq FROM facts f FULL JOIN derived d ON f.seq = d.seq
    WHERE f.seq IS NULL OR d.seq IS NULL OR f IS DISTINCT FROM d
    UNION ALL
    SELECT seq FROM facts GROUP BY seq HAVING count(*) > 1  -- a row held twice
)
SELECT min(seq) FROM differ
"""


def _index_failures(con: duckdb.DuckDBPyConnection) -> list[ChainBrokenError]:
    """The lowest entry whose facts row is missing, extra, repeated or not its own."""
    rows = con.execute(_INDEX_SQL).fetchall()
    if not rows or rows[0][0] is None:
        return []
    seq = int(rows[0][0])
    return [ChainBrokenError(
        f"entry {seq}: the query index (facts) does not hold exactly the facts derived from "
        "the entry; with the consumer stopped, drop the facts view and the facts_run_ tables: "
        "the consumer re-creates them",
        seq=seq, check="query_index")]  # fmt: skip


# --- 10-12: checkpoints -------------------------------------------------------------------------


def _b64(value: bytes | None) -> str:
    return "(none)" if value is None else base64.b64encode(value).decode()


def _checkpoints(
    reader: LedgerReader,
    report: LedgerReport,
    trusted: TrustedKey | None,
    external: tuple[Sequence[tuple[str, str]], Sequence[tuple[str, str]]],
) -> None:
    """Checks 10-12; raises the first :class:`CheckpointError`."""
    origin = reader.meta().get("origin")
    stored = reader.checkpoints()
    kept, published = external
    if (stored or kept or published) and origin is None:
        raise ConfigurationError("the ledger has no origin: no checkpoint can name it")
    tree, size = reader.tree(), report.size
    keys = ledger_keys(reader.con)
    report.ledger_keys = keys
    _check_trust_root(keys, trusted)
    report.restores = restores(reader.con, keys)
    largest = 0
    # 10. Stored checkpoints, in signing order, each by the ledger key in force at its size.
    for i, (cp_size, cp_root, note, vkey) in enumerate(stored, 1):
        where = f"stored checkpoint {i} (size {cp_size})"
        in_force = key_in_force(keys, cp_size)
        if in_force is not None and vkey != in_force.vkey:
            raise CheckpointError(
                f"{where} is signed by {_named(vkey)}, not by " + _in_force(in_force),
                check="checkpoint",
            )
        name, key = parse_verifier_key(in_force.vkey if in_force is not None else vkey)
        try:
            signed = open_checkpoint(note, name, key, origin)
        except CheckpointError as exc:
            raise CheckpointError(f"{where}: {exc.message}", check="checkpoint") from None
        if (signed.size, signed.root) != (cp_size, cp_root):
            raise CheckpointError(
                f"{where}: its note signs size {signed.size} and root {_b64(signed.root)}, "
                f"not the size and root stored with it ({_b64(cp_root)})",
                check="checkpoint",
            )
        if cp_size < largest:
            raise CheckpointError(
                f"{where} was signed after one of size {largest}: rolled back, or an old "
                "checkpoint replayed",
                check="checkpoint",
            )
        largest = cp_size
        _extends(tree, size, f"{where} signed by {name!r}", signed, "checkpoint", "checkpoint")
    report.checkpoints_stored = len(stored)
    report.latest_checkpoint_size = largest if stored else None
    # 10-12. External checkpoints, under the trusted key only; a published one that is not
    # the trusted key's for this ledger is someone else's: skipped, and reported.
    for (where, note), lenient in [*((k, False) for k in kept), *((p, True) for p in published)]:
        assert trusted is not None
        try:
            signed = _open_external(note, keys, trusted, origin)
        except CheckpointError as exc:
            if lenient:
                report.checkpoints_skipped.append((where, f"{exc.message} ({exc.check})"))
                continue
            raise CheckpointError(
                f"checkpoint {where}: {exc.message}", check="checkpoint"
            ) from None
        try:
            _extends(tree, size, f"checkpoint {where}", signed, "truncated", "consistency")
        except InconsistentCheckpointError:
            restored = [r for r in report.restores if r.size < signed.size]
            if not restored:
                raise
            # Signed by the lost copy past the size the ledger was restored at: superseded.
            report.checkpoints_superseded.append((where, signed.size, restored[-1].seq))
            continue
        report.checkpoints_external += 1


def _named(vkey: str) -> str:
    """A verifier key as a person can tell two apart: its name and fingerprint."""
    try:
        name, raw = parse_verifier_key(vkey)
    except CheckpointError:
        return repr(vkey[:40])
    return f"{name!r} ({key_fingerprint(raw)[:19]}…)"


def _in_force(key: LedgerKey) -> str:
    if key.since == 1:
        return f"the ledger's pinned key {_named(key.vkey)}"
    return (
        f"the ledger key in force at that size, {_named(key.vkey)}, named by the rotation at "
        f"entry {key.since}"
    )


def _check_trust_root(keys: list[LedgerKey], trusted: TrustedKey | None) -> None:
    """The trusted key is one of the ledger's keys: each vouches for the next by the rotation
    it signed, and every checkpoint after a rotation covers the rotations before it."""
    if trusted is None or not keys:
        return
    root = verifier_key(trusted.name, trusted.public_raw)
    if root not in {k.vkey for k in keys}:
        names = ", ".join(_named(k.vkey) for k in keys)
        raise CheckpointError(
            f"the trusted key {_named(root)} is none of the keys this ledger was signed "
            f"with ({names}): its checkpoints are someone else's, or the wrong key was given",
            check="checkpoint",
        )


def _open_external(
    note: str, keys: list[LedgerKey], trusted: TrustedKey, origin: str | None
) -> Checkpoint:
    """A checkpoint kept outside the ledger, opened under the trusted key or, after a
    rotation, the ledger key in force at the size it signs (never any other)."""
    try:
        return open_checkpoint(note, trusted.name, trusted.public_raw, origin)
    except CheckpointError as first:
        for key in keys:
            name, raw = parse_verifier_key(key.vkey)
            try:
                signed = open_checkpoint(note, name, raw, origin)
            except CheckpointError:
                continue
            in_force = key_in_force(keys, signed.size)
            if in_force is None or in_force.vkey != key.vkey:
                raise CheckpointError(
                    f"signed by {name!r}, which was not the ledger key in force at size "
                    f"{signed.size}",
                    check="checkpoint",
                ) from None
            return signed
        raise first from None


def _extends(
    tree: Tree, size: int, where: str, signed: Checkpoint, truncated: str, rewritten: str
) -> None:
    """The ledger holds the checkpoint's entries, and its tree had the signed root then."""
    if signed.size > size:
        raise InconsistentCheckpointError(
            f"ledger has {size} entries but a checkpoint signed at size {signed.size} exists "
            f"({where}): truncated or rolled back",
            check=truncated,
            size=signed.size,
            checkpoint_root=signed.root,
            ledger_root=None,
        )
    ledger_root = root_at(tree, signed.size)
    if ledger_root != signed.root:
        raise InconsistentCheckpointError(
            f"{where} signs root {_b64(signed.root)} at size {signed.size}, but the ledger's "
            f"tree has {_b64(ledger_root)} there: entries up to {signed.size} were rewritten",
            check=rewritten, size=signed.size, checkpoint_root=signed.root,
            ledger_root=ledger_root)  # fmt: skip
